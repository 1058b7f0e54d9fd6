//! Transaction search for disputes (SPEC §8): a function of the switch's store, read one
//! record at a time (never the whole column family in memory), card numbers masked as the
//! records hold them.

use serde::Serialize;

use super::txn::{LegState, TxnRecord, TxnState};
use crate::store::{Cf, Store};

/// A search reads at most this many transaction records (transaction keys are not in time
/// order, so every search reads from the start); past it the answer says `truncated`:
/// matches may be missing.
pub const SEARCH_MAX_EXAMINED: usize = 5_000_000;

/// What to look for; every criterion given must match.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub rrn: Option<String>,
    pub stan: Option<u32>,
    /// Begun in `[from, to)`, ms since the epoch.
    pub between_ms: Option<(i64, i64)>,
    /// At most this many results.
    pub limit: usize,
}

/// One transaction found.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub key: String,
    pub state: TxnState,
    pub code: String,
    pub mti: String,
    pub card_number: String,
    pub amount: Option<u64>,
    pub stan: Option<u32>,
    pub terminal: String,
    pub merchant: String,
    pub rrn: String,
    pub at_ms: i64,
    pub legs: Vec<FoundLeg>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FoundLeg {
    pub link: String,
    pub state: LegState,
    pub amount: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub transactions: Vec<Found>,
    /// The search stopped at its bound of records read: matches may be missing.
    pub truncated: bool,
}

impl Search {
    /// Run over `store`, reading at most `max_examined` records.
    pub fn run(&self, store: &Store, max_examined: usize) -> Result<Results, String> {
        let mut transactions = Vec::new();
        let mut examined = 0;
        crate::store::for_each(store, Cf::Txns, b"", |key, raw| {
            examined += 1;
            if examined > max_examined {
                return std::ops::ControlFlow::Break(());
            }
            if let Some(found) = self.matching(key, raw) {
                transactions.push(found);
            }
            if transactions.len() >= self.limit {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })?;
        Ok(Results {
            transactions,
            truncated: examined > max_examined,
        })
    }

    /// The record as found, if it matches (an unreadable record matches nothing).
    fn matching(&self, key: &[u8], raw: &[u8]) -> Option<Found> {
        let record = TxnRecord::from_bytes(raw).ok()?;
        let sum = record.summary.as_ref()?;
        let matches = self.rrn.as_ref().is_none_or(|r| sum.rrn == *r)
            && self.stan.is_none_or(|st| sum.stan == Some(st))
            && self
                .between_ms
                .is_none_or(|(a, b)| sum.at_ms >= a && sum.at_ms < b);
        if !matches {
            return None;
        }
        Some(Found {
            key: String::from_utf8_lossy(key).into_owned(),
            state: record.state,
            code: record.code.clone(),
            mti: sum.mti.clone(),
            card_number: sum.card.clone(),
            amount: sum.amount,
            stan: sum.stan,
            terminal: sum.terminal.clone(),
            merchant: sum.merchant.clone(),
            rrn: sum.rrn.clone(),
            at_ms: sum.at_ms,
            legs: record
                .legs
                .iter()
                .map(|l| FoundLeg {
                    link: l.link.clone(),
                    state: l.state,
                    amount: l.amount,
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, Sealer, Step};
    use crate::switch::txn::TxnSummary;

    #[tokio::test]
    async fn a_search_reads_records_one_at_a_time_up_to_its_bound() {
        let store = Store::memory();
        let journal = Journal::open(store.clone(), Sealer::from_card_key(&[7u8; 32]), 8).unwrap();
        let mut step = Step::new();
        for i in 0..5u32 {
            let record = TxnRecord {
                state: TxnState::Answered,
                code: "00".into(),
                legs: Vec::new(),
                summary: Some(TxnSummary {
                    rrn: format!("RRN{i}"),
                    stan: Some(i),
                    ..TxnSummary::default()
                }),
                refund_of: None,
            };
            step.put(Cf::Txns, format!("T|{i:06}|0000000001"), record.to_bytes());
        }
        journal.commit(step).await.unwrap();
        let by_rrn = |rrn: &str| Search {
            rrn: Some(rrn.into()),
            limit: 10,
            ..Search::default()
        };
        let found = by_rrn("RRN4").run(&store, 10).unwrap();
        assert_eq!((found.transactions.len(), found.truncated), (1, false));
        assert_eq!(found.transactions[0].stan, Some(4));
        // The last record is past the bound: not found, and the answer says so.
        let found = by_rrn("RRN4").run(&store, 3).unwrap();
        assert_eq!((found.transactions.len(), found.truncated), (0, true));
        // The limit stops the search early without truncating it.
        let all = Search {
            limit: 2,
            ..Search::default()
        };
        let found = all.run(&store, 10).unwrap();
        assert_eq!((found.transactions.len(), found.truncated), (2, false));
    }
}
