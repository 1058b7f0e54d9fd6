//! The switch as an issuer (SPEC §7, F14–F16): card programs on the hosted ledger.
//!
//! - [`cards`]: hosted cards and what partners do with them through the admin API — issue,
//!   activate, recharge, refund, suspend, history and statements; pre-registered purchases;
//!   master accounts and their sub-account cards (one file per concern under `cards/`).
//! - [`host`]: the ISO 8583 face. Hosted wallet issuers and the card programs answer the
//!   switch through in-process links ([`crate::net::link::LocalHost`]), so the flows reach
//!   them exactly as they reach remote hosts — with the same journal, store-and-forward
//!   reversals and recovery.
//!
//! Money lives on the [`Ledger`] only. Ledger account ids: `card:<card id>` for a card's
//! own balance, `master:<id>` for a master account, `<issuer id>:<account>` for the
//! accounts of a hosted wallet issuer (a card's points: `<points issuer>:<card id>`).

pub mod cards;
pub mod host;

use std::sync::Arc;

use crate::keylock::{KeyGuard, KeyLocks};

use crate::config::Config;
use crate::directory::CardKey;
use crate::iso8583::ResponseCode;
use crate::journal::Journal;
use crate::ledger::{Ledger, LedgerError};
use crate::pin::PinKey;

pub use cards::{Card, CardStatus, Master, Prereg};

/// Why a hosted operation was refused; each maps to an ISO response code and an API code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostedError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("card is {0}")]
    Status(&'static str),
    #[error("card expired")]
    Expired,
    #[error("wrong PIN")]
    WrongPin,
    /// A PIN block that does not decrypt to a format 0 block under the zone key: garbage,
    /// or sealed under another key. Not a try at the PIN (SPEC §10): anyone who knows a
    /// card number could otherwise lock its card with random bytes.
    #[error("unreadable PIN block")]
    UnreadablePin,
    #[error("PIN tries exceeded")]
    PinTriesExceeded,
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    BadAmount(String),
    #[error("{0}")]
    Invalid(String),
    #[error("pre-registered purchase: {0}")]
    Prereg(String),
    #[error("insufficient funds: {0} available")]
    Insufficient(i64),
    #[error("{0}")]
    Conflict(String),
    /// An operation id (a leg id) used already by another operation.
    #[error("{0}")]
    Duplicate(String),
    #[error("storage: {0}")]
    Storage(String),
}

impl HostedError {
    /// The ISO 8583 response code a terminal gets.
    pub fn response_code(&self) -> ResponseCode {
        match self {
            HostedError::NotFound(_) => ResponseCode::InvalidCard,
            HostedError::Status(s) if *s == "closed" => ResponseCode::InvalidCard,
            HostedError::Status(_) => ResponseCode::RestrictedCard,
            HostedError::Expired => ResponseCode::ExpiredCard,
            HostedError::WrongPin => ResponseCode::IncorrectPin,
            HostedError::UnreadablePin => ResponseCode::FormatError,
            HostedError::PinTriesExceeded => ResponseCode::PinTriesExceeded,
            HostedError::Limit(_) => ResponseCode::ExceedsLimit,
            HostedError::BadAmount(_) => ResponseCode::InvalidAmount,
            HostedError::Prereg(_) => ResponseCode::InvalidTransaction,
            HostedError::Insufficient(_) => ResponseCode::InsufficientFunds,
            HostedError::Invalid(_) | HostedError::Conflict(_) => ResponseCode::InvalidTransaction,
            HostedError::Storage(_) => ResponseCode::SystemMalfunction,
            HostedError::Duplicate(_) => ResponseCode::Duplicate,
        }
    }

    /// The stable code in the admin API's JSON errors.
    pub fn api_code(&self) -> &'static str {
        match self {
            HostedError::NotFound(_) => "not_found",
            HostedError::Status(_) => "card_status",
            HostedError::Expired => "card_expired",
            HostedError::WrongPin => "wrong_pin",
            HostedError::UnreadablePin => "invalid_request",
            HostedError::PinTriesExceeded => "pin_tries_exceeded",
            HostedError::Limit(_) => "limit_exceeded",
            HostedError::BadAmount(_) => "bad_amount",
            HostedError::Invalid(_) => "invalid_request",
            HostedError::Prereg(_) => "preregistration_mismatch",
            HostedError::Insufficient(_) => "insufficient_funds",
            HostedError::Conflict(_) => "conflict",
            HostedError::Duplicate(_) => "duplicate",
            HostedError::Storage(_) => "storage",
        }
    }
}

impl From<LedgerError> for HostedError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Insufficient { available } => HostedError::Insufficient(available),
            LedgerError::UnknownAccount(a) => HostedError::NotFound(format!("account {a}")),
            LedgerError::AccountExists(a) => HostedError::Conflict(format!("account {a} exists")),
            LedgerError::BadAmount => HostedError::BadAmount("amounts must be positive".into()),
            e @ LedgerError::OutOfRange => HostedError::BadAmount(e.to_string()),
            LedgerError::UnknownLeg(l) => HostedError::NotFound(format!("leg {l}")),
            e @ LedgerError::WrongState { .. } => HostedError::Conflict(e.to_string()),
            LedgerError::Storage(s) => HostedError::Storage(s),
            e @ LedgerError::Stopped => HostedError::Storage(e.to_string()),
            e @ LedgerError::LegCollision(_) => HostedError::Duplicate(e.to_string()),
        }
    }
}

pub(crate) fn storage(e: impl std::fmt::Display) -> HostedError {
    HostedError::Storage(e.to_string())
}

/// The hosted side of the switch: its ledger, cards and programs.
pub struct Hosted {
    pub ledger: Arc<Ledger>,
    pub(crate) journal: Arc<Journal>,
    pub(crate) config: Arc<Config>,
    pub(crate) card_key: CardKey,
    /// The zone PIN key of the in-process card host: PIN blocks reach it translated to this
    /// key, which never leaves the process.
    pub zone_key: PinKey,
    /// One lock per card (PIN tries and status change one at a time), and one per card
    /// number while it is being issued (two requests for one number cannot both take it).
    locks: KeyLocks,
}

impl Hosted {
    pub async fn open(
        journal: Arc<Journal>,
        config: Arc<Config>,
        card_key: CardKey,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Result<Arc<Hosted>, String> {
        let ttl = std::time::Duration::from_secs(config.hosted.hold_ttl_s);
        let ledger =
            Ledger::open_with_clock(journal.clone(), ttl, clock).map_err(|e| e.to_string())?;
        cards::index_subs(&journal)
            .await
            .map_err(|e| format!("hosted cards: {e}"))?;
        Ok(Arc::new(Hosted {
            ledger,
            journal,
            config,
            card_key,
            zone_key: PinKey::random(),
            locks: KeyLocks::new(),
        }))
    }

    pub(crate) async fn lock_card(&self, card: &str) -> KeyGuard<'_> {
        self.locks.lock(card).await
    }

    /// Release expired holds now and then, until `stop`.
    pub fn start_expiry(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let hosted = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                }
                match hosted.ledger.expire_holds().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "hosted ledger: holds expired"),
                    Err(e) => tracing::error!(error = %e, "hosted ledger: expiry failed"),
                }
            }
        });
    }
}

/// Ledger account of a card's own balance.
pub fn card_account(card_id: &str) -> String {
    format!("card:{card_id}")
}

/// Ledger account of a master account.
pub fn master_account(master_id: &str) -> String {
    format!("master:{master_id}")
}

/// Ledger account of a hosted wallet issuer's account.
pub fn wallet_account(issuer: &str, account: &str) -> String {
    format!("{issuer}:{account}")
}
