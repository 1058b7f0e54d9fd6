//! Shared bodies of the fuzz targets: each target names a spec or a framing and calls these.

use std::sync::OnceLock;

use bytes::BytesMut;
use cyberswitch::iso8583::json::to_json;
use cyberswitch::iso8583::Spec;
use cyberswitch::net::framing::{FrameCodec, Framing};
use tokio_util::codec::{Decoder, Encoder};

/// Decode arbitrary bytes under a spec. Whatever decodes must survive every accessor, re-encode,
/// and decode again to the same fields.
pub fn decode(spec: &'static OnceLock<Spec>, name: &str, data: &[u8]) {
    let spec = spec.get_or_init(|| Spec::resolve(name).expect("shipped spec loads"));
    decode_under(spec, data);
}

/// A spec file an operator wrote, then a message under it: the input is the file's text, a NUL
/// byte, and the message's bytes. Whatever the text, loading it gives a spec or an error naming
/// the file; a spec that loads must decode (or refuse) anything as safely as a shipped one.
pub fn spec_file(data: &[u8]) {
    let (text, message) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let origin = std::path::Path::new("fuzzed-spec.toml");
    match Spec::from_toml(text, origin) {
        Ok(spec) => decode_under(&spec, message),
        Err(e) => assert!(e.to_string().contains("fuzzed-spec.toml"), "{e}"),
    }
}

/// A configuration file: loading it gives a configuration or an error naming the file.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin = std::path::Path::new("fuzzed-config.toml");
    if let Err(e) = cyberswitch::config::Config::from_toml(text, origin) {
        assert!(e.to_string().contains("fuzzed-config.toml"), "{e}");
    }
}

fn decode_under(spec: &Spec, data: &[u8]) {
    // `decode` falls back to the careful pass on anything its fast pass refuses, so the two
    // agree if the careful pass accepts everything the fast pass does, with the same fields.
    let Ok(msg) = spec.decode(data) else { return };
    let careful = spec
        .decode_careful(data)
        .expect("careful pass accepts what the fast pass accepts");
    assert_eq!(careful.to_owned_message(), msg.to_owned_message());
    let _ = to_json(&msg, true);
    let _ = msg.pan();
    let _ = msg.switch_data();
    let _ = msg.additional_amounts();
    let _ = msg.original_data();
    let _ = (msg.amount(), msg.stan(), msg.rrn(), msg.processing_code());
    let owned = msg.to_owned_message();
    let again = spec
        .encode_to_vec(&owned)
        .expect("a decoded message re-encodes");
    let back = spec.decode(&again).expect("a re-encoded message decodes");
    assert_eq!(back.to_owned_message(), owned);
}

/// Frame arbitrary bytes with a delimiter; the first input byte picks the options and how the
/// stream is cut into reads. Every frame must re-encode to a frame that decodes the same.
pub fn frames(delimiter: &str, data: &[u8]) {
    let Some((&opts, stream)) = data.split_first() else {
        return;
    };
    let mut spec = delimiter.to_string();
    if opts & 1 != 0 && delimiter != "stx-etx" {
        spec.push_str("+self");
    }
    if opts & 2 != 0 {
        spec.push_str("+tpdu");
    }
    if opts & 4 != 0 {
        spec.push_str("+header=3");
    }
    if opts & 8 != 0 && delimiter == "stx-etx" {
        spec.push_str("+lrc");
    }
    let framing: Framing = spec.parse().expect("valid framing");
    let max = 64 + usize::from(opts >> 4) * 64;
    let mut codec = FrameCodec::new(framing, max);
    let chunk = 1 + usize::from(opts >> 5);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.message.len() <= max);
                    let mut out = BytesMut::new();
                    codec
                        .encode(frame.clone(), &mut out)
                        .expect("a decoded frame re-encodes");
                    let again = codec.decode(&mut out).expect("re-encoded frame decodes");
                    assert_eq!(again, Some(frame));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // A peer cannot make the buffer grow past one maximum frame plus framing overhead.
        assert!(buf.capacity() <= (max + 16).max(8 * 1024) * 2);
    }
}

/// Field 48 as a terminal sends it (SPEC §4.3), after one byte of options: bit 0 adds a
/// field 90 (from the last 42 bytes when there are that many), bit 1 makes it a refund. The
/// elements must rebuild to the same bytes; whatever the switch reads in them (tender,
/// refund reference) must read without a panic, through a message as the switch gets it.
pub fn switch_data(data: &[u8]) {
    use cyberswitch::iso8583::tags;
    use cyberswitch::iso8583::tlv::{parse_ascii_tlv, SwitchData};
    use cyberswitch::iso8583::{Mti, OwnedMessage};

    static SPEC: OnceLock<Spec> = OnceLock::new();
    let spec = SPEC.get_or_init(|| Spec::resolve("iso87-ascii").expect("shipped spec loads"));
    let Some((&opts, field48)) = data.split_first() else {
        return;
    };
    if let Ok(elements) = parse_ascii_tlv(field48, 2, 3) {
        // Every element is `TT LLL value` with a three-digit length: rebuilt, the bytes are
        // the same (when the tags are text, as SwitchData takes them).
        let mut rebuilt = SwitchData::new();
        let mut text_tags = true;
        for e in &elements {
            match std::str::from_utf8(e.tag) {
                Ok(tag) if tag.len() == 2 => {
                    rebuilt.push(tag, e.value);
                }
                _ => text_tags = false,
            }
        }
        if text_tags {
            assert_eq!(
                rebuilt.as_bytes(),
                field48,
                "elements rebuild to other bytes"
            );
        }
    }
    let mut m = OwnedMessage::new(Mti::new(b"0200").expect("a valid MTI"));
    m.set(2, b"9420001234567890")
        .set(3, if opts & 2 != 0 { b"200000" } else { b"000000" })
        .set(4, b"000000010000")
        .set(7, b"1206120000")
        .set(11, b"000001")
        .set(41, b"TERM0001")
        .set(48, field48);
    if opts & 1 != 0 {
        let tail = &field48[field48.len().saturating_sub(42)..];
        m.set(90, tail);
    }
    // A value the layout cannot carry never reaches the switch.
    let Ok(wire) = spec.encode_to_vec(&m) else {
        return;
    };
    let Ok(msg) = spec.decode(&wire) else {
        return;
    };
    let _ = msg.switch_data();
    if let Ok(t) = tags::tender(&msg) {
        if let Some(selection) = &t.selection {
            assert!(selection.iter().all(|w| !w.is_empty() && w.trim() == w));
        }
    }
    if let Ok(tags::Reference::Approval { code, date }) = tags::reference(&msg) {
        assert!(!code.is_empty() && code.len() <= 6 && date.len() == 6);
    }
}

/// A record as the switch's database holds it, after one byte choosing which: a transaction
/// record (any version), a journal record, a store-and-forward item, or a sealed leg request
/// once opened. Reading it gives a value or an error, never a panic; a value written again
/// reads back the same.
pub fn stored_records(data: &[u8]) {
    use cyberswitch::iso8583::OwnedMessage;
    use cyberswitch::records::{entry, saf, txn};

    let Some((&kind, raw)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => {
            let _ = txn::ended_at_ms(raw);
            let Ok(record) = txn::TxnRecord::from_bytes(raw) else {
                return;
            };
            let _ = (record.approved(), record.is_refundable_purchase());
            for leg in &record.legs {
                assert!(leg.refundable() <= leg.amount);
                let _ = leg.state.may_hold_money();
            }
            let again = txn::TxnRecord::from_bytes(&record.to_bytes())
                .expect("a record written reads back");
            assert_eq!(format!("{again:?}"), format!("{record:?}"));
        }
        1 => {
            let Ok(entries) = entry::record_from_bytes(raw) else {
                return;
            };
            for (i, e) in entries.iter().enumerate() {
                let _ = e.line(&format!("1.{i}"));
            }
            let again = entry::record_from_bytes(&entry::record_bytes(&entries))
                .expect("a journal record written reads back");
            assert_eq!(again, entries);
        }
        2 => {
            let Ok(item) = saf::Item::from_bytes(raw) else {
                return;
            };
            let _ = item.kind();
            let again =
                saf::Item::from_bytes(&saf::to_bytes(&item)).expect("an item written reads back");
            assert_eq!(format!("{again:?}"), format!("{item:?}"));
            // What the queue opens (the seal itself needs the key): a packed leg request.
            if let Ok(sealed) = hex::decode(&item.sealed) {
                leg_request(&sealed);
            }
        }
        _ => leg_request(raw),
    }

    fn leg_request(raw: &[u8]) {
        let Ok(m) = OwnedMessage::unpack(raw) else {
            return;
        };
        let again = OwnedMessage::unpack(&m.pack()).expect("a packed request unpacks");
        assert_eq!(again, m);
        let _ = m.fields().count();
    }
}

/// A request to the admin API, after one byte choosing the route: its JSON body (or, for
/// searches and statements, its query string) read by the same extractor the route uses, then
/// every check the route makes before it touches the switch. A body is taken or refused with
/// a message, never a panic.
pub fn admin_bodies(data: &[u8]) {
    use axum::extract::Query;
    use axum::http::Uri;
    use axum::Json;
    use cyberswitch::admin_bodies as b;
    use serde::de::DeserializeOwned;

    fn body<T: DeserializeOwned>(raw: &[u8]) -> Option<T> {
        match Json::<T>::from_bytes(raw) {
            Ok(Json(v)) => Some(v),
            Err(e) => {
                // What the API answers with (400 and this text).
                let _ = e.body_text();
                None
            }
        }
    }
    fn query<T: DeserializeOwned>(raw: &[u8]) -> Option<T> {
        let q = std::str::from_utf8(raw).ok()?;
        let uri: Uri = format!("/v1/transactions?{q}").parse().ok()?;
        match Query::<T>::try_from_uri(&uri) {
            Ok(Query(v)) => Some(v),
            Err(e) => {
                let _ = e.body_text();
                None
            }
        }
    }
    fn card(number: &str) {
        if let Ok(pan) = b::card_number(number) {
            // What the API answers and logs: never the number in clear.
            assert_ne!(pan.masked(), pan.expose());
            assert_ne!(pan.to_string(), pan.expose());
        }
    }
    fn pin(p: &Option<String>) {
        if let Some(p) = p {
            let _ = cyberswitch::pin::ClearPin::new(p);
        }
    }

    let Some((&route, raw)) = data.split_first() else {
        return;
    };
    match route % 13 {
        0 => {
            if let Some(l) = body::<b::LinkBody>(raw) {
                card(&l.card_number);
                if let Ok(account) = l.account() {
                    assert!(!account.is_empty());
                }
            }
        }
        1 => {
            if let Some(l) = body::<b::LinkKey>(raw) {
                card(&l.card_number);
            }
        }
        2 => {
            if let Some(c) = body::<b::CardNumber>(raw) {
                card(&c.card_number);
            }
        }
        3 => {
            if let Some(r) = body::<b::IssueRequest>(raw) {
                card(&r.card_number);
                assert!(r.owner.is_none(), "the owner is never the caller's to say");
            }
        }
        4 => {
            if let Some(a) = body::<b::ActivateBody>(raw) {
                pin(&a.pin);
            }
        }
        5 => {
            if let Some(a) = body::<b::AmountBody>(raw) {
                if let Ok(leg) = a.leg("c-0001") {
                    assert!(leg.starts_with("api:") && leg.ends_with(":c-0001"));
                }
            }
        }
        6 => {
            let _ = body::<b::ExpiryBody>(raw);
        }
        7 => {
            if let Some(q) = query::<b::DateQuery>(raw) {
                let _ = q.day();
            }
        }
        8 => {
            if let Some(p) = body::<b::PreregBody>(raw) {
                let _ = p.valid_until_ms();
            }
        }
        9 => {
            let _ = body::<b::MasterBody>(raw);
        }
        10 => {
            if let Some(s) = body::<b::SubRequest>(raw) {
                card(&s.card_number);
                pin(&s.pin);
            }
        }
        11 => {
            if let Some(q) = query::<b::TxnQuery>(raw) {
                let _ = q.day();
                assert!(q.limit() <= 1000);
            }
        }
        _ => {
            if let Some(r) = body::<b::Resolution>(raw) {
                if let Ok(note) = r.note() {
                    assert!(!note.is_empty() && note.len() <= 500);
                }
            }
        }
    }
}
