//! F17 collection report: per partner and period (orders by the local date they were
//! assigned, in the books' time zone; mismatches by the date they were recorded).

use chrono::NaiveDate;
use serde::Serialize;

use super::{OrderStatus, VaError, VirtualAccounts};

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
        for o in self.orders(Some(partner))? {
            if !in_period(o.created_ms) {
                continue;
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
        }
        for m in self.mismatches(Some(partner))? {
            if in_period(m.at_ms) {
                c.mismatches.add(m.amount);
            }
        }
        c.pools = pools.into_values().collect();
        Ok(c)
    }
}
