//! What a request must carry before it is routed: one table per message class and
//! processing code (SPEC §4.2: a message that decodes but lacks a mandatory field is answered
//! 30; a money request for no money, 13). Checked once, before any flow, so no path — wallet,
//! credit relay, hosted — can approve what it could not have read.

use crate::iso8583::{de, Message, ResponseCode};

/// Every request of these classes: what names it (duplicates, follow-ups) and what it is.
const NETWORK: &[u16] = &[de::NETWORK_CODE];
const FINANCIAL: &[u16] = &[
    de::PROCESSING_CODE,
    de::TRANSMISSION_TIME,
    de::STAN,
    de::TERMINAL_ID,
];
/// Reversals (0400/0420/0421) and completions (0220/0221 naming their original).
const FOLLOW_UP: &[u16] = &[
    de::TRANSMISSION_TIME,
    de::STAN,
    de::TERMINAL_ID,
    de::ORIGINAL_DATA,
];

/// Processing codes (first two digits) that move money: they need an amount above zero.
/// Balance inquiries (31) need neither amount nor more than the card.
const MONEY: &[u8] = &[0, 20, 21];

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

/// Check `req` against the table; `follow_up`: it names an original in field 90 (a reversal,
/// or a completion).
pub fn check(req: &Message<'_>, follow_up: bool) -> Result<(), Refusal> {
    let class = req.mti().class();
    let follow_up = follow_up || class == 4;
    let fields = match class {
        8 => NETWORK,
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
    if !req.has(de::PAN) && !req.has(de::TRACK2) {
        return Err(missing(de::PAN));
    }
    let money = follow_up || req.transaction_type().is_some_and(|tt| MONEY.contains(&tt));
    if money {
        match req.amount() {
            None => return Err(missing(de::AMOUNT)),
            Some(0) => {
                return Err(Refusal {
                    code: ResponseCode::InvalidAmount,
                    reason: "a money request for no money".into(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
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
        let spec = Spec::resolve("iso87-ascii").unwrap();
        let mut m = OwnedMessage::new(Mti::new(mti).unwrap());
        for (n, v) in fields {
            m.set(*n, v.as_bytes());
        }
        let mut buf = bytes::BytesMut::new();
        spec.encode(&m, &mut buf).unwrap();
        let decoded = spec.decode(&buf).unwrap();
        check(&decoded, follow_up)
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
