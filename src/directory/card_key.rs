//! Card keys: the keyed hash that stands for a card number at rest.
//!
//! Card keys carry a version (SPEC §10). The reference of a card under version `v` chains the
//! versions up to it: `ref_1 = HMAC(k_1, PAN)`, `ref_v = HMAC(k_v, ref_{v-1})`. A stored
//! reference names its version: version 1 is the bare 32 bytes (as before versions existed),
//! later ones `'v' ‖ version (4 bytes, big-endian) ‖ 32 bytes`. Because each version hashes the
//! one before, `cyberswitch keys rotate` moves every record to the current version without
//! knowing a single card number ([`CardKey::rekey`]); until then, look-ups fall back to the
//! older versions, so no link is lost when the key changes. The older keys stay configured
//! (the chain needs them), but a leaked old key alone no longer identifies a card in a
//! rotated store.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::iso8583::Pan;

/// The keyed hash that stands for a card number at rest, under every configured version up
/// to the current one.
#[derive(Clone)]
pub struct CardKey(Arc<Vec<(u32, Hmac<Sha256>)>>);

const STORED_MARK: u8 = b'v';

impl CardKey {
    /// One key, version 1.
    pub fn new(key: Vec<u8>) -> CardKey {
        CardKey::versions(&[(1, &key)])
    }

    /// Versioned keys in ascending order, the current one last (at least one).
    pub fn versions(keys: &[(u32, &[u8])]) -> CardKey {
        // Keyed once: each card reference clones the keyed state instead of hashing the key
        // again (every request looks its card up).
        let chain = keys
            .iter()
            .map(|(v, k)| {
                let mac = Hmac::<Sha256>::new_from_slice(k)
                    .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
                (*v, mac)
            })
            .collect();
        CardKey(Arc::new(chain))
    }

    /// The version new records are hashed under.
    pub fn current_version(&self) -> u32 {
        self.0.last().map_or(1, |(v, _)| *v)
    }

    fn step(mac: &Hmac<Sha256>, input: &[u8]) -> [u8; 32] {
        let mut mac = mac.clone();
        mac.update(input);
        mac.finalize().into_bytes().into()
    }

    /// The card's reference under every version, oldest first.
    fn chain(&self, pan: &Pan) -> Vec<(u32, [u8; 32])> {
        let mut out: Vec<(u32, [u8; 32])> = Vec::with_capacity(self.0.len());
        for (v, mac) in self.0.iter() {
            let r = match out.last() {
                None => CardKey::step(mac, pan.expose().as_bytes()),
                Some((_, prev)) => CardKey::step(mac, prev),
            };
            out.push((*v, r));
        }
        out
    }

    /// The card's reference under the current version (32 bytes).
    pub fn card_ref(&self, pan: &Pan) -> [u8; 32] {
        self.chain(pan).last().map_or([0; 32], |(_, r)| *r)
    }

    /// The card's reference under the current version, as stored (naming its version).
    pub fn stored_ref(&self, pan: &Pan) -> Vec<u8> {
        let (v, r) = self.chain(pan).pop().unwrap_or((1, [0; 32]));
        stored(v, &r)
    }

    /// The card's stored references, the current version first, then the older ones.
    pub fn stored_refs(&self, pan: &Pan) -> Vec<Vec<u8>> {
        self.chain(pan)
            .iter()
            .rev()
            .map(|(v, r)| stored(*v, r))
            .collect()
    }

    /// A stored reference moved to the current version: `None` when it is current already
    /// or names a version that is not configured.
    pub fn rekey(&self, stored_ref: &[u8]) -> Option<Vec<u8>> {
        let (version, mut r) = parse_stored(stored_ref)?;
        let from = self.0.iter().position(|(v, _)| *v == version)?;
        if from + 1 == self.0.len() {
            return None;
        }
        for (_, mac) in &self.0[from + 1..] {
            r = CardKey::step(mac, &r);
        }
        Some(stored(self.current_version(), &r))
    }
}

/// A reference as stored: bare for version 1, marked with its version otherwise.
fn stored(version: u32, r: &[u8; 32]) -> Vec<u8> {
    if version == 1 {
        return r.to_vec();
    }
    let mut out = Vec::with_capacity(37);
    out.push(STORED_MARK);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(r);
    out
}

/// The version and reference of a stored reference.
pub fn parse_stored(stored_ref: &[u8]) -> Option<(u32, [u8; 32])> {
    match stored_ref.len() {
        32 => Some((1, stored_ref.try_into().ok()?)),
        37 if stored_ref[0] == STORED_MARK => {
            let v = u32::from_be_bytes(stored_ref[1..5].try_into().ok()?);
            Some((v, stored_ref[5..].try_into().ok()?))
        }
        _ => None,
    }
}

impl std::fmt::Debug for CardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardKey(..)")
    }
}
