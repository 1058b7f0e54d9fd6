//! Pools: the bank accounts a partner's orders are assigned from, per bank and region.

use crate::config::{valid_code, valid_id};
use crate::journal::{Entry, EntryKind, Step};
use crate::store::Cf;

use super::keys::{acct_key, free_key, member_key};
use super::{to_json, OrderStatus, PoolAccount, VaError, VirtualAccounts, ACCOUNT_MAX};

impl VirtualAccounts {
    /// Add accounts to a pool (creating it). Accounts already in this pool are left as they
    /// are; an account of the same bank in another pool is refused (field 103 must name one
    /// pool's account); a retired one comes back.
    pub async fn pool_add(
        &self,
        partner: &str,
        bank: &str,
        region: &str,
        accounts: &[String],
        who: &str,
    ) -> Result<serde_json::Value, VaError> {
        check_pool(partner, bank, region)?;
        if accounts.is_empty() || accounts.len() > 10_000 {
            return Err(VaError::Invalid("give 1 to 10,000 accounts".into()));
        }
        let _one = self.lock.lock().await;
        let now = self.now_ms();
        let mut step = Step::new();
        let (mut added, mut already) = (Vec::new(), Vec::new());
        let mut seen = std::collections::HashSet::new();
        for a in accounts {
            if !valid_id(a, ACCOUNT_MAX) {
                return Err(VaError::Invalid(format!(
                    "account {a:?}: 1 to {ACCOUNT_MAX} letters, digits, '-' or '_'"
                )));
            }
            if !seen.insert(a.as_str()) {
                continue;
            }
            match self.account(bank, a)? {
                // Another pool's account, unless retired and freed (then it moves here).
                Some(pa)
                    if (pa.partner != partner || pa.region != region)
                        && (!pa.retired || pa.order.is_some()) =>
                {
                    return Err(VaError::Conflict(format!(
                        "account {a} of bank {bank} is in another pool"
                    )));
                }
                Some(pa) if pa.partner != partner || pa.region != region => {}
                Some(pa) if !pa.retired => {
                    already.push(a.clone());
                    continue;
                }
                Some(pa) if pa.order.is_some() => {
                    // Retiring and still assigned: it stays in the pool after all.
                    let back = PoolAccount {
                        retired: false,
                        ..pa
                    };
                    step.put(Cf::VirtualAccounts, acct_key(bank, a), to_json(&back));
                    added.push(a.clone());
                    continue;
                }
                _ => {}
            }
            let pa = PoolAccount {
                partner: partner.into(),
                bank: bank.into(),
                region: region.into(),
                account: a.clone(),
                order: None,
                retired: false,
                added_ms: now,
            };
            step.put(Cf::VirtualAccounts, acct_key(bank, a), to_json(&pa));
            step.put(
                Cf::VirtualAccounts,
                member_key(partner, bank, region, a),
                Vec::new(),
            );
            step.put(
                Cf::VirtualAccounts,
                free_key(partner, bank, region, a),
                Vec::new(),
            );
            added.push(a.clone());
        }
        step.append(Entry::new(
            EntryKind::Txn,
            &format!("va/pool/{partner}/{bank}/{region}"),
            "va",
            format!("{} accounts added by {who}", added.len()),
        ));
        step.synced();
        self.journal.commit(step).await?;
        Ok(serde_json::json!({
            "partner": partner, "bank": bank, "region": region,
            "added": added, "already": already,
        }))
    }

    /// Retire accounts of a pool: a free one leaves it now, an assigned one once its order
    /// is paid or expires.
    pub async fn pool_retire(
        &self,
        partner: &str,
        bank: &str,
        region: &str,
        accounts: &[String],
        who: &str,
    ) -> Result<serde_json::Value, VaError> {
        check_pool(partner, bank, region)?;
        let _one = self.lock.lock().await;
        let mut step = Step::new();
        let (mut retired, mut retiring) = (Vec::new(), Vec::new());
        for a in accounts {
            let pa = match self.account(bank, a)? {
                Some(pa) if pa.partner == partner && pa.region == region && !pa.retired => pa,
                _ => {
                    return Err(VaError::NotFound(format!(
                        "account {a} is not in pool {partner}/{bank}/{region}"
                    )))
                }
            };
            let assigned = pa.order.is_some();
            let pa = PoolAccount {
                retired: true,
                ..pa
            };
            step.put(Cf::VirtualAccounts, acct_key(bank, a), to_json(&pa));
            if assigned {
                retiring.push(a.clone());
            } else {
                step.delete(Cf::VirtualAccounts, member_key(partner, bank, region, a));
                step.delete(Cf::VirtualAccounts, free_key(partner, bank, region, a));
                retired.push(a.clone());
            }
        }
        step.append(Entry::new(
            EntryKind::Txn,
            &format!("va/pool/{partner}/{bank}/{region}"),
            "va",
            format!(
                "{} accounts retired, {} retiring once freed, by {who}",
                retired.len(),
                retiring.len()
            ),
        ));
        step.synced();
        self.journal.commit(step).await?;
        Ok(serde_json::json!({"retired": retired, "retiring": retiring}))
    }

    /// The pools (of one partner), each with its accounts and their state.
    pub fn pools(&self, partner: Option<&str>) -> Result<serde_json::Value, VaError> {
        let prefix = match partner {
            Some(p) => format!("p/{p}/"),
            None => "p/".into(),
        };
        let now = self.now_ms();
        let mut pools: std::collections::BTreeMap<
            (String, String, String),
            Vec<serde_json::Value>,
        > = Default::default();
        for (k, _) in self
            .journal
            .scan(Cf::VirtualAccounts, prefix.as_bytes())
            .map_err(VaError::Storage)?
        {
            let text = String::from_utf8_lossy(&k).into_owned();
            let parts: Vec<&str> = text.splitn(5, '/').collect();
            let [_, partner, bank, region, account] = parts[..] else {
                continue;
            };
            let Some(pa) = self.account(bank, account)? else {
                continue;
            };
            // An assignment whose order has expired is free as of now.
            let mut state = pa.state();
            if let Some(o) = &pa.order {
                if self
                    .order_stored(o)?
                    .is_none_or(|o| o.status_at(now) != OrderStatus::Open)
                {
                    state = if pa.retired { "retired" } else { "free" };
                }
            }
            pools
                .entry((partner.into(), bank.into(), region.into()))
                .or_default()
                .push(serde_json::json!({"account": account, "state": state, "order": pa.order}));
        }
        let list: Vec<serde_json::Value> = pools
            .into_iter()
            .map(|((partner, bank, region), accounts)| {
                let free = accounts.iter().filter(|a| a["state"] == "free").count();
                serde_json::json!({
                    "partner": partner, "bank": bank, "region": region,
                    "size": accounts.len(), "free": free, "accounts": accounts,
                })
            })
            .collect();
        Ok(serde_json::json!({ "pools": list }))
    }
}

/// A pool's partner, bank and region are codes (the key layout relies on them having no `/`).
pub(super) fn check_pool(partner: &str, bank: &str, region: &str) -> Result<(), VaError> {
    for (name, v) in [("partner", partner), ("bank", bank), ("region", region)] {
        if !valid_code(v) {
            return Err(VaError::Invalid(format!(
                "{name}: 1 to 16 letters, digits, '-' or '_'"
            )));
        }
    }
    Ok(())
}
