//! The hot-path form of a field definition, compiled once when a spec is loaded.
//!
//! Most fields of most layouts are "plain": one wire byte per unit (ASCII or raw binary data,
//! no sign character) behind either no length prefix or an ASCII decimal one. For those the
//! codec needs four numbers and a character class, not the whole [`FieldCodec`] with its
//! encoding matches, so the decoder and encoder read a [`Plan`] first and only fall back to
//! the general field code for everything else (BCD, EBCDIC, hex, `x+n`, padding).

use super::field::{Encoding, FieldCodec, Format, PrefixEncoding};

/// How the fast paths treat a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Kind {
    /// The layout does not define the field.
    #[default]
    Undefined,
    /// One wire byte per unit, fixed length or an ASCII decimal prefix counting those bytes.
    Plain,
    /// Anything else: handled by the general field code.
    General,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Plan {
    pub(crate) kind: Kind,
    /// ASCII prefix digits of a plain variable field; 0 when fixed.
    pub(crate) prefix: u8,
    /// Content class to check (`None` for binary data, which any byte may be).
    pub(crate) format: Option<Format>,
    /// Exact length of a fixed field, maximum of a variable one.
    pub(crate) max: u32,
    /// Minimum of a variable field.
    pub(crate) min: u32,
}

impl Plan {
    pub(crate) fn of(codec: Option<&FieldCodec>) -> Plan {
        let Some(c) = codec else {
            return Plan::default();
        };
        let one_byte_a_unit =
            matches!(c.encoding, Encoding::Ascii | Encoding::Binary) && c.format != Format::XN;
        let ascii_prefix = c.is_fixed() || c.prefix_encoding == PrefixEncoding::Ascii;
        // Lengths of shipped and sane layouts fit; a wider one simply takes the general path.
        let (Ok(max), Ok(min)) = (u32::try_from(c.max), u32::try_from(c.min)) else {
            return Plan {
                kind: Kind::General,
                ..Plan::default()
            };
        };
        let kind = if one_byte_a_unit && ascii_prefix {
            Kind::Plain
        } else {
            Kind::General
        };
        Plan {
            kind,
            prefix: c.prefix_digits,
            format: (c.encoding == Encoding::Ascii && c.format != Format::B).then_some(c.format),
            max,
            min,
        }
    }
}
