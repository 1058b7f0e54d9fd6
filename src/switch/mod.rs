//! The switch: one authorization reads top to bottom as
//! frame → decode → duplicate check → route by MTI and processing code → legs → answer.
//! How it is started (stores, links, listeners) is [`crate::daemon`]'s business.
//!
//! - [`listener`]: a terminal listener's face: decode, duplicates, journal, encode, answer.
//! - [`netmgmt`]: F1 network management.
//! - [`wallets`]: F2 balance inquiry, F3/F4 wallet legs, F5 split tender with the credit leg.
//! - [`credit`]: F6 plain credit pass-through, and the credit leg of a split tender.
//! - [`reversal`]: F7 terminal reversals.
//! - [`routing`]: which acquirer link or hosted program a card goes to.
//! - [`registry`]: F10 duplicates and retransmissions; follow-ups of one transaction one at
//!   a time.
//! - [`txn`]: a transaction's durable state (legs, answer) and start-up recovery.
//! - [`saf`]: compensation of legs through the persistent store-and-forward queue.

pub mod completion;
pub mod coupon;
pub mod credit;
pub mod delivery;
pub mod followup;
pub mod legs_ahead;
pub mod listener;
pub mod mandatory;
pub mod netmgmt;
pub mod refund;
pub mod registry;
pub mod reversal;
pub mod routing;
pub mod rrn;
pub mod saf;
pub mod search;
pub mod testhooks;
pub mod txn;
pub mod wallets;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::directory::Directory;
use crate::iso8583::{answer, Message, OwnedMessage, Pan, ResponseCode};
use crate::journal::Journal;
use crate::net::link::Link;
use registry::{Hold, Registry, TxnId};
use routing::Routing;
use saf::Saf;
use txn::Txn;

/// The running switch, shared by every listener.
pub struct Switch {
    pub config: Arc<Config>,
    pub directory: Directory,
    pub links: HashMap<String, Arc<Link>>,
    pub journal: Arc<Journal>,
    pub saf: Arc<Saf>,
    /// The switch's own programs (hosted ledger), served through in-process links.
    pub hosted: Arc<crate::hosted::Hosted>,
    /// PIN keys of listeners (terminal keys) and links (zone keys), by name.
    pin_keys: HashMap<String, crate::pin::PinKey>,
    routing: Routing,
    /// Transactions in memory: duplicates, follow-ups one at a time.
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    rrns: Arc<rrn::Rrns>,
    /// The links that send legs ahead of their record, by name (see [`legs_ahead`]).
    pub legs_ahead: LegsAheadByLink,
    /// Business days, cut-over, settlement (F13).
    pub books: Arc<crate::books::Books>,
    /// Approvals on their way to their terminals (see [`delivery`]).
    pub deliveries: Arc<delivery::Deliveries>,
    /// Mobile coupons (F18).
    pub coupons: Arc<crate::coupons::Coupons>,
    /// Virtual accounts (F17), with the partner callback outbox.
    pub va: Arc<crate::va::VirtualAccounts>,
    /// Closed at the end of a graceful stop's drain: no answer is journaled after.
    gate: Gate,
    /// Cancelled when the switch stops (background retries give up: recovery takes over).
    stop: CancellationToken,
}

/// What answers pass once they are decided: closed when a graceful stop gives up waiting,
/// so that no approval is journaled that nobody would deliver (its transaction stays open
/// for recovery instead).
#[derive(Default)]
struct Gate {
    closed: std::sync::atomic::AtomicBool,
    passing: crate::net::server::WorkCount,
}

impl Gate {
    /// Pass, unless closed; the guard is held while the answer is journaled.
    fn pass(&self) -> Option<crate::net::server::WorkGuard> {
        use std::sync::atomic::Ordering;
        // Counted before the check: [`Gate::close`] then waits for whoever got through.
        let guard = self.passing.enter();
        (!self.closed.load(Ordering::SeqCst)).then_some(guard)
    }

    async fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.passing.idle().await;
    }
}

/// What a switch is made of; [`crate::daemon`] assembles it, tests may too.
pub struct Parts {
    pub config: Arc<Config>,
    pub directory: Directory,
    pub links: HashMap<String, Arc<Link>>,
    pub journal: Arc<Journal>,
    pub saf: Arc<Saf>,
    pub hosted: Arc<crate::hosted::Hosted>,
    pub clock: Arc<dyn Clock>,
    pub rrns: Arc<rrn::Rrns>,
    pub legs_ahead: LegsAheadByLink,
    pub books: Arc<crate::books::Books>,
    pub va: Arc<crate::va::VirtualAccounts>,
}

/// Each link sending legs ahead of their record, by name.
pub type LegsAheadByLink = Arc<HashMap<String, Arc<legs_ahead::LegsAhead>>>;

impl Switch {
    pub fn new(parts: Parts, stop: CancellationToken) -> Result<Arc<Switch>, String> {
        let Parts {
            config,
            directory,
            links,
            journal,
            saf,
            hosted,
            clock,
            rrns,
            legs_ahead,
            books,
            va,
        } = parts;
        let pin_keys = pin_keys(&config, &hosted);
        let routing = Routing::new(&config);
        // Memory holds requests in flight only; answered ones are in the journal's index.
        let window = Duration::from_secs(config.limits.duplicate_window_s.min(60));
        let registry = Arc::new(Registry::new(
            journal.clone(),
            clock.clone(),
            Duration::from_secs(config.limits.duplicate_window_s),
        ));
        let deliveries = Arc::new(delivery::Deliveries::new(journal.clone()));
        let coupons = Arc::new(crate::coupons::Coupons::new(
            journal.clone(),
            clock.clone(),
            &config,
        ));
        let switch = Arc::new(Switch {
            deliveries,
            coupons,
            gate: Gate::default(),
            stop: stop.clone(),
            config,
            directory,
            links,
            journal,
            saf,
            hosted,
            pin_keys,
            routing,
            registry,
            clock,
            rrns,
            legs_ahead,
            books,
            va,
        });
        tokio::spawn(registry::sweeper(switch.registry.clone(), window, stop));
        Ok(switch)
    }

    /// The end of a graceful stop's drain: from now on no answer is journaled (nor sent);
    /// returns once the answers being journaled have been.
    pub async fn close(&self) {
        self.gate.close().await;
    }

    /// The PIN key of a listener or link, if it has one.
    pub fn pin_key(&self, name: &str) -> Option<&crate::pin::PinKey> {
        self.pin_keys.get(name)
    }

    /// A retrieval reference number for requests that came without one (and for every
    /// upstream leg): 12 digits, unique across restarts (see [`rrn`]).
    pub fn next_rrn(&self) -> String {
        self.rrns.next()
    }

    /// Handle one decoded request; the answer is not encoded yet.
    async fn handle(&self, req: &Message<'_>, txn: &mut Txn) -> OwnedMessage {
        let mti = req.mti();
        if mti.is_response() {
            return answer(req, ResponseCode::InvalidTransaction);
        }
        let codes = &self.config.processing_codes;
        let refund = matches!(mti.class(), 1 | 2)
            && req
                .transaction_type()
                .is_some_and(|tt| codes.refund.contains(&tt));
        let completion = !refund && mti.class() == 2 && completion::is_completion(self, req);
        let shape = match (refund, completion) {
            (true, _) => mandatory::Shape::Refund,
            (_, true) => mandatory::Shape::FollowUp,
            _ => mandatory::Shape::Request,
        };
        if let Err(refusal) = mandatory::check(req, shape, codes) {
            tracing::info!(reason = %refusal.reason, "request refused before routing");
            return answer(req, refusal.code);
        }
        match (mti.class(), mti.is_response()) {
            (_, true) => answer(req, ResponseCode::InvalidTransaction),
            (8, _) => netmgmt::handle(req),
            (5, _) => crate::books::terminal::reconcile(&self.books, req),
            (2, _) if completion => completion::handle(self, req, txn.listener()).await,
            (1 | 2, _)
                if txn
                    .key()
                    .is_some_and(|k| followup::reversed_before_seen(&self.journal, k)) =>
            {
                tracing::warn!("reversed before it arrived: declined");
                answer(req, ResponseCode::InvalidTransaction)
            }
            (1 | 2, _) if refund => refund::handle(self, req, txn).await,
            (1 | 2, _) => self.financial(req, txn).await,
            (4, _) => reversal::handle(self, req, txn.listener()).await,
            _ => answer(req, ResponseCode::InvalidTransaction),
        }
    }

    /// Wait for the transaction a follow-up names in field 90 (a reversal, a completion) to
    /// finish if it is still in flight (bounded like it: its legs time out upstream), then
    /// hold it: follow-ups of one original go one at a time. Returns its key and the hold.
    async fn hold_original(
        &self,
        listener: &str,
        req: &Message<'_>,
        od: &crate::iso8583::OriginalData,
    ) -> (String, Hold<'_>) {
        let id = TxnId::original(listener, &req.terminal_id().unwrap_or_default(), od);
        let held = self.registry.hold(&id).await;
        (id.record_key(), held)
    }

    async fn financial(&self, req: &Message<'_>, txn: &mut Txn) -> OwnedMessage {
        match coupon::token(req) {
            Ok(Some(token)) => return coupon::purchase(self, req, txn, &token).await,
            Ok(None) => {}
            Err(why) => {
                tracing::info!(why, "coupon tag unusable");
                return answer(req, ResponseCode::FormatError);
            }
        }
        let pan = match req.pan() {
            Ok(Some(p)) => p,
            Ok(None) => return answer(req, ResponseCode::FormatError),
            Err(e) => {
                tracing::info!(error = %e, "bad card number");
                return answer(req, ResponseCode::FormatError);
            }
        };
        let tt = req.transaction_type().unwrap_or(99);
        let codes = &self.config.processing_codes;
        let wallets = match self.directory.payable(&pan) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "card directory read failed");
                return answer(req, ResponseCode::SystemMalfunction);
            }
        };
        // A hosted card with no wallets is asked for its own balance (F14).
        let own_balance = wallets.is_empty() && self.routing.program_for(pan.expose()).is_some();
        if codes.inquiry.contains(&tt) && !own_balance {
            return wallets::inquiry(self, req, txn, &wallets).await;
        }
        if codes.purchase.contains(&tt) && !wallets.is_empty() {
            return wallets::purchase(self, req, txn, &pan, &wallets).await;
        }
        // A card with no wallets, or a processing code the switch does not own: relay (F6).
        credit::pass_through(self, req, txn, &pan).await
    }

    /// The acquirer link for a card.
    fn acquirer(&self, pan: &Pan) -> Option<&Arc<Link>> {
        self.routing
            .acquirer_for(pan.expose())
            .and_then(|name| self.links.get(name))
    }
}

/// Listener (terminal) and link (zone) PIN keys by name; the hosted card link's is the hosted
/// host's own zone key.
fn pin_keys(
    config: &Config,
    hosted: &crate::hosted::Hosted,
) -> HashMap<String, crate::pin::PinKey> {
    let listeners = config.listeners.iter().map(|l| (&l.name, &l.pin_key));
    let links = config.links.iter().map(|l| (&l.name, &l.pin_key));
    let mut keys: HashMap<_, _> = listeners
        .chain(links)
        .filter_map(|(name, key)| Some((name.clone(), key.clone()?)))
        .collect();
    keys.insert(
        crate::config::HOSTED_CARDS_LINK.to_string(),
        hosted.zone_key.clone(),
    );
    keys
}
