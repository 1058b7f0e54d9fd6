//! Master accounts and their sub-account cards (F16): a master holds the money, its
//! sub-account cards spend from it within their own per-transaction and daily limits.
//! The master's cards are found through an index stored next to its record.

use serde::{Deserialize, Serialize};

use super::calendar::expiry_after;
use super::{hash, now_ms, random_id, Card, CardStatus};
use crate::config::{ProgramConfig, ProgramKind};
use crate::hosted::{master_account, storage, Hosted, HostedError};
use crate::iso8583::Pan;
use crate::journal::{Entry, EntryKind, Journal, Step};
use crate::ledger::{Balance, LedgerError, NewAccount};
use crate::store::Cf;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Master {
    pub id: String,
    pub owner: Option<String>,
    pub unit: String,
    pub created_ms: i64,
}

// A sub-account card under a master: the admin API's body (readable without a switch).
pub use crate::admin_bodies::SubRequest;

impl Hosted {
    /// F16: a master account.
    pub async fn create_master(
        &self,
        id: Option<String>,
        owner: Option<String>,
    ) -> Result<Master, HostedError> {
        let id = id.unwrap_or_else(|| random_id("m"));
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(HostedError::Invalid(
                "master ids are 1–64 letters, digits, - or _".into(),
            ));
        }
        if self
            .journal
            .get(Cf::HostedMasters, id.as_bytes())
            .map_err(storage)?
            .is_some()
        {
            return Err(HostedError::Conflict(format!("master {id} exists")));
        }
        let unit = self.subaccount_program()?.unit.clone();
        let m = Master {
            id: id.clone(),
            owner,
            unit,
            created_ms: now_ms(),
        };
        let account = master_account(&id);
        let mut step = Step::new();
        step.put(
            Cf::HostedMasters,
            id.as_bytes(),
            serde_json::to_vec(&m).map_err(storage)?,
        );
        step.append(Entry::new(
            EntryKind::Ledger,
            &id,
            &account,
            "master account created".into(),
        ));
        // The master and its account in one step; a concurrent twin finds the account
        // taken under the ledger's lock and is refused.
        let opened = NewAccount {
            id: &account,
            unit: &m.unit,
            opening: None,
        };
        self.ledger
            .open_accounts(step, &[opened])
            .await
            .map_err(|e| match e {
                LedgerError::AccountExists(_) => {
                    HostedError::Conflict(format!("master {id} exists"))
                }
                e => e.into(),
            })?;
        Ok(m)
    }

    pub fn master(&self, id: &str) -> Result<Master, HostedError> {
        let raw = self
            .journal
            .get(Cf::HostedMasters, id.as_bytes())
            .map_err(storage)?
            .ok_or_else(|| HostedError::NotFound(format!("master {id}")))?;
        serde_json::from_slice(&raw).map_err(storage)
    }

    /// Money into a master account. Idempotent by `leg`.
    pub async fn fund_master(
        &self,
        id: &str,
        amount: u64,
        leg: &str,
    ) -> Result<Balance, HostedError> {
        self.master(id)?;
        let amount =
            i64::try_from(amount).map_err(|_| HostedError::BadAmount("amount too large".into()))?;
        Ok(self.ledger.credit(&master_account(id), amount, leg).await?)
    }

    /// F16: a sub-account card under a master, active at once with its credentials.
    pub async fn add_sub(
        &self,
        master_id: &str,
        req: SubRequest,
        owner: Option<String>,
    ) -> Result<(Card, Pan), HostedError> {
        let master = self.master(master_id)?;
        let program = self.subaccount_program()?.clone();
        if req.per_txn_limit == 0 || req.daily_limit < req.per_txn_limit {
            return Err(HostedError::Invalid(
                "per_txn_limit must be at least 1 and daily_limit at least per_txn_limit".into(),
            ));
        }
        // The card number first: Argon2 is the expensive part, and a request refused anyway
        // (a bad or taken number) must not cost it (SPEC §10).
        let pan = Pan::parse(req.card_number.trim().as_bytes())
            .map_err(|e| HostedError::Invalid(format!("card_number: {e}")))?;
        self.check_new_number(&program, &pan)?;
        let pin_hash = match &req.pin {
            Some(p) => Some(hash(p).await?),
            None if program.pin_required => {
                return Err(HostedError::Invalid(format!(
                    "program {} needs a PIN",
                    program.id
                )))
            }
            None => None,
        };
        let id = random_id("s");
        let card = Card {
            id,
            program: program.id.clone(),
            kind: ProgramKind::Subaccount,
            masked: String::new(),
            status: CardStatus::Active,
            expiry: expiry_after(program.validity_months),
            pin_hash,
            pin_failures: 0,
            account: master_account(&master.id),
            points_account: None,
            owner,
            holder: req.holder,
            master: Some(master.id),
            per_txn_limit: Some(req.per_txn_limit),
            daily_limit: Some(req.daily_limit),
            issued_ms: now_ms(),
        };
        self.create_card(&program, &req.card_number, card, 0).await
    }

    fn subaccount_program(&self) -> Result<&ProgramConfig, HostedError> {
        self.config
            .hosted
            .programs
            .iter()
            .find(|p| p.kind == ProgramKind::Subaccount)
            .ok_or_else(|| HostedError::Invalid("no sub-account program is configured".into()))
    }

    /// The sub-account cards of a master, from its index (not a scan of every card).
    pub fn subs(&self, master_id: &str) -> Result<Vec<Card>, HostedError> {
        self.journal
            .scan(Cf::HostedMasters, &sub_key(master_id, ""))
            .map_err(storage)?
            .into_iter()
            .map(|(k, _)| {
                let id = k.get(master_id.len() + 1..).unwrap_or_default();
                self.card(&String::from_utf8_lossy(id))
            })
            .collect()
    }
}

/// The index entry of a sub-account card, next to its master's record: `master \0 card`
/// (master ids have no zero byte, so no entry is taken for a master).
pub(super) fn sub_key(master_id: &str, card_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(master_id.len() + 1 + card_id.len());
    k.extend_from_slice(master_id.as_bytes());
    k.push(0);
    k.extend_from_slice(card_id.as_bytes());
    k
}

/// Says the sub-account index covers every card (data written before it existed included).
const SUBS_INDEXED: &[u8] = b"\0subs-indexed";

/// Build the sub-account index from the cards once, for data older than the index. Returns
/// how many cards it indexed.
pub(crate) async fn index_subs(journal: &Journal) -> Result<usize, String> {
    if journal.get(Cf::HostedMasters, SUBS_INDEXED)?.is_some() {
        return Ok(0);
    }
    let mut step = Step::new();
    let mut indexed = 0;
    // One card at a time: the cards are not all held in memory at once. A damaged record
    // is reported and left out (its card's own requests report it too), not a reason to
    // refuse to start.
    crate::store::for_each(journal.store(), Cf::HostedCards, b"", |k, v| {
        match serde_json::from_slice::<Card>(v) {
            Ok(card) => {
                if let Some(master) = &card.master {
                    step.put(Cf::HostedMasters, sub_key(master, &card.id), Vec::new());
                    indexed += 1;
                }
            }
            Err(e) => tracing::error!(
                card = %String::from_utf8_lossy(k),
                error = %e,
                "card record does not parse: not indexed"
            ),
        }
        std::ops::ControlFlow::Continue(())
    })?;
    step.put(Cf::HostedMasters, SUBS_INDEXED, Vec::new());
    step.synced();
    journal.commit(step).await.map_err(|e| e.to_string())?;
    Ok(indexed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(id: &str, master: Option<&str>) -> Card {
        Card {
            id: id.into(),
            program: "P".into(),
            kind: ProgramKind::Subaccount,
            masked: "627200******0016".into(),
            status: CardStatus::Active,
            expiry: "3012".into(),
            pin_hash: None,
            pin_failures: 0,
            account: "acct".into(),
            points_account: None,
            owner: None,
            holder: None,
            master: master.map(String::from),
            per_txn_limit: None,
            daily_limit: None,
            issued_ms: 0,
        }
    }

    /// Data written before the sub-account index existed is indexed once, at open.
    #[tokio::test]
    async fn sub_account_cards_written_before_the_index_are_indexed_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open(dir.path()).unwrap();
        let journal =
            Journal::open(db, crate::journal::Sealer::from_card_key(&[7; 32]), 64).unwrap();
        let mut step = Step::new();
        for c in [
            card("s1", Some("m-1")),
            card("s2", Some("m-2")),
            card("c3", None),
        ] {
            step.put(
                Cf::HostedCards,
                c.id.as_bytes(),
                serde_json::to_vec(&c).unwrap(),
            );
        }
        step.put(Cf::HostedMasters, "m-1", b"{}".to_vec());
        journal.commit(step).await.unwrap();
        assert_eq!(index_subs(&journal).await.unwrap(), 2);
        assert_eq!(index_subs(&journal).await.unwrap(), 0, "once");
        let of_m1 = journal
            .scan(Cf::HostedMasters, &sub_key("m-1", ""))
            .unwrap();
        assert_eq!(of_m1.len(), 1);
        assert_eq!(of_m1[0].0, sub_key("m-1", "s1"));
        assert!(journal.get(Cf::HostedMasters, b"m-1").unwrap().is_some());
    }
}
