//! Legs sent ahead of their record (`[[link]] legs_ahead = K`): a leg goes upstream while
//! its record is still on its way to disk, instead of after the record's fsync.
//!
//! SPEC §9 asks that after a crash every leg that may have moved money be known, so that it
//! can be reversed. A leg sent ahead may have reached its host and then been lost with its
//! record. What makes that recoverable:
//!
//! - **Identities recovery can name.** On such a link every leg carries, in field 37, an
//!   identity: `A`, the link's epoch for this run (random, drawn at start) and the leg's
//!   number, taken in the same critical section as the record's place in the journal's
//!   queue. Records land in queue order, so numbers land in increasing order, and each
//!   record writes its number as the link's high-water mark `H` (`meta`,
//!   `legs-ahead/<link>`, with the epoch and `K`).
//! - **A bounded number of legs ahead.** A leg takes one of `K` places before its number
//!   and gives it back once its record is on disk (synced: [`crate::journal::Step::sent_ahead`]).
//!   So at most `K` numbers are ever out without their record on disk, all above the last
//!   `H` on disk.
//! - **What is on disk is a prefix.** A write that fails while such a record is not on disk
//!   halts the journal ([`crate::journal::JournalError::Halted`]): nothing later can land
//!   and move `H` past a lost record.
//! - **Blind reversals.** At start, for a link not stopped cleanly, every identity of its
//!   last epoch numbered `(H, H + K]` gets a reversal naming it by field 37 alone (field
//!   90's STAN and time zero), queued through store-and-forward like any other; a host that
//!   never saw it answers 25, which counts as done. The link then starts a new epoch,
//!   written (with the reversals, synced) before it carries a leg.
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
/// An identity is `A`, the run's epoch (4 characters), and the leg's number (7), in
/// base 36: field 37 is 12 characters.
const EPOCH_CHARS: usize = 4;
const NUMBER_CHARS: usize = 7;
const BASE36: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A link's epoch: drawn at random at every start, so that no identity is used twice at a
/// host whatever happens to the switch's store (a link renamed, two links to one host, a
/// data directory restored from a backup); 36^4 epochs, 36^7 legs in each.
pub type Epoch = [u8; EPOCH_CHARS];

fn new_epoch() -> Epoch {
    use rand::Rng;
    let mut rng = rand::rng();
    std::array::from_fn(|_| BASE36[rng.random_range(0..BASE36.len())])
}

/// Field 37 of leg `n` of `epoch`: `A`, the epoch, `n` in base 36 (the letter keeps these
/// apart from the switch's other RRNs, digits only, which the same host may remember).
pub fn identity(epoch: &Epoch, n: u64) -> String {
    debug_assert!(n < NUMBERS, "identity numbers never wrap");
    let mut digits = [b'0'; NUMBER_CHARS];
    let mut rest = n;
    for d in digits.iter_mut().rev() {
        *d = BASE36[(rest % 36) as usize]; // ok: < 36
        rest /= 36;
    }
    let mut text = String::with_capacity(12);
    text.push('A');
    text.extend(epoch.iter().chain(digits.iter()).map(|&b| char::from(b)));
    text
}

/// The most legs one epoch numbers (36^7).
const NUMBERS: u64 = 36u64.pow(NUMBER_CHARS as u32);

/// Is this field 37 an identity of a leg sent ahead? (What a host indexes legs by.)
pub fn is_identity(rrn: &str) -> bool {
    rrn.len() == 12
        && rrn.starts_with('A')
        && rrn[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// A link's mark as stored: the run's epoch, the highest number whose record is on disk,
/// the window `K` it was written under, and whether the link stopped cleanly (every record
/// on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    epoch: Epoch,
    high: u64,
    window: u32,
    clean: bool,
}

impl Mark {
    fn to_bytes(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(17);
        v.extend_from_slice(&self.epoch);
        v.extend_from_slice(&self.high.to_be_bytes());
        v.extend_from_slice(&self.window.to_be_bytes());
        v.push(u8::from(self.clean));
        v
    }

    fn from_bytes(raw: &[u8]) -> Option<Mark> {
        let (epoch, rest) = raw.split_first_chunk::<EPOCH_CHARS>()?;
        let (high, rest) = rest.split_first_chunk::<8>()?;
        let (window, rest) = rest.split_first_chunk::<4>()?;
        let (&clean, rest) = rest.split_first()?;
        rest.is_empty().then_some(Mark {
            epoch: *epoch,
            high: u64::from_be_bytes(*high),
            window: u32::from_be_bytes(*window),
            clean: clean == 1,
        })
    }
}

fn mark_key(link: &str) -> Vec<u8> {
    format!("{PREFIX}{link}").into_bytes()
}

/// The `meta` keys of the epochs this store has used (one per link and start).
const EPOCHS: &str = "legs-ahead-epoch/";

fn epoch_key(epoch: &Epoch) -> Vec<u8> {
    let mut key = EPOCHS.as_bytes().to_vec();
    key.extend_from_slice(epoch);
    key
}

/// How long a leg waiting for a place, or a stop waiting for every place, waits before it
/// asks for a sync again.
const SYNC_AGAIN: std::time::Duration = std::time::Duration::from_millis(100);

/// One link's legs sent ahead: its places and its next identity.
pub struct LegsAhead {
    link: String,
    epoch: Epoch,
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

    /// A place for the next leg (`None` once the link stops taking legs ahead, or the
    /// journal cannot sync). Every place taken is held by a record already handed to the
    /// journal, which gives it back at the next sync; records ride with other steps' syncs,
    /// so with none coming a leg could wait for ever — two transactions each holding a
    /// place on one link and waiting for one on the other would. So a leg that finds no
    /// place brings the sync itself before it waits.
    ///
    /// It syncs again as long as it waits (every [`SYNC_AGAIN`]): the places may go, after
    /// its sync, to records whose transactions never bring one (a stop's gate, a task that
    /// failed).
    pub async fn place(&self, journal: &Journal) -> Option<Place> {
        match self.places.clone().try_acquire_owned() {
            Ok(held) => return Some(Place { _held: held }),
            Err(tokio::sync::TryAcquireError::Closed) => return None,
            Err(tokio::sync::TryAcquireError::NoPermits) => {}
        }
        // One wait, keeping its turn among the waiters, with a sync now and every
        // `SYNC_AGAIN` while it lasts.
        let acquire = self.places.clone().acquire_owned();
        tokio::pin!(acquire);
        loop {
            journal.sync().await.ok()?;
            tokio::select! {
                held = &mut acquire => return held.ok().map(|held| Place { _held: held }),
                _ = tokio::time::sleep(SYNC_AGAIN) => {}
            }
        }
    }

    /// Are there numbers left in this run's epoch? (Past them, legs on the link wait for
    /// their record, as on a link without `legs_ahead`, until a restart draws a new epoch.)
    pub fn has_numbers(&self) -> bool {
        self.next.lock().is_ok_and(|n| *n < NUMBERS)
    }

    /// Run `queue` with the next identity (as field 37) and the write that records it as
    /// the link's high-water mark, which `queue` must add to the leg's step and hand to the
    /// journal before it returns: identities reach the queue in increasing order. An
    /// identity `queue` fails with is given again (it went nowhere).
    /// Past the epoch's last number, `queue` is not run: `None` (numbers never wrap).
    pub fn with_next<T, E>(
        &self,
        queue: impl FnOnce(String, (Cf, Vec<u8>, Vec<u8>)) -> Result<T, E>,
    ) -> Option<Result<T, E>> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let n = *next;
        if n >= NUMBERS {
            tracing::error!(link = %self.link, "legs ahead: this run's numbers are used up; legs wait for their record until a restart");
            return None;
        }
        let mark = Mark {
            epoch: self.epoch,
            high: n,
            window: self.window,
            clean: false,
        };
        let queued = queue(
            identity(&self.epoch, n),
            (Cf::Meta, mark_key(&self.link), mark.to_bytes()),
        );
        if queued.is_ok() {
            *next = n + 1;
        }
        Some(queued)
    }

    /// At a graceful stop: take no more legs, wait (at most `within`) until every record of
    /// a leg sent ahead is on disk, then mark the link clean (synced), so the next start
    /// reverses nothing blind. Not marked when the wait runs out: the next start reverses
    /// the whole window, as after a crash.
    pub async fn stop_clean(&self, journal: &Journal, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        // Records written and waiting for a sync get it, again as long as it waits (a
        // transaction still running may send one more after the first); the wait keeps its
        // turn, so legs asking after it wait behind it.
        let all = self.places.acquire_many(self.window);
        tokio::pin!(all);
        let held = loop {
            match tokio::time::timeout_at(deadline, journal.sync()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
            let again = deadline.min(tokio::time::Instant::now() + SYNC_AGAIN);
            tokio::select! {
                held = &mut all => match held {
                    Ok(held) => break held,
                    Err(_closed) => return false,
                },
                _ = tokio::time::sleep_until(again) => {
                    if tokio::time::Instant::now() >= deadline {
                        return false;
                    }
                }
            }
        };
        held.forget();
        self.places.close();
        let high = self.next.lock().map(|n| n.saturating_sub(1)).unwrap_or(0);
        let mark = Mark {
            epoch: self.epoch,
            high,
            window: self.window,
            clean: true,
        };
        let mut step = Step::new();
        step.put(Cf::Meta, mark_key(&self.link), mark.to_bytes());
        step.synced();
        matches!(
            tokio::time::timeout_at(deadline, journal.commit(step)).await,
            Ok(Ok(()))
        )
    }
}

/// Start-up, before any link carries a leg: for every link that sent legs ahead and did not
/// stop cleanly, queue the blind reversals of its window; then give every link configured
/// with `legs_ahead` a new epoch, never used before in this store. One synced step for all
/// of it. `windows` holds each configured link's `K` (0: off). Without `reverse` (a
/// test-only start without recovery) an unclean mark is left as it is, for a later start
/// to reverse, and its link does not send ahead meanwhile.
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
    let mut used: std::collections::HashSet<Epoch> = std::collections::HashSet::new();
    for (key, _) in journal.scan(Cf::Meta, EPOCHS.as_bytes())? {
        if let Some(e) = key
            .get(EPOCHS.len()..)
            .and_then(|e| Epoch::try_from(e).ok())
        {
            used.insert(e);
        }
    }
    used.extend(stored.values().map(|m| m.epoch));
    // Left for a later start (see above).
    let kept: Vec<String> = stored
        .iter()
        .filter(|(_, m)| !m.clean && !reverse)
        .map(|(l, _)| l.clone())
        .collect();
    for (link, mark) in &stored {
        let configured = windows.iter().any(|(l, _)| l == link);
        if !mark.clean && !configured {
            // Its blind reversals would have no link to go through.
            return Err(format!(
                "link {link:?} sent legs ahead and did not stop cleanly, and is no longer \
                 configured: configure it again (legs_ahead = 0 will do) so that its window \
                 can be reversed; remove it after a clean stop"
            ));
        }
        if mark.clean || !reverse {
            continue;
        }
        tracing::warn!(
            link,
            from = mark.high + 1,
            to = mark.high + u64::from(mark.window),
            "legs sent ahead of their record may be lost with it: reversing their identities blind"
        );
        // Numbers never wrap: a window past the epoch's last is cut there.
        let last = mark
            .high
            .saturating_add(u64::from(mark.window))
            .min(NUMBERS - 1);
        for n in mark.high + 1..=last {
            queued.push(saf.enqueue_blind(&mut step, link, &identity(&mark.epoch, n)));
        }
    }
    // A new epoch for every link that sends legs ahead; the others' marks go (their windows
    // are queued above).
    let mut opened = HashMap::new();
    for link in stored.keys().filter(|l| !kept.contains(l)) {
        if !windows.iter().any(|(l, k)| l == link && *k > 0) {
            step.delete(Cf::Meta, mark_key(link));
        }
    }
    for (link, window) in windows.iter().filter(|(l, k)| *k > 0 && !kept.contains(l)) {
        // Never one this store used: a blind reversal must not name an old leg.
        let epoch = (0..1_000)
            .map(|_| new_epoch())
            .find(|e| used.insert(*e))
            .ok_or_else(|| format!("legs ahead of link {link:?}: no unused epoch found"))?;
        step.put(Cf::Meta, epoch_key(&epoch), Vec::new());
        let first = Mark {
            epoch,
            high: 0,
            window: *window,
            clean: false,
        };
        // Written before any identity of the epoch is, so a crash from now on finds it.
        step.put(Cf::Meta, mark_key(link), first.to_bytes());
        opened.insert(link.clone(), LegsAhead::new(link, first.epoch, *window));
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
    fn new(link: &str, epoch: Epoch, window: u32) -> Arc<LegsAhead> {
        Arc::new(LegsAhead {
            link: link.to_string(),
            epoch,
            window,
            places: Arc::new(Semaphore::new(window as usize)),
            next: Mutex::new(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn saf_over(journal: &Arc<Journal>) -> Arc<Saf> {
        let config = crate::config::Config::from_toml(
            "data_dir = \"x\"\n\
             card_key = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock);
        let books = crate::books::Books::open(journal.clone(), clock.clone(), &config)
            .await
            .unwrap();
        let timing = super::super::saf::SafTiming {
            retry_min: std::time::Duration::from_millis(10),
            retry_max: std::time::Duration::from_millis(10),
            expiry: std::time::Duration::from_secs(1),
        };
        Saf::open(journal.clone(), clock, books, timing).unwrap()
    }

    /// The blind reversals queued so far, as the identities they name.
    fn blind(journal: &Journal) -> Vec<String> {
        let mut names: Vec<String> = journal
            .scan(Cf::Saf, b"")
            .unwrap()
            .iter()
            .filter_map(|(_, v)| crate::records::saf::Item::from_bytes(v).ok()?.blind)
            .collect();
        names.sort();
        names
    }

    /// Send `n` legs' records on `link` (a memory store writes them at once).
    fn send(ahead: &LegsAhead, journal: &Journal, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let sent = ahead.with_next(|identity, (cf, key, value)| {
                    let mut step = Step::new();
                    step.put(cf, key, value);
                    step.sent_ahead();
                    journal.commit_then(step, |_| {}).map(|()| identity)
                });
                sent.unwrap().unwrap()
            })
            .collect()
    }

    /// Start after start: a crash's window is reversed blind in the epoch it was sent in, a
    /// clean stop's is not; every start draws an epoch the store never used; a link that
    /// stops sending ahead has its window reversed and its mark removed; one removed from
    /// the configuration with an unclean mark stops the start; a start without recovery
    /// leaves an unclean mark for the next.
    #[tokio::test]
    async fn each_start_reverses_only_what_may_be_lost_and_never_reuses_an_epoch() {
        let journal = Journal::open(
            crate::store::Store::memory(),
            crate::journal::Sealer::from_card_key(&[7u8; 32]),
            64,
        )
        .unwrap();
        let saf = saf_over(&journal).await;
        let gift = |k: u32| vec![("gift".to_string(), k)];

        let first = open(&journal, &saf, &gift(3), true).await.unwrap();
        assert!(
            blind(&journal).is_empty(),
            "nothing to reverse at the first start"
        );
        let sent = send(&first["gift"], &journal, 2);
        let epoch1 = first["gift"].epoch;
        assert_eq!(sent, [identity(&epoch1, 1), identity(&epoch1, 2)]);

        // A crash: numbers 3..=5 of the first epoch may have gone out.
        let second = open(&journal, &saf, &gift(3), true).await.unwrap();
        let expected: Vec<String> = (3..=5).map(|n| identity(&epoch1, n)).collect();
        assert_eq!(blind(&journal), expected);
        let epoch2 = second["gift"].epoch;
        assert_ne!(epoch2, epoch1);
        send(&second["gift"], &journal, 1);

        // A start without recovery leaves the unclean mark, and the link waits for records.
        let skipped = open(&journal, &saf, &gift(3), false).await.unwrap();
        assert!(skipped.is_empty());
        assert_eq!(blind(&journal).len(), 3);

        // Removed from the configuration while unclean: refused, naming it.
        let refused = open(&journal, &saf, &[], true).await;
        assert!(refused.is_err_and(|e| e.contains("\"gift\"")));

        // Sending ahead switched off: the second epoch's window (after number 1) reversed,
        // the mark removed; the link may then go from the configuration.
        let off = open(&journal, &saf, &gift(0), true).await.unwrap();
        assert!(off.is_empty());
        let names = blind(&journal);
        for n in 2..=4 {
            assert!(names.contains(&identity(&epoch2, n)), "{names:?}");
        }
        assert_eq!(names.len(), 6);
        assert!(open(&journal, &saf, &[], true).await.unwrap().is_empty());

        // A clean stop: nothing to reverse at the next start.
        let third = open(&journal, &saf, &gift(3), true).await.unwrap();
        send(&third["gift"], &journal, 2);
        assert!(
            third["gift"]
                .stop_clean(&journal, std::time::Duration::from_secs(5))
                .await
        );
        let fourth = open(&journal, &saf, &gift(3), true).await.unwrap();
        assert_eq!(blind(&journal).len(), 6);
        // Every start that sent ahead drew an epoch of its own, all remembered.
        let epochs = journal.scan(Cf::Meta, EPOCHS.as_bytes()).unwrap();
        assert_eq!(epochs.len(), 4);
        let mut drawn = vec![epoch1, epoch2, third["gift"].epoch, fourth["gift"].epoch];
        drawn.sort();
        drawn.dedup();
        assert_eq!(drawn.len(), 4);
    }

    /// One place, held by a record written ahead and waiting for a sync that nobody else
    /// brings: the next leg's wait brings it.
    #[tokio::test]
    async fn a_leg_waiting_for_a_place_brings_the_sync_that_frees_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path()).unwrap();
        let journal =
            Journal::open(store, crate::journal::Sealer::from_card_key(&[7u8; 32]), 64).unwrap();
        let ahead = LegsAhead::new("gift", *b"TEST", 1);
        let first = ahead.place(&journal).await.unwrap();
        let queued = ahead.with_next(|identity, (cf, key, value)| {
            assert_eq!(identity, "ATEST0000001");
            let mut step = Step::new();
            step.put(cf, key, value);
            step.sent_ahead();
            journal.commit_then(step, move |_| drop(first))
        });
        assert!(matches!(queued, Some(Ok(()))));
        let second =
            tokio::time::timeout(std::time::Duration::from_secs(30), ahead.place(&journal)).await;
        assert!(
            matches!(second, Ok(Some(_))),
            "the second leg waits for ever"
        );
        let mark = journal.get(Cf::Meta, &mark_key("gift")).unwrap().unwrap();
        assert_eq!(Mark::from_bytes(&mark).map(|m| m.high), Some(1));
    }

    #[test]
    fn identities_are_twelve_characters_apart_from_digit_rrns() {
        let epoch = *b"K7Q2";
        assert_eq!(identity(&epoch, 7), "AK7Q20000007");
        assert_eq!(identity(&epoch, 36 * 36 + 35), "AK7Q2000010Z");
        assert!(is_identity(&identity(&new_epoch(), NUMBERS - 1)));
        assert!(!is_identity("000000000123"));
        assert!(!is_identity("A0000000012"));
        assert!(!is_identity("Ak7q20000007"));
        let m = Mark {
            epoch,
            high: 9,
            window: 64,
            clean: true,
        };
        assert_eq!(Mark::from_bytes(&m.to_bytes()), Some(m));
        assert_eq!(Mark::from_bytes(&m.to_bytes()[..12]), None);
    }
}
