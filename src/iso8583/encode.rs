//! Encoding: MTI → bitmaps → each field in number order, into a `BytesMut` reserved once.
//! Plain fields are checked and written in one step; the others are checked and sized, then
//! written into room made for them. On any error the buffer is truncated back, so nothing of
//! a refused message is left behind.

use bytes::BytesMut;

use super::error::{EncodeError, EncodeReason, Place};
use super::field::{BitmapEncoding, Encoding, FieldCodec, Format, MtiEncoding, Pad, PrefixCounts};
use super::layout::Spec;
use super::message::OwnedMessage;
use super::plan::{Kind, Plan};
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

/// The output buffer, grown in advance to a size that holds a message of plain fields, and
/// written through slices (a small copy is then a few moves, not a call). Grows further only
/// for fields that need more room (hex, padding).
struct Out<'a> {
    buf: &'a mut BytesMut,
    at: usize,
}

impl Out<'_> {
    /// The next `n` bytes of the buffer, to be filled by the caller.
    #[inline(always)]
    fn room(&mut self, n: usize) -> &mut [u8] {
        let (at, end) = (self.at, self.at + n);
        self.at = end;
        if end > self.buf.len() {
            self.buf.resize(end, 0);
        }
        &mut self.buf[at..end]
    }

    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        wire::copy_small(self.room(bytes.len()), bytes);
    }
}

/// A message checked against a layout: every field defined, every value of the right
/// length and character class. Encoding it cannot fail and checks nothing again, so a message
/// that is sent more than once (a repeated reversal, a retransmission) is checked once. It
/// borrows the message, which therefore cannot change in between.
pub struct Checked<'s, 'm> {
    spec: &'s Spec,
    msg: &'m OwnedMessage,
}

impl Spec {
    /// Append the encoded message to `out`; on error `out` is left as it was.
    pub fn encode(&self, msg: &OwnedMessage, out: &mut BytesMut) -> Result<(), EncodeError> {
        if !self.all_defined(msg) {
            return Err(self.undefined_field(msg));
        }
        // Checked while written (one pass over the fields); cut back on error.
        let start = out.len();
        let result = write_message(self, msg, out, true);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn all_defined(&self, msg: &OwnedMessage) -> bool {
        let map = msg.present();
        map.is_subset_of(&self.defined) && map.count() == msg.len()
    }

    /// Check `msg` against this layout without encoding it.
    pub fn check<'s, 'm>(&'s self, msg: &'m OwnedMessage) -> Result<Checked<'s, 'm>, EncodeError> {
        if !self.all_defined(msg) {
            return Err(self.undefined_field(msg));
        }
        for (n, value) in msg.fields() {
            let plan = self.plan(n);
            if plan.kind == Kind::Plain && plain_fits(plan, value) && plain_text_ok(plan, value) {
                continue;
            }
            let codec = self.codec(n).ok_or(EncodeError {
                place: Place::Field(n),
                reason: EncodeReason::UndefinedField,
            })?;
            check_field(codec, value).map_err(|reason| EncodeError {
                place: Place::Field(n),
                reason,
            })?;
        }
        Ok(Checked { spec: self, msg })
    }

    /// The first field of `msg` this layout cannot carry.
    #[cold]
    fn undefined_field(&self, msg: &OwnedMessage) -> EncodeError {
        let n = msg
            .field_numbers()
            .find(|&n| self.plan(n).kind == Kind::Undefined)
            .unwrap_or(0);
        EncodeError {
            place: Place::Field(n),
            reason: EncodeReason::UndefinedField,
        }
    }

    /// Encode into a new buffer.
    pub fn encode_to_vec(&self, msg: &OwnedMessage) -> Result<Vec<u8>, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(msg, &mut out)?;
        Ok(out.to_vec())
    }
}

impl Checked<'_, '_> {
    /// Append the message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let written = write_message(self.spec, self.msg, out, false);
        debug_assert!(written.is_ok(), "a checked message is written whole");
    }
}

/// MTI, bitmaps, then each field: plain fields (see [`Plan`]) straight from their values,
/// the others through the general writer. With `check`, each value is checked on the way
/// (the first bad one ends the message with its error); without, the message was checked
/// before. Every field must be defined.
#[inline(always)]
fn write_message(
    spec: &Spec,
    msg: &OwnedMessage,
    out: &mut BytesMut,
    check: bool,
) -> Result<(), EncodeError> {
    let mut map = msg.present();
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
    // Room for the header and every plain field with its prefix: one allocation at most.
    let start = out.len();
    out.resize(
        start + 4 + 16 * words + msg.value_bytes() + 6 * msg.len(),
        0,
    );
    let mut w = Out {
        buf: out,
        at: start,
    };
    put_mti(spec.mti, msg, &mut w);
    for &word in &map.0[..words] {
        match spec.bitmap {
            BitmapEncoding::Binary => w.put(&word.to_be_bytes()),
            BitmapEncoding::Hex => w.put(&wire::hex_16(word)),
        }
    }
    let mut result = Ok(());
    for (n, value) in msg.fields() {
        let plan = spec.plan(n);
        if plan.kind == Kind::Plain
            && plain_fits(plan, value)
            && (!check || plain_text_ok(plan, value))
        {
            put_plain(plan, value, &mut w);
            continue;
        }
        let err = |reason| EncodeError {
            place: Place::Field(n),
            reason,
        };
        let Some(codec) = spec.codec(n) else {
            result = Err(err(EncodeReason::UndefinedField));
            break;
        };
        if check {
            if let Err(reason) = check_field(codec, value) {
                result = Err(err(reason));
                break;
            }
        }
        put_general(codec, value, &mut w);
    }
    let end = w.at;
    out.truncate(end);
    result
}

fn put_mti(encoding: MtiEncoding, msg: &OwnedMessage, w: &mut Out<'_>) {
    let d = *msg.mti().as_bytes();
    match encoding {
        MtiEncoding::Ascii => w.put(&d),
        MtiEncoding::Ebcdic => w.put(&d.map(|c| c - b'0' + 0xF0)),
        MtiEncoding::Bcd => {
            let n = d.map(|c| c - b'0');
            w.put(&[n[0] << 4 | n[1], n[2] << 4 | n[3]]);
        }
    }
}

/// Whether a plain field's value has its length (a shorter value of a fixed field is padded
/// by the general writer).
#[inline(always)]
fn plain_fits(plan: Plan, value: &[u8]) -> bool {
    let len = value.len();
    if plan.prefix == 0 {
        len == plan.max as usize
    } else {
        len <= plan.max as usize && len >= plan.min as usize
    }
}

#[inline(always)]
fn plain_text_ok(plan: Plan, value: &[u8]) -> bool {
    plan.format.is_none_or(|f| wire::is_text(f, value))
}

/// Write a checked plain field: ASCII length prefix, then the value as it is.
#[inline(always)]
fn put_plain(plan: Plan, value: &[u8], w: &mut Out<'_>) {
    let prefix = usize::from(plan.prefix);
    let room = w.room(prefix + value.len());
    // The spec loader made sure the maximum fits the prefix.
    wire::put_ascii_length(&mut room[..prefix], value.len());
    wire::copy_small(&mut room[prefix..], value);
}

/// Write a checked field of any other kind into room sized for it.
fn put_general(codec: &FieldCodec, value: &[u8], w: &mut Out<'_>) {
    let size = wire_size(codec, value);
    let mut field = SliceWriter {
        buf: w.room(size),
        at: 0,
    };
    put_field(codec, value, &mut field);
    debug_assert_eq!(field.at, size, "sizing and writing must agree");
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
    Ok(wire_size(codec, value))
}

/// Bytes a (checked) value takes on the wire, prefix included.
#[inline]
fn wire_size(codec: &FieldCodec, value: &[u8]) -> usize {
    if codec.is_fixed() {
        codec.wire_len(codec.max)
    } else {
        codec.prefix_len() + codec.wire_len(units_of(codec, value))
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
