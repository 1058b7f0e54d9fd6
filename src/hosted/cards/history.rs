//! What a card did, derived from the ledger's entries: its own entries (a sub-account
//! card's are its legs on the master's account), its statement for a day (F15), and what
//! it spent today (the sub-account daily limit).

use chrono::{Local, NaiveDate};
use serde::Serialize;

use super::{day_bounds, Card};
use crate::hosted::{Hosted, HostedError};
use crate::ledger::{Balance, EntryType, LedgerEntry};

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

    /// As [`Hosted::history`], the entries made in `[from, to)` (local days, either end
    /// open): a card's history by period.
    pub fn history_between(
        &self,
        card: &Card,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<Vec<LedgerEntry>, HostedError> {
        let start = from.map(|d| day_bounds(d).0);
        let end = to.map(|d| day_bounds(d).0);
        let entries = match start {
            Some(s) => self.history_since(card, s)?,
            None => self.history(card)?,
        };
        Ok(entries
            .into_iter()
            .filter(|e| start.is_none_or(|s| e.at_ms >= s) && end.is_none_or(|t| e.at_ms < t))
            .collect())
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
    pub async fn statement(&self, card: &Card, day: NaiveDate) -> Result<Statement, HostedError> {
        let (start, end) = day_bounds(day);
        let (opening, entries) = match &card.master {
            // The card's own account: its balance now less what changed since the day began
            // (the day's entries and the ones after it, not the card's whole past).
            None => self.ledger.day(&card.account, start, end).await?,
            // A sub-account card's balance is that of its own legs on the master's account,
            // which no balance in memory keeps: derived from all of them.
            Some(_) => {
                let mut opening = Balance::default();
                let mut entries = Vec::new();
                for e in self.history(card)? {
                    if e.at_ms < start {
                        e.apply_to(&mut opening)?;
                    } else if e.at_ms < end {
                        entries.push(e);
                    }
                }
                (opening, entries)
            }
        };
        let mut closing = opening;
        for e in &entries {
            e.apply_to(&mut closing)?;
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
                EntryType::Credit | EntryType::Post | EntryType::Clawback => 0,
            })
            .sum())
    }
}
