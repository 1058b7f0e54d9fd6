//! Money onto a card and off it: recharges within the program's steps and maximum
//! balance (F9/F14), and the refund of what a card holds, which closes it (F14).
//! Sub-account cards hold no money of their own: their master is funded instead.

use super::{Card, CardStatus};
use crate::hosted::{Hosted, HostedError};
use crate::journal::Step;
use crate::ledger::Balance;

impl Hosted {
    /// F9/F14: load money onto an active card, in the program's steps, never above its
    /// maximum balance. Idempotent by `leg`.
    pub async fn recharge(&self, id: &str, amount: u64, leg: &str) -> Result<Balance, HostedError> {
        let _guard = self.lock_card(id).await;
        let card = self.card(id)?;
        self.recharge_locked(&card, amount, leg).await
    }

    pub(crate) async fn recharge_locked(
        &self,
        card: &Card,
        amount: u64,
        leg: &str,
    ) -> Result<Balance, HostedError> {
        if card.status != CardStatus::Active {
            return Err(HostedError::Status(card.status.as_str()));
        }
        if card.master.is_some() {
            return Err(HostedError::Invalid(
                "sub-account cards are funded through their master".into(),
            ));
        }
        if card.expired() {
            return Err(HostedError::Expired);
        }
        let program = self.program(&card.program)?;
        if amount == 0 || !amount.is_multiple_of(program.recharge_step) {
            return Err(HostedError::BadAmount(format!(
                "recharges come in multiples of {}",
                program.recharge_step
            )));
        }
        let balance = self
            .ledger
            .settled_balance(&card.account)
            .await
            .unwrap_or_default();
        let after = balance.posted.saturating_add(amount as i64); // ok: bounded by max_balance
        if after > program.max_balance as i64 {
            return Err(HostedError::Limit(format!(
                "balance would be {after}, above the maximum {}",
                program.max_balance
            )));
        }
        Ok(self
            .ledger
            .credit(&card.account, amount as i64, leg)
            .await?)
    }

    /// F14: give the holder back what the card holds, and close it.
    pub async fn refund(&self, id: &str) -> Result<u64, HostedError> {
        let _guard = self.lock_card(id).await;
        let mut card = self.card(id)?;
        if card.status == CardStatus::Closed {
            return Err(HostedError::Status(card.status.as_str()));
        }
        if card.master.is_some() {
            return Err(HostedError::Invalid(
                "a sub-account card holds no money of its own".into(),
            ));
        }
        let balance = self
            .ledger
            .settled_balance(&card.account)
            .await
            .unwrap_or_default();
        // A hold still pending would come back to a closed card when it is voided or expires,
        // where nobody could refund it.
        if balance.pending > 0 {
            return Err(HostedError::Conflict(format!(
                "{} is held by authorizations still pending; refund once they complete or expire",
                balance.pending
            )));
        }
        let available = balance.available();
        card.status = CardStatus::Closed;
        let what = "balance refunded, closed";
        if available > 0 {
            // The debit and the closing in one step.
            let mut step = Step::new();
            Self::card_writes(&mut step, &card, what)?;
            let leg = format!("refund:{}", card.id);
            self.ledger
                .debit_with(step, &card.account, available, &leg)
                .await?;
        } else {
            self.save_card(Step::new(), &card, what).await?;
        }
        Ok(available.max(0) as u64) // ok: non-negative
    }
}
