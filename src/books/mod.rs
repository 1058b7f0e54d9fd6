//! The books (SPEC F13): every transaction belongs to a business date; every movement of
//! money it causes upstream is an *event* booked on that date, in the same journal step as
//! the leg state that records it, so the books are derived from the journal and never a
//! second truth. A cut-over closes a date: it stops new transactions from taking it, waits
//! for those that hold it, then compares each upstream link's totals with the host's
//! (0500/0510). Settlement reports are sums of a date's events.
//!
//! Which date an event belongs to is the date stamped (field 15) on the exchange that caused
//! it, so the switch and the host book it alike:
//! - a leg approved: a debit (taking leg) or a credit (refund leg), on its transaction's date;
//! - a reversal, refund advice or completion acknowledged with 00: on the date of that
//!   attempt (store-and-forward stamps each attempt with the open date). A reversal answered
//!   00 for a leg the switch never booked (no answer in time, approved late) books the leg's
//!   debit too: 00 says the host had taken it;
//! - nothing is ever booked on a closed date: an event that would be (a transaction that
//!   outlived the cut-over's wait) is booked on the open date and logged.
//!
//! - [`day`]: business date arithmetic. [`totals`]: the figures 0500/0510 carry.
//! - [`cutover`]: closing a day, reconciling every upstream link.
//! - [`report`]: settlement reports per issuer, acquirer, merchant and terminal.

pub mod cutover;
pub mod day;
pub mod report;
pub mod terminal;
pub mod totals;

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::{Config, LinkKind};
use crate::journal::{stored, Journal, Step};
use crate::store::Cf;
pub use totals::{EventKind, Totals};

/// The open business date in [`Cf::Meta`].
const OPEN_KEY: &[u8] = b"books.open";
/// The last date closed, in [`Cf::Meta`].
const CLOSED_KEY: &[u8] = b"books.closed_through";
/// Events are kept under `f/DATE/TERMINAL/LINK/TXN/LEG/TAG`: a terminal's own events are
/// one range of keys. Stores from before kept them under `e/DATE/LINK/TXN/LEG/TAG`; those
/// are still read.
const EVENTS: &str = "f/";
const EVENTS_BEFORE_TERMINALS: &str = "e/";

/// Who an upstream link is in the books.
#[derive(Debug, Clone, Serialize)]
pub struct Party {
    pub role: Role,
    /// The issuer's wallet kind, `prepaid` for hosted cards, `credit` for acquirers.
    pub kind: String,
    /// Reached over the network: reconciled by 0500 at cut-over.
    pub upstream: bool,
    /// Merchant fee in basis points of what legs through it take.
    pub fee_bp: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Issuer,
    Acquirer,
}

/// One booked movement: what a report sums.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// In the host's units (field 4 of the exchange).
    pub units: u64,
    /// In the switch's currency.
    pub amount: u64,
    pub merchant: String,
    pub terminal: String,
}

/// What a leg has booked and still stands (taken and not reversed): what its reversal undoes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Standing {
    pub kind: EventKind,
    pub units: u64,
    pub amount: u64,
}

/// Where an event comes from: a leg of a transaction.
#[derive(Debug, Clone, Copy)]
pub struct LegAt<'a> {
    pub link: &'a str,
    pub txn: &'a str,
    pub leg: usize,
}

struct Days {
    open: NaiveDate,
    closed_through: NaiveDate,
    /// Transactions and store-and-forward attempts holding each date.
    in_flight: BTreeMap<NaiveDate, usize>,
}

pub struct Books {
    journal: Arc<Journal>,
    clock: Arc<dyn Clock>,
    pub config: crate::config::BooksConfig,
    parties: HashMap<String, Party>,
    days: Mutex<Days>,
    released: tokio::sync::Notify,
    /// Cut-overs one at a time.
    closing: tokio::sync::Mutex<()>,
}

/// A date held by a transaction or attempt in flight: a cut-over waits for its release.
pub struct DayTicket {
    books: Arc<Books>,
    pub date: NaiveDate,
}

impl Drop for DayTicket {
    fn drop(&mut self) {
        let mut days = self.books.lock_days();
        if let Some(n) = days.in_flight.get_mut(&self.date) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                days.in_flight.remove(&self.date);
            }
        }
        drop(days);
        self.books.released.notify_waiters();
    }
}

impl Books {
    /// The books over the journal's store: the open date as stored, or (first start) the
    /// one the clock says, with the day before it taken as closed.
    pub async fn open(
        journal: Arc<Journal>,
        clock: Arc<dyn Clock>,
        config: &Config,
    ) -> Result<Arc<Books>, String> {
        let books = &config.books;
        let today = day::business_date(clock.now(), books.cutover, books.time_zone);
        let read = |key: &[u8]| -> Result<Option<NaiveDate>, String> {
            Ok(journal
                .get(Cf::Meta, key)?
                .and_then(|raw| day::parse_iso(&String::from_utf8_lossy(&raw))))
        };
        let (open, closed_through) = match (read(OPEN_KEY)?, read(CLOSED_KEY)?) {
            (Some(open), Some(closed)) => (open, closed),
            _ => {
                let closed = today.pred_opt().unwrap_or(today);
                let mut step = Step::new();
                step.put(Cf::Meta, OPEN_KEY, day::iso(today));
                step.put(Cf::Meta, CLOSED_KEY, day::iso(closed));
                step.synced();
                journal.commit(step).await.map_err(|e| e.to_string())?;
                (today, closed)
            }
        };
        Ok(Arc::new(Books {
            journal,
            clock,
            config: books.clone(),
            parties: parties(config),
            days: Mutex::new(Days {
                open,
                closed_through,
                in_flight: BTreeMap::new(),
            }),
            released: tokio::sync::Notify::new(),
            closing: tokio::sync::Mutex::new(()),
        }))
    }

    fn lock_days(&self) -> std::sync::MutexGuard<'_, Days> {
        // The counts stay right whatever a panicking holder was doing: each change is one
        // statement.
        self.days.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The date new transactions take.
    pub fn open_date(&self) -> NaiveDate {
        self.lock_days().open
    }

    /// The last closed date.
    pub fn closed_through(&self) -> NaiveDate {
        self.lock_days().closed_through
    }

    /// Hold the open date for a transaction or attempt: its events go on it, and the
    /// cut-over that closes it waits until the ticket is dropped.
    pub fn ticket(self: &Arc<Self>) -> DayTicket {
        let mut days = self.lock_days();
        let date = days.open;
        *days.in_flight.entry(date).or_default() += 1;
        DayTicket {
            books: self.clone(),
            date,
        }
    }

    pub fn party(&self, link: &str) -> Option<&Party> {
        self.parties.get(link)
    }

    pub fn parties(&self) -> &HashMap<String, Party> {
        &self.parties
    }

    /// Book `event` on `date` into `step` (written with the step, or not at all). The leg's
    /// standing is set to `standing` (`None`: nothing of it stands any more).
    pub fn book(
        &self,
        step: &mut Step,
        date: NaiveDate,
        at: LegAt<'_>,
        tag: char,
        event: &Event,
        standing: Option<Standing>,
    ) {
        let date = {
            let days = self.lock_days();
            if date <= days.closed_through {
                tracing::warn!(
                    date = %date, open = %days.open, link = at.link,
                    "an event of a closed day is booked on the open day"
                );
                metrics::counter!("cyberswitch_books_late_events_total").increment(1);
                days.open
            } else {
                date
            }
        };
        let key = format!(
            "{EVENTS}{}/{}/{}/{}/{:03}/{tag}",
            day::iso(date),
            event.terminal,
            at.link,
            at.txn,
            at.leg
        );
        step.put(Cf::Books, key, stored::to_bytes(event));
        let leg_key = standing_key(at);
        match standing {
            Some(s) => step.put(Cf::Books, leg_key, stored::to_bytes(&s)),
            None => step.delete(Cf::Books, leg_key),
        }
    }

    /// What a leg has booked and still stands, if anything.
    pub fn standing(&self, at: LegAt<'_>) -> Option<Standing> {
        let raw = self
            .journal
            .get(Cf::Books, standing_key(at).as_bytes())
            .ok()??;
        stored::from_bytes(&raw)?.ok()
    }

    /// Every event of a date: (link, transaction, event). Reports visit them instead
    /// ([`Books::each_event`]): a busy day holds millions.
    pub fn events(&self, date: NaiveDate) -> Result<Vec<(String, String, Event)>, String> {
        let mut out = Vec::new();
        self.each_event(date, |link, txn, e| {
            out.push((link.to_string(), txn.to_string(), e))
        })?;
        Ok(out)
    }

    /// Visit every event of a date: (link, transaction, event), read one at a time.
    pub fn each_event(
        &self,
        date: NaiveDate,
        mut visit: impl FnMut(&str, &str, Event),
    ) -> Result<(), String> {
        let date = day::iso(date);
        self.events_under(
            &format!("{EVENTS_BEFORE_TERMINALS}{date}/"),
            false,
            &mut visit,
        )?;
        self.events_under(&format!("{EVENTS}{date}/"), true, &mut visit)
    }

    /// Visit the events whose keys start with `prefix`, followed by `TERMINAL/` (when
    /// `with_terminal`: the prefix ends before it) then `LINK/TXN/LEG/TAG`.
    fn events_under(
        &self,
        prefix: &str,
        with_terminal: bool,
        visit: &mut dyn FnMut(&str, &str, Event),
    ) -> Result<(), String> {
        let mut failed = None;
        self.journal
            .store()
            .for_each(Cf::Books, prefix.as_bytes(), |key, value| {
                let key = String::from_utf8_lossy(key);
                let Some(Ok(event)) = stored::from_bytes::<Event>(value) else {
                    failed = Some(format!("books: unreadable event {key}"));
                    return ControlFlow::Break(());
                };
                let mut rest = key.get(prefix.len()..).unwrap_or_default();
                if with_terminal {
                    // The terminal id may hold a slash itself: the event says how long it is.
                    rest = rest.get(event.terminal.len() + 1..).unwrap_or_default();
                }
                // LINK/TXN/LEG/TAG, the transaction key possibly holding slashes itself.
                let Some((link, rest)) = rest.split_once('/') else {
                    return ControlFlow::Continue(());
                };
                let mut tail = rest.rsplitn(3, '/');
                let (_tag, _leg, txn) = (tail.next(), tail.next(), tail.next().unwrap_or_default());
                visit(link, txn, event);
                ControlFlow::Continue(())
            })?;
        failed.map_or(Ok(()), Err)
    }

    /// Each link's totals of a date, in the units exchanged with it.
    pub fn link_totals(&self, date: NaiveDate) -> Result<BTreeMap<String, Totals>, String> {
        let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
        self.each_event(date, |link, _, e| match totals.get_mut(link) {
            Some(t) => t.add(e.kind, e.units),
            None => {
                let mut t = Totals::default();
                t.add(e.kind, e.units);
                totals.insert(link.to_string(), t);
            }
        })?;
        Ok(totals)
    }

    /// A terminal's totals of a date, in currency, one count per transaction and kind (a
    /// purchase split over three legs is one debit to the terminal).
    pub fn terminal_totals(&self, date: NaiveDate, terminal: &str) -> Result<Totals, String> {
        let date = day::iso(date);
        // Its own range of keys; and what a store from before kept under the date alone
        // (nothing, for a date booked since).
        let mut per_txn: BTreeMap<(String, u8), (EventKind, u64)> = BTreeMap::new();
        let mut add = |_: &str, txn: &str, e: Event| {
            // A terminal id holding a slash shares a prefix with another's.
            if e.terminal != terminal {
                return;
            }
            let slot = per_txn
                .entry((txn.to_string(), e.kind as u8))
                .or_insert((e.kind, 0));
            slot.1 = slot.1.saturating_add(e.amount);
        };
        self.events_under(&format!("{EVENTS}{date}/{terminal}/"), false, &mut add)?;
        self.events_under(
            &format!("{EVENTS_BEFORE_TERMINALS}{date}/"),
            false,
            &mut add,
        )?;
        let mut totals = Totals::default();
        for (kind, amount) in per_txn.into_values() {
            totals.add(kind, amount);
        }
        Ok(totals)
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}

fn standing_key(at: LegAt<'_>) -> String {
    format!("l/{}/{}/{:03}", at.link, at.txn, at.leg)
}

/// Every link by what it is: remote and hosted issuers, hosted cards, acquirers.
fn parties(config: &Config) -> HashMap<String, Party> {
    let fee = |name: &str, kind: &str| {
        let fees = &config.books.fees_bp;
        fees.get(name)
            .or_else(|| fees.get(kind))
            .copied()
            .unwrap_or(0)
    };
    let upstream = |name: &str| config.links.iter().any(|l| l.name == name);
    let mut parties = HashMap::new();
    for issuer in &config.issuers {
        let link = issuer.link_name();
        let kind = issuer.kind.as_str();
        parties.insert(
            link.to_string(),
            Party {
                role: Role::Issuer,
                kind: kind.to_string(),
                upstream: upstream(link),
                fee_bp: fee(&issuer.id, kind),
            },
        );
    }
    parties.insert(
        crate::config::HOSTED_CARDS_LINK.to_string(),
        Party {
            role: Role::Issuer,
            kind: "prepaid".into(),
            upstream: false,
            fee_bp: fee(crate::config::HOSTED_CARDS_LINK, "prepaid"),
        },
    );
    for link in config.links.iter().filter(|l| l.kind == LinkKind::Acquirer) {
        parties.insert(
            link.name.clone(),
            Party {
                role: Role::Acquirer,
                kind: "credit".into(),
                upstream: true,
                fee_bp: fee(&link.name, "credit"),
            },
        );
    }
    parties
}

#[cfg(test)]
mod events_tests;
