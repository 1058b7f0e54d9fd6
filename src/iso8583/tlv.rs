//! Structure inside fields: the switch's ASCII tag-length-value data in field 48 (SPEC §4.3),
//! BER-TLV (EMV data in DE 55), fixed-position subfields (DE 54 blocks, DE 90), checked when
//! they are read so that a bad inner structure is answered with a format error, not dropped.

use std::fmt;

use super::field::{SubfieldDef, Subfields};

/// A malformed inner structure: where (offset within the field) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at offset {offset} of the field")]
pub struct SubfieldError {
    pub offset: usize,
    pub reason: &'static str,
}

fn sub_err<T>(offset: usize, reason: &'static str) -> Result<T, SubfieldError> {
    Err(SubfieldError { offset, reason })
}

/// One element of an ASCII TLV field: `TT LLL value`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AsciiTlv<'a> {
    pub tag: &'a [u8],
    pub value: &'a [u8],
}

impl fmt::Debug for AsciiTlv<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}({} bytes)",
            String::from_utf8_lossy(self.tag),
            self.value.len()
        )
    }
}

/// Parse ASCII TLV elements (tag of `tag_len` characters, decimal length of `len_digits`).
pub fn parse_ascii_tlv(
    data: &[u8],
    tag_len: usize,
    len_digits: usize,
) -> Result<Vec<AsciiTlv<'_>>, SubfieldError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let head = tag_len + len_digits;
        let Some(header) = data.get(at..at + head) else {
            return sub_err(at, "element header truncated");
        };
        let (tag, len_text) = header.split_at(tag_len);
        let Some(len) = super::wire::parse_digits(len_text) else {
            return sub_err(at + tag_len, "element length is not a number");
        };
        let start = at + head;
        let Some(value) = data.get(start..start + len as usize) else {
            return sub_err(at, "element value runs past the end of the field");
        };
        out.push(AsciiTlv { tag, value });
        at = start + len as usize;
    }
    Ok(out)
}

/// Builds switch data for field 48: `TT LLL value` elements.
#[derive(Default, Debug, Clone)]
pub struct SwitchData {
    buf: Vec<u8>,
}

impl SwitchData {
    pub fn new() -> Self {
        SwitchData::default()
    }
    /// Append an element; values over 999 bytes are cut (the LLL cannot say more).
    pub fn push(&mut self, tag: &str, value: &[u8]) -> &mut Self {
        let value = &value[..value.len().min(999)];
        self.buf
            .extend_from_slice(&tag.as_bytes()[..2.min(tag.len())]);
        self.buf
            .extend_from_slice(format!("{:03}", value.len()).as_bytes());
        self.buf.extend_from_slice(value);
        self
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// One BER-TLV data object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BerTlv<'a> {
    /// The tag bytes (one to four).
    pub tag: &'a [u8],
    pub value: &'a [u8],
    /// Bit 6 of the first tag byte: the value holds further data objects.
    pub constructed: bool,
}

/// Parse a flat sequence of BER-TLV data objects (constructed values are not descended into;
/// parse their `value` again for that). Padding bytes 0x00 and 0xFF between objects are skipped,
/// as EMV allows.
pub fn parse_ber_tlv(data: &[u8]) -> Result<Vec<BerTlv<'_>>, SubfieldError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        if data[at] == 0x00 || data[at] == 0xFF {
            at += 1;
            continue;
        }
        let tag_start = at;
        let first = data[at];
        at += 1;
        if first & 0x1F == 0x1F {
            // Multi-byte tag: continuation bytes have bit 8 set.
            loop {
                let Some(&b) = data.get(at) else {
                    return sub_err(tag_start, "tag truncated");
                };
                at += 1;
                if at - tag_start > 4 {
                    return sub_err(tag_start, "tag longer than 4 bytes");
                }
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        let tag = &data[tag_start..at];
        let Some(&len_byte) = data.get(at) else {
            return sub_err(at, "length missing");
        };
        at += 1;
        let len = if len_byte < 0x80 {
            usize::from(len_byte)
        } else {
            let count = usize::from(len_byte & 0x7F);
            if count == 0 || count > 3 {
                return sub_err(at - 1, "unsupported length form");
            }
            let Some(bytes) = data.get(at..at + count) else {
                return sub_err(at, "length truncated");
            };
            at += count;
            bytes.iter().fold(0usize, |v, &b| v << 8 | usize::from(b))
        };
        let Some(value) = data.get(at..at + len) else {
            return sub_err(tag_start, "value runs past the end of the field");
        };
        at += len;
        out.push(BerTlv {
            tag,
            value,
            constructed: first & 0x20 != 0,
        });
    }
    Ok(out)
}

/// Split a field by fixed-position subfields (repeating the group when the layout says so).
pub fn split_fixed<'a>(
    data: &'a [u8],
    parts: &'a [SubfieldDef],
    repeat: bool,
) -> Result<Vec<(&'a str, &'a [u8])>, SubfieldError> {
    let group: usize = parts.iter().map(|p| p.length).sum();
    if group == 0
        || (repeat && !data.len().is_multiple_of(group))
        || (!repeat && data.len() < group)
    {
        return sub_err(0, "field length does not match its subfields");
    }
    let mut out = Vec::new();
    for chunk in data.chunks(group) {
        let mut at = 0;
        for p in parts {
            out.push((p.name.as_str(), &chunk[at..at + p.length]));
            at += p.length;
        }
        if !repeat {
            break;
        }
    }
    Ok(out)
}

/// Describe a field's subfields as (name, printable value) pairs, for the `decode` tool.
pub fn describe(
    subfields: &Subfields,
    value: &[u8],
) -> Result<Vec<(String, String)>, SubfieldError> {
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    Ok(match subfields {
        Subfields::None => Vec::new(),
        Subfields::Fixed { parts, repeat } => split_fixed(value, parts, *repeat)?
            .into_iter()
            .map(|(name, v)| (name.to_string(), text(v)))
            .collect(),
        Subfields::BerTlv => parse_ber_tlv(value)?
            .into_iter()
            .map(|t| {
                (
                    format!("tag {}", hex::encode_upper(t.tag)),
                    hex::encode_upper(t.value),
                )
            })
            .collect(),
        Subfields::AsciiTlv {
            tag_length,
            length_digits,
        } => parse_ascii_tlv(value, usize::from(*tag_length), usize::from(*length_digits))?
            .into_iter()
            .map(|t| (format!("tag {}", text(t.tag)), text(t.value)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_tlv_round_trip_and_errors() {
        let mut sd = SwitchData::new();
        sd.push("WS", b"W1,W2").push("PA", b"1");
        assert_eq!(sd.as_bytes(), b"WS005W1,W2PA0011");
        let els = parse_ascii_tlv(sd.as_bytes(), 2, 3).unwrap();
        assert_eq!(els[0].tag, b"WS");
        assert_eq!(els[1].value, b"1");
        assert_eq!(
            parse_ascii_tlv(b"WS009W1", 2, 3).unwrap_err().reason,
            "element value runs past the end of the field"
        );
        assert_eq!(parse_ascii_tlv(b"WSx01", 2, 3).unwrap_err().offset, 2);
    }

    #[test]
    fn ber_tlv_parses_emv_objects() {
        // 9F02 (amount, 6 bytes), 82 (AIP, 2 bytes), 70 constructed with long-form length.
        let mut data = hex::decode("9F02060000000100008202580070820003500141").unwrap();
        let objs = parse_ber_tlv(&data).unwrap();
        assert_eq!(objs.len(), 3);
        assert_eq!(objs[0].tag, &[0x9F, 0x02]);
        assert_eq!(objs[1].value, &[0x58, 0x00]);
        assert!(objs[2].constructed);
        assert_eq!(parse_ber_tlv(objs[2].value).unwrap()[0].value, b"A");
        data.truncate(5);
        assert!(parse_ber_tlv(&data).is_err());
    }
}
