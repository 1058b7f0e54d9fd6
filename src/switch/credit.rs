//! F6 plain credit pass-through, and the credit leg of a split tender (F5): the card's fields
//! relayed to the acquirer chosen by BIN, with the leg's amount, a new STAN and RRN.

use crate::iso8583::{de, Message, Mti, OwnedMessage, Pan};
use crate::pin::PinError;

use super::txn::{LegOutcome, Txn};
use super::Switch;
use crate::iso8583::response::answer_relaying;
use crate::iso8583::{answer, ResponseCode};

/// Card and merchant fields relayed to the acquirer (the PIN block, field 52, is translated).
const RELAYED: [u16; 15] = [2, 3, 12, 13, 14, 18, 22, 23, 25, 35, 41, 42, 43, 49, 55];

// Returned once per credit leg and matched at once: boxing the large variant would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
pub enum CreditOutcome {
    Approved {
        link: String,
        response: OwnedMessage,
    },
    /// The acquirer's decline code.
    Declined(String),
    /// Sent, no answer in time (the leg is being reversed), the link is down, or the leg
    /// could not be recorded.
    Unanswered,
    /// No acquirer serves this card.
    NoRoute,
}

/// Ask the acquirer to authorize `amount` on the card.
pub async fn credit_leg(
    sw: &Switch,
    req: &Message<'_>,
    txn: &mut Txn,
    pan: &Pan,
    amount: u64,
) -> CreditOutcome {
    let Some(link) = sw.acquirer(pan) else {
        return CreditOutcome::NoRoute;
    };
    // A repeat (0201) goes upstream as its original class (0200).
    let mut mti = *req.mti().as_bytes();
    mti[3] = b'0';
    let mut msg = OwnedMessage::new(Mti(mti));
    for n in RELAYED {
        msg.copy_from(req, n);
    }
    // A coupon purchase (F18) came without card fields: the card is the one its token holds.
    if !msg.has(de::PAN) && !msg.has(de::TRACK2) {
        msg.set(de::PAN, pan.expose().as_bytes());
    }
    if link.is_local() {
        // The hosted programs read the switch data too (a pre-registered purchase, F15).
        msg.copy_from(req, de::SWITCH_DATA);
    }
    if let Some(block) = req.field(de::PIN_BLOCK) {
        match translate_pin(sw, txn.listener(), &link.name, &block.value(), pan) {
            Ok(b) => msg.set(de::PIN_BLOCK, &b),
            Err(e) => {
                // Never the cardholder's PIN being wrong (that is the issuer's 55), never a
                // try (SPEC §10): a block that does not read under the terminal's key is a
                // format error (30); any other translation failure is the switch's (96).
                tracing::info!(error = %e, "PIN block not translated");
                let code = match e {
                    PinError::BadLength | PinError::BadFormat => ResponseCode::FormatError,
                    _ => ResponseCode::SystemMalfunction,
                };
                return CreditOutcome::Declined(code.as_str().into());
            }
        };
    }
    msg.set_number(de::AMOUNT, amount, 12)
        .set(
            de::TRANSMISSION_TIME,
            crate::clock::transmission_time_at(&sw.clock.now()).as_bytes(),
        )
        .set_number(de::STAN, u64::from(link.next_stan()), 6)
        .set(de::RRN, sw.next_rrn().as_bytes());
    // Recorded (card number sealed) before it is sent; reversed if it gets no answer.
    match txn.send_leg(link, msg, amount).await {
        LegOutcome::Approved { answer, .. } => CreditOutcome::Approved {
            link: link.name.to_string(),
            response: answer,
        },
        LegOutcome::Declined(Some(a)) => {
            let code = a
                .get(de::RESPONSE_CODE)
                .unwrap_or(ResponseCode::SystemMalfunction.as_bytes());
            CreditOutcome::Declined(String::from_utf8_lossy(code).into_owned())
        }
        // A transaction needing more legs than it may have is declined (nothing sent).
        LegOutcome::TooManyLegs => {
            CreditOutcome::Declined(ResponseCode::NotPermitted.as_str().into())
        }
        LegOutcome::Declined(None) | LegOutcome::Unanswered | LegOutcome::NotRecorded => {
            CreditOutcome::Unanswered
        }
    }
}

/// The PIN block re-encrypted from the terminal's key to the link's (as an HSM would); relayed
/// as it came when either side has no key configured.
fn translate_pin(
    sw: &Switch,
    listener: &str,
    link: &str,
    block: &[u8],
    pan: &Pan,
) -> Result<Vec<u8>, PinError> {
    match (sw.pin_key(listener), sw.pin_key(link)) {
        (Some(from), Some(to)) => {
            crate::pin::translate(from, to, block, pan.expose()).map(|b| b.to_vec())
        }
        _ => Ok(block.to_vec()),
    }
}

/// F6: relay and answer with the acquirer's response code.
pub async fn pass_through(
    sw: &Switch,
    req: &Message<'_>,
    txn: &mut Txn,
    pan: &Pan,
) -> OwnedMessage {
    let amount = req.amount().unwrap_or(0);
    match credit_leg(sw, req, txn, pan, amount).await {
        CreditOutcome::Approved { response, .. } => {
            let mut resp = answer(req, ResponseCode::Approved);
            // Only what the terminal's layout can carry: a host's malformed field must not
            // turn an approval into an answer that cannot be sent.
            let auth = auth_of(&response);
            if !auth.is_empty() {
                resp.set(de::AUTH_CODE, &padded_auth(&auth));
            }
            if let Some(v) = response.get(de::ADDITIONAL_AMOUNTS) {
                match additional_amounts(v) {
                    Some(blocks) => {
                        resp.set(de::ADDITIONAL_AMOUNTS, &blocks);
                    }
                    None => tracing::warn!("acquirer's field 54 is malformed: not relayed"),
                }
            }
            resp
        }
        CreditOutcome::Declined(code) => answer_relaying(req, code.as_bytes()),
        CreditOutcome::Unanswered => answer(req, ResponseCode::IssuerInoperative),
        CreditOutcome::NoRoute => answer(req, ResponseCode::InvalidCard),
    }
}

/// A host's approval code (field 38) as a terminal may be given it, trimmed: one to six
/// letters, digits or spaces. Anything else is not echoed (empty; logged): a host's
/// malformed field must not make an approval fail to encode, nor break an `LG` element.
pub(super) fn auth_of(answer: &OwnedMessage) -> String {
    let Some(v) = answer.get(de::AUTH_CODE) else {
        return String::new();
    };
    let ok =
        !v.is_empty() && v.len() <= 6 && v.iter().all(|b| b.is_ascii_alphanumeric() || *b == b' ');
    if !ok {
        tracing::warn!(
            len = v.len(),
            "a host's approval code is malformed: not relayed"
        );
        return String::new();
    }
    String::from_utf8_lossy(v).trim().to_string()
}

/// An approval code padded to field 38's six characters.
pub(super) fn padded_auth(auth: &str) -> Vec<u8> {
    let mut a = auth.as_bytes().to_vec();
    a.resize(6, b' ');
    a.truncate(6);
    a
}

/// A host's field 54 as the terminal's layout holds it: its blocks parsed and written again
/// (at most six); `None` when they do not parse.
pub(super) fn additional_amounts(v: &[u8]) -> Option<Vec<u8>> {
    let blocks = crate::iso8583::AdditionalAmount::parse_all(v).ok()?;
    if blocks.is_empty() {
        return None;
    }
    Some(crate::iso8583::AdditionalAmount::encode_all(
        &blocks[..blocks.len().min(6)],
    ))
}
