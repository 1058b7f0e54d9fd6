//! Card data that must be kept (the card number of a leg that may have to be reversed at the
//! acquirer later) is sealed with an AEAD cipher under a key derived from the configured card
//! key (HMAC-SHA-256 under a fixed label per cipher), so operators manage one secret; look-up
//! hashes and sealing never share a key.
//!
//! New seals use AES-256-GCM-SIV (RFC 8452), a misuse-resistant AEAD: a repeated random
//! nonce reveals at most that two sealed values are identical (same plaintext, same context),
//! never the plaintexts or the key, so the 2^32-seals-per-key bound of random-nonce GCM does
//! not apply (SPEC §10: sealing nonces that cannot repeat harmfully). A value is `0xCE 0x51 ‖
//! version (4 bytes, big-endian) ‖ nonce ‖ ciphertext ‖ tag`, naming the key version that
//! sealed it.
//!
//! Values sealed before still open: AES-256-GCM under version 1 as `nonce ‖ ciphertext ‖
//! tag`, under a later version `0xCE 0x5E ‖ version ‖ nonce ‖ ciphertext ‖ tag`. This process
//! counts its seals under the current key (`cyberswitch_seals_total{key_version}`) and warns
//! from 2^40 on, a point to rotate at for hygiene, not a safety bound.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use aes_gcm_siv::Aes256GcmSiv;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const NONCE: usize = 12;
const LABEL: &[u8] = b"cyberswitch/seal/aes-256-gcm/v1";
const SIV_LABEL: &[u8] = b"cyberswitch/seal/aes-256-gcm-siv/v1";
/// Marks a value sealed with AES-256-GCM under a named key version (2 and up).
const VERSIONED: [u8; 2] = [0xCE, 0x5E];
/// Marks a value sealed with AES-256-GCM-SIV (every version).
const SIV: [u8; 2] = [0xCE, 0x51];
/// Seals under one key after which this process warns.
pub const SEALS_WARN: u64 = 1 << 40;

/// The ciphers of one key version.
struct Ciphers {
    /// Opens what earlier versions of the switch sealed.
    gcm: Aes256Gcm,
    /// Seals (and opens) from now on.
    siv: Aes256GcmSiv,
}

fn derived(card_key: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(card_key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(label);
    mac.finalize().into_bytes().into()
}

fn ciphers(card_key: &[u8]) -> Ciphers {
    let gcm = derived(card_key, LABEL);
    let siv = derived(card_key, SIV_LABEL);
    Ciphers {
        gcm: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&gcm)),
        siv: Aes256GcmSiv::new(aes_gcm_siv::Key::<Aes256GcmSiv>::from_slice(&siv)),
    }
}

#[derive(Clone)]
pub struct Sealer {
    current: u32,
    ciphers: Arc<BTreeMap<u32, Ciphers>>,
    /// Seals made by this process under the current key.
    seals: Arc<AtomicU64>,
}

impl Sealer {
    /// The sealer for one configured card key, version 1 (any length; the configuration
    /// demands ≥ 32 bytes).
    pub fn from_card_key(card_key: &[u8]) -> Sealer {
        Sealer::from_versions(&[(1, card_key)])
    }

    /// The sealer for versioned card keys, the current one last. At least one key.
    pub fn from_versions(keys: &[(u32, &[u8])]) -> Sealer {
        let ciphers: BTreeMap<u32, Ciphers> = keys.iter().map(|(v, k)| (*v, ciphers(k))).collect();
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
            [0xCE, 0x5E | 0x51, a, b, c, d, ..] if sealed.len() >= 6 + NONCE => {
                u32::from_be_bytes([*a, *b, *c, *d])
            }
            _ => 1,
        }
    }

    /// `0xCE 0x51 ‖ version ‖ nonce ‖ ciphertext ‖ tag` (AES-256-GCM-SIV). `context` (for
    /// example the transaction key) is bound to the sealed data: a sealed value moved to
    /// another record does not open.
    pub fn seal(&self, plain: &[u8], context: &[u8]) -> Vec<u8> {
        let Some(keys) = self.ciphers.get(&self.current) else {
            unreachable!("the current version is one of the keys")
        };
        let n = self.seals.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!("cyberswitch_seals_total", "key_version" => self.current.to_string())
            .increment(1);
        if n == SEALS_WARN {
            tracing::warn!(
                key_version = self.current,
                seals = n,
                "2^40 seals under the current card key: time to rotate it"
            );
        }
        // A random 96-bit nonce from the thread's CSPRNG (ChaCha, seeded and reseeded from the
        // OS): the OS generator itself costs a system call for every leg.
        let nonce_bytes: [u8; NONCE] = rand::random();
        let payload = aes_gcm_siv::aead::Payload {
            msg: plain,
            aad: context,
        };
        // Encryption fails only for messages beyond the cipher's 64 GiB limit.
        let sealed = keys
            .siv
            .encrypt(aes_gcm_siv::Nonce::from_slice(&nonce_bytes), payload)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(6 + NONCE + sealed.len());
        out.extend_from_slice(&SIV);
        out.extend_from_slice(&self.current.to_be_bytes());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, String> {
        // A version-1 GCM value's random nonce may begin like a mark (1 in 65,536 each): the
        // tag decides, so a value that does not open as marked is tried as version 1.
        let version = Sealer::version_of(sealed);
        if sealed.starts_with(&SIV) && sealed.len() >= 6 + NONCE {
            if let Some(keys) = self.ciphers.get(&version) {
                let (nonce, body) = sealed[6..].split_at(NONCE);
                let payload = aes_gcm_siv::aead::Payload {
                    msg: body,
                    aad: context,
                };
                if let Ok(plain) = keys
                    .siv
                    .decrypt(aes_gcm_siv::Nonce::from_slice(nonce), payload)
                {
                    return Ok(plain);
                }
            }
        } else if sealed.starts_with(&VERSIONED) && version != 1 {
            if let Some(keys) = self.ciphers.get(&version) {
                if let Ok(plain) = open_with(&keys.gcm, &sealed[6..], context) {
                    return Ok(plain);
                }
            }
        }
        let Some(v1) = self.ciphers.get(&1) else {
            return Err(format!(
                "sealed value does not open: key version {version} is not configured"
            ));
        };
        open_with(&v1.gcm, sealed, context)
    }

    /// An AES-256-GCM seal as versions before GCM-SIV made them (tests of reading old data).
    #[cfg(test)]
    fn seal_gcm(&self, plain: &[u8], context: &[u8]) -> Vec<u8> {
        let keys = &self.ciphers[&self.current];
        let nonce_bytes: [u8; NONCE] = rand::random();
        let payload = aes_gcm::aead::Payload {
            msg: plain,
            aad: context,
        };
        let sealed = keys
            .gcm
            .encrypt(Nonce::from_slice(&nonce_bytes), payload)
            .unwrap_or_default();
        let mut out = Vec::new();
        if self.current != 1 {
            out.extend_from_slice(&VERSIONED);
            out.extend_from_slice(&self.current.to_be_bytes());
        }
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        out
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
        assert_eq!(&sealed[..2], &SIV, "sealed with AES-256-GCM-SIV");
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
    fn values_sealed_with_gcm_by_earlier_versions_still_open() {
        let v1 = Sealer::from_card_key(&[7; 32]);
        let old = v1.seal_gcm(b"9410000000000013", b"ctx");
        assert_eq!(Sealer::version_of(&old), 1);
        assert_eq!(v1.open(&old, b"ctx").unwrap(), b"9410000000000013");
        let both = Sealer::from_versions(&[(1, &[7; 32]), (2, &[9; 32])]);
        let old2 = both.seal_gcm(b"9410000000000039", b"ctx");
        assert_eq!(&old2[..2], &VERSIONED);
        assert_eq!(both.open(&old, b"ctx").unwrap(), b"9410000000000013");
        assert_eq!(both.open(&old2, b"ctx").unwrap(), b"9410000000000039");
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
