//! Card data that must be kept (the card number of a leg that may have to be reversed at the
//! acquirer later) is sealed with AES-256-GCM. The key is derived from the configured card key
//! (HMAC-SHA-256 under a fixed label), so operators manage one secret; look-up hashes and
//! sealing never share a key.
//!
//! Keys carry a version (SPEC §10): a value sealed under version 1 is `nonce ‖ ciphertext ‖
//! tag`, as before versions existed; under a later version it is `0xCE 0x5E ‖ version (4
//! bytes, big-endian) ‖ nonce ‖ ciphertext ‖ tag`, so the record names the key that sealed
//! it. New seals use the current version; values sealed under any configured version open.
//!
//! Nonces are random (96 bits). Under one key, 2^32 seals keep the chance of any repeat below
//! 2^-32 (NIST SP 800-38D §8.3); this process counts its seals under the current key
//! (`cyberswitch_seals_total{key_version}`) and warns from 2^30 on: rotate the card key
//! (`[keys] current`) well before the bound (docs/decisions.md, "Versioned card keys").

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const NONCE: usize = 12;
const LABEL: &[u8] = b"cyberswitch/seal/aes-256-gcm/v1";
/// Marks a value sealed under a named key version (2 and up).
const VERSIONED: [u8; 2] = [0xCE, 0x5E];
/// Seals under one key after which this process warns (a quarter of the 2^32 bound).
pub const SEALS_WARN: u64 = 1 << 30;

#[derive(Clone)]
pub struct Sealer {
    current: u32,
    ciphers: Arc<BTreeMap<u32, Aes256Gcm>>,
    /// Seals made by this process under the current key.
    seals: Arc<AtomicU64>,
}

fn cipher(card_key: &[u8]) -> Aes256Gcm {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(card_key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(LABEL);
    let derived = mac.finalize().into_bytes();
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&derived))
}

impl Sealer {
    /// The sealer for one configured card key, version 1 (any length; the configuration
    /// demands ≥ 32 bytes).
    pub fn from_card_key(card_key: &[u8]) -> Sealer {
        Sealer::from_versions(&[(1, card_key)])
    }

    /// The sealer for versioned card keys, the current one last. At least one key.
    pub fn from_versions(keys: &[(u32, &[u8])]) -> Sealer {
        let ciphers: BTreeMap<u32, Aes256Gcm> = keys.iter().map(|(v, k)| (*v, cipher(k))).collect();
        Sealer {
            current: keys.last().map_or(1, |(v, _)| *v),
            ciphers: Arc::new(ciphers),
            seals: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The version new seals are made under.
    pub fn current_version(&self) -> u32 {
        self.current
    }

    /// The version a sealed value names (1 for values without a version mark).
    pub fn version_of(sealed: &[u8]) -> u32 {
        match sealed {
            [0xCE, 0x5E, a, b, c, d, ..] if sealed.len() >= 6 + NONCE => {
                u32::from_be_bytes([*a, *b, *c, *d])
            }
            _ => 1,
        }
    }

    /// nonce ‖ ciphertext ‖ tag (after the version mark from version 2 on). `context` (for
    /// example the transaction key) is bound to the sealed data: a sealed value moved to
    /// another record does not open.
    pub fn seal(&self, plain: &[u8], context: &[u8]) -> Vec<u8> {
        let Some(cipher) = self.ciphers.get(&self.current) else {
            unreachable!("the current version is one of the keys")
        };
        let n = self.seals.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!("cyberswitch_seals_total", "key_version" => self.current.to_string())
            .increment(1);
        if n == SEALS_WARN {
            tracing::warn!(
                key_version = self.current,
                seals = n,
                "2^30 seals under the current card key: rotate it (random nonces are safe to 2^32)"
            );
        }
        // A random 96-bit nonce from the thread's CSPRNG (ChaCha, seeded and reseeded from the
        // OS): the OS generator itself costs a system call for every leg.
        let nonce_bytes: [u8; NONCE] = rand::random();
        let nonce = Nonce::from_slice(&nonce_bytes);
        let payload = aes_gcm::aead::Payload {
            msg: plain,
            aad: context,
        };
        // Encryption fails only for messages beyond GCM's 64 GiB limit.
        let sealed = cipher.encrypt(nonce, payload).unwrap_or_default();
        let mut out = Vec::with_capacity(6 + NONCE + sealed.len());
        if self.current != 1 {
            out.extend_from_slice(&VERSIONED);
            out.extend_from_slice(&self.current.to_be_bytes());
        }
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, String> {
        // A version-1 value's random nonce may begin like the mark (1 in 65,536): the tag
        // decides, so a value that does not open as versioned is tried as version 1.
        let version = Sealer::version_of(sealed);
        if version != 1 {
            if let Some(cipher) = self.ciphers.get(&version) {
                if let Ok(plain) = open_with(cipher, &sealed[6..], context) {
                    return Ok(plain);
                }
            }
        }
        let Some(v1) = self.ciphers.get(&1) else {
            return Err(format!(
                "sealed value does not open: key version {version} is not configured"
            ));
        };
        open_with(v1, sealed, context)
    }
}

fn open_with(cipher: &Aes256Gcm, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, String> {
    if sealed.len() < NONCE {
        return Err("sealed value too short".into());
    }
    let (nonce, body) = sealed.split_at(NONCE);
    let payload = aes_gcm::aead::Payload {
        msg: body,
        aad: context,
    };
    cipher
        .decrypt(Nonce::from_slice(nonce), payload)
        .map_err(|_| "sealed value does not open under this key".to_string())
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_with_the_same_key_and_context() {
        let s = Sealer::from_card_key(&[7; 32]);
        let sealed = s.seal(b"9410000000000013", b"ctx");
        assert!(!sealed.windows(16).any(|w| w == b"9410000000000013"));
        assert_eq!(s.open(&sealed, b"ctx").unwrap(), b"9410000000000013");
        assert!(s.open(&sealed, b"other").is_err());
        assert!(Sealer::from_card_key(&[8; 32])
            .open(&sealed, b"ctx")
            .is_err());
        assert!(s.open(&sealed[..5], b"ctx").is_err());
        assert_ne!(s.seal(b"x", b""), s.seal(b"x", b""), "nonces are fresh");
    }

    #[test]
    fn a_new_version_seals_under_its_name_and_older_values_still_open() {
        let v1 = Sealer::from_card_key(&[7; 32]);
        let old = v1.seal(b"9410000000000013", b"ctx");
        assert_eq!(Sealer::version_of(&old), 1);
        let both = Sealer::from_versions(&[(1, &[7; 32]), (2, &[9; 32])]);
        assert_eq!(both.current_version(), 2);
        let new = both.seal(b"9410000000000039", b"ctx");
        assert_eq!(Sealer::version_of(&new), 2);
        assert_eq!(&new[..2], &VERSIONED);
        assert_eq!(both.open(&old, b"ctx").unwrap(), b"9410000000000013");
        assert_eq!(both.open(&new, b"ctx").unwrap(), b"9410000000000039");
        // The old key alone cannot open what the new one sealed.
        assert!(v1.open(&new, b"ctx").is_err());
        // Without version 1 configured, version-1 values no longer open.
        let only2 = Sealer::from_versions(&[(2, &[9; 32])]);
        assert!(only2.open(&old, b"ctx").is_err());
        assert_eq!(only2.open(&new, b"ctx").unwrap(), b"9410000000000039");
    }
}
