//! PINs: ISO 9564 format 0 PIN blocks under double-length TDES keys, translation from a
//! terminal's key to an upstream key (what an HSM does at a switch), and the salted slow hash a
//! hosted card's PIN is kept as.
//!
//! A clear PIN exists only inside these functions, in a [`ClearPin`] that zeroes nothing
//! fancy but never prints itself; neither PINs nor PIN blocks are ever logged or stored.

use des::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use des::TdesEde2;

/// A double-length (16-byte) TDES key.
#[derive(Clone)]
pub struct PinKey(TdesEde2);

impl std::fmt::Debug for PinKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinKey(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("PIN key must be 32 hex digits (double-length TDES)")]
    BadKey,
    #[error("PIN block must be 8 bytes")]
    BadLength,
    #[error("PIN block is not format 0 or its PIN length is out of range")]
    BadFormat,
    #[error("PIN must be 4 to 12 digits")]
    BadPin,
    #[error("card number too short for a PIN block")]
    BadPan,
}

impl PinKey {
    /// A key from 32 hex digits.
    pub fn from_hex(text: &str) -> Result<PinKey, PinError> {
        let raw = hex::decode(text.trim()).map_err(|_| PinError::BadKey)?;
        PinKey::from_bytes(&raw)
    }

    pub fn from_bytes(raw: &[u8]) -> Result<PinKey, PinError> {
        if raw.len() != 16 {
            return Err(PinError::BadKey);
        }
        TdesEde2::new_from_slice(raw)
            .map(PinKey)
            .map_err(|_| PinError::BadKey)
    }

    /// A fresh random key (a zone key that never leaves the process).
    pub fn random() -> PinKey {
        let raw: [u8; 16] = rand::random();
        // ok: 16 bytes is the length TdesEde2 takes
        PinKey(TdesEde2::new(&raw.into()))
    }

    fn encrypt(&self, block: [u8; 8]) -> [u8; 8] {
        let mut b = block.into();
        self.0.encrypt_block(&mut b);
        b.into()
    }

    fn decrypt(&self, block: [u8; 8]) -> [u8; 8] {
        let mut b = block.into();
        self.0.decrypt_block(&mut b);
        b.into()
    }
}

/// A PIN in clear, only ever held briefly; it does not print.
pub struct ClearPin(String);

impl ClearPin {
    pub fn new(digits: &str) -> Result<ClearPin, PinError> {
        if !(4..=12).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PinError::BadPin);
        }
        Ok(ClearPin(digits.to_string()))
    }
    pub fn digits(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClearPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClearPin(****)")
    }
}

/// The PAN field of format 0: four zero nibbles, then the 12 rightmost digits without the
/// check digit.
fn pan_field(pan: &str) -> Result<[u8; 8], PinError> {
    let digits = pan.as_bytes();
    if digits.len() < 13 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(PinError::BadPan);
    }
    let twelve = &digits[digits.len() - 13..digits.len() - 1];
    let mut nibbles = [0u8; 16];
    for (i, d) in twelve.iter().enumerate() {
        nibbles[4 + i] = d - b'0';
    }
    Ok(pack(&nibbles))
}

fn pack(nibbles: &[u8; 16]) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibbles[2 * i] << 4) | nibbles[2 * i + 1];
    }
    out
}

fn xor(a: [u8; 8], b: [u8; 8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    for i in 0..8 {
        out[i] = a[i] ^ b[i];
    }
    out
}

/// Encrypt a PIN as a format 0 block for a card (what a terminal's PIN pad does).
pub fn encrypt_block(key: &PinKey, pin: &ClearPin, pan: &str) -> Result<[u8; 8], PinError> {
    let d = pin.digits().as_bytes();
    let mut nibbles = [0xFu8; 16];
    nibbles[0] = 0;
    nibbles[1] = d.len() as u8; // ok: 4..=12
    for (i, c) in d.iter().enumerate() {
        nibbles[2 + i] = c - b'0';
    }
    Ok(key.encrypt(xor(pack(&nibbles), pan_field(pan)?)))
}

/// Decrypt a format 0 block and return the PIN it holds.
pub fn decrypt_block(key: &PinKey, block: &[u8], pan: &str) -> Result<ClearPin, PinError> {
    let block: [u8; 8] = block.try_into().map_err(|_| PinError::BadLength)?;
    let plain = xor(key.decrypt(block), pan_field(pan)?);
    let nibble = |i: usize| (plain[i / 2] >> (4 * (1 - i % 2))) & 0xF;
    let len = usize::from(nibble(1));
    if nibble(0) != 0 || !(4..=12).contains(&len) {
        return Err(PinError::BadFormat);
    }
    let mut digits = String::with_capacity(len);
    for i in 2..2 + len {
        let n = nibble(i);
        if n > 9 {
            return Err(PinError::BadFormat);
        }
        digits.push(char::from(b'0' + n));
    }
    if (2 + len..16).any(|i| nibble(i) != 0xF) {
        return Err(PinError::BadFormat);
    }
    ClearPin::new(&digits)
}

/// Re-encrypt a PIN block from one key to another (the clear PIN never leaves this call).
pub fn translate(from: &PinKey, to: &PinKey, block: &[u8], pan: &str) -> Result<[u8; 8], PinError> {
    let pin = decrypt_block(from, block, pan)?;
    encrypt_block(to, &pin, pan)
}

/// Hash parameters for stored PINs: Argon2id, 9 MiB, 4 passes (an OWASP-recommended set).
fn hasher() -> argon2::Argon2<'static> {
    let params = argon2::Params::new(9 * 1024, 4, 1, None).unwrap_or_default();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// Argon2 runs at most this many at once: each takes 9 MiB and a core for tens of
/// milliseconds, so a burst of PIN checks or card issues (a peer controls both) queues here
/// instead of taking every blocking thread and the memory with them (SPEC §10).
pub const ARGON2_AT_ONCE: usize = 2;

static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(ARGON2_AT_ONCE);

/// [`hash_pin`] off the async threads, at most [`ARGON2_AT_ONCE`] at a time.
pub async fn hash_pin_bounded(pin: ClearPin) -> Result<String, String> {
    let _slot = ARGON2_SLOTS.acquire().await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || hash_pin(&pin))
        .await
        .map_err(|e| e.to_string())?
}

/// [`verify_pin`] off the async threads, at most [`ARGON2_AT_ONCE`] at a time.
pub async fn verify_pin_bounded(pin: ClearPin, stored: String) -> bool {
    let Ok(_slot) = ARGON2_SLOTS.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || verify_pin(&pin, &stored))
        .await
        .unwrap_or(false)
}

/// Hash a PIN with a fresh salt (PHC string). Slow on purpose: call it off the async threads.
pub fn hash_pin(pin: &ClearPin) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    hasher()
        .hash_password(pin.digits().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Does `pin` match the stored hash? Slow on purpose: call it off the async threads.
pub fn verify_pin(pin: &ClearPin, stored: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(stored).is_ok_and(|h| {
        hasher()
            .verify_password(pin.digits().as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789ABCDEFFEDCBA9876543210";
    const PAN: &str = "6270000000000018";

    #[test]
    fn format0_round_trip_and_translation() {
        let k1 = PinKey::from_hex(KEY).unwrap();
        let k2 = PinKey::random();
        let pin = ClearPin::new("1234").unwrap();
        let block = encrypt_block(&k1, &pin, PAN).unwrap();
        assert_eq!(decrypt_block(&k1, &block, PAN).unwrap().digits(), "1234");
        let moved = translate(&k1, &k2, &block, PAN).unwrap();
        assert_ne!(moved, block);
        assert_eq!(decrypt_block(&k2, &moved, PAN).unwrap().digits(), "1234");
        // Under the wrong key the block does not parse (or gives another PIN).
        assert!(decrypt_block(&k2, &block, PAN).map_or(true, |p| p.digits() != "1234"));
    }

    #[test]
    fn clear_block_layout_matches_iso9564_format0() {
        // PIN 1234, PAN 4000001234562000 → PIN field 041234FFFFFFFFFF, PAN field 0000000123456200.
        let mut nib = [0xFu8; 16];
        nib[..6].copy_from_slice(&[0, 4, 1, 2, 3, 4]);
        assert_eq!(hex::encode(pack(&nib)), "041234ffffffffff");
        assert_eq!(
            hex::encode(pan_field("4000001234562000").unwrap()),
            "0000000123456200"
        );
    }

    #[test]
    fn hash_verifies_only_the_right_pin() {
        let h = hash_pin(&ClearPin::new("1234").unwrap()).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_pin(&ClearPin::new("1234").unwrap(), &h));
        assert!(!verify_pin(&ClearPin::new("4321").unwrap(), &h));
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(PinKey::from_hex("00").err(), Some(PinError::BadKey));
        let k = PinKey::from_hex(KEY).unwrap();
        assert!(decrypt_block(&k, &[0; 7], PAN).is_err());
        assert!(ClearPin::new("12a4").is_err());
        assert!(encrypt_block(&k, &ClearPin::new("1234").unwrap(), "123").is_err());
    }
}
