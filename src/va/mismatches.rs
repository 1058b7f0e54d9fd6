//! Mismatches: advices (0220, booked at the bank already) that matched no open order, kept
//! for an operator to settle with the partner.

use std::ops::ControlFlow;

use crate::journal::{Entry, EntryKind, Step};
use crate::store::Cf;

use super::keys::{mismatch_key, partner_mismatch_key, partner_mismatches, MISMATCHES};
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
        if let Some(partner) = &m.partner {
            step.put(
                Cf::VirtualAccounts,
                partner_mismatch_key(partner, &id),
                Vec::new(),
            );
        }
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

    /// Recorded mismatches (of one partner), oldest first, after the one with id `after`
    /// (none: from the first), at most `limit`; with the id to give as `after` for the next
    /// page when there may be more. Reads what it returns (a partner's through its index).
    pub fn mismatches(
        &self,
        partner: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Mismatch>, Option<String>), VaError> {
        let prefix = match partner {
            Some(p) => partner_mismatches(p).into_bytes(),
            None => MISMATCHES.to_vec(),
        };
        let mut start = prefix.clone();
        if let Some(after) = after {
            // Just past it: the smallest key greater than `after`'s own.
            start.extend_from_slice(after.as_bytes());
            start.push(0);
        }
        let mut page: Vec<Mismatch> = Vec::new();
        let mut more = false;
        self.visit(&prefix, &start, |k, v| {
            let id = String::from_utf8_lossy(&k[prefix.len()..]);
            let raw = match partner {
                Some(_) => self.raw(&mismatch_key(&id))?,
                None => Some(v.to_vec()),
            };
            // One that does not decode (written by a later version, say) is left out.
            let Some(m) = raw.and_then(|raw| serde_json::from_slice(&raw).ok()) else {
                return Ok(ControlFlow::Continue(()));
            };
            if page.len() == limit {
                more = true;
                return Ok(ControlFlow::Break(()));
            }
            page.push(m);
            Ok(ControlFlow::Continue(()))
        })?;
        let next = more.then(|| page.last().map(|m| m.id.clone())).flatten();
        Ok((page, next))
    }

    /// Each mismatch of `partner` recorded from `from_ms` on, oldest first, until `visit`
    /// says stop.
    pub(super) fn mismatches_from(
        &self,
        partner: &str,
        from_ms: i64,
        mut visit: impl FnMut(Mismatch) -> ControlFlow<()>,
    ) -> Result<(), VaError> {
        let prefix = partner_mismatches(partner);
        let start = format!("{prefix}{:016x}", from_ms.max(0));
        self.visit(prefix.as_bytes(), start.as_bytes(), |k, _| {
            let id = String::from_utf8_lossy(&k[prefix.len()..]);
            let raw = self.raw(&mismatch_key(&id))?;
            Ok(
                match raw.and_then(|raw| serde_json::from_slice(&raw).ok()) {
                    Some(m) => visit(m),
                    None => ControlFlow::Continue(()),
                },
            )
        })
    }
}
