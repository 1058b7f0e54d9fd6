//! A terminal or VAN asking for its own day's totals (0500 → 0510, F13): the switch's
//! figures for the terminal in field 41 (or, with none, the acquiring institution in 32),
//! in currency, one count per transaction, for the business date in field 15 (default:
//! the open one).

use crate::iso8583::{answer, de, Message, OwnedMessage, ResponseCode};

use super::{day, Books};

pub fn reconcile(books: &Books, req: &Message<'_>) -> OwnedMessage {
    let open = books.open_date();
    let date = match req.str(de::SETTLEMENT_DATE) {
        Some(mmdd) => match day::from_mmdd(&mmdd, open) {
            Some(d) => d,
            None => return answer(req, ResponseCode::FormatError),
        },
        None => open,
    };
    let who = req
        .str(de::TERMINAL_ID)
        .or_else(|| req.str(de::ACQUIRER_ID))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if who.is_empty() {
        return answer(req, ResponseCode::FormatError);
    }
    let totals = match books.terminal_totals(date, &who) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "books unreadable: 0500 answered 96");
            return answer(req, ResponseCode::SystemMalfunction);
        }
    };
    let mut resp = answer(req, ResponseCode::Approved);
    resp.set(de::SETTLEMENT_DATE, day::mmdd(date).as_bytes());
    totals.set_fields(&mut resp);
    resp
}
