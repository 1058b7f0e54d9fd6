//! Byte-level primitives: character classes, packed BCD, EBCDIC, hex and length prefixes.
//!
//! Everything here works on slices without allocating; the decoder validates with these and
//! the accessors convert with them. Each wire form has its own file; they are re-exported here
//! so that callers name them all as `wire::…`.

mod bcd;
mod ebcdic;
mod hex;
mod prefix;
mod text;

pub(crate) use bcd::{bcd_to_u64, check_bcd, pack_bcd, unpack_bcd};
pub(crate) use ebcdic::{ebcdic_to_latin1, latin1_to_ebcdic};
pub(crate) use hex::{hex_16, hex_u64, hex_value, push_hex, unhex};
pub(crate) use prefix::{parse_digits, put_ascii_length, read_prefix, write_prefix};
pub use text::padded_digits;
pub(crate) use text::{check_text, is_text};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
