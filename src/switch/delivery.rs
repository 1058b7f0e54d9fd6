//! Which approvals reached their terminal (SPEC F7, §9).
//!
//! An approval leaves only once its step is synced, so after a crash every approval a
//! terminal may hold is on disk; the question recovery must answer is the other way round:
//! which journaled approvals did *not* reach their terminal, and must be reversed?
//!
//! - The answer step of an approval with legs keeps the transaction in `open_txns` with the
//!   value `delivering` and the answer's time, instead of removing it (no write of its own).
//! - Once the frame carrying the answer is written to the terminal's socket, the entry is
//!   removed: a tiny buffered step, queued at once in the journal writer's order (no sync,
//!   no wait) — the *delivery marker*.
//! - Every second a buffered step records the switch's last sign of life (`meta/alive`).
//!   The writer keeps the order of steps and a database recovers a prefix of them, so a
//!   sign of life that is on disk proves that every marker queued before it is on disk too.
//! - At start, an approval still `delivering` whose answer is older than the last sign of
//!   life by at least `limits.delivery_doubt_s` was not written to its socket in all that
//!   time: it is reversed leg by leg, and a repeat of its request gets 96 instead of the
//!   approval. A younger one may have reached its terminal in the last moments (its marker
//!   lost with the process, or with the page cache in a power cut): it is *in doubt* and is
//!   never reversed silently — it is logged and counted, and left to its terminal, whose
//!   repeat gets the approval and whose reversal undoes it.
//! - A graceful stop (SIGTERM) knows exactly: answers not written are reversed before exit,
//!   the markers of those written are flushed.
//! - A repeat of the request (F10) gets the approval as one more copy of it: the first copy
//!   written delivers it, and it is reversed only once every copy has failed; a repeat
//!   arriving while it is reversed gets it withdrawn (96).

use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::iso8583::{de, ResponseCode, Spec};
use crate::journal::{Journal, Step};
use crate::net::server::WorkCount;
use crate::store::Cf;

use super::registry::TxnId;

/// `meta` key: the switch's last sign of life (ms since the epoch, 8 bytes big-endian).
pub const ALIVE: &[u8] = b"alive";

/// How often the sign of life is written.
pub const ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The `open_txns` value of an approval not known to be delivered: `D` and when it was
/// answered (ms, big-endian). An open transaction's value is empty.
pub fn delivering(answered_ms: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(9);
    v.push(b'D');
    v.extend_from_slice(&answered_ms.to_be_bytes());
    v
}

/// When an `open_txns` value says an approval was answered, if it is a `delivering` one.
pub fn delivering_since(value: &[u8]) -> Option<i64> {
    match value.split_first() {
        Some((b'D', at)) => <[u8; 8]>::try_from(at).ok().map(i64::from_be_bytes),
        _ => None,
    }
}

/// The last sign of life a previous run left, if any.
pub fn last_alive(journal: &Journal) -> Option<i64> {
    let raw = journal.get(Cf::Meta, ALIVE).ok().flatten()?;
    <[u8; 8]>::try_from(raw.as_slice())
        .ok()
        .map(i64::from_be_bytes)
}

/// Write the sign of life every [`ALIVE_EVERY`] until `stop` (buffered, in the writer's
/// order; see the module doc).
pub async fn heartbeat(journal: Arc<Journal>, clock: Arc<dyn Clock>, stop: CancellationToken) {
    loop {
        let mut step = Step::new();
        step.put(Cf::Meta, ALIVE, clock.now_ms().to_be_bytes().to_vec());
        journal.submit_now(step);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(ALIVE_EVERY) => {}
        }
    }
}

/// How long an approval being withdrawn keeps answering its repeats with the withdrawal
/// from memory (past that, its transaction's reversal is long recorded and the duplicate
/// index says the same).
const WITHDRAWN_KEPT: std::time::Duration = std::time::Duration::from_secs(600);

/// An approval not known to have reached its terminal.
struct Pending {
    spec: Arc<Spec>,
    stage: Stage,
}

enum Stage {
    /// Copies of it (the original's answer, and any repeat's) are on their way to sockets:
    /// how many.
    InTransit(usize),
    /// Every copy failed: its transaction is being reversed, and a repeat gets this (the
    /// approval withdrawn) instead. Since when.
    Withdrawing(Option<Bytes>, std::time::Instant),
}

/// Approvals on their way to their terminals.
///
/// An approval may travel more than once: a terminal that repeats its request (F10) on
/// another connection gets the same approval there. It counts as delivered as soon as one
/// copy is written, and is reversed only once every copy has failed; a repeat arriving while
/// it is being reversed gets it withdrawn (96), never the approval.
pub struct Deliveries {
    journal: Arc<Journal>,
    /// By transaction.
    pending: DashMap<TxnId, Pending>,
    /// The transaction each copy on its way is of, by the address of the copy's bytes (held
    /// here, so that the address stays the copy's own).
    copies: DashMap<usize, (TxnId, Bytes)>,
    /// Reversals of undelivered approvals not yet recorded (a graceful stop waits for them).
    pub reversals: WorkCount,
    /// When withdrawn approvals were last swept (see [`Deliveries::forget_old_withdrawals`]).
    swept: std::sync::Mutex<std::time::Instant>,
}

/// An undelivered approval to reverse.
pub struct Undelivered {
    pub id: TxnId,
    /// What the duplicate index answers a repeat with from now on (the approval withdrawn).
    pub withdrawn: Option<Vec<u8>>,
}

impl Deliveries {
    pub fn new(journal: Arc<Journal>) -> Deliveries {
        Deliveries {
            journal,
            pending: DashMap::new(),
            copies: DashMap::new(),
            reversals: WorkCount::default(),
            swept: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }

    /// `answer`, an approval whose transaction is kept `delivering`, is on its way.
    pub fn expect(&self, answer: &Bytes, id: TxnId, spec: Arc<Spec>) {
        self.copies
            .insert(key(answer), (id.clone(), answer.clone()));
        self.pending.insert(
            id,
            Pending {
                spec,
                stage: Stage::InTransit(1),
            },
        );
    }

    /// What a repeat of transaction `id` is answered with, `answer` being what the original
    /// was answered: while that is an approval on its way, the repeat's copy travels as one
    /// more copy of it (written, it delivers the approval); while the approval is being
    /// withdrawn, the repeat gets it withdrawn.
    pub fn repeat(&self, id: &TxnId, answer: Bytes) -> Bytes {
        let Some(mut pending) = self.pending.get_mut(id) else {
            return answer;
        };
        match &mut pending.stage {
            Stage::InTransit(copies) => {
                *copies += 1;
                // Its own bytes: the address tells this copy from the original's.
                let copy = Bytes::copy_from_slice(&answer);
                self.copies.insert(key(&copy), (id.clone(), copy.clone()));
                copy
            }
            // (An approval that would not decode again has no withdrawn form: the duplicate
            // index keeps the approval then, and so does this.)
            Stage::Withdrawing(withdrawn, _) => withdrawn.clone().unwrap_or(answer),
        }
    }

    /// These answers were written to their sockets: the markers of the approvals among them
    /// are queued now.
    pub fn delivered(&self, answers: &[Bytes]) {
        let mut step = Step::new();
        for a in answers {
            let Some((_, (id, _))) = self.copies.remove(&key(a)) else {
                continue;
            };
            let removed = self
                .pending
                .remove_if(&id, |_, p| matches!(p.stage, Stage::InTransit(_)));
            if removed.is_some() {
                step.delete(Cf::OpenTxns, id.to_bytes());
            }
        }
        self.journal.submit_now(step);
    }

    /// This answer will never be written: if it was the last copy on its way of an approval
    /// not delivered, what must be reversed (`None` for any other answer: a decline, a copy
    /// of an approval delivered by another copy or still travelling as another copy).
    pub fn undelivered(&self, answer: &Bytes) -> Option<Undelivered> {
        let (_, (id, _)) = self.copies.remove(&key(answer))?;
        self.forget_old_withdrawals();
        let mut pending = self.pending.get_mut(&id)?;
        let Stage::InTransit(copies) = &mut pending.stage else {
            return None;
        };
        *copies = copies.saturating_sub(1);
        if *copies > 0 {
            return None;
        }
        let withdrawn = withdrawn(&pending.spec, answer);
        let repeats_get = withdrawn.clone().map(Bytes::from);
        pending.stage = Stage::Withdrawing(repeats_get, std::time::Instant::now());
        Some(Undelivered { id, withdrawn })
    }

    /// Withdrawn approvals are answered from memory for [`WITHDRAWN_KEPT`], then by the
    /// duplicate index alone: swept here, on the rare path that adds them, at most once a
    /// minute (a connection failing with many approvals on it must not sweep once each).
    fn forget_old_withdrawals(&self) {
        let Ok(mut swept) = self.swept.try_lock() else {
            return;
        };
        if swept.elapsed() < std::time::Duration::from_secs(60) {
            return;
        }
        *swept = std::time::Instant::now();
        drop(swept);
        self.pending.retain(|_, p| match p.stage {
            Stage::Withdrawing(_, since) => since.elapsed() < WITHDRAWN_KEPT,
            Stage::InTransit(_) => true,
        });
    }

    /// Approvals on their way now.
    pub fn in_transit(&self) -> usize {
        self.pending
            .iter()
            .filter(|p| matches!(p.stage, Stage::InTransit(_)))
            .count()
    }
}

fn key(answer: &Bytes) -> usize {
    answer.as_ptr() as usize
}

/// An approval withdrawn: the same answer with 96 and without what described the approval
/// (approval code, legs, balances) — what a repeat of its request gets once it is reversed.
pub fn withdrawn(spec: &Spec, answer: &[u8]) -> Option<Vec<u8>> {
    let msg = spec.decode(answer).ok()?;
    let mut m = msg.to_owned_message();
    m.set_code(ResponseCode::SystemMalfunction);
    for n in [de::AUTH_CODE, de::SWITCH_DATA, de::ADDITIONAL_AMOUNTS] {
        m.remove(n);
    }
    let mut out = bytes::BytesMut::new();
    spec.encode(&m, &mut out).ok()?;
    Some(out.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivering_values_say_when_and_open_ones_do_not() {
        assert_eq!(delivering_since(&delivering(1_234_567)), Some(1_234_567));
        assert_eq!(delivering_since(b""), None);
        assert_eq!(delivering_since(b"D123"), None);
    }
}
