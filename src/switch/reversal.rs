//! F7: a terminal's reversal (0400, or 0420/0421 advice) names the original in field 90; every
//! leg of the original is reversed through the queue. Unknown originals are answered 25,
//! already reversed ones 00 again: idempotent, never an error storm.

use crate::iso8583::{Message, OwnedMessage};

use super::{answer, rc, txn_key, Switch};

pub async fn handle(sw: &Switch, req: &Message<'_>) -> OwnedMessage {
    let od = match req.original_data() {
        Ok(Some(od)) => od,
        _ => return answer(req, rc::FORMAT_ERROR),
    };
    let key = txn_key(
        req.terminal_id().as_deref(),
        Some(od.stan),
        Some(od.transmission_time),
    );
    let Some(mut record) = sw.txns.get_mut(&key) else {
        tracing::info!(stan = od.stan, "reversal of an unknown transaction");
        return answer(req, rc::ORIGINAL_NOT_FOUND);
    };
    if !record.reversed {
        record.reversed = true;
        for (link, leg) in &record.legs {
            sw.compensator.reverse(link, leg);
        }
    }
    answer(req, rc::APPROVED)
}
