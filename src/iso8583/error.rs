//! Codec errors. A decode error always says where (MTI, bitmap or field number), at which byte
//! offset of the message, and why — and never carries field content, so it is safe to log.

use std::fmt;

use super::field::Format;

/// The part of the message an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Mti,
    Bitmap,
    Field(u16),
    /// The message as a whole (trailing bytes).
    Message,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Mti => f.write_str("MTI"),
            Place::Bitmap => f.write_str("bitmap"),
            Place::Field(n) => write!(f, "field {n}"),
            Place::Message => f.write_str("message"),
        }
    }
}

/// Why a message does not fit its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The message ends before the part does.
    Truncated {
        need: usize,
        have: usize,
    },
    /// The length prefix holds something other than a number.
    BadLengthPrefix,
    LengthExceedsMax {
        len: usize,
        max: usize,
    },
    LengthBelowMin {
        len: usize,
        min: usize,
    },
    /// A byte outside the field's character class.
    InvalidByte {
        byte: u8,
        format: Format,
    },
    /// A packed-BCD byte with a nibble that is not a digit (or a bad pad nibble).
    InvalidBcd {
        byte: u8,
    },
    /// A hex-encoded part with a character that is not a hex digit.
    InvalidHex {
        byte: u8,
    },
    /// The MTI is not four digits.
    InvalidMti,
    /// The bitmap has a bit for a field the layout does not define.
    UndefinedField,
    /// Bytes left over after the last field the bitmap announced.
    TrailingBytes {
        count: usize,
    },
    /// The bitmap has no data field at all.
    EmptyBitmap,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reason::Truncated { need, have } => {
                write!(f, "truncated: needs {need} bytes, {have} left")
            }
            Reason::BadLengthPrefix => f.write_str("length prefix is not a number"),
            Reason::LengthExceedsMax { len, max } => write!(f, "length {len} exceeds max {max}"),
            Reason::LengthBelowMin { len, min } => write!(f, "length {len} is below min {min}"),
            Reason::InvalidByte { byte, format } => {
                write!(f, "byte 0x{byte:02X} is not allowed in format {format}")
            }
            Reason::InvalidBcd { byte } => write!(f, "byte 0x{byte:02X} is not packed BCD"),
            Reason::InvalidHex { byte } => write!(f, "byte 0x{byte:02X} is not a hex digit"),
            Reason::InvalidMti => f.write_str("MTI is not four digits"),
            Reason::UndefinedField => f.write_str("bit set for a field the layout does not define"),
            Reason::TrailingBytes { count } => {
                write!(f, "{count} trailing bytes after the last field")
            }
            Reason::EmptyBitmap => f.write_str("no field present"),
        }
    }
}

/// A message that could not be decoded: `field 35: length 41 exceeds max 37 at offset 52`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {reason} at offset {offset}")]
pub struct DecodeError {
    pub place: Place,
    /// Byte offset in the message (framing excluded) where the problem is.
    pub offset: usize,
    pub reason: Reason,
}

impl DecodeError {
    /// A short stable label for metrics (`decode_errors{reason=...}`).
    pub fn label(&self) -> &'static str {
        match self.reason {
            Reason::Truncated { .. } => "truncated",
            Reason::BadLengthPrefix => "bad_length_prefix",
            Reason::LengthExceedsMax { .. } => "length_exceeds_max",
            Reason::LengthBelowMin { .. } => "length_below_min",
            Reason::InvalidByte { .. } | Reason::InvalidBcd { .. } | Reason::InvalidHex { .. } => {
                "invalid_byte"
            }
            Reason::InvalidMti => "invalid_mti",
            Reason::UndefinedField => "undefined_field",
            Reason::TrailingBytes { .. } => "trailing_bytes",
            Reason::EmptyBitmap => "empty_bitmap",
        }
    }
}

/// A message that cannot be encoded under a layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {reason}")]
pub struct EncodeError {
    pub place: Place,
    pub reason: EncodeReason,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeReason {
    #[error("not defined in the layout")]
    UndefinedField,
    #[error("value length {len} exceeds max {max}")]
    TooLong { len: usize, max: usize },
    #[error("value length {len} is below min {min}")]
    TooShort { len: usize, min: usize },
    #[error("value length {len} differs from the fixed length {fixed}")]
    WrongLength { len: usize, fixed: usize },
    #[error("character at index {index} is not allowed in format {format}")]
    InvalidChar { index: usize, format: Format },
    #[error("MTI must be four digits")]
    InvalidMti,
}
