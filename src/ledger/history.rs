//! An account's entries read back from storage: all of them, the recent ones, and the
//! balance they add up to (a check on the balance kept in memory).

use super::{storage, Balance, Ledger, LedgerEntry, LedgerError};
use crate::store::Cf;

impl Ledger {
    /// An account's entries, oldest first.
    pub fn history(&self, account: &str) -> Result<Vec<LedgerEntry>, LedgerError> {
        let mut prefix = account.as_bytes().to_vec();
        prefix.push(0);
        self.journal
            .scan(Cf::LedgerEntries, &prefix)
            .map_err(storage)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(storage))
            .collect()
    }

    /// An account's entries made at or after `since_ms`, oldest first. Read backwards from
    /// the newest: an account's entries are keyed in the order they were recorded (under
    /// its lock), so this reads today's entries, not the account's whole past.
    pub fn history_since(
        &self,
        account: &str,
        since_ms: i64,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        let handle = crate::store::handle(self.journal.db(), Cf::LedgerEntries).map_err(storage)?;
        let mut prefix = account.as_bytes().to_vec();
        prefix.push(0);
        let mut it = self.journal.db().raw_iterator_cf(handle);
        it.seek_for_prev(crate::store::seq_key(account, u64::MAX));
        let mut recent = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            let e: LedgerEntry = serde_json::from_slice(v).map_err(storage)?;
            if e.at_ms < since_ms {
                break;
            }
            recent.push(e);
            it.prev();
        }
        it.status().map_err(storage)?;
        recent.reverse();
        Ok(recent)
    }

    /// Balances derived afresh from the stored entries (for checks: must equal
    /// [`Ledger::balance`]).
    pub fn derive(&self, account: &str) -> Result<Balance, LedgerError> {
        let mut b = Balance::default();
        for e in self.history(account)? {
            e.apply_to(&mut b);
        }
        Ok(b)
    }
}
