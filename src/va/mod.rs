//! F17 virtual accounts: pools of bank virtual account numbers per partner × bank × region,
//! one assigned per order, deposits matched in real time on a bank listener ([`bank`]), the
//! partner told through the callback outbox ([`crate::outbox`]), a collection report per
//! partner and period ([`report`]).
//!
//! Every change (pool, assignment, payment, expiry, mismatch) is one synced journal step,
//! made under one lock: the state is small and changes are rare next to card traffic, and
//! one lock makes "unique while open" and "paid once" hold without reasoning about races.
//! The answer to a bank leaves only after the step that decided it is on disk.
//!
//! Keys in [`Cf::VirtualAccounts`]:
//! - `a/BANK/ACCOUNT` → [`PoolAccount`]: whose pool it is in and the open order it carries
//!   (an account number is unique within its bank: that is what field 103 names).
//! - `p/PARTNER/BANK/REGION/ACCOUNT` → (): a pool's members (retired accounts leave it).
//! - `o/ORDER` → [`Order`] (order ids are unique across partners).
//! - `x/EXPIRES(16 hex ms)/ORDER` → (): open orders by expiry, for the sweep.
//! - `d/LISTENER/KEY` → [`Seen`]: each deposit message's outcome, so a retransmission gets
//!   the same answer and pays nothing twice.
//! - `m/AT(16 hex ms)/KEY` → [`Mismatch`]: advices that matched no open order.

pub mod bank;
pub mod report;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{valid_code, valid_id, Config};
use crate::iso8583::ResponseCode;
use crate::journal::{Entry, EntryKind, Journal, Step};
use crate::outbox::{Item, Outbox};
use crate::store::Cf;

/// The longest account number (field 103 is ans..28).
pub const ACCOUNT_MAX: usize = 28;
/// The longest order id.
pub const ORDER_MAX: usize = 64;
/// The largest amount (field 4 is n12).
pub const AMOUNT_MAX: u64 = 999_999_999_999;

#[derive(Debug, thiserror::Error)]
pub enum VaError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("no free account in pool {0}")]
    Exhausted(String),
    #[error("storage: {0}")]
    Storage(String),
}

impl From<crate::journal::JournalError> for VaError {
    fn from(e: crate::journal::JournalError) -> VaError {
        VaError::Storage(e.to_string())
    }
}

/// An account of a pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolAccount {
    pub partner: String,
    pub bank: String,
    pub region: String,
    pub account: String,
    /// The order it is assigned to, while that order is open.
    pub order: Option<String>,
    /// Retired: out of the pool (if still assigned, once its order is paid or expires).
    pub retired: bool,
    pub added_ms: i64,
}

impl PoolAccount {
    fn state(&self) -> &'static str {
        match (&self.order, self.retired) {
            (None, false) => "free",
            (Some(_), false) => "assigned",
            (Some(_), true) => "retiring",
            (None, true) => "retired",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Open,
    Paid,
    Expired,
}

/// The deposit that paid an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deposit {
    pub listener: String,
    pub mti: String,
    pub stan: Option<u32>,
    pub rrn: Option<String>,
    pub amount: u64,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub at_ms: i64,
    pub event: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub order: String,
    pub partner: String,
    pub bank: String,
    pub region: String,
    pub account: String,
    pub amount: u64,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub status: OrderStatus,
    pub paid_ms: Option<i64>,
    pub deposit: Option<Deposit>,
    pub history: Vec<HistoryEvent>,
}

impl Order {
    /// Open but past its expiry: expired, whether or not the sweep has written so yet.
    pub fn status_at(&self, now_ms: i64) -> OrderStatus {
        match self.status {
            OrderStatus::Open if now_ms >= self.expires_ms => OrderStatus::Expired,
            s => s,
        }
    }

    /// As stored, with the status as of `now_ms`.
    pub fn as_of(mut self, now_ms: i64) -> Order {
        if self.status_at(now_ms) == OrderStatus::Expired && self.status == OrderStatus::Open {
            self.status = OrderStatus::Expired;
            self.history.push(HistoryEvent {
                at_ms: self.expires_ms,
                event: "expired".into(),
            });
        }
        self
    }
}

/// What a deposit message got (kept for its retransmissions).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seen {
    pub code: String,
    pub order: Option<String>,
    pub advice: bool,
    pub at_ms: i64,
    /// The bank reversed it (0400/0420) since.
    #[serde(default)]
    pub reversed: bool,
    /// The deposit's account and amount: a message reusing its reference with others is
    /// not a retransmission (empty for outcomes kept before they were).
    #[serde(default)]
    pub account: String,
    #[serde(default)]
    pub amount: u64,
}

/// An advice (0220: the bank booked the deposit already) that matched no open order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mismatch {
    pub id: String,
    pub at_ms: i64,
    pub listener: String,
    pub bank: String,
    pub account: String,
    pub amount: u64,
    pub rrn: Option<String>,
    pub stan: Option<u32>,
    /// `unknown account`, `unassigned`, `expired`, `wrong amount`.
    pub reason: String,
    /// The pool's partner, when the account is in one.
    pub partner: Option<String>,
    pub order: Option<String>,
}

/// A deposit question or advice, as the bank listener read it.
#[derive(Debug, Clone)]
pub struct DepositMsg {
    pub listener: String,
    pub bank: String,
    pub mti: String,
    /// 0220/0221: booked at the bank already.
    pub advice: bool,
    /// What retransmissions of this deposit share (see [`bank`]).
    pub key: String,
    pub account: String,
    pub amount: u64,
    pub stan: Option<u32>,
    pub rrn: Option<String>,
    /// The message itself, masked, journaled with the step that decides it.
    pub request: Entry,
}

fn acct_key(bank: &str, account: &str) -> Vec<u8> {
    format!("a/{bank}/{account}").into_bytes()
}
fn pool_prefix(partner: &str, bank: &str, region: &str) -> String {
    format!("p/{partner}/{bank}/{region}/")
}
fn order_key(order: &str) -> Vec<u8> {
    format!("o/{order}").into_bytes()
}
fn expiry_key(expires_ms: i64, order: &str) -> Vec<u8> {
    format!("x/{:016x}/{order}", expires_ms.max(0)).into_bytes()
}
fn seen_key(listener: &str, key: &str) -> Vec<u8> {
    format!("d/{listener}/{key}").into_bytes()
}
fn reversed_key(listener: &str, key: &str) -> Vec<u8> {
    format!("v/{listener}/{key}").into_bytes()
}
/// When a deposit's outcome (`d/`) or reversal marker (`v/`) was first written, for pruning
/// them once past the duplicate window: `t/AT(16 hex ms)/d|v/LISTENER/KEY`.
fn seen_time_key(at_ms: i64, key: &[u8]) -> Vec<u8> {
    let mut k = format!("t/{:016x}/", at_ms.max(0)).into_bytes();
    k.extend_from_slice(key);
    k
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

pub struct VirtualAccounts {
    journal: Arc<Journal>,
    clock: Arc<dyn Clock>,
    config: Arc<Config>,
    outbox: Arc<Outbox>,
    /// Every change, one at a time (see the module's comment).
    lock: Mutex<()>,
}

impl VirtualAccounts {
    pub fn new(
        journal: Arc<Journal>,
        clock: Arc<dyn Clock>,
        config: Arc<Config>,
        outbox: Arc<Outbox>,
    ) -> Arc<VirtualAccounts> {
        Arc::new(VirtualAccounts {
            journal,
            clock,
            config,
            outbox,
            lock: Mutex::new(()),
        })
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn read<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, VaError> {
        match self
            .journal
            .get(Cf::VirtualAccounts, key)
            .map_err(VaError::Storage)?
        {
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| VaError::Storage(format!("{}: {e}", String::from_utf8_lossy(key)))),
            None => Ok(None),
        }
    }

    fn account(&self, bank: &str, account: &str) -> Result<Option<PoolAccount>, VaError> {
        self.read(&acct_key(bank, account))
    }

    /// An order as stored (status as stored).
    fn order_stored(&self, order: &str) -> Result<Option<Order>, VaError> {
        self.read(&order_key(order))
    }

    /// An order, its status as of now.
    pub fn order(&self, order: &str) -> Result<Option<Order>, VaError> {
        let now = self.now_ms();
        Ok(self.order_stored(order)?.map(|o| o.as_of(now)))
    }

    /// Add accounts to a pool (creating it). Accounts already in this pool are left as they
    /// are; an account of the same bank in another pool is refused (field 103 must name one
    /// pool's account); a retired one comes back.
    pub async fn pool_add(
        &self,
        partner: &str,
        bank: &str,
        region: &str,
        accounts: &[String],
        who: &str,
    ) -> Result<serde_json::Value, VaError> {
        check_pool(partner, bank, region)?;
        if accounts.is_empty() || accounts.len() > 10_000 {
            return Err(VaError::Invalid("give 1 to 10,000 accounts".into()));
        }
        let _one = self.lock.lock().await;
        let now = self.now_ms();
        let mut step = Step::new();
        let (mut added, mut already) = (Vec::new(), Vec::new());
        let mut seen = std::collections::HashSet::new();
        for a in accounts {
            if !valid_id(a, ACCOUNT_MAX) {
                return Err(VaError::Invalid(format!(
                    "account {a:?}: 1 to {ACCOUNT_MAX} letters, digits, '-' or '_'"
                )));
            }
            if !seen.insert(a.as_str()) {
                continue;
            }
            match self.account(bank, a)? {
                // Another pool's account, unless retired and freed (then it moves here).
                Some(pa)
                    if (pa.partner != partner || pa.region != region)
                        && (!pa.retired || pa.order.is_some()) =>
                {
                    return Err(VaError::Conflict(format!(
                        "account {a} of bank {bank} is in another pool"
                    )));
                }
                Some(pa) if pa.partner != partner || pa.region != region => {}
                Some(pa) if !pa.retired => {
                    already.push(a.clone());
                    continue;
                }
                Some(pa) if pa.order.is_some() => {
                    // Retiring and still assigned: it stays in the pool after all.
                    let back = PoolAccount {
                        retired: false,
                        ..pa
                    };
                    step.put(Cf::VirtualAccounts, acct_key(bank, a), to_json(&back));
                    added.push(a.clone());
                    continue;
                }
                _ => {}
            }
            let pa = PoolAccount {
                partner: partner.into(),
                bank: bank.into(),
                region: region.into(),
                account: a.clone(),
                order: None,
                retired: false,
                added_ms: now,
            };
            step.put(Cf::VirtualAccounts, acct_key(bank, a), to_json(&pa));
            step.put(
                Cf::VirtualAccounts,
                format!("{}{a}", pool_prefix(partner, bank, region)).into_bytes(),
                Vec::new(),
            );
            added.push(a.clone());
        }
        step.append(Entry::new(
            EntryKind::Txn,
            &format!("va/pool/{partner}/{bank}/{region}"),
            "va",
            format!("{} accounts added by {who}", added.len()),
        ));
        step.synced();
        self.journal.commit(step).await?;
        Ok(serde_json::json!({
            "partner": partner, "bank": bank, "region": region,
            "added": added, "already": already,
        }))
    }

    /// Retire accounts of a pool: a free one leaves it now, an assigned one once its order
    /// is paid or expires.
    pub async fn pool_retire(
        &self,
        partner: &str,
        bank: &str,
        region: &str,
        accounts: &[String],
        who: &str,
    ) -> Result<serde_json::Value, VaError> {
        check_pool(partner, bank, region)?;
        let _one = self.lock.lock().await;
        let mut step = Step::new();
        let (mut retired, mut retiring) = (Vec::new(), Vec::new());
        for a in accounts {
            let pa = match self.account(bank, a)? {
                Some(pa) if pa.partner == partner && pa.region == region && !pa.retired => pa,
                _ => {
                    return Err(VaError::NotFound(format!(
                        "account {a} is not in pool {partner}/{bank}/{region}"
                    )))
                }
            };
            let assigned = pa.order.is_some();
            let pa = PoolAccount {
                retired: true,
                ..pa
            };
            step.put(Cf::VirtualAccounts, acct_key(bank, a), to_json(&pa));
            if assigned {
                retiring.push(a.clone());
            } else {
                step.delete(
                    Cf::VirtualAccounts,
                    format!("{}{a}", pool_prefix(partner, bank, region)).into_bytes(),
                );
                retired.push(a.clone());
            }
        }
        step.append(Entry::new(
            EntryKind::Txn,
            &format!("va/pool/{partner}/{bank}/{region}"),
            "va",
            format!(
                "{} accounts retired, {} retiring once freed, by {who}",
                retired.len(),
                retiring.len()
            ),
        ));
        step.synced();
        self.journal.commit(step).await?;
        Ok(serde_json::json!({"retired": retired, "retiring": retiring}))
    }

    /// The pools (of one partner), each with its accounts and their state.
    pub fn pools(&self, partner: Option<&str>) -> Result<serde_json::Value, VaError> {
        let prefix = match partner {
            Some(p) => format!("p/{p}/"),
            None => "p/".into(),
        };
        let now = self.now_ms();
        let mut pools: std::collections::BTreeMap<
            (String, String, String),
            Vec<serde_json::Value>,
        > = Default::default();
        for (k, _) in self
            .journal
            .scan(Cf::VirtualAccounts, prefix.as_bytes())
            .map_err(VaError::Storage)?
        {
            let text = String::from_utf8_lossy(&k).into_owned();
            let parts: Vec<&str> = text.splitn(5, '/').collect();
            let [_, partner, bank, region, account] = parts[..] else {
                continue;
            };
            let Some(pa) = self.account(bank, account)? else {
                continue;
            };
            // An assignment whose order has expired is free as of now.
            let mut state = pa.state();
            if let Some(o) = &pa.order {
                if self
                    .order_stored(o)?
                    .is_none_or(|o| o.status_at(now) != OrderStatus::Open)
                {
                    state = if pa.retired { "retired" } else { "free" };
                }
            }
            pools
                .entry((partner.into(), bank.into(), region.into()))
                .or_default()
                .push(serde_json::json!({"account": account, "state": state, "order": pa.order}));
        }
        let list: Vec<serde_json::Value> = pools
            .into_iter()
            .map(|((partner, bank, region), accounts)| {
                let free = accounts.iter().filter(|a| a["state"] == "free").count();
                serde_json::json!({
                    "partner": partner, "bank": bank, "region": region,
                    "size": accounts.len(), "free": free, "accounts": accounts,
                })
            })
            .collect();
        Ok(serde_json::json!({ "pools": list }))
    }

    /// Assign a free account of the pool to an order. A repeat of the same assignment
    /// (same order, partner, pool and amount, still open) gets the same answer.
    pub async fn assign(
        &self,
        partner: &str,
        bank: &str,
        region: &str,
        order: &str,
        amount: u64,
        expires_s: Option<u64>,
    ) -> Result<Order, VaError> {
        check_pool(partner, bank, region)?;
        if !valid_id(order, ORDER_MAX) {
            return Err(VaError::Invalid(format!(
                "order: 1 to {ORDER_MAX} letters, digits, '-' or '_'"
            )));
        }
        if amount == 0 || amount > AMOUNT_MAX {
            return Err(VaError::Invalid(format!("amount: 1 to {AMOUNT_MAX}")));
        }
        let seconds = expires_s.unwrap_or(
            self.config
                .virtual_accounts
                .default_expiry_min
                .saturating_mul(60),
        );
        if seconds == 0 || seconds > 525_600 * 60 {
            return Err(VaError::Invalid("expiry: 1 second to 365 days".into()));
        }
        let _one = self.lock.lock().await;
        let now = self.now_ms();
        if let Some(existing) = self.order_stored(order)? {
            let existing = existing.as_of(now);
            let same = existing.partner == partner
                && existing.bank == bank
                && existing.region == region
                && existing.amount == amount
                && existing.status == OrderStatus::Open;
            return if same {
                Ok(existing)
            } else {
                Err(VaError::Conflict(format!("order {order} exists already")))
            };
        }
        let mut step = Step::new();
        let prefix = pool_prefix(partner, bank, region);
        let mut chosen = None;
        for (k, _) in self
            .journal
            .scan(Cf::VirtualAccounts, prefix.as_bytes())
            .map_err(VaError::Storage)?
        {
            let account = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let Some(pa) = self.account(bank, &account)? else {
                continue;
            };
            if pa.retired {
                continue;
            }
            match &pa.order {
                None => {
                    chosen = Some(pa);
                    break;
                }
                Some(o) => {
                    // Taken by an order that has expired: expire it in this step and reuse.
                    if let Some(old) = self.order_stored(o)? {
                        if old.status == OrderStatus::Open
                            && old.status_at(now) == OrderStatus::Expired
                        {
                            self.expire_into(&mut step, old, now);
                            chosen = Some(PoolAccount { order: None, ..pa });
                            break;
                        }
                    }
                }
            }
        }
        let Some(pa) = chosen else {
            return Err(VaError::Exhausted(format!("{partner}/{bank}/{region}")));
        };
        let expires_ms = now.saturating_add(i64::try_from(seconds * 1_000).unwrap_or(i64::MAX));
        let o = Order {
            order: order.into(),
            partner: partner.into(),
            bank: bank.into(),
            region: region.into(),
            account: pa.account.clone(),
            amount,
            created_ms: now,
            expires_ms,
            status: OrderStatus::Open,
            paid_ms: None,
            deposit: None,
            history: vec![HistoryEvent {
                at_ms: now,
                event: format!("assigned account {} for {amount}", pa.account),
            }],
        };
        let pa = PoolAccount {
            order: Some(order.into()),
            ..pa
        };
        step.put(
            Cf::VirtualAccounts,
            acct_key(bank, &pa.account),
            to_json(&pa),
        );
        step.put(Cf::VirtualAccounts, order_key(order), to_json(&o));
        step.put(
            Cf::VirtualAccounts,
            expiry_key(expires_ms, order),
            Vec::new(),
        );
        step.append(Entry::new(
            EntryKind::Txn,
            &format!("va/order/{order}"),
            "va",
            format!("assigned {bank}/{} to {partner} for {amount}", pa.account),
        ));
        step.synced();
        self.journal.commit(step).await?;
        metrics::counter!("cyberswitch_va_orders_total", "event" => "assigned").increment(1);
        Ok(o)
    }

    /// Write into `step` that `order` (open, past its time) expired, and free its account.
    fn expire_into(&self, step: &mut Step, mut order: Order, now: i64) {
        order.status = OrderStatus::Expired;
        order.history.push(HistoryEvent {
            at_ms: now,
            event: "expired: account freed".into(),
        });
        step.put(
            Cf::VirtualAccounts,
            order_key(&order.order),
            to_json(&order),
        );
        step.delete(
            Cf::VirtualAccounts,
            expiry_key(order.expires_ms, &order.order),
        );
        self.free_into(step, &order);
        step.append(Entry::new(
            EntryKind::Txn,
            &format!("va/order/{}", order.order),
            "va",
            "expired: account freed".into(),
        ));
        metrics::counter!("cyberswitch_va_orders_total", "event" => "expired").increment(1);
    }

    /// The order's account back in its pool (or out of it, when retiring).
    fn free_into(&self, step: &mut Step, order: &Order) {
        let Ok(Some(pa)) = self.account(&order.bank, &order.account) else {
            return;
        };
        if pa.order.as_deref() != Some(order.order.as_str()) {
            return;
        }
        if pa.retired {
            step.delete(
                Cf::VirtualAccounts,
                format!(
                    "{}{}",
                    pool_prefix(&pa.partner, &pa.bank, &pa.region),
                    pa.account
                )
                .into_bytes(),
            );
        }
        let pa = PoolAccount { order: None, ..pa };
        step.put(
            Cf::VirtualAccounts,
            acct_key(&order.bank, &order.account),
            to_json(&pa),
        );
    }

    /// Expire every open order past its time (freeing its account). Returns how many.
    pub async fn sweep(&self) -> Result<usize, VaError> {
        let _one = self.lock.lock().await;
        let now = self.now_ms();
        let mut step = Step::new();
        let mut n = 0;
        for (k, _) in self
            .journal
            .scan(Cf::VirtualAccounts, b"x/")
            .map_err(VaError::Storage)?
        {
            let text = String::from_utf8_lossy(&k).into_owned();
            let Some((at, order)) = text[2..].split_once('/') else {
                continue;
            };
            let at = i64::from_str_radix(at, 16).unwrap_or(i64::MAX);
            if at > now {
                break;
            }
            match self.order_stored(order)? {
                Some(o) if o.status == OrderStatus::Open => {
                    self.expire_into(&mut step, o, now);
                    n += 1;
                }
                _ => step.delete(Cf::VirtualAccounts, k),
            }
            if n >= 1_000 {
                break;
            }
        }
        self.prune_seen_into(&mut step, now)?;
        if !step.is_empty() {
            step.synced();
            self.journal.commit(step).await?;
        }
        Ok(n)
    }

    /// Forget deposits' outcomes and reversal markers older than the duplicate window
    /// (`limits.duplicate_window_s`, as the card flows' F10): a bank repeating a deposit
    /// later than that is asked afresh (a paid order's account is then unassigned: 14).
    fn prune_seen_into(&self, step: &mut Step, now: i64) -> Result<(), VaError> {
        let window_ms = i64::try_from(self.config.limits.duplicate_window_s.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        let before = now.saturating_sub(window_ms);
        let mut n = 0;
        let mut result = Ok(());
        self.journal
            .store()
            .for_each(Cf::VirtualAccounts, b"t/", |k, _| {
                let at = k
                    .get(2..18)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| i64::from_str_radix(h, 16).ok());
                match at {
                    Some(at) if at < before && n < 10_000 => {
                        if let Some(target) = k.get(19..) {
                            step.delete(Cf::VirtualAccounts, target.to_vec());
                        }
                        step.delete(Cf::VirtualAccounts, k.to_vec());
                        n += 1;
                        std::ops::ControlFlow::Continue(())
                    }
                    Some(_) => std::ops::ControlFlow::Break(()),
                    None => {
                        result = Err(VaError::Storage("bad deposit time index key".into()));
                        std::ops::ControlFlow::Break(())
                    }
                }
            })
            .map_err(VaError::Storage)?;
        result
    }

    /// Sweep expired orders every `virtual_accounts.sweep_s` until `stop`.
    pub async fn run_sweeper(self: Arc<Self>, stop: CancellationToken) {
        let every = std::time::Duration::from_secs(self.config.virtual_accounts.sweep_s.max(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "virtual accounts: expired orders swept"),
                Err(e) => tracing::error!(error = %e, "virtual accounts: sweep failed"),
            }
        }
    }

    /// The bank's question (0200) or advice (0220) about a deposit: the answer's code. On a
    /// match the order is paid, its account freed and the partner's callback queued — in
    /// one synced step, before the answer leaves. A message seen before gets the same code
    /// and changes nothing.
    pub async fn deposit(&self, d: &DepositMsg) -> Result<ResponseCode, VaError> {
        let _one = self.lock.lock().await;
        let now = self.now_ms();
        let seen_at = seen_key(&d.listener, &d.key);
        let seen = self.read::<Seen>(&seen_at)?;
        let seen_before = seen.is_some();
        if seen.as_ref().is_some_and(|s| s.reversed && !d.advice) {
            // A repeat of a deposit the bank has reversed since: its approval is withdrawn.
            return Ok(ResponseCode::InvalidTransaction);
        }
        if seen.is_none()
            && !d.advice
            && self
                .journal
                .get(Cf::VirtualAccounts, &reversed_key(&d.listener, &d.key))
                .map_err(VaError::Storage)?
                .is_some()
        {
            // Reversed before it arrived (the bank gave up waiting): never approved.
            return Ok(ResponseCode::InvalidTransaction);
        }
        if let Some(seen) = seen
            .as_ref()
            .filter(|s| !s.account.is_empty() && (s.account != d.account || s.amount != d.amount))
        {
            // The reference of another deposit (a bank reusing its RRN): neither that
            // deposit's answer nor a new payment, but a duplicate transmission (94).
            tracing::warn!(
                listener = %d.listener,
                first = %seen.at_ms,
                "a deposit reuses another deposit's reference with another account or amount: 94"
            );
            metrics::counter!("cyberswitch_va_deposits_total", "outcome" => "reference_reused")
                .increment(1);
            return Ok(ResponseCode::Duplicate);
        }
        if let Some(seen) = seen {
            // A retransmission, or the advice of a deposit the switch approved: same answer.
            // An advice after a refusal is the bank booking it anyway: looked at afresh.
            // After a reversal, an advice is the bank booking it after all: afresh too.
            if !seen.reversed && (!d.advice || seen.advice || seen.code == "00") {
                metrics::counter!("cyberswitch_va_deposits_total", "outcome" => "repeat")
                    .increment(1);
                let code = if d.advice {
                    ResponseCode::Approved
                } else {
                    ResponseCode::parse(seen.code.as_bytes())
                        .unwrap_or(ResponseCode::SystemMalfunction)
                };
                return Ok(code);
            }
        }
        let mut step = Step::new();
        step.append(d.request.clone());
        let (outcome, order) = self.match_deposit(&mut step, d, now)?;
        let code = match outcome {
            Ok(()) => ResponseCode::Approved,
            Err((code, reason)) => {
                if d.advice {
                    let id = format!("{:016x}-{}", now.max(0), d.key);
                    let m = Mismatch {
                        id: id.clone(),
                        at_ms: now,
                        listener: d.listener.clone(),
                        bank: d.bank.clone(),
                        account: d.account.clone(),
                        amount: d.amount,
                        rrn: d.rrn.clone(),
                        stan: d.stan,
                        reason: reason.to_string(),
                        partner: self.account(&d.bank, &d.account)?.map(|pa| pa.partner),
                        order: order.clone(),
                    };
                    step.put(
                        Cf::VirtualAccounts,
                        format!("m/{id}").into_bytes(),
                        to_json(&m),
                    );
                    step.append(Entry::new(
                        EntryKind::Txn,
                        &format!("va/deposit/{}", d.key),
                        &d.listener,
                        format!("advice matched nothing ({reason}): mismatch recorded"),
                    ));
                    tracing::warn!(listener = %d.listener, account = %d.account, amount = d.amount, reason, "virtual accounts: unmatched advice recorded as a mismatch");
                    metrics::counter!("cyberswitch_va_mismatches_total").increment(1);
                    ResponseCode::Approved
                } else {
                    step.append(Entry::new(
                        EntryKind::Txn,
                        &format!("va/deposit/{}", d.key),
                        &d.listener,
                        format!("deposit refused {code} ({reason})"),
                    ));
                    code
                }
            }
        };
        let seen = Seen {
            code: code.as_str().into(),
            order,
            advice: d.advice,
            at_ms: now,
            reversed: false,
            account: d.account.clone(),
            amount: d.amount,
        };
        if !seen_before {
            step.put(
                Cf::VirtualAccounts,
                seen_time_key(now, &seen_at),
                Vec::new(),
            );
        }
        step.put(Cf::VirtualAccounts, seen_at, to_json(&seen));
        step.synced();
        self.journal.commit(step).await?;
        if outcome.is_ok() {
            self.outbox.notify();
        }
        let label = match (&outcome, d.advice) {
            (Ok(()), _) => "paid",
            (Err(_), true) => "mismatch",
            (Err((c, _)), false) => c.as_str(),
        };
        metrics::counter!("cyberswitch_va_deposits_total", "outcome" => label).increment(1);
        Ok(code)
    }

    /// Match a deposit to an open order: `Ok` (the payment written into `step`) or the
    /// refusal's code and reason; with the order concerned, if any.
    #[allow(clippy::type_complexity)]
    fn match_deposit(
        &self,
        step: &mut Step,
        d: &DepositMsg,
        now: i64,
    ) -> Result<(Result<(), (ResponseCode, &'static str)>, Option<String>), VaError> {
        let invalid = ResponseCode::InvalidCard;
        let Some(pa) = self.account(&d.bank, &d.account)? else {
            return Ok((Err((invalid, "unknown account")), None));
        };
        let Some(order_id) = pa.order.clone() else {
            return Ok((Err((invalid, "unassigned")), None));
        };
        let Some(order) = self.order_stored(&order_id)? else {
            return Ok((Err((invalid, "unassigned")), None));
        };
        if order.status != OrderStatus::Open {
            return Ok((Err((invalid, "unassigned")), Some(order_id)));
        }
        if order.status_at(now) == OrderStatus::Expired {
            self.expire_into(step, order, now);
            return Ok((Err((invalid, "expired")), Some(order_id)));
        }
        if order.amount != d.amount {
            return Ok((
                Err((ResponseCode::InvalidAmount, "wrong amount")),
                Some(order_id),
            ));
        }
        let mut order = order;
        order.status = OrderStatus::Paid;
        order.paid_ms = Some(now);
        order.deposit = Some(Deposit {
            listener: d.listener.clone(),
            mti: d.mti.clone(),
            stan: d.stan,
            rrn: d.rrn.clone(),
            amount: d.amount,
            at_ms: now,
        });
        order.history.push(HistoryEvent {
            at_ms: now,
            event: format!(
                "paid by deposit {} ({}{})",
                d.amount,
                d.mti,
                d.rrn
                    .as_ref()
                    .map(|r| format!(", RRN {r}"))
                    .unwrap_or_default()
            ),
        });
        step.put(Cf::VirtualAccounts, order_key(&order_id), to_json(&order));
        step.delete(Cf::VirtualAccounts, expiry_key(order.expires_ms, &order_id));
        self.free_into(step, &order);
        let body = serde_json::json!({
            "event": "va.paid",
            "partner": order.partner,
            "order": order.order,
            "bank": order.bank,
            "region": order.region,
            "account": order.account,
            "amount": order.amount,
            "paid_at": chrono::DateTime::from_timestamp_millis(now).map(|t| t.to_rfc3339()),
            "rrn": d.rrn,
        });
        let item = Item::new(
            format!("va-paid-{order_id}"),
            &order.partner,
            "va.paid",
            &body,
            now,
        )
        .in_group(&order_id);
        Outbox::put(step, &item);
        step.append(Entry::new(
            EntryKind::Txn,
            &format!("va/order/{order_id}"),
            &d.listener,
            format!("paid by deposit {} on {}/{}", d.amount, d.bank, d.account),
        ));
        metrics::counter!("cyberswitch_va_orders_total", "event" => "paid").increment(1);
        Ok((Ok(()), Some(order_id)))
    }

    /// The bank reverses a deposit (0400/0420: it did not book it after all). A deposit that
    /// paid an order unpays it: the order is open again on its account when that account is
    /// still free and the order not past its time, expired otherwise; the partner, told of
    /// the payment, is told of the reversal after it (same callback group). Anything else
    /// (unknown, refused, reversed already) is acknowledged and changes nothing; a deposit
    /// reversed before it arrives is refused when it does. Always answered 00.
    pub async fn reverse_deposit(
        &self,
        listener: &str,
        key: &str,
        request: Entry,
    ) -> Result<ResponseCode, VaError> {
        let _one = self.lock.lock().await;
        let now = self.now_ms();
        let marker = reversed_key(listener, key);
        if self
            .journal
            .get(Cf::VirtualAccounts, &marker)
            .map_err(VaError::Storage)?
            .is_some()
        {
            return Ok(ResponseCode::Approved);
        }
        let mut step = Step::new();
        step.append(request);
        step.put(Cf::VirtualAccounts, seen_time_key(now, &marker), Vec::new());
        step.put(Cf::VirtualAccounts, marker, now.to_be_bytes().to_vec());
        let seen_at = seen_key(listener, key);
        let seen = self.read::<Seen>(&seen_at)?;
        let paid = seen
            .as_ref()
            .filter(|s| s.code == "00")
            .and_then(|s| s.order.clone());
        let mut what = "nothing to reverse".to_string();
        if let Some(mut seen) = seen {
            seen.reversed = true;
            step.put(Cf::VirtualAccounts, seen_at, to_json(&seen));
        }
        if let Some(order_id) = paid {
            if let Some(order) = self
                .order_stored(&order_id)?
                .filter(|o| o.status == OrderStatus::Paid)
            {
                what = self.unpay_into(&mut step, order, now)?;
            }
        }
        step.append(Entry::new(
            EntryKind::Txn,
            &format!("va/deposit/{key}"),
            listener,
            format!("deposit reversed by the bank: {what}"),
        ));
        step.synced();
        self.journal.commit(step).await?;
        self.outbox.notify();
        metrics::counter!("cyberswitch_va_deposits_total", "outcome" => "reversed").increment(1);
        Ok(ResponseCode::Approved)
    }

    /// Write into `step` that a paid order's deposit was reversed; what became of it.
    fn unpay_into(&self, step: &mut Step, mut order: Order, now: i64) -> Result<String, VaError> {
        let pa = self.account(&order.bank, &order.account)?;
        let reopen = now < order.expires_ms
            && pa
                .as_ref()
                .is_some_and(|pa| pa.order.is_none() && !pa.retired);
        let deposit = order.deposit.take();
        order.paid_ms = None;
        let what = if reopen {
            order.status = OrderStatus::Open;
            if let Some(pa) = pa {
                let pa = PoolAccount {
                    order: Some(order.order.clone()),
                    ..pa
                };
                step.put(
                    Cf::VirtualAccounts,
                    acct_key(&order.bank, &order.account),
                    to_json(&pa),
                );
            }
            step.put(
                Cf::VirtualAccounts,
                expiry_key(order.expires_ms, &order.order),
                Vec::new(),
            );
            "order open again on its account"
        } else {
            order.status = OrderStatus::Expired;
            "order expired (past its time, or its account taken since)"
        };
        order.history.push(HistoryEvent {
            at_ms: now,
            event: format!(
                "deposit {} reversed by the bank: {what}",
                deposit.as_ref().map_or(0, |d| d.amount)
            ),
        });
        step.put(
            Cf::VirtualAccounts,
            order_key(&order.order),
            to_json(&order),
        );
        let n = order.history.len();
        let body = serde_json::json!({
            "event": "va.reversed",
            "partner": order.partner,
            "order": order.order,
            "bank": order.bank,
            "account": order.account,
            "amount": deposit.as_ref().map_or(0, |d| d.amount),
            "status": order.status,
            "rrn": deposit.as_ref().and_then(|d| d.rrn.clone()),
        });
        let item = Item::new(
            format!("va-reversed-{}-{n}", order.order),
            &order.partner,
            "va.reversed",
            &body,
            now,
        )
        .in_group(&order.order);
        Outbox::put(step, &item);
        metrics::counter!("cyberswitch_va_orders_total", "event" => "reversed").increment(1);
        Ok(what.to_string())
    }

    /// Recorded mismatches (of one partner), oldest first.
    pub fn mismatches(&self, partner: Option<&str>) -> Result<Vec<Mismatch>, VaError> {
        let mut out = Vec::new();
        for (_, v) in self
            .journal
            .scan(Cf::VirtualAccounts, b"m/")
            .map_err(VaError::Storage)?
        {
            let Ok(m) = serde_json::from_slice::<Mismatch>(&v) else {
                continue;
            };
            if partner.is_none_or(|p| m.partner.as_deref() == Some(p)) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Every order (of one partner), as of now.
    pub fn orders(&self, partner: Option<&str>) -> Result<Vec<Order>, VaError> {
        let now = self.now_ms();
        let mut out = Vec::new();
        for (_, v) in self
            .journal
            .scan(Cf::VirtualAccounts, b"o/")
            .map_err(VaError::Storage)?
        {
            let Ok(o) = serde_json::from_slice::<Order>(&v) else {
                continue;
            };
            if partner.is_none_or(|p| o.partner == p) {
                out.push(o.as_of(now));
            }
        }
        Ok(out)
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }
}

fn check_pool(partner: &str, bank: &str, region: &str) -> Result<(), VaError> {
    for (name, v) in [("partner", partner), ("bank", bank), ("region", region)] {
        if !valid_code(v) {
            return Err(VaError::Invalid(format!(
                "{name}: 1 to 16 letters, digits, '-' or '_'"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    struct Fixture {
        va: Arc<VirtualAccounts>,
        clock: Arc<ManualClock>,
    }

    fn fixture() -> Fixture {
        let text = format!(
            "data_dir = \"x\"\ncard_key = \"{}\"\n[limits]\nduplicate_window_s = 3600\n",
            "00".repeat(32)
        );
        let config = Arc::new(Config::from_toml(&text, std::path::Path::new("t.toml")).unwrap());
        let journal = Journal::open(
            crate::store::Store::memory(),
            crate::journal::Sealer::from_card_key(&[7u8; 32]),
            64,
        )
        .unwrap();
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let outbox = Outbox::new(journal.clone(), clock.clone(), config.clone());
        let va = VirtualAccounts::new(journal, clock.clone(), config, outbox);
        Fixture { va, clock }
    }

    fn deposit(account: &str, amount: u64, key: &str) -> DepositMsg {
        DepositMsg {
            listener: "bank".into(),
            bank: "004".into(),
            mti: "0200".into(),
            advice: false,
            key: key.into(),
            account: account.into(),
            amount,
            stan: None,
            rrn: None,
            request: Entry::new(EntryKind::In, "t", "bank", "deposit".into()),
        }
    }

    /// On a clock of its own: the order expires exactly at its time, on read and by the
    /// sweep; a deposit's outcome is remembered for the duplicate window, then forgotten.
    #[tokio::test]
    async fn expiry_and_the_duplicate_window_follow_the_clock() {
        let f = fixture();
        let accounts = vec!["A1".to_string()];
        f.va.pool_add("P", "004", "R", &accounts, "t")
            .await
            .unwrap();
        let o =
            f.va.assign("P", "004", "R", "O1", 500, Some(60))
                .await
                .unwrap();
        assert_eq!(o.account, "A1");
        f.clock.advance(chrono::Duration::seconds(59));
        assert_eq!(f.va.order("O1").unwrap().unwrap().status, OrderStatus::Open);
        f.clock.advance(chrono::Duration::seconds(1));
        assert_eq!(
            f.va.order("O1").unwrap().unwrap().status,
            OrderStatus::Expired
        );
        assert_eq!(f.va.sweep().await.unwrap(), 1);
        assert_eq!(f.va.sweep().await.unwrap(), 0, "swept once");

        f.va.assign("P", "004", "R", "O2", 700, None).await.unwrap();
        let d = deposit("A1", 700, "r-1");
        assert_eq!(f.va.deposit(&d).await.unwrap(), ResponseCode::Approved);
        assert_eq!(f.va.deposit(&d).await.unwrap(), ResponseCode::Approved);
        f.clock.advance(chrono::Duration::seconds(3_599));
        f.va.sweep().await.unwrap();
        assert_eq!(
            f.va.deposit(&d).await.unwrap(),
            ResponseCode::Approved,
            "still within the window"
        );
        f.clock.advance(chrono::Duration::seconds(2));
        f.va.sweep().await.unwrap();
        // Forgotten: asked afresh, the account has no open order now.
        assert_eq!(f.va.deposit(&d).await.unwrap(), ResponseCode::InvalidCard);
        let paid = f.va.order("O2").unwrap().unwrap();
        assert_eq!(paid.status, OrderStatus::Paid);
        assert_eq!(f.va.report("P", None, None).unwrap().collected, 700);
    }
}
