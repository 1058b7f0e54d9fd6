//! What the switch reads in a terminal's field 48 (SPEC §4.3): the tender of a purchase
//! (`WS`, `WC`, `PA`) and how a refund names its original (field 90, `OR`, `OA`). Parsed
//! here, beside the codec, so that whatever a terminal sends can be tried without a switch
//! (the `switch_data` fuzz target); the flows act on what these return.

use super::{Message, OriginalData};

/// The terminal's choices for a purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tender {
    /// Wallet ids in drain order; `None` = automatic (priority order).
    pub selection: Option<Vec<String>>,
    /// `WC`: at most this much from the wallets (minor units).
    pub cap: Option<u64>,
    /// `PA` = 1: a partial approval is acceptable.
    pub partial_ok: bool,
}

/// The tender of a purchase; an error (answered 30) when field 48 or `WC` cannot be read.
pub fn tender(req: &Message<'_>) -> Result<Tender, &'static str> {
    let elements = req.switch_data().map_err(|_| "field 48 is malformed")?;
    let tag = |t: &str| {
        elements
            .iter()
            .find(|(k, _)| k == t)
            .map(|(_, v)| v.as_str())
    };
    let selection = match tag("WS") {
        None | Some("AUTO") => None,
        Some(list) => Some(
            list.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        ),
    };
    let cap = match tag("WC") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| "WC is not a number")?),
    };
    Ok(Tender {
        selection,
        cap,
        partial_ok: tag("PA") == Some("1"),
    })
}

/// How a refund names its original (F8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// Field 90: the original's MTI, STAN and transmission time.
    Original(OriginalData),
    /// Tag `OR`: the RRN the switch answered the original with.
    Rrn(String),
    /// Tag `OA`: the original's approval code and the terminal's date of it (`YYMMDD`).
    Approval { code: String, date: String },
}

/// The refund's reference: field 90 first, then `OR`, then `OA`; an error (answered 30) when
/// none is there or it cannot be read.
pub fn reference(req: &Message<'_>) -> Result<Reference, &'static str> {
    if let Ok(Some(od)) = req.original_data() {
        return Ok(Reference::Original(od));
    }
    let elements = req.switch_data().map_err(|_| "field 48 is malformed")?;
    let tag = |t: &str| elements.iter().find(|(k, _)| k == t).map(|(_, v)| v.trim());
    if let Some(rrn) = tag("OR") {
        if rrn.is_empty() || rrn.len() > 12 {
            return Err("OR is not an RRN");
        }
        return Ok(Reference::Rrn(rrn.to_string()));
    }
    let oa = tag("OA").ok_or("no original named")?;
    let (code, date) = oa.split_once('|').ok_or("OA is not code|YYMMDD")?;
    let date_ok = date.len() == 6 && date.bytes().all(|b| b.is_ascii_digit());
    if code.trim().is_empty() || code.len() > 6 || !date_ok {
        return Err("OA is not code|YYMMDD");
    }
    Ok(Reference::Approval {
        code: code.trim().to_string(),
        date: date.to_string(),
    })
}
