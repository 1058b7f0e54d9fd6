//! The card-link directory: which wallets are linked to a card. Cards are keyed by
//! HMAC-SHA-256 of the PAN under the configured key, so the directory never holds a card number.

use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use rocksdb::DB;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::iso8583::Pan;
use crate::store::{self, Cf};

/// The keyed hash that stands for a card number at rest.
#[derive(Clone)]
pub struct CardKey(Arc<Vec<u8>>);

impl CardKey {
    pub fn new(key: Vec<u8>) -> CardKey {
        CardKey(Arc::new(key))
    }

    /// HMAC-SHA-256 of the PAN's digits.
    pub fn card_ref(&self, pan: &Pan) -> [u8; 32] {
        // ok: HMAC accepts keys of any length
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC key"); // ok: HMAC takes any key length
        mac.update(pan.expose().as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for CardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardKey(..)")
    }
}

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
    db: Arc<DB>,
    key: CardKey,
    /// Link and unlink read, change and write a card's list: one at a time.
    write: Mutex<()>,
}

impl Directory {
    pub fn new(db: Arc<DB>, key: CardKey) -> Directory {
        Directory {
            db,
            key,
            write: Mutex::new(()),
        }
    }

    /// The wallets linked to a card, by priority.
    pub fn wallets(&self, pan: &Pan) -> Result<Vec<WalletLink>, String> {
        self.read(&self.key.card_ref(pan))
    }

    fn read(&self, card: &[u8; 32]) -> Result<Vec<WalletLink>, String> {
        let cf = store::handle(&self.db, Cf::CardLinks)?;
        match self.db.get_pinned_cf(cf, card).map_err(|e| e.to_string())? {
            None => Ok(Vec::new()),
            Some(v) => {
                serde_json::from_slice(&v).map_err(|e| format!("corrupt card link record: {e}"))
            }
        }
    }

    fn write(&self, card: &[u8; 32], links: &[WalletLink]) -> Result<(), String> {
        let cf = store::handle(&self.db, Cf::CardLinks)?;
        if links.is_empty() {
            return self.db.delete_cf(cf, card).map_err(|e| e.to_string());
        }
        let value = serde_json::to_vec(links).map_err(|e| e.to_string())?;
        self.db.put_cf(cf, card, value).map_err(|e| e.to_string())
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
