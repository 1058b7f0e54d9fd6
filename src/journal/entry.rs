//! Journal entries: what happened, when, to which transaction, on which link, with the message
//! rendered masked (card numbers 6+4, track data masked, PIN block and chip data hidden). An
//! entry never holds card data in clear: it is rendered masked before it is stored.

use serde::{Deserialize, Serialize};

use crate::iso8583::json::masked_value;
use crate::iso8583::OwnedMessage;

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
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rrn: String,
    /// The masked message, or a description of the state change.
    pub text: String,
}

impl Entry {
    pub fn new(kind: EntryKind, txn: &str, link: &str, text: String) -> Entry {
        Entry {
            at_ms: chrono::Utc::now().timestamp_millis(),
            kind,
            txn: txn.to_string(),
            link: link.to_string(),
            rrn: String::new(),
            text,
        }
    }

    /// A message, masked.
    pub fn message(kind: EntryKind, txn: &str, link: &str, msg: &OwnedMessage) -> Entry {
        let mut e = Entry::new(kind, txn, link, masked(msg));
        if let Some(rrn) = msg.get(37) {
            e.rrn = String::from_utf8_lossy(rrn).trim().to_string();
        }
        e
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
            self.text
        )
    }
}

/// A journal record: the entries of one step.
pub fn record_bytes(entries: &[Entry]) -> Vec<u8> {
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_vec(entries).unwrap_or_default()
}

pub fn record_from_bytes(raw: &[u8]) -> Result<Vec<Entry>, String> {
    serde_json::from_slice(raw).map_err(|e| format!("corrupt journal record: {e}"))
}

/// `MTI n=value …` with card data masked and binary values as hex.
pub fn masked(msg: &OwnedMessage) -> String {
    let mut out = msg.mti().to_string();
    for (n, value) in msg.fields() {
        let shown = masked_value(n, value).unwrap_or_else(|| printable(value));
        out.push(' ');
        out.push_str(&n.to_string());
        out.push('=');
        out.push_str(&shown);
    }
    out
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

    #[test]
    fn card_data_is_masked_before_it_is_stored() {
        let mut m = OwnedMessage::new(Mti(*b"0200"));
        m.set(2, b"9410000000000013")
            .set(35, b"9410000000000013=29121010000000000")
            .set(52, &[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0])
            .set(37, b"123456789012");
        let e = Entry::message(EntryKind::In, "T1-1", "terminals", &m);
        let stored = String::from_utf8(record_bytes(std::slice::from_ref(&e))).unwrap();
        assert!(!stored.contains("9410000000000013"), "{stored}");
        assert!(stored.contains("941000******0013"), "{stored}");
        assert!(!stored.contains("123456789ABCDEF0"), "{stored}");
        assert!(!stored.contains("2912101"), "{stored}");
        assert_eq!(e.rrn, "123456789012");
        assert_eq!(record_from_bytes(stored.as_bytes()).unwrap(), vec![e]);
    }
}
