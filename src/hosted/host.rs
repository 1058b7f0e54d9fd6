//! The hosted ledger's ISO 8583 face (SPEC §6 upstream contract, answered in-process).
//!
//! - [`WalletHost`]: a hosted wallet issuer (`hosted = true`): 0100/31 balance, 0200/00 debit
//!   of the account in field 102, 0400/0420/0421 reversal — what a remote issuer answers.
//! - [`CardHost`]: the card programs' own cards (routed here by BIN): balance, purchase with
//!   PIN, expiry, limits and pre-registered purchases checked, completion of an
//!   authorization (0220/0221 naming it in field 90), recharge (processing code 21),
//!   reversal; points accrued on spending.
//!
//! Every leg is idempotent by its id: the issuer or the card, then the leg's RRN (field 37:
//! the switch gives every leg a fresh one, unique across restarts, and carries it into the
//! leg's reversal, completion and advice). An id once placed is never placed again by
//! another request (another account, kind or amount): that is refused 94, never answered
//! 00 without moving money. Legs placed before ids were RRNs (terminal, STAN and
//! transmission time, which repeat yearly and after restarts) are still found by the
//! reversals and completions that name them in field 90.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::cards::{Card, CardStatus};
use super::{wallet_account, Hosted, HostedError};
use crate::config::ProgramKind;
use crate::iso8583::response;
use crate::iso8583::{de, AdditionalAmount, Message, OwnedMessage, ResponseCode, Spec};
use crate::journal::Step;
use crate::ledger::{Balance, EntryType, LedgerError};
use crate::net::link::LocalHost;
use crate::pin::decrypt_block;

/// An answer echoes what a remote host's does.
fn reply(msg: &Message<'_>) -> OwnedMessage {
    response::reply(msg, &response::HOST_ECHOED)
}

/// The RRN of a request, if it has one.
fn rrn_of(msg: &Message<'_>) -> Option<String> {
    let rrn = msg.str(de::RRN)?;
    let rrn = rrn.trim();
    (!rrn.is_empty()).then(|| rrn.to_string())
}

/// The id of the leg a request places: by its RRN; without one, as before RRNs.
fn leg_id(prefix: &str, msg: &Message<'_>) -> Option<String> {
    match rrn_of(msg) {
        Some(rrn) => Some(format!("{prefix}/rrn/{rrn}")),
        None => legacy_leg_id(prefix, msg),
    }
}

/// The id of the leg a follow-up (reversal, completion) names: by the RRN it carries (the
/// leg's own) when the ledger knows that leg; else as a leg placed before ids were RRNs.
fn named_leg(ledger: &crate::ledger::Ledger, prefix: &str, msg: &Message<'_>) -> Option<String> {
    let by_rrn = rrn_of(msg).map(|rrn| format!("{prefix}/rrn/{rrn}"));
    if let Some(id) = &by_rrn {
        if matches!(ledger.leg_state(id), Ok(Some(_))) {
            return by_rrn;
        }
    }
    legacy_leg_id(prefix, msg).or(by_rrn)
}

/// The leg a refund (0200/20) gives back to: named by tag `OR` (the original leg's RRN)
/// in field 48, else by field 90 as a leg placed before ids were RRNs.
fn refunded_leg(prefix: &str, msg: &Message<'_>) -> Option<String> {
    let elements = msg.switch_data().ok()?;
    match elements.iter().find(|(t, _)| t == "OR") {
        Some((_, rrn)) if !rrn.trim().is_empty() => Some(format!("{prefix}/rrn/{}", rrn.trim())),
        _ => legacy_leg_id(prefix, msg),
    }
}

/// The leg a request (or, for a reversal, its original in field 90) stands for, as ids were
/// before RRNs: terminal, STAN and transmission time.
fn legacy_leg_id(prefix: &str, msg: &Message<'_>) -> Option<String> {
    let terminal = msg.terminal_id().unwrap_or_default();
    let (stan, time) = if msg.mti().class() == 4 || is_completion(msg) {
        let od = msg.original_data().ok()??;
        (od.stan, od.transmission_time)
    } else {
        (msg.stan()?, msg.transmission_time().unwrap_or(0))
    };
    Some(format!("{prefix}/{}/{stan:06}/{time:010}", terminal.trim()))
}

/// A completion: an advice (0220/0221) naming its authorization in field 90.
fn is_completion(msg: &Message<'_>) -> bool {
    msg.mti().class() == 2 && msg.mti().as_bytes()[2] == b'2' && msg.has(de::ORIGINAL_DATA)
}

fn set_available(resp: &mut OwnedMessage, msg: &Message<'_>, b: Balance) {
    let block = AdditionalAmount {
        account_type: *b"60",
        amount_type: *b"02",
        currency: msg.currency().unwrap_or(410),
        amount: b.available(),
    };
    resp.set(
        de::ADDITIONAL_AMOUNTS,
        &AdditionalAmount::encode_all(&[block]),
    );
}

/// Authorization codes: six digits, from a counter.
struct AuthCodes(AtomicU32);

impl AuthCodes {
    fn next(&self) -> String {
        format!("{:06}", self.0.fetch_add(1, Ordering::Relaxed) % 1_000_000)
    }
}

fn decode<'a>(spec: &'a Spec, frame: &'a [u8]) -> Option<Message<'a>> {
    match spec.decode(frame) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::error!(error = %e, "hosted: request does not decode");
            None
        }
    }
}

fn reversal_code(result: Result<Balance, LedgerError>) -> ResponseCode {
    match result {
        Ok(_) => ResponseCode::Approved,
        Err(LedgerError::UnknownLeg(_)) => ResponseCode::OriginalNotFound,
        Err(e) => HostedError::from(e).response_code(),
    }
}

/// A hosted wallet issuer.
pub struct WalletHost {
    hosted: Arc<Hosted>,
    issuer: String,
    spec: Arc<Spec>,
    auth: AuthCodes,
}

impl WalletHost {
    pub fn new(hosted: Arc<Hosted>, issuer: &str, spec: Arc<Spec>) -> WalletHost {
        WalletHost {
            hosted,
            issuer: issuer.to_string(),
            spec,
            auth: AuthCodes(AtomicU32::new(rand::random_range(0..1_000_000))),
        }
    }

    async fn answer(&self, msg: &Message<'_>) -> OwnedMessage {
        let mut resp = reply(msg);
        let account = wallet_account(
            &self.issuer,
            msg.str(de::ACCOUNT_1).unwrap_or_default().trim(),
        );
        let ledger = &self.hosted.ledger;
        let code = match (msg.mti().class(), msg.transaction_type()) {
            (8, _) => ResponseCode::Approved,
            (1 | 2, Some(31)) => match ledger.balance(&account) {
                Some(b) => {
                    set_available(&mut resp, msg, b);
                    ResponseCode::Approved
                }
                None => ResponseCode::InvalidCard,
            },
            (1 | 2, Some(0)) if !is_completion(msg) => {
                let (Some(units), Some(leg)) = (msg.amount(), leg_id(&self.issuer, msg)) else {
                    return coded(resp, ResponseCode::FormatError);
                };
                let Ok(units) = i64::try_from(units) else {
                    return coded(resp, ResponseCode::InvalidAmount);
                };
                match ledger.debit(&account, units, &leg).await {
                    Ok(b) => {
                        resp.set(de::AUTH_CODE, self.auth.next().as_bytes());
                        set_available(&mut resp, msg, b);
                        ResponseCode::Approved
                    }
                    Err(e) => HostedError::from(e).response_code(),
                }
            }
            // F8: points (or any hosted wallet's units) go back to the leg they came from.
            (1 | 2, Some(20)) => {
                let (Some(units), Some(leg), Some(of)) = (
                    msg.amount().and_then(|u| i64::try_from(u).ok()),
                    leg_id(&self.issuer, msg),
                    refunded_leg(&self.issuer, msg),
                ) else {
                    return coded(resp, ResponseCode::FormatError);
                };
                match ledger.refund_leg(&of, &leg, units, None).await {
                    Ok(b) => {
                        resp.set(de::AUTH_CODE, self.auth.next().as_bytes());
                        set_available(&mut resp, msg, b);
                        ResponseCode::Approved
                    }
                    Err(e) => refund_code(e),
                }
            }
            (4, _) => match named_leg(ledger, &self.issuer, msg) {
                Some(leg) => reversal_code(ledger.void(&leg).await),
                None => ResponseCode::FormatError,
            },
            _ => ResponseCode::InvalidTransaction,
        };
        coded(resp, code)
    }
}

/// A refused refund: the leg unknown 25, not one that kept money 12, more than it has
/// left 13, the rest as any ledger refusal.
fn refund_code(e: LedgerError) -> ResponseCode {
    match e {
        LedgerError::UnknownLeg(_) => ResponseCode::OriginalNotFound,
        LedgerError::WrongState { .. } => ResponseCode::InvalidTransaction,
        e => HostedError::from(e).response_code(),
    }
}

fn coded(mut resp: OwnedMessage, code: ResponseCode) -> OwnedMessage {
    resp.set_code(code);
    resp
}

impl LocalHost for WalletHost {
    fn handle(&self, frame: Bytes) -> BoxFuture<'_, Option<OwnedMessage>> {
        Box::pin(async move {
            let msg = decode(&self.spec, &frame)?;
            Some(self.answer(&msg).await)
        })
    }
}

/// The card programs' cards.
pub struct CardHost {
    hosted: Arc<Hosted>,
    spec: Arc<Spec>,
    auth: AuthCodes,
}

impl CardHost {
    pub fn new(hosted: Arc<Hosted>, spec: Arc<Spec>) -> CardHost {
        CardHost {
            hosted,
            spec,
            auth: AuthCodes(AtomicU32::new(rand::random_range(0..1_000_000))),
        }
    }

    async fn answer(&self, msg: &Message<'_>) -> OwnedMessage {
        let resp = reply(msg);
        if msg.mti().class() == 8 {
            return coded(resp, ResponseCode::Approved);
        }
        let pan = match msg.pan() {
            Ok(Some(p)) => p,
            _ => return coded(resp, ResponseCode::FormatError),
        };
        let card = match self.hosted.card_by_pan(&pan) {
            Ok(Some(c)) => c,
            Ok(None) => return coded(resp, ResponseCode::InvalidCard),
            Err(e) => return coded(resp, e.response_code()),
        };
        let ledger = &self.hosted.ledger;
        let follow_up = msg.mti().class() == 4 || is_completion(msg);
        let leg = match follow_up && msg.transaction_type() != Some(20) {
            true => named_leg(ledger, &card.id, msg),
            false => leg_id(&card.id, msg),
        };
        let Some(leg) = leg else {
            return coded(resp, ResponseCode::FormatError);
        };
        let outcome = match (msg.mti().class(), msg.transaction_type()) {
            (4, _) => {
                let code = self.reverse(&card, &leg).await;
                return coded(resp, code);
            }
            (2, Some(0)) if is_completion(msg) => self.complete(&card, msg, &leg).await,
            (1 | 2, Some(31)) => self.inquiry(&card),
            (1 | 2, Some(21)) => self.recharge(&card, msg, &leg).await,
            (1 | 2, Some(0)) => self.purchase(&card, msg, &pan, &leg).await,
            (1 | 2, Some(20)) => match self.refund(&card, msg, &leg).await {
                Ok(balance) => Ok(balance),
                Err(code) => return coded(resp, code),
            },
            _ => Err(HostedError::Invalid("processing code not served".into())),
        };
        match outcome {
            Ok(balance) => {
                let mut resp = coded(resp, ResponseCode::Approved);
                resp.set(de::AUTH_CODE, self.auth.next().as_bytes());
                set_available(&mut resp, msg, balance);
                resp
            }
            Err(e) => {
                tracing::info!(card = %card.id, reason = %e, "hosted card declined");
                coded(resp, e.response_code())
            }
        }
    }

    fn inquiry(&self, card: &Card) -> Result<Balance, HostedError> {
        if card.status == CardStatus::Closed {
            return Err(HostedError::Status(card.status.as_str()));
        }
        Ok(self
            .hosted
            .ledger
            .balance(&card.account)
            .unwrap_or_default())
    }

    async fn recharge(
        &self,
        card: &Card,
        msg: &Message<'_>,
        leg: &str,
    ) -> Result<Balance, HostedError> {
        let amount = msg.amount().unwrap_or(0);
        let _guard = self.hosted.lock_card(&card.id).await;
        let card = self.hosted.card(&card.id)?;
        self.hosted.recharge_locked(&card, amount, leg).await
    }

    /// A purchase on a hosted card: every check, then the money and the points it earns (one
    /// step).
    async fn purchase(
        &self,
        card: &Card,
        msg: &Message<'_>,
        pan: &crate::iso8583::Pan,
        leg: &str,
    ) -> Result<Balance, HostedError> {
        let hosted = &self.hosted;
        let _guard = hosted.lock_card(&card.id).await;
        // Read again under the lock: PIN tries and status may have changed.
        let mut card = hosted.card(&card.id)?;
        let amount = msg
            .amount()
            .filter(|&a| a > 0)
            .ok_or_else(|| HostedError::BadAmount("no amount".into()))?;
        let amount =
            i64::try_from(amount).map_err(|_| HostedError::BadAmount("amount too large".into()))?;
        // A repeat of a leg already placed answers as the first time did; another request
        // under the same id is refused (94), never answered 00 without moving money.
        if let Some(placed) = hosted.ledger.leg_state(leg)? {
            let kind = if msg.mti().class() == 1 {
                EntryType::Hold
            } else {
                EntryType::Debit
            };
            let asked = crate::ledger::Leg::immediate(&card.account, amount, kind);
            if !placed.repeated_by(&asked) {
                return Err(LedgerError::LegCollision(leg.to_string()).into());
            }
            return Ok(hosted.ledger.balance(&card.account).unwrap_or_default());
        }
        if card.status != CardStatus::Active {
            return Err(HostedError::Status(card.status.as_str()));
        }
        if card.expired() || terminal_says_expired(msg) {
            return Err(HostedError::Expired);
        }
        self.check_pin(&mut card, msg, pan).await?;
        if card.kind == ProgramKind::Subaccount {
            self.check_limits(&card, amount)?;
        }
        // The pre-registered purchase is used in the step that takes the money: after a
        // crash it is either both or neither.
        let mut step = Step::new();
        if let Some(mut p) = self.check_prereg(&card, msg, amount)? {
            p.used_by = Some(leg.to_string());
            Hosted::prereg_writes(&mut step, &p, "used")?;
        }
        let ledger = &hosted.ledger;
        if msg.mti().class() == 1 {
            // An authorization earns nothing: its hold may yet expire or be voided.
            return Ok(ledger.hold_with(step, &card.account, amount, leg).await?);
        }
        // A completed spend, and the points it earns, in one step.
        let balance = match self.points_earned(&card, amount) {
            Some((points_account, points)) => {
                let points_leg = format!("{leg}:points");
                let credit = (points_account, points, points_leg.as_str());
                ledger
                    .debit_crediting(step, &card.account, amount, leg, credit)
                    .await?
            }
            None => ledger.debit_with(step, &card.account, amount, leg).await?,
        };
        Ok(balance)
    }

    /// The PIN in field 52 (translated by the switch to the zone key), tries counted.
    async fn check_pin(
        &self,
        card: &mut Card,
        msg: &Message<'_>,
        pan: &crate::iso8583::Pan,
    ) -> Result<(), HostedError> {
        let tries = self.hosted.config.hosted.pin_tries;
        if card.pin_failures >= tries {
            return Err(HostedError::PinTriesExceeded);
        }
        let required = self.hosted.program(&card.program)?.pin_required;
        let block = msg.field(de::PIN_BLOCK).map(|f| f.value().into_owned());
        let right = match (block, &card.pin_hash) {
            (None, Some(_)) if required => false,
            (None, _) => return Ok(()),
            (Some(_), None) => false,
            (Some(block), Some(hash)) => {
                let Ok(pin) = decrypt_block(&self.hosted.zone_key, &block, pan.expose()) else {
                    return Err(HostedError::UnreadablePin);
                };
                crate::pin::verify_pin_bounded(pin, hash.clone()).await
            }
        };
        if right {
            if card.pin_failures > 0 {
                card.pin_failures = 0;
                self.hosted
                    .save_card(crate::journal::Step::new(), card, "PIN tries reset")
                    .await?;
            }
            return Ok(());
        }
        card.pin_failures += 1;
        self.hosted
            .save_card(crate::journal::Step::new(), card, "wrong PIN")
            .await?;
        if card.pin_failures >= tries {
            Err(HostedError::PinTriesExceeded)
        } else {
            Err(HostedError::WrongPin)
        }
    }

    fn check_limits(&self, card: &Card, amount: i64) -> Result<(), HostedError> {
        if let Some(limit) = card.per_txn_limit {
            if amount as u64 > limit {
                return Err(HostedError::Limit(format!(
                    "above the per-transaction limit {limit}"
                )));
            }
        }
        if let Some(limit) = card.daily_limit {
            let spent = self.hosted.spent_today(card)?;
            if spent.saturating_add(amount) > limit as i64 {
                return Err(HostedError::Limit(format!(
                    "daily limit {limit}: {spent} spent today"
                )));
            }
        }
        Ok(())
    }

    /// F15: a purchase naming a pre-registered one must match it.
    fn check_prereg(
        &self,
        card: &Card,
        msg: &Message<'_>,
        amount: i64,
    ) -> Result<Option<super::Prereg>, HostedError> {
        let elements = msg
            .switch_data()
            .map_err(|_| HostedError::Invalid("field 48 is malformed".into()))?;
        let Some((_, id)) = elements.iter().find(|(t, _)| t == "PR") else {
            return Ok(None);
        };
        let p = self
            .hosted
            .prereg(id.trim())
            .map_err(|_| HostedError::Prereg(format!("{} is unknown", id.trim())))?;
        let merchant = msg.merchant_id().unwrap_or_default();
        if p.card_id != card.id {
            return Err(HostedError::Prereg("registered for another card".into()));
        }
        if p.used_by.is_some() {
            return Err(HostedError::Prereg("used already".into()));
        }
        if p.valid_until_ms < chrono::Utc::now().timestamp_millis() {
            return Err(HostedError::Prereg("no longer valid".into()));
        }
        if p.merchant_id != merchant.trim() {
            return Err(HostedError::Prereg(
                "registered for another merchant".into(),
            ));
        }
        if p.amount as i64 != amount {
            return Err(HostedError::BadAmount(format!(
                "registered for {}, asked for {amount}",
                p.amount
            )));
        }
        Ok(Some(p))
    }

    /// Complete an authorization's hold for the amount in field 4 (at most what it holds):
    /// posted, the rest released, and the points the completed spend earns, in one step.
    async fn complete(
        &self,
        card: &Card,
        msg: &Message<'_>,
        leg: &str,
    ) -> Result<Balance, HostedError> {
        let amount = msg
            .amount()
            .and_then(|a| i64::try_from(a).ok())
            .ok_or_else(|| HostedError::BadAmount("no amount".into()))?;
        let points_leg = format!("{leg}:points");
        let credit = self
            .points_earned(card, amount)
            .map(|(account, points)| (account, points, points_leg.as_str()));
        Ok(self
            .hosted
            .ledger
            .complete_crediting(leg, amount, credit)
            .await?)
    }

    /// The points account and the points a spend of `amount` earns on this card, if any.
    fn points_earned<'c>(&self, card: &'c Card, amount: i64) -> Option<(&'c str, i64)> {
        let account = card.points_account.as_deref()?;
        let rate = self
            .hosted
            .program(&card.program)
            .map_or(0, |p| p.points_per_1000);
        let rate = i64::try_from(rate).unwrap_or(i64::MAX);
        let points = amount.saturating_mul(rate) / 1000;
        (points > 0).then_some((account, points))
    }

    /// Undo a leg (hold voided, debit refunded, recharge taken back, refund taken back) and
    /// the points it earned, in one step: the money always goes back, the points are taken
    /// back even when spent (a recorded debt on the points account, see
    /// [`crate::ledger::Ledger::void_clawing_back`]).
    async fn reverse(&self, card: &Card, leg: &str) -> ResponseCode {
        let ledger = &self.hosted.ledger;
        let result = match card.points_account {
            Some(_) => {
                ledger
                    .void_clawing_back(leg, &format!("{leg}:points"))
                    .await
            }
            None => ledger.void(leg).await,
        };
        reversal_code(result)
    }

    /// F8: give back field 4 of the purchase leg the refund names (tag `OR`, or field 90),
    /// as the refund leg `leg`, with the points it earned taken back in proportion. `Err`
    /// is the code the refund is refused with.
    async fn refund(
        &self,
        card: &Card,
        msg: &Message<'_>,
        leg: &str,
    ) -> Result<Balance, ResponseCode> {
        // Under the card's lock, read again: a card being refunded and closed (F14) holds
        // it, so money given back cannot land on the card after its close has read the
        // balance (it would stay on a closed card, where nobody can refund it).
        let _guard = self.hosted.lock_card(&card.id).await;
        let card = self.hosted.card(&card.id).map_err(|e| e.response_code())?;
        if card.status == CardStatus::Closed {
            return Err(ResponseCode::InvalidCard);
        }
        let amount = msg
            .amount()
            .and_then(|a| i64::try_from(a).ok())
            .ok_or(ResponseCode::InvalidAmount)?;
        let of = refunded_leg(&card.id, msg).ok_or(ResponseCode::FormatError)?;
        let points = card.points_account.as_ref().map(|_| format!("{of}:points"));
        self.hosted
            .ledger
            .refund_leg(&of, leg, amount, points.as_deref())
            .await
            .map_err(refund_code)
    }
}

/// Field 14 (YYMM) before the current month.
fn terminal_says_expired(msg: &Message<'_>) -> bool {
    msg.str(de::EXPIRY)
        .is_some_and(|exp| exp.len() == 4 && *exp < *super::cards::current_yymm())
}

impl LocalHost for CardHost {
    fn handle(&self, frame: Bytes) -> BoxFuture<'_, Option<OwnedMessage>> {
        Box::pin(async move {
            let msg = decode(&self.spec, &frame)?;
            Some(self.answer(&msg).await)
        })
    }
}
