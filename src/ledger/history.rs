//! An account's entries read back from storage: all of them, the recent ones, and the
//! balance they add up to (a check on the balance kept in memory).

use super::{storage, Balance, Ledger, LedgerEntry, LedgerError};
use crate::store::Cf;

/// How far a day's statement reads before the day's start (see [`Ledger::day`]).
const CLOCK_SLACK_MS: i64 = 3_600_000;

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
        let mut prefix = account.as_bytes().to_vec();
        prefix.push(0);
        let mut recent = Vec::new();
        let mut damaged = None;
        let store = self.journal.store();
        store
            .for_each_rev(Cf::LedgerEntries, &prefix, |_, v| {
                match serde_json::from_slice::<LedgerEntry>(v) {
                    Ok(e) if e.at_ms >= since_ms => {
                        recent.push(e);
                        return std::ops::ControlFlow::Continue(());
                    }
                    Ok(_) => {}
                    Err(e) => damaged = Some(e),
                }
                std::ops::ControlFlow::Break(())
            })
            .map_err(storage)?;
        if let Some(e) = damaged {
            return Err(storage(e));
        }
        recent.reverse();
        Ok(recent)
    }

    /// An account's opening balance at `start_ms` and its entries made in `[start_ms,
    /// end_ms)`: a day's statement. Read backwards from the newest entry down to `start_ms`
    /// (and an hour before it, see `CLOCK_SLACK_MS`),
    /// with the balance now, under the account's lock (no entry lands between the two
    /// reads): the opening is the balance now less what the entries since `start_ms`
    /// changed, so a statement of a recent day reads that day's entries and the ones after
    /// it, not the account's whole past.
    pub async fn day(
        &self,
        account: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<(Balance, Vec<LedgerEntry>), LedgerError> {
        let _held = self.locks.lock(account).await;
        self.settle_doubt(account).await;
        let now = self
            .balance(account)
            .ok_or_else(|| LedgerError::UnknownAccount(account.to_string()))?;
        // Entries are in the order they were written, their times from the wall clock: read
        // back an hour further, so that a clock set back by up to that much cannot hide an
        // entry of the day behind an older-looking one written after it.
        let mut recent = self.history_since(account, start_ms.saturating_sub(CLOCK_SLACK_MS))?;
        recent.retain(|e| e.at_ms >= start_ms);
        let opening = now.less(&Balance::change_of(&recent)?)?;
        recent.retain(|e| e.at_ms < end_ms);
        Ok((opening, recent))
    }

    /// Balances derived afresh from the stored entries (for checks: must equal
    /// [`Ledger::balance`]).
    pub fn derive(&self, account: &str) -> Result<Balance, LedgerError> {
        let mut b = Balance::default();
        for e in self.history(account)? {
            e.apply_to(&mut b)?;
        }
        Ok(b)
    }
}
