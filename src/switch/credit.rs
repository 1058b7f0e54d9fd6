//! F6 plain credit pass-through, and the credit leg of a split tender (F5): the card's fields
//! relayed to the acquirer chosen by BIN, with the leg's amount, a new STAN and RRN.

use crate::iso8583::{de, Message, Mti, OwnedMessage, Pan};

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
    if link.is_local() {
        // The hosted programs read the switch data too (a pre-registered purchase, F15).
        msg.copy_from(req, de::SWITCH_DATA);
    }
    if let Some(block) = req.field(de::PIN_BLOCK) {
        match translate_pin(sw, txn.listener(), &link.name, &block.value(), pan) {
            Ok(b) => msg.set(de::PIN_BLOCK, &b),
            Err(e) => {
                tracing::info!(error = %e, "PIN block does not decrypt under the terminal key");
                return CreditOutcome::Declined(ResponseCode::IncorrectPin.as_str().into());
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
) -> Result<Vec<u8>, crate::pin::PinError> {
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
            for n in [de::AUTH_CODE, de::ADDITIONAL_AMOUNTS] {
                if let Some(v) = response.get(n) {
                    resp.set(n, v);
                }
            }
            resp
        }
        CreditOutcome::Declined(code) => answer_relaying(req, code.as_bytes()),
        CreditOutcome::Unanswered => answer(req, ResponseCode::IssuerInoperative),
        CreditOutcome::NoRoute => answer(req, ResponseCode::InvalidCard),
    }
}
