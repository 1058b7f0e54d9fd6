//! `cyberswitch send`: one message to a switch, as a terminal would send it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use cyberswitch::iso8583::json::{display_value, from_json, masked_value};
use cyberswitch::iso8583::tlv::SwitchData;
use cyberswitch::iso8583::Spec;
use cyberswitch::net::client::Client;
use cyberswitch::net::framing::Framing;

#[derive(Args)]
pub struct SendArgs {
    /// The switch address.
    #[arg(long, default_value = "127.0.0.1:8583")]
    to: String,
    #[arg(long, default_value = "iso87-ascii")]
    spec: String,
    #[arg(long, default_value = "binary2")]
    framing: Framing,
    /// The message as JSON (`"mti"` and field numbers). Fields 7, 11, 12, 13 and 41 are filled
    /// in when absent.
    #[arg(long)]
    json: String,
    /// Field 48 elements, `TAG=VALUE` (repeatable): `--tag WS=G-3001,E-1001 --tag PA=1`.
    #[arg(long)]
    tag: Vec<String>,
    /// A PIN to send in field 52, as a terminal's PIN pad would: ISO 9564 format 0 under
    /// `--pin-key` (the listener's terminal PIN key).
    #[arg(long, requires = "pin_key")]
    pin: Option<String>,
    /// The terminal PIN key (32 hex digits; the demo prints its own).
    #[arg(long, env = "CYBERSWITCH_PIN_KEY", hide_env_values = true)]
    pin_key: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Over TLS (the demo's TLS listener is 127.0.0.1:8584), the server's certificate checked
    /// against `--ca`, by default the demo's `demo-data/tls/ca.pem`.
    #[arg(long)]
    tls: bool,
    /// The CA (PEM) that signed the switch's certificate; implies --tls.
    #[arg(long, env = "CYBERSWITCH_CA")]
    ca: Option<PathBuf>,
}

pub async fn send(args: SendArgs) -> Result<(), String> {
    let spec = Arc::new(Spec::resolve(&args.spec).map_err(|e| e.to_string())?);
    let value: serde_json::Value =
        serde_json::from_str(&args.json).map_err(|e| format!("--json: {e}"))?;
    let mut msg = from_json(&spec, &value)?;
    let defaults: [(u16, String); 5] = [
        (7, cyberswitch::clock::transmission_time()),
        (11, format!("{:06}", rand::random::<u32>() % 999_999 + 1)),
        (12, cyberswitch::clock::local_time()),
        (13, cyberswitch::clock::local_date()),
        (41, "TERM0001".into()),
    ];
    for (n, v) in defaults {
        if !msg.has(n) && spec.field(n).is_some() {
            msg.set(n, v.as_bytes());
        }
    }
    if !args.tag.is_empty() {
        let mut data = SwitchData::new();
        for t in &args.tag {
            let (tag, value) = t
                .split_once('=')
                .ok_or(format!("--tag {t:?}: expected TAG=VALUE"))?;
            if tag.len() != 2 {
                return Err(format!("--tag {t:?}: tags are two characters"));
            }
            data.push(tag, value.as_bytes());
        }
        msg.set(48, data.as_bytes());
    }
    if let (Some(pin), Some(key)) = (&args.pin, &args.pin_key) {
        let key = cyberswitch::pin::PinKey::from_hex(key).map_err(|e| format!("--pin-key: {e}"))?;
        let pin = cyberswitch::pin::ClearPin::new(pin).map_err(|e| format!("--pin: {e}"))?;
        let pan = msg
            .get(2)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .ok_or("--pin needs the card number in field 2")?;
        let block =
            cyberswitch::pin::encrypt_block(&key, &pin, &pan).map_err(|e| format!("--pin: {e}"))?;
        msg.set(52, &block);
    }
    let ca = match (&args.ca, args.tls) {
        (Some(ca), _) => Some(ca.clone()),
        (None, true) => Some(PathBuf::from("demo-data/tls/ca.pem")),
        (None, false) => None,
    };
    let mut client =
        Client::connect_tls(&args.to, ca.as_deref(), spec.clone(), args.framing).await?;
    let answer = client.call(&msg, Duration::from_secs(args.timeout)).await?;
    println!("MTI {}", answer.mti());
    for (n, v) in answer.fields() {
        let shown = masked_value(n, v).unwrap_or_else(|| display_value(&spec, n, v));
        if n == 48 {
            println!("{n:>3}");
            for el in
                cyberswitch::iso8583::tlv::parse_ascii_tlv(v, 2, 3).map_err(|e| e.to_string())?
            {
                println!(
                    "      {} {}",
                    String::from_utf8_lossy(el.tag),
                    String::from_utf8_lossy(el.value)
                );
            }
        } else {
            println!("{n:>3}  {shown}");
        }
    }
    Ok(())
}
