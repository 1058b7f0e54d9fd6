//! Codec speed: encode and decode a typical 0100 authorization under every shipped spec
//! (`codec/encode/<spec>`, `codec/decode/<spec>`), and the same message with the fastest Rust
//! ISO 8583 crate we know, `iso_8583_rs` (`peers/iso_8583_rs/...`), in the same run.
//!
//! Both libraries check a message's values against the layout once: the peer in
//! `Builder::set`, we in `Spec::check` (which `Spec::encode` calls). `encode` measures writing
//! a checked message on both sides; `check-encode` adds our check, and `build-encode` is the
//! whole job on both sides (new message, 17 values set, checked, written).
//!
//! Run: `cargo bench --bench codec`.

use std::collections::HashMap;
use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use cyberswitch::iso8583::spec::{Format, Spec};
use cyberswitch::iso8583::{Mti, OwnedMessage};

const SPECS: [&str; 4] = ["iso87-ascii", "iso87-binary", "iso87-bcd", "iso93-ascii"];

/// The typical 0100 of the issue: fields 2, 3, 4, 7, 11, 12, 13, 14, 22, 25, 35, 37, 41, 42,
/// 43, 49 and 102 (which needs the secondary bitmap).
fn typical_0100(spec_name: &str) -> Vec<(u16, &'static [u8])> {
    let local_time: &[u8] = if spec_name == "iso93-ascii" {
        b"261121143015" // 1993: n12 YYMMDDhhmmss
    } else {
        b"143015"
    };
    let pos_entry: &[u8] = if spec_name == "iso93-ascii" {
        b"A10101654140" // 1993: an12 POS data code
    } else {
        b"051"
    };
    let condition: &[u8] = if spec_name == "iso93-ascii" {
        b"1510"
    } else {
        b"00"
    };
    vec![
        (2, b"9410000000000013"),
        (3, b"310000"),
        (4, b"000000010000"),
        (7, b"1121143015"),
        (11, b"000123"),
        (12, local_time),
        (13, b"1121"),
        (14, b"2812"),
        (22, pos_entry),
        (25, condition),
        (35, b"9410000000000013=28121010000000000"),
        (37, b"532514000123"),
        (41, b"TERM0001"),
        (42, b"MERCHANT0000001"),
        (43, b"CYBER MART GANGNAM     SEOUL        11KR"),
        (49, b"410"),
        (102, b"E-1001"),
    ]
}

fn load(name: &str) -> Spec {
    Spec::resolve(name).unwrap_or_else(|e| panic!("{e}"))
}

fn ours(c: &mut Criterion) {
    for name in SPECS {
        let spec = load(name);
        let mti = if name == "iso93-ascii" {
            b"1100"
        } else {
            b"0100"
        };
        let mut msg = OwnedMessage::new(Mti::new(mti).unwrap());
        for (n, v) in typical_0100(name) {
            msg.set(n, v);
        }
        let mut buf = BytesMut::with_capacity(1024);
        spec.encode(&msg, &mut buf).unwrap();
        let wire = buf.to_vec();
        assert_eq!(spec.decode(&wire).unwrap().to_owned_message(), msg);

        // Like the peer's `pack_into`: the message was checked against the layout when it
        // was built (the peer checks in `Builder::set`), encoding writes it.
        let checked = spec.check(&msg).unwrap();
        c.bench_function(&format!("codec/encode/{name}"), |b| {
            let mut out = BytesMut::with_capacity(1024);
            b.iter(|| {
                out.clear();
                black_box(&checked).encode(&mut out);
                black_box(out.len())
            })
        });
        // Check and write, as `Spec::encode` does for a message built without a layout.
        c.bench_function(&format!("codec/check-encode/{name}"), |b| {
            let mut out = BytesMut::with_capacity(1024);
            b.iter(|| {
                out.clear();
                spec.encode(black_box(&msg), &mut out).unwrap();
                black_box(out.len())
            })
        });
        // The whole job: build the message from its values, check it, encode it.
        let values = typical_0100(name);
        c.bench_function(&format!("codec/build-encode/{name}"), |b| {
            let mut out = BytesMut::with_capacity(1024);
            b.iter(|| {
                let mut m = OwnedMessage::new(Mti::new(mti).unwrap());
                for &(n, v) in black_box(&values) {
                    m.set(n, v);
                }
                out.clear();
                spec.encode(&m, &mut out).unwrap();
                black_box(out.len())
            })
        });
        c.bench_function(&format!("codec/decode/{name}"), |b| {
            b.iter(|| {
                let m = spec.decode(black_box(&wire)).unwrap();
                black_box(m.has(102))
            })
        });
    }
}

/// The same layout as our iso87-ascii, described for iso_8583_rs.
fn peer_spec() -> iso_8583_rs::CompiledSpec {
    use iso_8583_rs::specfile::{FieldDescription, Spec as PeerSpec};
    let ours = load("iso87-ascii");
    let mut fields = HashMap::new();
    for f in ours.fields() {
        let c = f.codec;
        let content = match c.format {
            Format::N => "n",
            Format::A => "a",
            Format::An => "an",
            Format::Ans => "ans",
            Format::B | Format::Z | Format::XN => "b",
        };
        let len_type = match c.prefix_digits {
            0 => "fixed",
            2 => "llvar",
            3 => "lllvar",
            _ => "llllvar",
        };
        fields.insert(
            i64::from(f.number),
            FieldDescription {
                content_type: content.into(),
                len_type: len_type.into(),
                max_len: match c.format {
                    Format::B => c.max * 2,
                    Format::XN => c.max + 1,
                    _ => c.max,
                },
                min_len: 0,
                label: f.name.clone(),
            },
        );
    }
    iso_8583_rs::CompiledSpec::compile(&PeerSpec { fields }).unwrap()
}

fn peers(c: &mut Criterion) {
    let spec = peer_spec();
    let values = typical_0100("iso87-ascii");
    let mut builder = iso_8583_rs::Builder::new(&spec, b"0100").unwrap();
    for (n, v) in &values {
        builder.set(usize::from(*n), v).unwrap();
    }
    let mut wire = Vec::new();
    builder.pack_into(&mut wire);
    // Same bytes as ours: the comparison measures the same work.
    let ours = load("iso87-ascii");
    assert_eq!(
        ours.decode(&wire)
            .unwrap()
            .to_owned_message()
            .fields()
            .count(),
        values.len()
    );

    c.bench_function("peers/iso_8583_rs/encode", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            black_box(&builder).pack_into(&mut out);
            black_box(out.len())
        })
    });
    c.bench_function("peers/iso_8583_rs/build-encode", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            let mut builder = iso_8583_rs::Builder::new(&spec, b"0100").unwrap();
            for (n, v) in black_box(&values) {
                builder.set(usize::from(*n), v).unwrap();
            }
            builder.pack_into(&mut out);
            black_box(out.len())
        })
    });
    c.bench_function("peers/iso_8583_rs/decode", |b| {
        b.iter(|| {
            let m = iso_8583_rs::Message::parse(&spec, black_box(&wire)).unwrap();
            black_box(m.has(102))
        })
    });
}

criterion_group!(benches, ours, peers);
criterion_main!(benches);
