//! Settlement reports (F13): a business date's events summed per issuer, acquirer, merchant
//! (field 42: gross, fees by the configured schedule, net payable) and terminal. Nothing is
//! stored but the events themselves, and nothing is booked on a closed date, so the report
//! of a closed day is the same every time it is asked for.
//!
//! Signs: `net` of an issuer or acquirer is what the day took from its cardholders (debits
//! less their reversals, less credits plus theirs) — what it owes for the day. A merchant's
//! `gross` is the same sum over its transactions, `fees` that sum's share at each leg's rate
//! (a reversal or refund gives its fee back), `net` what it is paid.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::cutover::LinkReconciliation;
use super::{day, Books, EventKind, Role, Totals};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settlement {
    pub business_date: String,
    /// Closed: the figures are final.
    pub closed: bool,
    /// ISO 4217 numeric; amounts are in its minor units.
    pub currency: u16,
    pub issuers: Vec<PartyLine>,
    pub acquirers: Vec<PartyLine>,
    pub merchants: Vec<MerchantLine>,
    pub terminals: Vec<TerminalLine>,
    /// The cut-over's comparison with each upstream link (closed days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciliation: Option<Vec<LinkReconciliation>>,
    /// Coupon purchases (F18) and their fee chain.
    #[serde(default)]
    pub coupons: CouponSettlement,
}

/// The day's coupon purchases (F18): what their cards were charged (`gross`: the credit legs'
/// debits less their reversals and refunds, in this day's events) split along the chain card
/// company → PG → operator → merchant by `[books.coupon_fees_bp]`. Each fee is rounded on
/// the merchant's day total; the merchant is paid the rest, so the chain sums to `gross`
/// exactly. `discounts`: the coupons' discounts of purchases booked this day less those of
/// purchases reversed this day (a merchant-funded discount: it moves no money, shown for the
/// merchant's books).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CouponSettlement {
    pub count: u64,
    pub gross: i64,
    pub discounts: i64,
    pub fees_bp: crate::config::CouponFees,
    /// `card_company`, `pg`, `operator`, `merchant`, in that order.
    pub chain: Vec<ChainLine>,
    pub merchants: Vec<CouponMerchantLine>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChainLine {
    pub party: String,
    pub amount: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CouponMerchantLine {
    pub id: String,
    pub count: u64,
    pub gross: i64,
    pub discounts: i64,
    pub card_company: i64,
    pub pg: i64,
    pub operator: i64,
    pub net: i64,
}

/// An issuer's or acquirer's day, in currency, and in the units exchanged with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartyLine {
    pub id: String,
    pub kind: String,
    /// Debits and credits (their reversals are counted apart).
    pub count: u64,
    pub debits: u64,
    pub credits: u64,
    pub reversals: u64,
    pub credit_reversals: u64,
    pub net: i64,
    pub units: Figures,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Figures {
    pub debits: u64,
    pub credits: u64,
    pub reversals: u64,
    pub credit_reversals: u64,
    pub net: i64,
}

impl Figures {
    fn of(t: &Totals) -> Figures {
        Figures {
            debits: t.debits_amount,
            credits: t.credits_amount,
            reversals: t.debit_reversals_amount,
            credit_reversals: t.credit_reversals_amount,
            net: clamp(t.net()),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MerchantLine {
    pub id: String,
    /// Transactions with money moved on this day.
    pub count: u64,
    pub gross: i64,
    pub fees: i64,
    pub net: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TerminalLine {
    pub id: String,
    pub count: u64,
    pub gross: i64,
}

/// The settlement report of `date`.
pub fn settlement(books: &Books, date: NaiveDate, currency: u16) -> Result<Settlement, String> {
    // Every counterparty has its line, a quiet one too: an operator settles with each.
    let mut in_currency: BTreeMap<String, Totals> = books
        .parties()
        .keys()
        .map(|k| (k.clone(), Totals::default()))
        .collect();
    let mut in_units: BTreeMap<String, Totals> = BTreeMap::new();
    let mut merchants: BTreeMap<String, (MerchantLine, HashSet<u32>)> = BTreeMap::new();
    let mut terminals: BTreeMap<String, (TerminalLine, HashSet<u32>)> = BTreeMap::new();
    let mut coupons = CouponFold::default();
    let mut ids = TxnIds::default();
    let mut failed = None;
    // The day's events one at a time (a busy day holds millions): what is kept is a line
    // per party, merchant and terminal, and the day's transaction ids, each once (each line
    // counts transactions, not events, by their number).
    books.each_event(date, |link, txn, e| {
        let (n, first) = ids.of(txn);
        entry(&mut in_currency, link).add(e.kind, e.amount);
        entry(&mut in_units, link).add(e.kind, e.units);
        let signed = signed(e.kind, e.amount);
        let fee_bp = books.party(link).map_or(0, |p| p.fee_bp);
        let (m, txns) = entry(&mut merchants, &e.merchant);
        m.gross += signed;
        m.fees += fee(signed, fee_bp);
        txns.insert(n);
        let (t, txns) = entry(&mut terminals, &e.terminal);
        t.gross += signed;
        txns.insert(n);
        if failed.is_none() {
            if let Err(err) = coupons.add(books, txn, n, first, &e) {
                failed = Some(err);
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    let (mut issuers, mut acquirers) = (Vec::new(), Vec::new());
    for (link, t) in &in_currency {
        let party = books.party(link);
        let line = PartyLine {
            id: link.clone(),
            kind: party.map_or_else(|| "unknown".into(), |p| p.kind.clone()),
            count: t.debits + t.credits,
            debits: t.debits_amount,
            credits: t.credits_amount,
            reversals: t.debit_reversals_amount,
            credit_reversals: t.credit_reversals_amount,
            net: clamp(t.net()),
            units: in_units.get(link).map(Figures::of).unwrap_or_default(),
        };
        match party.map(|p| p.role) {
            Some(Role::Acquirer) => acquirers.push(line),
            _ => issuers.push(line),
        }
    }
    let merchants = merchants
        .into_iter()
        .map(|(id, (m, txns))| MerchantLine {
            id,
            count: txns.len() as u64,
            net: m.gross - m.fees,
            ..m
        })
        .collect();
    let terminals = terminals
        .into_iter()
        .map(|(id, (t, txns))| TerminalLine {
            id,
            count: txns.len() as u64,
            gross: t.gross,
        })
        .collect();
    let coupons = coupons.settle(books);
    let closed = date <= books.closed_through();
    let reconciliation = books.closing(date)?.map(|c| c.links);
    Ok(Settlement {
        business_date: day::iso(date),
        closed,
        currency,
        issuers,
        acquirers,
        merchants,
        terminals,
        reconciliation,
        coupons,
    })
}

/// A day's transaction ids, each kept once and known by its number after that.
#[derive(Default)]
struct TxnIds(HashMap<String, u32>);

impl TxnIds {
    /// The transaction's number, and whether this is the first time it is seen.
    fn of(&mut self, txn: &str) -> (u32, bool) {
        if let Some(&n) = self.0.get(txn) {
            return (n, false);
        }
        let n = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        self.0.insert(txn.to_string(), n);
        (n, true)
    }
}

/// The coupon section of a day, folded event by event: the events whose transaction is a
/// coupon purchase, or a refund of one.
#[derive(Default)]
struct CouponFold {
    /// Transaction (by its number in [`TxnIds`]) → the coupon purchase it is or refunds,
    /// looked up the first time the transaction is seen; only those that are kept.
    of: HashMap<u32, crate::coupons::CouponUse>,
    lines: BTreeMap<String, (CouponMerchantLine, HashSet<u32>)>,
}

impl CouponFold {
    /// An event of transaction `txn`, number `n` (`first`: its first event of the day).
    fn add(
        &mut self,
        books: &Books,
        txn: &str,
        n: u32,
        first: bool,
        e: &super::Event,
    ) -> Result<(), String> {
        use crate::coupons::use_of;
        let journal = &books.journal;
        if first {
            let mut found = use_of(journal, txn)?;
            if found.is_none() {
                let refunded =
                    crate::switch::followup::record(journal, txn).and_then(|r| r.refund_of);
                if let Some(original) = refunded {
                    found = use_of(journal, &original)?;
                }
            }
            if let Some(paid) = found {
                self.of.insert(n, paid);
            }
        }
        let Some(paid) = self.of.get(&n) else {
            return Ok(());
        };
        let (line, txns) = entry(&mut self.lines, &paid.merchant);
        line.gross += signed(e.kind, e.amount);
        let discount = i64::try_from(paid.discount).unwrap_or(i64::MAX);
        match e.kind {
            EventKind::Debit => line.discounts += discount,
            EventKind::DebitReversal => line.discounts -= discount,
            _ => {}
        }
        txns.insert(n);
        Ok(())
    }

    fn settle(self, books: &Books) -> CouponSettlement {
        let lines = self.lines;
        let bp = books.config.coupon_fees_bp;
        let mut out = CouponSettlement {
            fees_bp: bp,
            ..Default::default()
        };
        let mut chain = [0i64; 4];
        for (id, (mut line, txns)) in lines {
            line.id = id;
            line.count = txns.len() as u64;
            line.card_company = fee(line.gross, bp.card_company);
            line.pg = fee(line.gross, bp.pg);
            line.operator = fee(line.gross, bp.operator);
            line.net = line.gross - line.card_company - line.pg - line.operator;
            for (slot, v) in
                chain
                    .iter_mut()
                    .zip([line.card_company, line.pg, line.operator, line.net])
            {
                *slot += v;
            }
            out.count += line.count;
            out.gross += line.gross;
            out.discounts += line.discounts;
            out.merchants.push(line);
        }
        out.chain = ["card_company", "pg", "operator", "merchant"]
            .into_iter()
            .zip(chain)
            .map(|(party, amount)| ChainLine {
                party: party.into(),
                amount,
            })
            .collect();
        out
    }
}

/// The entry of `key` in `map`, made (default) if it is not there; the key copied only then.
fn entry<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key)
        .unwrap_or_else(|| unreachable!("inserted above"))
}

impl Settlement {
    /// One row per issuer, acquirer, merchant and terminal, the section first.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "business_date,section,id,kind,count,debits,credits,reversals,credit_reversals,gross,fees,net\n",
        );
        let d = &self.business_date;
        for (section, lines) in [("issuer", &self.issuers), ("acquirer", &self.acquirers)] {
            for l in lines {
                out.push_str(&format!(
                    "{d},{section},{},{},{},{},{},{},{},,,{}\n",
                    csv(&l.id),
                    csv(&l.kind),
                    l.count,
                    l.debits,
                    l.credits,
                    l.reversals,
                    l.credit_reversals,
                    l.net
                ));
            }
        }
        for m in &self.merchants {
            out.push_str(&format!(
                "{d},merchant,{},,{},,,,,{},{},{}\n",
                csv(&m.id),
                m.count,
                m.gross,
                m.fees,
                m.net
            ));
        }
        for t in &self.terminals {
            out.push_str(&format!(
                "{d},terminal,{},,{},,,,,{},,\n",
                csv(&t.id),
                t.count,
                t.gross
            ));
        }
        // Coupon purchases per merchant: fees are the chain's three (card company, PG,
        // operator) summed; then the chain itself, one row per party.
        for m in &self.coupons.merchants {
            out.push_str(&format!(
                "{d},coupon_merchant,{},,{},,,,,{},{},{}\n",
                csv(&m.id),
                m.count,
                m.gross,
                m.card_company + m.pg + m.operator,
                m.net
            ));
        }
        for c in &self.coupons.chain {
            out.push_str(&format!(
                "{d},coupon_chain,{},,,,,,,,,{}\n",
                csv(&c.party),
                c.amount
            ));
        }
        out
    }
}

/// A field as CSV: quoted when it holds a comma, a quote or a line break.
fn csv(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// What an event did to the cardholders' side of the day: taken positive.
fn signed(kind: EventKind, amount: u64) -> i64 {
    let a = i64::try_from(amount).unwrap_or(i64::MAX);
    match kind {
        EventKind::Debit | EventKind::CreditReversal => a,
        EventKind::Credit | EventKind::DebitReversal => -a,
    }
}

/// `bp` basis points of `amount`, rounded half away from zero (so a reversal gives back
/// exactly the fee its debit took).
fn fee(amount: i64, bp: u32) -> i64 {
    let product = i128::from(amount) * i128::from(bp);
    let rounded = (product.abs() + 5_000) / 10_000;
    clamp(if product < 0 { -rounded } else { rounded })
}

fn clamp(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reversal_gives_back_exactly_the_fee_its_debit_took() {
        for amount in [1, 49, 50, 12_345, 99_999] {
            assert_eq!(fee(amount, 230) + fee(-amount, 230), 0);
        }
        assert_eq!(fee(10_000, 230), 230);
        assert_eq!(fee(50, 100), 1);
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv("MERCHANT 1"), "MERCHANT 1");
        assert_eq!(csv("A,B"), "\"A,B\"");
        assert_eq!(csv("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
