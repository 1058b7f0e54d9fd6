//! What a request must carry before it is routed: one table per message class and
//! processing code (SPEC §4.2: a message that decodes but lacks a mandatory field is answered
//! 30; a money request for no money, 13). Checked once, before any flow, so no path — wallet,
//! credit relay, hosted — can approve what it could not have read.

use crate::config::ProcessingCodes;
use crate::iso8583::{de, Message, ResponseCode};

/// Every request of these classes: what names it (duplicates, follow-ups) and what it is.
const NETWORK: &[u16] = &[de::NETWORK_CODE];
const FINANCIAL: &[u16] = &[
    de::PROCESSING_CODE,
    de::TRANSMISSION_TIME,
    de::STAN,
    de::TERMINAL_ID,
];
/// Reconciliation (0500): what its answer is matched by; who it is about (41 or 32) is the
/// books' to check.
const RECONCILIATION: &[u16] = &[de::TRANSMISSION_TIME, de::STAN];
/// Reversals (0400/0420/0421) and completions (0220/0221 naming their original).
const FOLLOW_UP: &[u16] = &[
    de::TRANSMISSION_TIME,
    de::STAN,
    de::TERMINAL_ID,
    de::ORIGINAL_DATA,
];

/// What a request is, as far as its mandatory fields go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A request standing on its own: it needs its card.
    Request,
    /// A reversal or a completion: it names its original in field 90.
    FollowUp,
    /// A refund (F8): an amount, and its original named by field 90, or tag `OR` or `OA`
    /// of field 48; no card (the original's legs know it).
    Refund,
}

/// Why a request may not be routed: the code to answer, and what was wrong (for the log,
/// never a field's value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ResponseCode,
    pub reason: String,
}

fn missing(field: u16) -> Refusal {
    Refusal {
        code: ResponseCode::FormatError,
        reason: format!("mandatory field {field} missing"),
    }
}

/// Check `req` against the table. Money requests (the configured purchase, refund and load
/// processing codes) need an amount above zero; balance inquiries need neither amount nor
/// more than the card.
pub fn check(req: &Message<'_>, shape: Shape, codes: &ProcessingCodes) -> Result<(), Refusal> {
    let class = req.mti().class();
    if shape == Shape::Refund && matches!(class, 1 | 2) {
        return refund(req);
    }
    let follow_up = shape == Shape::FollowUp || class == 4;
    let fields = match class {
        8 => NETWORK,
        5 => RECONCILIATION,
        4 => FOLLOW_UP,
        1 | 2 if follow_up => FOLLOW_UP,
        1 | 2 => FINANCIAL,
        // Other classes are refused by routing (12); nothing to require here.
        _ => return Ok(()),
    };
    if let Some(&field) = fields.iter().find(|&&n| !req.has(n)) {
        return Err(missing(field));
    }
    if follow_up {
        return original_named(req);
    }
    if !matches!(class, 1 | 2) {
        return Ok(());
    }
    // A mobile coupon (tag `CP`, F18) stands for the card.
    if !req.has(de::PAN) && !req.has(de::TRACK2) && !has_coupon(req) {
        return Err(missing(de::PAN));
    }
    let money = req.transaction_type().is_some_and(|tt| {
        codes.purchase.contains(&tt) || codes.refund.contains(&tt) || codes.load.contains(&tt)
    });
    if money {
        amount_above_zero(req)?;
    }
    Ok(())
}

fn has_coupon(req: &Message<'_>) -> bool {
    req.switch_data()
        .is_ok_and(|tags| tags.iter().any(|(tag, _)| tag == "CP"))
}

fn amount_above_zero(req: &Message<'_>) -> Result<(), Refusal> {
    match req.amount() {
        None => Err(missing(de::AMOUNT)),
        Some(0) => Err(Refusal {
            code: ResponseCode::InvalidAmount,
            reason: "a money request for no money".into(),
        }),
        Some(_) => Ok(()),
    }
}

/// A refund: the fields of any financial request, an amount, and its original named.
fn refund(req: &Message<'_>) -> Result<(), Refusal> {
    if let Some(&field) = FINANCIAL.iter().find(|&&n| !req.has(n)) {
        return Err(missing(field));
    }
    amount_above_zero(req)?;
    if req.has(de::ORIGINAL_DATA) {
        return original_named(req);
    }
    let tagged = req
        .switch_data()
        .map_err(|_| Refusal {
            code: ResponseCode::FormatError,
            reason: "field 48 is malformed".into(),
        })?
        .iter()
        .any(|(tag, _)| tag == "OR" || tag == "OA");
    if tagged {
        Ok(())
    } else {
        Err(Refusal {
            code: ResponseCode::FormatError,
            reason: "a refund names no original (field 90, or tag OR or OA)".into(),
        })
    }
}

/// A follow-up names, in field 90, an authorization or financial request (class 1 or 2)
/// that is not itself: one naming itself would wait for its own answer for ever.
fn original_named(req: &Message<'_>) -> Result<(), Refusal> {
    let refuse = |reason: &str| Refusal {
        code: ResponseCode::FormatError,
        reason: reason.to_string(),
    };
    let od = match req.original_data() {
        Ok(Some(od)) => od,
        _ => return Err(refuse("field 90 unreadable")),
    };
    if !matches!(od.mti.class(), 1 | 2) {
        return Err(refuse("field 90 names no financial request"));
    }
    let itself = od.mti.class() == req.mti().class()
        && Some(od.stan) == req.stan()
        && Some(od.transmission_time) == req.transmission_time();
    if itself {
        return Err(refuse("field 90 names the request itself"));
    }
    let amount = req.amount();
    if req.mti().class() == 2 && amount.is_none() {
        return Err(missing(de::AMOUNT));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::{Mti, OwnedMessage, Spec};

    fn check_of(mti: &[u8; 4], fields: &[(u16, &str)], follow_up: bool) -> Result<(), Refusal> {
        let shape = if follow_up {
            Shape::FollowUp
        } else {
            Shape::Request
        };
        check_shaped(mti, fields, shape)
    }

    fn check_shaped(mti: &[u8; 4], fields: &[(u16, &str)], shape: Shape) -> Result<(), Refusal> {
        let spec = Spec::resolve("iso87-ascii").unwrap();
        let mut m = OwnedMessage::new(Mti::new(mti).unwrap());
        for (n, v) in fields {
            m.set(*n, v.as_bytes());
        }
        let mut buf = bytes::BytesMut::new();
        spec.encode(&m, &mut buf).unwrap();
        let decoded = spec.decode(&buf).unwrap();
        check(&decoded, shape, &ProcessingCodes::default())
    }

    #[test]
    fn a_refund_needs_an_amount_and_its_original_but_no_card() {
        let mut f: Vec<(u16, &str)> = BASE[1..].to_vec();
        f.push((3, "200000"));
        assert_eq!(check_shaped(b"0200", &f, Shape::Refund), Err(missing(4)));
        f.push((4, "000000001000"));
        let refused = check_shaped(b"0200", &f, Shape::Refund).unwrap_err();
        assert_eq!(refused.code, ResponseCode::FormatError);
        assert!(refused.reason.contains("names no original"), "{refused:?}");
        let mut by_rrn = f.clone();
        by_rrn.push((48, "OR012123456789012"));
        assert_eq!(check_shaped(b"0200", &by_rrn, Shape::Refund), Ok(()));
        let mut by_90 = f.clone();
        by_90.push((90, "020000000212061200000000000000000000000000"));
        assert_eq!(check_shaped(b"0200", &by_90, Shape::Refund), Ok(()));
    }

    const BASE: [(u16, &str); 5] = [
        (2, "9410000000000021"),
        (7, "1206120000"),
        (11, "000001"),
        (41, "TERM0001"),
        (49, "410"),
    ];

    #[test]
    fn a_purchase_needs_its_amount_on_every_path() {
        let mut f = BASE.to_vec();
        f.push((3, "000000"));
        assert_eq!(check_of(b"0200", &f, false), Err(missing(4)));
        f.push((4, "000000000000"));
        assert_eq!(
            check_of(b"0200", &f, false).map_err(|r| r.code),
            Err(ResponseCode::InvalidAmount)
        );
        f.pop();
        f.push((4, "000000020000"));
        assert_eq!(check_of(b"0200", &f, false), Ok(()));
    }

    #[test]
    fn an_inquiry_needs_no_amount_but_a_card() {
        let mut f = BASE.to_vec();
        f.push((3, "310000"));
        assert_eq!(check_of(b"0100", &f, false), Ok(()));
        f.remove(0);
        assert_eq!(check_of(b"0100", &f, false), Err(missing(2)));
    }

    #[test]
    fn follow_ups_need_their_original_and_network_messages_their_code() {
        let f = BASE.to_vec();
        assert_eq!(check_of(b"0400", &f, false), Err(missing(90)));
        let net = [(7, "1206120000"), (11, "000001")];
        assert_eq!(check_of(b"0800", &net, false), Err(missing(70)));
        assert_eq!(check_of(b"0800", &[(70, "301")], false), Ok(()));
    }
}
