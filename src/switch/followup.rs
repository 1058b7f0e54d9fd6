//! Changes to a transaction after its flow has ended, all through one path: a terminal's
//! reversal (F7), an approval that could not be delivered, a completion (0220), and start-up
//! recovery of transactions left open by a crash (SPEC §9).
//!
//! Each reads the stored record, marks the legs it acts on, queues their reversals or
//! completions through store-and-forward, and writes the record back with a journal line in
//! one synced step; the queue hears of the items only once that step is on disk. The caller
//! holds the transaction (see [`super::registry::Registry::hold`]) so that follow-ups of
//! one transaction go one at a time.

use crate::journal::{Entry, EntryKind, Journal, JournalError, Step};
use crate::store::Cf;

use super::saf::{Queued, Saf};
use super::txn::{LegRecord, LegState, TxnRecord, TxnState};

/// One synced step changing stored transactions.
struct Amendment<'a> {
    saf: &'a Saf,
    step: Step,
    queued: Vec<Queued>,
}

impl<'a> Amendment<'a> {
    fn new(saf: &'a Saf) -> Amendment<'a> {
        Amendment {
            saf,
            step: Step::new(),
            queued: Vec::new(),
        }
    }

    /// Queue the reversal of every leg of `record` that may hold money; returns how many.
    fn reverse_live_legs(&mut self, key: &str, record: &mut TxnRecord) -> usize {
        let mut reversed = 0;
        for (i, leg) in record.legs.iter_mut().enumerate() {
            if leg.state.may_hold_money() {
                leg.state = LegState::Reversing;
                let q = self.saf.enqueue(
                    &mut self.step,
                    &leg.link,
                    key,
                    (i, leg.amount),
                    &leg.sealed.0,
                );
                self.queued.push(q);
                reversed += 1;
            }
        }
        reversed
    }

    /// Queue the completion of leg `i` for `amount` (what the leg then stands for).
    fn complete_leg(&mut self, key: &str, record: &mut TxnRecord, i: usize, amount: u64) {
        let Some(leg) = record.legs.get_mut(i) else {
            return;
        };
        leg.state = LegState::Completing;
        leg.amount = amount;
        let q =
            self.saf
                .enqueue_completion(&mut self.step, &leg.link, key, i, &leg.sealed.0, amount);
        self.queued.push(q);
    }

    /// The record as it now stands, and a journal line saying why.
    fn write(&mut self, key: &str, record: &TxnRecord, kind: EntryKind, why: String) {
        self.step.put(Cf::Txns, key.as_bytes(), record.to_bytes());
        self.step.append(Entry::new(kind, key, "", why));
    }

    /// Commit, synced; then the queue may send what was queued.
    async fn commit(mut self, journal: &Journal) -> Result<(), JournalError> {
        self.step.synced();
        journal.commit(self.step).await?;
        self.saf.publish(self.queued);
        Ok(())
    }
}

/// The stored record of transaction `key`, if any.
pub(super) fn load(journal: &Journal, key: &str) -> Result<Option<TxnRecord>, JournalError> {
    let raw = journal
        .get(Cf::Txns, key.as_bytes())
        .map_err(JournalError::Write)?;
    raw.map(|r| TxnRecord::from_bytes(&r))
        .transpose()
        .map_err(JournalError::Write)
}

/// Reverse every leg of an answered transaction that may hold money (a terminal's reversal,
/// or an approval that could not be delivered). Returns the state found, `None` when the
/// transaction is unknown. An open transaction is left to its flow (or to recovery).
pub async fn reverse_answered(
    journal: &Journal,
    saf: &Saf,
    key: &str,
    reason: &str,
) -> Result<Option<TxnState>, JournalError> {
    reverse_answered_with(journal, saf, key, reason, None).await
}

/// As [`reverse_answered`]; `index`, when given, replaces the transaction's answer in the
/// duplicate index in the same step (an undelivered approval withdrawn: a repeat of its
/// request must not be told it was approved).
pub async fn reverse_answered_with(
    journal: &Journal,
    saf: &Saf,
    key: &str,
    reason: &str,
    index: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<Option<TxnState>, JournalError> {
    let Some(mut record) = load(journal, key)? else {
        return Ok(None);
    };
    let found = record.state;
    if found != TxnState::Answered {
        return Ok(Some(found));
    }
    let mut change = Amendment::new(saf);
    // No longer waiting to be known delivered (see [`super::delivery`]).
    change.step.delete(Cf::OpenTxns, key.as_bytes());
    if let Some((k, v)) = index {
        change.step.put(Cf::Dedup, k, v);
    }
    undo_answered(journal, &mut change, key, &mut record)?;
    change.write(key, &record, EntryKind::Txn, format!("reversed: {reason}"));
    change.commit(journal).await?;
    Ok(Some(found))
}

/// Undo an answered transaction in `change`: every leg that may hold money is reversed
/// through the queue and the record marked reversed; a refund's purchase may give back again
/// what the refund had given; a coupon's use is given back (F18). All in the one step.
/// Returns how many legs were queued for reversal.
fn undo_answered(
    journal: &Journal,
    change: &mut Amendment<'_>,
    key: &str,
    record: &mut TxnRecord,
) -> Result<usize, JournalError> {
    let live: Vec<usize> = (0..record.legs.len())
        .filter(|&i| record.legs[i].state.may_hold_money())
        .collect();
    let reversed = change.reverse_live_legs(key, record);
    record.state = TxnState::Reversed;
    if let Some(original) = record.refund_of.clone() {
        restore_refundable(journal, change, &original, key, record, &live)?;
    }
    let now = chrono::Utc::now().timestamp_millis();
    let coupon = crate::coupons::give_back(journal, key, key, now).map_err(JournalError::Write)?;
    for (cf, k, v) in coupon {
        change.step.put(cf, k, v);
    }
    Ok(reversed)
}

/// A refund being reversed takes back what it gave: the original's legs may give it back
/// again to a later refund. Written in the same step as the reversal.
fn restore_refundable(
    journal: &Journal,
    change: &mut Amendment<'_>,
    original: &str,
    refund_key: &str,
    refund: &TxnRecord,
    reversed: &[usize],
) -> Result<(), JournalError> {
    let Some(mut purchase) = load(journal, original)? else {
        return Ok(());
    };
    for &i in reversed {
        let leg = &refund.legs[i];
        let of = leg.refunds_leg.and_then(|j| usize::try_from(j).ok());
        if let Some(taken) = of.and_then(|j| purchase.legs.get_mut(j)) {
            taken.refunded = taken.refunded.saturating_sub(leg.amount);
        }
    }
    let why = "a refund of it was reversed".to_string();
    change.write(original, &purchase, EntryKind::Txn, why);
    // A full refund had given its coupon's use back (F18): the purchase stands again, and so
    // does the use.
    let now = chrono::Utc::now().timestamp_millis();
    crate::coupons::take_again(journal, &mut change.step, original, refund_key, now)
        .map_err(JournalError::Write)?;
    Ok(())
}

/// Has any refund given back part of transaction `key`? Then a reversal, which undoes
/// whole legs upstream, would give that part back twice: it is refused.
pub fn refunded(journal: &Journal, key: &str) -> bool {
    matches!(load(journal, key), Ok(Some(r)) if r.legs.iter().any(|l| l.refunded > 0))
}

/// The stored record of `key` (what a reversal's answer lists the legs of).
pub fn record(journal: &Journal, key: &str) -> Option<TxnRecord> {
    load(journal, key).ok().flatten()
}

/// A reversal named a transaction never seen: remember it as reversed (no legs), so that the
/// original, arriving late, is declined rather than approved with nobody to reverse it.
/// Kept like any transaction record (retention ages it out).
pub async fn remember_reversed_unseen(
    journal: &Journal,
    key: &str,
    now_ms: i64,
) -> Result<(), JournalError> {
    let record = TxnRecord {
        state: TxnState::Reversed,
        code: String::new(),
        legs: Vec::new(),
        summary: Some(super::txn::TxnSummary {
            at_ms: now_ms,
            ..Default::default()
        }),
        refund_of: None,
    };
    let mut step = Step::new();
    step.put(Cf::Txns, key.as_bytes(), record.to_bytes());
    step.append(Entry::new(
        EntryKind::Txn,
        key,
        "",
        "reversed before it was seen".to_string(),
    ));
    step.synced();
    journal.commit(step).await
}

/// Was the transaction `key` reversed before it arrived (see [`remember_reversed_unseen`])?
pub fn reversed_before_seen(journal: &Journal, key: &str) -> bool {
    matches!(
        load(journal, key),
        Ok(Some(r)) if r.state == TxnState::Reversed && r.legs.is_empty()
    )
}

/// What became of a completion (0220 naming an authorization by field 90).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// No such transaction.
    Unknown,
    /// Its legs' completions are queued.
    Queued,
    /// It was completed already: nothing more is queued.
    Repeat,
    /// Every leg of it was final (wallet debits; a partial approval's credit declined):
    /// completing it for what they took needs nothing.
    Final,
    /// Not an approved authorization, or nothing of it can be completed.
    NotCompletable,
    /// More than it authorized, or an amount its legs cannot be completed for.
    BadAmount,
}

/// Complete an approved authorization (0100) for `amount`: its authorization legs on links
/// that hold money until completed (`holds`: the acquirers, the hosted card programs) get a
/// completion through the store-and-forward queue; its other legs (wallet debits) are final
/// already. With one such leg, the amount is what the wallet legs paid plus up to that
/// leg's authorized amount; with several, it is the amount authorized in full.
pub async fn complete_answered(
    journal: &Journal,
    saf: &Saf,
    key: &str,
    amount: u64,
    holds: impl Fn(&str) -> bool,
) -> Result<Completion, JournalError> {
    let Some(mut record) = load(journal, key)? else {
        return Ok(Completion::Unknown);
    };
    let authorization = record.summary.as_ref().is_some_and(|s| s.mti == "0100");
    if !record.approved() || !authorization {
        return Ok(Completion::NotCompletable);
    }
    if record.legs.iter().any(|l| l.state == LegState::Completing) {
        return Ok(Completion::Repeat);
    }
    let plan = match completion_plan(&record.legs, amount, holds) {
        Ok(plan) => plan,
        Err(outcome) => return Ok(outcome),
    };
    let mut change = Amendment::new(saf);
    // Its terminal completes it: it had the approval.
    change.step.delete(Cf::OpenTxns, key.as_bytes());
    for (i, leg_amount) in plan {
        change.complete_leg(key, &mut record, i, leg_amount);
    }
    let why = format!("completion of {amount} queued");
    change.write(key, &record, EntryKind::Txn, why);
    change.commit(journal).await?;
    Ok(Completion::Queued)
}

/// Which legs a completion of `amount` completes, and for how much each; or why none.
fn completion_plan(
    legs: &[LegRecord],
    amount: u64,
    holds: impl Fn(&str) -> bool,
) -> Result<Vec<(usize, u64)>, Completion> {
    let live = |l: &LegRecord| l.state.may_hold_money();
    let (held, paid): (Vec<usize>, Vec<usize>) = (0..legs.len())
        .filter(|&i| live(&legs[i]))
        .partition(|&i| holds(&legs[i].link));
    let paid: u64 = paid.iter().map(|&i| legs[i].amount).sum();
    let authorized: u64 = held.iter().map(|&i| legs[i].amount).sum();
    match held.as_slice() {
        [] if paid > 0 && amount == paid => Err(Completion::Final),
        [] => Err(Completion::NotCompletable),
        [one] => match amount.checked_sub(paid) {
            Some(rest) if rest > 0 && rest <= legs[*one].amount => Ok(vec![(*one, rest)]),
            _ => Err(Completion::BadAmount),
        },
        _ if Some(amount) == paid.checked_add(authorized) => {
            Ok(held.iter().map(|&i| (i, legs[i].amount)).collect())
        }
        _ => Err(Completion::BadAmount),
    }
}

/// How start-up recovery treats approvals not known to be delivered (see
/// [`super::delivery`]).
pub struct Recovery<'a> {
    /// An approval answered at least this long before the last sign of life was not
    /// delivered; a younger one is in doubt.
    pub doubt_ms: i64,
    /// The answer a repeat gets once an undelivered approval is reversed: from the
    /// listener's name and the approval as it was encoded.
    pub withdraw: &'a Withdraw<'a>,
}

/// Makes the answer a repeat of a withdrawn approval gets: from its listener's name and the
/// approval as it was encoded.
pub type Withdraw<'a> = dyn Fn(&str, &[u8]) -> Option<Vec<u8>> + Sync + 'a;

/// What start-up recovery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Transactions left open (never answered): their legs reversed.
    pub open: usize,
    /// Approvals journaled and never written to their terminal: reversed.
    pub undelivered: usize,
    /// Approvals that may have reached their terminal in the last moments: left to it.
    pub in_doubt: usize,
}

/// Start-up recovery: every transaction still open was never answered; its legs that may
/// hold money are reversed through the queue. An approval still `delivering` is reversed
/// too when it was answered long enough before the last sign of life (it was never written
/// to its terminal), and left in doubt otherwise (see [`super::delivery`]).
pub async fn recover(
    journal: &Journal,
    saf: &Saf,
    policy: &Recovery<'_>,
) -> Result<Recovered, String> {
    let open = journal.scan(Cf::OpenTxns, b"")?;
    let alive = super::delivery::last_alive(journal);
    let mut done = Recovered::default();
    let mut change = Amendment::new(saf);
    for (key, value) in &open {
        let text_key = String::from_utf8_lossy(key).into_owned();
        change.step.delete(Cf::OpenTxns, key.clone());
        let Some(mut record) = load(journal, &text_key).map_err(|e| e.to_string())? else {
            continue;
        };
        match (record.state, super::delivery::delivering_since(value)) {
            (TxnState::Open, _) => {
                let reversed = change.reverse_live_legs(&text_key, &mut record);
                record.state = TxnState::Recovered;
                let why = format!("open at start-up: {reversed} leg(s) queued for reversal");
                change.write(&text_key, &record, EntryKind::Recovery, why);
                tracing::warn!(txn = %text_key, reversed, "recovered an unanswered transaction");
                done.open += 1;
            }
            (TxnState::Answered, Some(answered)) if record.approved() => {
                let undelivered =
                    alive.is_some_and(|alive| answered <= alive.saturating_sub(policy.doubt_ms));
                if !undelivered {
                    let why = "approval not known delivered when the switch stopped: in doubt, left to its terminal".to_string();
                    change
                        .step
                        .append(Entry::new(EntryKind::Recovery, &text_key, "", why));
                    tracing::warn!(txn = %text_key, "recovery: an approval may not have reached its terminal (in doubt; its repeat gets the approval, its reversal undoes it)");
                    done.in_doubt += 1;
                    continue;
                }
                // Undone as a terminal's reversal would be (a refund gives its purchase back
                // what it had counted), in a step of its own, committed before the next is
                // read: two refunds of one purchase undone here both write the purchase.
                let mut own = Amendment::new(saf);
                own.step.delete(Cf::OpenTxns, key.clone());
                let reversed = undo_answered(journal, &mut own, &text_key, &mut record)
                    .map_err(|e| e.to_string())?;
                if let Some(withdrawn) = withdrawn_answer(journal, &text_key, policy) {
                    own.step.put(Cf::Dedup, key.clone(), withdrawn);
                }
                let why = format!(
                    "reversed at start-up: approval never written to its terminal; {reversed} leg(s) queued for reversal"
                );
                own.write(&text_key, &record, EntryKind::Recovery, why);
                own.commit(journal).await.map_err(|e| e.to_string())?;
                tracing::warn!(txn = %text_key, reversed, "recovery: an undelivered approval is reversed");
                done.undelivered += 1;
            }
            // Reversed or declined since: nothing to do.
            _ => {}
        }
    }
    change.commit(journal).await.map_err(|e| e.to_string())?;
    metrics::counter!("cyberswitch_recovered_transactions_total").increment(done.open as u64);
    metrics::counter!("cyberswitch_recovered_undelivered_total").increment(done.undelivered as u64);
    metrics::counter!("cyberswitch_recovery_in_doubt_total").increment(done.in_doubt as u64);
    Ok(done)
}

/// The duplicate index's value for `key` once its approval is withdrawn (same time, the
/// answer as [`Recovery::withdraw`] makes it), if the index holds its answer.
fn withdrawn_answer(journal: &Journal, key: &str, policy: &Recovery<'_>) -> Option<Vec<u8>> {
    let raw = journal.get(Cf::Dedup, key.as_bytes()).ok().flatten()?;
    let (at, answer) = raw.split_first_chunk::<8>()?;
    let listener = super::registry::TxnId::from_record_key(key)?;
    let withdrawn = (policy.withdraw)(listener.listener(), answer)?;
    let mut value = at.to_vec();
    value.extend_from_slice(&withdrawn);
    Some(value)
}
