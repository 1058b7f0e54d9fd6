//! Hosted cards (F14 prepaid, F15 anonymous, F16 sub-accounts) and the operations partners
//! run on them. A card record never holds its number: it is found by the HMAC of the number
//! (`hosted_card_refs`), shows itself masked, and keeps its PIN only as an Argon2id hash.

use chrono::{Datelike, Local, NaiveDate, TimeZone};
use serde::{Deserialize, Serialize};

use super::{card_account, master_account, storage, wallet_account, Hosted, HostedError};
use crate::config::{ProgramConfig, ProgramKind};
use crate::iso8583::Pan;
use crate::journal::{Entry, EntryKind, Journal, Step};
use crate::ledger::{Balance, EntryType, LedgerEntry, LedgerError, NewAccount};
use crate::pin::ClearPin;
use crate::store::Cf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CardStatus {
    /// Issued, not activated yet: cannot pay.
    Issued,
    Active,
    Suspended,
    /// Closed for good (its balance refunded).
    Closed,
}

impl CardStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CardStatus::Issued => "issued",
            CardStatus::Active => "active",
            CardStatus::Suspended => "suspended",
            CardStatus::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Card {
    pub id: String,
    pub program: String,
    pub kind: ProgramKind,
    /// First six and last four digits.
    pub masked: String,
    pub status: CardStatus,
    /// `YYMM`, the last month the card is valid.
    pub expiry: String,
    /// Argon2id PHC string; never shown.
    pub pin_hash: Option<String>,
    /// Wrong PINs in a row.
    pub pin_failures: u32,
    /// The ledger account it pays from (its own, or its master's).
    pub account: String,
    pub points_account: Option<String>,
    /// The partner that issued it.
    pub owner: Option<String>,
    /// Personal data (prepaid only; anonymous cards have none).
    pub holder: Option<String>,
    pub master: Option<String>,
    pub per_txn_limit: Option<u64>,
    pub daily_limit: Option<u64>,
    pub issued_ms: i64,
}

impl Card {
    /// The card as the API shows it: no PIN hash.
    pub fn view(&self, balance: Option<Balance>, points: Option<Balance>) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "program": self.program,
            "kind": self.kind,
            "card_number": self.masked,
            "status": self.status,
            "expiry": self.expiry,
            "pin_set": self.pin_hash.is_some(),
            "pin_failures": self.pin_failures,
            "owner": self.owner,
            "holder": self.holder,
            "master": self.master,
            "per_txn_limit": self.per_txn_limit,
            "daily_limit": self.daily_limit,
            "balance": balance.map(|b| b.posted),
            "available": balance.map(|b| b.available()),
            "points": points.map(|b| b.available()),
        })
    }

    /// Past its expiry month (local time)?
    pub fn expired(&self) -> bool {
        self.expiry < current_yymm()
    }
}

/// A purchase registered in advance (F15): an authorization naming it must match it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prereg {
    pub id: String,
    pub card_id: String,
    pub merchant_id: String,
    pub amount: u64,
    pub valid_until_ms: i64,
    pub owner: Option<String>,
    /// The leg that used it.
    pub used_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Master {
    pub id: String,
    pub owner: Option<String>,
    pub unit: String,
    pub created_ms: i64,
}

/// What issuing a card needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    pub program: String,
    pub denomination: u64,
    /// The number to issue, from the card bureau (within the program's BIN range). The API
    /// never shows a full number (SPEC §10), so the switch does not make numbers up.
    pub card_number: String,
    pub holder: Option<String>,
    #[serde(skip)]
    pub owner: Option<String>,
}

/// A sub-account card under a master.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubRequest {
    pub card_number: String,
    pub pin: Option<String>,
    pub per_txn_limit: u64,
    pub daily_limit: u64,
    pub holder: Option<String>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn random_id(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}{n:016x}")
}

/// The Luhn check digit for the digits before it.
fn luhn_digit(body: &str) -> u8 {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = u32::from(c - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8 // ok: < 10
}

pub fn luhn_valid(digits: &str) -> bool {
    digits.len() >= 2
        && digits.bytes().all(|b| b.is_ascii_digit())
        && luhn_digit(&digits[..digits.len() - 1]) == digits.as_bytes()[digits.len() - 1] - b'0'
}

/// The current month as `YYMM` (local time), what expiry dates compare with.
pub fn current_yymm() -> String {
    let now = Local::now();
    format!("{:02}{:02}", now.year() % 100, now.month())
}

/// `YYMM` of the month `months` from now.
fn expiry_after(months: u32) -> String {
    let now = Local::now();
    let total = now.year() * 12 + now.month0() as i32 + months as i32; // ok: small
    format!("{:02}{:02}", (total / 12) % 100, total % 12 + 1)
}

/// Start and end (ms) of a local calendar day.
pub fn day_bounds(day: NaiveDate) -> (i64, i64) {
    let start = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .and_then(|t| Local.from_local_datetime(&t).earliest())
            .map_or(0, |t| t.timestamp_millis())
    };
    let next = day.succ_opt().unwrap_or(day);
    (start(day), start(next))
}

/// A card's day: opening and closing balance and the entries between (derived from entries).
#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    pub card: String,
    pub date: String,
    pub opening: Balance,
    pub closing: Balance,
    pub entries: Vec<LedgerEntry>,
}

impl Hosted {
    pub(crate) fn program(&self, id: &str) -> Result<&ProgramConfig, HostedError> {
        self.config
            .hosted
            .programs
            .iter()
            .find(|p| p.id == id)
            .ok_or_else(|| HostedError::NotFound(format!("program {id}")))
    }

    pub fn card(&self, id: &str) -> Result<Card, HostedError> {
        let raw = self
            .journal
            .get(Cf::HostedCards, id.as_bytes())
            .map_err(storage)?
            .ok_or_else(|| HostedError::NotFound(format!("card {id}")))?;
        serde_json::from_slice(&raw).map_err(storage)
    }

    /// The card with this number, if the switch issued it.
    pub fn card_by_pan(&self, pan: &Pan) -> Result<Option<Card>, HostedError> {
        let r = self.card_key.card_ref(pan);
        match self.journal.get(Cf::HostedCardRefs, &r).map_err(storage)? {
            Some(id) => self.card(&String::from_utf8_lossy(&id)).map(Some),
            None => Ok(None),
        }
    }

    /// Write a card record (and what else the step holds), synced and journaled.
    pub(crate) async fn save_card(
        &self,
        mut step: Step,
        card: &Card,
        what: &str,
    ) -> Result<(), HostedError> {
        Self::card_writes(&mut step, card, what)?;
        step.synced();
        self.journal.commit(step).await.map_err(storage)
    }

    /// A card record and its journal entry, added to a step.
    fn card_writes(step: &mut Step, card: &Card, what: &str) -> Result<(), HostedError> {
        step.put(
            Cf::HostedCards,
            card.id.as_bytes(),
            serde_json::to_vec(card).map_err(storage)?,
        );
        step.append(Entry::new(
            EntryKind::Ledger,
            &card.id,
            &card.account,
            format!("card {} {what}", card.masked),
        ));
        Ok(())
    }

    /// The card's balance (and points), derived from the ledger.
    pub fn view(&self, card: &Card) -> serde_json::Value {
        let points = card
            .points_account
            .as_ref()
            .and_then(|a| self.ledger.balance(a));
        card.view(self.ledger.balance(&card.account), points)
    }

    /// A new card's number: in the program's range, unused, Luhn-valid.
    fn check_new_number(&self, program: &ProgramConfig, pan: &Pan) -> Result<(), HostedError> {
        if !program.owns(pan.expose()) {
            return Err(HostedError::Invalid(format!(
                "card_number {} is outside program {}'s BIN range",
                pan.masked(),
                program.id
            )));
        }
        if !luhn_valid(pan.expose()) {
            return Err(HostedError::Invalid(format!(
                "card_number {} fails the Luhn check",
                pan.masked()
            )));
        }
        if self.card_by_pan(pan)?.is_some() {
            return Err(HostedError::Conflict(format!(
                "card {} exists already",
                pan.masked()
            )));
        }
        Ok(())
    }

    /// Create a card record with its ledger accounts and opening balance, as one synced
    /// step; returns it with its number (shown once).
    async fn create_card(
        &self,
        program: &ProgramConfig,
        asked: &str,
        mut card: Card,
        opening: u64,
    ) -> Result<(Card, Pan), HostedError> {
        let pan = Pan::parse(asked.trim().as_bytes())
            .map_err(|e| HostedError::Invalid(format!("card_number: {e}")))?;
        let card_ref = self.card_key.card_ref(&pan);
        // Two requests for the same number: the second waits, then finds it taken.
        let _guard = self
            .lock_card(&format!("number:{}", hex::encode(card_ref)))
            .await;
        self.check_new_number(program, &pan)?;
        card.masked = pan.masked();
        let mut step = Step::new();
        step.put(
            Cf::HostedCardRefs,
            card_ref.to_vec(),
            card.id.as_bytes().to_vec(),
        );
        if let Some(master) = &card.master {
            step.put(Cf::HostedMasters, sub_key(master, &card.id), Vec::new());
        }
        Self::card_writes(&mut step, &card, "issued")?;
        let opening_leg = format!("issue:{}", card.id);
        let mut accounts = Vec::new();
        if card.master.is_none() {
            let opening = i64::try_from(opening)
                .map_err(|_| HostedError::BadAmount("opening amount too large".into()))?;
            accounts.push(NewAccount {
                id: &card.account,
                unit: &program.unit,
                opening: (opening > 0).then_some((opening, opening_leg.as_str())),
            });
        } else if opening > 0 {
            return Err(HostedError::Invalid(
                "sub-account cards are funded through their master".into(),
            ));
        }
        if let Some(points) = &card.points_account {
            accounts.push(NewAccount {
                id: points,
                unit: "P",
                opening: None,
            });
        }
        self.ledger.open_accounts(step, &accounts).await?;
        Ok((card, pan))
    }

    /// F14/F15: issue a prepaid or anonymous card loaded with a denomination.
    pub async fn issue(&self, req: IssueRequest) -> Result<(Card, Pan), HostedError> {
        let program = self.program(&req.program)?.clone();
        match program.kind {
            ProgramKind::Subaccount => {
                return Err(HostedError::Invalid(
                    "sub-account cards are added under a master account".into(),
                ))
            }
            ProgramKind::Anonymous if req.holder.is_some() => {
                return Err(HostedError::Invalid(
                    "anonymous cards carry no personal data (no holder)".into(),
                ))
            }
            _ => {}
        }
        if !program.denominations.contains(&req.denomination) {
            return Err(HostedError::BadAmount(format!(
                "denomination {} is not one of {:?}",
                req.denomination, program.denominations
            )));
        }
        let id = random_id("c");
        let card = Card {
            account: card_account(&id),
            points_account: program
                .points_issuer
                .as_ref()
                .map(|pi| wallet_account(pi, &id)),
            id,
            program: program.id.clone(),
            kind: program.kind,
            masked: String::new(),
            status: CardStatus::Issued,
            expiry: expiry_after(program.validity_months),
            pin_hash: None,
            pin_failures: 0,
            owner: req.owner,
            holder: req.holder,
            master: None,
            per_txn_limit: None,
            daily_limit: None,
            issued_ms: now_ms(),
        };
        self.create_card(&program, &req.card_number, card, req.denomination)
            .await
    }

    /// Activate an issued card, with its PIN (required where the program asks for PINs).
    pub async fn activate(&self, id: &str, pin: Option<&str>) -> Result<Card, HostedError> {
        let _guard = self.lock_card(id).await;
        let mut card = self.card(id)?;
        if card.status != CardStatus::Issued {
            return Err(HostedError::Status(card.status.as_str()));
        }
        let program = self.program(&card.program)?;
        card.pin_hash = match pin {
            Some(p) => Some(hash(p).await?),
            None if program.pin_required => {
                return Err(HostedError::Invalid(format!(
                    "program {} needs a PIN to activate",
                    program.id
                )))
            }
            None => None,
        };
        card.status = CardStatus::Active;
        self.save_card(Step::new(), &card, "activated").await?;
        Ok(card)
    }

    /// Suspend, resume or close a card (closing does not refund: see [`Hosted::refund`]).
    pub async fn set_status(&self, id: &str, status: CardStatus) -> Result<Card, HostedError> {
        let _guard = self.lock_card(id).await;
        let mut card = self.card(id)?;
        let allowed = matches!(
            (card.status, status),
            (CardStatus::Active, CardStatus::Suspended)
                | (CardStatus::Suspended, CardStatus::Active)
                | (
                    CardStatus::Issued | CardStatus::Active | CardStatus::Suspended,
                    CardStatus::Closed
                )
        );
        if !allowed {
            return Err(HostedError::Status(card.status.as_str()));
        }
        card.status = status;
        self.save_card(Step::new(), &card, status.as_str()).await?;
        Ok(card)
    }

    /// Change a card's expiry (`YYMM`): an operator extends or shortens a card's life.
    pub async fn set_expiry(&self, id: &str, expiry: &str) -> Result<Card, HostedError> {
        let month = expiry.get(2..).and_then(|m| m.parse::<u32>().ok());
        if expiry.len() != 4
            || !expiry.bytes().all(|b| b.is_ascii_digit())
            || !month.is_some_and(|m| (1..=12).contains(&m))
        {
            return Err(HostedError::Invalid(format!(
                "expiry {expiry:?} is not YYMM"
            )));
        }
        let _guard = self.lock_card(id).await;
        let mut card = self.card(id)?;
        card.expiry = expiry.to_string();
        self.save_card(Step::new(), &card, &format!("expiry set to {expiry}"))
            .await?;
        Ok(card)
    }

    /// Forget wrong PIN tries (an operator unlocks a card).
    pub async fn reset_pin_tries(&self, id: &str) -> Result<Card, HostedError> {
        let _guard = self.lock_card(id).await;
        let mut card = self.card(id)?;
        card.pin_failures = 0;
        self.save_card(Step::new(), &card, "PIN tries reset")
            .await?;
        Ok(card)
    }

    /// F9/F14: load money onto an active card, in the program's steps, never above its
    /// maximum balance. Idempotent by `leg`.
    pub async fn recharge(&self, id: &str, amount: u64, leg: &str) -> Result<Balance, HostedError> {
        let _guard = self.lock_card(id).await;
        let card = self.card(id)?;
        self.recharge_locked(&card, amount, leg).await
    }

    pub(crate) async fn recharge_locked(
        &self,
        card: &Card,
        amount: u64,
        leg: &str,
    ) -> Result<Balance, HostedError> {
        if card.status != CardStatus::Active {
            return Err(HostedError::Status(card.status.as_str()));
        }
        if card.master.is_some() {
            return Err(HostedError::Invalid(
                "sub-account cards are funded through their master".into(),
            ));
        }
        if card.expired() {
            return Err(HostedError::Expired);
        }
        let program = self.program(&card.program)?;
        if amount == 0 || !amount.is_multiple_of(program.recharge_step) {
            return Err(HostedError::BadAmount(format!(
                "recharges come in multiples of {}",
                program.recharge_step
            )));
        }
        let balance = self.ledger.balance(&card.account).unwrap_or_default();
        let after = balance.posted.saturating_add(amount as i64); // ok: bounded by max_balance
        if after > program.max_balance as i64 {
            return Err(HostedError::Limit(format!(
                "balance would be {after}, above the maximum {}",
                program.max_balance
            )));
        }
        Ok(self
            .ledger
            .credit(&card.account, amount as i64, leg)
            .await?)
    }

    /// F14: give the holder back what the card holds, and close it.
    pub async fn refund(&self, id: &str) -> Result<u64, HostedError> {
        let _guard = self.lock_card(id).await;
        let mut card = self.card(id)?;
        if card.status == CardStatus::Closed {
            return Err(HostedError::Status(card.status.as_str()));
        }
        if card.master.is_some() {
            return Err(HostedError::Invalid(
                "a sub-account card holds no money of its own".into(),
            ));
        }
        let balance = self.ledger.balance(&card.account).unwrap_or_default();
        // A hold still pending would come back to a closed card when it is voided or expires,
        // where nobody could refund it.
        if balance.pending > 0 {
            return Err(HostedError::Conflict(format!(
                "{} is held by authorizations still pending; refund once they complete or expire",
                balance.pending
            )));
        }
        let available = balance.available();
        card.status = CardStatus::Closed;
        let what = "balance refunded, closed";
        if available > 0 {
            // The debit and the closing in one step.
            let mut step = Step::new();
            Self::card_writes(&mut step, &card, what)?;
            let leg = format!("refund:{}", card.id);
            self.ledger
                .debit_with(step, &card.account, available, &leg)
                .await?;
        } else {
            self.save_card(Step::new(), &card, what).await?;
        }
        Ok(available.max(0) as u64) // ok: non-negative
    }

    /// The entries of a card's account that are the card's own (a sub-account card's are
    /// those of its legs on the master).
    pub fn history(&self, card: &Card) -> Result<Vec<LedgerEntry>, HostedError> {
        let all = self.ledger.history(&card.account)?;
        Ok(Self::own_entries(card, all))
    }

    /// As [`Hosted::history`], the entries made at or after `since_ms` only.
    pub fn history_since(
        &self,
        card: &Card,
        since_ms: i64,
    ) -> Result<Vec<LedgerEntry>, HostedError> {
        let recent = self.ledger.history_since(&card.account, since_ms)?;
        Ok(Self::own_entries(card, recent))
    }

    fn own_entries(card: &Card, all: Vec<LedgerEntry>) -> Vec<LedgerEntry> {
        match &card.master {
            None => all,
            Some(_) => {
                let prefix = format!("{}/", card.id);
                all.into_iter()
                    .filter(|e| e.leg.starts_with(&prefix))
                    .collect()
            }
        }
    }

    /// F15: a card's statement for one local day.
    pub fn statement(&self, card: &Card, day: NaiveDate) -> Result<Statement, HostedError> {
        let (start, end) = day_bounds(day);
        let mut opening = Balance::default();
        let mut entries = Vec::new();
        for e in self.history(card)? {
            if e.at_ms < start {
                e.apply_to(&mut opening);
            } else if e.at_ms < end {
                entries.push(e);
            }
        }
        let mut closing = opening;
        for e in &entries {
            e.apply_to(&mut closing);
        }
        Ok(Statement {
            card: card.id.clone(),
            date: day.to_string(),
            opening,
            closing,
            entries,
        })
    }

    /// What a sub-account card has spent today (holds and debits less what was given back).
    pub fn spent_today(&self, card: &Card) -> Result<i64, HostedError> {
        let (start, _) = day_bounds(Local::now().date_naive());
        Ok(self
            .history_since(card, start)?
            .iter()
            .map(|e| match e.kind {
                EntryType::Hold | EntryType::Debit => e.amount,
                EntryType::Void | EntryType::Expire | EntryType::Refund | EntryType::Release => {
                    -e.amount
                }
                EntryType::Credit | EntryType::Post => 0,
            })
            .sum())
    }

    /// F15: register a purchase in advance.
    pub async fn preregister(
        &self,
        card_id: &str,
        merchant_id: &str,
        amount: u64,
        valid_until_ms: i64,
        owner: Option<String>,
    ) -> Result<Prereg, HostedError> {
        let card = self.card(card_id)?;
        if amount == 0 || merchant_id.trim().is_empty() {
            return Err(HostedError::Invalid(
                "a pre-registered purchase needs a merchant and an amount".into(),
            ));
        }
        if valid_until_ms <= now_ms() {
            return Err(HostedError::Invalid("valid_until is in the past".into()));
        }
        let p = Prereg {
            id: random_id("PR"),
            card_id: card.id,
            merchant_id: merchant_id.trim().to_string(),
            amount,
            valid_until_ms,
            owner,
            used_by: None,
        };
        self.save_prereg(&p, "registered").await?;
        Ok(p)
    }

    pub fn prereg(&self, id: &str) -> Result<Prereg, HostedError> {
        let raw = self
            .journal
            .get(Cf::HostedPrereg, id.as_bytes())
            .map_err(storage)?
            .ok_or_else(|| HostedError::NotFound(format!("pre-registered purchase {id}")))?;
        serde_json::from_slice(&raw).map_err(storage)
    }

    pub(crate) async fn save_prereg(&self, p: &Prereg, what: &str) -> Result<(), HostedError> {
        let mut step = Step::new();
        Self::prereg_writes(&mut step, p, what)?;
        step.synced();
        self.journal.commit(step).await.map_err(storage)
    }

    /// A pre-registered purchase's record and its journal entry, added to a step.
    pub(crate) fn prereg_writes(
        step: &mut Step,
        p: &Prereg,
        what: &str,
    ) -> Result<(), HostedError> {
        step.put(
            Cf::HostedPrereg,
            p.id.as_bytes(),
            serde_json::to_vec(p).map_err(storage)?,
        );
        step.append(Entry::new(
            EntryKind::Ledger,
            &p.id,
            &p.card_id,
            format!(
                "pre-registered purchase {what}: {} at {}",
                p.amount, p.merchant_id
            ),
        ));
        Ok(())
    }

    /// F16: a master account.
    pub async fn create_master(
        &self,
        id: Option<String>,
        owner: Option<String>,
    ) -> Result<Master, HostedError> {
        let id = id.unwrap_or_else(|| random_id("m"));
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(HostedError::Invalid(
                "master ids are 1–64 letters, digits, - or _".into(),
            ));
        }
        if self
            .journal
            .get(Cf::HostedMasters, id.as_bytes())
            .map_err(storage)?
            .is_some()
        {
            return Err(HostedError::Conflict(format!("master {id} exists")));
        }
        let unit = self.subaccount_program()?.unit.clone();
        let m = Master {
            id: id.clone(),
            owner,
            unit,
            created_ms: now_ms(),
        };
        let account = master_account(&id);
        let mut step = Step::new();
        step.put(
            Cf::HostedMasters,
            id.as_bytes(),
            serde_json::to_vec(&m).map_err(storage)?,
        );
        step.append(Entry::new(
            EntryKind::Ledger,
            &id,
            &account,
            "master account created".into(),
        ));
        // The master and its account in one step; a concurrent twin finds the account
        // taken under the ledger's lock and is refused.
        let opened = NewAccount {
            id: &account,
            unit: &m.unit,
            opening: None,
        };
        self.ledger
            .open_accounts(step, &[opened])
            .await
            .map_err(|e| match e {
                LedgerError::AccountExists(_) => {
                    HostedError::Conflict(format!("master {id} exists"))
                }
                e => e.into(),
            })?;
        Ok(m)
    }

    pub fn master(&self, id: &str) -> Result<Master, HostedError> {
        let raw = self
            .journal
            .get(Cf::HostedMasters, id.as_bytes())
            .map_err(storage)?
            .ok_or_else(|| HostedError::NotFound(format!("master {id}")))?;
        serde_json::from_slice(&raw).map_err(storage)
    }

    /// Money into a master account. Idempotent by `leg`.
    pub async fn fund_master(
        &self,
        id: &str,
        amount: u64,
        leg: &str,
    ) -> Result<Balance, HostedError> {
        self.master(id)?;
        let amount =
            i64::try_from(amount).map_err(|_| HostedError::BadAmount("amount too large".into()))?;
        Ok(self.ledger.credit(&master_account(id), amount, leg).await?)
    }

    /// F16: a sub-account card under a master, active at once with its credentials.
    pub async fn add_sub(
        &self,
        master_id: &str,
        req: SubRequest,
        owner: Option<String>,
    ) -> Result<(Card, Pan), HostedError> {
        let master = self.master(master_id)?;
        let program = self.subaccount_program()?.clone();
        if req.per_txn_limit == 0 || req.daily_limit < req.per_txn_limit {
            return Err(HostedError::Invalid(
                "per_txn_limit must be at least 1 and daily_limit at least per_txn_limit".into(),
            ));
        }
        let pin_hash = match &req.pin {
            Some(p) => Some(hash(p).await?),
            None if program.pin_required => {
                return Err(HostedError::Invalid(format!(
                    "program {} needs a PIN",
                    program.id
                )))
            }
            None => None,
        };
        let id = random_id("s");
        let card = Card {
            id,
            program: program.id.clone(),
            kind: ProgramKind::Subaccount,
            masked: String::new(),
            status: CardStatus::Active,
            expiry: expiry_after(program.validity_months),
            pin_hash,
            pin_failures: 0,
            account: master_account(&master.id),
            points_account: None,
            owner,
            holder: req.holder,
            master: Some(master.id),
            per_txn_limit: Some(req.per_txn_limit),
            daily_limit: Some(req.daily_limit),
            issued_ms: now_ms(),
        };
        self.create_card(&program, &req.card_number, card, 0).await
    }

    fn subaccount_program(&self) -> Result<&ProgramConfig, HostedError> {
        self.config
            .hosted
            .programs
            .iter()
            .find(|p| p.kind == ProgramKind::Subaccount)
            .ok_or_else(|| HostedError::Invalid("no sub-account program is configured".into()))
    }

    /// The sub-account cards of a master, from its index (not a scan of every card).
    pub fn subs(&self, master_id: &str) -> Result<Vec<Card>, HostedError> {
        self.journal
            .scan(Cf::HostedMasters, &sub_key(master_id, ""))
            .map_err(storage)?
            .into_iter()
            .map(|(k, _)| {
                let id = k.get(master_id.len() + 1..).unwrap_or_default();
                self.card(&String::from_utf8_lossy(id))
            })
            .collect()
    }
}

/// The index entry of a sub-account card, next to its master's record: `master \0 card`
/// (master ids have no zero byte, so no entry is taken for a master).
fn sub_key(master_id: &str, card_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(master_id.len() + 1 + card_id.len());
    k.extend_from_slice(master_id.as_bytes());
    k.push(0);
    k.extend_from_slice(card_id.as_bytes());
    k
}

/// Says the sub-account index covers every card (data written before it existed included).
const SUBS_INDEXED: &[u8] = b"\0subs-indexed";

/// Build the sub-account index from the cards once, for data older than the index. Returns
/// how many cards it indexed.
pub(crate) async fn index_subs(journal: &Journal) -> Result<usize, String> {
    if journal.get(Cf::HostedMasters, SUBS_INDEXED)?.is_some() {
        return Ok(0);
    }
    let mut step = Step::new();
    let mut indexed = 0;
    // One card at a time: the cards are not all held in memory at once. A damaged record
    // is reported and left out (its card's own requests report it too), not a reason to
    // refuse to start.
    crate::store::for_each(journal.store(), Cf::HostedCards, b"", |k, v| {
        match serde_json::from_slice::<Card>(v) {
            Ok(card) => {
                if let Some(master) = &card.master {
                    step.put(Cf::HostedMasters, sub_key(master, &card.id), Vec::new());
                    indexed += 1;
                }
            }
            Err(e) => tracing::error!(
                card = %String::from_utf8_lossy(k),
                error = %e,
                "card record does not parse: not indexed"
            ),
        }
        std::ops::ControlFlow::Continue(())
    })?;
    step.put(Cf::HostedMasters, SUBS_INDEXED, Vec::new());
    step.synced();
    journal.commit(step).await.map_err(|e| e.to_string())?;
    Ok(indexed)
}

/// Hash a PIN off the async threads (Argon2id is slow on purpose).
async fn hash(pin: &str) -> Result<String, HostedError> {
    let pin = ClearPin::new(pin).map_err(|e| HostedError::Invalid(e.to_string()))?;
    tokio::task::spawn_blocking(move || crate::pin::hash_pin(&pin))
        .await
        .map_err(storage)?
        .map_err(storage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert!(luhn_valid("6270000000000018"));
        assert!(luhn_valid("4111111111111111"));
        assert!(!luhn_valid("6270000000000019"));
        assert_eq!(luhn_digit("627000000000001"), 8);
    }

    fn card(id: &str, master: Option<&str>) -> Card {
        Card {
            id: id.into(),
            program: "P".into(),
            kind: ProgramKind::Subaccount,
            masked: "627200******0016".into(),
            status: CardStatus::Active,
            expiry: "3012".into(),
            pin_hash: None,
            pin_failures: 0,
            account: "acct".into(),
            points_account: None,
            owner: None,
            holder: None,
            master: master.map(String::from),
            per_txn_limit: None,
            daily_limit: None,
            issued_ms: 0,
        }
    }

    /// Data written before the sub-account index existed is indexed once, at open.
    #[tokio::test]
    async fn sub_account_cards_written_before_the_index_are_indexed_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open(dir.path()).unwrap();
        let journal =
            Journal::open(db, crate::journal::Sealer::from_card_key(&[7; 32]), 64).unwrap();
        let mut step = Step::new();
        for c in [
            card("s1", Some("m-1")),
            card("s2", Some("m-2")),
            card("c3", None),
        ] {
            step.put(
                Cf::HostedCards,
                c.id.as_bytes(),
                serde_json::to_vec(&c).unwrap(),
            );
        }
        step.put(Cf::HostedMasters, "m-1", b"{}".to_vec());
        journal.commit(step).await.unwrap();
        assert_eq!(index_subs(&journal).await.unwrap(), 2);
        assert_eq!(index_subs(&journal).await.unwrap(), 0, "once");
        let of_m1 = journal
            .scan(Cf::HostedMasters, &sub_key("m-1", ""))
            .unwrap();
        assert_eq!(of_m1.len(), 1);
        assert_eq!(of_m1[0].0, sub_key("m-1", "s1"));
        assert!(journal.get(Cf::HostedMasters, b"m-1").unwrap().is_some());
    }

    #[test]
    fn expiry_is_yymm() {
        let e = expiry_after(0);
        assert_eq!(e.len(), 4);
        let month: u32 = e[2..].parse().unwrap();
        assert!((1..=12).contains(&month));
        assert!(expiry_after(13) > e);
    }
}
