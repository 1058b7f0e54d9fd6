//! The words a message layout is written in: a field's format, encoding, length prefix and
//! padding ([`FieldCodec`], with the subfield structure around it in [`FieldDef`]), how the MTI
//! and the bitmap are written, and the [`Bitmap`] of field numbers itself.
//!
//! This is the bottom of the codec: it depends on nothing else in `iso8583`, so the byte-level
//! code, the compiled layout and the spec-file loader can all share it without importing one
//! another.

use std::fmt;

use serde::Deserialize;

/// Highest field number a layout can define (tertiary bitmap).
pub const MAX_FIELD: u16 = 192;

/// The content class of a field, as the standard names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Format {
    /// Digits.
    #[serde(rename = "n")]
    N,
    /// Letters (and space, used as padding).
    #[serde(rename = "a")]
    A,
    /// Letters and digits (and space, used as padding).
    #[serde(rename = "an")]
    An,
    /// Letters, digits and specials: any printable byte.
    #[serde(rename = "ans")]
    Ans,
    /// Binary; lengths count bytes.
    #[serde(rename = "b")]
    B,
    /// Track 2/3 data: digits and the `=` separator (`D` is accepted as a separator in ASCII).
    #[serde(rename = "z")]
    Z,
    /// `C` (credit) or `D` (debit) followed by digits; the length counts the digits.
    #[serde(rename = "x+n")]
    XN,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::N => "n",
            Format::A => "a",
            Format::An => "an",
            Format::Ans => "ans",
            Format::B => "b",
            Format::Z => "z",
            Format::XN => "x+n",
        })
    }
}

/// EBCDIC code page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodePage {
    Cp500,
    Cp1047,
}

/// How a field's characters or digits are written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Encoding {
    /// One ASCII byte per character.
    #[serde(rename = "ascii")]
    Ascii,
    /// One EBCDIC byte per character, code page 1047.
    #[serde(rename = "ebcdic", alias = "ebcdic-1047")]
    Ebcdic1047,
    /// One EBCDIC byte per character, code page 500.
    #[serde(rename = "ebcdic-500")]
    Ebcdic500,
    /// Packed BCD, two digits a byte; an odd count is padded with a `0` nibble on the left.
    #[serde(rename = "bcd", alias = "bcd-left")]
    BcdLeft,
    /// Packed BCD, padded with an `F` nibble on the right.
    #[serde(rename = "bcd-right")]
    BcdRight,
    /// Raw bytes (binary fields only).
    #[serde(rename = "binary")]
    Binary,
    /// Binary data written as two upper-case hex characters a byte (either case read).
    #[serde(rename = "hex")]
    Hex,
}

impl Encoding {
    pub(crate) fn code_page(self) -> Option<CodePage> {
        match self {
            Encoding::Ebcdic1047 => Some(CodePage::Cp1047),
            Encoding::Ebcdic500 => Some(CodePage::Cp500),
            _ => None,
        }
    }
    pub(crate) fn is_bcd(self) -> bool {
        matches!(self, Encoding::BcdLeft | Encoding::BcdRight)
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Ascii => "ascii",
            Encoding::Ebcdic1047 => "ebcdic-1047",
            Encoding::Ebcdic500 => "ebcdic-500",
            Encoding::BcdLeft => "bcd",
            Encoding::BcdRight => "bcd-right",
            Encoding::Binary => "binary",
            Encoding::Hex => "hex",
        })
    }
}

/// How a length prefix is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PrefixEncoding {
    /// ASCII decimal digits, one byte each.
    #[serde(rename = "ascii")]
    Ascii,
    /// EBCDIC decimal digits (the digits are the same in cp500 and cp1047).
    #[serde(rename = "ebcdic")]
    Ebcdic,
    /// Packed BCD: LL is one byte, LLL and LLLL two, up to LLLLLL in three.
    #[serde(rename = "bcd")]
    Bcd,
    /// Big-endian binary in as many bytes as the BCD form would take.
    #[serde(rename = "binary")]
    Binary,
}

/// What a length prefix counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum PrefixCounts {
    /// The field's own unit: digits, characters, or bytes of binary data (jPOS's convention).
    #[default]
    #[serde(rename = "units")]
    Units,
    /// The bytes of the field on the wire (packed BCD bytes, hex characters).
    #[serde(rename = "wire-bytes")]
    WireBytes,
}

/// Padding of a fixed field whose value is shorter than the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pad {
    /// The value must have the exact length.
    None,
    Left(u8),
    Right(u8),
}

/// Bitmap encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum BitmapEncoding {
    /// 16 hex characters per bitmap (upper case written, either case read).
    #[serde(rename = "hex")]
    Hex,
    /// 8 raw bytes per bitmap.
    #[serde(rename = "binary")]
    Binary,
}

/// MTI encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum MtiEncoding {
    #[serde(rename = "ascii")]
    Ascii,
    #[serde(rename = "ebcdic")]
    Ebcdic,
    /// Two bytes of packed BCD.
    #[serde(rename = "bcd")]
    Bcd,
}

/// Structure inside a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subfields {
    None,
    /// Fixed-position parts, in order; with `repeat` the group repeats to the end of the field.
    Fixed {
        parts: Vec<SubfieldDef>,
        repeat: bool,
    },
    /// BER-TLV (EMV data in DE 55).
    BerTlv,
    /// ASCII tag-length-value: a tag of `tag_length` characters, a decimal length of
    /// `length_digits` digits, then the value (the switch's field 48, SPEC §4.3).
    AsciiTlv {
        tag_length: u8,
        length_digits: u8,
    },
}

/// One fixed-position subfield.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubfieldDef {
    pub name: String,
    pub length: usize,
}

/// One field of a compiled layout.
#[derive(Debug, Clone)]
pub struct FieldDef {
    pub number: u16,
    pub name: String,
    pub codec: FieldCodec,
    pub subfields: Subfields,
}

/// The part of a field definition the codec's inner loop reads: small and `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldCodec {
    pub format: Format,
    pub encoding: Encoding,
    /// Number of prefix digits; 0 for a fixed-length field.
    pub prefix_digits: u8,
    pub prefix_encoding: PrefixEncoding,
    pub prefix_counts: PrefixCounts,
    /// Exact length of a fixed field, maximum length of a variable one, in the field's unit.
    pub max: usize,
    /// Minimum length of a variable field.
    pub min: usize,
    /// Padding of a short value of a fixed field, when encoding.
    pub pad: Pad,
}

impl FieldCodec {
    pub fn is_fixed(&self) -> bool {
        self.prefix_digits == 0
    }

    /// Bytes on the wire of a value of `len` units (without the prefix).
    #[inline]
    pub fn wire_len(&self, len: usize) -> usize {
        let sign = usize::from(self.format == Format::XN);
        match self.encoding {
            Encoding::BcdLeft | Encoding::BcdRight => sign + len.div_ceil(2),
            Encoding::Hex => len * 2,
            _ => sign + len,
        }
    }

    /// The value's length in units from what its prefix counted.
    #[inline]
    pub(crate) fn units_from_prefix(&self, counted: usize) -> Option<usize> {
        match self.prefix_counts {
            PrefixCounts::Units => Some(counted),
            PrefixCounts::WireBytes => match self.encoding {
                Encoding::Hex => counted.is_multiple_of(2).then_some(counted / 2),
                // The spec loader refuses wire-byte counts for BCD, so this is one byte a unit.
                _ => counted.checked_sub(usize::from(self.format == Format::XN)),
            },
        }
    }

    /// Bytes taken by the length prefix.
    #[inline]
    pub fn prefix_len(&self) -> usize {
        match self.prefix_encoding {
            PrefixEncoding::Ascii | PrefixEncoding::Ebcdic => usize::from(self.prefix_digits),
            PrefixEncoding::Bcd | PrefixEncoding::Binary => {
                usize::from(self.prefix_digits).div_ceil(2)
            }
        }
    }

    /// Largest number the prefix can hold.
    pub(crate) fn prefix_capacity(&self) -> usize {
        match self.prefix_encoding {
            PrefixEncoding::Binary => (1usize << (8 * self.prefix_len())) - 1,
            _ => 10usize.pow(u32::from(self.prefix_digits)) - 1,
        }
    }
}

/// Presence bits for fields 1–192, most significant bit first as on the wire.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Bitmap(pub(crate) [u64; 3]);

impl Bitmap {
    #[inline]
    pub fn has(&self, n: u16) -> bool {
        let i = usize::from(n).wrapping_sub(1);
        i < 192 && self.0[i / 64] & (1u64 << 63 >> (i % 64)) != 0
    }
    #[inline]
    pub fn set(&mut self, n: u16) {
        let i = usize::from(n) - 1;
        self.0[i / 64] |= 1u64 << 63 >> (i % 64);
    }
    #[inline]
    pub(crate) fn clear(&mut self, n: u16) {
        let i = usize::from(n) - 1;
        self.0[i / 64] &= !(1u64 << 63 >> (i % 64));
    }
    /// How many fields are present.
    #[inline]
    pub(crate) fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
    /// Whether every field present here is present in `other` too.
    #[inline]
    pub(crate) fn is_subset_of(&self, other: &Bitmap) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
    /// How many set bits come before field `n`.
    #[inline]
    pub(crate) fn rank(&self, n: u16) -> usize {
        let i = usize::from(n) - 1;
        let (w, b) = (i / 64, i % 64);
        let below: u32 = self.0[..w].iter().map(|x| x.count_ones()).sum();
        (below + (self.0[w] & !(u64::MAX >> b)).count_ones()) as usize
    }
    /// Set field numbers in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let lz = rest.leading_zeros();
                    rest &= !(1u64 << 63 >> lz);
                    (w as u16) * 64 + lz as u16 + 1 // ok: w < 3, lz < 64
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_rank_and_iter() {
        let mut b = Bitmap::default();
        for n in [2, 3, 64, 65, 100, 128, 129, 192] {
            b.set(n);
        }
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            vec![2, 3, 64, 65, 100, 128, 129, 192]
        );
        assert_eq!(b.rank(2), 0);
        assert_eq!(b.rank(64), 2);
        assert_eq!(b.rank(65), 3);
        assert_eq!(b.rank(192), 7);
        b.clear(65);
        assert!(!b.has(65));
        assert!(!b.has(0));
        assert!(!b.has(193));
    }
}
