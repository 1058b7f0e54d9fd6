//! Refunds (F8) on the hosted ledger: money given back to a leg that took it (a purchase's
//! debit, a completed authorization), partly or wholly, never more than it took, and the
//! points that purchase earned taken back in proportion; and a refund undone (its reversal).
//!
//! A refund leg is a leg of its own (kind `Refund`, its own id, naming the leg it gives back
//! to), so a repeat of it is harmless and a reversal names it like any other leg. What a
//! leg has had given back is kept on the leg (`refunded`), in the same step as the refund's
//! entry: never counted without the money, never the money without the count.

use super::write::Change;
use super::{Balance, EntryType, Ledger, LedgerError, Leg, LegState};
use crate::journal::Step;

/// The points kept of `earned` once `refunded` of a purchase of `amount` has been given
/// back: in proportion to what is left, rounded down (a refund never leaves points the
/// spend that is left would not have earned).
fn points_kept(earned: i64, amount: i64, refunded: i64) -> i64 {
    if amount <= 0 {
        return 0;
    }
    let left = i128::from(amount.saturating_sub(refunded).max(0));
    let kept = i128::from(earned) * left / i128::from(amount);
    i64::try_from(kept).unwrap_or(0).clamp(0, earned.max(0))
}

/// The leg of the points a refund took back.
fn clawback_leg(refund_id: &str) -> String {
    format!("{refund_id}:points")
}

impl Ledger {
    /// Give `amount` back to the leg `original` (a debit, or a completed hold) as the refund
    /// leg `refund_id`, and take back, in proportion, the points its purchase earned (the
    /// credit leg `points`, if any; they may leave a debt, see [`Ledger::void_clawing_back`]).
    /// One step. Idempotent by `refund_id`; refused when it would give back more than the
    /// leg took less what refunds gave already (`BadAmount`), or the leg is not one that
    /// took money and kept it (`WrongState`: held only, voided, refunded by a reversal).
    pub async fn refund_leg(
        &self,
        original: &str,
        refund_id: &str,
        amount: i64,
        points: Option<&str>,
    ) -> Result<Balance, LedgerError> {
        let Some(first) = self.leg(original)? else {
            return Err(LedgerError::UnknownLeg(original.into()));
        };
        let earned = match points {
            Some(p) => self.leg(p)?.map(|l| (p, l)),
            None => None,
        };
        let mut accounts = vec![first.account.clone()];
        accounts.extend(earned.as_ref().map(|(_, l)| l.account.clone()));
        accounts.sort_unstable();
        accounts.dedup();
        let mut _guards = Vec::with_capacity(accounts.len());
        for account in &accounts {
            _guards.push(self.lock(account).await?);
        }
        let refund = Leg {
            of: Some(original.to_string()),
            ..Leg::immediate(&first.account, amount, EntryType::Refund)
        };
        if let Some(placed) = self.leg(refund_id)? {
            if placed.of != refund.of || !placed.repeated_by(&refund) {
                return Err(LedgerError::LegCollision(refund_id.into()));
            }
            return Ok(self.balance(&first.account).unwrap_or_default());
        }
        // Read again under the locks: a concurrent refund of the same purchase may have given
        // money back and taken points back meanwhile (the points leg's account is locked too).
        let mut taken = self
            .leg(original)?
            .ok_or_else(|| LedgerError::UnknownLeg(original.into()))?;
        let earned = match earned {
            Some((p, _)) => self.leg(p)?.map(|l| (p, l)),
            None => None,
        };
        let kept_money = matches!(
            (taken.kind, taken.state),
            (EntryType::Debit, LegState::Done) | (EntryType::Hold, LegState::Posted)
        );
        if !kept_money {
            return Err(LedgerError::WrongState {
                leg: original.into(),
                state: taken.state,
                what: "refund",
            });
        }
        let refunded = taken.refunded.checked_add(amount);
        if amount <= 0 || refunded.is_none_or(|r| r > taken.amount) {
            return Err(LedgerError::BadAmount);
        }
        let refunded = refunded.unwrap_or(taken.amount);
        let mut step = Step::new();
        let mut after = self.balance(&taken.account).unwrap_or_default();
        self.write_entry(&mut step, EntryType::Refund, refund_id, &refund)?
            .apply_to(&mut after)?;
        taken.refunded = refunded;
        self.put_leg(&mut step, original, &taken)?;
        let mut clawed = None;
        if let Some((points_id, mut earned)) = earned.filter(|(_, l)| {
            l.kind == EntryType::Credit && l.state == LegState::Done && l.account != taken.account
        }) {
            let target = earned.amount - points_kept(earned.amount, taken.amount, refunded);
            let claw = target.saturating_sub(earned.refunded);
            if claw > 0 {
                earned.refunded = target;
                self.put_leg(&mut step, points_id, &earned)?;
                let claw_id = clawback_leg(refund_id);
                let claw_leg = Leg {
                    of: Some(points_id.to_string()),
                    ..Leg::immediate(&earned.account, claw, EntryType::Clawback)
                };
                let mut points_after = self.balance(&earned.account).unwrap_or_default();
                self.write_entry(&mut step, EntryType::Clawback, &claw_id, &claw_leg)?
                    .apply_to(&mut points_after)?;
                clawed = Some((points_after, claw_id, claw_leg));
            }
        }
        let mut changes = vec![Change::leg(after, refund_id, &refund, EntryType::Refund)];
        if let Some((balance, id, leg)) = clawed {
            changes.push(Change::leg(balance, &id, &leg, EntryType::Clawback));
        }
        self.commit_and_apply(step, changes).await?;
        Ok(after)
    }

    /// Undo a refund leg (its reversal): what it gave is taken back whether or not it is
    /// still there, the leg it gave back to may give it back again, and the points it took
    /// back are given back. One step; undoing it twice is a no-op.
    ///
    /// Spent meanwhile, the money is taken back as a recorded debt (a `Clawback`: the
    /// balance goes below zero, refuses spending, and the next recharge or refund pays it
    /// down), as earned points are. Refusing instead (51) would leave the refund given while
    /// the merchant that reversed it was told it never happened: the reversal of an
    /// unanswered refund is how a terminal undoes it, and the card may well have spent the
    /// money before the terminal gave up waiting (found by the crash harness).
    pub(super) async fn unrefund(&self, refund_id: &str) -> Result<Balance, LedgerError> {
        let Some(first) = self.leg(refund_id)? else {
            return Err(LedgerError::UnknownLeg(refund_id.into()));
        };
        let claw_id = clawback_leg(refund_id);
        let claw = self.leg(&claw_id)?;
        let mut accounts = vec![first.account.clone()];
        accounts.extend(claw.as_ref().map(|l| l.account.clone()));
        accounts.sort_unstable();
        accounts.dedup();
        let mut _guards = Vec::with_capacity(accounts.len());
        for account in &accounts {
            _guards.push(self.lock(account).await?);
        }
        let mut refund = self
            .leg(refund_id)?
            .ok_or_else(|| LedgerError::UnknownLeg(refund_id.into()))?;
        let current = self.balance(&refund.account).unwrap_or_default();
        if refund.state == LegState::Refunded {
            return Ok(current);
        }
        let mut step = Step::new();
        let mut after = current;
        refund.state = LegState::Refunded;
        self.write_entry(&mut step, EntryType::Clawback, refund_id, &refund)?
            .apply_to(&mut after)?;
        if let Some(original) = refund.of.as_deref() {
            if let Some(mut taken) = self.leg(original)? {
                taken.refunded = taken.refunded.saturating_sub(refund.amount).max(0);
                self.put_leg(&mut step, original, &taken)?;
            }
        }
        let mut given = None;
        if let Some(mut claw) = self.leg(&claw_id)?.filter(|l| l.state == LegState::Done) {
            claw.state = LegState::Refunded;
            let mut points_after = self.balance(&claw.account).unwrap_or_default();
            self.write_entry(&mut step, EntryType::Credit, &claw_id, &claw)?
                .apply_to(&mut points_after)?;
            if let Some(points_id) = claw.of.as_deref() {
                if let Some(mut earned) = self.leg(points_id)? {
                    earned.refunded = earned.refunded.saturating_sub(claw.amount).max(0);
                    self.put_leg(&mut step, points_id, &earned)?;
                }
            }
            given = Some((points_after, claw));
        }
        let mut changes = vec![Change::leg(after, refund_id, &refund, EntryType::Clawback)];
        if let Some((balance, claw)) = given {
            changes.push(Change::leg(balance, &claw_id, &claw, EntryType::Credit));
        }
        self.commit_and_apply(step, changes).await?;
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::points_kept;

    #[test]
    fn points_kept_are_in_proportion_to_what_is_left_rounded_down() {
        assert_eq!(points_kept(100, 10_000, 0), 100);
        assert_eq!(points_kept(100, 10_000, 4_000), 60);
        assert_eq!(points_kept(100, 10_000, 1), 99);
        assert_eq!(points_kept(100, 10_000, 10_000), 0);
        assert_eq!(points_kept(7, 3, 1), 4);
        assert_eq!(points_kept(100, 0, 0), 0);
    }
}
