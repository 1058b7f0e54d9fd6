//! Byte-level primitives: character classes, packed BCD, EBCDIC, hex and length prefixes.
//!
//! Everything here works on slices without allocating; the decoder validates with these and
//! the accessors convert with them.

use super::ebcdic_tables::{
    CP1047_FROM_LATIN1, CP1047_TO_LATIN1, CP500_FROM_LATIN1, CP500_TO_LATIN1,
};
use super::spec::{CodePage, Encoding, FieldCodec, Format, PrefixEncoding};

// ---- Character classes (on ASCII/Latin-1 text) ------------------------------------------------

#[inline(always)]
fn is_digit(b: u8) -> bool {
    b.wrapping_sub(b'0') < 10
}
#[inline(always)]
fn is_alpha_or_space(b: u8) -> bool {
    (b | 0x20).wrapping_sub(b'a') < 26 || b == b' '
}
#[inline(always)]
fn is_printable(b: u8) -> bool {
    // ans admits national characters (bytes >= 0x80, e.g. a merchant name in EUC-KR), not controls.
    b >= 0x20 && b != 0x7F
}
#[inline(always)]
fn is_track(b: u8) -> bool {
    is_digit(b) || b == b'=' || b == b'D'
}

/// Index of the first byte that fails `ok` (the slow path, after a fast check failed).
#[inline(never)]
fn first_bad(data: &[u8], ok: impl Fn(u8) -> bool) -> Option<usize> {
    data.iter().position(|&b| !ok(b))
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Eight bytes at a time: whether every byte of `word` is an ASCII digit.
#[inline(always)]
fn swar_digits(word: u64) -> bool {
    let v = word ^ (ONES * 0x30);
    (v | v.wrapping_add(ONES * 0x76)) & HIGHS == 0
}

/// Eight bytes at a time: whether no byte is a control character (< 0x20 or 0x7F).
#[inline(always)]
fn swar_printable(word: u64) -> bool {
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let del = word ^ (ONES * 0x7F);
    let is_del = del.wrapping_sub(ONES) & !del & HIGHS;
    below_space | is_del == 0
}

/// Character classes as bit flags, one entry per byte value, so that checking a short field
/// is one table load and one AND per byte, without branches.
const C_N: u8 = 1;
const C_A: u8 = 2;
const C_AN: u8 = 4;
const C_ANS: u8 = 8;
const C_Z: u8 = 16;

static CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut f = 0;
        if c.is_ascii_digit() {
            f |= C_N | C_AN | C_Z;
        }
        if c.is_ascii_alphabetic() || c == b' ' {
            f |= C_A | C_AN;
        }
        if c >= 0x20 && c != 0x7F {
            f |= C_ANS;
        }
        if c == b'=' || c == b'D' {
            f |= C_Z;
        }
        t[b] = f;
        b += 1;
    }
    t
};

#[inline(always)]
fn all_in(data: &[u8], class: u8) -> bool {
    data.iter()
        .fold(class, |acc, &b| acc & CLASSES[usize::from(b)])
        != 0
}

/// Eight bytes at a time with `word_ok`, the tail through the class table.
#[inline(always)]
fn check_words(data: &[u8], word_ok: fn(u64) -> bool, class: u8) -> bool {
    if data.len() < 16 {
        return all_in(data, class);
    }
    let mut chunks = data.chunks_exact(8);
    let words_ok = chunks.all(|c| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        word_ok(u64::from_le_bytes(w))
    });
    words_ok && all_in(chunks.remainder(), class)
}

/// Check text of the given format; returns the index of the first invalid byte.
#[inline]
pub(crate) fn check_text(format: Format, data: &[u8]) -> Option<usize> {
    let ok = match format {
        Format::N => check_words(data, swar_digits, C_N),
        Format::Ans => check_words(data, swar_printable, C_ANS),
        Format::A => all_in(data, C_A),
        Format::An => all_in(data, C_AN),
        Format::Z => all_in(data, C_Z),
        Format::XN => {
            return match data.split_first() {
                Some((b'C' | b'D', digits)) => check_text(Format::N, digits).map(|i| i + 1),
                Some(_) => Some(0),
                None => None,
            }
        }
        Format::B => true,
    };
    if ok {
        return None;
    }
    match format {
        Format::N => first_bad(data, is_digit),
        Format::Ans => first_bad(data, is_printable),
        Format::A => first_bad(data, is_alpha_or_space),
        Format::An => first_bad(data, |b| is_digit(b) || is_alpha_or_space(b)),
        _ => first_bad(data, is_track),
    }
}

// ---- EBCDIC ---------------------------------------------------------------------------------

#[inline]
pub(crate) fn ebcdic_to_latin1(page: CodePage, b: u8) -> u8 {
    match page {
        CodePage::Cp500 => CP500_TO_LATIN1[usize::from(b)],
        CodePage::Cp1047 => CP1047_TO_LATIN1[usize::from(b)],
    }
}

#[inline]
pub(crate) fn latin1_to_ebcdic(page: CodePage, b: u8) -> u8 {
    match page {
        CodePage::Cp500 => CP500_FROM_LATIN1[usize::from(b)],
        CodePage::Cp1047 => CP1047_FROM_LATIN1[usize::from(b)],
    }
}

// ---- Hex ------------------------------------------------------------------------------------

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Hex digit values; 0xFF for bytes that are not hex digits.
static HEX_VALUES: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'A' as usize + i] = 10 + i as u8;
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

#[inline(always)]
pub(crate) fn hex_value(c: u8) -> Option<u8> {
    let v = HEX_VALUES[usize::from(c)];
    (v != 0xFF).then_some(v)
}

/// Append `data` as upper-case hex.
pub(crate) fn push_hex(out: &mut impl Extend<u8>, data: &[u8]) {
    out.extend(data.iter().flat_map(|&b| {
        [
            HEX_UPPER[usize::from(b >> 4)],
            HEX_UPPER[usize::from(b & 0xF)],
        ]
    }));
}

/// Decode hex text into bytes; the index of the first bad character on failure.
pub(crate) fn unhex(text: &[u8], out: &mut Vec<u8>) -> Result<(), usize> {
    if !text.len().is_multiple_of(2) {
        return Err(text.len());
    }
    out.reserve(text.len() / 2);
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let hi = hex_value(pair[0]).ok_or(2 * i)?;
        let lo = hex_value(pair[1]).ok_or(2 * i + 1)?;
        out.push(hi << 4 | lo);
    }
    Ok(())
}

// ---- Packed BCD -----------------------------------------------------------------------------

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

// ---- Length prefixes ------------------------------------------------------------------------

/// Read a length prefix of `codec.prefix_len()` bytes. `Err` has the index of a bad byte.
#[inline]
pub(crate) fn read_prefix(codec: &FieldCodec, bytes: &[u8]) -> Result<usize, usize> {
    let mut value = 0usize;
    match codec.prefix_encoding {
        PrefixEncoding::Ascii => {
            for (i, &b) in bytes.iter().enumerate() {
                let d = b.wrapping_sub(b'0');
                if d > 9 {
                    return Err(i);
                }
                value = value * 10 + usize::from(d);
            }
        }
        PrefixEncoding::Ebcdic => {
            for (i, &b) in bytes.iter().enumerate() {
                let d = b.wrapping_sub(0xF0);
                if d > 9 {
                    return Err(i);
                }
                value = value * 10 + usize::from(d);
            }
        }
        PrefixEncoding::Bcd => {
            for (i, &b) in bytes.iter().enumerate() {
                let (hi, lo) = (b >> 4, b & 0xF);
                if hi > 9 || lo > 9 {
                    return Err(i);
                }
                value = value * 100 + usize::from(hi) * 10 + usize::from(lo);
            }
        }
        PrefixEncoding::Binary => {
            for &b in bytes {
                value = value << 8 | usize::from(b);
            }
        }
    }
    Ok(value)
}

/// Write `value` as a length prefix (the caller has checked that it fits).
#[inline]
pub(crate) fn write_prefix(codec: &FieldCodec, value: usize, out: &mut impl Extend<u8>) {
    let width = codec.prefix_len();
    match codec.prefix_encoding {
        PrefixEncoding::Ascii | PrefixEncoding::Ebcdic => {
            let zero = if codec.prefix_encoding == PrefixEncoding::Ascii {
                b'0'
            } else {
                0xF0
            };
            let mut digits = [0u8; 6];
            let mut v = value;
            for d in digits[..width].iter_mut().rev() {
                *d = zero + (v % 10) as u8; // ok: a digit
                v /= 10;
            }
            out.extend(digits[..width].iter().copied());
        }
        PrefixEncoding::Bcd => {
            let mut bytes = [0u8; 3];
            let mut v = value;
            for b in bytes[..width].iter_mut().rev() {
                let two = v % 100;
                *b = (((two / 10) << 4) | (two % 10)) as u8; // ok: two digits
                v /= 100;
            }
            out.extend(bytes[..width].iter().copied());
        }
        PrefixEncoding::Binary => {
            let be = (value as u64).to_be_bytes();
            out.extend(be[8 - width..].iter().copied());
        }
    }
}

/// Parse ASCII digits as a number; `None` if empty, too long or not all digits.
#[inline]
pub(crate) fn parse_digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &b| {
        let d = b.wrapping_sub(b'0');
        (d < 10).then(|| acc * 10 + u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ebcdic_tables_are_inverse() {
        for page in [CodePage::Cp500, CodePage::Cp1047] {
            for b in 0..=255u8 {
                assert_eq!(latin1_to_ebcdic(page, ebcdic_to_latin1(page, b)), b);
            }
            assert_eq!(latin1_to_ebcdic(page, b'0'), 0xF0);
            assert_eq!(latin1_to_ebcdic(page, b'A'), 0xC1);
            assert_eq!(latin1_to_ebcdic(page, b' '), 0x40);
        }
        // The two pages differ on brackets.
        assert_eq!(latin1_to_ebcdic(CodePage::Cp500, b'['), 0x4A);
        assert_eq!(latin1_to_ebcdic(CodePage::Cp1047, b'['), 0xAD);
    }

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

    #[test]
    fn character_classes() {
        assert_eq!(check_text(Format::N, b"0123456789"), None);
        assert_eq!(check_text(Format::N, b"01a3"), Some(2));
        assert_eq!(check_text(Format::An, b"AB 12"), None);
        assert_eq!(check_text(Format::An, b"AB-12"), Some(2));
        assert_eq!(check_text(Format::Ans, b"A|B-12"), None);
        assert_eq!(check_text(Format::Ans, b"A\x01"), Some(1));
        assert_eq!(check_text(Format::XN, b"C0001"), None);
        assert_eq!(check_text(Format::XN, b"X0001"), Some(0));
        assert_eq!(check_text(Format::Z, b"4111=2512"), None);
    }
}
