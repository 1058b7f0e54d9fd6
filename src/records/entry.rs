//! Journal entries: what happened, when, to which transaction, on which link, and either the
//! message (masked: card numbers 6+4, track data masked, PIN block and chip data reduced to
//! their length) or a description of the state change. An entry never holds card data in
//! clear: a message is masked when the entry is made, before anything is stored.
//!
//! Stored form: a record (the entries of one step) is a version byte then the entries in
//! postcard (compact binary, varint integers), LZ4-compressed since the record repeats
//! itself (a leg's request copies the terminal's fields, its answer echoes them). A message is kept as its masked fields, not as
//! text: writing it costs a copy, and the text people read is rendered when it is read.
//! Records written as JSON by earlier versions are still read (see [`super::stored`]; new
//! variants of [`EntryKind`] and [`Body`] go at the end).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::iso8583::json::masked_value;
use crate::iso8583::{Message, OwnedMessage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A message received (from a terminal or an upstream link).
    In,
    /// A message sent.
    Out,
    /// A leg's state changed.
    Leg,
    /// A transaction's state changed.
    Txn,
    /// Store-and-forward: queued, acknowledged, expired.
    Saf,
    /// Start-up recovery acted.
    Recovery,
    /// A hosted-ledger posting.
    Ledger,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub kind: EntryKind,
    /// The transaction (terminal-STAN-transmission time), empty for link-level events.
    pub txn: String,
    /// Listener or upstream link.
    pub link: String,
    /// Retrieval reference number, when known (what `journal find --rrn` matches).
    pub rrn: String,
    pub body: Body,
}

/// What an entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A state change, described.
    Text(String),
    /// A message, masked.
    Message(MaskedMessage),
}

impl Entry {
    pub fn new(kind: EntryKind, txn: &str, link: &str, text: String) -> Entry {
        Entry::with_body(kind, txn, link, Body::Text(text))
    }

    fn with_body(kind: EntryKind, txn: &str, link: &str, body: Body) -> Entry {
        Entry {
            at_ms: chrono::Utc::now().timestamp_millis(),
            kind,
            txn: txn.to_string(),
            link: link.to_string(),
            rrn: String::new(),
            body,
        }
    }

    /// A message, masked.
    pub fn message(kind: EntryKind, txn: &str, link: &str, msg: &OwnedMessage) -> Entry {
        let e = Entry::with_body(kind, txn, link, Body::Message(MaskedMessage::of(msg)));
        e.with_rrn(msg.get(37))
    }

    /// As [`Entry::message`], for a decoded message.
    pub fn decoded(kind: EntryKind, txn: &str, link: &str, msg: &Message<'_>) -> Entry {
        let e = Entry::with_body(
            kind,
            txn,
            link,
            Body::Message(MaskedMessage::of_decoded(msg)),
        );
        e.with_rrn(msg.text(37).as_deref())
    }

    fn with_rrn(mut self, rrn: Option<&[u8]>) -> Entry {
        if let Some(rrn) = rrn {
            self.rrn = String::from_utf8_lossy(rrn).trim().to_string();
        }
        self
    }

    /// The masked message as `MTI n=value …`, or the state change's description.
    pub fn text(&self) -> String {
        match &self.body {
            Body::Text(t) => t.clone(),
            Body::Message(m) => m.render(),
        }
    }

    /// One line for people: sequence number (record.entry), time, kind, link, transaction,
    /// text.
    pub fn line(&self, seq: &str) -> String {
        let at = chrono::DateTime::from_timestamp_millis(self.at_ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_else(|| self.at_ms.to_string());
        format!(
            "{seq:>12} {at} {:<8} {:<10} {:<28} {}",
            format!("{:?}", self.kind).to_lowercase(),
            self.link,
            self.txn,
            self.text()
        )
    }
}

/// A journal record: the entries of one step, compressed (see [`super::stored`]).
pub fn record_bytes(entries: &[Entry]) -> Vec<u8> {
    super::stored::to_compressed_bytes(entries)
}

pub fn record_from_bytes(raw: &[u8]) -> Result<Vec<Entry>, String> {
    match super::stored::from_bytes(raw) {
        Some(parsed) => parsed.map_err(|e| format!("corrupt journal record: {e}")),
        None if raw.first() == Some(&b'[') => legacy_record(raw),
        None => Err("corrupt journal record: unknown format".into()),
    }
}

/// A record as earlier versions wrote it: JSON, messages already rendered as text.
fn legacy_record(raw: &[u8]) -> Result<Vec<Entry>, String> {
    #[derive(Deserialize)]
    struct Legacy {
        at_ms: i64,
        kind: EntryKind,
        txn: String,
        link: String,
        #[serde(default)]
        rrn: String,
        text: String,
    }
    let old: Vec<Legacy> =
        serde_json::from_slice(raw).map_err(|e| format!("corrupt journal record: {e}"))?;
    Ok(old
        .into_iter()
        .map(|l| Entry {
            at_ms: l.at_ms,
            kind: l.kind,
            txn: l.txn,
            link: l.link,
            rrn: l.rrn,
            body: Body::Text(l.text),
        })
        .collect())
}

/// A message with its card data masked, kept as fields: the MTI (4 bytes), then per field
/// its number (2 bytes, big-endian), its length (LEB128) and its value. Card-data fields hold
/// their masked text (see [`masked_value`]); nothing in it can be unmasked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedMessage(#[serde(with = "serde_bytes")] Vec<u8>);

impl MaskedMessage {
    pub fn of(msg: &OwnedMessage) -> MaskedMessage {
        let mut out = Vec::with_capacity(4 + msg.value_bytes() + 3 * msg.len());
        out.extend_from_slice(&msg.mti().0);
        for (n, value) in msg.fields() {
            put_field(&mut out, n, value);
        }
        MaskedMessage(out)
    }

    /// As [`MaskedMessage::of`], straight from a decoded message (a terminal's request is
    /// journaled as it arrives: no owned copy of it is made for that).
    pub fn of_decoded(msg: &Message<'_>) -> MaskedMessage {
        let mut out = Vec::with_capacity(4 + msg.frame().len() + 2 * 24);
        out.extend_from_slice(&msg.mti().0);
        for n in msg.field_numbers() {
            if let Some(f) = msg.field(n) {
                put_field(&mut out, n, &f.value());
            }
        }
        MaskedMessage(out)
    }

    /// `MTI n=value …`, binary values as hex. A damaged record renders as far as it reads.
    pub fn render(&self) -> String {
        let Some((mti, mut rest)) = self.0.split_first_chunk::<4>() else {
            return "<damaged message>".into();
        };
        let mut out = String::from_utf8_lossy(mti).into_owned();
        while !rest.is_empty() {
            let Some((n, value, tail)) = next_field(rest) else {
                out.push_str(" <damaged>");
                break;
            };
            let _ = write!(out, " {n}={}", printable(value));
            rest = tail;
        }
        out
    }
}

/// A field's number and its value, masked if it is card data.
fn put_field(out: &mut Vec<u8>, n: u16, value: &[u8]) {
    out.extend_from_slice(&n.to_be_bytes());
    match masked_value(n, value) {
        Some(masked) => put_value(out, masked.as_bytes()),
        None => put_value(out, value),
    }
}

fn put_value(out: &mut Vec<u8>, value: &[u8]) {
    let mut len = value.len();
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(value);
}

/// One field off the front of a masked message's fields: number, value, the rest.
fn next_field(raw: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let (n, mut rest) = raw.split_first_chunk::<2>()?;
    let mut len = 0usize;
    for shift in (0..32).step_by(7) {
        let (&b, tail) = rest.split_first()?;
        rest = tail;
        len |= usize::from(b & 0x7f) << shift;
        if b < 0x80 {
            return (len <= rest.len())
                .then(|| (u16::from_be_bytes(*n), &rest[..len], &rest[len..]));
        }
    }
    None
}

fn printable(value: &[u8]) -> String {
    if value.iter().all(|b| (0x20..0x7f).contains(b)) {
        String::from_utf8_lossy(value).into_owned()
    } else {
        format!("0x{}", hex::encode_upper(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::Mti;

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn card_data_is_masked_before_it_is_stored() {
        let pin_block = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0];
        let mut m = OwnedMessage::new(Mti(*b"0200"));
        m.set(2, b"9410000000000013")
            .set(4, b"000000010000")
            .set(35, b"9410000000000013=29121010000000000")
            .set(52, &pin_block)
            .set(37, b"123456789012");
        let e = Entry::message(EntryKind::In, "T1-1", "terminals", &m);
        // What is compressed: compression must not be what hides the card number.
        let stored = super::super::stored::to_bytes(std::slice::from_ref(&e));
        assert!(!contains(&stored, b"9410000000000013"));
        assert!(!contains(&stored, &pin_block));
        assert!(!contains(&stored, b"2912101"));
        assert!(contains(&stored, b"941000******0013"));
        assert_eq!(e.rrn, "123456789012");
        assert_eq!(record_from_bytes(&stored).unwrap(), vec![e.clone()]);
        let compressed = record_bytes(std::slice::from_ref(&e));
        assert_eq!(record_from_bytes(&compressed).unwrap(), vec![e.clone()]);
        let text = e.text();
        assert!(
            text.starts_with("0200 2=941000******0013 4=000000010000 "),
            "{text}"
        );
        assert!(text.contains("52=<8 bytes hidden>"), "{text}");
        assert!(!text.contains("123456789ABCDEF0"), "{text}");
    }

    #[test]
    fn a_decoded_message_is_masked_as_its_owned_copy_is() {
        for spec in ["iso87-ascii", "iso87-bcd"] {
            let spec = crate::iso8583::Spec::resolve(spec).unwrap();
            let mut m = OwnedMessage::new(Mti(*b"0200"));
            m.set(2, b"9410000000000013")
                .set(3, b"000000")
                .set(4, b"000000010000")
                .set(11, b"000042")
                .set(35, b"9410000000000013=29121010000000000")
                .set(37, b"123456789012")
                .set(41, b"TERM0001");
            let frame = spec.encode_to_vec(&m).unwrap();
            let decoded = spec.decode(&frame).unwrap();
            let from_decoded = Entry::decoded(EntryKind::In, "t", "l", &decoded);
            let from_owned = Entry::message(EntryKind::In, "t", "l", &decoded.to_owned_message());
            assert_eq!(from_decoded.body, from_owned.body);
            assert_eq!(from_decoded.rrn, "123456789012");
            assert!(from_decoded.text().contains("2=941000******0013"));
        }
    }

    #[test]
    fn binary_values_render_as_hex_and_long_values_keep_their_length() {
        let long = vec![b'x'; 300];
        let mut m = OwnedMessage::new(Mti(*b"0110"));
        m.set(48, &long).set(64, &[0, 1, 0xfe, 0xff]);
        let text = MaskedMessage::of(&m).render();
        assert_eq!(text, format!("0110 48={} 64=0x0001FEFF", "x".repeat(300)));
    }

    #[test]
    fn records_written_as_json_are_still_read() {
        let old = br#"[{"at_ms":5,"kind":"in","txn":"T|000001|0000000001","link":"terminals","text":"0200 3=000000"}]"#;
        let entries = record_from_bytes(old).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].text(), "0200 3=000000");
        assert_eq!(entries[0].rrn, "");
    }

    #[test]
    fn damaged_records_are_errors_and_damaged_messages_render() {
        let mut m = OwnedMessage::new(Mti(*b"0200"));
        m.set(3, b"000000").set(11, b"000001");
        let e = Entry::message(EntryKind::Out, "t", "l", &m);
        let stored = record_bytes(&[e.clone(), e]);
        for cut in 0..stored.len() {
            // Never a panic; a cut record is an error (or, cut at an entry boundary, fewer
            // entries).
            let _ = record_from_bytes(&stored[..cut]);
        }
        assert!(record_from_bytes(b"").is_err());
        assert!(record_from_bytes(&[9, 1, 2]).is_err());
        let full = MaskedMessage::of(&m);
        for cut in 0..full.0.len() {
            let _ = MaskedMessage(full.0[..cut].to_vec()).render();
        }
        assert_eq!(
            MaskedMessage(full.0[..full.0.len() - 1].to_vec()).render(),
            "0200 3=000000 <damaged>"
        );
    }
}
