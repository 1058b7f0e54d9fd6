//! Codec tools for people: `spec check`, `decode`, `encode`.

use std::path::PathBuf;

use bytes::BytesMut;
use clap::{Args, Subcommand};
use tokio_util::codec::{Decoder, Encoder};

use cyberswitch::iso8583::json::{display_value, from_json, masked_value, to_json};
use cyberswitch::iso8583::spec::{Encoding, Pad, PrefixCounts, Subfields};
use cyberswitch::iso8583::{tlv, Spec};
use cyberswitch::net::framing::{Frame, FrameCodec, Framing};

#[derive(Subcommand)]
pub enum SpecCommand {
    /// Validate a spec file and print its layout as a table.
    Check {
        /// A spec name (file stem under specs/) or a path.
        file: String,
    },
}

#[derive(Args)]
pub struct DecodeArgs {
    /// Spec name (file stem under specs/) or path.
    #[arg(long)]
    spec: String,
    /// Framing of the input (e.g. `binary2`, `ascii4+tpdu`); without it the input is one bare
    /// message.
    #[arg(long)]
    framing: Option<Framing>,
    /// The message as hex.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    hex: Option<String>,
    /// A file holding the raw message bytes.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Print one JSON object (`"mti"` and field numbers to values) instead of a table.
    #[arg(long)]
    json: bool,
    /// With --json: mask card data as the table does.
    #[arg(long)]
    mask: bool,
}

#[derive(Args)]
pub struct EncodeArgs {
    /// Spec name (file stem under specs/) or path.
    #[arg(long)]
    spec: String,
    /// Framing to wrap the message in.
    #[arg(long)]
    framing: Option<Framing>,
    /// The message: `{"mti": "0800", "7": "1121120000", "11": "000001", "70": "001"}`.
    #[arg(long)]
    json: String,
}

pub fn spec(cmd: SpecCommand) -> Result<(), String> {
    match cmd {
        SpecCommand::Check { file } => {
            let spec = Spec::resolve(&file).map_err(|e| e.to_string())?;
            print_layout(&spec);
            Ok(())
        }
    }
}

/// Write command output; a closed pipe (`| head`) ends the output quietly instead of panicking.
fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

macro_rules! line {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

fn print_layout(spec: &Spec) {
    let mut out = String::new();
    line!(out, "spec {}: {}", spec.name, spec.description);
    line!(
        out,
        "MTI {:?}, bitmap {:?}{}, {} fields defined — OK",
        spec.mti,
        spec.bitmap,
        if spec.tertiary { " with tertiary" } else { "" },
        spec.fields().count()
    );
    line!(
        out,
        "{:>4}  {:<4} {:>5}  {:<11} {:<10} {:<6} {:<11} name",
        "DE",
        "fmt",
        "len",
        "prefix",
        "encoding",
        "pad",
        "subfields"
    );
    for f in spec.fields() {
        let c = &f.codec;
        let prefix = if c.is_fixed() {
            "fixed".to_string()
        } else {
            let counts = if c.prefix_counts == PrefixCounts::WireBytes {
                "/w"
            } else {
                ""
            };
            let enc = format!("{:?}", c.prefix_encoding).to_lowercase();
            format!("{} {enc}{counts}", "L".repeat(usize::from(c.prefix_digits)))
        };
        let len = if c.is_fixed() {
            c.max.to_string()
        } else {
            format!("..{}", c.max)
        };
        let pad = match f.codec.pad {
            Pad::None => "-".to_string(),
            Pad::Left(ch) => format!("L{:?}", ch as char),
            Pad::Right(ch) => format!("R{:?}", ch as char),
        };
        let subs = match &f.subfields {
            Subfields::None => "-".to_string(),
            Subfields::Fixed { parts, repeat } => {
                format!("{} parts{}", parts.len(), if *repeat { "*" } else { "" })
            }
            Subfields::BerTlv => "BER-TLV".to_string(),
            Subfields::AsciiTlv { .. } => "ASCII TLV".to_string(),
        };
        let enc = match c.encoding {
            Encoding::Ascii => "ascii".to_string(),
            e => e.to_string(),
        };
        line!(
            out,
            "{:>4}  {:<4} {:>5}  {:<11} {:<10} {:<6} {:<11} {}",
            f.number,
            c.format.to_string(),
            len,
            prefix,
            enc,
            pad,
            subs,
            f.name
        );
    }
    emit(&out);
}

fn read_input(args: &DecodeArgs) -> Result<Vec<u8>, String> {
    match (&args.hex, &args.file) {
        (Some(h), _) => {
            let clean: String = h.chars().filter(|c| !c.is_whitespace()).collect();
            hex::decode(&clean).map_err(|e| format!("--hex: {e}"))
        }
        (None, Some(path)) => {
            std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
        }
        (None, None) => Err("give --hex or --file".into()),
    }
}

pub fn decode(args: DecodeArgs) -> Result<(), String> {
    let spec = Spec::resolve(&args.spec).map_err(|e| e.to_string())?;
    let input = read_input(&args)?;
    let (frame, bytes) = match args.framing {
        Some(framing) => {
            let mut codec = FrameCodec::new(framing, input.len().max(1));
            let mut buf = BytesMut::from(&input[..]);
            let frame = codec
                .decode(&mut buf)
                .map_err(|e| format!("framing {framing}: {e}"))?
                .ok_or(format!(
                    "framing {framing}: input ends before the frame does"
                ))?;
            if !buf.is_empty() {
                return Err(format!(
                    "framing {framing}: {} bytes after the frame",
                    buf.len()
                ));
            }
            let bytes = frame.message.to_vec();
            (Some(frame), bytes)
        }
        None => (None, input),
    };
    let msg = spec.decode(&bytes).map_err(|e| e.to_string())?;
    if args.json {
        emit(&format!("{}\n", to_json(&msg, args.mask)));
        return Ok(());
    }
    let mut out = String::new();
    if let Some(f) = &frame {
        if let Some(t) = f.tpdu {
            line!(out, "TPDU    {}", hex::encode_upper(t.0));
        }
        if !f.header.is_empty() {
            line!(out, "header  {}", hex::encode_upper(&f.header));
        }
    }
    line!(out, "MTI     {}", msg.mti());
    for n in msg.field_numbers() {
        let Some(field) = msg.field(n) else { continue };
        let value = field.value();
        let name = spec.field(n).map(|d| d.name.as_str()).unwrap_or("");
        let shown = masked_value(n, &value).unwrap_or_else(|| display_value(&spec, n, &value));
        line!(out, "{n:>3}     {shown:<42} {name}");
        // Subfields of non-card fields, indented.
        if let (Some(def), None) = (spec.field(n), masked_value(n, &value)) {
            match tlv::describe(&def.subfields, &value) {
                Ok(parts) => {
                    for (k, v) in parts {
                        line!(out, "          {k}: {v}");
                    }
                }
                Err(e) => line!(out, "          (subfields: {e})"),
            }
        }
    }
    emit(&out);
    Ok(())
}

pub fn encode(args: EncodeArgs) -> Result<(), String> {
    let spec = Spec::resolve(&args.spec).map_err(|e| e.to_string())?;
    let value: serde_json::Value =
        serde_json::from_str(&args.json).map_err(|e| format!("--json: {e}"))?;
    let msg = from_json(&spec, &value)?;
    let mut out = BytesMut::new();
    spec.encode(&msg, &mut out).map_err(|e| e.to_string())?;
    if let Some(framing) = args.framing {
        let mut codec = FrameCodec::new(framing, usize::MAX);
        let mut framed = BytesMut::new();
        codec
            .encode(Frame::message(out.freeze()), &mut framed)
            .map_err(|e| e.to_string())?;
        out = framed;
    }
    emit(&format!("{}\n", hex::encode_upper(&out)));
    Ok(())
}
