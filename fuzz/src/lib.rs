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
