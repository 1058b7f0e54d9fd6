//! F7: a terminal's reversal (0400, or 0420/0421 advice) names the original in field 90; every
//! leg of the original that may hold money is reversed through the store-and-forward queue.
//! Unknown originals are answered 25, already reversed ones 00 again: idempotent, never an
//! error storm. An original still being processed is waited for: a terminal reverses what it
//! gave up waiting on, and the original may yet be approved; answering 25 then would leave
//! its money taken (a terminal need not repeat a reversal answered "no such original").
//! A reversal of a transaction never seen is answered 25 and remembered: the original, should
//! it arrive after its own reversal, is declined (12) without moving money.
//! The 0410 lists every leg undone in `LG` (SPEC §4.3). A purchase that refunds gave part of
//! back is not reversed (12): a reversal undoes whole legs upstream, and would give that part
//! back twice; a reversed refund makes what it gave refundable again.

use crate::iso8583::{Message, OwnedMessage};

use super::followup;
use super::txn::TxnState;
use super::Switch;
use crate::iso8583::{answer, ResponseCode};

pub async fn handle(sw: &Switch, req: &Message<'_>, listener: &str) -> OwnedMessage {
    let od = match req.original_data() {
        Ok(Some(od)) => od,
        _ => return answer(req, ResponseCode::FormatError),
    };
    let (key, _one_at_a_time) = sw.hold_original(listener, req, &od).await;
    if followup::refunded(&sw.journal, &key) {
        tracing::info!(
            stan = od.stan,
            "reversal of a purchase refunds gave back part of"
        );
        return answer(req, ResponseCode::InvalidTransaction);
    }
    // Reversing a refund gives the purchase back what the refund took from it: the purchase
    // is held too, so that no refund of it runs meanwhile.
    let purchase = followup::record(&sw.journal, &key)
        .and_then(|r| r.refund_of)
        .and_then(|k| super::registry::TxnId::from_record_key(&k));
    let _purchase_held = match &purchase {
        Some(id) => Some(sw.registry.hold(id).await),
        None => None,
    };
    match followup::reverse_answered(&sw.journal, &sw.saf, &key, "terminal reversal").await {
        Ok(None) => {
            // Maybe not arrived yet (the terminal gave up before its request reached us): it
            // is remembered, and the original, if it comes, is declined.
            tracing::info!(stan = od.stan, "reversal of an unknown transaction");
            let now = sw.clock.now_ms();
            match followup::remember_reversed_unseen(&sw.journal, &key, now).await {
                Ok(()) => answer(req, ResponseCode::OriginalNotFound),
                Err(e) => {
                    // Not remembered: the terminal must try again.
                    tracing::error!(error = %e, "reversal of an unseen transaction not remembered");
                    answer(req, ResponseCode::SystemMalfunction)
                }
            }
        }
        Ok(Some(TxnState::Open)) => {
            tracing::info!(stan = od.stan, "reversal of an unanswered transaction");
            answer(req, ResponseCode::OriginalNotFound)
        }
        Ok(Some(_)) => {
            let mut resp = answer(req, ResponseCode::Approved);
            if let Some(record) = followup::record(&sw.journal, &key) {
                let legs = super::refund::reversed_legs(sw, &record);
                if !legs.is_empty() {
                    resp.set(crate::iso8583::de::SWITCH_DATA, legs.as_bytes());
                }
            }
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "reversal not recorded");
            answer(req, ResponseCode::SystemMalfunction)
        }
    }
}
