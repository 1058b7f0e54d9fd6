//! Character classes: whether a field's text is what its format admits (`n`, `a`, `an`, `ans`,
//! `z`, `x+n`), checked eight bytes at a time on the hot path.
//!
//! The byte-lane constants and `first_bad` are shared with the hex and BCD codecs next door.

use crate::iso8583::field::Format;

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
pub(super) fn first_bad(data: &[u8], ok: impl Fn(u8) -> bool) -> Option<usize> {
    data.iter().position(|&b| !ok(b))
}

/// Byte lanes for eight-bytes-at-a-time tests: a one in every byte, and every byte's high bit.
pub(super) const ONES: u64 = 0x0101_0101_0101_0101;
pub(super) const HIGHS: u64 = 0x8080_8080_8080_8080;

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

/// `value` in decimal, left-padded with zeros to `width` digits (all its digits when it has
/// more), on the stack: numbers in fields and keys are built for every message, and the
/// formatting machinery costs more than the digits.
pub fn padded_digits(value: u64, width: usize) -> smallvec::SmallVec<[u8; 24]> {
    let mut digits = [b'0'; 20];
    let mut rest = value;
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let significant = &digits[start..];
    let mut out = smallvec::SmallVec::new();
    out.resize(width.saturating_sub(significant.len()), b'0');
    out.extend_from_slice(significant);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
