//! The two message types: [`Message`], a decoded view that borrows the frame, and
//! [`OwnedMessage`], the form messages are built in before encoding.

use std::borrow::Cow;
use std::fmt;

use smallvec::SmallVec;

use super::field::{Bitmap, Encoding, FieldCodec, Format};
use super::layout::Spec;
use super::wire;

/// Message type indicator: four ASCII digits, whatever its wire encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mti(pub(crate) [u8; 4]);

impl Mti {
    /// From four ASCII digits.
    pub fn new(digits: &[u8]) -> Option<Mti> {
        let d: [u8; 4] = digits.try_into().ok()?;
        d.iter().all(u8::is_ascii_digit).then_some(Mti(d))
    }
    pub fn as_bytes(&self) -> &[u8; 4] {
        &self.0
    }
    pub fn as_str(&self) -> &str {
        // ok: constructed from ASCII digits only
        std::str::from_utf8(&self.0).unwrap_or("????")
    }
    /// The matching response MTI: 0100 → 0110, 0200 → 0210, 0420/0421 → 0430.
    pub fn response(&self) -> Mti {
        let mut d = self.0;
        // Repeats (xxx1) are answered like their original.
        d[3] = b'0';
        if (d[2] - b'0').is_multiple_of(2) {
            d[2] += 1;
        }
        Mti(d)
    }
    /// Whether this MTI is a response (third digit odd).
    pub fn is_response(&self) -> bool {
        (self.0[2] - b'0') % 2 == 1
    }
    /// Message class: the second digit (1 authorization, 2 financial, 4 reversal, 5
    /// reconciliation, 8 network management).
    pub fn class(&self) -> u8 {
        self.0[1] - b'0'
    }
}

impl fmt::Display for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mti({})", self.as_str())
    }
}

/// Where a decoded field's data (after its prefix) starts in the frame. Its length is read
/// again from the prefix when the field is asked for: that keeps a message small (it is
/// returned by value) and the prefix was validated when the message was decoded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub(crate) start: u32,
}

/// A decoded message: field values are slices of the frame, found through the bitmap.
#[derive(Clone)]
pub struct Message<'a> {
    pub(crate) spec: &'a Spec,
    pub(crate) frame: &'a [u8],
    pub(crate) mti: Mti,
    /// Data fields only: the secondary/tertiary indicator bits are cleared.
    pub(crate) present: Bitmap,
    pub(crate) spans: SmallVec<[Span; 24]>,
}

impl<'a> Message<'a> {
    pub fn mti(&self) -> Mti {
        self.mti
    }
    pub fn spec(&self) -> &'a Spec {
        self.spec
    }
    /// The bytes this message was decoded from.
    pub fn frame(&self) -> &'a [u8] {
        self.frame
    }
    pub fn has(&self, n: u16) -> bool {
        self.present.has(n)
    }
    /// Numbers of the data fields present, ascending.
    pub fn field_numbers(&self) -> impl Iterator<Item = u16> + '_ {
        self.present.iter()
    }

    /// Field `n`, if present.
    #[inline]
    pub fn field(&self, n: u16) -> Option<Field<'a>> {
        if !self.present.has(n) {
            return None;
        }
        let span = *self.spans.get(self.present.rank(n))?;
        let codec = *self.spec.codec(n)?;
        let start = span.start as usize;
        let units = if codec.is_fixed() {
            codec.max
        } else {
            let prefix = self
                .frame
                .get(start.checked_sub(codec.prefix_len())?..start)?;
            codec.units_from_prefix(wire::read_prefix(&codec, prefix).ok()?)?
        };
        let wire = self.frame.get(start..start + codec.wire_len(units))?;
        Some(Field {
            number: n,
            codec,
            wire,
            units,
        })
    }

    /// Field `n` as text (ASCII fields borrow, others convert), if present.
    pub fn text(&self, n: u16) -> Option<Cow<'a, [u8]>> {
        self.field(n).map(|f| f.value())
    }

    /// Field `n` as a number, if present and all digits.
    pub fn number(&self, n: u16) -> Option<u64> {
        self.field(n).and_then(|f| f.to_u64())
    }

    /// Copy into an [`OwnedMessage`] (e.g. to build the response from the request).
    pub fn to_owned_message(&self) -> OwnedMessage {
        let mut out = OwnedMessage::with_capacity(self.mti, self.frame.len());
        for n in self.present.iter() {
            if let Some(f) = self.field(n) {
                out.set_written(n, |data| f.write_value(data));
            }
        }
        out
    }
}

impl fmt::Debug for Message<'_> {
    /// Lists field numbers only: values may hold card data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("mti", &self.mti)
            .field("fields", &self.present.iter().collect::<Vec<_>>())
            .finish()
    }
}

/// One field of a decoded message.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    pub number: u16,
    pub codec: FieldCodec,
    /// The field's bytes on the wire, prefix excluded.
    pub wire: &'a [u8],
    /// Length in the field's unit.
    pub units: usize,
}

impl<'a> Field<'a> {
    /// The logical value: ASCII text for character and numeric fields, raw bytes for binary
    /// fields. Borrowed when the wire form is already that (ASCII text, raw binary).
    pub fn value(&self) -> Cow<'a, [u8]> {
        match self.codec.encoding {
            Encoding::Ascii | Encoding::Binary => Cow::Borrowed(self.wire),
            _ => {
                let mut out = Vec::with_capacity(self.units + 1);
                self.write_value(&mut out);
                Cow::Owned(out)
            }
        }
    }

    /// Append the logical value to `out`.
    pub fn write_value(&self, out: &mut Vec<u8>) {
        match self.codec.encoding {
            Encoding::Ascii | Encoding::Binary => out.extend_from_slice(self.wire),
            Encoding::Ebcdic1047 | Encoding::Ebcdic500 => {
                if let Some(page) = self.codec.encoding.code_page() {
                    out.extend(self.wire.iter().map(|&b| wire::ebcdic_to_latin1(page, b)));
                }
            }
            Encoding::BcdLeft | Encoding::BcdRight => {
                let digits = match self.codec.format {
                    Format::XN => {
                        out.push(self.wire[0]);
                        &self.wire[1..]
                    }
                    _ => self.wire,
                };
                wire::unpack_bcd(self.codec.encoding, digits, self.units, out);
            }
            Encoding::Hex => {
                // Validated at decode: every pair is hex.
                out.extend(self.wire.chunks_exact(2).map(|p| {
                    wire::hex_value(p[0]).unwrap_or(0) << 4 | wire::hex_value(p[1]).unwrap_or(0)
                }));
            }
        }
    }

    /// The value as a number when it is all digits (no allocation for ASCII and BCD).
    pub fn to_u64(&self) -> Option<u64> {
        match self.codec.encoding {
            Encoding::Ascii => wire::parse_digits(self.wire),
            Encoding::BcdLeft | Encoding::BcdRight if self.codec.format != Format::XN => {
                wire::bcd_to_u64(self.codec.encoding, self.wire, self.units)
            }
            _ => wire::parse_digits(&self.value()),
        }
    }
}

/// A message being built: MTI plus logical field values, kept in field order in one buffer.
#[derive(Clone)]
pub struct OwnedMessage {
    mti: Mti,
    entries: SmallVec<[Entry; 24]>,
    data: Vec<u8>,
    /// The fields set, kept with `entries` so that encoding starts from a ready bitmap.
    present: Bitmap,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    field: u16,
    start: u32,
    len: u32,
}

impl OwnedMessage {
    pub fn new(mti: Mti) -> OwnedMessage {
        OwnedMessage::with_capacity(mti, 256)
    }

    pub fn with_capacity(mti: Mti, bytes: usize) -> OwnedMessage {
        OwnedMessage {
            mti,
            entries: SmallVec::new(),
            data: Vec::with_capacity(bytes),
            present: Bitmap::default(),
        }
    }

    pub fn mti(&self) -> Mti {
        self.mti
    }
    pub fn set_mti(&mut self, mti: Mti) {
        self.mti = mti;
    }

    /// Set field `n` (2..=192) to `value`, replacing any earlier value.
    pub fn set(&mut self, n: u16, value: &[u8]) -> &mut Self {
        self.set_written(n, |data| data.extend_from_slice(value))
    }

    /// Set field `n` to what `write` appends (a decoded field's value converted in place,
    /// without a copy of its own first).
    pub fn set_written(&mut self, n: u16, write: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        debug_assert!((2..=192).contains(&n), "field number {n} out of range");
        let start = self.data.len();
        write(&mut self.data);
        let entry = Entry {
            field: n,
            start: start as u32, // ok: messages are far below 4 GiB
            len: (self.data.len() - start) as u32,
        };
        // A number no bitmap can hold stays out of the bitmap; encoding then refuses it.
        if (1..=192).contains(&n) {
            self.present.set(n);
        }
        // Messages are mostly built in field order: appending is the common case.
        if self.entries.last().is_none_or(|e| e.field < n) {
            self.entries.push(entry);
            return self;
        }
        match self.entries.binary_search_by_key(&n, |e| e.field) {
            Ok(i) => self.entries[i] = entry,
            Err(i) => self.entries.insert(i, entry),
        }
        self
    }

    /// Set field `n` to a number, zero-padded to `width` digits.
    pub fn set_number(&mut self, n: u16, value: u64, width: usize) -> &mut Self {
        self.set(n, &wire::padded_digits(value, width))
    }

    pub fn remove(&mut self, n: u16) -> &mut Self {
        if let Ok(i) = self.entries.binary_search_by_key(&n, |e| e.field) {
            self.entries.remove(i);
            if (1..=192).contains(&n) {
                self.present.clear(n);
            }
        }
        self
    }

    pub fn get(&self, n: u16) -> Option<&[u8]> {
        let i = self.entries.binary_search_by_key(&n, |e| e.field).ok()?;
        Some(self.slice(&self.entries[i]))
    }

    pub fn has(&self, n: u16) -> bool {
        self.get(n).is_some()
    }

    /// How many fields are set.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Numbers of the fields set, ascending.
    pub fn field_numbers(&self) -> impl Iterator<Item = u16> + '_ {
        self.entries.iter().map(|e| e.field)
    }

    /// The fields set, as a bitmap (no indicator bits).
    pub(crate) fn present(&self) -> Bitmap {
        self.present
    }

    /// Total bytes of the field values (a sizing hint for encoding).
    pub(crate) fn value_bytes(&self) -> usize {
        self.data.len()
    }

    /// Present fields with their values, ascending.
    pub fn fields(&self) -> impl Iterator<Item = (u16, &[u8])> + '_ {
        self.entries.iter().map(|e| (e.field, self.slice(e)))
    }

    /// Copy field `n` from a decoded message, if present there.
    pub fn copy_from(&mut self, msg: &Message<'_>, n: u16) -> &mut Self {
        if let Some(f) = msg.field(n) {
            self.set(n, &f.value());
        }
        self
    }

    /// A layout-independent byte form (MTI, then field number, length, value per field), for
    /// keeping a message at rest whatever link it came from. Inverse: [`OwnedMessage::unpack`].
    pub fn pack(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.data.len() + 6 * self.entries.len());
        out.extend_from_slice(&self.mti.0);
        for (n, v) in self.fields() {
            out.extend_from_slice(&n.to_be_bytes());
            out.extend_from_slice(&(v.len() as u32).to_be_bytes()); // ok: below 4 GiB
            out.extend_from_slice(v);
        }
        out
    }

    pub fn unpack(raw: &[u8]) -> Result<OwnedMessage, String> {
        let (mti, mut rest) = raw
            .split_first_chunk::<4>()
            .ok_or("packed message shorter than its MTI")?;
        let mti = Mti::new(mti).ok_or("packed message has a bad MTI")?;
        let mut msg = OwnedMessage::new(mti);
        while !rest.is_empty() {
            let (n, r) = rest
                .split_first_chunk::<2>()
                .ok_or("packed message: truncated field number")?;
            let (len, r) = r
                .split_first_chunk::<4>()
                .ok_or("packed message: truncated length")?;
            let n = u16::from_be_bytes(*n);
            let len = u32::from_be_bytes(*len) as usize;
            if !(2..=192).contains(&n) || r.len() < len {
                return Err(format!("packed message: bad field {n} or length {len}"));
            }
            let (value, r) = r.split_at(len);
            msg.set(n, value);
            rest = r;
        }
        Ok(msg)
    }

    #[inline]
    fn slice(&self, e: &Entry) -> &[u8] {
        &self.data[e.start as usize..(e.start + e.len) as usize]
    }
}

impl PartialEq for OwnedMessage {
    fn eq(&self, other: &Self) -> bool {
        self.mti == other.mti && self.fields().eq(other.fields())
    }
}
impl Eq for OwnedMessage {}

impl fmt::Debug for OwnedMessage {
    /// Lists field numbers only: values may hold card data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedMessage")
            .field("mti", &self.mti)
            .field(
                "fields",
                &self.entries.iter().map(|e| e.field).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_set_zero_padded_to_their_width() {
        let mut m = OwnedMessage::new(Mti(*b"0200"));
        m.set_number(11, 42, 6)
            .set_number(4, 0, 12)
            .set_number(37, u64::MAX, 12)
            .set_number(49, 410, 3)
            .set_number(3, 7, 25);
        assert_eq!(m.get(11), Some(&b"000042"[..]));
        assert_eq!(m.get(4), Some(&b"000000000000"[..]));
        // Wider than the width: every digit kept (the spec refuses it when encoding).
        assert_eq!(m.get(37), Some(u64::MAX.to_string().as_bytes()));
        assert_eq!(m.get(49), Some(&b"410"[..]));
        assert_eq!(m.get(3), Some(format!("{:025}", 7).as_bytes()));
    }

    #[test]
    fn mti_response() {
        let r = |m: &[u8]| Mti::new(m).unwrap().response().to_string();
        assert_eq!(r(b"0100"), "0110");
        assert_eq!(r(b"0200"), "0210");
        assert_eq!(r(b"0421"), "0430");
        assert_eq!(r(b"0800"), "0810");
        assert_eq!(r(b"0201"), "0210");
    }

    #[test]
    fn owned_message_keeps_field_order_and_replaces() {
        let mut m = OwnedMessage::new(Mti::new(b"0200").unwrap());
        m.set(41, b"TERM0001")
            .set(3, b"000000")
            .set(11, b"000001")
            .set(3, b"310000");
        let got: Vec<_> = m.fields().map(|(n, v)| (n, v.to_vec())).collect();
        assert_eq!(
            got,
            vec![
                (3, b"310000".to_vec()),
                (11, b"000001".to_vec()),
                (41, b"TERM0001".to_vec())
            ]
        );
        m.remove(11);
        assert!(!m.has(11));
    }
}
