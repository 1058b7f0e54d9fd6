//! Length prefixes (ASCII, EBCDIC, BCD or binary) and ASCII decimal numbers.

use crate::iso8583::field::{FieldCodec, PrefixEncoding};

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
