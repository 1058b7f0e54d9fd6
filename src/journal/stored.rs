//! The stored form of the switch's own records (journal records, transaction records): a
//! version byte, then postcard (serde's compact binary form). Records written as JSON by
//! earlier versions start with `[` or `{`, never with the version byte, so a reader tells the
//! two apart by the first byte. Postcard identifies enum variants and struct fields by
//! position: new ones go at the end.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The first byte of a binary record.
const V1: u8 = 1;

pub fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serialising strings, integers, enums and byte strings into a vector cannot fail.
    postcard::to_extend(value, vec![V1]).unwrap_or_default()
}

/// `None` when `raw` is not a binary record (the caller may read an older form).
pub fn from_bytes<T: DeserializeOwned>(raw: &[u8]) -> Option<Result<T, String>> {
    match raw.split_first() {
        Some((&V1, rest)) => Some(postcard::from_bytes(rest).map_err(|e| e.to_string())),
        _ => None,
    }
}
