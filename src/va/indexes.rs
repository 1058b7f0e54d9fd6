//! The indexes of `keys.rs` for a store written before them: built once, at the first start
//! that has them, before anything reads them. Index keys are derived from the records (no
//! journal entry of their own), so they are written to the store directly, in batches of a
//! bounded size, synced; `z/indexed` goes last. A crash before it: the next start indexes
//! again (every put is idempotent).

use std::ops::ControlFlow;

use crate::journal::Journal;
use crate::store::{Cf, Store};

use super::keys::{free_key, order_time_key, partner_mismatch_key, INDEXED, MISMATCHES, ORDERS};
use super::{Mismatch, Order, PoolAccount};

/// Index keys written per batch (a store may hold millions of orders).
const BATCH: usize = 10_000;

/// Fails when the store cannot be read or written: the switch does not start on partial
/// indexes (free accounts never handed out, reports short).
pub(super) fn index_records_kept_before(journal: &Journal) -> Result<(), String> {
    let store = journal.store();
    let fail = |e: String| format!("virtual accounts: indexing the records kept before: {e}");
    if store
        .get(Cf::VirtualAccounts, INDEXED)
        .map_err(fail)?
        .is_some()
    {
        return Ok(());
    }
    let n = index_all(store).map_err(fail)?;
    if n > 0 {
        tracing::info!(keys = n, "virtual accounts: records kept before indexed");
    }
    Ok(())
}

/// Every index key the records call for, then the marker. Returns how many keys.
fn index_all(store: &Store) -> Result<usize, String> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut written = 0;
    let mut flush = |keys: &mut Vec<Vec<u8>>, at_least: usize| -> Result<(), String> {
        if keys.len() < at_least.max(1) {
            return Ok(());
        }
        let mut batch = store.batch();
        for k in keys.drain(..) {
            batch.put(Cf::VirtualAccounts, &k, &[])?;
            written += 1;
        }
        store.write(batch, true)
    };
    let mut each = |prefix: &[u8], index: &dyn Fn(&[u8]) -> Option<Vec<u8>>| {
        let mut failed = Ok(());
        store.for_each(Cf::VirtualAccounts, prefix, |_, raw| {
            if let Some(k) = index(raw) {
                keys.push(k);
            }
            failed = flush(&mut keys, BATCH);
            if failed.is_ok() {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        })?;
        failed
    };
    each(ORDERS, &|raw| {
        let o: Order = serde_json::from_slice(raw).ok()?;
        Some(order_time_key(&o.partner, o.created_ms, &o.order))
    })?;
    each(MISMATCHES, &|raw| {
        let m: Mismatch = serde_json::from_slice(raw).ok()?;
        Some(partner_mismatch_key(m.partner.as_deref()?, &m.id))
    })?;
    each(b"a/", &|raw| {
        let pa: PoolAccount = serde_json::from_slice(raw).ok()?;
        (pa.order.is_none() && !pa.retired)
            .then(|| free_key(&pa.partner, &pa.bank, &pa.region, &pa.account))
    })?;
    keys.push(INDEXED.to_vec());
    flush(&mut keys, 1)?;
    Ok(written - 1)
}
