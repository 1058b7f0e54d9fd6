//! Hex: binary data and bitmaps written as two hex characters a byte (upper case written,
//! either case read).

use super::text::{HIGHS, ONES};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
