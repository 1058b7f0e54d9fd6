//! The card-link directory: which wallets are linked to a card. Cards are keyed by
//! HMAC-SHA-256 of the PAN under the configured key, so the directory never holds a card number.

use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::iso8583::Pan;
use crate::store::{Cf, Store};

/// The keyed hash that stands for a card number at rest.
#[derive(Clone)]
pub struct CardKey(Arc<Hmac<Sha256>>);

impl CardKey {
    pub fn new(key: Vec<u8>) -> CardKey {
        // Keyed once: each card reference clones the keyed state instead of hashing the key
        // again (every request looks its card up).
        let mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC key"); // ok: HMAC takes any key length
        CardKey(Arc::new(mac))
    }

    /// HMAC-SHA-256 of the PAN's digits.
    pub fn card_ref(&self, pan: &Pan) -> [u8; 32] {
        let mut mac = (*self.0).clone();
        mac.update(pan.expose().as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for CardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardKey(..)")
    }
}

/// The priority of a link made without one, on every path (admin API, `cyberswitch link
/// add`, `cyberswitch api link-add`): first in line, ties broken by the order of linking.
pub const DEFAULT_PRIORITY: u32 = 1;

/// One wallet linked to a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletLink {
    /// Issuer id (configuration `issuer.id`).
    pub issuer: String,
    /// The account at the issuer; also the wallet id terminals name in `WS`.
    pub account: String,
    /// Lower drains first in automatic tender.
    pub priority: u32,
    #[serde(default)]
    pub label: String,
}

pub struct Directory {
    store: Store,
    key: CardKey,
    /// Link and unlink read, change and write a card's list: one at a time.
    write: Mutex<()>,
}

impl Directory {
    pub fn new(store: Store, key: CardKey) -> Directory {
        Directory {
            store,
            key,
            write: Mutex::new(()),
        }
    }

    /// The wallets linked to a card, by priority.
    pub fn wallets(&self, pan: &Pan) -> Result<Vec<WalletLink>, String> {
        self.read(&self.key.card_ref(pan))
    }

    fn read(&self, card: &[u8; 32]) -> Result<Vec<WalletLink>, String> {
        let decode = |v: &[u8]| {
            // Binary since this version; directories written before hold JSON.
            crate::journal::stored::from_bytes(v)
                .unwrap_or_else(|| serde_json::from_slice(v).map_err(|e| e.to_string()))
                .map_err(|e| format!("corrupt card link record: {e}"))
        };
        self.store
            .get_with(Cf::CardLinks, card, decode)?
            .unwrap_or(Ok(Vec::new()))
    }

    fn write(&self, card: &[u8; 32], links: &[WalletLink]) -> Result<(), String> {
        // The card's whole list in one write, not synced (as a plain RocksDB put).
        let mut batch = self.store.batch();
        if links.is_empty() {
            batch.delete(Cf::CardLinks, card)?;
        } else {
            batch.put(
                Cf::CardLinks,
                card,
                &crate::journal::stored::to_bytes(links),
            )?;
        }
        self.store.write(batch, false)
    }

    /// Link a wallet (replacing a link to the same issuer account).
    pub fn link(&self, pan: &Pan, link: WalletLink) -> Result<(), String> {
        let _guard = self.write.lock().map_err(|_| "directory lock poisoned")?;
        let card = self.key.card_ref(pan);
        let mut links = self.read(&card)?;
        links.retain(|l| !(l.issuer == link.issuer && l.account == link.account));
        links.push(link);
        links.sort_by_key(|l| l.priority);
        self.write(&card, &links)
    }

    /// Unlink a wallet; true if it was linked.
    pub fn unlink(&self, pan: &Pan, issuer: &str, account: &str) -> Result<bool, String> {
        let _guard = self.write.lock().map_err(|_| "directory lock poisoned")?;
        let card = self.key.card_ref(pan);
        let mut links = self.read(&card)?;
        let before = links.len();
        links.retain(|l| !(l.issuer == issuer && l.account == account));
        self.write(&card, &links)?;
        Ok(links.len() != before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(issuer: &str, account: &str, priority: u32) -> WalletLink {
        WalletLink {
            issuer: issuer.into(),
            account: account.into(),
            priority,
            label: String::new(),
        }
    }

    #[test]
    fn links_read_back_by_priority_and_json_records_of_earlier_versions_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open(dir.path()).unwrap();
        let d = Directory::new(db.clone(), CardKey::new(b"k".to_vec()));
        let pan = Pan::parse(b"9410000000000013").unwrap();
        d.link(&pan, link("GIFT", "G-1", 2)).unwrap();
        d.link(&pan, link("EMONEY", "E-1", 1)).unwrap();
        let accounts: Vec<_> = d
            .wallets(&pan)
            .unwrap()
            .into_iter()
            .map(|l| l.account)
            .collect();
        assert_eq!(accounts, ["E-1", "G-1"]);
        assert!(d.unlink(&pan, "GIFT", "G-1").unwrap());
        assert_eq!(d.wallets(&pan).unwrap(), vec![link("EMONEY", "E-1", 1)]);

        let old = Pan::parse(b"9410000000000039").unwrap();
        let json = serde_json::to_vec(&[link("MILEAGE", "M-1", 3)]).unwrap();
        let mut batch = db.batch();
        batch
            .put(Cf::CardLinks, &d.key.card_ref(&old), &json)
            .unwrap();
        db.write(batch, false).unwrap();
        assert_eq!(d.wallets(&old).unwrap(), vec![link("MILEAGE", "M-1", 3)]);

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
        d.link(&pan, link("GIFT", "G-1", 2)).unwrap();
        d.link(&pan, link("EMONEY", "E-1", 1)).unwrap();
        // Linking the same account again replaces its link.
        d.link(&pan, link("GIFT", "G-1", 0)).unwrap();
        assert_eq!(
            d.wallets(&pan).unwrap(),
            vec![link("GIFT", "G-1", 0), link("EMONEY", "E-1", 1)]
        );
        assert_eq!(d.wallets(&other).unwrap(), Vec::new());
        // Stored under the card's keyed hash, never its number.
        let stored = store.scan(Cf::CardLinks, b"").unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].0, d.key.card_ref(&pan));
        assert!(!d.unlink(&pan, "GIFT", "G-2").unwrap());
        assert!(d.unlink(&pan, "GIFT", "G-1").unwrap());
        assert!(d.unlink(&pan, "EMONEY", "E-1").unwrap());
        assert_eq!(d.wallets(&pan).unwrap(), Vec::new());
        // The last unlink deletes the card's record.
        assert!(store.scan(Cf::CardLinks, b"").unwrap().is_empty());
        // A second directory on the same store sees what the first wrote.
        d.link(&pan, link("GIFT", "G-1", 2)).unwrap();
        let again = Directory::new(store, CardKey::new(b"k".to_vec()));
        assert_eq!(again.wallets(&pan).unwrap(), vec![link("GIFT", "G-1", 2)]);
    }
}
