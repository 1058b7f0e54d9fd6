//! The memory backend: each column family an ordered map, all of them behind one lock, so
//! that a batch lands whole (nobody sees half of it) as RocksDB's do. Keys compare as bytes,
//! as RocksDB's default comparator does, so scans come out in the same order (those of
//! the column families ordered by time are sorted as RocksDB orders them).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use super::{Cf, KeyValue};

type Maps = [BTreeMap<Vec<u8>, Vec<u8>>; Cf::ALL.len()];

/// The column families in memory (see [`super::Store::memory`]).
pub struct MemoryStore {
    maps: Mutex<Maps>,
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore {
            maps: Mutex::new(std::array::from_fn(|_| BTreeMap::new())),
        }
    }
}

/// One write of a memory batch.
pub(super) enum MemoryOp {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
}

impl MemoryStore {
    /// A panic while the lock was held may have left a batch half applied: refuse to read
    /// or write past that rather than show a state no commit made.
    fn maps(&self) -> Result<MutexGuard<'_, Maps>, String> {
        self.maps
            .lock()
            .map_err(|_| "memory store lock poisoned".to_string())
    }

    pub(super) fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(self.maps()?[cf.index()].get(key).cloned())
    }

    /// Apply the writes in order, all under one hold of the lock.
    pub(super) fn apply(&self, ops: Vec<MemoryOp>) -> Result<(), String> {
        let mut maps = self.maps()?;
        for op in ops {
            match op {
                MemoryOp::Put(cf, k, v) => {
                    maps[cf.index()].insert(k, v);
                }
                MemoryOp::Delete(cf, k) => {
                    maps[cf.index()].remove(&k);
                }
            }
        }
        Ok(())
    }

    /// A copy of the records between the bounds, in ascending or descending key order:
    /// the caller reads it after the lock is released (a snapshot, and free to write).
    pub(super) fn range(
        &self,
        cf: Cf,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        descending: bool,
    ) -> Result<Vec<KeyValue>, String> {
        if is_empty(lower, upper) {
            return Ok(Vec::new());
        }
        let maps = self.maps()?;
        let found = maps[cf.index()].range::<[u8], _>((lower, upper));
        let copy = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        let mut found: Vec<KeyValue> = found.map(copy).collect();
        if cf.keyed_by_time() {
            // In RocksDB's order for it (scanned whole only: `Store` refuses ranges).
            found.sort_by(|a, b| super::time_then_key(&a.0, &b.0));
        }
        if descending {
            found.reverse();
        }
        Ok(found)
    }
}

/// Bounds no key is within (`BTreeMap::range` panics on them rather than find nothing).
fn is_empty(lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u) | Bound::Included(u)) => {
            l >= u
        }
        _ => false,
    }
}
