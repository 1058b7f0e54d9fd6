//! Retrieval reference numbers (field 37) the switch assigns: unique across restarts. A
//! 12-digit sequence whose next block is reserved on disk (a synced watermark) before any
//! number of it is handed out, so a restart — even after a crash — starts past every number
//! it may have given. Reservations run in the background well before a block runs out; the
//! request path never waits for a disk.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::journal::{Entry, EntryKind, Journal, JournalError, Step};
use crate::store::Cf;

const WATERMARK: &[u8] = b"rrn-watermark";
/// Numbers reserved at a time.
const BLOCK: u64 = 1_000_000;
/// The next block is reserved when fewer than this many are left.
const LOW_WATER: u64 = BLOCK / 2;
/// Twelve digits.
const MODULUS: u64 = 1_000_000_000_000;

pub struct Rrns {
    me: Weak<Rrns>,
    journal: Arc<Journal>,
    next: AtomicU64,
    /// Numbers below this are reserved on disk.
    reserved: AtomicU64,
    reserving: AtomicBool,
}

impl Rrns {
    /// Start past the stored watermark, with the first block reserved.
    pub async fn open(journal: Arc<Journal>) -> Result<Arc<Rrns>, String> {
        let start = match journal.get(Cf::Meta, WATERMARK)? {
            Some(raw) => raw
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| "rrn watermark: damaged record".to_string())?,
            None => 1,
        };
        let rrns = Arc::new_cyclic(|me| Rrns {
            me: me.clone(),
            journal,
            next: AtomicU64::new(start),
            reserved: AtomicU64::new(start),
            reserving: AtomicBool::new(false),
        });
        rrns.reserve(start.saturating_add(BLOCK))
            .await
            .map_err(|e| format!("rrn watermark: {e}"))?;
        Ok(rrns)
    }

    /// The next number, as field 37.
    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let reserved = self.reserved.load(Ordering::Acquire);
        if n.saturating_add(LOW_WATER) >= reserved {
            self.reserve_more(reserved);
        }
        if n >= reserved {
            // Past what the disk holds: a crash now could hand this number out again.
            tracing::error!("rrn reservation is behind the numbers handed out");
        }
        crate::iso8583::padded_digits(n % MODULUS, 12)
            .iter()
            .map(|&d| char::from(d))
            .collect()
    }

    fn reserve_more(&self, reserved: u64) {
        if self.reserving.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            if let Err(e) = me.reserve(reserved.saturating_add(BLOCK)).await {
                tracing::error!(error = %e, "rrn watermark not written; retried at the next number");
            }
            me.reserving.store(false, Ordering::Release);
        });
    }

    /// Write `until` as the watermark (synced), then hand out numbers below it.
    async fn reserve(&self, until: u64) -> Result<(), JournalError> {
        let mut step = Step::new();
        step.put(Cf::Meta, WATERMARK, until.to_be_bytes().to_vec());
        step.append(Entry::new(
            EntryKind::Txn,
            "",
            "",
            format!("rrn numbers reserved up to {until}"),
        ));
        step.synced();
        self.journal.commit(step).await?;
        self.reserved.fetch_max(until, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Sealer;
    use crate::store::Store;

    #[tokio::test]
    async fn numbers_never_repeat_across_restarts_even_unannounced_ones() {
        let store = Store::memory();
        let journal = Journal::open(store.clone(), Sealer::from_card_key(&[7u8; 32]), 8).unwrap();
        let first = Rrns::open(journal.clone()).await.unwrap();
        let a: Vec<String> = (0..3).map(|_| first.next()).collect();
        assert_eq!(a, ["000000000001", "000000000002", "000000000003"]);
        drop(first);
        // A restart (nothing said how far the first run got): past its whole block.
        let second = Rrns::open(journal).await.unwrap();
        let b = second.next();
        assert!(b.as_str() > a[2].as_str(), "{b}");
        assert_eq!(b, format!("{:012}", 1 + BLOCK));
    }
}
