//! Card data that must be kept (the card number of a leg that may have to be reversed at the
//! acquirer later) is sealed with AES-256-GCM. The key is derived from the configured card key
//! (HMAC-SHA-256 under a fixed label), so operators manage one secret; look-up hashes and
//! sealing never share a key.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const NONCE: usize = 12;
const LABEL: &[u8] = b"cyberswitch/seal/aes-256-gcm/v1";

#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    /// The sealer for a configured card key (any length; the configuration demands ≥ 32 bytes).
    pub fn from_card_key(card_key: &[u8]) -> Sealer {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(card_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(LABEL);
        let derived = mac.finalize().into_bytes();
        Sealer {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&derived)),
        }
    }

    /// nonce ‖ ciphertext ‖ tag. `context` (for example the transaction key) is bound to the
    /// sealed data: a sealed value moved to another record does not open.
    pub fn seal(&self, plain: &[u8], context: &[u8]) -> Vec<u8> {
        // A random 96-bit nonce from the thread's CSPRNG (ChaCha, seeded and reseeded from the
        // OS): the OS generator itself costs a system call for every leg.
        let nonce_bytes: [u8; NONCE] = rand::random();
        let nonce = Nonce::from_slice(&nonce_bytes);
        let payload = aes_gcm::aead::Payload {
            msg: plain,
            aad: context,
        };
        // Encryption fails only for messages beyond GCM's 64 GiB limit.
        let sealed = self.cipher.encrypt(nonce, payload).unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE + sealed.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < NONCE {
            return Err("sealed value too short".into());
        }
        let (nonce, body) = sealed.split_at(NONCE);
        let payload = aes_gcm::aead::Payload {
            msg: body,
            aad: context,
        };
        self.cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| "sealed value does not open under this key".to_string())
    }
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
}
