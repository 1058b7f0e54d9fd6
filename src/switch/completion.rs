//! Completing an authorization (SPEC §7: "completion posts it"): a 0220 (0221 when repeated)
//! naming an approved 0100 by field 90, with the amount to take in field 4. The switch
//! queues a completion of each of the authorization's legs that holds money until completed
//! (acquirers, hosted card programs) through the store-and-forward queue, and acknowledges
//! once that is durable: like a reversal, a completion is an advice the switch must deliver,
//! not a question it passes on. Unknown originals are answered 25, originals that are not
//! approved authorizations (or were reversed) 12, an amount the legs cannot take 13; a
//! repeat is acknowledged again without a second completion.

use crate::config::{LinkKind, HOSTED_CARDS_LINK};
use crate::iso8583::{Message, OwnedMessage};

use super::followup::{self, Completion};
use super::testhooks::crash_point;
use super::Switch;
use crate::iso8583::{answer, ResponseCode};

/// Is this request a completion (an advice naming its original, for a purchase)?
pub fn is_completion(sw: &Switch, req: &Message<'_>) -> bool {
    // Cheapest first: every 0200 asks.
    req.mti().as_bytes()[2] == b'2'
        && req.has(crate::iso8583::de::ORIGINAL_DATA)
        && req
            .transaction_type()
            .is_some_and(|tt| sw.config.processing_codes.purchase.contains(&tt))
}

pub async fn handle(sw: &Switch, req: &Message<'_>, listener: &str) -> OwnedMessage {
    let (od, amount) = match (req.original_data(), req.amount()) {
        (Ok(Some(od)), Some(amount)) => (od, amount),
        _ => return answer(req, ResponseCode::FormatError),
    };
    // As a reversal does: the original may still be in flight, and a completion and a
    // reversal of one original go one at a time.
    let (key, _one_at_a_time) = sw.hold_original(listener, req, &od).await;
    let holds = |link: &str| {
        link == HOSTED_CARDS_LINK
            || sw
                .config
                .links
                .iter()
                .any(|l| l.name == link && l.kind == LinkKind::Acquirer)
    };
    match followup::complete_answered(&sw.journal, &sw.saf, &key, amount, holds).await {
        Ok(Completion::Queued) => {
            // The completions are durable and queued; the terminal has not heard yet, and will
            // repeat its advice (0221) after a crash here.
            crash_point("completion-queued").await;
            answer(req, ResponseCode::Approved)
        }
        Ok(Completion::Repeat | Completion::Final) => answer(req, ResponseCode::Approved),
        Ok(Completion::Unknown) => answer(req, ResponseCode::OriginalNotFound),
        Ok(Completion::NotCompletable) => answer(req, ResponseCode::InvalidTransaction),
        Ok(Completion::BadAmount) => answer(req, ResponseCode::InvalidAmount),
        Err(e) => {
            tracing::error!(error = %e, "completion not recorded");
            answer(req, ResponseCode::SystemMalfunction)
        }
    }
}
