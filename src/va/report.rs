//! F17 collection report: per partner and period (orders by the local date they were
//! assigned, in the books' time zone; mismatches by the date they were recorded).

use chrono::NaiveDate;
use serde::Serialize;

use std::ops::ControlFlow;

use super::keys::{order_key, order_times_from};
use super::{Order, OrderStatus, VaError, VirtualAccounts};

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CountAmount {
    pub count: u64,
    pub amount: u64,
}

impl CountAmount {
    fn add(&mut self, amount: u64) {
        self.count += 1;
        self.amount += amount;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Collection {
    pub partner: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Every order assigned in the period, whatever became of it.
    pub orders: CountAmount,
    pub open: CountAmount,
    pub paid: CountAmount,
    pub expired: CountAmount,
    /// Advices on this partner's accounts that matched no open order.
    pub mismatches: CountAmount,
    /// Money collected: the deposits that paid orders (equal to `paid.amount`).
    pub collected: u64,
    /// Per bank and region.
    pub pools: Vec<PoolLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolLine {
    pub bank: String,
    pub region: String,
    pub orders: CountAmount,
    pub paid: CountAmount,
    pub expired: CountAmount,
}

/// `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|e| format!("{s:?}: give YYYY-MM-DD ({e})"))
}

impl VirtualAccounts {
    pub fn report(
        &self,
        partner: &str,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<Collection, VaError> {
        let tz = self.config.books.time_zone;
        let in_period = |ms: i64| {
            let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
                return false;
            };
            let d = t.with_timezone(&tz).date_naive();
            from.is_none_or(|f| d >= f) && to.is_none_or(|t| d <= t)
        };
        let mut c = Collection {
            partner: partner.to_string(),
            from: from.map(|d| d.to_string()),
            to: to.map(|d| d.to_string()),
            orders: CountAmount::default(),
            open: CountAmount::default(),
            paid: CountAmount::default(),
            expired: CountAmount::default(),
            mismatches: CountAmount::default(),
            collected: 0,
            pools: Vec::new(),
        };
        let mut pools: std::collections::BTreeMap<(String, String), PoolLine> = Default::default();
        let now = self.now_ms();
        let (lo, hi) = period_ms(from, to);
        let (prefix, start) = order_times_from(partner, lo);
        self.visit(prefix.as_bytes(), &start, |k, _| {
            let Some((created, order)) = parse_order_time(&k[prefix.len()..]) else {
                return Ok(ControlFlow::Continue(()));
            };
            if created > hi {
                return Ok(ControlFlow::Break(()));
            }
            // One that does not decode (written by a later version, say) is left out.
            let raw = self.raw(&order_key(order))?;
            let Some(o) = raw.and_then(|raw| serde_json::from_slice::<Order>(&raw).ok()) else {
                return Ok(ControlFlow::Continue(()));
            };
            let o = o.as_of(now);
            if !in_period(o.created_ms) {
                return Ok(ControlFlow::Continue(()));
            }
            let line = pools
                .entry((o.bank.clone(), o.region.clone()))
                .or_insert_with(|| PoolLine {
                    bank: o.bank.clone(),
                    region: o.region.clone(),
                    orders: CountAmount::default(),
                    paid: CountAmount::default(),
                    expired: CountAmount::default(),
                });
            c.orders.add(o.amount);
            line.orders.add(o.amount);
            match o.status {
                OrderStatus::Open => c.open.add(o.amount),
                OrderStatus::Paid => {
                    let got = o.deposit.as_ref().map_or(o.amount, |d| d.amount);
                    c.paid.add(got);
                    line.paid.add(got);
                    c.collected += got;
                }
                OrderStatus::Expired => {
                    c.expired.add(o.amount);
                    line.expired.add(o.amount);
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        self.mismatches_from(partner, lo, |m| {
            if m.at_ms > hi {
                return ControlFlow::Break(());
            }
            if in_period(m.at_ms) {
                c.mismatches.add(m.amount);
            }
            ControlFlow::Continue(())
        })?;
        c.pools = pools.into_values().collect();
        Ok(c)
    }
}

const DAY_MS: i64 = 86_400_000;

/// The period's bounds in milliseconds, two days wider on each side than its dates taken
/// at UTC (any time zone's dates fall inside): they only keep the reading short; whether a
/// record is in the period is decided by its date in the books' time zone.
fn period_ms(from: Option<NaiveDate>, to: Option<NaiveDate>) -> (i64, i64) {
    let at = |d: NaiveDate| {
        d.and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis()
    };
    (
        from.map_or(0, |d| at(d).saturating_sub(2 * DAY_MS)),
        to.map_or(i64::MAX, |d| at(d).saturating_add(3 * DAY_MS)),
    )
}

/// `CREATED(16 hex)/ORDER`, the rest of a `c/PARTNER/` key.
fn parse_order_time(rest: &[u8]) -> Option<(i64, &str)> {
    let text = std::str::from_utf8(rest).ok()?;
    let (at, order) = text.split_once('/')?;
    Some((i64::from_str_radix(at, 16).ok()?, order))
}
