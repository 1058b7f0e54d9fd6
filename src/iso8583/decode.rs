//! Decoding: MTI → bitmaps → each present field in number order, with nom parsers over the
//! message bytes. Every field is checked against its definition (prefix, length bounds,
//! character class or BCD/hex validity) and recorded as a span of the frame: nothing is copied.

use nom::bytes::complete::take;
use nom::error::{ErrorKind, ParseError};
use nom::{IResult, Parser};
use smallvec::SmallVec;

use super::error::{DecodeError, Place, Reason};
use super::message::{Bitmap, Message, Mti, Span};
use super::spec::{BitmapEncoding, Encoding, FieldCodec, Format, MtiEncoding, PrefixCounts, Spec};
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

impl Spec {
    /// Decode one message (framing already removed).
    pub fn decode<'a>(&'a self, frame: &'a [u8]) -> Result<Message<'a>, DecodeError> {
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
        // Set bits, most significant first: field numbers in ascending order.
        for (w, &word) in present.0.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let lz = bits.leading_zeros();
                bits &= !(1u64 << 63 >> lz);
                let n = (w as u16) * 64 + lz as u16 + 1; // ok: w < 3, lz < 64
                let (rest, span) = field(self, frame, input, n, true).map_err(error)?;
                msg.spans.push(span);
                input = rest;
            }
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
            let mut value = 0u64;
            for (i, &c) in raw.iter().enumerate() {
                match wire::hex_value(c) {
                    Some(v) => value = value << 4 | u64::from(v),
                    None => {
                        return fail(&input[i..], Place::Bitmap, Reason::InvalidHex { byte: c })
                    }
                }
            }
            Ok((rest, value))
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
        let Some(units) = units_from_prefix(codec, counted) else {
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
            units: units as u32,
        },
    ))
}

/// The value's length in units from what the prefix counted.
#[inline]
fn units_from_prefix(codec: &FieldCodec, counted: usize) -> Option<usize> {
    match codec.prefix_counts {
        PrefixCounts::Units => Some(counted),
        PrefixCounts::WireBytes => match codec.encoding {
            Encoding::Hex => counted.is_multiple_of(2).then_some(counted / 2),
            // The spec loader refuses wire-byte counts for BCD, so this is one byte a unit.
            _ => counted.checked_sub(usize::from(codec.format == Format::XN)),
        },
    }
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
