//! F6 plain credit pass-through, and the credit leg of a split tender (F5): the card's fields
//! relayed to the acquirer chosen by BIN, with the leg's amount, a new STAN and RRN.

use crate::iso8583::{de, Message, Mti, OwnedMessage, Pan};

use super::txn::{LegOutcome, Txn};
use super::{answer, rc, Switch};

/// Card and merchant fields relayed to the acquirer.
const RELAYED: [u16; 16] = [2, 3, 12, 13, 14, 18, 22, 23, 25, 35, 41, 42, 43, 49, 52, 55];

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
    msg.set_number(de::AMOUNT, amount, 12)
        .set(
            de::TRANSMISSION_TIME,
            crate::clock::transmission_time().as_bytes(),
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
                .unwrap_or(rc::SYSTEM_MALFUNCTION.as_bytes());
            CreditOutcome::Declined(String::from_utf8_lossy(code).into_owned())
        }
        LegOutcome::Declined(None) | LegOutcome::Unanswered | LegOutcome::NotRecorded => {
            CreditOutcome::Unanswered
        }
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
            let mut resp = answer(req, rc::APPROVED);
            if let Some(auth) = response.get(de::AUTH_CODE) {
                resp.set(de::AUTH_CODE, auth);
            }
            resp
        }
        CreditOutcome::Declined(code) => answer(req, &code),
        CreditOutcome::Unanswered => answer(req, rc::ISSUER_INOPERATIVE),
        CreditOutcome::NoRoute => answer(req, rc::INVALID_CARD),
    }
}
