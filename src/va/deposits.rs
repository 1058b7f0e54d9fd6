//! Deposits: the bank's question or advice matched to an open order (paying it once), its
//! reversal (unpaying it), and the duplicate window during which a deposit's outcome is kept
//! for its retransmissions.

use crate::iso8583::ResponseCode;
use crate::journal::{Entry, EntryKind, Step};
use crate::outbox::{Item, Outbox};
use crate::store::Cf;

use super::keys::{
    acct_key, expiry_key, free_key, order_key, reversed_key, seen_key, seen_time_key,
};
use super::{
    to_json, Deposit, DepositMsg, HistoryEvent, Order, OrderStatus, PoolAccount, Seen, VaError,
    VirtualAccounts,
};

impl VirtualAccounts {
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
        let mut callbacks = Vec::new();
        let (outcome, order) = self.match_deposit(&mut step, d, now, &mut callbacks)?;
        let code = match outcome {
            Ok(()) => ResponseCode::Approved,
            Err((code, reason)) => {
                if d.advice {
                    self.record_mismatch_into(&mut step, d, reason, order.clone(), now)?;
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
        self.outbox.queued(&callbacks);
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
        callbacks: &mut Vec<Item>,
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
        // One callback per payment: a payment after a reversal (the order reopened) gets an
        // id of its own (the first one's item may be delivered, and a partner may take a
        // repeated id for a repeated delivery).
        let first = format!("va-paid-{order_id}");
        let id = match self.outbox.get(&first).map_err(VaError::Storage)? {
            None => first,
            Some(_) => format!("{first}-{}", order.history.len()),
        };
        let item = Item::new(id, &order.partner, "va.paid", &body, now).in_group(&order_id);
        Outbox::put(step, &item);
        callbacks.push(item);
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
        let mut callbacks = Vec::new();
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
                what = self.unpay_into(&mut step, order, now, &mut callbacks)?;
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
        self.outbox.queued(&callbacks);
        metrics::counter!("cyberswitch_va_deposits_total", "outcome" => "reversed").increment(1);
        Ok(ResponseCode::Approved)
    }

    /// Write into `step` that a paid order's deposit was reversed; what became of it.
    fn unpay_into(
        &self,
        step: &mut Step,
        mut order: Order,
        now: i64,
        callbacks: &mut Vec<Item>,
    ) -> Result<String, VaError> {
        let pa = self.account(&order.bank, &order.account)?;
        let reopen = now < order.expires_ms
            && pa.as_ref().is_some_and(|pa| {
                pa.order.is_none()
                        && !pa.retired
                        // Not on an account moved to another pool since it was paid.
                        && pa.partner == order.partner
                        && pa.region == order.region
            });
        let deposit = order.deposit.take();
        order.paid_ms = None;
        let what = if reopen {
            order.status = OrderStatus::Open;
            if let Some(pa) = pa {
                let pa = PoolAccount {
                    order: Some(order.order.clone()),
                    ..pa
                };
                step.delete(
                    Cf::VirtualAccounts,
                    free_key(&pa.partner, &pa.bank, &pa.region, &pa.account),
                );
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
        callbacks.push(item);
        metrics::counter!("cyberswitch_va_orders_total", "event" => "reversed").increment(1);
        Ok(what.to_string())
    }

    /// Forget deposits' outcomes and reversal markers older than the duplicate window
    /// (`limits.duplicate_window_s`, as the card flows' F10): a bank repeating a deposit
    /// later than that is asked afresh (a paid order's account is then unassigned: 14).
    pub(super) fn prune_seen_into(&self, step: &mut Step, now: i64) -> Result<(), VaError> {
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
}
