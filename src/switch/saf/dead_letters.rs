//! Dead letters: items a host refused for good or never acknowledged, kept for an operator
//! to list, re-queue or resolve (every change a synced journal step naming who).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{lane_of, to_bytes, Item, Queued, Saf};
use crate::journal::{Entry, EntryKind, Step};
use crate::store::Cf;

impl Saf {
    /// A page of the dead-letter list (by link, oldest first): at most `limit` after the
    /// one whose key is `after`, and the id to give as `after` for the next page when more
    /// follow. Reads what it returns (an outage can leave many).
    pub fn dead_letter_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, Option<String>), String> {
        let now = self.clock.now_ms();
        let start = after.map_or_else(Vec::new, |k| [k, &[0][..]].concat());
        let mut page = Vec::new();
        let mut more = false;
        self.journal
            .store()
            .for_each_from(Cf::SafDead, &start, |k, v| {
                if page.len() == limit {
                    more = true;
                    return std::ops::ControlFlow::Break(());
                }
                page.push(DeadLetter::of(k, v, now));
                std::ops::ControlFlow::Continue(())
            })?;
        let next = more.then(|| page.last().map(|d| d.id.clone())).flatten();
        Ok((page, next))
    }

    /// Put a dead letter back in its lane, its attempts counted afresh (the operator fixed
    /// what made the host refuse it). False: no such dead letter.
    pub async fn retry_dead_letter(&self, id: &str, who: &str) -> Result<bool, String> {
        let Some((key, mut item)) = self.dead_letter(id)? else {
            return Ok(false);
        };
        let link = lane_of(&key);
        item.attempts = 0;
        item.next = None;
        item.reason = None;
        let mut step = Step::new();
        step.delete(Cf::SafDead, key.clone());
        step.put(Cf::Saf, key.clone(), to_bytes(&item));
        step.append(Entry::new(
            EntryKind::Saf,
            &item.txn,
            &link,
            format!("leg {} dead letter re-queued by {who}", item.leg),
        ));
        step.synced();
        self.journal.commit(step).await.map_err(|e| e.to_string())?;
        self.dead_totals(|t| t.remove(&link, &item));
        self.publish(vec![Queued { link, key, item }]);
        self.refresh_dead_letter_metrics();
        Ok(true)
    }

    /// Close a dead letter the operator settled outside the switch (`note` says how); it is
    /// journaled and leaves the list. False: no such dead letter.
    pub async fn resolve_dead_letter(
        &self,
        id: &str,
        who: &str,
        note: &str,
    ) -> Result<bool, String> {
        let Some((key, item)) = self.dead_letter(id)? else {
            return Ok(false);
        };
        let mut step = Step::new();
        step.delete(Cf::SafDead, key.clone());
        step.append(Entry::new(
            EntryKind::Saf,
            &item.txn,
            &lane_of(&key),
            format!("leg {} dead letter resolved by {who}: {note}", item.leg),
        ));
        step.synced();
        self.journal.commit(step).await.map_err(|e| e.to_string())?;
        self.dead_totals(|t| t.remove(&lane_of(&key), &item));
        self.refresh_dead_letter_metrics();
        Ok(true)
    }

    fn dead_letter(&self, id: &str) -> Result<Option<(Vec<u8>, Item)>, String> {
        let Ok(key) = hex::decode(id) else {
            return Ok(None);
        };
        let Some(raw) = self.journal.get(Cf::SafDead, &key)? else {
            return Ok(None);
        };
        let item = Item::from_bytes(&raw).unwrap_or_else(|_| Item::unreadable());
        Ok(Some((key, item)))
    }

    /// Dead letters per link: how many, how much money, how old the oldest (every link's
    /// gauges, from the totals kept in memory).
    pub fn refresh_dead_letter_metrics(&self) {
        let now = self.clock.now_ms();
        let mut links: Vec<String> = self
            .links
            .get()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default();
        self.dead_totals(|t| links.extend(t.0.keys().cloned()));
        links.sort();
        links.dedup();
        for link in &links {
            self.refresh_dead_letter_gauges(link, now);
        }
    }

    /// One link's dead-letter gauges (its worker calls this every second, so the oldest's
    /// age moves on between changes).
    pub(super) fn refresh_dead_letter_gauges(&self, link: &str, now_ms: i64) {
        let (count, amount, oldest) = self.dead_totals(|t| t.of(link));
        let age = oldest.map_or(0.0, |q| now_ms.saturating_sub(q).max(0) as f64 / 1000.0);
        metrics::gauge!("cyberswitch_saf_dead_letters", "link" => link.to_string())
            .set(count as f64);
        metrics::gauge!("cyberswitch_saf_dead_letter_amount", "link" => link.to_string())
            .set(amount as f64);
        metrics::gauge!("cyberswitch_saf_dead_letter_oldest_age_seconds", "link" => link.to_string())
            .set(age);
    }

    /// Read or change the dead-letter totals.
    pub(super) fn dead_totals<T>(&self, f: impl FnOnce(&mut DeadTotals) -> T) -> T {
        let mut totals = self
            .dead
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut totals)
    }
}

/// What the dead-letter gauges show, per link, kept as dead letters come and go. (Reading
/// the whole list for every change made a host that refuses a backlog cost each dead
/// letter the list's length.)
#[derive(Default)]
pub(super) struct DeadTotals(HashMap<String, LinkDead>);

#[derive(Default)]
struct LinkDead {
    count: usize,
    amount: u64,
    /// How many dead letters were queued at each moment (ms): the first is the oldest.
    queued: BTreeMap<i64, usize>,
}

impl DeadTotals {
    pub fn add(&mut self, link: &str, item: &Item) {
        let d = self.0.entry(link.to_string()).or_default();
        d.count += 1;
        d.amount = d.amount.saturating_add(item.amount.unwrap_or(0));
        *d.queued.entry(item.queued_ms).or_default() += 1;
    }

    pub fn remove(&mut self, link: &str, item: &Item) {
        let Some(d) = self.0.get_mut(link) else {
            return;
        };
        d.count = d.count.saturating_sub(1);
        d.amount = d.amount.saturating_sub(item.amount.unwrap_or(0));
        if let Some(n) = d.queued.get_mut(&item.queued_ms) {
            *n -= 1;
            if *n == 0 {
                d.queued.remove(&item.queued_ms);
            }
        }
    }

    /// Dead letters over all links.
    pub fn count(&self) -> usize {
        self.0.values().map(|d| d.count).sum()
    }

    /// How many, how much, and when the oldest was queued.
    fn of(&self, link: &str) -> (usize, u64, Option<i64>) {
        self.0.get(link).map_or((0, 0, None), |d| {
            (d.count, d.amount, d.queued.keys().next().copied())
        })
    }
}

/// A dead letter as an operator sees it (no card data: the leg's request stays sealed).
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// What `retry` and `resolve` name it by.
    pub id: String,
    pub link: String,
    pub txn: String,
    pub leg: usize,
    pub kind: &'static str,
    pub amount: Option<u64>,
    pub attempts: u32,
    pub age_s: f64,
    pub reason: String,
}

impl DeadLetter {
    fn of(key: &[u8], raw: &[u8], now_ms: i64) -> DeadLetter {
        let item = Item::from_bytes(raw).unwrap_or_else(|_| Item::unreadable());
        DeadLetter {
            id: hex::encode(key),
            link: lane_of(key),
            kind: item.kind(),
            age_s: now_ms.saturating_sub(item.queued_ms).max(0) as f64 / 1000.0,
            reason: item.reason.clone().unwrap_or_default(),
            txn: item.txn,
            leg: item.leg,
            amount: item.amount,
            attempts: item.attempts,
        }
    }
}

pub(super) async fn dead_letter(saf: &Saf, link: &str, key: Vec<u8>, mut item: Item, why: &str) {
    tracing::error!(link, txn = %item.txn, leg = item.leg, kind = item.kind(), why, "moved to the dead-letter list");
    item.reason = Some(why.to_string());
    let key_for_lane = key.clone();
    let mut step = Step::new();
    step.delete(Cf::Saf, key.clone());
    step.put(Cf::SafDead, key, to_bytes(&item));
    step.append(Entry::new(
        EntryKind::Saf,
        &item.txn,
        link,
        format!("leg {} dead letter: {why}", item.leg),
    ));
    step.synced();
    // Counted before the commit, so that an operator's retry of it (which needs it
    // committed) is always counted after.
    saf.dead_totals(|t| t.add(link, &item));
    if saf.journal.commit(step).await.is_err() {
        saf.dead_totals(|t| t.remove(link, &item));
        // Still queued; not tried again at once (the journal is failing): after a back-off.
        item.reason = None;
        item.next = Some(tokio::time::Instant::now() + saf.timing.retry_max);
        saf.update(link, &key_for_lane, Some(&item));
        return;
    }
    saf.update(link, &key_for_lane, None);
    metrics::counter!("cyberswitch_saf_dead_letters_total", "link" => link.to_string())
        .increment(1);
    saf.refresh_dead_letter_metrics();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn item(amount: u64, queued_ms: i64) -> Item {
        let mut i = Item::unreadable();
        i.amount = Some(amount);
        i.queued_ms = queued_ms;
        i
    }

    #[test]
    fn totals_follow_dead_letters_in_and_out() {
        let mut t = DeadTotals::default();
        t.add("acq", &item(100, 5));
        t.add("acq", &item(50, 3));
        t.add("acq", &item(7, 3));
        t.add("gift", &item(1, 9));
        assert_eq!(t.of("acq"), (3, 157, Some(3)));
        assert_eq!(t.count(), 4);
        t.remove("acq", &item(50, 3));
        assert_eq!(
            t.of("acq"),
            (2, 107, Some(3)),
            "another was queued at 3 too"
        );
        t.remove("acq", &item(7, 3));
        assert_eq!(t.of("acq"), (1, 100, Some(5)));
        t.remove("acq", &item(100, 5));
        assert_eq!(t.of("acq"), (0, 0, None));
        // Never below nothing, whatever is removed.
        t.remove("acq", &item(100, 5));
        t.remove("nowhere", &item(1, 1));
        assert_eq!(t.of("acq"), (0, 0, None));
        assert_eq!(t.count(), 1);
    }

    /// The list comes a page at a time: the pages together are every dead letter, by link
    /// and then in queueing order, and `next` is given only while more follow.
    #[tokio::test]
    async fn dead_letters_are_listed_a_page_at_a_time() {
        let config = crate::config::Config::from_toml(
            "data_dir = \"x\"\n\
             card_key = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let sealer = crate::journal::Sealer::from_card_key(&[7u8; 32]);
        let journal =
            crate::journal::Journal::open(crate::store::Store::memory(), sealer, 64).unwrap();
        let mut step = Step::new();
        for (link, seq, amount) in [
            ("gift", 2u64, 5),
            ("acq", 9, 3),
            ("acq", 4, 1),
            ("gift", 1, 4),
            ("acq", 7, 2),
        ] {
            let mut key = format!("{link}/").into_bytes();
            key.extend_from_slice(&seq.to_be_bytes());
            step.put(Cf::SafDead, key, to_bytes(&item(amount, 0)));
        }
        journal.commit(step).await.unwrap();
        let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock);
        let books = crate::books::Books::open(journal.clone(), clock.clone(), &config)
            .await
            .unwrap();
        let timing = super::super::SafTiming {
            retry_min: std::time::Duration::from_millis(10),
            retry_max: std::time::Duration::from_millis(10),
            expiry: std::time::Duration::from_secs(1),
        };
        let saf = Saf::open(journal, clock, books, timing).unwrap();
        let mut amounts = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        let mut pages = 0;
        loop {
            let (page, next) = saf.dead_letter_page(after.as_deref(), 2).unwrap();
            pages += 1;
            amounts.extend(page.iter().map(|d| d.amount.unwrap()));
            match next {
                Some(id) => after = Some(hex::decode(id).unwrap()),
                None => break,
            }
        }
        assert_eq!(amounts, [1, 2, 3, 4, 5]);
        assert_eq!(pages, 3);
        assert_eq!(
            saf.dead_letter_page(None, 5).unwrap().1,
            None,
            "all on one page"
        );
    }
}
