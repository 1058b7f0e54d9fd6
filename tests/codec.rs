//! The codec against independent fixtures, another implementation, random messages and every
//! class of bad input.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use cyberswitch::iso8583::json::{from_json, to_json};
use cyberswitch::iso8583::spec::{Format, Spec};
use cyberswitch::iso8583::{Mti, OwnedMessage, Place, Reason};
use proptest::prelude::*;

const SPECS: [&str; 4] = ["iso87-ascii", "iso87-binary", "iso87-bcd", "iso93-ascii"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(name: &str) -> Spec {
    Spec::resolve(name).unwrap_or_else(|e| panic!("{e}"))
}

fn read_hex(path: &Path) -> Vec<u8> {
    hex::decode(std::fs::read_to_string(path).unwrap().trim()).unwrap()
}

// ---- Fixtures written by an independent encoder (tests/fixtures/make_fixtures.py) -------------

#[test]
fn every_fixture_decodes_to_its_fields_and_encodes_to_its_bytes() {
    let mut count = 0;
    for name in SPECS {
        let spec = load(name);
        let dir = fixtures().join(name);
        let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.path());
        for entry in entries {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "hex") {
                continue;
            }
            let bytes = read_hex(&path);
            let expected: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(path.with_extension("json")).unwrap(),
            )
            .unwrap();
            let msg = spec
                .decode(&bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(to_json(&msg, false), expected, "{}", path.display());
            let built = from_json(&spec, &expected).unwrap();
            let mut out = BytesMut::new();
            spec.encode(&built, &mut out).unwrap();
            assert_eq!(
                hex::encode_upper(&out),
                hex::encode_upper(&bytes),
                "{}",
                path.display()
            );
            count += 1;
        }
    }
    assert!(count >= 22, "only {count} fixtures found");
}

#[test]
fn fixtures_cover_the_required_messages() {
    let spec = load("iso87-ascii");
    let read = |n: &str| read_hex(&fixtures().join("iso87-ascii").join(format!("{n}.hex")));
    let signon = read("0800-signon");
    let m = spec.decode(&signon).unwrap();
    assert_eq!(m.mti().as_str(), "0800");
    assert_eq!(m.network_code(), Some(1));
    // Field 70 needs the secondary bitmap: bit 1 of the primary is set.
    assert_eq!(&signon[4..5], b"8");

    let inquiry = read("0100-balance-inquiry");
    let m = spec.decode(&inquiry).unwrap();
    assert_eq!(m.pan().unwrap().unwrap().to_string(), "941000******0013");
    assert_eq!(m.processing_code(), Some(310000));
    assert_eq!(m.str(102).unwrap(), "E-1001");

    let purchase_bytes = read("0200-purchase");
    let purchase = spec.decode(&purchase_bytes).unwrap();
    assert_eq!(purchase.amount(), Some(70_000));
    let sd = purchase.switch_data().unwrap();
    assert_eq!(sd[0], ("WS".to_string(), "G-3001,AUTO".to_string()));
    assert_eq!(sd[1], ("PA".to_string(), "1".to_string()));
    assert_eq!(purchase.field(52).unwrap().value().len(), 8);

    let resp_bytes = read("0210-with-54");
    let resp = spec.decode(&resp_bytes).unwrap();
    let amounts = resp.additional_amounts().unwrap();
    assert_eq!(amounts.len(), 2);
    assert_eq!(&amounts[1].amount_type, b"57");
    assert_eq!(amounts[0].amount, 50_000);

    let rev_bytes = read("0400-reversal");
    let rev = spec.decode(&rev_bytes).unwrap();
    let od = rev.original_data().unwrap().unwrap();
    assert_eq!(od.mti.as_str(), "0200");
    assert_eq!(od.stan, 3);

    let recon_bytes = read("0500-reconciliation");
    let recon = spec.decode(&recon_bytes).unwrap();
    assert_eq!(recon.str(97).unwrap(), "D0000000002200000");
    assert!(recon.has(128));
}

#[test]
fn every_framing_fixture_frames_and_unframes() {
    use cyberswitch::net::framing::{Frame, FrameCodec, Framing};
    use tokio_util::codec::{Decoder, Encoder};
    let fx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("framing/0800-signon.json")).unwrap(),
    )
    .unwrap();
    let message = hex::decode(fx["message"].as_str().unwrap()).unwrap();
    let framed = fx["framed"].as_object().unwrap();
    assert!(framed.len() >= 11);
    for (name, hex_text) in framed {
        let framing: Framing = name.parse().unwrap();
        let wire = hex::decode(hex_text.as_str().unwrap()).unwrap();
        let mut codec = FrameCodec::new(framing, 8192);
        // Fed one byte at a time: the codec must wait for the whole frame.
        let mut buf = BytesMut::new();
        let mut got = None;
        for (i, b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            if let Some(f) = codec.decode(&mut buf).unwrap() {
                assert_eq!(i, wire.len() - 1, "{name}: frame ended early");
                got = Some(f);
            }
        }
        let frame = got.unwrap_or_else(|| panic!("{name}: no frame"));
        assert_eq!(frame.message.as_ref(), &message[..], "{name}");
        let mut out = BytesMut::new();
        codec.encode(frame, &mut out).unwrap();
        assert_eq!(hex::encode_upper(&out), hex::encode_upper(&wire), "{name}");
        // And the keep-alive: a zero length comes back as a keep-alive frame.
        if framing.delimiter != cyberswitch::net::framing::Delimiter::StxEtx {
            let mut ka = BytesMut::new();
            codec.encode(Frame::keep_alive(), &mut ka).unwrap();
            assert!(
                codec.decode(&mut ka).unwrap().unwrap().is_keep_alive(),
                "{name}"
            );
        }
    }
}

#[test]
fn tpdu_reply_swaps_source_and_destination() {
    use cyberswitch::net::framing::{FrameCodec, Framing};
    use tokio_util::codec::{Decoder, Encoder};
    let framing: Framing = "binary2+tpdu".parse().unwrap();
    let mut codec = FrameCodec::new(framing, 8192);
    let mut buf = BytesMut::from(&hex::decode("00096000010002303830300000").unwrap()[..]);
    // 9 bytes: TPDU (5) + "0800" (4); the trailing zeros are a keep-alive.
    let frame = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(frame.message.as_ref(), b"0800");
    let mut out = BytesMut::new();
    codec
        .encode(frame.reply(bytes::Bytes::from_static(b"0810")), &mut out)
        .unwrap();
    assert_eq!(hex::encode_upper(&out), "0009600002000130383130");
    assert!(codec.decode(&mut buf).unwrap().unwrap().is_keep_alive());
}

// ---- Another correct implementation: iso_8583_rs (ISO 8583:1987 ASCII, hex bitmap) -----------

fn peer_spec() -> iso_8583_rs::CompiledSpec {
    use iso_8583_rs::specfile::{FieldDescription, Spec as PeerSpec};
    let ours = load("iso87-ascii");
    let fields = ours
        .fields()
        .map(|f| {
            let c = f.codec;
            let content = match c.format {
                Format::N => "n",
                Format::An => "an",
                Format::Ans => "ans",
                _ => "b",
            };
            let len_type = ["fixed", "", "llvar", "lllvar"][usize::from(c.prefix_digits)];
            let max_len = match c.format {
                Format::B => c.max * 2,
                Format::XN => c.max + 1,
                _ => c.max,
            };
            let desc = FieldDescription {
                content_type: content.into(),
                len_type: len_type.into(),
                max_len,
                min_len: 0,
                label: f.name.clone(),
            };
            (i64::from(f.number), desc)
        })
        .collect();
    iso_8583_rs::CompiledSpec::compile(&PeerSpec { fields }).unwrap()
}

#[test]
fn messages_from_another_implementation_decode_identically_and_vice_versa() {
    let peer = peer_spec();
    let ours = load("iso87-ascii");
    for entry in std::fs::read_dir(fixtures().join("iso87-ascii"))
        .unwrap()
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let obj: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let msg = from_json(&ours, &obj).unwrap();
        // The peer's binary fields are hex text, as on the wire.
        let values: Vec<(usize, Vec<u8>)> = obj
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "mti")
            .map(|(k, v)| (k.parse().unwrap(), v.as_str().unwrap().as_bytes().to_vec()))
            .collect();
        let mut builder = iso_8583_rs::Builder::new(&peer, msg.mti().as_bytes()).unwrap();
        for (n, v) in &values {
            builder.set(*n, v).unwrap();
        }
        let mut theirs = Vec::new();
        builder.pack_into(&mut theirs);

        // Theirs → ours.
        let decoded = ours.decode(&theirs).unwrap();
        assert_eq!(decoded.to_owned_message(), msg, "{}", path.display());
        // Ours → theirs.
        let mine = ours.encode_to_vec(&msg).unwrap();
        let parsed = iso_8583_rs::Message::parse(&peer, &mine).unwrap();
        assert_eq!(&parsed.mti, msg.mti().as_bytes());
        for (n, v) in &values {
            assert_eq!(parsed.get(*n), Some(&v[..]), "{} field {n}", path.display());
        }
        assert_eq!(mine, theirs, "{}", path.display());
    }
}

// ---- Layouts the shipped specs do not use -----------------------------------------------------

#[test]
fn ebcdic_tertiary_bitmap_and_prefix_variants_round_trip() {
    let spec = Spec::load(&fixtures().join("specs/ebcdic-tertiary.toml")).unwrap();
    let mut msg = OwnedMessage::new(Mti::new(b"0200").unwrap());
    msg.set(2, b"9410000000000013")
        .set(3, b"000000")
        .set(4, b"000000012345")
        .set(11, b"12345")
        .set(28, b"D00000150")
        .set(41, b"TERM[01]")
        .set(43, b"CAFE [SEOUL]")
        .set(52, &[0xDE, 0xAD, 0xBE, 0xEF, 0, 1, 2, 3])
        .set(70, b"301")
        .set(130, b"EXTRA1")
        .set(192, &[1, 2, 3]);
    let wire = spec.encode_to_vec(&msg).unwrap();
    assert_eq!(&wire[..4], &[0xF0, 0xF2, 0xF0, 0xF0], "EBCDIC MTI");
    // Bits 1 and 65 announce the secondary and tertiary bitmaps.
    assert_eq!(wire[4] & 0x80, 0x80);
    assert_eq!(wire[12] & 0x80, 0x80);
    let decoded = spec.decode(&wire).unwrap();
    assert_eq!(decoded.to_owned_message(), msg);
    assert_eq!(decoded.amount(), Some(12345));
    assert_eq!(decoded.stan(), Some(12345));
    // cp500 writes '[' as 0x4A; the field 192 prefix counts hex characters ("006").
    let f41 = decoded.field(41).unwrap();
    assert_eq!(f41.wire[4], 0x4A);
    assert!(wire.ends_with(b"006010203"));
}

// ---- Bad input: every error class names the place, the offset and the reason -------------------

fn ascii() -> Spec {
    load("iso87-ascii")
}

/// "0200", primary bitmap with fields 2, 3, 4, then their data.
fn purchase_head() -> Vec<u8> {
    let mut m = b"0200".to_vec();
    m.extend_from_slice(b"7000000000000000");
    m.extend_from_slice(b"169410000000000013");
    m.extend_from_slice(b"000000");
    m.extend_from_slice(b"000000010000");
    m
}

#[test]
fn decodes_the_reference_purchase_head() {
    let spec = ascii();
    let head = purchase_head();
    let m = spec.decode(&head).unwrap();
    assert_eq!(m.amount(), Some(10_000));
}

#[test]
fn truncated_field_is_reported_with_offset() {
    let mut m = purchase_head();
    m.truncate(m.len() - 5);
    let e = ascii().decode(&m).unwrap_err();
    assert_eq!(e.place, Place::Field(4));
    assert_eq!(e.offset, 44);
    assert_eq!(
        e.to_string(),
        "field 4: truncated: needs 12 bytes, 7 left at offset 44"
    );
}

#[test]
fn bad_length_prefix_is_reported() {
    let mut m = purchase_head();
    m[20] = b'X';
    let e = ascii().decode(&m).unwrap_err();
    assert_eq!(
        (e.place, e.offset, e.reason),
        (Place::Field(2), 20, Reason::BadLengthPrefix)
    );
}

#[test]
fn length_over_max_is_reported_like_the_issue_says() {
    // Field 35 claims 41 characters, its max is 37.
    let mut m = b"0200".to_vec();
    m.extend_from_slice(b"0000000020000000");
    m.extend_from_slice(b"41");
    m.extend_from_slice(&[b'1'; 41]);
    let e = ascii().decode(&m).unwrap_err();
    assert_eq!(
        e.to_string(),
        "field 35: length 41 exceeds max 37 at offset 20"
    );
}

#[test]
fn non_numeric_in_n_is_reported_at_the_byte() {
    let mut m = purchase_head();
    m[46] = b'A'; // inside field 4, which starts at offset 44
    let e = ascii().decode(&m).unwrap_err();
    assert_eq!(e.place, Place::Field(4));
    assert_eq!(e.offset, 46);
    assert_eq!(
        e.reason,
        Reason::InvalidByte {
            byte: b'A',
            format: Format::N
        }
    );
}

#[test]
fn bitmap_bit_for_an_undefined_field_is_refused() {
    let spec = Spec::from_toml(
        r#"
name = "tiny"
[mti]
encoding = "ascii"
[bitmap]
encoding = "hex"
[fields]
3 = { name = "Processing code", format = "n", length = 6 }
"#,
        Path::new("tiny.toml"),
    )
    .unwrap();
    let e = spec.decode(b"02003000000000000000000000").unwrap_err();
    assert_eq!(
        (e.place, e.reason),
        (Place::Field(4), Reason::UndefinedField)
    );
    assert_eq!(e.offset, 26);
}

#[test]
fn trailing_bytes_are_refused() {
    let mut m = purchase_head();
    m.extend_from_slice(b"XYZ");
    let e = ascii().decode(&m).unwrap_err();
    assert_eq!(e.reason, Reason::TrailingBytes { count: 3 });
    assert_eq!(e.offset, m.len() - 3);
}

#[test]
fn bad_mti_and_bitmap_are_refused() {
    let e = ascii().decode(b"02X0").unwrap_err();
    assert_eq!(e.place, Place::Mti);
    let e = ascii().decode(b"0200G000000000000000").unwrap_err();
    assert_eq!((e.place, e.offset), (Place::Bitmap, 4));
    let e = ascii().decode(b"020070000000").unwrap_err();
    assert_eq!(e.place, Place::Bitmap);
    assert!(matches!(e.reason, Reason::Truncated { need: 16, have: 8 }));
}

#[test]
fn oversized_frame_is_refused() {
    use cyberswitch::net::framing::{FrameCodec, FrameError};
    use tokio_util::codec::Decoder;
    let mut codec = FrameCodec::new("binary2".parse().unwrap(), 8192);
    let mut buf = BytesMut::from(&[0x20, 0x01][..]); // 8193
    let e = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(
        e,
        FrameError::TooLarge {
            len: 8193,
            max: 8192
        }
    ));
    assert_eq!(
        e.to_string(),
        "frame of 8193 bytes exceeds the maximum of 8192"
    );
}

#[test]
fn encode_refuses_values_that_do_not_fit() {
    let spec = ascii();
    let mut m = OwnedMessage::new(Mti::new(b"0200").unwrap());
    m.set(4, b"0000000000001"); // 13 digits
    let e = spec.encode_to_vec(&m).unwrap_err();
    assert_eq!(e.to_string(), "field 4: value length 13 exceeds max 12");
    m.set(4, b"12AB");
    let e = spec.encode_to_vec(&m).unwrap_err();
    assert_eq!(
        e.to_string(),
        "field 4: character at index 2 is not allowed in format n"
    );
    // A short numeric value is zero-padded on the left, text on the right.
    let mut m = OwnedMessage::new(Mti::new(b"0200").unwrap());
    m.set(4, b"500").set(41, b"T1");
    let d = spec.encode_to_vec(&m).unwrap();
    assert!(d.ends_with(b"000000000500T1      "));
}

#[test]
fn inconsistent_specs_are_refused_with_file_field_and_reason() {
    let cases = [
        (
            r#"2 = { name = "PAN", format = "n", max = 19 }"#,
            "field 2: a fixed field needs `length` (and no `max`)",
        ),
        (
            r#"2 = { name = "PAN", format = "n", max = 190, prefix = "LL" }"#,
            "field 2: max 190 does not fit a 2-digit Ascii length prefix",
        ),
        (
            r#"52 = { name = "PIN", format = "b", length = 8, encoding = "bcd" }"#,
            "field 52: encoding bcd cannot carry format b",
        ),
        (
            r#"3 = { name = "x", format = "n", length = 6, prefix = "LX" }"#,
            "field 3: prefix \"LX\" must be L, LL, … LLLLLL or fixed",
        ),
        (
            r#"129 = { name = "x", format = "n", length = 6 }"#,
            "field 129: field numbers run from 2 to 128",
        ),
        (
            r#"90 = { name = "x", format = "n", length = 42, subfields = [{ name = "a", length = 4 }] }"#,
            "field 90: subfield lengths add up to 4, the field is 42",
        ),
        (
            r#"4 = { name = "x", format = "q", length = 6 }"#,
            "unknown variant `q`",
        ),
    ];
    for (field, expected) in cases {
        let text = format!(
            "name = \"bad\"\n[mti]\nencoding = \"ascii\"\n[bitmap]\nencoding = \"hex\"\n[fields]\n{field}\n"
        );
        let e = Spec::from_toml(&text, Path::new("specs/bad.toml")).unwrap_err();
        let shown = e.to_string();
        assert!(shown.starts_with("specs/bad.toml: "), "{shown}");
        assert!(
            shown.contains(expected),
            "{shown} does not contain {expected}"
        );
    }
}

// ---- Property tests -----------------------------------------------------------------------------

/// A valid value for a field: its class of characters, a length within its bounds (variable
/// fields kept short so messages stay small).
fn value_strategy(spec: &Spec, n: u16) -> BoxedStrategy<Vec<u8>> {
    let c = spec.field(n).unwrap().codec;
    let len = if c.is_fixed() {
        (c.max..=c.max).boxed()
    } else {
        (c.min.max(1)..=c.max.min(40)).boxed()
    };
    let chars: Vec<u8> = match c.format {
        Format::N | Format::XN => b"0123456789".to_vec(),
        Format::A => b"ABCXYZabcxyz ".to_vec(),
        Format::An => b"0123456789ABCXYZabcxyz ".to_vec(),
        Format::Ans => (0x20u8..0x7F).collect(),
        Format::Z => b"0123456789=".to_vec(),
        Format::B => (0u8..=255).collect(),
    };
    let is_xn = c.format == Format::XN;
    len.prop_flat_map(move |l| {
        proptest::collection::vec(proptest::sample::select(chars.clone()), l)
    })
    .prop_flat_map(move |v| {
        proptest::sample::select(vec![b'C', b'D']).prop_map(move |sign| {
            if is_xn {
                let mut s = vec![sign];
                s.extend_from_slice(&v);
                s
            } else {
                v.clone()
            }
        })
    })
    .boxed()
}

fn message_strategy(spec: &'static Spec) -> impl Strategy<Value = OwnedMessage> {
    let numbers: Vec<u16> = spec.fields().map(|f| f.number).collect();
    proptest::sample::subsequence(numbers, 1..24).prop_flat_map(move |nums| {
        let values: Vec<_> = nums
            .iter()
            .map(|&n| value_strategy(spec, n).prop_map(move |v| (n, v)))
            .collect();
        (values, 0u16..10000).prop_map(|(fields, mti)| {
            let mut m = OwnedMessage::new(Mti::new(format!("{mti:04}").as_bytes()).unwrap());
            for (n, v) in fields {
                m.set(n, &v);
            }
            m
        })
    })
}

fn leaked(name: &str) -> &'static Spec {
    Box::leak(Box::new(load(name)))
}

macro_rules! round_trip {
    ($test:ident, $name:expr) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            #[test]
            fn $test(msg in message_strategy(leaked($name))) {
                let spec = leaked($name);
                let wire = spec.encode_to_vec(&msg).unwrap();
                let decoded = spec.decode(&wire).unwrap();
                prop_assert_eq!(decoded.to_owned_message(), msg.clone());
                // Stable bytes: encoding the decoded message gives the same bytes back.
                prop_assert_eq!(spec.encode_to_vec(&decoded.to_owned_message()).unwrap(), wire.clone());
                // Checking first and writing later gives the same bytes as doing both at once.
                let mut written = BytesMut::new();
                spec.check(&msg).unwrap().encode(&mut written);
                prop_assert_eq!(written.to_vec(), wire);
            }
        }
    };
}

round_trip!(round_trip_iso87_ascii, "iso87-ascii");
round_trip!(round_trip_iso87_binary, "iso87-binary");
round_trip!(round_trip_iso87_bcd, "iso87-bcd");
round_trip!(round_trip_iso93_ascii, "iso93-ascii");

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// Arbitrary bytes never panic the decoder, under any spec; whatever decodes re-encodes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), which in 0usize..4) {
        let spec = leaked(SPECS[which]);
        if let Ok(m) = spec.decode(&bytes) {
            let _ = to_json(&m, true);
            let _ = m.pan();
            let _ = m.switch_data();
            let _ = m.additional_amounts();
            let _ = m.original_data();
            prop_assert!(spec.encode_to_vec(&m.to_owned_message()).is_ok());
        }
    }

    /// The decoder's fast pass accepts a mutated message exactly when the careful pass does,
    /// with the same fields (`decode` falls back to the careful pass on what the fast pass
    /// refuses, so a disagreement shows as a message decoded by one and refused by the other).
    #[test]
    fn fast_and_careful_decoding_agree(
        (which, msg) in (0usize..4).prop_flat_map(|w| (Just(w), message_strategy(leaked(SPECS[w])))),
        pos in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let spec = leaked(SPECS[which]);
        let mut wire = spec.encode_to_vec(&msg).unwrap();
        let i = pos % wire.len();
        wire[i] = byte;
        let fast = spec.decode(&wire).map(|m| m.to_owned_message()).map_err(|e| e.to_string());
        let careful = spec.decode_careful(&wire).map(|m| m.to_owned_message()).map_err(|e| e.to_string());
        prop_assert_eq!(fast, careful);
    }

    /// Mutating one byte of a valid message never panics the decoder.
    #[test]
    fn mutated_messages_never_panic(msg in message_strategy(leaked("iso87-bcd")), pos in any::<usize>(), byte in any::<u8>()) {
        let spec = leaked("iso87-bcd");
        let mut wire = spec.encode_to_vec(&msg).unwrap();
        let i = pos % wire.len();
        wire[i] = byte;
        let _ = spec.decode(&wire);
    }
}
