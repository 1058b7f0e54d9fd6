//! Mismatches: advices (0220, booked at the bank already) that matched no open order, kept
//! for an operator to settle with the partner.

use crate::journal::{Entry, EntryKind, Step};
use crate::store::Cf;

use super::keys::{mismatch_key, MISMATCHES};
use super::{to_json, DepositMsg, Mismatch, VaError, VirtualAccounts};

impl VirtualAccounts {
    /// Record in `step` an advice (the bank booked it already) that matched no open order,
    /// for an operator to settle with the partner.
    pub(super) fn record_mismatch_into(
        &self,
        step: &mut Step,
        d: &DepositMsg,
        reason: &str,
        order: Option<String>,
        now: i64,
    ) -> Result<(), VaError> {
        let id = format!("{:016x}-{}", now.max(0), d.key);
        let m = Mismatch {
            id: id.clone(),
            at_ms: now,
            listener: d.listener.clone(),
            bank: d.bank.clone(),
            account: d.account.clone(),
            amount: d.amount,
            rrn: d.rrn.clone(),
            stan: d.stan,
            reason: reason.to_string(),
            partner: self.account(&d.bank, &d.account)?.map(|pa| pa.partner),
            order,
        };
        step.put(Cf::VirtualAccounts, mismatch_key(&id), to_json(&m));
        step.append(Entry::new(
            EntryKind::Txn,
            &format!("va/deposit/{}", d.key),
            &d.listener,
            format!("advice matched nothing ({reason}): mismatch recorded"),
        ));
        tracing::warn!(listener = %d.listener, account = %d.account, amount = d.amount, reason, "virtual accounts: unmatched advice recorded as a mismatch");
        metrics::counter!("cyberswitch_va_mismatches_total").increment(1);
        Ok(())
    }

    /// Recorded mismatches (of one partner), oldest first.
    pub fn mismatches(&self, partner: Option<&str>) -> Result<Vec<Mismatch>, VaError> {
        let mut all: Vec<Mismatch> = self.records(MISMATCHES)?;
        all.retain(|m| partner.is_none_or(|p| m.partner.as_deref() == Some(p)));
        Ok(all)
    }
}
