//! Orders: a free account of a pool assigned to an order for its amount until it expires,
//! and the sweep that expires open orders past their time (freeing their accounts).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::valid_id;
use crate::journal::{Entry, EntryKind, Step};
use crate::store::Cf;

use super::keys::{acct_key, expiry_key, member_key, order_key, pool_prefix, ORDERS};
use super::pools::check_pool;
use super::{
    to_json, HistoryEvent, Order, OrderStatus, PoolAccount, VaError, VirtualAccounts, AMOUNT_MAX,
    ORDER_MAX,
};

impl VirtualAccounts {
    /// An order, its status as of now.
    pub fn order(&self, order: &str) -> Result<Option<Order>, VaError> {
        let now = self.now_ms();
        Ok(self.order_stored(order)?.map(|o| o.as_of(now)))
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
    pub(super) fn expire_into(&self, step: &mut Step, mut order: Order, now: i64) {
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
    pub(super) fn free_into(&self, step: &mut Step, order: &Order) {
        let Ok(Some(pa)) = self.account(&order.bank, &order.account) else {
            return;
        };
        if pa.order.as_deref() != Some(order.order.as_str()) {
            return;
        }
        if pa.retired {
            step.delete(
                Cf::VirtualAccounts,
                member_key(&pa.partner, &pa.bank, &pa.region, &pa.account),
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

    /// Every order (of one partner), as of now.
    pub fn orders(&self, partner: Option<&str>) -> Result<Vec<Order>, VaError> {
        let now = self.now_ms();
        let mut all: Vec<Order> = self.records(ORDERS)?;
        all.retain(|o| partner.is_none_or(|p| o.partner == p));
        Ok(all.into_iter().map(|o| o.as_of(now)).collect())
    }
}
