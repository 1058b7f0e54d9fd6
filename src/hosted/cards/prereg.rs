//! Pre-registered purchases (F15): a partner registers a purchase for a card in advance
//! (merchant, amount, deadline), and an authorization naming it must match it. The card
//! host marks it used in the same step as the hold it allowed.

use serde::{Deserialize, Serialize};

use super::{now_ms, random_id};
use crate::hosted::{storage, Hosted, HostedError};
use crate::journal::{Entry, EntryKind, Step};
use crate::store::Cf;

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

impl Hosted {
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
}
