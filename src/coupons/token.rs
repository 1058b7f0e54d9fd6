//! The coupon token (F18): what a phone shows as a barcode and a merchant terminal sends in
//! tag `CP`. It is the coupon itself, sealed: the card number lives only in here, under the
//! switch's coupon key.
//!
//! Layout, before the text encoding: format version (1 byte), key version (1 byte), a random
//! 96-bit nonce, then AES-256-GCM over the coupon's terms (postcard) with both version bytes
//! as associated data: a token whose versions, nonce, terms or tag were changed does not open.
//! Text: RFC 4648 base32 without padding — upper-case letters and digits 2–7 only, what
//! Code 128 and a QR code's alphanumeric mode carry, and what a terminal's field 48 (`ans`)
//! passes untouched.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::CouponsConfig;

/// The token format this switch writes.
pub const FORMAT: u8 = 1;
const NONCE: usize = 12;
const LABEL: &[u8] = b"cyberswitch/coupon/aes-256-gcm/v1";
/// Longer tokens are refused before any work (a terminal controls this text).
pub const MAX_TEXT: usize = 600;

/// What a token carries: every term the switch needs to honour it without a look-up of the
/// card anywhere else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    /// The coupon's id (its record's key).
    pub id: String,
    /// The pre-registered customer's registration.
    pub registration: String,
    /// The card number, digits (sealed; never leaves this struct in clear but to the
    /// acquirer's request).
    pub card: String,
    /// Discount in currency minor units.
    pub discount: u64,
    /// Last day of validity, `YYYY-MM-DD` (in the books' time zone).
    pub expires: String,
    /// The only merchant (field 42) that may take it, if restricted.
    pub merchant: Option<String>,
}

/// The keys by version: the current one seals, all of them open.
pub struct Keys {
    current: u8,
    ciphers: Vec<(u8, Aes256Gcm)>,
}

impl Keys {
    pub fn new(config: &CouponsConfig) -> Keys {
        let ciphers = config
            .keys
            .iter()
            .map(|(version, key)| (*version, cipher(key.expose())))
            .collect();
        Keys {
            current: config.current,
            ciphers,
        }
    }

    pub fn current_version(&self) -> u8 {
        self.current
    }

    fn cipher(&self, version: u8) -> Option<&Aes256Gcm> {
        self.ciphers
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, c)| c)
    }

    /// The token text of `terms`, sealed under the current key.
    pub fn seal(&self, terms: &Terms) -> Result<String, String> {
        let cipher = self
            .cipher(self.current)
            .ok_or("no coupon key of the current version")?;
        let plain = postcard::to_allocvec(terms).map_err(|e| e.to_string())?;
        let nonce: [u8; NONCE] = rand::random();
        let header = [FORMAT, self.current];
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &header,
                },
            )
            .map_err(|_| "coupon terms do not seal")?;
        let mut raw = Vec::with_capacity(2 + NONCE + sealed.len());
        raw.extend_from_slice(&header);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        Ok(data_encoding::BASE32_NOPAD.encode(&raw))
    }

    /// The terms of a token, if it is one this switch sealed and nobody changed. The reason
    /// of a refusal names no part of the token.
    pub fn open(&self, text: &str) -> Result<Terms, &'static str> {
        let text = text.trim();
        if text.is_empty() || text.len() > MAX_TEXT {
            return Err("token length out of range");
        }
        let raw = data_encoding::BASE32_NOPAD
            .decode(text.as_bytes())
            .map_err(|_| "token is not base32")?;
        if raw.len() < 2 + NONCE + 16 {
            return Err("token too short");
        }
        let (header, rest) = raw.split_at(2);
        if header[0] != FORMAT {
            return Err("unknown token format");
        }
        let cipher = self.cipher(header[1]).ok_or("unknown coupon key version")?;
        let (nonce, body) = rest.split_at(NONCE);
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: header,
                },
            )
            .map_err(|_| "token does not authenticate")?;
        postcard::from_bytes(&plain).map_err(|_| "token terms unreadable")
    }

    /// The key version a token names (without opening it), if it is readable.
    pub fn version_of(text: &str) -> Option<u8> {
        let raw = data_encoding::BASE32_NOPAD
            .decode(text.trim().as_bytes())
            .ok()?;
        raw.get(1).copied()
    }
}

/// The cipher of a configured key: derived under a fixed label, so the configured bytes key
/// nothing else directly.
fn cipher(key: &[u8]) -> Aes256Gcm {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(LABEL);
    let derived = mac.finalize().into_bytes();
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&derived))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretBytes;

    fn keys(current: u8, list: &[(u8, u8)]) -> Keys {
        Keys::new(&CouponsConfig {
            current,
            keys: list
                .iter()
                .map(|(v, b)| (*v, SecretBytes::new(vec![*b; 32])))
                .collect(),
        })
    }

    fn terms() -> Terms {
        Terms {
            id: "C7QK2M4XWZ8A1B3D".into(),
            registration: "REG-1".into(),
            card: "9410000000000021".into(),
            discount: 3_000,
            expires: "2030-12-31".into(),
            merchant: Some("MERCHANT0000001".into()),
        }
    }

    #[test]
    fn a_token_is_barcode_text_and_opens_to_its_terms() {
        let k = keys(1, &[(1, 7)]);
        let token = k.seal(&terms()).unwrap();
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        assert!(!token.contains("9410000000000021"));
        assert_eq!(k.open(&token).unwrap(), terms());
        assert_eq!(Keys::version_of(&token), Some(1));
    }

    #[test]
    fn every_changed_character_is_refused() {
        let k = keys(1, &[(1, 7)]);
        let token = k.seal(&terms()).unwrap();
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(bytes).unwrap();
            assert!(k.open(&altered).is_err(), "altered at {i}");
        }
        assert!(k.open("").is_err());
        assert!(k.open("hello world").is_err());
    }

    #[test]
    fn an_earlier_key_still_opens_its_tokens_and_another_switch_key_does_not() {
        let old = keys(1, &[(1, 7)]);
        let token = old.seal(&terms()).unwrap();
        let rotated = keys(2, &[(2, 9), (1, 7)]);
        assert_eq!(rotated.open(&token).unwrap(), terms());
        let fresh = rotated.seal(&terms()).unwrap();
        assert_eq!(Keys::version_of(&fresh), Some(2));
        let other = keys(1, &[(1, 8)]);
        assert!(other.open(&token).is_err());
    }
}
