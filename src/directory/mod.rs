//! The card-link directory: which wallets are linked to a card. Cards are keyed by
//! HMAC-SHA-256 of the PAN under the configured key, so the directory never holds a card number.
//!
//! Card keys and their versions (SPEC §10): [`card_key`].

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::iso8583::Pan;
use crate::store::{Cf, Store};

mod card_key;
pub use card_key::{parse_stored, CardKey};

/// The priority of a link made without one, on every path (admin API, `cyberswitch link
/// add`, `cyberswitch api link-add`): first in line, ties broken by the order of linking.
pub const DEFAULT_PRIORITY: u32 = 1;

/// Whether a link may be paid with (SPEC §10: a partner's link to an issuer's account is
/// active only once that issuer confirms it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkStatus {
    /// Paid with. Links made before consent existed read as active: operators made them.
    #[default]
    Active,
    /// Made by a partner, waiting for the account's issuer: never paid with, never asked.
    Pending,
}

impl LinkStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkStatus::Active => "active",
            LinkStatus::Pending => "pending",
        }
    }
}

/// One wallet linked to a card.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletLink {
    /// Issuer id (configuration `issuer.id`).
    pub issuer: String,
    /// The account at the issuer; also the wallet id terminals name in `WS`.
    pub account: String,
    /// Lower drains first in automatic tender.
    pub priority: u32,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub status: LinkStatus,
    /// Who made it: `operator:NAME`, `partner:NAME`, `cli` (empty for links made before
    /// this was kept). A partner sees and changes only its own.
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub created_at_ms: i64,
}

impl WalletLink {
    /// An active link with no label (seeding, tests, the offline CLI).
    pub fn active(issuer: &str, account: &str, priority: u32, created_by: &str) -> WalletLink {
        WalletLink {
            issuer: issuer.into(),
            account: account.into(),
            priority,
            created_by: created_by.into(),
            created_at_ms: now_ms(),
            ..WalletLink::default()
        }
    }

    fn is(&self, issuer: &str, account: &str) -> bool {
        self.issuer == issuer && self.account == account
    }
}

/// The stored form of links before status and creator were kept (postcard reads fields by
/// position, so the old layout is read as itself).
#[derive(Deserialize)]
struct WalletLinkV1 {
    issuer: String,
    account: String,
    priority: u32,
    label: String,
}

/// One change to a card's links, as the audit keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkChange {
    pub at_ms: i64,
    /// Who asked (`operator:NAME`, `partner:NAME`, `issuer:NAME`, `cli`).
    pub who: String,
    /// `linked`, `relinked`, `confirmed`, `unlinked`.
    pub action: String,
    pub issuer: String,
    pub account: String,
    /// The link's status after the change (`removed` once unlinked).
    pub status: String,
}

/// Why a link change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The card has as many links as allowed (`limits.max_links_per_card`).
    TooMany {
        max: usize,
    },
    /// That account is linked to the card by someone the caller may not override.
    NotYours,
    Storage(String),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::TooMany { max } => write!(f, "the card has {max} links, the most allowed"),
            LinkError::NotYours => {
                f.write_str("that account is linked to the card by another party")
            }
            LinkError::Storage(e) => write!(f, "card directory: {e}"),
        }
    }
}

impl From<String> for LinkError {
    fn from(e: String) -> LinkError {
        LinkError::Storage(e)
    }
}

impl From<LinkError> for String {
    fn from(e: LinkError) -> String {
        e.to_string()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Default bound on links per card (`limits.max_links_per_card`).
pub const DEFAULT_MAX_LINKS: usize = 16;

/// A card's record: the stored reference it is under, and its links.
type Found = (Vec<u8>, Vec<WalletLink>);

/// A card's record read for a change: the lock held, the reference it is stored under (none
/// yet), its links.
type ForChange<'a> = (
    std::sync::MutexGuard<'a, ()>,
    Option<Vec<u8>>,
    Vec<WalletLink>,
);

/// Cards whose links are kept in memory at most (past it the cache starts again empty).
const CACHED_CARDS: usize = 65_536;

pub struct Directory {
    store: Store,
    key: CardKey,
    max_links: usize,
    /// Link and unlink read, change and write a card's list: one at a time.
    write: Mutex<()>,
    /// What [`Directory::find`] read, by the card's reference under the current key
    /// version: every purchase and inquiry reads its card's links, links change rarely.
    cache: dashmap::DashMap<Vec<u8>, Option<Arc<Found>>>,
    /// Bumped by every change, before the cache is emptied: a read that started before a
    /// change does not put what it read into the cache (see [`Directory::find`]).
    generation: std::sync::atomic::AtomicU64,
}

impl Directory {
    pub fn new(store: Store, key: CardKey) -> Directory {
        Directory {
            store,
            key,
            max_links: DEFAULT_MAX_LINKS,
            write: Mutex::new(()),
            cache: dashmap::DashMap::new(),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// At most `max` links per card (a card's inquiry asks every linked issuer).
    pub fn with_max_links(mut self, max: usize) -> Directory {
        self.max_links = max.max(1);
        self
    }

    /// The card key version new records are hashed under.
    pub fn key_version(&self) -> u32 {
        self.key.current_version()
    }

    /// Every wallet linked to a card, pending ones included, by priority: its record under
    /// the current key version, else under an older one (a store not yet rotated).
    pub fn wallets(&self, pan: &Pan) -> Result<Vec<WalletLink>, String> {
        Ok(self.find(pan)?.map(|(_, links)| links).unwrap_or_default())
    }

    /// The wallets a card pays with and asks balances of: its active links, by priority.
    pub fn payable(&self, pan: &Pan) -> Result<Vec<WalletLink>, String> {
        let mut links = self.wallets(pan)?;
        links.retain(|l| l.status == LinkStatus::Active);
        Ok(links)
    }

    /// The card's record and the stored reference it is under, newest version first: from
    /// the cache, else read and cached.
    fn find(&self, pan: &Pan) -> Result<Option<Found>, String> {
        use std::sync::atomic::Ordering;
        let refs = self.key.stored_refs(pan);
        let Some(current) = refs.first() else {
            return Ok(None);
        };
        if let Some(hit) = self.cache.get(current) {
            return Ok(hit.as_deref().cloned());
        }
        let started = self.generation.load(Ordering::SeqCst);
        let found = self.read_any(&refs)?;
        if self.cache.len() >= CACHED_CARDS {
            self.cache.clear();
        }
        // Checked while holding the entry's shard: a change bumps the generation before it
        // empties the cache (which waits for this shard), so either this sees the bump and
        // keeps out what it read, or the emptying comes after and removes it.
        let entry = self.cache.entry(current.clone());
        if self.generation.load(Ordering::SeqCst) == started {
            entry.insert(found.clone().map(Arc::new));
        }
        Ok(found)
    }

    /// The first record found under `refs` (newest version first) and the reference it is under.
    /// With older versions, a miss reads them all once more: a rotation may move the record
    /// from an older reference to the current one between the two reads of one pass (it
    /// moves each record once, in one batch, so a second pass finds it).
    fn read_any(&self, refs: &[Vec<u8>]) -> Result<Option<Found>, String> {
        let passes = if refs.len() > 1 { 2 } else { 1 };
        for _ in 0..passes {
            for r in refs {
                if let Some(links) = self.read(r)? {
                    return Ok(Some((r.clone(), links)));
                }
            }
        }
        Ok(None)
    }

    /// Every cached read is forgotten (after a change is written).
    fn forget(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.cache.clear();
    }

    fn read(&self, card: &[u8]) -> Result<Option<Vec<WalletLink>>, String> {
        let decode = |v: &[u8]| {
            if let Some(links) = crate::records::stored::from_bytes_of(V5_LINKS, v) {
                return links.map_err(|e| format!("corrupt card link record: {e}"));
            }
            // Binary without status and creator; before that, JSON.
            let old: Result<Vec<WalletLinkV1>, String> = crate::records::stored::from_bytes(v)
                .unwrap_or_else(|| serde_json::from_slice(v).map_err(|e| e.to_string()));
            let old = old.map_err(|e| format!("corrupt card link record: {e}"))?;
            Ok(old
                .into_iter()
                .map(|l| WalletLink {
                    issuer: l.issuer,
                    account: l.account,
                    priority: l.priority,
                    label: l.label,
                    ..WalletLink::default()
                })
                .collect())
        };
        self.store
            .get_with(Cf::CardLinks, card, decode)?
            .transpose()
    }

    /// The card's whole list under the current key version (a record under an older one is
    /// deleted in the same batch) and the change's audit record, in one synced write: no
    /// link changes without its record, and an acknowledged change survives a crash.
    fn write(
        &self,
        pan: &Pan,
        old: Option<&[u8]>,
        links: &[WalletLink],
        change: &LinkChange,
    ) -> Result<(), String> {
        let card = self.key.stored_ref(pan);
        let mut batch = self.store.batch();
        if let Some(old) = old.filter(|o| *o != card.as_slice()) {
            batch.delete(Cf::CardLinks, old)?;
        }
        if links.is_empty() {
            batch.delete(Cf::CardLinks, &card)?;
        } else {
            batch.put(
                Cf::CardLinks,
                &card,
                &crate::records::stored::to_bytes_of(V5_LINKS, links),
            )?;
        }
        let mut key = card.clone();
        key.extend_from_slice(&change.at_ms.to_be_bytes());
        key.extend_from_slice(&rand::random::<u32>().to_be_bytes());
        batch.put(
            Cf::LinkAudit,
            &key,
            &crate::records::stored::to_bytes(change),
        )?;
        let written = self.store.write(batch, true);
        // Also after a failed write: whether anything landed is not known.
        self.forget();
        written
    }

    /// The card's record read for a change, with the lock that keeps changes one at a time.
    fn for_change(&self, pan: &Pan) -> Result<ForChange<'_>, String> {
        let guard = self
            .write
            .lock()
            .map_err(|_| "directory lock poisoned".to_string())?;
        let (old, links) = self.find(pan)?.unzip();
        Ok((guard, old, links.unwrap_or_default()))
    }

    /// Link a wallet, replacing a link to the same issuer account when `may_replace` says
    /// the caller may. Refused when the card already has `max_links` others.
    pub fn link(
        &self,
        pan: &Pan,
        link: WalletLink,
        who: &str,
        may_replace: impl Fn(&WalletLink) -> bool,
    ) -> Result<(), LinkError> {
        let (_guard, old, mut links) = self.for_change(pan)?;
        let replaced = links.iter().find(|l| l.is(&link.issuer, &link.account));
        if replaced.is_some_and(|old| !may_replace(old)) {
            return Err(LinkError::NotYours);
        }
        let action = if replaced.is_some() {
            "relinked"
        } else {
            "linked"
        };
        links.retain(|l| !l.is(&link.issuer, &link.account));
        if links.len() >= self.max_links {
            return Err(LinkError::TooMany {
                max: self.max_links,
            });
        }
        let change = self.change(who, action, &link, link.status.as_str());
        links.push(link);
        links.sort_by_key(|l| l.priority);
        Ok(self.write(pan, old.as_deref(), &links, &change)?)
    }

    /// Make a pending link active (its issuer confirmed it). `None`: no such link.
    pub fn confirm(
        &self,
        pan: &Pan,
        issuer: &str,
        account: &str,
        who: &str,
    ) -> Result<Option<WalletLink>, LinkError> {
        let (_guard, old, mut links) = self.for_change(pan)?;
        let Some(link) = links.iter_mut().find(|l| l.is(issuer, account)) else {
            return Ok(None);
        };
        link.status = LinkStatus::Active;
        let confirmed = link.clone();
        let change = self.change(who, "confirmed", &confirmed, "active");
        self.write(pan, old.as_deref(), &links, &change)?;
        Ok(Some(confirmed))
    }

    /// Unlink a wallet; true if it was linked and `may_remove` allowed it (a link the caller
    /// may not touch reads as not there: its existence is not the caller's to learn).
    pub fn unlink(
        &self,
        pan: &Pan,
        issuer: &str,
        account: &str,
        who: &str,
        may_remove: impl Fn(&WalletLink) -> bool,
    ) -> Result<bool, LinkError> {
        let (_guard, old, mut links) = self.for_change(pan)?;
        let Some(removed) = links
            .iter()
            .find(|l| l.is(issuer, account) && may_remove(l))
            .cloned()
        else {
            return Ok(false);
        };
        links.retain(|l| !l.is(issuer, account));
        let change = self.change(who, "unlinked", &removed, "removed");
        self.write(pan, old.as_deref(), &links, &change)?;
        Ok(true)
    }

    /// Every change to a card's links, oldest first (under every key version: a rotation
    /// moves the links, the audit stays where it was written).
    pub fn history(&self, pan: &Pan) -> Result<Vec<LinkChange>, String> {
        let mut changes = Vec::new();
        for r in self.key.stored_refs(pan) {
            for (key, v) in crate::store::scan(&self.store, Cf::LinkAudit, &r)? {
                // A version-1 reference (32 bytes) never prefixes a later one's audit keys
                // (those start with the version mark), but check the length all the same.
                if key.len() != r.len() + 12 {
                    continue;
                }
                let change: LinkChange = crate::records::stored::from_bytes(&v)
                    .unwrap_or_else(|| Err("not a link change".into()))
                    .map_err(|e| format!("corrupt link audit record: {e}"))?;
                changes.push(change);
            }
        }
        changes.sort_by_key(|c| c.at_ms);
        Ok(changes)
    }

    fn change(&self, who: &str, action: &str, link: &WalletLink, status: &str) -> LinkChange {
        LinkChange {
            at_ms: now_ms(),
            who: who.into(),
            action: action.into(),
            issuer: link.issuer.clone(),
            account: link.account.clone(),
            status: status.into(),
        }
    }

    /// Move every card link record (and every hosted card's number reference) hashed under
    /// an older key version to the current one, without any card number: each record is
    /// read, written under its new reference and deleted under the old one in one synced
    /// batch, so a crash half-way leaves every card resolvable (the older versions are still
    /// looked up). Returns (card link records, hosted card references) moved.
    ///
    /// In chunks of [`ROTATE_CHUNK`] records, the change lock taken per chunk only: link
    /// changes wait for one chunk at most, not for the whole directory (they take that lock
    /// on a runtime worker), and the records are read a chunk at a time, not copied whole.
    pub fn rotate(&self) -> Result<(usize, usize), String> {
        let mut moved = (0, 0);
        for (cf, count) in [
            (Cf::CardLinks, &mut moved.0),
            (Cf::HostedCardRefs, &mut moved.1),
        ] {
            let mut from = Vec::new();
            loop {
                let (older, next) = self.older_refs(cf, &from)?;
                *count += self.move_refs(cf, &older)?;
                match next {
                    Some(k) => from = k,
                    None => break,
                }
            }
        }
        Ok(moved)
    }

    /// Up to a chunk of references under older key versions from `from` on, found without
    /// the lock; and where to go on from, if the chunk filled up.
    fn older_refs(
        &self,
        cf: Cf,
        from: &[u8],
    ) -> Result<(Vec<StoredRef>, Option<StoredRef>), String> {
        let mut older = Vec::new();
        let mut next = None;
        self.store.for_each_from(cf, from, |k, _| {
            if self.key.rekey(k).is_some() {
                older.push(k.to_vec());
            }
            if older.len() < ROTATE_CHUNK {
                return std::ops::ControlFlow::Continue(());
            }
            let mut after = k.to_vec();
            after.push(0);
            next = Some(after);
            std::ops::ControlFlow::Break(())
        })?;
        Ok((older, next))
    }

    /// Move `older` references to the current version, under the change lock, each read
    /// again there (a change since the scan moved or removed it: that stands). How many.
    fn move_refs(&self, cf: Cf, older: &[Vec<u8>]) -> Result<usize, String> {
        if older.is_empty() {
            return Ok(0);
        }
        let _guard = self.write.lock().map_err(|_| "directory lock poisoned")?;
        let mut batch = self.store.batch();
        let mut n = 0;
        for old in older {
            let (Some(value), Some(new)) = (self.store.get(cf, old)?, self.key.rekey(old)) else {
                continue;
            };
            // A link made after the key changed moved its card's record to the new
            // reference then (see `write`): a record found there is the newer one.
            let value = self.store.get(cf, &new)?.unwrap_or(value);
            batch.put(cf, &new, &value)?;
            batch.delete(cf, old)?;
            n += 1;
        }
        let written = self.store.write(batch, true);
        // Cached reads name the references the records were under.
        self.forget();
        written.map(|()| n)
    }
}

/// A card reference as stored (version mark, version, HMAC).
type StoredRef = Vec<u8>;

/// Records moved per synced batch (and per hold of the change lock) by a rotation.
const ROTATE_CHUNK: usize = 1_000;

/// The stored form of a card's links with status and creator.
const V5_LINKS: u8 = crate::records::stored::V5_LINKS;

#[cfg(test)]
mod tests {
    use super::*;

    fn link(issuer: &str, account: &str, priority: u32) -> WalletLink {
        WalletLink {
            issuer: issuer.into(),
            account: account.into(),
            priority,
            ..WalletLink::default()
        }
    }

    #[test]
    fn links_read_back_by_priority_and_json_records_of_earlier_versions_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open(dir.path()).unwrap();
        let d = Directory::new(db.clone(), CardKey::new(b"k".to_vec()));
        let pan = Pan::parse(b"9410000000000013").unwrap();
        d.link(&pan, link("GIFT", "G-1", 2), "test", |_| true)
            .unwrap();
        d.link(&pan, link("EMONEY", "E-1", 1), "test", |_| true)
            .unwrap();
        let accounts: Vec<_> = d
            .wallets(&pan)
            .unwrap()
            .into_iter()
            .map(|l| l.account)
            .collect();
        assert_eq!(accounts, ["E-1", "G-1"]);
        assert!(d.unlink(&pan, "GIFT", "G-1", "test", |_| true).unwrap());
        assert_eq!(d.wallets(&pan).unwrap(), vec![link("EMONEY", "E-1", 1)]);

        let old = Pan::parse(b"9410000000000039").unwrap();
        let json = serde_json::to_vec(&[link("MILEAGE", "M-1", 3)]).unwrap();
        let mut batch = db.batch();
        batch
            .put(Cf::CardLinks, &d.key.card_ref(&old), &json)
            .unwrap();
        db.write(batch, false).unwrap();
        assert_eq!(d.wallets(&old).unwrap(), vec![link("MILEAGE", "M-1", 3)]);

        // Links stored binary before status and creator were kept read as active.
        let older = Pan::parse(b"9410000000000021").unwrap();
        let v1 = crate::records::stored::to_bytes(&[("GIFT", "G-9", 4u32, "old")][..]);
        let mut batch = db.batch();
        batch
            .put(Cf::CardLinks, &d.key.card_ref(&older), &v1)
            .unwrap();
        db.write(batch, false).unwrap();
        let read = d.wallets(&older).unwrap();
        assert_eq!(
            (read[0].account.as_str(), read[0].label.as_str()),
            ("G-9", "old")
        );
        assert_eq!(d.payable(&older).unwrap(), read);

        // HMAC-SHA-256 as before (references in existing directories still resolve).
        assert_eq!(
            hex::encode(d.key.card_ref(&pan)),
            "8c8ad88aee63fbd0a4a9fe7b2961b7d661fa57d397447b77faef2e82f36412a1"
        );
        // The same key gives the same reference, another key another one.
        let other = CardKey::new(b"k2".to_vec());
        assert_eq!(
            d.key.card_ref(&pan),
            CardKey::new(b"k".to_vec()).card_ref(&pan)
        );
        assert_ne!(d.key.card_ref(&pan), other.card_ref(&pan));
    }

    /// The flows' tests run on a memory store: linking, looking up and unlinking there
    /// behave as on disk.
    #[test]
    fn a_directory_in_memory_links_looks_up_and_unlinks() {
        let store = Store::memory();
        let d = Directory::new(store.clone(), CardKey::new(b"k".to_vec()));
        let pan = Pan::parse(b"9410000000000013").unwrap();
        let other = Pan::parse(b"9410000000000039").unwrap();
        assert_eq!(d.wallets(&pan).unwrap(), Vec::new());
        d.link(&pan, link("GIFT", "G-1", 2), "test", |_| true)
            .unwrap();
        d.link(&pan, link("EMONEY", "E-1", 1), "test", |_| true)
            .unwrap();
        // Linking the same account again replaces its link.
        d.link(&pan, link("GIFT", "G-1", 0), "test", |_| true)
            .unwrap();
        assert_eq!(
            d.wallets(&pan).unwrap(),
            vec![link("GIFT", "G-1", 0), link("EMONEY", "E-1", 1)]
        );
        assert_eq!(d.wallets(&other).unwrap(), Vec::new());
        // Stored under the card's keyed hash, never its number; every change audited.
        assert_eq!(d.history(&pan).unwrap().len(), 3);
        let stored = store.scan(Cf::CardLinks, b"").unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].0, d.key.card_ref(&pan));
        assert!(!d.unlink(&pan, "GIFT", "G-2", "test", |_| true).unwrap());
        assert!(d.unlink(&pan, "GIFT", "G-1", "test", |_| true).unwrap());
        assert!(d.unlink(&pan, "EMONEY", "E-1", "test", |_| true).unwrap());
        assert_eq!(d.wallets(&pan).unwrap(), Vec::new());
        // The last unlink deletes the card's record.
        assert!(store.scan(Cf::CardLinks, b"").unwrap().is_empty());
        // A second directory on the same store sees what the first wrote.
        d.link(&pan, link("GIFT", "G-1", 2), "test", |_| true)
            .unwrap();
        let again = Directory::new(store, CardKey::new(b"k".to_vec()));
        assert_eq!(again.wallets(&pan).unwrap(), vec![link("GIFT", "G-1", 2)]);
    }

    /// A rotation of more records than one chunk moves every one, each card resolves
    /// throughout, and a change made between two chunks stands.
    #[test]
    fn a_rotation_in_chunks_moves_every_record_and_a_change_between_chunks_stands() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open(dir.path()).unwrap();
        let v1 = Directory::new(db.clone(), CardKey::versions(&[(1, b"one")]));
        let cards = ROTATE_CHUNK * 2 + 500;
        let pan = |i: usize| Pan::parse(format!("94100000{i:08}").as_bytes()).unwrap();
        for i in 0..cards {
            v1.link(&pan(i), link("GIFT", &format!("G-{i}"), 1), "test", |_| {
                true
            })
            .unwrap();
        }
        let v2 = Directory::new(db.clone(), CardKey::versions(&[(1, b"one"), (2, b"two")]));
        // The first chunk moved; the second found, then one of its cards unlinked before
        // it is moved: the unlink stands (the record is read again under the lock).
        let (older, next) = v2.older_refs(Cf::CardLinks, b"").unwrap();
        assert_eq!(older.len(), ROTATE_CHUNK);
        assert_eq!(v2.move_refs(Cf::CardLinks, &older).unwrap(), ROTATE_CHUNK);
        let (second, _) = v2.older_refs(Cf::CardLinks, &next.unwrap()).unwrap();
        assert_eq!(second.len(), ROTATE_CHUNK);
        let unlinked = (0..cards)
            .find(|i| {
                v2.find(&pan(*i))
                    .unwrap()
                    .is_some_and(|(r, _)| r == second[7])
            })
            .unwrap();
        let account = format!("G-{unlinked}");
        assert!(v2
            .unlink(&pan(unlinked), "GIFT", &account, "test", |_| true)
            .unwrap());
        assert_eq!(
            v2.move_refs(Cf::CardLinks, &second).unwrap(),
            ROTATE_CHUNK - 1
        );
        let (moved, hosted) = v2.rotate().unwrap();
        assert_eq!((moved, hosted), (cards - 2 * ROTATE_CHUNK, 0));
        for i in 0..cards {
            let wallets = v2.wallets(&pan(i)).unwrap();
            if i == unlinked {
                assert!(wallets.is_empty(), "an unlink between chunks stands");
            } else {
                assert_eq!(wallets[0].account, format!("G-{i}"));
            }
        }
        // Nothing is left under the older version.
        let left = db
            .scan(Cf::CardLinks, b"")
            .unwrap()
            .into_iter()
            .filter(|(k, _)| v2.key.rekey(k).is_some())
            .count();
        assert_eq!(left, 0);
    }
}
