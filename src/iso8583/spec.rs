//! Message layouts as data: the spec file model and its validation, compiled into a [`Spec`].
//!
//! A spec file (TOML, see `specs/README.md`) is read into [`SpecFile`], checked field by field, and
//! handed to [`Spec`]'s constructor, which builds the tables the codec runs on. The words of a
//! layout live in `field.rs` and the compiled type in `layout.rs`; they are re-exported here
//! so that `iso8583::spec` stays the one place to name them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use super::field::{
    BitmapEncoding, CodePage, Encoding, FieldCodec, FieldDef, Format, MtiEncoding, Pad,
    PrefixCounts, PrefixEncoding, SubfieldDef, Subfields, MAX_FIELD,
};
use super::layout::Header;
pub use super::layout::Spec;

/// Largest length prefix: LLLLLL.
const MAX_PREFIX_DIGITS: u8 = 6;

// Loading lives here, not beside the type in `layout.rs`, so that the compiled layout the codec
// runs on does not depend on the file format.
impl Spec {
    /// Load a spec file from disk.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: path.to_path_buf(),
            field: None,
            reason: format!("cannot read: {e}"),
        })?;
        Spec::from_toml(&text, path)
    }

    /// Parse and validate a spec from TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Spec, SpecError> {
        let file: SpecFile = toml::from_str(text).map_err(|e| SpecError {
            file: origin.to_path_buf(),
            field: None,
            reason: e.to_string().trim_end().to_string(),
        })?;
        file.compile(origin)
    }

    /// Find a spec by name (the file stem under `specs/`) or by path.
    ///
    /// A name is looked up in `$CYBERSWITCH_SPECS`, then `./specs`, then the `specs/` folder of
    /// the source tree this binary was built from.
    pub fn resolve(name_or_path: &str) -> Result<Spec, SpecError> {
        Spec::load(&resolve_path(name_or_path))
    }
}

/// The file a spec name or path refers to.
pub fn resolve_path(name_or_path: &str) -> PathBuf {
    let as_path = Path::new(name_or_path);
    if name_or_path.ends_with(".toml") || as_path.components().count() > 1 {
        return as_path.to_path_buf();
    }
    let file = format!("{name_or_path}.toml");
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = std::env::var("CYBERSWITCH_SPECS") {
        dirs.push(PathBuf::from(dir));
    }
    dirs.push(PathBuf::from("specs"));
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("specs"));
    dirs.iter()
        .map(|d| d.join(&file))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("specs").join(file))
}

/// A spec that cannot be used: which file, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub file: PathBuf,
    pub field: Option<u16>,
    pub reason: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(n) => write!(f, "{}: field {n}: {}", self.file.display(), self.reason),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

// ---- The file format -------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: String,
    #[serde(default)]
    description: String,
    mti: MtiSection,
    bitmap: BitmapSection,
    #[serde(default)]
    defaults: Defaults,
    fields: BTreeMap<String, FieldFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MtiSection {
    encoding: MtiEncoding,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BitmapSection {
    encoding: BitmapEncoding,
    #[serde(default)]
    tertiary: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    #[serde(default = "ascii")]
    numeric: Encoding,
    #[serde(default = "ascii")]
    text: Encoding,
    #[serde(default = "hex")]
    binary: Encoding,
    /// Encoding of `z` fields; defaults to `numeric`.
    track2: Option<Encoding>,
    #[serde(default = "ascii_prefix")]
    prefix: PrefixEncoding,
    #[serde(default)]
    prefix_counts: PrefixCounts,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            numeric: Encoding::Ascii,
            text: Encoding::Ascii,
            binary: Encoding::Hex,
            track2: None,
            prefix: PrefixEncoding::Ascii,
            prefix_counts: PrefixCounts::Units,
        }
    }
}

fn ascii() -> Encoding {
    Encoding::Ascii
}
fn hex() -> Encoding {
    Encoding::Hex
}
fn ascii_prefix() -> PrefixEncoding {
    PrefixEncoding::Ascii
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    name: String,
    format: Format,
    /// Exact length of a fixed field.
    length: Option<usize>,
    /// Maximum length of a variable field.
    max: Option<usize>,
    /// Minimum length of a variable field.
    min: Option<usize>,
    /// `L` … `LLLLLL`; absent for a fixed field.
    prefix: Option<String>,
    prefix_encoding: Option<PrefixEncoding>,
    prefix_counts: Option<PrefixCounts>,
    encoding: Option<Encoding>,
    /// `left`, `right` or `none`.
    pad: Option<String>,
    /// The padding character (one character).
    pad_char: Option<String>,
    subfields: Option<Vec<SubfieldDef>>,
    #[serde(default)]
    repeat: bool,
    tlv: Option<TlvFile>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
enum TlvFile {
    #[serde(rename = "ber")]
    Ber,
    #[serde(rename = "ascii")]
    Ascii { tag_length: u8, length_digits: u8 },
}

impl SpecFile {
    fn compile(self, origin: &Path) -> Result<Spec, SpecError> {
        let err = |field: Option<u16>, reason: String| SpecError {
            file: origin.to_path_buf(),
            field,
            reason,
        };
        if self.mti.encoding == MtiEncoding::Bcd && self.bitmap.encoding == BitmapEncoding::Hex {
            // Not wrong in itself, but no network mixes them; more likely a typo.
            tracing::debug!(spec = %self.name, "BCD MTI with a hex bitmap");
        }
        let max_field = if self.bitmap.tertiary { MAX_FIELD } else { 128 };
        let mut fields = BTreeMap::new();
        for (key, file) in self.fields {
            let number: u16 = key
                .parse()
                .map_err(|_| err(None, format!("field key {key:?} is not a field number")))?;
            let def = compile_field(number, file, &self.defaults, max_field)
                .map_err(|reason| err(Some(number), reason))?;
            if self.bitmap.tertiary && number == 65 {
                return Err(err(
                    Some(65),
                    "bit 65 announces the tertiary bitmap in this layout; it cannot be a data field"
                        .into(),
                ));
            }
            fields.insert(number, def);
        }
        let header = Header {
            name: self.name,
            description: self.description,
            mti: self.mti.encoding,
            bitmap: self.bitmap.encoding,
            tertiary: self.bitmap.tertiary,
        };
        Ok(Spec::compiled(header, fields))
    }
}

fn compile_field(
    number: u16,
    file: FieldFile,
    defaults: &Defaults,
    max_field: u16,
) -> Result<FieldDef, String> {
    if number < 2 || number > max_field {
        return Err(format!(
            "field numbers run from 2 to {max_field} (1 is the secondary bitmap)"
        ));
    }
    let format = file.format;
    let encoding = file.encoding.unwrap_or(match format {
        Format::N | Format::XN => defaults.numeric,
        Format::Z => defaults.track2.unwrap_or(defaults.numeric),
        Format::A | Format::An | Format::Ans => defaults.text,
        Format::B => defaults.binary,
    });
    check_encoding(format, encoding)?;

    let prefix_digits = match file.prefix.as_deref() {
        None | Some("") | Some("fixed") => 0,
        Some(p) if p.bytes().all(|b| b == b'L') && p.len() <= usize::from(MAX_PREFIX_DIGITS) => {
            p.len() as u8 // ok: at most 6
        }
        Some(p) => return Err(format!("prefix {p:?} must be L, LL, … LLLLLL or fixed")),
    };
    let (max, min) = match (prefix_digits, file.length, file.max) {
        (0, Some(len), None) => (len, len),
        (0, _, _) => return Err("a fixed field needs `length` (and no `max`)".into()),
        (_, None, Some(max)) => (max, file.min.unwrap_or(0)),
        (_, _, _) => return Err("a variable field needs `max` (and no `length`)".into()),
    };
    if max == 0 {
        return Err("length must be at least 1".into());
    }
    if min > max {
        return Err(format!("min {min} exceeds max {max}"));
    }
    let codec = FieldCodec {
        format,
        encoding,
        prefix_digits,
        prefix_encoding: file.prefix_encoding.unwrap_or(defaults.prefix),
        prefix_counts: file.prefix_counts.unwrap_or(defaults.prefix_counts),
        max,
        min,
        pad: compile_pad(format, prefix_digits, file.pad.as_deref(), file.pad_char)?,
    };
    if prefix_digits > 0 {
        let counted = match codec.prefix_counts {
            PrefixCounts::Units => max,
            PrefixCounts::WireBytes => codec.wire_len(max),
        };
        if counted > codec.prefix_capacity() {
            return Err(format!(
                "max {max} does not fit a {}-digit {:?} length prefix",
                prefix_digits, codec.prefix_encoding
            ));
        }
        if codec.prefix_counts == PrefixCounts::WireBytes && codec.encoding.is_bcd() {
            // A byte count cannot say whether an odd digit count was padded.
            return Err("prefix_counts = \"wire-bytes\" is ambiguous for BCD data".into());
        }
    }
    let subfields = compile_subfields(&codec, file.subfields, file.repeat, file.tlv)?;
    Ok(FieldDef {
        number,
        name: file.name,
        codec,
        subfields,
    })
}

fn check_encoding(format: Format, encoding: Encoding) -> Result<(), String> {
    let ok = match format {
        Format::B => matches!(encoding, Encoding::Binary | Encoding::Hex),
        Format::N | Format::Z | Format::XN => !matches!(encoding, Encoding::Binary | Encoding::Hex),
        Format::A | Format::An | Format::Ans => !matches!(
            encoding,
            Encoding::Binary | Encoding::Hex | Encoding::BcdLeft | Encoding::BcdRight
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "encoding {encoding} cannot carry format {format} (b takes binary or hex; n, z, x+n \
             take ascii, ebcdic or bcd; a, an, ans take ascii or ebcdic)"
        ))
    }
}

fn compile_pad(
    format: Format,
    prefix_digits: u8,
    pad: Option<&str>,
    pad_char: Option<String>,
) -> Result<Pad, String> {
    let default_char = match format {
        Format::N => b'0',
        Format::B => 0,
        _ => b' ',
    };
    let ch = match pad_char {
        None => default_char,
        Some(s) if s.len() == 1 => s.as_bytes()[0],
        Some(s) => return Err(format!("pad_char {s:?} must be one character")),
    };
    match pad {
        _ if prefix_digits > 0 => Ok(Pad::None),
        None => Ok(match format {
            Format::N => Pad::Left(ch),
            Format::A | Format::An | Format::Ans => Pad::Right(ch),
            Format::B | Format::Z | Format::XN => Pad::None,
        }),
        Some("left") => Ok(Pad::Left(ch)),
        Some("right") => Ok(Pad::Right(ch)),
        Some("none") => Ok(Pad::None),
        Some(other) => Err(format!("pad {other:?} must be left, right or none")),
    }
}

fn compile_subfields(
    codec: &FieldCodec,
    parts: Option<Vec<SubfieldDef>>,
    repeat: bool,
    tlv: Option<TlvFile>,
) -> Result<Subfields, String> {
    match (parts, tlv) {
        (Some(_), Some(_)) => Err("a field has either `subfields` or `tlv`, not both".into()),
        (None, None) if repeat => Err("`repeat` needs `subfields`".into()),
        (None, None) => Ok(Subfields::None),
        (Some(parts), None) => {
            if parts.is_empty() {
                return Err("`subfields` is empty".into());
            }
            if let Some(p) = parts.iter().find(|p| p.length == 0) {
                return Err(format!("subfield {:?} has length 0", p.name));
            }
            let total: usize = parts.iter().map(|p| p.length).sum();
            if codec.is_fixed() && !repeat && total != codec.max {
                return Err(format!(
                    "subfield lengths add up to {total}, the field is {}",
                    codec.max
                ));
            }
            if total > codec.max {
                return Err(format!(
                    "subfield lengths add up to {total}, more than the field's {}",
                    codec.max
                ));
            }
            Ok(Subfields::Fixed { parts, repeat })
        }
        (None, Some(TlvFile::Ber)) => {
            if codec.format != Format::B {
                return Err("BER-TLV subfields need a binary (b) field".into());
            }
            Ok(Subfields::BerTlv)
        }
        (
            None,
            Some(TlvFile::Ascii {
                tag_length,
                length_digits,
            }),
        ) => {
            if codec.format == Format::B {
                return Err("ASCII TLV subfields need a character field".into());
            }
            if !(1..=4).contains(&tag_length) || !(1..=4).contains(&length_digits) {
                return Err("ASCII TLV needs tag_length and length_digits from 1 to 4".into());
            }
            Ok(Subfields::AsciiTlv {
                tag_length,
                length_digits,
            })
        }
    }
}
