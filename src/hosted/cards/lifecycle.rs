//! A card's life after issue, each change made under the card's lock and journaled:
//! activation (with its PIN), suspension, resumption and closure, a new expiry, and an
//! operator's reset of wrong PIN tries.

use super::{hash, Card, CardStatus};
use crate::hosted::{Hosted, HostedError};
use crate::journal::Step;

impl Hosted {
    /// Activate an issued card, with its PIN (required where the program asks for PINs).
    pub async fn activate(&self, id: &str, pin: Option<&str>) -> Result<Card, HostedError> {
        let _guard = self.lock_card(id).await;
        let mut card = self.card(id)?;
        if card.status != CardStatus::Issued {
            return Err(HostedError::Status(card.status.as_str()));
        }
        let program = self.program(&card.program)?;
        card.pin_hash = match pin {
            Some(p) => Some(hash(p).await?),
            None if program.pin_required => {
                return Err(HostedError::Invalid(format!(
                    "program {} needs a PIN to activate",
                    program.id
                )))
            }
            None => None,
        };
        card.status = CardStatus::Active;
        self.save_card(Step::new(), &card, "activated").await?;
        Ok(card)
    }

    /// Suspend, resume or close a card (closing does not refund: see [`Hosted::refund`]).
    pub async fn set_status(&self, id: &str, status: CardStatus) -> Result<Card, HostedError> {
        let _guard = self.lock_card(id).await;
        let mut card = self.card(id)?;
        let allowed = matches!(
            (card.status, status),
            (CardStatus::Active, CardStatus::Suspended)
                | (CardStatus::Suspended, CardStatus::Active)
                | (
                    CardStatus::Issued | CardStatus::Active | CardStatus::Suspended,
                    CardStatus::Closed
                )
        );
        if !allowed {
            return Err(HostedError::Status(card.status.as_str()));
        }
        card.status = status;
        self.save_card(Step::new(), &card, status.as_str()).await?;
        Ok(card)
    }

    /// Change a card's expiry (`YYMM`): an operator extends or shortens a card's life.
    pub async fn set_expiry(&self, id: &str, expiry: &str) -> Result<Card, HostedError> {
        let month = expiry.get(2..).and_then(|m| m.parse::<u32>().ok());
        if expiry.len() != 4
            || !expiry.bytes().all(|b| b.is_ascii_digit())
            || !month.is_some_and(|m| (1..=12).contains(&m))
        {
            return Err(HostedError::Invalid(format!(
                "expiry {expiry:?} is not YYMM"
            )));
        }
        let _guard = self.lock_card(id).await;
        let mut card = self.card(id)?;
        card.expiry = expiry.to_string();
        self.save_card(Step::new(), &card, &format!("expiry set to {expiry}"))
            .await?;
        Ok(card)
    }

    /// Forget wrong PIN tries (an operator unlocks a card).
    pub async fn reset_pin_tries(&self, id: &str) -> Result<Card, HostedError> {
        let _guard = self.lock_card(id).await;
        let mut card = self.card(id)?;
        card.pin_failures = 0;
        self.save_card(Step::new(), &card, "PIN tries reset")
            .await?;
        Ok(card)
    }
}
