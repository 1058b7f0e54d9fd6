//! F7: a terminal's reversal (0400, or 0420/0421 advice) names the original in field 90; every
//! leg of the original that may hold money is reversed through the store-and-forward queue.
//! Unknown originals are answered 25, already reversed ones 00 again: idempotent, never an
//! error storm. An original still being processed is waited for: a terminal reverses what it
//! gave up waiting on, and the original may yet be approved; answering 25 then would leave
//! its money taken (a terminal need not repeat a reversal answered "no such original").

use crate::iso8583::{Message, OwnedMessage};

use super::txn::{self, TxnState};
use super::{answer, rc, Switch};

pub async fn handle(sw: &Switch, req: &Message<'_>) -> OwnedMessage {
    let od = match req.original_data() {
        Ok(Some(od)) => od,
        _ => return answer(req, rc::FORMAT_ERROR),
    };
    let (key, _one_at_a_time) = sw.hold_original(req, &od).await;
    match txn::reverse_answered(&sw.journal, &sw.saf, &key, "terminal reversal").await {
        Ok(None) | Ok(Some(TxnState::Open)) => {
            tracing::info!(stan = od.stan, "reversal of an unknown transaction");
            answer(req, rc::ORIGINAL_NOT_FOUND)
        }
        Ok(Some(_)) => answer(req, rc::APPROVED),
        Err(e) => {
            tracing::error!(error = %e, "reversal not recorded");
            answer(req, rc::SYSTEM_MALFUNCTION)
        }
    }
}
