//! A transaction's durable state: its legs and where each stands, written to the journal at
//! every step so that a crash at any point can be recovered from.
//!
//! The rules that make recovery sound:
//! - A leg is recorded (`Sent`, synced) *before* its request goes upstream: after a crash,
//!   every leg that may have moved money is known. On a link that sends legs ahead
//!   (`legs_ahead`), the record may still be on its way, and recovery knows such a leg by
//!   its identity instead (see [`super::legs_ahead`]).
//! - The answer is recorded (`Answered`, synced when any leg exists) *before* it goes to the
//!   terminal: an approval a terminal saw is on disk.
//! - A transaction still `Open` after a crash was never answered; recovery reverses its legs.

use std::sync::Arc;

use crate::clock::Clock;
use crate::iso8583::{de, Message, OwnedMessage};
use crate::journal::{Entry, EntryKind, Journal, JournalError, Step};
use crate::store::Cf;

use super::registry::TxnId;
use super::saf::{self, Saf};

// The stored form of a transaction lives with the other records (readable without the store:
// tools and fuzzing); the switch uses it from here as before.
pub use crate::records::txn::{
    ended_at_ms, LegRecord, LegRole, LegState, Sealed, TxnRecord, TxnState, TxnSummary,
};

/// How a leg sent upstream ended.
pub enum LegOutcome {
    /// Approved (39 = 00): the leg's index and the host's answer.
    Approved { index: usize, answer: OwnedMessage },
    /// Declined with this answer, or not sent at all (`None`: the link was down).
    Declined(Option<OwnedMessage>),
    /// Sent, no answer in time: the leg is being reversed.
    Unanswered,
    /// The leg could not be recorded, so it was not sent.
    NotRecorded,
    /// Not sent: the transaction has as many legs as it may (`limits.max_legs`).
    TooManyLegs,
}

/// The transaction being processed, with the writes of its current step.
pub struct Txn {
    journal: Arc<Journal>,
    saf: Arc<Saf>,
    /// `None` for messages that are not transactions (network management, malformed keys).
    key: Option<String>,
    listener: String,
    record: TxnRecord,
    /// Writes not committed yet; they land with the next commit.
    step: Step,
    /// The record changed since the last commit: it is written (once) with the next one.
    record_changed: bool,
    /// Reversals queued in `step`: handed to the queue once it is committed.
    queued: Vec<saf::Queued>,
    /// The request's local date (field 13, MMDD): what a refund by `OA` names it by.
    local_date: Option<u32>,
    /// The business date the transaction holds (F13): its events are booked on it, and the
    /// cut-over that closes it waits for this transaction to end.
    day: Option<crate::books::DayTicket>,
    clock: Arc<dyn Clock>,
    /// Its answer is an approval kept `delivering` until written (see
    /// [`super::delivery`]).
    awaits_delivery: bool,
    /// At most this many legs (`limits.max_legs`).
    max_legs: usize,
    /// Writes that belong to an approval (a coupon's use, F18): they go with the step that
    /// journals an approving answer, and are dropped with any other answer.
    on_approval: crate::coupons::Writes,
    /// Held until the transaction is dropped, its answer journaled or not (a coupon's claim:
    /// no second purchase may use it between the approval and its journal write).
    kept: Vec<Box<dyn Send + Sync>>,
    /// The links whose legs go ahead of their record (see [`super::legs_ahead`]).
    legs_ahead: super::LegsAheadByLink,
}

impl Txn {
    /// Start a transaction for a request from a terminal; its arrival is journaled.
    pub fn begin(
        journal: Arc<Journal>,
        saf: Arc<Saf>,
        clock: Arc<dyn Clock>,
        listener: &str,
        req: &Message<'_>,
    ) -> Txn {
        let key = TxnId::of(listener, req)
            .filter(|_| matches!(req.mti().class(), 1 | 2 | 4))
            .map(|id| id.record_key());
        let day = key.as_ref().map(|_| saf.books().ticket());
        let business_date = day
            .as_ref()
            .map(|d| crate::books::day::iso(d.date))
            .unwrap_or_default();
        let mut txn = Txn {
            journal,
            saf,
            key,
            listener: listener.to_string(),
            record: TxnRecord {
                state: TxnState::Open,
                code: String::new(),
                legs: Vec::new(),
                summary: Some(TxnSummary {
                    mti: req.mti().to_string(),
                    card: req
                        .pan()
                        .ok()
                        .flatten()
                        .map(|p| p.masked())
                        .unwrap_or_default(),
                    amount: req.amount(),
                    stan: req.stan(),
                    terminal: req.terminal_id().unwrap_or_default().trim().to_string(),
                    merchant: req.merchant_id().unwrap_or_default().trim().to_string(),
                    rrn: String::new(),
                    at_ms: clock.now_ms(),
                    transaction_type: req.transaction_type(),
                    auth: String::new(),
                    business_date,
                }),
                refund_of: None,
            },
            step: Step::new(),
            record_changed: false,
            queued: Vec::new(),
            local_date: req.str(de::LOCAL_DATE).and_then(|d| d.trim().parse().ok()),
            day,
            clock,
            awaits_delivery: false,
            max_legs: usize::MAX,
            on_approval: Vec::new(),
            kept: Vec::new(),
            legs_ahead: Default::default(),
        };
        let entry = Entry::decoded(EntryKind::In, txn.id(), &txn.listener, req);
        txn.step.append(entry);
        txn
    }

    /// At most `n` legs: one more is not sent ([`LegOutcome::TooManyLegs`]).
    pub fn with_max_legs(mut self, n: usize) -> Txn {
        self.max_legs = n;
        self
    }

    /// Legs on these links go ahead of their record.
    pub fn with_legs_ahead(mut self, links: super::LegsAheadByLink) -> Txn {
        self.legs_ahead = links;
        self
    }

    /// Writes that land with the answer's step if, and only if, that answer approves.
    pub fn on_approval(&mut self, writes: crate::coupons::Writes) {
        self.on_approval.extend(writes);
    }

    /// Keep `held` until this transaction is dropped.
    pub fn keep(&mut self, held: Box<dyn Send + Sync>) {
        self.kept.push(held);
    }

    /// May no more legs be sent?
    pub fn at_leg_limit(&self) -> bool {
        self.record.legs.len() >= self.max_legs
    }

    /// The transaction's key (terminal, STAN, transmission time); `None` for messages that
    /// are not transactions.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The business date the transaction belongs to (what field 15 of its answer says).
    pub fn business_date(&self) -> Option<chrono::NaiveDate> {
        self.day.as_ref().map(|d| d.date)
    }

    /// The listener the request came in on.
    pub fn listener(&self) -> &str {
        &self.listener
    }

    fn id(&self) -> &str {
        self.key.as_deref().unwrap_or("")
    }

    /// Journal a message on a link (not committed until the next step).
    pub fn note(&mut self, kind: EntryKind, link: &str, msg: &OwnedMessage) {
        let entry = Entry::message(kind, self.id(), link, msg);
        self.step.append(entry);
    }

    /// Journal a request and its answer (if any) on a link.
    pub fn note_exchange(
        &mut self,
        exchange: Option<(String, OwnedMessage, Option<OwnedMessage>)>,
    ) {
        if let Some((link, request, response)) = exchange {
            self.note(EntryKind::Out, &link, &request);
            if let Some(r) = response {
                self.note(EntryKind::In, &link, &r);
            }
        }
    }

    fn note_state(&mut self, kind: EntryKind, link: &str, text: String) {
        let entry = Entry::new(kind, self.id(), link, text);
        self.step.append(entry);
    }

    /// The record changed: it goes with the next commit (serialised once however many
    /// changes the step holds).
    fn put_record(&mut self) {
        self.record_changed = true;
    }

    /// This transaction refunds `original` (its key), whose record, with what this refund
    /// gives back counted in its legs, is written with this transaction's answer: the
    /// refund and the original's refunded amounts land in one step, or neither does.
    pub fn refunds(&mut self, original: &str, record: &TxnRecord) {
        self.record.refund_of = Some(original.to_string());
        self.step
            .put(Cf::Txns, original.as_bytes(), record.to_bytes());
        self.put_record();
    }

    /// Undo every leg that may have moved money (an approval that cannot be answered).
    pub fn reverse_live_legs(&mut self) {
        for i in 0..self.record.legs.len() {
            self.reverse_leg(i);
        }
    }

    /// Its answer, once journaled, is an approval that must be known delivered.
    pub fn awaits_delivery(&self) -> bool {
        self.awaits_delivery
    }

    /// Is this an approved refund (F8), its original's refunded amounts in its step?
    pub fn is_refund(&self) -> bool {
        self.record.refund_of.is_some()
    }

    pub fn leg_count(&self) -> usize {
        self.record.legs.len()
    }

    pub fn has_legs(&self) -> bool {
        !self.record.legs.is_empty()
    }

    /// Record the answer before it leaves: the transaction is answered, its request key
    /// remembered for retransmissions. Synced when money moved or is being undone: then
    /// this returns once it is on disk. A step that decides no money (an inquiry, a
    /// decline before any leg) is handed to the writer and not waited for — nothing is
    /// lost if it never lands but its journal lines — so its answer leaves at once.
    /// `landed` runs once the step is written, either way (`true`), or once it failed
    /// (`false`): then the answer is not in the duplicate index, and memory keeps answering
    /// repeats with it for the duplicate window (a repeat must never be processed a second
    /// time).
    pub async fn finish(
        &mut self,
        answer: &OwnedMessage,
        index: Option<(Vec<u8>, Vec<u8>)>,
        landed: impl FnOnce(bool) + Send + 'static,
    ) -> Result<(), JournalError> {
        let code = answer
            .get(de::RESPONSE_CODE)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_default();
        let listener = self.listener.clone();
        self.note(EntryKind::Out, &listener, answer);
        if let Some((key, value)) = index {
            self.step.put(Cf::Dedup, key, value);
        }
        if let Some(key) = self.key.clone() {
            if self.has_legs() {
                self.record.state = TxnState::Answered;
                self.record.code = code;
                if let Some(s) = self.record.summary.as_mut() {
                    let text = |n| {
                        answer
                            .get(n)
                            .map(|v| String::from_utf8_lossy(v).trim().to_string())
                    };
                    s.rrn = text(de::RRN).unwrap_or_default();
                    s.auth = text(de::AUTH_CODE).unwrap_or_default();
                }
                self.index_references(&key);
                self.put_record();
                // An approval stays in `open_txns` until it is known delivered (removed
                // once written to its socket, see [`super::delivery`]); anything else leaves.
                let approved = self.record.approved();
                if approved {
                    for (cf, k, v) in std::mem::take(&mut self.on_approval) {
                        self.step.put(cf, k, v);
                    }
                }
                let class = self.record.summary.as_ref().and_then(|s| s.mti.get(1..2));
                if approved && matches!(class, Some("1" | "2")) {
                    let now = self.clock.now_ms();
                    let marker = super::delivery::delivering(now);
                    self.step.put(Cf::OpenTxns, key.as_bytes(), marker);
                    self.awaits_delivery = true;
                } else {
                    self.step.delete(Cf::OpenTxns, key.as_bytes());
                }
                self.step.synced();
            }
        }
        if self.step.is_synced() || !self.queued.is_empty() {
            if let Err(e) = self.journal.fault("answer") {
                landed(false);
                return Err(e);
            }
            let result = self.commit().await;
            landed(result.is_ok());
            return result;
        }
        let step = self.take_step();
        let id = self.id().to_string();
        self.journal.submit(step, move |result| {
            match result {
                Ok(()) => landed(true),
                Err(e) => {
                    tracing::error!(txn = %id, error = %e, "journal write failed: the answer's journal lines are lost");
                    landed(false)
                }
            }
        })
        .await
    }

    /// The answer step did not land (a journal write failure): nothing of it is on disk, so
    /// it must not approve anything. The transaction is answered `answer` (96) instead:
    /// every leg that may hold money is reversed, the reversals queued by the lost step are
    /// queued again, `index` puts the 96 in the duplicate index, and a refund no longer
    /// counts against its purchase (that write was lost with the step). Then
    /// [`Txn::commit_retrying`] writes it.
    pub fn withdraw(&mut self, answer: &OwnedMessage, index: Option<(Vec<u8>, Vec<u8>)>) {
        self.step = Step::new();
        for q in &self.queued {
            self.saf.restage(&mut self.step, q);
        }
        self.reverse_live_legs();
        self.record.state = TxnState::Answered;
        self.record.code = answer
            .get(de::RESPONSE_CODE)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_default();
        self.record.refund_of = None;
        self.awaits_delivery = false;
        let listener = self.listener.clone();
        self.note(EntryKind::Out, &listener, answer);
        self.note_state(
            EntryKind::Txn,
            "",
            "the answer's journal write failed: answered 96, its legs reversed".into(),
        );
        if let Some((k, v)) = index {
            self.step.put(Cf::Dedup, k, v);
        }
        if let Some(key) = &self.key {
            self.step.delete(Cf::OpenTxns, key.as_bytes());
        }
        self.put_record();
        self.step.synced();
    }

    /// Commit the gathered step, retrying with a back-off (100 ms doubling to 5 s) until it
    /// lands or `stop` (then recovery at the next start finds the transaction open and
    /// reverses its legs).
    pub async fn commit_retrying(&mut self, stop: &tokio_util::sync::CancellationToken) -> bool {
        let step = self.take_step();
        let mut wait = std::time::Duration::from_millis(100);
        loop {
            let tried = match self.journal.fault("answer-retry") {
                Ok(()) => self.journal.commit(step.clone()).await,
                Err(e) => Err(e),
            };
            match tried {
                Ok(()) => {
                    self.saf.publish(std::mem::take(&mut self.queued));
                    return true;
                }
                // Halted for good: nothing will land until a restart, whose recovery finds
                // the transaction open (or its legs sent ahead in their link's blind window).
                // Retrying would keep the transaction, its business date and its registry
                // entry in memory for ever, one more per request.
                Err(JournalError::Halted) => return false,
                Err(e) => {
                    tracing::error!(txn = %self.id(), error = %e, retry_in = ?wait, "journal write failed again");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(std::time::Duration::from_secs(5));
        }
    }

    /// An approved purchase can be named by a refund (F8) by its RRN or its approval code and
    /// date, from the terminal it was made at: those references go with the answer's step. An
    /// approved authorization is indexed too: once completed it is refundable, by the same
    /// references. Approval codes repeat (every host numbers its own), so a reference's key
    /// ends with the transaction's: it names every transaction that carries it, and a refund
    /// is never given to one guessed among several (see [`super::refund`]).
    fn index_references(&mut self, key: &str) {
        let r = &self.record;
        let takes = r.legs.iter().any(|l| l.role == LegRole::Take);
        if !r.approved() || r.refund_of.is_some() || !takes {
            return;
        }
        let Some(s) = &r.summary else {
            return;
        };
        let mut refs = vec![format!("rrn/{}/{}", s.terminal, s.rrn)];
        if let (false, Some(mmdd)) = (s.auth.is_empty(), self.local_date) {
            let date = super::refund::yymmdd(s.at_ms, mmdd);
            refs.push(format!("auth/{}/{}/{date}", s.terminal, s.auth));
        }
        let mut value = s.at_ms.to_be_bytes().to_vec();
        value.extend_from_slice(key.as_bytes());
        for r in refs {
            self.step.put(
                Cf::TxnRefs,
                format!("{r}/{key}").into_bytes(),
                value.clone(),
            );
        }
    }

    /// Commit the writes gathered so far.
    pub async fn commit(&mut self) -> Result<(), JournalError> {
        let step = self.take_step();
        self.journal.commit(step).await?;
        self.saf.publish(std::mem::take(&mut self.queued));
        Ok(())
    }

    /// The writes gathered so far, with the record if it changed.
    fn take_step(&mut self) -> Step {
        if std::mem::take(&mut self.record_changed) {
            if let Some(key) = &self.key {
                self.step
                    .put(Cf::Txns, key.as_bytes(), self.record.to_bytes());
            }
        }
        std::mem::take(&mut self.step)
    }
}

// A leg's life (recorded, sent, answered, reversed or advised) in a file of its own.
#[path = "txn_legs.rs"]
mod legs;

#[cfg(test)]
#[path = "txn_tests.rs"]
mod tests;
