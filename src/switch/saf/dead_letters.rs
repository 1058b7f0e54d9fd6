//! Dead letters: items a host refused for good or never acknowledged, kept for an operator
//! to list, re-queue or resolve (every change a synced journal step naming who).

use std::collections::HashMap;

use serde::Serialize;

use super::{lane_of, to_bytes, Item, Queued, Saf};
use crate::journal::{Entry, EntryKind, Step};
use crate::store::Cf;

impl Saf {
    /// The dead-letter list, oldest first by link.
    pub fn dead_letter_list(&self) -> Result<Vec<DeadLetter>, String> {
        let now = self.clock.now_ms();
        Ok(self
            .journal
            .scan(Cf::SafDead, b"")?
            .into_iter()
            .map(|(k, v)| DeadLetter::of(&k, &v, now))
            .collect())
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

    /// Dead letters per link: how many, how much money, how old the oldest.
    pub fn refresh_dead_letter_metrics(&self) {
        let Ok(list) = self.dead_letter_list() else {
            return;
        };
        let mut per_link: HashMap<String, (usize, u64, f64)> = HashMap::new();
        for d in &list {
            let e = per_link.entry(d.link.clone()).or_default();
            e.0 += 1;
            e.1 = e.1.saturating_add(d.amount.unwrap_or(0));
            e.2 = e.2.max(d.age_s);
        }
        let known: Vec<String> = self
            .links
            .get()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default();
        for link in known.iter().chain(per_link.keys()) {
            let (count, amount, age) = per_link.get(link).copied().unwrap_or_default();
            metrics::gauge!("cyberswitch_saf_dead_letters", "link" => link.clone())
                .set(count as f64);
            metrics::gauge!("cyberswitch_saf_dead_letter_amount", "link" => link.clone())
                .set(amount as f64);
            metrics::gauge!("cyberswitch_saf_dead_letter_oldest_age_seconds", "link" => link.clone()).set(age);
        }
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
    if saf.journal.commit(step).await.is_err() {
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
