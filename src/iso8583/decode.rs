//! Decoding: MTI → bitmaps → each present field in number order, with nom parsers over the
//! message bytes. Every field is checked against its definition (prefix, length bounds,
//! character class or BCD/hex validity) and recorded as a span of the frame: nothing is copied.

use nom::bytes::complete::take;
use nom::error::{ErrorKind, ParseError};
use nom::{IResult, Parser};
use smallvec::SmallVec;

use super::error::{DecodeError, Place, Reason};
use super::field::{Bitmap, BitmapEncoding, Encoding, FieldCodec, Format, MtiEncoding};
use super::layout::Spec;
use super::message::{Message, Mti, Span};
use super::plan::Kind;
use super::wire;

/// A nom error that knows where (the input left when it failed) and why.
#[derive(Debug)]
struct Fail<'a> {
    rest: &'a [u8],
    place: Place,
    reason: Reason,
}

impl<'a> ParseError<&'a [u8]> for Fail<'a> {
    fn from_error_kind(input: &'a [u8], _kind: ErrorKind) -> Self {
        Fail {
            rest: input,
            place: Place::Message,
            reason: Reason::Truncated {
                need: input.len() + 1,
                have: input.len(),
            },
        }
    }
    fn append(_: &'a [u8], _: ErrorKind, other: Self) -> Self {
        other
    }
}

type Res<'a, T> = IResult<&'a [u8], T, Fail<'a>>;

fn fail<T>(rest: &[u8], place: Place, reason: Reason) -> Res<'_, T> {
    Err(nom::Err::Error(Fail {
        rest,
        place,
        reason,
    }))
}

/// Take `n` bytes of `place`, or fail with "truncated: needs n bytes, m left". The hot path
/// (fields) slices directly; nom's `take` serves the MTI and bitmaps.
#[inline(always)]
fn take_part(input: &[u8], n: usize, place: Place) -> Res<'_, &[u8]> {
    match input.split_at_checked(n) {
        Some((head, rest)) => Ok((rest, head)),
        None => fail(
            input,
            place,
            Reason::Truncated {
                need: n,
                have: input.len(),
            },
        ),
    }
}

/// nom's `take` with the truncation reported for `place`.
fn take_nom(input: &[u8], n: usize, place: Place) -> Res<'_, &[u8]> {
    take::<_, _, Fail>(n)
        .parse(input)
        .or_else(|_| take_part(input, n, place))
}

/// Spans kept inline in a [`Message`]; a message with more fields takes the careful path,
/// which spills them to the heap.
const INLINE_SPANS: usize = 24;

impl Spec {
    /// Decode one message (framing already removed).
    ///
    /// A fast pass accepts well-formed messages; anything it does not accept (a bad byte, a
    /// layout feature it leaves to the general code, more than [`INLINE_SPANS`] fields) is
    /// decoded again by the careful pass, which says exactly what is wrong and where. Both
    /// accept the same messages (checked by a property test and the fuzz targets).
    #[inline]
    pub fn decode<'a>(&'a self, frame: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        match self.decode_fast(frame) {
            Some(msg) => Ok(msg),
            None => self.decode_careful(frame),
        }
    }

    /// The fast pass: `None` for anything but a well-formed message.
    #[inline(always)]
    fn decode_fast<'a>(&'a self, frame: &'a [u8]) -> Option<Message<'a>> {
        let (mti, present, mut pos) = self.fast_header(frame)?;
        let mut spans = [Span { start: 0 }; INLINE_SPANS];
        let mut count = 0;
        for (w, &word) in present.0.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let lz = bits.leading_zeros();
                bits &= !(1u64 << 63 >> lz);
                let n = (w as u16) * 64 + lz as u16 + 1; // ok: w < 3, lz < 64
                let (span, end) = self.fast_field(frame, pos, n)?;
                *spans.get_mut(count)? = span;
                count += 1;
                pos = end;
            }
        }
        if pos != frame.len() {
            return None;
        }
        Some(Message {
            spec: self,
            frame,
            mti,
            present,
            spans: SmallVec::from_buf_and_len(spans, count),
        })
    }

    /// MTI and bitmaps: the common ASCII/hex and ASCII/binary headers directly, others
    /// through the general parsers. Returns where the first field starts.
    #[inline(always)]
    fn fast_header(&self, frame: &[u8]) -> Option<(Mti, Bitmap, usize)> {
        if self.mti != MtiEncoding::Ascii {
            let (input, mti) = mti(self, frame).ok()?;
            let (input, present) = bitmaps(self, input).ok()?;
            return Some((mti, present, frame.len() - input.len()));
        }
        let mti = Mti::new(frame.get(..4)?)?;
        let width = match self.bitmap {
            BitmapEncoding::Hex => 16,
            BitmapEncoding::Binary => 8,
        };
        let word = |at: usize| -> Option<u64> {
            let raw = frame.get(at..at + width)?;
            match self.bitmap {
                BitmapEncoding::Hex => wire::hex_u64(raw),
                BitmapEncoding::Binary => Some(u64::from_be_bytes(raw.try_into().ok()?)),
            }
        };
        let mut present = Bitmap([word(4)?, 0, 0]);
        let mut pos = 4 + width;
        if present.has(1) {
            present.0[1] = word(pos)?;
            present.clear(1);
            pos += width;
            if self.tertiary && present.has(65) {
                present.0[2] = word(pos)?;
                present.clear(65);
                pos += width;
            }
        }
        if present.0 == [0; 3] {
            return None;
        }
        Some((mti, present, pos))
    }

    /// One field at `pos`: its span and where the next field starts.
    #[inline(always)]
    fn fast_field(&self, frame: &[u8], pos: usize, n: u16) -> Option<(Span, usize)> {
        let plan = self.plan(n);
        match plan.kind {
            Kind::Plain => {
                let (start, units) = if plan.prefix == 0 {
                    (pos, plan.max as usize)
                } else {
                    let prefix = frame.get(pos..pos + usize::from(plan.prefix))?;
                    let units = ascii_number(prefix)?;
                    if units > plan.max as usize || units < plan.min as usize {
                        return None;
                    }
                    (pos + prefix.len(), units)
                };
                let end = start + units;
                let data = frame.get(start..end)?;
                if let Some(format) = plan.format {
                    if !wire::is_text(format, data) {
                        return None;
                    }
                }
                let span = Span {
                    start: start as u32, // ok: frames are bounded far below 4 GiB
                };
                Some((span, end))
            }
            Kind::General => {
                let (rest, span) = field(self, frame, frame.get(pos..)?, n, true).ok()?;
                Some((span, frame.len() - rest.len()))
            }
            Kind::Undefined => None,
        }
    }

    /// The careful pass: decodes with nom, field by field, and on failure names the field,
    /// the offset and the reason. Public for the fuzz targets, which check that it agrees
    /// with [`Spec::decode`].
    #[doc(hidden)]
    pub fn decode_careful<'a>(&'a self, frame: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        let error = |f: nom::Err<Fail<'_>>| match f {
            nom::Err::Error(f) | nom::Err::Failure(f) => DecodeError {
                place: f.place,
                offset: frame.len() - f.rest.len(),
                reason: f.reason,
            },
            // Complete parsers never ask for more input; treat it as a truncation anyway.
            nom::Err::Incomplete(_) => DecodeError {
                place: Place::Message,
                offset: frame.len(),
                reason: Reason::Truncated { need: 1, have: 0 },
            },
        };
        let (input, mti) = mti(self, frame).map_err(error)?;
        let (mut input, present) = bitmaps(self, input).map_err(error)?;
        // Built in place and returned once: the message is a few hundred bytes.
        let mut msg = Message {
            spec: self,
            frame,
            mti,
            present,
            spans: SmallVec::new(),
        };
        for n in present.iter() {
            let (rest, span) = field(self, frame, input, n, true).map_err(error)?;
            msg.spans.push(span);
            input = rest;
        }
        if !input.is_empty() {
            return Err(DecodeError {
                place: Place::Message,
                offset: frame.len() - input.len(),
                reason: Reason::TrailingBytes { count: input.len() },
            });
        }
        Ok(msg)
    }

    /// Decode as far as possible: fields with invalid content are left out, and on a
    /// structural error the fields before it are still returned, so that the switch can answer
    /// a malformed request with 39 = 30 and the STAN and terminal the requester matches on.
    pub fn decode_partial<'a>(
        &'a self,
        frame: &'a [u8],
    ) -> (Option<Message<'a>>, Option<DecodeError>) {
        let Ok((input, mti)) = mti(self, frame) else {
            return (None, self.decode(frame).err());
        };
        let Ok((mut input, present)) = bitmaps(self, input) else {
            return (None, self.decode(frame).err());
        };
        let mut msg = Message {
            spec: self,
            frame,
            mti,
            present: Bitmap::default(),
            spans: SmallVec::new(),
        };
        for n in present.iter() {
            // Boundaries first: a field with bad content but a sound length is skipped, so
            // the fields after it (STAN, terminal) are still read.
            match field(self, frame, input, n, false) {
                Ok((rest, span)) => {
                    if field(self, frame, input, n, true).is_ok() {
                        msg.spans.push(span);
                        msg.present.set(n);
                    }
                    input = rest;
                }
                Err(_) => return (Some(msg), self.decode(frame).err()),
            }
        }
        let error = (!input.is_empty()).then(|| DecodeError {
            place: Place::Message,
            offset: frame.len() - input.len(),
            reason: Reason::TrailingBytes { count: input.len() },
        });
        (Some(msg), error)
    }
}

fn mti<'a>(spec: &Spec, input: &'a [u8]) -> Res<'a, Mti> {
    let width = if spec.mti == MtiEncoding::Bcd { 2 } else { 4 };
    let (rest, raw) = take_nom(input, width, Place::Mti)?;
    let mut digits = [0u8; 4];
    let ok = match spec.mti {
        MtiEncoding::Ascii => {
            digits.copy_from_slice(raw);
            true
        }
        MtiEncoding::Ebcdic => {
            for (d, &b) in digits.iter_mut().zip(raw) {
                *d = b.wrapping_sub(0xF0).wrapping_add(b'0');
            }
            true
        }
        MtiEncoding::Bcd => {
            digits = [raw[0] >> 4, raw[0] & 0xF, raw[1] >> 4, raw[1] & 0xF].map(|n| n + b'0');
            raw.iter().all(|b| b >> 4 < 10 && b & 0xF < 10)
        }
    };
    match Mti::new(&digits) {
        Some(m) if ok => Ok((rest, m)),
        _ => fail(input, Place::Mti, Reason::InvalidMti),
    }
}

/// Primary bitmap, then the secondary when bit 1 says so, then the tertiary when the layout
/// uses bit 65 for it. Returns the data-field bits (indicator bits cleared).
fn bitmaps<'a>(spec: &Spec, input: &'a [u8]) -> Res<'a, Bitmap> {
    let mut map = Bitmap::default();
    let (mut input, primary) = one_bitmap(spec, input)?;
    map.0[0] = primary;
    if map.has(1) {
        let (rest, secondary) = one_bitmap(spec, input)?;
        map.0[1] = secondary;
        input = rest;
        map.clear(1);
        if spec.tertiary && map.has(65) {
            let (rest, tertiary) = one_bitmap(spec, input)?;
            map.0[2] = tertiary;
            input = rest;
            map.clear(65);
        }
    }
    if map.0 == [0; 3] {
        return fail(input, Place::Bitmap, Reason::EmptyBitmap);
    }
    Ok((input, map))
}

fn one_bitmap<'a>(spec: &Spec, input: &'a [u8]) -> Res<'a, u64> {
    match spec.bitmap {
        BitmapEncoding::Binary => {
            let (rest, raw) = take_nom(input, 8, Place::Bitmap)?;
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(raw);
            Ok((rest, u64::from_be_bytes(bytes)))
        }
        BitmapEncoding::Hex => {
            let (rest, raw) = take_nom(input, 16, Place::Bitmap)?;
            match wire::hex_u64(raw) {
                Some(value) => Ok((rest, value)),
                None => {
                    let i = raw
                        .iter()
                        .position(|&c| wire::hex_value(c).is_none())
                        .unwrap_or(0);
                    fail(
                        &input[i..],
                        Place::Bitmap,
                        Reason::InvalidHex { byte: raw[i] },
                    )
                }
            }
        }
    }
}

/// One field: prefix, bounds, content check. `input` is a suffix of `frame`.
#[inline]
fn field<'a>(spec: &Spec, frame: &'a [u8], input: &'a [u8], n: u16, check: bool) -> Res<'a, Span> {
    let place = Place::Field(n);
    let Some(codec) = spec.codec(n) else {
        return fail(input, place, Reason::UndefinedField);
    };
    let (data_start, units) = if codec.is_fixed() {
        (input, codec.max)
    } else {
        let (rest, raw) = take_part(input, codec.prefix_len(), place)?;
        let Ok(counted) = wire::read_prefix(codec, raw) else {
            return fail(input, place, Reason::BadLengthPrefix);
        };
        let Some(units) = codec.units_from_prefix(counted) else {
            return fail(input, place, Reason::BadLengthPrefix);
        };
        if units > codec.max {
            let reason = Reason::LengthExceedsMax {
                len: units,
                max: codec.max,
            };
            return fail(input, place, reason);
        }
        if units < codec.min {
            let reason = Reason::LengthBelowMin {
                len: units,
                min: codec.min,
            };
            return fail(input, place, reason);
        }
        (rest, units)
    };
    let (rest, data) = take_part(data_start, codec.wire_len(units), place)?;
    if check {
        if let Some((i, reason)) = check_content(codec, data, units) {
            return fail(&data_start[i..], place, reason);
        }
    }
    let start = frame.len() - data_start.len();
    Ok((
        rest,
        Span {
            start: start as u32, // ok: frames are bounded far below 4 GiB by the framing
        },
    ))
}

/// An ASCII decimal length prefix (at most six digits, so no overflow).
#[inline(always)]
fn ascii_number(digits: &[u8]) -> Option<usize> {
    digits.iter().try_fold(0usize, |acc, &b| {
        let d = b.wrapping_sub(b'0');
        (d < 10).then(|| acc * 10 + usize::from(d))
    })
}

/// Check a field's bytes; on failure, the index of the bad byte and the reason.
#[inline]
fn check_content(codec: &FieldCodec, data: &[u8], units: usize) -> Option<(usize, Reason)> {
    let invalid = |i: usize, byte: u8| {
        Some((
            i,
            Reason::InvalidByte {
                byte,
                format: codec.format,
            },
        ))
    };
    match codec.encoding {
        Encoding::Ascii => {
            let i = wire::check_text(codec.format, data)?;
            invalid(i, data[i])
        }
        Encoding::Ebcdic1047 | Encoding::Ebcdic500 => {
            let page = codec.encoding.code_page()?;
            let text: SmallVec<[u8; 128]> = data
                .iter()
                .map(|&b| wire::ebcdic_to_latin1(page, b))
                .collect();
            let i = wire::check_text(codec.format, &text)?;
            invalid(i, data[i])
        }
        Encoding::BcdLeft | Encoding::BcdRight => {
            let (skip, digits) = match codec.format {
                Format::XN => match data.split_first() {
                    Some((b'C' | b'D', digits)) => (1, digits),
                    _ => return invalid(0, data.first().copied().unwrap_or(0)),
                },
                _ => (0, data),
            };
            let i = wire::check_bcd(codec.encoding, codec.format, digits, units)?;
            Some((skip + i, Reason::InvalidBcd { byte: digits[i] }))
        }
        Encoding::Binary => None,
        Encoding::Hex => {
            let i = data.iter().position(|&c| wire::hex_value(c).is_none())?;
            Some((i, Reason::InvalidHex { byte: data[i] }))
        }
    }
}
