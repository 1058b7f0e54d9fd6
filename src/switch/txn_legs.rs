//! A transaction's legs: recorded (synced before they are sent, or sent ahead of their
//! record on a link with `legs_ahead`), sent, answered, booked, and reversed or pushed
//! through when no answer came. Part of [`super::Txn`].

use crate::iso8583::{de, OwnedMessage, ResponseCode};
use crate::journal::{EntryKind, JournalError};
use crate::store::Cf;

use super::{saf, LegOutcome, LegRecord, LegRole, LegState, Sealed, Txn};

impl Txn {
    /// Record a leg before its request goes upstream: synced, so that after a crash it is
    /// known. Returns the leg's index, or the journal error (then the leg must not be sent).
    pub async fn leg_sent(
        &mut self,
        link: &str,
        request: &OwnedMessage,
        amount: u64,
    ) -> Result<usize, JournalError> {
        self.record_leg(link, request, amount, LegRole::Take, None)
            .await
    }

    async fn record_leg(
        &mut self,
        link: &str,
        request: &OwnedMessage,
        amount: u64,
        role: LegRole,
        refunds_leg: Option<u32>,
    ) -> Result<usize, JournalError> {
        let index = self.stage_leg(link, request, amount, role, refunds_leg)?;
        self.step.synced();
        if let Err(e) = self.commit().await {
            // Not recorded, so not sent: it is no leg of this transaction.
            self.record.legs.pop();
            return Err(e);
        }
        Ok(index)
    }

    /// Record a leg on a link that sends legs ahead (see [`crate::switch::legs_ahead`]): the leg
    /// takes a place and the link's next identity as field 37, and its record is handed to
    /// the journal (in the order of identities) without waiting for it. It rides with the
    /// next step that syncs — the answer's, at the latest, which lands after it — and the
    /// place is given back once it is on disk.
    async fn record_leg_ahead(
        &mut self,
        ahead: &crate::switch::legs_ahead::LegsAhead,
        link: &str,
        request: &mut OwnedMessage,
        amount: u64,
        role: LegRole,
        refunds_leg: Option<u32>,
    ) -> Result<usize, JournalError> {
        let place = ahead
            .place(&self.journal)
            .await
            .ok_or(JournalError::Stopped)?;
        let queued = ahead.with_next(|identity, (cf, key, value)| {
            request.set(de::RRN, identity.as_bytes());
            let index = self.stage_leg(link, request, amount, role, refunds_leg)?;
            self.step.put(cf, key, value);
            self.step.sent_ahead();
            // Reversals queued in the step stay in `queued`: handed to the workers with the
            // transaction's next commit, which lands after this one. (The callback runs on
            // the journal's writer thread, and must hold nothing that holds the journal.)
            let step = self.take_step();
            if let Err(e) = self.journal.commit_then(step, move |_landed| drop(place)) {
                // Not queued, so not sent: it is no leg of this transaction.
                self.record.legs.pop();
                return Err(e);
            }
            Ok(index)
        });
        // `None`: the run's numbers ran out between the caller's look and now.
        queued.unwrap_or_else(|| Err(JournalError::Write("legs ahead: numbers used up".into())))
    }

    /// Add a leg to the record and the step (not committed).
    fn stage_leg(
        &mut self,
        link: &str,
        request: &OwnedMessage,
        amount: u64,
        role: LegRole,
        refunds_leg: Option<u32>,
    ) -> Result<usize, JournalError> {
        let Some(key) = self.key.clone() else {
            return Err(JournalError::Write("a leg outside a transaction".into()));
        };
        let sealed = self
            .journal
            .sealer()
            .seal(&saf::leg_fields(request).pack(), key.as_bytes());
        self.record.legs.push(LegRecord {
            link: link.to_string(),
            state: LegState::Sent,
            amount,
            sealed: Sealed(sealed),
            role,
            refunded: 0,
            refunds_leg,
        });
        let index = self.record.legs.len() - 1;
        self.put_record();
        if index == 0 {
            self.step.put(Cf::OpenTxns, key.as_bytes(), Vec::new());
        }
        self.note(EntryKind::Out, link, request);
        Ok(index)
    }

    /// The whole life of a leg: recorded (synced) before it is sent, sent, its outcome
    /// recorded; one that got no answer in time may have moved money, so it is reversed.
    pub async fn send_leg(
        &mut self,
        link: &crate::net::link::Link,
        request: OwnedMessage,
        amount: u64,
    ) -> LegOutcome {
        self.send(link, request, amount, LegRole::Take, None).await
    }

    /// A refund leg (F8) giving `amount` back for leg `of_leg` of the original: as
    /// [`Txn::send_leg`], but one that gets no answer in time is not reversed: it is pushed
    /// through as an advice (0220, then 0221 repeats) until the host acknowledges it.
    pub async fn send_refund_leg(
        &mut self,
        link: &crate::net::link::Link,
        request: OwnedMessage,
        amount: u64,
        of_leg: u32,
    ) -> LegOutcome {
        self.send(link, request, amount, LegRole::Give, Some(of_leg))
            .await
    }

    async fn send(
        &mut self,
        link: &crate::net::link::Link,
        mut request: OwnedMessage,
        amount: u64,
        role: LegRole,
        refunds_leg: Option<u32>,
    ) -> LegOutcome {
        if self.at_leg_limit() {
            tracing::warn!(
                legs = self.record.legs.len(),
                "leg limit reached: leg not sent"
            );
            return LegOutcome::TooManyLegs;
        }
        // The host books the leg on the date it is told (F13), as the switch does.
        if let Some(date) = self.business_date() {
            request.set(
                de::SETTLEMENT_DATE,
                crate::books::day::mmdd(date).as_bytes(),
            );
        }
        let units = request.amount_units();
        // Only a leg that takes goes ahead. A refund leg (F8) a crash could lose must be
        // pushed through, never reversed (the cardholder may have spent what it gave), and a
        // blind reversal cannot tell the two apart: a leg that gives waits for its record.
        let ahead = self.legs_ahead.get(&*link.name).cloned();
        let ahead = ahead.filter(|a| role == LegRole::Take && a.has_numbers());
        let recorded = match ahead {
            Some(ahead) => {
                self.record_leg_ahead(&ahead, &link.name, &mut request, amount, role, refunds_leg)
                    .await
            }
            None => {
                self.record_leg(&link.name, &request, amount, role, refunds_leg)
                    .await
            }
        };
        let index = match recorded {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "journal unavailable: leg not sent");
                return LegOutcome::NotRecorded;
            }
        };
        crate::switch::testhooks::crash_point("leg-sent").await;
        match link.request(request).await {
            Ok(a) if a.code() == Some(ResponseCode::Approved) => {
                self.leg_answered(index, LegState::Approved, Some(&a));
                self.book_leg(index, role, units, amount);
                LegOutcome::Approved { index, answer: a }
            }
            Ok(a) => {
                self.leg_answered(index, LegState::Declined, Some(&a));
                LegOutcome::Declined(Some(a))
            }
            Err(crate::net::link::LinkError::Timeout) => {
                self.leg_answered(index, LegState::Unknown, None);
                match role {
                    LegRole::Take => self.reverse_leg(index),
                    LegRole::Give => self.advise_leg(index),
                }
                LegOutcome::Unanswered
            }
            // Nothing was sent.
            Err(_) => {
                self.leg_answered(index, LegState::Declined, None);
                LegOutcome::Declined(None)
            }
        }
    }

    /// An approved leg's money in the books, with the step that records its approval.
    fn book_leg(&mut self, index: usize, role: LegRole, units: u64, amount: u64) {
        use crate::books::{Event, EventKind, LegAt, Standing};
        let (Some(key), Some(date)) = (self.key.as_deref(), self.business_date()) else {
            return;
        };
        let Some(leg) = self.record.legs.get(index) else {
            return;
        };
        let (kind, tag) = match role {
            LegRole::Take => (EventKind::Debit, 'D'),
            LegRole::Give => (EventKind::Credit, 'C'),
        };
        let summary = self.record.summary.as_ref();
        let event = Event {
            kind,
            units,
            amount,
            merchant: summary.map(|s| s.merchant.clone()).unwrap_or_default(),
            terminal: summary.map(|s| s.terminal.clone()).unwrap_or_default(),
        };
        let at = LegAt {
            link: &leg.link,
            txn: key,
            leg: index,
        };
        let standing = Standing {
            kind,
            units,
            amount,
        };
        self.saf
            .books()
            .book(&mut self.step, date, at, tag, &event, Some(standing));
    }

    /// A leg's outcome (committed with the next step).
    pub fn leg_answered(&mut self, index: usize, state: LegState, answer: Option<&OwnedMessage>) {
        let Some(leg) = self.record.legs.get_mut(index) else {
            debug_assert!(false, "leg {index} does not exist");
            return;
        };
        leg.state = state;
        let link = leg.link.clone();
        if let Some(a) = answer {
            self.note(EntryKind::In, &link, a);
        }
        self.note_state(EntryKind::Leg, &link, format!("leg {index} {state:?}"));
        self.put_record();
    }

    /// Undo a leg that may have moved money: its reversal joins the store-and-forward queue
    /// with the next step.
    pub fn reverse_leg(&mut self, index: usize) {
        let Some(key) = self.key.clone() else { return };
        let Some(leg) = self.record.legs.get_mut(index) else {
            return;
        };
        if !leg.state.may_hold_money() {
            return;
        }
        leg.state = LegState::Reversing;
        let link = leg.link.clone();
        let (sealed, amount) = (leg.sealed.clone(), leg.amount);
        let queued = self
            .saf
            .enqueue(&mut self.step, &link, &key, (index, amount), &sealed.0);
        self.queued.push(queued);
        self.note_state(
            EntryKind::Leg,
            &link,
            format!("leg {index} reversal queued"),
        );
        self.put_record();
    }

    /// Push a refund leg that got no answer through the store-and-forward queue as an advice:
    /// the money is owed to the card, so it is delivered, not undone. The leg then stands
    /// as given (`Completing`: queued, and a later reversal must still undo it).
    fn advise_leg(&mut self, index: usize) {
        let Some(key) = self.key.clone() else { return };
        let Some(leg) = self.record.legs.get_mut(index) else {
            return;
        };
        leg.state = LegState::Completing;
        let link = leg.link.clone();
        let (sealed, amount) = (leg.sealed.clone(), leg.amount);
        let queued =
            self.saf
                .enqueue_advice(&mut self.step, &link, &key, (index, amount), &sealed.0);
        self.queued.push(queued);
        self.note_state(EntryKind::Leg, &link, format!("leg {index} advice queued"));
        self.put_record();
    }
}
