//! Encoding: MTI → bitmaps → each field in number order, into a `BytesMut`. Values are checked
//! against their definitions as they are written; on error nothing is left in the buffer.

use bytes::{BufMut, BytesMut};

use super::error::{EncodeError, EncodeReason, Place};
use super::message::{Bitmap, OwnedMessage};
use super::spec::{
    BitmapEncoding, Encoding, FieldCodec, Format, MtiEncoding, Pad, PrefixCounts, Spec,
};
use super::wire;

impl Spec {
    /// Append the encoded message to `out`.
    pub fn encode(&self, msg: &OwnedMessage, out: &mut BytesMut) -> Result<(), EncodeError> {
        let mark = out.len();
        let result = self.encode_inner(msg, out);
        if result.is_err() {
            out.truncate(mark);
        }
        result
    }

    /// Encode into a new buffer.
    pub fn encode_to_vec(&self, msg: &OwnedMessage) -> Result<Vec<u8>, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(msg, &mut out)?;
        Ok(out.to_vec())
    }

    fn encode_inner(&self, msg: &OwnedMessage, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.reserve(64 + msg.fields().map(|(_, v)| v.len() * 2 + 6).sum::<usize>());
        self.put_mti(msg, out);
        self.put_bitmaps(msg, out)?;
        for (n, value) in msg.fields() {
            let place = Place::Field(n);
            let err = |reason| EncodeError { place, reason };
            let def = self.field(n).ok_or(err(EncodeReason::UndefinedField))?;
            put_field(&def.codec, def.pad, value, out).map_err(err)?;
        }
        Ok(())
    }

    fn put_mti(&self, msg: &OwnedMessage, out: &mut BytesMut) {
        let d = *msg.mti().as_bytes();
        match self.mti {
            MtiEncoding::Ascii => out.put_slice(&d),
            MtiEncoding::Ebcdic => out.put_slice(&d.map(|c| c - b'0' + 0xF0)),
            MtiEncoding::Bcd => {
                let n = d.map(|c| c - b'0');
                out.put_slice(&[n[0] << 4 | n[1], n[2] << 4 | n[3]]);
            }
        }
    }

    fn put_bitmaps(&self, msg: &OwnedMessage, out: &mut BytesMut) -> Result<(), EncodeError> {
        let mut map = Bitmap::default();
        for (n, _) in msg.fields() {
            if n > self.max_field() || (self.tertiary && n == 65) {
                return Err(EncodeError {
                    place: Place::Field(n),
                    reason: EncodeReason::UndefinedField,
                });
            }
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
        for &word in &map.0[..words] {
            match self.bitmap {
                BitmapEncoding::Binary => out.put_u64(word),
                BitmapEncoding::Hex => wire::push_hex(out, &word.to_be_bytes()),
            }
        }
        Ok(())
    }
}

/// Write one field: prefix (for a variable field) then data in the field's encoding.
fn put_field(
    codec: &FieldCodec,
    pad: Pad,
    value: &[u8],
    out: &mut BytesMut,
) -> Result<(), EncodeReason> {
    let len = value.len();
    let invalid = |index| EncodeReason::InvalidChar {
        index,
        format: codec.format,
    };
    let units = if codec.format == Format::XN {
        len.saturating_sub(1)
    } else {
        len
    };
    // A fixed field shorter than its length is padded where the layout says how.
    let fill = if codec.is_fixed() && units < codec.max {
        match pad {
            Pad::None => {
                return Err(EncodeReason::WrongLength {
                    len: units,
                    fixed: codec.max,
                })
            }
            Pad::Left(c) | Pad::Right(c) => Some((pad, c, codec.max - units)),
        }
    } else {
        None
    };
    if units > codec.max {
        return Err(EncodeReason::TooLong {
            len: units,
            max: codec.max,
        });
    }
    if !codec.is_fixed() && units < codec.min {
        return Err(EncodeReason::TooShort {
            len: units,
            min: codec.min,
        });
    }
    if let Some(i) = wire::check_text(codec.format, value) {
        return Err(invalid(i));
    }
    if !codec.is_fixed() {
        let counted = match codec.prefix_counts {
            PrefixCounts::Units => units,
            PrefixCounts::WireBytes => codec.wire_len(units),
        };
        wire::write_prefix(codec, counted, out);
    }
    match fill {
        None => put_data(codec, value, out).map_err(invalid),
        Some((side, c, count)) => {
            let mut padded = Vec::with_capacity(codec.max);
            if matches!(side, Pad::Left(_)) {
                padded.resize(count, c);
                padded.extend_from_slice(value);
            } else {
                padded.extend_from_slice(value);
                padded.resize(codec.max, c);
            }
            put_data(codec, &padded, out).map_err(invalid)
        }
    }
}

/// Write a logical value in the field's data encoding; `Err` has the index of a bad character.
#[inline]
fn put_data(codec: &FieldCodec, value: &[u8], out: &mut BytesMut) -> Result<(), usize> {
    match codec.encoding {
        Encoding::Ascii | Encoding::Binary => out.put_slice(value),
        Encoding::Hex => wire::push_hex(out, value),
        Encoding::Ebcdic1047 | Encoding::Ebcdic500 => {
            if let Some(page) = codec.encoding.code_page() {
                out.extend(value.iter().map(|&c| wire::latin1_to_ebcdic(page, c)));
            }
        }
        Encoding::BcdLeft | Encoding::BcdRight => {
            let digits = match (codec.format, value.split_first()) {
                (Format::XN, Some((&sign, digits))) => {
                    out.put_u8(sign);
                    digits
                }
                _ => value,
            };
            let skip = value.len() - digits.len();
            wire::pack_bcd(codec.encoding, digits, out).map_err(|i| i + skip)?;
        }
    }
    Ok(())
}
