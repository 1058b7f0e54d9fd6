//! Packed BCD: two digits a byte, an odd count padded with a `0` nibble in front (left) or an
//! `F` nibble behind (right); track separators pack to `D`.

use super::text::first_bad;
use crate::iso8583::field::{Encoding, Format};

/// The nibble a digit or track separator packs to.
#[inline(always)]
fn to_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'=' | b'D' => Some(0xD),
        _ => None,
    }
}

#[inline(always)]
fn from_nibble(n: u8) -> u8 {
    if n < 10 {
        b'0' + n
    } else {
        b'='
    }
}

/// Where the `units` digits sit among the nibbles of `wire.len()` bytes.
#[inline(always)]
fn bcd_first_digit(encoding: Encoding, units: usize, wire_len: usize) -> usize {
    match encoding {
        Encoding::BcdLeft => wire_len * 2 - units,
        _ => 0,
    }
}

#[inline(always)]
fn nibble(wire: &[u8], i: usize) -> u8 {
    let b = wire[i / 2];
    if i.is_multiple_of(2) {
        b >> 4
    } else {
        b & 0xF
    }
}

/// Validate packed digits: each digit nibble 0–9 (or D, the separator, in track data), the pad
/// nibble 0 or F. Returns the byte index of the first bad nibble.
pub(crate) fn check_bcd(
    encoding: Encoding,
    format: Format,
    wire: &[u8],
    units: usize,
) -> Option<usize> {
    let first = bcd_first_digit(encoding, units, wire.len());
    let track = format == Format::Z;
    // Fast path for the common even, all-decimal case.
    if first == 0 && units == wire.len() * 2 && !track {
        return first_bad(wire, |b| (b >> 4) < 10 && (b & 0xF) < 10);
    }
    for i in 0..wire.len() * 2 {
        let n = nibble(wire, i);
        let ok = if i >= first && i < first + units {
            n < 10 || (track && n == 0xD)
        } else {
            n == 0 || n == 0xF
        };
        if !ok {
            return Some(i / 2);
        }
    }
    None
}

/// Unpack `units` digits from BCD into ASCII.
pub(crate) fn unpack_bcd(encoding: Encoding, wire: &[u8], units: usize, out: &mut Vec<u8>) {
    let first = bcd_first_digit(encoding, units, wire.len());
    out.extend((first..first + units).map(|i| from_nibble(nibble(wire, i))));
}

/// Read packed digits as a number without unpacking them first.
pub(crate) fn bcd_to_u64(encoding: Encoding, wire: &[u8], units: usize) -> Option<u64> {
    if units == 0 || units > 19 || units > wire.len() * 2 {
        return None;
    }
    let first = bcd_first_digit(encoding, units, wire.len());
    (first..first + units).try_fold(0u64, |acc, i| {
        let n = nibble(wire, i);
        (n < 10).then(|| acc * 10 + u64::from(n))
    })
}

/// Pack ASCII digits (and track separators) into BCD. `Err` has the index of a bad character.
pub(crate) fn pack_bcd(
    encoding: Encoding,
    text: &[u8],
    out: &mut impl Extend<u8>,
) -> Result<(), usize> {
    if let Some(i) = text.iter().position(|&c| to_nibble(c).is_none()) {
        return Err(i);
    }
    let digit = |i: usize| to_nibble(text[i]).unwrap_or(0);
    let pad = if encoding == Encoding::BcdRight {
        0xF
    } else {
        0
    };
    // An odd count gets one pad nibble: in front (left-padded) or behind (right-padded).
    let lead = text.len() % 2 == 1 && encoding == Encoding::BcdLeft;
    let nibble_at = |k: usize| -> u8 {
        match (lead, k) {
            (true, 0) => 0,
            (true, k) => digit(k - 1),
            (false, k) if k < text.len() => digit(k),
            _ => pad,
        }
    };
    let total = text.len().div_ceil(2);
    out.extend((0..total).map(|j| nibble_at(2 * j) << 4 | nibble_at(2 * j + 1)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcd_round_trips_odd_and_even() {
        for (enc, text, packed) in [
            (Encoding::BcdLeft, &b"123"[..], &[0x01, 0x23][..]),
            (Encoding::BcdRight, b"123", &[0x12, 0x3F]),
            (Encoding::BcdLeft, b"1234", &[0x12, 0x34]),
            (Encoding::BcdRight, b"12=4", &[0x12, 0xD4]),
        ] {
            let mut out = Vec::new();
            pack_bcd(enc, text, &mut out).unwrap();
            assert_eq!(out, packed);
            let fmt = if text.contains(&b'=') {
                Format::Z
            } else {
                Format::N
            };
            assert_eq!(check_bcd(enc, fmt, &out, text.len()), None);
            let mut back = Vec::new();
            unpack_bcd(enc, &out, text.len(), &mut back);
            assert_eq!(back, text);
        }
        assert_eq!(check_bcd(Encoding::BcdLeft, Format::N, &[0x1A], 2), Some(0));
        assert_eq!(
            pack_bcd(Encoding::BcdLeft, b"12x4", &mut Vec::new()),
            Err(2)
        );
    }
}
