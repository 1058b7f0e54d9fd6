//! Orders: a free account of a pool assigned to an order for its amount until it expires,
//! and the sweep that expires open orders past their time (freeing their accounts).

use std::ops::ControlFlow;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::valid_id;
use crate::journal::{Entry, EntryKind, Step};
use crate::store::Cf;

use super::keys::{
    acct_key, expiry_key, free_key, free_prefix, member_key, order_key, order_time_key,
    parse_expiry_key,
};
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
        let chosen = match self.first_free(&mut step, partner, bank, region)? {
            Some(pa) => Some(pa),
            None => self.first_expired(&mut step, partner, bank, region, now)?,
        };
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
        // After `first_expired`'s freeing of the account, which indexed it as free.
        step.delete(
            Cf::VirtualAccounts,
            free_key(&pa.partner, &pa.bank, &pa.region, &pa.account),
        );
        step.put(Cf::VirtualAccounts, order_key(order), to_json(&o));
        step.put(
            Cf::VirtualAccounts,
            order_time_key(partner, now, order),
            Vec::new(),
        );
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
        } else {
            step.put(
                Cf::VirtualAccounts,
                free_key(&pa.partner, &pa.bank, &pa.region, &pa.account),
                Vec::new(),
            );
        }
        let pa = PoolAccount { order: None, ..pa };
        step.put(
            Cf::VirtualAccounts,
            acct_key(&order.bank, &order.account),
            to_json(&pa),
        );
    }

    /// The pool's first free account, found through its index; each one is read to be
    /// sure, and an index key that does not hold (none should) is taken out in `step`.
    fn first_free(
        &self,
        step: &mut Step,
        partner: &str,
        bank: &str,
        region: &str,
    ) -> Result<Option<PoolAccount>, VaError> {
        let prefix = free_prefix(partner, bank, region);
        let mut found = None;
        self.visit(prefix.as_bytes(), prefix.as_bytes(), |k, _| {
            let account = String::from_utf8_lossy(&k[prefix.len()..]);
            match self.account(bank, &account)? {
                Some(pa)
                    if pa.order.is_none()
                        && !pa.retired
                        && pa.partner == partner
                        && pa.region == region =>
                {
                    found = Some(pa);
                    return Ok(ControlFlow::Break(()));
                }
                _ => {
                    tracing::warn!(partner, bank, region, %account, "virtual accounts: a free-account index key that does not hold, removed");
                    step.delete(Cf::VirtualAccounts, k.to_vec());
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(found)
    }

    /// No account of the pool free: the first whose open order is past its time (not swept
    /// yet), that order expired in `step` and its account given. Reads the orders past
    /// their time only (of every pool: the sweep keeps them few).
    fn first_expired(
        &self,
        step: &mut Step,
        partner: &str,
        bank: &str,
        region: &str,
        now: i64,
    ) -> Result<Option<PoolAccount>, VaError> {
        let mut found = None;
        self.visit(b"x/", b"x/", |k, _| {
            let Some((at, order)) = parse_expiry_key(k) else {
                return Ok(ControlFlow::Continue(()));
            };
            if at > now {
                return Ok(ControlFlow::Break(()));
            }
            // Orders of every pool pass here: one that does not read is another's problem.
            let Ok(Some(o)) = self.order_stored(&order) else {
                return Ok(ControlFlow::Continue(()));
            };
            if o.status != OrderStatus::Open
                || o.status_at(now) != OrderStatus::Expired
                || o.partner != partner
                || o.bank != bank
                || o.region != region
            {
                return Ok(ControlFlow::Continue(()));
            }
            let Some(pa) = self.account(bank, &o.account)? else {
                return Ok(ControlFlow::Continue(()));
            };
            // The account itself in this pool still (it may have moved to another since,
            // under an order reopened by a reversal, say).
            if pa.retired
                || pa.order.as_deref() != Some(o.order.as_str())
                || pa.partner != partner
                || pa.region != region
            {
                return Ok(ControlFlow::Continue(()));
            }
            self.expire_into(step, o, now);
            found = Some(PoolAccount { order: None, ..pa });
            Ok(ControlFlow::Break(()))
        })?;
        Ok(found)
    }

    /// Expire every open order past its time (freeing its account). Returns how many.
    pub async fn sweep(&self) -> Result<usize, VaError> {
        let _one = self.lock.lock().await;
        let now = self.now_ms();
        let mut step = Step::new();
        let mut n = 0;
        self.visit(b"x/", b"x/", |k, _| {
            let Some((at, order)) = parse_expiry_key(k) else {
                step.delete(Cf::VirtualAccounts, k.to_vec());
                return Ok(ControlFlow::Continue(()));
            };
            if at > now {
                return Ok(ControlFlow::Break(()));
            }
            match self.order_stored(&order)? {
                Some(o) if o.status == OrderStatus::Open => {
                    self.expire_into(&mut step, o, now);
                    n += 1;
                }
                _ => step.delete(Cf::VirtualAccounts, k.to_vec()),
            }
            Ok(if n >= 1_000 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
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
}
