//! Legs sent ahead of their record (`[[link]] legs_ahead = K`): a leg goes upstream while
//! its record is still on its way to disk, instead of after the record's fsync.
//!
//! SPEC §9 asks that after a crash every leg that may have moved money be known, so that it
//! can be reversed. A leg sent ahead may have reached its host and then been lost with its
//! record. What makes that recoverable:
//!
//! - **Identities recovery can name.** On such a link every leg carries, in field 37, the
//!   link's next identity (`A` and 11 digits), taken in the same critical section as the
//!   record's place in the journal's queue. Records land in queue order, so identities land
//!   in increasing order, and each record writes its identity as the link's high-water mark
//!   `H` (`meta`, `legs-ahead/<link>`).
//! - **A bounded number of legs ahead.** A leg takes one of `K` places before its identity
//!   and gives it back once its record is on disk (synced: [`crate::journal::Step::sent_ahead`]).
//!   So at most `K` identities are ever out without their record on disk, all above the
//!   last `H` on disk.
//! - **What is on disk is a prefix.** A write that fails while such a record is not on disk
//!   halts the journal ([`crate::journal::JournalError::Halted`]): nothing later can land
//!   and move `H` past a lost record.
//! - **Blind reversals.** At start, for a link not stopped cleanly, every identity in
//!   `(H, H + K]` gets a reversal naming it by field 37 alone (field 90's STAN and time
//!   zero), queued through store-and-forward like any other; a host that never saw it
//!   answers 25, which counts as done. Identities then go on from `H + K + 1`, written (with
//!   the reversals, synced) before the link carries a leg.
//! - **A clean stop** (every place given back, so every record on disk) marks the link
//!   clean: the next start reverses nothing.
//!
//! The host must find a leg by field 37 alone and remember an identity it reversed before
//! seeing it (a late original is then declined): a per-link capability agreed with the
//! host, off by default. The bundled simulators do both (`sim/requests.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::saf::{Queued, Saf};
use crate::journal::{Entry, EntryKind, Journal, Step};
use crate::store::Cf;

/// The `meta` keys of the links' high-water marks.
const PREFIX: &str = "legs-ahead/";
/// Identities are `A` and this many digits (field 37 is 12 characters).
const DIGITS: u32 = 11;
const MODULUS: u64 = 10u64.pow(DIGITS);

/// Field 37 of the leg with identity `n`: `A` and 11 digits. The letter keeps these apart
/// from the switch's other RRNs (digits only), which the same host may remember.
pub fn identity(n: u64) -> String {
    format!("A{:011}", n % MODULUS)
}

/// Is this field 37 an identity of a leg sent ahead? (What a host indexes legs by.)
pub fn is_identity(rrn: &str) -> bool {
    rrn.len() == 12 && rrn.starts_with('A') && rrn[1..].bytes().all(|b| b.is_ascii_digit())
}

/// A link's mark as stored: the highest identity whose record is on disk, the window `K`
/// it was written under, and whether the link stopped cleanly (every record on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    high: u64,
    window: u32,
    clean: bool,
}

impl Mark {
    fn to_bytes(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(13);
        v.extend_from_slice(&self.high.to_be_bytes());
        v.extend_from_slice(&self.window.to_be_bytes());
        v.push(u8::from(self.clean));
        v
    }

    fn from_bytes(raw: &[u8]) -> Option<Mark> {
        let (high, rest) = raw.split_first_chunk::<8>()?;
        let (window, rest) = rest.split_first_chunk::<4>()?;
        let (&clean, rest) = rest.split_first()?;
        rest.is_empty().then_some(Mark {
            high: u64::from_be_bytes(*high),
            window: u32::from_be_bytes(*window),
            clean: clean == 1,
        })
    }
}

fn mark_key(link: &str) -> Vec<u8> {
    format!("{PREFIX}{link}").into_bytes()
}

/// One link's legs sent ahead: its places and its next identity.
pub struct LegsAhead {
    link: String,
    window: u32,
    places: Arc<Semaphore>,
    /// The next identity; held while a record takes its place in the journal's queue.
    next: Mutex<u64>,
}

/// A place taken by a leg about to be sent ahead; given back when its record is on disk.
pub struct Place {
    _held: OwnedSemaphorePermit,
}

impl LegsAhead {
    pub fn link(&self) -> &str {
        &self.link
    }

    /// Wait for a place (`None` once the link stops taking legs ahead).
    pub async fn place(&self) -> Option<Place> {
        self.places
            .clone()
            .acquire_owned()
            .await
            .ok()
            .map(|held| Place { _held: held })
    }

    /// Run `queue` with the next identity (as field 37) and the write that records it as
    /// the link's high-water mark, which `queue` must add to the leg's step and hand to the
    /// journal before it returns: identities reach the queue in increasing order.
    pub fn with_next<R>(&self, queue: impl FnOnce(String, (Cf, Vec<u8>, Vec<u8>)) -> R) -> R {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let n = *next;
        *next += 1;
        let mark = Mark {
            high: n,
            window: self.window,
            clean: false,
        };
        queue(
            identity(n),
            (Cf::Meta, mark_key(&self.link), mark.to_bytes()),
        )
    }

    /// At a graceful stop: take no more legs, wait (at most `within`) until every record of
    /// a leg sent ahead is on disk, then mark the link clean (synced), so the next start
    /// reverses nothing blind. Not marked when the wait runs out: the next start reverses
    /// the whole window, as after a crash.
    pub async fn stop_clean(&self, journal: &Journal, within: std::time::Duration) -> bool {
        let all = tokio::time::timeout(within, self.places.acquire_many(self.window)).await;
        let Ok(Ok(held)) = all else {
            return false;
        };
        held.forget();
        self.places.close();
        let high = self.next.lock().map(|n| n.saturating_sub(1)).unwrap_or(0);
        let mark = Mark {
            high,
            window: self.window,
            clean: true,
        };
        let mut step = Step::new();
        step.put(Cf::Meta, mark_key(&self.link), mark.to_bytes());
        step.synced();
        journal.commit(step).await.is_ok()
    }
}

/// Start-up, before any link carries a leg: for every link that sent legs ahead and did not
/// stop cleanly, queue the blind reversals of its window; then, for every link configured
/// with `legs_ahead`, where its identities go on from. One synced step for all of it.
/// `windows` holds each configured link's `K` (0: off). Without `reverse` (a test-only
/// start without recovery) the windows are passed over, not reversed.
pub async fn open(
    journal: &Journal,
    saf: &Saf,
    windows: &[(String, u32)],
    reverse: bool,
) -> Result<HashMap<String, Arc<LegsAhead>>, String> {
    let mut step = Step::new();
    let mut queued: Vec<Queued> = Vec::new();
    let mut stored = HashMap::new();
    for (key, value) in journal.scan(Cf::Meta, PREFIX.as_bytes())? {
        let link = String::from_utf8_lossy(&key[PREFIX.len()..]).into_owned();
        let mark = Mark::from_bytes(&value)
            .ok_or_else(|| format!("legs ahead of link {link:?}: damaged mark"))?;
        stored.insert(link, mark);
    }
    let mut opened = HashMap::new();
    for (link, mark) in &stored {
        if mark.clean || !reverse {
            continue;
        }
        tracing::warn!(
            link,
            from = mark.high + 1,
            to = mark.high + u64::from(mark.window),
            "legs sent ahead of their record may be lost with it: reversing their identities blind"
        );
        for n in mark.high + 1..=mark.high + u64::from(mark.window) {
            queued.push(saf.enqueue_blind(&mut step, link, &identity(n)));
        }
    }
    for (link, mark) in &stored {
        let window = windows
            .iter()
            .find(|(l, _)| l == link)
            .map_or(0, |(_, k)| *k);
        // Past every identity that may have been used: the window of a crash, or only what
        // landed after a clean stop.
        let high = if mark.clean {
            mark.high
        } else {
            mark.high + u64::from(mark.window)
        };
        let next = Mark {
            high,
            window: window.max(mark.window),
            // A link no longer sending ahead: its window is reversed (queued above), nothing
            // more will be sent ahead on it.
            clean: window == 0,
        };
        step.put(Cf::Meta, mark_key(link), next.to_bytes());
        if window > 0 {
            opened.insert(link.clone(), LegsAhead::new(link, window, high + 1));
        }
    }
    for (link, window) in windows.iter().filter(|(_, k)| *k > 0) {
        if opened.contains_key(link) {
            continue;
        }
        // First use: written before any identity is, so a crash from now on finds a mark.
        let first = Mark {
            high: 0,
            window: *window,
            clean: false,
        };
        step.put(Cf::Meta, mark_key(link), first.to_bytes());
        opened.insert(link.clone(), LegsAhead::new(link, *window, 1));
    }
    if !step.is_empty() {
        step.append(Entry::new(
            EntryKind::Txn,
            "",
            "",
            format!(
                "legs ahead: {} blind reversals queued, {} links open",
                queued.len(),
                opened.len()
            ),
        ));
        step.synced();
        journal
            .commit(step)
            .await
            .map_err(|e| format!("legs ahead: {e}"))?;
        saf.publish(queued);
    }
    Ok(opened)
}

impl LegsAhead {
    fn new(link: &str, window: u32, next: u64) -> Arc<LegsAhead> {
        Arc::new(LegsAhead {
            link: link.to_string(),
            window,
            places: Arc::new(Semaphore::new(window as usize)),
            next: Mutex::new(next),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_twelve_characters_apart_from_digit_rrns() {
        assert_eq!(identity(7), "A00000000007");
        assert!(is_identity(&identity(123)));
        assert!(!is_identity("000000000123"));
        assert!(!is_identity("A0000000012"));
        let m = Mark {
            high: 9,
            window: 64,
            clean: true,
        };
        assert_eq!(Mark::from_bytes(&m.to_bytes()), Some(m));
        assert_eq!(Mark::from_bytes(&m.to_bytes()[..12]), None);
    }
}
