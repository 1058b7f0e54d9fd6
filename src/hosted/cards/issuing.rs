//! Issuing cards (F14 prepaid, F15 anonymous): the number a card bureau supplies is
//! checked (program range, Luhn, unused), then the card record, its number's reference and
//! its ledger accounts with the opening balance are written as one synced step.
//! Sub-account cards are created the same way, from `masters`.

use super::calendar::expiry_after;
use super::masters::sub_key;
use super::{now_ms, random_id, Card, CardStatus};
use crate::config::{ProgramConfig, ProgramKind};
use crate::hosted::{card_account, wallet_account, Hosted, HostedError};
use crate::iso8583::Pan;
use crate::journal::Step;
use crate::ledger::NewAccount;
use crate::store::Cf;

// What issuing a card needs: the admin API's body (readable without a switch).
pub use crate::admin_bodies::IssueRequest;

/// The Luhn check digit for the digits before it.
fn luhn_digit(body: &str) -> u8 {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = u32::from(c - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8 // ok: < 10
}

/// A number of digits whose last is its Luhn check digit.
pub fn luhn_valid(digits: &str) -> bool {
    digits.len() >= 2
        && digits.bytes().all(|b| b.is_ascii_digit())
        && luhn_digit(&digits[..digits.len() - 1]) == digits.as_bytes()[digits.len() - 1] - b'0'
}

impl Hosted {
    /// A new card's number: in the program's range, unused, Luhn-valid.
    pub(super) fn check_new_number(
        &self,
        program: &ProgramConfig,
        pan: &Pan,
    ) -> Result<(), HostedError> {
        if !program.owns(pan.expose()) {
            return Err(HostedError::Invalid(format!(
                "card_number {} is outside program {}'s BIN range",
                pan.masked(),
                program.id
            )));
        }
        if !luhn_valid(pan.expose()) {
            return Err(HostedError::Invalid(format!(
                "card_number {} fails the Luhn check",
                pan.masked()
            )));
        }
        if self.card_by_pan(pan)?.is_some() {
            return Err(HostedError::Conflict(format!(
                "card {} exists already",
                pan.masked()
            )));
        }
        Ok(())
    }

    /// Create a card record with its ledger accounts and opening balance, as one synced
    /// step; returns it with its number (shown once).
    pub(super) async fn create_card(
        &self,
        program: &ProgramConfig,
        asked: &str,
        mut card: Card,
        opening: u64,
    ) -> Result<(Card, Pan), HostedError> {
        let pan = Pan::parse(asked.trim().as_bytes())
            .map_err(|e| HostedError::Invalid(format!("card_number: {e}")))?;
        // Under the current key version (the reference names it; older ones are moved by
        // `cyberswitch keys rotate`).
        let card_ref = self.card_key.stored_ref(&pan);
        // Two requests for the same number: the second waits, then finds it taken.
        let _guard = self
            .lock_card(&format!("number:{}", hex::encode(&card_ref)))
            .await;
        self.check_new_number(program, &pan)?;
        card.masked = pan.masked();
        let mut step = Step::new();
        step.put(
            Cf::HostedCardRefs,
            card_ref.clone(),
            card.id.as_bytes().to_vec(),
        );
        if let Some(master) = &card.master {
            step.put(Cf::HostedMasters, sub_key(master, &card.id), Vec::new());
        }
        Self::card_writes(&mut step, &card, "issued")?;
        let opening_leg = format!("issue:{}", card.id);
        let mut accounts = Vec::new();
        if card.master.is_none() {
            let opening = i64::try_from(opening)
                .map_err(|_| HostedError::BadAmount("opening amount too large".into()))?;
            accounts.push(NewAccount {
                id: &card.account,
                unit: &program.unit,
                opening: (opening > 0).then_some((opening, opening_leg.as_str())),
            });
        } else if opening > 0 {
            return Err(HostedError::Invalid(
                "sub-account cards are funded through their master".into(),
            ));
        }
        if let Some(points) = &card.points_account {
            accounts.push(NewAccount {
                id: points,
                unit: "P",
                opening: None,
            });
        }
        self.ledger.open_accounts(step, &accounts).await?;
        Ok((card, pan))
    }

    /// F14/F15: issue a prepaid or anonymous card loaded with a denomination.
    pub async fn issue(&self, req: IssueRequest) -> Result<(Card, Pan), HostedError> {
        let program = self.program(&req.program)?.clone();
        match program.kind {
            ProgramKind::Subaccount => {
                return Err(HostedError::Invalid(
                    "sub-account cards are added under a master account".into(),
                ))
            }
            ProgramKind::Anonymous if req.holder.is_some() => {
                return Err(HostedError::Invalid(
                    "anonymous cards carry no personal data (no holder)".into(),
                ))
            }
            _ => {}
        }
        if !program.denominations.contains(&req.denomination) {
            return Err(HostedError::BadAmount(format!(
                "denomination {} is not one of {:?}",
                req.denomination, program.denominations
            )));
        }
        let id = random_id("c");
        let card = Card {
            account: card_account(&id),
            points_account: program
                .points_issuer
                .as_ref()
                .map(|pi| wallet_account(pi, &id)),
            id,
            program: program.id.clone(),
            kind: program.kind,
            masked: String::new(),
            status: CardStatus::Issued,
            expiry: expiry_after(program.validity_months),
            pin_hash: None,
            pin_failures: 0,
            owner: req.owner,
            holder: req.holder,
            master: None,
            per_txn_limit: None,
            daily_limit: None,
            issued_ms: now_ms(),
        };
        self.create_card(&program, &req.card_number, card, req.denomination)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert!(luhn_valid("6270000000000018"));
        assert!(luhn_valid("4111111111111111"));
        assert!(!luhn_valid("6270000000000019"));
        assert_eq!(luhn_digit("627000000000001"), 8);
    }
}
