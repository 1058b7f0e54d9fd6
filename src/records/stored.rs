//! The stored form of the switch's own records (journal records, transaction records): a
//! version byte, then postcard (serde's compact binary form), either as it is (`V1`) or
//! LZ4-compressed (`V2`). Records written as JSON by earlier versions start with `[` or `{`,
//! never with a version byte, so a reader tells the forms apart by the first byte (`V3_TXN`
//! marks transaction records with a layout of their own). Postcard
//! identifies enum variants and struct fields by position: new ones go at the end.
//!
//! Why compress journal records: every byte of a record is written three times (the
//! write-ahead log, the memtable's flush, compactions) and synced once, and that is about a
//! third of the switch's CPU under load. A record repeats itself — a leg's request copies
//! most fields of the terminal's request, its answer echoes them, every entry names the
//! transaction — so LZ4 shrinks it to about half for a few microseconds.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The first byte of a binary record.
const V1: u8 = 1;
/// The first byte of a compressed binary record: then the uncompressed length (u32,
/// little-endian), then an LZ4 block.
const V2: u8 = 2;

/// The first byte of a transaction record whose sealed requests are bytes (postcard as
/// `V1`; earlier transaction records were `V1` or JSON with the seals as hex). A version
/// byte of its own because postcard cannot tell the two layouts apart.
pub const V3_TXN: u8 = 3;

/// The first byte of a transaction record with refunds (F8) and business dates (F13).
pub const V4_TXN: u8 = 4;

/// The first byte of a card's link list with each link's status and creator (SPEC §10).
pub const V5_LINKS: u8 = 5;

/// The largest record a reader inflates: a damaged length must not make it allocate
/// gigabytes (a journal record is a few kilobytes).
const MAX_INFLATED: usize = 16 << 20;

pub fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    to_bytes_of(V1, value)
}

/// Postcard after the version byte `version` (a record layout of its own, like [`V3_TXN`]).
pub fn to_bytes_of<T: Serialize + ?Sized>(version: u8, value: &T) -> Vec<u8> {
    // Serialising strings, integers, enums and byte strings into a vector cannot fail.
    postcard::to_extend(value, vec![version]).unwrap_or_default()
}

/// `None` when `raw` does not start with `version`.
pub fn from_bytes_of<T: DeserializeOwned>(version: u8, raw: &[u8]) -> Option<Result<T, String>> {
    match raw.split_first() {
        Some((&v, rest)) if v == version => {
            Some(postcard::from_bytes(rest).map_err(|e| e.to_string()))
        }
        _ => None,
    }
}

/// As [`to_bytes`], LZ4-compressed: for records that repeat themselves (journal records).
pub fn to_compressed_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let plain = postcard::to_allocvec(value).unwrap_or_default();
    compress(&plain)
}

fn compress(plain: &[u8]) -> Vec<u8> {
    thread_local! {
        /// The compressor's hash table and output, kept between records: allocated afresh
        /// they are zeroed for every record (the table alone is 8–16 KiB), for records of a
        /// few hundred bytes.
        static SCRATCH: std::cell::RefCell<(lz4_flex::block::CompressTable, Vec<u8>)> =
            std::cell::RefCell::new((lz4_flex::block::CompressTable::default(), Vec::new()));
    }
    let bound = lz4_flex::block::get_maximum_output_size(plain.len());
    // A record is far below 4 GiB (journal steps are bounded by the frames they hold).
    let len = u32::try_from(plain.len()).unwrap_or(u32::MAX);
    let compressed = SCRATCH.with(|scratch| {
        let (table, output) = &mut *scratch.try_borrow_mut().ok()?;
        if output.len() < bound {
            output.resize(bound, 0);
        }
        let block =
            lz4_flex::block::compress_into_with_table(plain, output.get_mut(..bound)?, table)
                .ok()?;
        let mut out = Vec::with_capacity(5 + block);
        out.push(V2);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(output.get(..block)?);
        Some(out)
    });
    // Cannot fail with an output of the maximum size; kept uncompressed if it did.
    compressed.unwrap_or_else(|| {
        let mut v1 = Vec::with_capacity(1 + plain.len());
        v1.push(V1);
        v1.extend_from_slice(plain);
        v1
    })
}

/// `None` when `raw` is not a binary record (the caller may read an older form).
pub fn from_bytes<T: DeserializeOwned>(raw: &[u8]) -> Option<Result<T, String>> {
    match raw.split_first() {
        Some((&V1, _)) => from_bytes_of(V1, raw),
        Some((&V2, rest)) => Some(
            inflate(rest).and_then(|plain| postcard::from_bytes(&plain).map_err(|e| e.to_string())),
        ),
        _ => None,
    }
}

fn inflate(raw: &[u8]) -> Result<Vec<u8>, String> {
    let (len, block) = raw
        .split_first_chunk::<4>()
        .ok_or("compressed record cut short")?;
    let len = u32::from_le_bytes(*len) as usize;
    // LZ4 cannot expand a block more than 255 times: a larger claim is damage.
    if len > MAX_INFLATED || len > block.len().saturating_mul(255) {
        return Err(format!(
            "compressed record claims {len} bytes from {}",
            block.len()
        ));
    }
    let mut plain = vec![0u8; len];
    let n = lz4_flex::block::decompress_into(block, &mut plain).map_err(|e| e.to_string())?;
    if n != len {
        return Err(format!(
            "compressed record inflates to {n} bytes, not {len}"
        ));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        name: String,
        n: u64,
        items: Vec<String>,
    }

    fn sample() -> Sample {
        Sample {
            name: "LD000013|009902|1122040012".into(),
            n: 42,
            items: vec!["0200 3=000000 4=000000020500 41=LD000013".into(); 4],
        }
    }

    #[test]
    fn both_forms_read_back_and_a_repetitive_record_shrinks() {
        let plain = to_bytes(&sample());
        let packed = to_compressed_bytes(&sample());
        assert_eq!(plain[0], V1);
        assert_eq!(packed[0], V2);
        assert!(
            packed.len() < plain.len() / 2,
            "{} vs {}",
            packed.len(),
            plain.len()
        );
        for raw in [&plain, &packed] {
            assert_eq!(from_bytes::<Sample>(raw).unwrap().unwrap(), sample());
        }
        assert!(from_bytes::<Sample>(b"{\"json\":1}").is_none());
    }

    #[test]
    fn damaged_compressed_records_are_errors_not_panics_or_huge_allocations() {
        let packed = to_compressed_bytes(&sample());
        for cut in 1..packed.len() {
            if let Some(Ok(s)) = from_bytes::<Sample>(&packed[..cut]) {
                panic!("a record cut at {cut} read as {s:?}");
            }
        }
        for i in 5..packed.len() {
            let mut bad = packed.clone();
            bad[i] ^= 0x5a;
            let _ = from_bytes::<Sample>(&bad);
        }
        // A length of 4 GiB before a 3-byte block.
        let huge = [V2, 0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let err = from_bytes::<Sample>(&huge).unwrap().unwrap_err();
        assert!(err.contains("claims"), "{err}");
    }

    proptest::proptest! {
        /// Whatever a damaged disk holds after the version byte, reading it is an error or
        /// a value, never a panic, and never inflates past the bound.
        #[test]
        fn any_bytes_after_the_version_byte_read_without_panicking(
            version in 1u8..=2,
            len in 0u32..4096,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        ) {
            let mut raw = vec![version];
            raw.extend_from_slice(&len.to_le_bytes());
            raw.extend_from_slice(&body);
            let _ = from_bytes::<Sample>(&raw);
            let _ = from_bytes::<Vec<crate::records::entry::Entry>>(&raw);
        }
    }
}
