//! A terminal listener's face of the switch: frame → decode → duplicate check → handle →
//! journal → encode → answer, with the listener's metrics. An approval that cannot be
//! delivered is undone here too (SPEC F7).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tracing::Instrument;

use crate::config::Profile;
use crate::iso8583::{de, Message, Mti, OwnedMessage, Spec};
use crate::net::server::{BoxFuture, Service};
use crate::observe::{Direction, Family, MessageCounters};

use super::registry::{Claim, Ticket, TxnId};
use super::txn::{self, Txn};
use super::{testhooks, Switch};
use crate::iso8583::{answer, ResponseCode};

/// One listener's face of the switch: its layout, and the name duplicates are keyed by.
pub struct ListenerService {
    pub switch: Arc<Switch>,
    pub name: Arc<str>,
    pub profile: Profile,
    metrics: Arc<ListenerMetrics>,
}

/// A listener's metric handles, registered once (see [`crate::observe::Family`]).
struct ListenerMetrics {
    messages: MessageCounters,
    duration: metrics::Histogram,
    transactions: Family<(&'static str, [u8; 2]), metrics::Counter>,
    flow_duration: Family<&'static str, metrics::Histogram>,
}

impl ListenerMetrics {
    fn new(name: &Arc<str>) -> ListenerMetrics {
        ListenerMetrics {
            messages: MessageCounters::new(name.clone()),
            duration: metrics::histogram!("cyberswitch_request_duration_seconds", "listener" => name.to_string()),
            transactions: Family::new(),
            flow_duration: Family::new(),
        }
    }

    /// A transaction answered with `code` (`cyberswitch_transactions_total`) and how long
    /// its flow took.
    fn answered(&self, mti: Mti, code: &[u8], flow: Duration) {
        let (mti, code) = (
            crate::observe::mti_label(mti),
            crate::observe::code_label(code),
        );
        self.transactions
            .get((mti, code), |(mti, code)| {
                metrics::counter!("cyberswitch_transactions_total", "mti" => mti, "code" => String::from_utf8_lossy(&code).into_owned())
            })
            .increment(1);
        self.flow_duration
            .get(
                mti,
                |mti| metrics::histogram!("cyberswitch_flow_duration_seconds", "mti" => mti),
            )
            .record(flow.as_secs_f64());
    }
}

impl Service for ListenerService {
    fn call(&self, request: Bytes, peer: Arc<str>) -> BoxFuture<Vec<Bytes>> {
        let switch = self.switch.clone();
        let spec = self.profile.spec.clone();
        let name = self.name.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let started = Instant::now();
            let answer = process(&switch, &spec, &name, &metrics, &request, &peer).await;
            metrics.duration.record(started.elapsed().as_secs_f64());
            answer.into_iter().collect()
        })
    }

    fn undelivered(&self, answer: Bytes) {
        self.reverse_undelivered(&answer);
    }

    fn delivered(&self, answers: &[Bytes]) {
        self.switch.deliveries.delivered(answers);
    }
}

impl ListenerService {
    pub fn new(switch: Arc<Switch>, name: &str, profile: Profile) -> ListenerService {
        let name: Arc<str> = name.into();
        ListenerService {
            switch,
            metrics: Arc::new(ListenerMetrics::new(&name)),
            name,
            profile,
        }
    }

    /// SPEC F7: an approval the terminal never received is undone, every leg of it, and a
    /// repeat of its request is answered 96 from then on. Only approvals on their way count
    /// (a repeat's copy of an answer that reached its terminal first does not).
    fn reverse_undelivered(&self, answer: &Bytes) {
        let Some(undelivered) = self.switch.deliveries.undelivered(answer) else {
            return;
        };
        let switch = self.switch.clone();
        let listener = self.name.to_string();
        // A graceful stop waits for this to be recorded.
        let working = switch.deliveries.reversals.enter();
        tokio::spawn(async move {
            let _working = working;
            let id = undelivered.id;
            let key = id.record_key();
            let _one_at_a_time = switch.registry.hold(&id).await;
            // An undelivered refund being undone gives its purchase back what it took: the
            // purchase is held too (as a terminal's reversal of a refund holds it), so that
            // no refund of it decided meanwhile writes amounts read before this.
            let purchase = super::followup::record(&switch.journal, &key)
                .and_then(|r| r.refund_of)
                .and_then(|k| TxnId::from_record_key(&k));
            let _purchase_held = match &purchase {
                Some(p) => Some(switch.registry.hold(p).await),
                None => None,
            };
            let index = undelivered
                .withdrawn
                .map(|a| (id.to_bytes(), switch.registry.index_value(&a)));
            match super::followup::reverse_answered_with(
                &switch.journal,
                &switch.saf,
                &key,
                "approval not delivered",
                index,
            )
            .await
            {
                Ok(Some(txn::TxnState::Answered)) => {
                    metrics::counter!("cyberswitch_undelivered_reversals_total", "listener" => listener).increment(1);
                    tracing::warn!(txn = %key, "approval not delivered: its legs are reversed");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(txn = %key, error = %e, "undelivered approval: reversal not recorded")
                }
            }
        });
    }
}

/// frame → decode → duplicate check → handle → encode.
async fn process(
    switch: &Switch,
    spec: &Arc<Spec>,
    listener: &str,
    metrics: &ListenerMetrics,
    request: &[u8],
    peer: &str,
) -> Option<Bytes> {
    let msg = match spec.decode(request) {
        Ok(m) => m,
        Err(e) => return malformed(spec, listener, request, peer, e),
    };
    metrics.messages.count(Direction::In, msg.mti());
    // Everything logged while this request is handled carries its terminal and STAN. The
    // span is attached to the future, not entered: a guard held across `.await` would leak
    // into whatever else the thread runs meanwhile.
    let span = tracing::info_span!(
        "txn",
        terminal = msg.terminal_id().unwrap_or_default().trim(),
        stan = msg.stan().unwrap_or(0),
        mti = %msg.mti()
    );
    respond(switch, spec, listener, metrics, msg)
        .instrument(span)
        .await
}

/// duplicate check → handle → journal → encode, for a decoded request.
async fn respond(
    switch: &Switch,
    spec: &Arc<Spec>,
    listener: &str,
    metrics: &ListenerMetrics,
    msg: Message<'_>,
) -> Option<Bytes> {
    // While this ticket is held, repeats wait for its answer and follow-ups for its outcome.
    let Some(id) = TxnId::of(listener, &msg) else {
        return respond_fresh(switch, spec, listener, metrics, msg, None).await;
    };
    let ticket = match switch.registry.claim(id.clone()).await {
        Claim::Answered(bytes) => return Some(duplicate(switch, listener, &id, bytes)),
        Claim::InFlight(original) => {
            return original
                .answer()
                .await
                .map(|b| duplicate(switch, listener, &id, b))
        }
        Claim::Fresh(ticket) => ticket,
    };
    respond_fresh(switch, spec, listener, metrics, msg, Some(ticket)).await
}

/// handle → journal → encode, for a request seen for the first time (`ticket`: its claim on
/// its key, `None` when it has none).
async fn respond_fresh(
    switch: &Switch,
    spec: &Arc<Spec>,
    listener: &str,
    metrics: &ListenerMetrics,
    msg: Message<'_>,
    ticket: Option<Ticket<'_>>,
) -> Option<Bytes> {
    let flow_started = Instant::now();
    let mut txn = Txn::begin(
        switch.journal.clone(),
        switch.saf.clone(),
        switch.clock.clone(),
        listener,
        &msg,
    )
    .with_max_legs(switch.config.limits.max_legs)
    .with_legs_ahead(switch.legs_ahead.clone());
    let mut resp = switch.handle(&msg, &mut txn).await;
    if let Some(date) = txn.business_date() {
        resp.set(
            de::SETTLEMENT_DATE,
            crate::books::day::mmdd(date).as_bytes(),
        );
    }
    if resp.get(de::RRN).is_none() && matches!(msg.mti().class(), 1 | 2 | 4) {
        resp.set(de::RRN, switch.next_rrn().as_bytes());
    }
    let mut encoded = match encode(spec, &resp) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            // An answer that cannot be sent approves nothing: whatever legs it decided are
            // undone, and the terminal gets 96 (the record says so too).
            tracing::error!(error = %e, "answer does not encode: 96, its legs reversed");
            txn.reverse_live_legs();
            let rrn = resp.get(de::RRN).map(<[u8]>::to_vec);
            resp = answer(&msg, ResponseCode::SystemMalfunction);
            if let Some(rrn) = rrn {
                resp.set(de::RRN, &rrn);
            }
            encode(spec, &resp).ok()
        }
    };
    let (index, on_indexed) = match (&ticket, &encoded) {
        (Some(t), Some(bytes)) => (
            Some((t.id().to_bytes(), switch.registry.index_value(bytes))),
            Some(t.on_indexed(&switch.registry)),
        ),
        _ => (None, None),
    };
    let landed = move |indexed| {
        if let Some(f) = on_indexed {
            f(indexed)
        }
    };
    // Past a graceful stop's drain nothing more is journaled or sent: the transaction stays
    // open, and recovery reverses its legs at the next start.
    let Some(_passing) = switch.gate.pass() else {
        tracing::warn!("stopping: answer dropped, its transaction left to recovery");
        return None;
    };
    let mut ticket = ticket;
    let mut awaits_delivery = false;
    let mut refund_answered = txn.is_refund();
    if refund_answered {
        // Test-only: a refund decided and its answer step not yet written.
        testhooks::pause_point("refund-decided", msg.stan()).await;
    }
    if let Err(e) = txn.finish(&resp, index, landed).await {
        refund_answered = false;
        // The answer is not on disk: it must not approve anything. The terminal gets 96;
        // in the background, that 96 and the reversal of every leg are written, retried
        // until they land. Meanwhile repeats get the 96 from memory and a reversal of it
        // waits for them.
        tracing::error!(error = %e, "journal unavailable: answering 96, its legs to be reversed");
        let rrn = resp.get(de::RRN).map(<[u8]>::to_vec);
        resp = answer(&msg, ResponseCode::SystemMalfunction);
        if let Some(rrn) = rrn {
            resp.set(de::RRN, &rrn);
        }
        encoded = encode(spec, &resp).ok();
        if txn.has_legs() {
            let pinned = match &ticket {
                Some(t) => Some(t.pin().await),
                None => None,
            };
            let index = match (&ticket, &encoded) {
                (Some(t), Some(bytes)) => {
                    Some((t.id().to_bytes(), switch.registry.index_value(bytes)))
                }
                _ => None,
            };
            let on_indexed = ticket.as_ref().map(|t| t.on_indexed(&switch.registry));
            txn.withdraw(&resp, index);
            let stop = switch.stop.clone();
            tokio::spawn(async move {
                let _pinned = pinned;
                let mut txn = txn;
                let landed = txn.commit_retrying(&stop).await;
                if landed {
                    tracing::warn!("journal write landed: answered 96, legs reversed");
                }
                // Not landed (stopping, or the journal halted): repeats get the 96 from
                // memory for the duplicate window, then the entry goes.
                if let Some(f) = on_indexed {
                    f(landed);
                }
            });
            if let Some(t) = ticket.take() {
                t.answered(encoded.clone(), false);
            }
        }
    } else {
        awaits_delivery = txn.awaits_delivery();
    }
    testhooks::crash_point("journal-answer").await;
    if refund_answered {
        testhooks::crash_point("refund-answered").await;
    }
    let code = resp.get(de::RESPONSE_CODE).unwrap_or_default();
    metrics.answered(msg.mti(), code, flow_started.elapsed());
    // One line per transaction would be the busiest log of all: the journal has them.
    tracing::debug!(code = %String::from_utf8_lossy(code), "answered");

    if let (Some(ticket), Some(bytes), true) = (&ticket, &encoded, awaits_delivery) {
        switch
            .deliveries
            .expect(bytes, ticket.id().clone(), spec.clone());
    }
    if let Some(ticket) = ticket {
        ticket.answered(encoded.clone(), false);
    }
    metrics.messages.count(Direction::Out, resp.mti());
    encoded
}

/// A repeat's answer: the original's, as one more copy of it when it is an approval on its
/// way (see [`super::delivery`]).
fn duplicate(switch: &Switch, listener: &str, id: &TxnId, answer: Bytes) -> Bytes {
    metrics::counter!("cyberswitch_duplicates_total", "listener" => listener.to_string())
        .increment(1);
    tracing::info!("duplicate: original answer repeated");
    switch.deliveries.repeat(id, answer)
}

/// Encode an answer.
fn encode(spec: &Spec, resp: &OwnedMessage) -> Result<Bytes, crate::iso8583::EncodeError> {
    let mut out = BytesMut::new();
    spec.encode(resp, &mut out)?;
    Ok(out.freeze())
}

/// A request that does not fit the layout: answered 30 when the MTI and bitmap were readable
/// (SPEC §4.2), otherwise only logged and counted. Never logs field content.
fn malformed(
    spec: &Spec,
    listener: &str,
    request: &[u8],
    peer: &str,
    e: crate::iso8583::DecodeError,
) -> Option<Bytes> {
    metrics::counter!("cyberswitch_decode_errors_total", "link" => listener.to_string(), "reason" => e.label()).increment(1);
    tracing::warn!(listener, peer, error = %e, "undecodable request");
    let (partial, _) = spec.decode_partial(request);
    let msg = partial?;
    if msg.mti().is_response() {
        return None;
    }
    let mut out = BytesMut::new();
    spec.encode(&answer(&msg, ResponseCode::FormatError), &mut out)
        .ok()?;
    Some(out.freeze())
}
