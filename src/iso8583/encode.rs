//! Encoding: MTI → bitmaps → each field in number order, into a `BytesMut`. A first pass checks
//! every value against its definition and sizes the message; the second writes into the
//! buffer grown once to that size, so nothing is left behind on error and no write pays for a
//! capacity check.

use bytes::BytesMut;
use smallvec::SmallVec;

use super::error::{EncodeError, EncodeReason, Place};
use super::message::{Bitmap, OwnedMessage};
use super::spec::{
    BitmapEncoding, Encoding, FieldCodec, Format, MtiEncoding, Pad, PrefixCounts, Spec,
};
use super::wire;

/// Writes into a slice sized in advance.
struct SliceWriter<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl SliceWriter<'_> {
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

impl Extend<u8> for SliceWriter<'_> {
    #[inline]
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        for b in iter {
            self.buf[self.at] = b;
            self.at += 1;
        }
    }
}

impl Spec {
    /// Append the encoded message to `out`.
    pub fn encode(&self, msg: &OwnedMessage, out: &mut BytesMut) -> Result<(), EncodeError> {
        // Pass 1: check every value, build the bitmap, size the message.
        let mut map = Bitmap::default();
        let mut codecs: SmallVec<[&FieldCodec; 24]> = SmallVec::new();
        let mut size = 0;
        for (n, value) in msg.fields() {
            let err = |reason| EncodeError {
                place: Place::Field(n),
                reason,
            };
            if n > self.max_field() || (self.tertiary && n == 65) {
                return Err(err(EncodeReason::UndefinedField));
            }
            let codec = self.codec(n).ok_or(err(EncodeReason::UndefinedField))?;
            size += check_field(codec, value).map_err(err)?;
            codecs.push(codec);
            map.set(n);
        }
        let words = if map.0[2] != 0 {
            map.set(65);
            map.set(1);
            3
        } else if map.0[1] != 0 {
            map.set(1);
            2
        } else {
            1
        };
        let mti_len = if self.mti == MtiEncoding::Bcd { 2 } else { 4 };
        let bitmap_len = words
            * if self.bitmap == BitmapEncoding::Hex {
                16
            } else {
                8
            };
        let total = mti_len + bitmap_len + size;
        // Pass 2: write.
        let start = out.len();
        out.resize(start + total, 0);
        let mut w = SliceWriter {
            buf: &mut out[start..],
            at: 0,
        };
        self.put_mti(msg, &mut w);
        for &word in &map.0[..words] {
            match self.bitmap {
                BitmapEncoding::Binary => w.put(&word.to_be_bytes()),
                BitmapEncoding::Hex => wire::push_hex(&mut w, &word.to_be_bytes()),
            }
        }
        for ((_, value), codec) in msg.fields().zip(codecs) {
            put_field(codec, value, &mut w);
        }
        debug_assert_eq!(w.at, total, "sizing and writing must agree");
        Ok(())
    }

    /// Encode into a new buffer.
    pub fn encode_to_vec(&self, msg: &OwnedMessage) -> Result<Vec<u8>, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(msg, &mut out)?;
        Ok(out.to_vec())
    }

    fn put_mti(&self, msg: &OwnedMessage, w: &mut SliceWriter<'_>) {
        let d = *msg.mti().as_bytes();
        match self.mti {
            MtiEncoding::Ascii => w.put(&d),
            MtiEncoding::Ebcdic => w.put(&d.map(|c| c - b'0' + 0xF0)),
            MtiEncoding::Bcd => {
                let n = d.map(|c| c - b'0');
                w.put(&[n[0] << 4 | n[1], n[2] << 4 | n[3]]);
            }
        }
    }
}

/// The value's length in the field's unit.
#[inline(always)]
fn units_of(codec: &FieldCodec, value: &[u8]) -> usize {
    if codec.format == Format::XN {
        value.len().saturating_sub(1)
    } else {
        value.len()
    }
}

/// Check a value against its field; returns the bytes it takes on the wire, prefix included.
#[inline]
fn check_field(codec: &FieldCodec, value: &[u8]) -> Result<usize, EncodeReason> {
    let units = units_of(codec, value);
    if units > codec.max {
        return Err(EncodeReason::TooLong {
            len: units,
            max: codec.max,
        });
    }
    if codec.is_fixed() {
        // A fixed field shorter than its length is padded where the layout says how.
        if units < codec.max && codec.pad == Pad::None {
            return Err(EncodeReason::WrongLength {
                len: units,
                fixed: codec.max,
            });
        }
    } else if units < codec.min {
        return Err(EncodeReason::TooShort {
            len: units,
            min: codec.min,
        });
    }
    if let Some(index) = wire::check_text(codec.format, value) {
        return Err(EncodeReason::InvalidChar {
            index,
            format: codec.format,
        });
    }
    if codec.encoding.is_bcd() {
        let digits = &value[value.len() - units..];
        if let Some(i) = digits
            .iter()
            .position(|&c| !matches!(c, b'0'..=b'9' | b'=' | b'D'))
        {
            return Err(EncodeReason::InvalidChar {
                index: i + value.len() - units,
                format: codec.format,
            });
        }
    }
    if codec.is_fixed() {
        Ok(codec.wire_len(codec.max))
    } else {
        Ok(codec.prefix_len() + codec.wire_len(units))
    }
}

/// Write one checked field: prefix (for a variable field), padding, data.
#[inline]
fn put_field(codec: &FieldCodec, value: &[u8], w: &mut SliceWriter<'_>) {
    let units = units_of(codec, value);
    if !codec.is_fixed() {
        let counted = match codec.prefix_counts {
            PrefixCounts::Units => units,
            PrefixCounts::WireBytes => codec.wire_len(units),
        };
        wire::write_prefix(codec, counted, w);
        put_data(codec, value, w);
        return;
    }
    let short = codec.max - units;
    if short == 0 {
        put_data(codec, value, w);
        return;
    }
    // Padding characters are written in the field's encoding, like the value.
    let mut padded = Vec::with_capacity(value.len() + short);
    match codec.pad {
        Pad::Left(c) => {
            padded.resize(short, c);
            padded.extend_from_slice(value);
        }
        Pad::Right(c) => {
            padded.extend_from_slice(value);
            padded.resize(value.len() + short, c);
        }
        Pad::None => {}
    }
    put_data(codec, &padded, w);
}

/// Write a checked value in the field's data encoding.
#[inline(always)]
fn put_data(codec: &FieldCodec, value: &[u8], w: &mut SliceWriter<'_>) {
    match codec.encoding {
        Encoding::Ascii | Encoding::Binary => w.put(value),
        Encoding::Hex => wire::push_hex(w, value),
        Encoding::Ebcdic1047 | Encoding::Ebcdic500 => {
            if let Some(page) = codec.encoding.code_page() {
                w.extend(value.iter().map(|&c| wire::latin1_to_ebcdic(page, c)));
            }
        }
        Encoding::BcdLeft | Encoding::BcdRight => {
            let digits = match (codec.format, value.split_first()) {
                (Format::XN, Some((&sign, digits))) => {
                    w.put(&[sign]);
                    digits
                }
                _ => value,
            };
            // Checked in pass 1: every character packs.
            let _ = wire::pack_bcd(codec.encoding, digits, w);
        }
    }
}
