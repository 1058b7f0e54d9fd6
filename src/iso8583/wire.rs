//! Byte-level primitives: character classes, packed BCD, EBCDIC, hex and length prefixes.
//!
//! Everything here works on slices without allocating; the decoder validates with these and
//! the accessors convert with them.

use super::ebcdic_tables::{
    CP1047_FROM_LATIN1, CP1047_TO_LATIN1, CP500_FROM_LATIN1, CP500_TO_LATIN1,
};
use super::field::{CodePage, Encoding, FieldCodec, Format, PrefixEncoding};

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

// Exact per-byte tests for 7-bit text: with every byte's high bit set first, subtracting at
// most 0x7F from a byte never borrows from the next one, so each byte's high bit afterwards
// answers for that byte alone. Each returns HIGHS where the byte passes.

/// Bytes at or above `lo` and below `hi` (`t` has the high bits set).
#[inline(always)]
fn bytes_in(t: u64, lo: u8, hi: u8) -> u64 {
    t.wrapping_sub(ONES * u64::from(lo)) & !t.wrapping_sub(ONES * u64::from(hi)) & HIGHS
}

/// Bytes equal to `c` (`w` 7-bit).
#[inline(always)]
fn bytes_eq(w: u64, c: u8) -> u64 {
    !((w ^ (ONES * u64::from(c))) | HIGHS).wrapping_sub(ONES) & HIGHS
}

/// Letters of either case (`t` has the high bits set).
#[inline(always)]
fn letters(t: u64) -> u64 {
    bytes_in(t | (ONES * 0x20), b'a', b'z' + 1)
}

/// Eight bytes at a time: letters and spaces (format `a`).
#[inline(always)]
fn swar_alpha(w: u64) -> bool {
    let t = w | HIGHS;
    w & HIGHS == 0 && letters(t) | bytes_eq(w, b' ') == HIGHS
}

/// Eight bytes at a time: letters, digits and spaces (format `an`).
#[inline(always)]
fn swar_alnum(w: u64) -> bool {
    let t = w | HIGHS;
    w & HIGHS == 0 && letters(t) | bytes_in(t, b'0', b'9' + 1) | bytes_eq(w, b' ') == HIGHS
}

/// Eight bytes at a time: digits and the track separators `=` and `D` (format `z`).
#[inline(always)]
fn swar_track(w: u64) -> bool {
    let t = w | HIGHS;
    w & HIGHS == 0 && bytes_in(t, b'0', b'9' + 1) | bytes_eq(w, b'=') | bytes_eq(w, b'D') == HIGHS
}

/// Character classes as bit flags, one entry per byte value, so that checking a short field
/// is one table load and one AND per byte, without branches.
const C_N: u8 = 1;
const C_A: u8 = 2;
const C_AN: u8 = 4;
const C_ANS: u8 = 8;
const C_Z: u8 = 16;

const CLASSES: [u8; 256] = {
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

/// Whether every byte of `data` is in `class`: eight table look-ups per step, ANDed together,
/// so the loop does not branch per byte.
#[inline(always)]
fn all_in(data: &[u8], class: u8) -> bool {
    let mut chunks = data.chunks_exact(8);
    let mut acc = class;
    for c in &mut chunks {
        acc &= c.iter().fold(class, |a, &b| a & CLASSES[usize::from(b)]);
    }
    chunks
        .remainder()
        .iter()
        .fold(acc, |a, &b| a & CLASSES[usize::from(b)])
        != 0
}

#[inline(always)]
fn word_at(data: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&data[i..i + 8]);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn half_at(data: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&data[i..i + 4]);
    u64::from(u32::from_le_bytes(w))
}

/// Eight bytes at a time with `word_ok` (the last word overlapping the one before, so any
/// length from 8 up is whole words); 4 to 7 bytes as two overlapping halves in one word;
/// shorter through the class table. `word_ok` must judge bytes independently.
#[inline(always)]
fn check_words(data: &[u8], word_ok: fn(u64) -> bool, class: u8) -> bool {
    let len = data.len();
    if len >= 8 {
        if len <= 16 {
            // Most fields: two words, no loop (`&` rather than `&&`: no branch between).
            return word_ok(word_at(data, 0)) & word_ok(word_at(data, len - 8));
        }
        let mut ok = true;
        let mut i = 0;
        while i + 8 < len {
            ok &= word_ok(word_at(data, i));
            i += 8;
        }
        ok && word_ok(word_at(data, len - 8))
    } else if len >= 4 {
        word_ok(half_at(data, 0) | half_at(data, len - 4) << 32)
    } else {
        all_in(data, class)
    }
}

/// Whether `data` is valid text of `format` (the hot path: no index, no branch per byte).
#[inline(always)]
pub(crate) fn is_text(format: Format, data: &[u8]) -> bool {
    match format {
        Format::N => check_words(data, swar_digits, C_N),
        Format::Ans => check_words(data, swar_printable, C_ANS),
        Format::A => check_words(data, swar_alpha, C_A),
        Format::An => check_words(data, swar_alnum, C_AN),
        Format::Z => check_words(data, swar_track, C_Z),
        Format::XN => match data.split_first() {
            Some((b'C' | b'D', digits)) => check_words(digits, swar_digits, C_N),
            Some(_) => false,
            None => true,
        },
        Format::B => true,
    }
}

/// Check text of the given format; returns the index of the first invalid byte.
#[inline]
pub(crate) fn check_text(format: Format, data: &[u8]) -> Option<usize> {
    if is_text(format, data) {
        return None;
    }
    match format {
        Format::N => first_bad(data, is_digit),
        Format::Ans => first_bad(data, is_printable),
        Format::A => first_bad(data, is_alpha_or_space),
        Format::An => first_bad(data, |b| is_digit(b) || is_alpha_or_space(b)),
        Format::XN => match data.split_first() {
            Some((b'C' | b'D', digits)) => first_bad(digits, is_digit).map(|i| i + 1),
            _ => Some(0),
        },
        Format::B => None,
        Format::Z => first_bad(data, is_track),
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
const HEX_VALUES: [u8; 256] = {
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

/// Sixteen hex digits (a bitmap) as a number, eight digits at a time.
#[inline]
pub(crate) fn hex_u64(text: &[u8]) -> Option<u64> {
    let digits: &[u8; 16] = text.try_into().ok()?;
    let mut high = [0u8; 8];
    let mut low = [0u8; 8];
    high.copy_from_slice(&digits[..8]);
    low.copy_from_slice(&digits[8..]);
    let high = hex_word(u64::from_be_bytes(high))?;
    let low = hex_word(u64::from_be_bytes(low))?;
    Some(u64::from(high) << 32 | u64::from(low))
}

/// Eight hex digits (the first in the most significant byte) as a number. Every byte is
/// checked on its own: with the high bits set first, the subtractions never borrow across
/// bytes.
#[inline(always)]
fn hex_word(w: u64) -> Option<u32> {
    if w & HIGHS != 0 {
        return None;
    }
    let t = w | HIGHS;
    let digit = (t.wrapping_sub(ONES * 0x30) & !t.wrapping_sub(ONES * 0x3A)) & HIGHS;
    let l = t | (ONES * 0x20);
    let letter = (l.wrapping_sub(ONES * 0x61) & !l.wrapping_sub(ONES * 0x67)) & HIGHS;
    if digit | letter != HIGHS {
        return None;
    }
    // '0'-'9' keep their low nibble; 'A'-'F' and 'a'-'f' (bit 6 set) add 9 to 1-6.
    let nibbles = (w & (ONES * 0x0F)) + ((w >> 6) & ONES) * 9;
    // Pack the eight nibbles, first digit on top.
    let x = (nibbles | nibbles >> 4) & 0x00FF_00FF_00FF_00FF;
    let x = (x | x >> 8) & 0x0000_FFFF_0000_FFFF;
    Some((x | x >> 16) as u32) // ok: the low 32 bits hold the eight nibbles
}

/// A bitmap word as sixteen upper-case hex digits.
#[inline]
pub(crate) fn hex_16(word: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hex_8((word >> 32) as u32).to_be_bytes()); // ok: high half
    out[8..].copy_from_slice(&hex_8(word as u32).to_be_bytes()); // ok: low half
    out
}

/// Eight nibbles spread one a byte (the most significant in the top byte) and turned into
/// upper-case hex digits, all at once.
#[inline(always)]
fn hex_8(nibbles: u32) -> u64 {
    let x = u64::from(nibbles);
    let x = (x | x << 16) & 0x0000_FFFF_0000_FFFF;
    let x = (x | x << 8) & 0x00FF_00FF_00FF_00FF;
    let x = (x | x << 4) & 0x0F0F_0F0F_0F0F_0F0F;
    // 10-15 carry into bit 4 when 6 is added: those get the 7 between '9' and 'A'.
    let letters = ((x + ONES * 6) >> 4) & ONES;
    x + ONES * u64::from(b'0') + letters * 7
}

/// Write `len` as ASCII decimal digits filling `out` (the caller checked that it fits).
#[inline(always)]
pub(crate) fn put_ascii_length(out: &mut [u8], mut len: usize) {
    // LL and LLL are nearly all prefixes: written without a loop.
    match out {
        [] => return,
        [tens, ones] => {
            *tens = b'0' + (len / 10 % 10) as u8; // ok: a digit
            *ones = b'0' + (len % 10) as u8; // ok: a digit
            return;
        }
        [hundreds, tens, ones] => {
            *hundreds = b'0' + (len / 100 % 10) as u8; // ok: a digit
            *tens = b'0' + (len / 10 % 10) as u8; // ok: a digit
            *ones = b'0' + (len % 10) as u8; // ok: a digit
            return;
        }
        _ => {}
    }
    for d in out.iter_mut().rev() {
        *d = b'0' + (len % 10) as u8; // ok: a digit
        len /= 10;
    }
}

/// `dst.copy_from_slice(src)` for the short values of most fields, as two overlapping fixed
/// moves instead of a call to `memcpy`.
#[inline(always)]
pub(crate) fn copy_small(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if n != dst.len() {
        dst.copy_from_slice(src); // panics with the standard message; callers size exactly
    } else if (8..=16).contains(&n) {
        dst[..8].copy_from_slice(&src[..8]);
        dst[n - 8..].copy_from_slice(&src[n - 8..]);
    } else if (4..8).contains(&n) {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..].copy_from_slice(&src[n - 4..]);
    } else if n < 4 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    } else {
        dst.copy_from_slice(src);
    }
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
    fn hex_digits_written_and_small_copies() {
        for word in [0u64, u64::MAX, 0xF23A_0401_A8E1_8000, 0x0123_4567_89AB_CDEF] {
            assert_eq!(hex_16(word).as_slice(), format!("{word:016X}").as_bytes());
        }
        for n in 0..40 {
            let src: Vec<u8> = (0..n as u8).collect();
            let mut dst = vec![0xAA; n];
            copy_small(&mut dst, &src);
            assert_eq!(dst, src);
        }
        let mut digits = [0u8; 3];
        put_ascii_length(&mut digits, 42);
        assert_eq!(&digits, b"042");
    }

    #[test]
    fn hex_words_match_the_table() {
        for text in [
            &b"0123456789ABCDEF"[..],
            b"fedcba9876543210",
            b"F23A0401A8E18000",
            b"0000000000000000",
        ] {
            let expected = u64::from_str_radix(std::str::from_utf8(text).unwrap(), 16).unwrap();
            assert_eq!(hex_u64(text), Some(expected));
        }
        for b in 0..=255u8 {
            let mut text = *b"0123456789abcdef";
            for i in [0, 7, 8, 15] {
                let saved = text[i];
                text[i] = b;
                assert_eq!(
                    hex_u64(&text).is_some(),
                    hex_value(b).is_some(),
                    "byte {b:#x}"
                );
                text[i] = saved;
            }
        }
    }

    #[test]
    fn text_checks_at_every_length() {
        // Word, half-word and table paths agree with a byte-by-byte check.
        for len in 0..40 {
            for bad_at in 0..len {
                for (format, bad) in [
                    (Format::N, b'a'),
                    (Format::Ans, 0x1F),
                    (Format::An, b'-'),
                    (Format::A, b'7'),
                    (Format::Z, b'E'),
                    (Format::Z, 0xB7),
                    (Format::An, 0xC1),
                ] {
                    let good = if format == Format::A { b'Q' } else { b'7' };
                    let mut data = vec![good; len];
                    assert_eq!(check_text(format, &data), None);
                    data[bad_at] = bad;
                    assert_eq!(check_text(format, &data), Some(bad_at), "{format} {len}");
                }
            }
        }
    }

    #[test]
    fn word_tests_match_the_table() {
        // Every byte value in every position of a word, against the class table.
        for (format, class, valid) in [
            (Format::N, C_N, b"012345678901"),
            (Format::A, C_A, b"AbC DeFgHiJz"),
            (Format::An, C_AN, b"AbC 0eF9HiJz"),
            (Format::Ans, C_ANS, b"Ab~ 0e!9Hi\xff?"),
            (Format::Z, C_Z, b"0000D=000000"),
        ] {
            assert!(is_text(format, valid));
            for b in 0..=255u8 {
                for i in 0..12 {
                    let mut data = *valid;
                    data[i] = b;
                    assert_eq!(
                        is_text(format, &data),
                        all_in(&data, class),
                        "{format} byte {b:#x} at {i}"
                    );
                }
            }
        }
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
