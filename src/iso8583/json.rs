//! Messages as JSON objects for people and tools: `{"mti": "0100", "2": "...", "52": "<hex>"}`.
//! Field numbers are strings; character and numeric fields are their text, binary fields hex.

use serde_json::{Map, Value};

use super::field::Format;
use super::layout::Spec;
use super::message::{Message, Mti, OwnedMessage};
use super::pan::mask_digits;
use super::wire;

/// Fields that carry card data, and how the table view shows them.
pub fn masked_value(n: u16, value: &[u8]) -> Option<String> {
    // Most fields are not card data: only those that are are read as text (this runs for
    // every field of every message the journal logs).
    if !matches!(n, 2 | 34 | 35 | 36 | 45 | 52 | 55) {
        return None;
    }
    let text = String::from_utf8_lossy(value);
    match n {
        2 | 34 => Some(mask_digits(&text)),
        // Track data: the PAN part masked, everything after the separator hidden.
        35 | 36 | 45 => {
            let pan_end = text.find(['=', 'D', '^']).unwrap_or(text.len());
            let pan_part = text.get(..pan_end).unwrap_or("");
            let start = usize::from(n == 45 && pan_part.starts_with('B'));
            Some(format!(
                "{}{}",
                mask_digits(pan_part.get(start..).unwrap_or("")),
                "*".repeat(text.len() - pan_end)
            ))
        }
        // PIN block and chip data (which holds the PAN and track-2 equivalent): length only.
        52 | 55 => Some(format!("<{} bytes hidden>", value.len())),
        _ => None,
    }
}

/// The printable form of a field value: hex for binary fields, text otherwise.
pub fn display_value(spec: &Spec, n: u16, value: &[u8]) -> String {
    match spec.field(n).map(|d| d.codec.format) {
        Some(Format::B) => hex::encode_upper(value),
        _ => String::from_utf8_lossy(value).into_owned(),
    }
}

/// A decoded message as a JSON object; with `mask`, card data is masked as in the table view.
pub fn to_json(msg: &Message<'_>, mask: bool) -> Value {
    let mut obj = Map::new();
    obj.insert("mti".into(), Value::String(msg.mti().to_string()));
    for n in msg.field_numbers() {
        if let Some(f) = msg.field(n) {
            let v = f.value();
            let shown = match mask.then(|| masked_value(n, &v)).flatten() {
                Some(m) => m,
                None => display_value(msg.spec(), n, &v),
            };
            obj.insert(n.to_string(), Value::String(shown));
        }
    }
    Value::Object(obj)
}

/// Build a message from a JSON object as [`to_json`] writes it.
pub fn from_json(spec: &Spec, value: &Value) -> Result<OwnedMessage, String> {
    let obj = value
        .as_object()
        .ok_or("the message must be a JSON object")?;
    let mti_text = obj
        .get("mti")
        .and_then(Value::as_str)
        .ok_or("\"mti\" is missing or not a string")?;
    let mti = Mti::new(mti_text.as_bytes()).ok_or("\"mti\" must be four digits")?;
    let mut msg = OwnedMessage::new(mti);
    for (key, v) in obj {
        if key == "mti" {
            continue;
        }
        let n: u16 = key
            .parse()
            .map_err(|_| format!("key {key:?} is neither \"mti\" nor a field number"))?;
        let def = spec
            .field(n)
            .ok_or_else(|| format!("field {n} is not defined in {}", spec.name))?;
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(num) => num.to_string(),
            _ => return Err(format!("field {n}: value must be a string")),
        };
        if def.codec.format == Format::B {
            let mut bytes = Vec::new();
            wire::unhex(text.as_bytes(), &mut bytes)
                .map_err(|i| format!("field {n}: not hex at character {i}"))?;
            msg.set(n, &bytes);
        } else {
            msg.set(n, text.as_bytes());
        }
    }
    Ok(msg)
}
