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

/// An approval handed to its connection, not yet written to the socket.
struct Pending {
    /// Held so that the address it is known by stays its own.
    _answer: Bytes,
    id: TxnId,
    spec: Arc<Spec>,
}

/// Approvals on their way to their terminals.
pub struct Deliveries {
    journal: Arc<Journal>,
    /// By the address of the answer's bytes (a clone of `Bytes` shares it).
    pending: DashMap<usize, Pending>,
    /// Reversals of undelivered approvals not yet recorded (a graceful stop waits for them).
    pub reversals: WorkCount,
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
            reversals: WorkCount::default(),
        }
    }

    /// `answer`, an approval whose transaction is kept `delivering`, is on its way.
    pub fn expect(&self, answer: &Bytes, id: TxnId, spec: Arc<Spec>) {
        self.pending.insert(
            key(answer),
            Pending {
                _answer: answer.clone(),
                id,
                spec,
            },
        );
    }

    /// These answers were written to their sockets: their markers are queued now.
    pub fn delivered(&self, answers: &[Bytes]) {
        let mut step = Step::new();
        for a in answers {
            if let Some((_, p)) = self.pending.remove(&key(a)) {
                step.delete(Cf::OpenTxns, p.id.to_bytes());
            }
        }
        self.journal.submit_now(step);
    }

    /// This answer will never be written: if it is an approval on its way, what must be
    /// reversed (`None` for any other answer: a decline, a repeat's copy).
    pub fn undelivered(&self, answer: &Bytes) -> Option<Undelivered> {
        let (_, p) = self.pending.remove(&key(answer))?;
        let withdrawn = withdrawn(&p.spec, answer);
        Some(Undelivered {
            id: p.id,
            withdrawn,
        })
    }

    /// Approvals on their way now.
    pub fn in_transit(&self) -> usize {
        self.pending.len()
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
