//! The queue's workers: one per link, trying each due item in turn (reversal 0400 → 0420 →
//! 0421, completion 0220 → 0221), with its own back-off.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::dead_letters::dead_letter;
use super::{to_bytes, Item, Saf};
use crate::iso8583::{Mti, OriginalData, OwnedMessage, ResponseCode};
use crate::journal::{Entry, EntryKind, Step};
use crate::net::link::Link;
use crate::store::Cf;

/// Build the reversal of a leg: the leg's own fields, a fresh transmission time, and field 90
/// naming the leg (MTI, STAN, transmission time). The STAN is the leg's, so the host matches
/// the answer by the same key.
fn reversal_of(
    leg: &OwnedMessage,
    mti: [u8; 4],
    now: chrono::DateTime<chrono::Utc>,
) -> OwnedMessage {
    let mut rev = OwnedMessage::new(Mti(mti));
    for (n, v) in leg.fields() {
        if n != 7 {
            rev.set(n, v);
        }
    }
    let num = |n: u16| {
        leg.get(n)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    rev.set(7, crate::clock::transmission_time_at(&now).as_bytes());
    rev.set_original_data(&OriginalData {
        mti: leg.mti(),
        stan: num(11) as u32, // ok: six digits
        transmission_time: num(7),
        acquirer_id: 0,
        forwarder_id: 0,
    });
    rev
}

enum Attempt {
    /// Acknowledged with this code; what it moved is booked on the attempt's business date.
    Acknowledged(Acknowledgement),
    /// No answer, or an answer that says "not now" (91, 96): try again after the back-off.
    Later,
    /// A definite answer that is not an acknowledgement: repeating it cannot help.
    Refused(String),
    /// The item cannot be sent at all (its sealed request does not open).
    Unsendable(String),
}

/// What an acknowledged attempt needs to be booked (F13).
struct Acknowledgement {
    code: ResponseCode,
    /// The leg's own amount in the host's units (field 4 of its request).
    leg_units: u64,
    merchant: String,
    terminal: String,
    /// The business date the attempt carried, held until its booking is handed to the
    /// journal (a cut-over waits for it).
    day: crate::books::DayTicket,
    /// The leg gave money (a refund or credit, processing code 20): what a reversal of a
    /// leg never booked books it as.
    gave: bool,
}

/// Field 41 of a blind reversal (what its bookings are listed under): the leg's own
/// terminal is not known.
pub const BLIND_TERMINAL: &str = "BLINDREV";

/// A blind reversal (see [`crate::switch::legs_ahead`]): 0400, 0420, then 0421 repeats
/// naming the leg by field 37 alone (field 90's STAN and time zero). Acknowledged by 00 (the
/// host undid it, and says in fields 3 and 4 what it was) or 25 (it never saw it).
async fn blind_attempt(saf: &Saf, link: &Link, item: &Item, identity: &str) -> Attempt {
    let mti = match item.attempts {
        0 => *b"0400",
        1 => *b"0420",
        _ => *b"0421",
    };
    let mut rev = OwnedMessage::new(Mti(mti));
    rev.set(
        7,
        crate::clock::transmission_time_at(&saf.clock.now()).as_bytes(),
    )
    .set_number(11, u64::from(link.next_stan()), 6)
    .set(37, identity.as_bytes())
    .set(41, BLIND_TERMINAL.as_bytes());
    rev.set_original_data(&OriginalData {
        mti: Mti(*b"0200"),
        stan: 0,
        transmission_time: 0,
        acquirer_id: 0,
        forwarder_id: 0,
    });
    let day = saf.books.ticket();
    rev.set(
        crate::iso8583::de::SETTLEMENT_DATE,
        crate::books::day::mmdd(day.date).as_bytes(),
    );
    let acknowledged = [ResponseCode::Approved, ResponseCode::OriginalNotFound];
    match link.request(rev).await {
        Ok(a) if a.code().is_some_and(|c| acknowledged.contains(&c)) => {
            Attempt::Acknowledged(Acknowledgement {
                code: a.code().unwrap_or(ResponseCode::Approved),
                leg_units: a.amount_units(),
                merchant: String::new(),
                terminal: BLIND_TERMINAL.to_string(),
                day,
                gave: a.transaction_type() == Some(20),
            })
        }
        Ok(a) => answered_otherwise(&a),
        Err(_) => Attempt::Later,
    }
}

/// An answer that acknowledges nothing: "not now" (91, 96) is tried again; any other code
/// is a refusal.
fn answered_otherwise(a: &OwnedMessage) -> Attempt {
    match a.code() {
        Some(ResponseCode::IssuerInoperative | ResponseCode::SystemMalfunction) => Attempt::Later,
        _ => {
            let code = a.get(39).map(String::from_utf8_lossy).unwrap_or_default();
            Attempt::Refused(format!("refused by the host with {code}"))
        }
    }
}

async fn attempt(saf: &Saf, link: &Link, item: &Item) -> Attempt {
    if item.complete.is_some() {
        // Test-only: a completion held before it is sent, keyed by its authorization's STAN.
        let stan = crate::switch::registry::TxnId::from_record_key(&item.txn).map(|id| id.stan());
        crate::switch::testhooks::pause_point("completion-attempt", stan).await;
    }
    if let Some(identity) = &item.blind {
        return blind_attempt(saf, link, item, identity).await;
    }
    let sealed = match hex::decode(&item.sealed) {
        Ok(s) => s,
        Err(e) => return Attempt::Unsendable(format!("sealed request is not hex: {e}")),
    };
    let leg = match saf
        .journal
        .sealer()
        .open(&sealed, item.txn.as_bytes())
        .and_then(|plain| OwnedMessage::unpack(&plain))
    {
        Ok(m) => m,
        Err(e) => return Attempt::Unsendable(e),
    };
    let (message, acknowledged): (_, &[ResponseCode]) = match item.complete {
        // A refund leg's advice: the leg itself (same STAN and transmission time, so the
        // host knows it if the request did arrive), as 0220 then 0221. Only 00 will do.
        None if item.advice => {
            let mut advice = leg.clone();
            advice.set_mti(Mti(if item.attempts == 0 {
                *b"0220"
            } else {
                *b"0221"
            }));
            (advice, &[ResponseCode::Approved])
        }
        // First a reversal, then advices: 0420, and 0421 for every repeat. 25: the host has
        // nothing to reverse, which is what was asked.
        None => {
            let mti = match item.attempts {
                0 => *b"0400",
                1 => *b"0420",
                _ => *b"0421",
            };
            (
                reversal_of(&leg, mti, saf.clock.now()),
                &[ResponseCode::Approved, ResponseCode::OriginalNotFound],
            )
        }
        // A completion advice, 0221 for every repeat. Only 00 will do: anything else leaves
        // the money untaken, so it is retried and, past the expiry, a dead letter.
        Some(amount) => {
            let mti = if item.attempts == 0 {
                *b"0220"
            } else {
                *b"0221"
            };
            let mut completion = reversal_of(&leg, mti, saf.clock.now());
            completion.set_number(4, amount, 12);
            (completion, &[ResponseCode::Approved])
        }
    };
    let mut message = message;
    let day = saf.books.ticket();
    message.set(
        crate::iso8583::de::SETTLEMENT_DATE,
        crate::books::day::mmdd(day.date).as_bytes(),
    );
    let text = |n| {
        leg.get(n)
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
            .unwrap_or_default()
    };
    match link.request(message).await {
        Ok(a) if a.code().is_some_and(|c| acknowledged.contains(&c)) => {
            Attempt::Acknowledged(Acknowledgement {
                code: a.code().unwrap_or(ResponseCode::Approved),
                leg_units: leg.amount_units(),
                merchant: text(42),
                terminal: text(41),
                day,
                gave: leg.transaction_type() == Some(20),
            })
        }
        Ok(a) => answered_otherwise(&a),
        Err(_) => Attempt::Later,
    }
}

pub(super) async fn worker(saf: Arc<Saf>, link_name: String, stop: CancellationToken) {
    let Some(link) = saf.links.get().and_then(|l| l.get(&link_name)).cloned() else {
        return;
    };
    let timing = saf.timing;
    let max_attempts = timing.max_attempts();
    let oldest_age =
        metrics::gauge!("cyberswitch_saf_oldest_age_seconds", "link" => link_name.clone());
    // The oldest item's age is found by going through the lane: once a second is enough for
    // a gauge, where a busy lane is worked through thousands of times a second.
    let mut gauged_at: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        if gauged_at.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
            let now_ms = saf.clock.now_ms();
            oldest_age.set(saf.oldest_age_s(&link_name, now_ms));
            saf.refresh_dead_letter_gauges(&link_name, now_ms);
            gauged_at = Some(now);
        }
        let (key, item) = match saf.next_due(&link_name, now) {
            Ok(due) => due,
            Err(soonest) => {
                // Nothing due: sleep until the next one is (or something new is queued).
                let wait = soonest.map_or(Duration::from_secs(1), |at| at - now);
                if !pause(&saf, &stop, wait.min(Duration::from_secs(1))).await {
                    return;
                }
                continue;
            }
        };
        if item.attempts == u32::MAX {
            dead_letter(&saf, &link_name, key, item, "unreadable item").await;
            continue;
        }
        if !link.is_up() {
            // Paused: the link is down; no attempt is spent and nothing ages.
            if !pause(&saf, &stop, timing.retry_min).await {
                return;
            }
            continue;
        }
        match attempt(&saf, &link, &item).await {
            Attempt::Acknowledged(ack) => acknowledged(&saf, &link_name, key, &item, ack).await,
            Attempt::Unsendable(why) | Attempt::Refused(why) => {
                dead_letter(&saf, &link_name, key, item, &why).await;
            }
            // An attempt that failed because the switch is stopping (a link closing, the
            // hosted ledger refusing writes) is not the host's doing: not counted, so an
            // item at its last attempt is not dead-lettered by a stop. It is due again at
            // the next start.
            Attempt::Later if stop.is_cancelled() => return,
            Attempt::Later => {
                let mut item = item;
                item.attempts = item.attempts.saturating_add(1);
                if item.attempts >= max_attempts {
                    let why = format!("unacknowledged after {} attempts", item.attempts);
                    dead_letter(&saf, &link_name, key, item, &why).await;
                    continue;
                }
                let backoff = timing.backoff(item.attempts - 1);
                item.next = Some(tokio::time::Instant::now() + backoff);
                let mut step = Step::new();
                step.put(Cf::Saf, key.clone(), to_bytes(&item));
                if saf.journal.commit(step).await.is_ok() {
                    saf.update(&link_name, &key, Some(&item));
                } else if !pause(&saf, &stop, backoff).await {
                    return;
                }
            }
        }
    }
}

/// An item the host acknowledged leaves the queue, what it moved booked in the same step.
async fn acknowledged(saf: &Saf, link_name: &str, key: Vec<u8>, item: &Item, ack: Acknowledgement) {
    crate::switch::testhooks::crash_point("saf-acked").await;
    if item.advice {
        // A refund leg's advice acknowledged, not yet removed: sent again after a restart,
        // and the host must answer the repeat as the first, giving nothing twice.
        crate::switch::testhooks::crash_point("saf-advice-acked").await;
    }
    let mut step = Step::new();
    book(saf, &mut step, link_name, item, &ack);
    step.delete(Cf::Saf, key.clone());
    step.append(Entry::new(
        EntryKind::Saf,
        &item.txn,
        link_name,
        format!("leg {} {} acknowledged", item.leg, item.kind()),
    ));
    // The next item goes without waiting for this deletion to be written: until it is, a
    // restart sends the item again, and a host answers a repeated reversal or completion as
    // the first (delivery is at least once anyway). Waiting held a lane to one item per
    // journal write.
    saf.update(link_name, &key, None);
    if let Err(e) = saf.journal.submit(step, |_| {}).await {
        tracing::error!(link = %link_name, error = %e, "acknowledged item not removed from the store; sent again at the next start");
    }
    let acknowledged = match item.kind() {
        "reversal" => "cyberswitch_reversals_acknowledged_total",
        "completion" => "cyberswitch_completions_acknowledged_total",
        _ => "cyberswitch_refund_advices_acknowledged_total",
    };
    metrics::counter!(acknowledged, "link" => link_name.to_string()).increment(1);
}

/// Book what an acknowledged item moved (see [`crate::books`]): a reversal undoes what its
/// leg booked — or, answered 00 for a leg never booked (approved after its timeout), books
/// the leg and its undoing both; a refund advice gives; a completion for less gives back the
/// difference. A reversal answered 25 moved nothing.
fn book(saf: &Saf, step: &mut Step, link: &str, item: &Item, ack: &Acknowledgement) {
    use crate::books::{Event, EventKind, LegAt, Standing};
    if ack.code != ResponseCode::Approved {
        return;
    }
    let books = &saf.books;
    let at = LegAt {
        link,
        txn: &item.txn,
        leg: item.leg,
    };
    let standing = books.standing(at);
    let amount = item.amount.unwrap_or(ack.leg_units);
    let event = |kind, units, amount| Event {
        kind,
        units,
        amount,
        merchant: ack.merchant.clone(),
        terminal: ack.terminal.clone(),
    };
    let date = ack.day.date;
    match (item.complete, item.advice, standing) {
        (None, false, Some(s)) => {
            let kind = match s.kind {
                EventKind::Credit => EventKind::CreditReversal,
                _ => EventKind::DebitReversal,
            };
            books.book(step, date, at, 'R', &event(kind, s.units, s.amount), None);
        }
        (None, false, None) => {
            let (moved, undone) = if ack.gave {
                (EventKind::Credit, EventKind::CreditReversal)
            } else {
                (EventKind::Debit, EventKind::DebitReversal)
            };
            let tag = if ack.gave { 'C' } else { 'D' };
            books.book(
                step,
                date,
                at,
                tag,
                &event(moved, ack.leg_units, amount),
                None,
            );
            books.book(
                step,
                date,
                at,
                'R',
                &event(undone, ack.leg_units, amount),
                None,
            );
        }
        (None, true, None) => {
            let given = Standing {
                kind: EventKind::Credit,
                units: ack.leg_units,
                amount,
            };
            let credit = event(EventKind::Credit, ack.leg_units, amount);
            books.book(step, date, at, 'C', &credit, Some(given));
        }
        (Some(completed), _, Some(s)) if s.units > completed => {
            let back_units = s.units - completed;
            let back = s.amount.saturating_sub(completed);
            let rest = Standing {
                kind: s.kind,
                units: completed,
                amount: completed,
            };
            let partial = event(EventKind::DebitReversal, back_units, back);
            books.book(step, date, at, 'P', &partial, Some(rest));
        }
        // An advice already booked, a completion of the whole amount: nothing moves.
        _ => {}
    }
}

/// Wait `d` (or until woken). False when the switch is stopping.
async fn pause(saf: &Saf, stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = saf.wake.notified() => true,
        _ = tokio::time::sleep(d) => true,
    }
}
