//! Two-phase holds: an authorization places a *pending* hold; completion posts it (all of
//! it, or part with the rest released); a reversal voids it, or refunds it once posted;
//! a hold never completed expires. Voiding also reverses an immediate credit or debit,
//! since a reversal names a leg whatever placed it, so the settling of any leg lives here.

use std::sync::atomic::Ordering;

use super::write::Change;
use super::{storage, Balance, EntryType, Ledger, LedgerError, Leg, LegState};
use crate::journal::Step;

impl Ledger {
    /// Place a pending hold (an authorization). Idempotent by `leg`: a repeat returns the
    /// balance without a second hold. Refused when less than `amount` is available.
    pub async fn hold(
        &self,
        account: &str,
        amount: i64,
        leg_id: &str,
    ) -> Result<Balance, LedgerError> {
        self.hold_with(Step::new(), account, amount, leg_id).await
    }

    /// As [`Ledger::hold`], in one step with the caller's writes. A repeat of the leg writes
    /// nothing, not even those.
    pub async fn hold_with(
        &self,
        step: Step,
        account: &str,
        amount: i64,
        leg_id: &str,
    ) -> Result<Balance, LedgerError> {
        let ttl = i64::try_from(self.hold_ttl.as_millis()).unwrap_or(i64::MAX);
        let expires = self.now_ms().saturating_add(ttl);
        let leg = Leg {
            account: account.into(),
            amount,
            state: LegState::Pending,
            expires_ms: expires,
            kind: EntryType::Hold,
            refunded: 0,
            of: None,
        };
        self.place(step, leg_id, leg).await
    }

    /// Complete a hold. Posting a posted leg again is a no-op.
    pub async fn post(&self, leg_id: &str) -> Result<Balance, LedgerError> {
        self.settle(leg_id, EntryType::Post).await
    }

    /// Complete a hold for `amount` (at most what it holds): that much is posted and the
    /// rest released, in one step; the leg then stands for the posted amount (what a refund
    /// gives back). Completing a completed leg again is a no-op.
    pub async fn complete(&self, leg_id: &str, amount: i64) -> Result<Balance, LedgerError> {
        self.complete_crediting(leg_id, amount, None).await
    }

    /// As [`Ledger::complete`], with a credit to another account in the same step (the
    /// points the completed spend earns): `credit` is (account, amount, leg).
    pub async fn complete_crediting(
        &self,
        leg_id: &str,
        amount: i64,
        credit: Option<(&str, i64, &str)>,
    ) -> Result<Balance, LedgerError> {
        let Some(first) = self.leg(leg_id)? else {
            return Err(LedgerError::UnknownLeg(leg_id.into()));
        };
        let mut accounts = vec![first.account.as_str()];
        accounts.extend(credit.map(|(account, _, _)| account));
        accounts.sort_unstable();
        accounts.dedup();
        let mut _guards = Vec::with_capacity(accounts.len());
        for account in &accounts {
            _guards.push(self.lock(account).await?);
        }
        // Read again under the lock: another task may have settled it meanwhile.
        let mut leg = self
            .leg(leg_id)?
            .ok_or_else(|| LedgerError::UnknownLeg(leg_id.into()))?;
        let current = self.balance(&leg.account).unwrap_or_default();
        match leg.state {
            LegState::Pending => {}
            LegState::Posted => return Ok(current),
            state => {
                return Err(LedgerError::WrongState {
                    leg: leg_id.into(),
                    state,
                    what: "completion",
                })
            }
        }
        if amount <= 0 || amount > leg.amount {
            return Err(LedgerError::BadAmount);
        }
        let released = leg.amount - amount;
        leg.state = LegState::Posted;
        leg.amount = amount;
        let mut step = Step::new();
        let mut after = current;
        self.write_entry(&mut step, EntryType::Post, leg_id, &leg)?
            .apply_to(&mut after)?;
        if released > 0 {
            self.write_entry_of(&mut step, EntryType::Release, released, leg_id, &leg)?
                .apply_to(&mut after)?;
        }
        assert!(
            after.available() >= 0,
            "ledger: completion of {leg_id} below zero"
        );
        let mut credited = None;
        if let Some((account, points, credit_leg)) = credit.filter(|&(_, p, _)| p > 0) {
            // Points on the leg's own account add to what the completion left there.
            let mut balance = if account == leg.account {
                after
            } else {
                self.balance(account)
                    .ok_or_else(|| LedgerError::UnknownAccount(account.into()))?
            };
            let earned = Leg::immediate(account, points, EntryType::Credit);
            self.write_entry(&mut step, EntryType::Credit, credit_leg, &earned)?
                .apply_to(&mut balance)?;
            if account == leg.account {
                after = balance;
            }
            credited = Some((balance, credit_leg, earned));
        }
        let mut changes = vec![Change::leg(after, leg_id, &leg, EntryType::Post)];
        if let Some((balance, credit_leg, earned)) = credited {
            changes.push(Change::leg(balance, credit_leg, &earned, EntryType::Credit));
        }
        self.commit_and_apply(step, changes).await?;
        Ok(after)
    }

    /// Release a hold, refund a posted leg or an immediate debit, take back an immediate
    /// credit (if it is still there to take). Voiding twice is a no-op.
    pub async fn void(&self, leg_id: &str) -> Result<Balance, LedgerError> {
        self.settle(leg_id, EntryType::Void).await
    }

    async fn settle(&self, leg_id: &str, want: EntryType) -> Result<Balance, LedgerError> {
        let Some(first) = self.leg(leg_id)? else {
            return Err(LedgerError::UnknownLeg(leg_id.into()));
        };
        if want == EntryType::Void && first.of.is_some() {
            // A refund leg: undoing it touches the leg it gave back to.
            return self.unrefund(leg_id).await;
        }
        let _guard = self.lock(&first.account).await?;
        // Read again under the lock: another task may have settled it meanwhile.
        let mut leg = self
            .leg(leg_id)?
            .ok_or_else(|| LedgerError::UnknownLeg(leg_id.into()))?;
        let current = self.balance(&leg.account).unwrap_or_default();
        let Some((kind, amount, state)) = transition(leg_id, &leg, current, want)? else {
            return Ok(current);
        };
        leg.state = state;
        self.record_amount(Step::new(), kind, amount, leg_id, &leg)
            .await
    }

    /// Undo a purchase's leg (as [`Ledger::void`]) and take back the points it earned
    /// (`points`, the leg of their credit), in one step. The money always goes back; the
    /// points are taken back whether or not they are still there: spent, they leave a
    /// recorded debt on the points account (a negative balance, shown in its balance and
    /// history, paid down by later earnings, refusing spending meanwhile). Points given back
    /// already (a partial refund) are not taken twice.
    pub async fn void_clawing_back(
        &self,
        leg_id: &str,
        points: &str,
    ) -> Result<Balance, LedgerError> {
        let Some(first) = self.leg(leg_id)? else {
            return Err(LedgerError::UnknownLeg(leg_id.into()));
        };
        if first.of.is_some() {
            return self.unrefund(leg_id).await;
        }
        let Some(earned) = self.leg(points)? else {
            return self.void(leg_id).await;
        };
        let mut accounts = [first.account.as_str(), earned.account.as_str()];
        accounts.sort_unstable();
        let _first = self.lock(accounts[0]).await?;
        let _second = if accounts[1] != accounts[0] {
            Some(self.lock(accounts[1]).await?)
        } else {
            None
        };
        let mut leg = self
            .leg(leg_id)?
            .ok_or_else(|| LedgerError::UnknownLeg(leg_id.into()))?;
        let mut earned = self
            .leg(points)?
            .ok_or_else(|| LedgerError::UnknownLeg(points.into()))?;
        let current = self.balance(&leg.account).unwrap_or_default();
        let mut step = Step::new();
        let mut after = current;
        let moved = transition(leg_id, &leg, current, EntryType::Void)?;
        if let Some((kind, amount, state)) = moved {
            leg.state = state;
            self.write_entry_of(&mut step, kind, amount, leg_id, &leg)?
                .apply_to(&mut after)?;
        }
        let claw = earned.amount.saturating_sub(earned.refunded);
        let clawing = earned.kind == EntryType::Credit
            && earned.state == LegState::Done
            && claw > 0
            && earned.account != leg.account;
        let mut points_after = self.balance(&earned.account).unwrap_or_default();
        if clawing {
            earned.state = LegState::Refunded;
            earned.refunded = earned.amount;
            self.write_entry_of(&mut step, EntryType::Clawback, claw, points, &earned)?
                .apply_to(&mut points_after)?;
        }
        if moved.is_none() && !clawing {
            return Ok(current);
        }
        let mut changes = Vec::new();
        if let Some((kind, _, _)) = moved {
            changes.push(Change::leg(after, leg_id, &leg, kind));
        }
        if clawing {
            changes.push(Change::leg(
                points_after,
                points,
                &earned,
                EntryType::Clawback,
            ));
        }
        self.commit_and_apply(step, changes).await?;
        Ok(after)
    }

    /// Release every pending hold past its expiry. Returns how many.
    pub async fn expire_holds(&self) -> Result<usize, LedgerError> {
        let now = self.now_ms();
        let due: Vec<String> = match self.pending.lock() {
            Ok(pending) => pending
                .iter()
                .take_while(|(expires, _)| *expires <= now)
                .map(|(_, id)| id.clone())
                .collect(),
            Err(_) => return Err(storage("pending holds lock poisoned")),
        };
        let mut expired = 0;
        for id in due {
            match self.settle(&id, EntryType::Expire).await {
                Ok(_) => {
                    expired += 1;
                    self.holds_expired.increment(1);
                }
                // Posted or voided since the list was taken.
                Err(LedgerError::WrongState { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }

    /// Holds placed and not yet posted, voided or expired.
    pub fn open_holds(&self) -> i64 {
        self.open_holds.load(Ordering::Relaxed)
    }
}

/// What settling `leg` as `want` (post, void, expire) writes: the entry, its amount and the
/// leg's new state; `None` when it is settled that way already. A void gives back what
/// refunds have not.
fn transition(
    leg_id: &str,
    leg: &Leg,
    current: Balance,
    want: EntryType,
) -> Result<Option<(EntryType, i64, LegState)>, LedgerError> {
    let left = leg.amount.saturating_sub(leg.refunded).max(0);
    let to = |kind, amount, state| Ok(Some((kind, amount, state)));
    match (want, leg.state) {
        (EntryType::Post, LegState::Pending) => to(EntryType::Post, leg.amount, LegState::Posted),
        (EntryType::Post, LegState::Posted) => Ok(None),
        (EntryType::Void, LegState::Pending) => to(EntryType::Void, leg.amount, LegState::Voided),
        (EntryType::Void, LegState::Posted) => to(EntryType::Refund, left, LegState::Refunded),
        (EntryType::Void, LegState::Voided | LegState::Refunded | LegState::Expired) => Ok(None),
        (EntryType::Void, LegState::Done) if leg.kind == EntryType::Debit => {
            to(EntryType::Refund, left, LegState::Refunded)
        }
        (EntryType::Void, LegState::Done) if leg.kind == EntryType::Credit => {
            if current.available() < leg.amount {
                return Err(LedgerError::Insufficient {
                    available: current.available(),
                });
            }
            to(EntryType::Debit, leg.amount, LegState::Refunded)
        }
        (EntryType::Expire, LegState::Pending) => {
            to(EntryType::Expire, leg.amount, LegState::Expired)
        }
        (_, state) => Err(LedgerError::WrongState {
            leg: leg_id.into(),
            state,
            what: match want {
                EntryType::Post => "posting",
                EntryType::Expire => "expiry",
                _ => "voiding",
            },
        }),
    }
}
