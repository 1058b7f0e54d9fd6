//! The figures a reconciliation (0500/0510) compares: counts and amounts of credits, debits
//! and their reversals, as ISO 8583:1987 carries them (74–77 counts, 86–89 amounts, 97 net).

use serde::{Deserialize, Serialize};

use crate::iso8583::OwnedMessage;

/// Which way an event moved a cardholder's money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Money taken (a purchase leg, an authorization).
    Debit,
    /// Money given (a refund leg, a recharge).
    Credit,
    /// A debit undone, in whole or (a completion for less) in part.
    DebitReversal,
    /// A credit undone.
    CreditReversal,
}

/// Counts and amounts of one party's day, in the units of the messages exchanged with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub credits: u64,
    pub credits_amount: u64,
    pub credit_reversals: u64,
    pub credit_reversals_amount: u64,
    pub debits: u64,
    pub debits_amount: u64,
    pub debit_reversals: u64,
    pub debit_reversals_amount: u64,
}

impl Totals {
    pub fn add(&mut self, kind: EventKind, amount: u64) {
        let (count, sum) = match kind {
            EventKind::Credit => (&mut self.credits, &mut self.credits_amount),
            EventKind::CreditReversal => (
                &mut self.credit_reversals,
                &mut self.credit_reversals_amount,
            ),
            EventKind::Debit => (&mut self.debits, &mut self.debits_amount),
            EventKind::DebitReversal => {
                (&mut self.debit_reversals, &mut self.debit_reversals_amount)
            }
        };
        *count = count.saturating_add(1);
        *sum = sum.saturating_add(amount);
    }

    /// What the day took from cardholders, net: debits less their reversals, less credits
    /// plus their reversals. Positive: the party owes it (an issuer to the merchants).
    pub fn net(&self) -> i128 {
        i128::from(self.debits_amount)
            - i128::from(self.debit_reversals_amount)
            - i128::from(self.credits_amount)
            + i128::from(self.credit_reversals_amount)
    }

    /// Fields 74–77, 86–89 and 97 (`D` when the day took money, `C` when it gave).
    pub fn set_fields(&self, m: &mut OwnedMessage) {
        m.set_number(74, self.credits, 10)
            .set_number(75, self.credit_reversals, 10)
            .set_number(76, self.debits, 10)
            .set_number(77, self.debit_reversals, 10)
            .set_number(86, self.credits_amount, 16)
            .set_number(87, self.credit_reversals_amount, 16)
            .set_number(88, self.debits_amount, 16)
            .set_number(89, self.debit_reversals_amount, 16);
        let net = self.net();
        let sign = if net > 0 { 'D' } else { 'C' };
        let magnitude = net.unsigned_abs().min(9_999_999_999_999_999);
        m.set(97, format!("{sign}{magnitude:016}").as_bytes());
    }

    /// The figures of a 0500 or 0510, read through `get` (field number → text); `None` when
    /// any of the eight is missing or not a number.
    pub fn from_fields(get: impl Fn(u16) -> Option<String>) -> Option<Totals> {
        let n = |f: u16| get(f)?.trim().parse::<u64>().ok();
        Some(Totals {
            credits: n(74)?,
            credit_reversals: n(75)?,
            debits: n(76)?,
            debit_reversals: n(77)?,
            credits_amount: n(86)?,
            credit_reversals_amount: n(87)?,
            debits_amount: n(88)?,
            debit_reversals_amount: n(89)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::Mti;

    #[test]
    fn totals_travel_in_fields_74_to_97_and_come_back_equal() {
        let mut t = Totals::default();
        t.add(EventKind::Debit, 12_000);
        t.add(EventKind::Debit, 500);
        t.add(EventKind::DebitReversal, 500);
        t.add(EventKind::Credit, 2_000);
        let mut m = OwnedMessage::new(Mti(*b"0500"));
        t.set_fields(&mut m);
        assert_eq!(m.get(97), Some(&b"D0000000000010000"[..]));
        let back =
            Totals::from_fields(|f| m.get(f).map(|v| String::from_utf8_lossy(v).into_owned()));
        assert_eq!(back, Some(t));
        assert_eq!(t.net(), 10_000);
        assert_eq!(Totals::from_fields(|_| None), None);
    }
}
