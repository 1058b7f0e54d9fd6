//! Cut-over (F13): the open business date is closed — automatically at the configured time,
//! or on demand — and every upstream link is asked whether its totals for the day agree
//! (0500/0510). A mismatch is reported (log, metric, the day's closing record), never
//! swallowed.
//!
//! A close goes in this order, so that nothing can be booked on a day after its figures
//! were taken: the open date moves on (new transactions take the next day), the closing
//! day's transactions in flight are waited for (bounded), the day is closed in memory (a
//! late event is booked on the open day instead), a synced write makes sure every step
//! before it is on disk, then the figures are read and compared. A crash in between leaves
//! the day pending: it is closed at the next start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{day, Books, Totals, CLOSED_KEY, OPEN_KEY};
use crate::iso8583::{de, ResponseCode};
use crate::journal::Step;
use crate::net::link::Link;
use crate::store::Cf;

/// How a link's day compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Matched,
    Mismatched,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkReconciliation {
    pub link: String,
    pub status: Status,
    pub ours: Totals,
    /// The host's figures, when it sent them (a 0510 that agrees repeats ours).
    pub theirs: Option<Totals>,
    /// Why it is mismatched, in words (no answer, the host's code).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// A closed day: when, and how each upstream link compared.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Closing {
    pub business_date: String,
    pub closed_at_ms: i64,
    pub links: Vec<LinkReconciliation>,
}

impl Books {
    /// The closing record of a date, if it is closed.
    pub fn closing(&self, date: NaiveDate) -> Result<Option<Closing>, String> {
        let key = format!("closed/{}", day::iso(date));
        match self.journal.get(Cf::Books, key.as_bytes())? {
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| format!("books: closing record of {key}: {e}")),
            None => Ok(None),
        }
    }
}

/// Close the open business date (and any day a crash left pending before it).
pub async fn cutover(
    books: &Arc<Books>,
    links: &HashMap<String, Arc<Link>>,
) -> Result<Vec<Closing>, String> {
    let _one_at_a_time = books.closing.lock().await;
    let closing = advance(books).await?;
    close_through(books, links, closing).await
}

/// Close the days a crash left pending (between the last closed and the open one).
pub async fn close_pending(
    books: &Arc<Books>,
    links: &HashMap<String, Arc<Link>>,
) -> Result<Vec<Closing>, String> {
    let _one_at_a_time = books.closing.lock().await;
    let open = books.open_date();
    match open.pred_opt() {
        Some(last) => close_through(books, links, last).await,
        None => Ok(Vec::new()),
    }
}

/// Cut over whenever the clock passes the cut-over time; first close what a crash left
/// pending. Until `stop`.
pub async fn automatic(
    books: Arc<Books>,
    links: HashMap<String, Arc<Link>>,
    stop: CancellationToken,
) {
    if let Err(e) = close_pending(&books, &links).await {
        tracing::error!(error = %e, "closing the days left pending failed");
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if !books.config.automatic {
            continue;
        }
        let c = &books.config;
        let today = day::business_date(books.now(), c.cutover, c.time_zone);
        if today > books.open_date() {
            if let Err(e) = cutover(&books, &links).await {
                tracing::error!(error = %e, "automatic cut-over failed; tried again in a second");
            }
        }
    }
}

/// Move the open date on by a day (synced); returns the date that was open.
async fn advance(books: &Books) -> Result<NaiveDate, String> {
    let closing = books.open_date();
    let next = closing
        .succ_opt()
        .ok_or_else(|| "no business date after this one".to_string())?;
    let mut step = Step::new();
    step.put(Cf::Meta, OPEN_KEY, day::iso(next));
    step.synced();
    books
        .journal
        .commit(step)
        .await
        .map_err(|e| e.to_string())?;
    books.lock_days().open = next;
    metrics::gauge!("cyberswitch_business_date").set(yyyymmdd(next));
    tracing::info!(closing = %closing, open = %next, "cut-over: business date advanced");
    Ok(closing)
}

async fn close_through(
    books: &Arc<Books>,
    links: &HashMap<String, Arc<Link>>,
    last: NaiveDate,
) -> Result<Vec<Closing>, String> {
    let mut closed = Vec::new();
    while let Some(date) = books.closed_through().succ_opt().filter(|d| *d <= last) {
        closed.push(close(books, links, date).await?);
    }
    Ok(closed)
}

async fn close(
    books: &Arc<Books>,
    links: &HashMap<String, Arc<Link>>,
    date: NaiveDate,
) -> Result<Closing, String> {
    drain(books, date).await;
    books.lock_days().closed_through = date;
    // A synced write behind every step submitted before it: the day's events are on disk.
    let mut barrier = Step::new();
    barrier.put(Cf::Meta, b"books.closing".to_vec(), day::iso(date));
    barrier.synced();
    books
        .journal
        .commit(barrier)
        .await
        .map_err(|e| e.to_string())?;
    let ours = books.link_totals(date)?;
    let mut upstream: Vec<&String> = books
        .parties()
        .iter()
        .filter(|(_, p)| p.upstream)
        .map(|(name, _)| name)
        .collect();
    upstream.sort();
    upstream.dedup();
    let mut results = Vec::new();
    for name in upstream {
        let figures = ours.get(name).copied().unwrap_or_default();
        let result = match links.get(name.as_str()) {
            Some(link) => reconcile(link, date, figures).await,
            None => LinkReconciliation {
                link: name.clone(),
                status: Status::Mismatched,
                ours: figures,
                theirs: None,
                note: "no such link".into(),
            },
        };
        report(date, &result);
        results.push(result);
    }
    let closing = Closing {
        business_date: day::iso(date),
        closed_at_ms: books.clock.now_ms(),
        links: results,
    };
    let record = serde_json::to_vec(&closing).map_err(|e| e.to_string())?;
    let mut step = Step::new();
    step.put(Cf::Books, format!("closed/{}", day::iso(date)), record);
    step.put(Cf::Meta, CLOSED_KEY, day::iso(date));
    step.synced();
    books
        .journal
        .commit(step)
        .await
        .map_err(|e| e.to_string())?;
    Ok(closing)
}

/// Wait until no transaction or attempt holds `date`, at most the configured drain time.
async fn drain(books: &Books, date: NaiveDate) {
    let deadline = tokio::time::Instant::now() + books.config.drain;
    loop {
        let released = books.released.notified();
        let holding = books.lock_days().in_flight.get(&date).copied().unwrap_or(0);
        if holding == 0 {
            return;
        }
        if tokio::time::timeout_at(deadline, released).await.is_err() {
            tracing::warn!(
                date = %date, holding,
                "cut-over: transactions of the closing day still in flight; their events go to the open day"
            );
            return;
        }
    }
}

/// Send the link our figures for the day; 00 back means the host agrees.
async fn reconcile(link: &Link, date: NaiveDate, ours: Totals) -> LinkReconciliation {
    let mut request = link.own_message(*b"0500");
    request.set(de::SETTLEMENT_DATE, day::mmdd(date).as_bytes());
    ours.set_fields(&mut request);
    let (status, theirs, note) = match link.request(request).await {
        Ok(answer) => {
            let theirs = Totals::from_fields(|f| {
                answer
                    .get(f)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            match answer.code() {
                Some(ResponseCode::Approved) => {
                    (Status::Matched, theirs.or(Some(ours)), String::new())
                }
                _ => {
                    let code = answer.get(de::RESPONSE_CODE).map(String::from_utf8_lossy);
                    let note = format!("the host answered {}", code.unwrap_or_default());
                    (Status::Mismatched, theirs, note)
                }
            }
        }
        Err(e) => (Status::Mismatched, None, format!("no answer: {e}")),
    };
    LinkReconciliation {
        link: link.name.to_string(),
        status,
        ours,
        theirs,
        note,
    }
}

fn report(date: NaiveDate, r: &LinkReconciliation) {
    match r.status {
        Status::Matched => {
            tracing::info!(date = %date, link = %r.link, "reconciliation: matched");
        }
        Status::Mismatched => {
            metrics::counter!("cyberswitch_reconciliation_mismatches_total", "link" => r.link.clone())
                .increment(1);
            tracing::warn!(
                date = %date, link = %r.link, note = %r.note,
                ours = ?r.ours, theirs = ?r.theirs,
                "reconciliation: MISMATCH"
            );
        }
    }
    let net = r
        .ours
        .net()
        .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as f64;
    metrics::gauge!("cyberswitch_books_closed_net", "link" => r.link.clone()).set(net);
}

fn yyyymmdd(date: NaiveDate) -> f64 {
    day::iso(date).replace('-', "").parse().unwrap_or(0.0)
}
