//! The storage seam: [`Store`], one handle over either backend, and [`Batch`], the writes
//! that land together.
//!
//! RocksDB is what the switch runs on. The memory backend holds the same column families as
//! ordered maps, so that the flows can be tested deterministically in milliseconds, without
//! a disk. Dispatch is a `match` on the backend at each call (no boxing, no dynamic calls):
//! the RocksDB path costs what calling RocksDB directly did.

use std::ops::{Bound, ControlFlow};
use std::sync::Arc;

use rocksdb::{ColumnFamily, WriteBatch, WriteOptions, DB};

use super::memory::{MemoryOp, MemoryStore};
use super::{handle, Cf, KeyValue};

/// A handle on the switch's storage. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub enum Store {
    /// The RocksDB database of a data directory ([`super::open_with`]).
    Rocks(Arc<DB>),
    /// Ordered maps in memory, gone with the last handle ([`Store::memory`]).
    Memory(Arc<MemoryStore>),
}

impl Store {
    /// An empty store in memory: for tests. What is written is kept as long as a handle is
    /// (a journal opened again on a clone sees it), and never reaches a disk.
    pub fn memory() -> Store {
        Store::Memory(Arc::new(MemoryStore::default()))
    }

    /// The RocksDB database, for the tools only RocksDB has (retention's range deletes,
    /// compactions, size properties). `None` for a memory store: such tools do nothing
    /// there.
    pub fn rocks(&self) -> Option<&Arc<DB>> {
        match self {
            Store::Rocks(db) => Some(db),
            Store::Memory(_) => None,
        }
    }

    /// Read one value.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self {
            Store::Rocks(db) => db.get_cf(handle(db, cf)?, key).map_err(|e| e.to_string()),
            Store::Memory(m) => m.get(cf, key),
        }
    }

    /// Read one value in place: `read` sees the stored bytes without them being copied out
    /// first (RocksDB pins them), for look-ups on the request path that only decode.
    pub fn get_with<R>(
        &self,
        cf: Cf,
        key: &[u8],
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, String> {
        match self {
            Store::Rocks(db) => Ok(db
                .get_pinned_cf(handle(db, cf)?, key)
                .map_err(|e| e.to_string())?
                .map(|v| read(&v))),
            Store::Memory(m) => Ok(m.get(cf, key)?.map(|v| read(&v))),
        }
    }

    /// An empty batch of writes for [`Store::write`].
    pub fn batch(&self) -> Batch<'_> {
        let ops = match self {
            Store::Rocks(db) => Ops::Rocks {
                db,
                batch: WriteBatch::default(),
                handles: [None; Cf::ALL.len()],
            },
            Store::Memory(m) => Ops::Memory {
                store: m,
                ops: Vec::new(),
            },
        };
        Batch { ops }
    }

    /// Apply a batch made by this store's [`Store::batch`]: all its writes land, or none.
    /// `sync`: on disk (RocksDB's log fsynced) before this returns; a memory store has
    /// nothing to sync.
    pub fn write(&self, batch: Batch<'_>, sync: bool) -> Result<(), String> {
        self.write_with(batch, sync, true)
    }

    /// As [`Store::write`]; `wal: false` writes the memtables only (the benchmark-only null
    /// switch, `[bench] durability = "off"`: nothing survives a crash).
    pub fn write_with(&self, batch: Batch<'_>, sync: bool, wal: bool) -> Result<(), String> {
        match (self, batch.ops) {
            (
                Store::Rocks(db),
                Ops::Rocks {
                    db: made_by, batch, ..
                },
            ) if std::ptr::eq(&**db, made_by) => {
                let mut opts = WriteOptions::default();
                opts.set_sync(sync && wal);
                opts.disable_wal(!wal);
                db.write_opt(batch, &opts).map_err(|e| e.to_string())
            }
            (
                Store::Memory(m),
                Ops::Memory {
                    store: made_by,
                    ops,
                },
            ) if std::ptr::eq(&**m, made_by) => m.apply(ops),
            _ => Err("a batch made by another store".into()),
        }
    }

    /// Visit every (key, value) of a column family whose key starts with `prefix`, in key
    /// order, until `visit` says stop: for column families too large to hold in memory at
    /// once. RocksDB reads one record at a time from a snapshot; the memory backend copies
    /// the matching records out first (also a snapshot), so `visit` may write to the store.
    pub fn for_each(
        &self,
        cf: Cf,
        prefix: &[u8],
        visit: impl FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), String> {
        self.ascending(cf, prefix, prefix_end(prefix).as_deref(), visit)
    }

    /// As [`Store::for_each`], for every key from `start` on (`start` included).
    pub fn for_each_from(
        &self,
        cf: Cf,
        start: &[u8],
        visit: impl FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), String> {
        self.ascending(cf, start, None, visit)
    }

    /// As [`Store::for_each`], from `start` (under `prefix`, included) on: the rest of a
    /// range, as a listing resumed after its last key or a period's first record.
    pub fn for_each_under(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        visit: impl FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), String> {
        let from = if start > prefix { start } else { prefix };
        self.ascending(cf, from, prefix_end(prefix).as_deref(), visit)
    }

    /// As [`Store::for_each`], newest key first: the last records of a sequence without
    /// reading those before them.
    pub fn for_each_rev(
        &self,
        cf: Cf,
        prefix: &[u8],
        visit: impl FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), String> {
        self.descending(cf, prefix, prefix_end(prefix).as_deref(), visit)
    }

    /// Every (key, value) of a column family whose key starts with `prefix`, in key order.
    pub fn scan(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<KeyValue>, String> {
        let mut out = Vec::new();
        self.for_each(cf, prefix, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// The greatest key of a column family, if it has any.
    pub fn last_key(&self, cf: Cf) -> Result<Option<Vec<u8>>, String> {
        let mut last = None;
        self.for_each_rev(cf, b"", |k, _| {
            last = Some(k.to_vec());
            ControlFlow::Break(())
        })?;
        Ok(last)
    }

    /// For each prefix, the greatest key of `cf` starting with it (none: no key does): one
    /// iterator for them all, a look-up each, where [`Store::for_each_rev`] per prefix
    /// would open an iterator each (most of the cost when the prefixes are many).
    pub fn last_keys(&self, cf: Cf, prefixes: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, String> {
        if cf.keyed_by_time() {
            return Err(format!(
                "column family {} is ordered by time: no last key by prefix",
                cf.name()
            ));
        }
        let db = match self {
            Store::Rocks(db) => db,
            Store::Memory(_) => {
                let mut out = Vec::with_capacity(prefixes.len());
                for prefix in prefixes {
                    let mut last = None;
                    self.for_each_rev(cf, prefix, |k, _| {
                        last = Some(k.to_vec());
                        ControlFlow::Break(())
                    })?;
                    out.push(last);
                }
                return Ok(out);
            }
        };
        let mut it = db.raw_iterator_cf(handle(db, cf)?);
        let mut out = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            match prefix_end(prefix) {
                Some(end) => {
                    it.seek_for_prev(&end);
                    if it.key() == Some(end.as_slice()) {
                        it.prev();
                    }
                }
                None => it.seek_to_last(),
            }
            // A seek clears the iterator's error: each one is checked.
            it.status().map_err(|e| e.to_string())?;
            out.push(
                it.key()
                    .filter(|k| k.starts_with(prefix))
                    .map(<[u8]>::to_vec),
            );
        }
        Ok(out)
    }

    /// Visit the keys in `[from, to)` (`to`: `None`, no end) in ascending order.
    fn ascending(
        &self,
        cf: Cf,
        from: &[u8],
        to: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), String> {
        whole_if_by_time(cf, from, to)?;
        let db = match self {
            Store::Rocks(db) => db,
            Store::Memory(m) => {
                let found = m.range(cf, Bound::Included(from), upper(to), false)?;
                visit_copies(found, visit);
                return Ok(());
            }
        };
        let mut it = db.raw_iterator_cf(handle(db, cf)?);
        it.seek(from);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if to.is_some_and(|to| k >= to) || visit(k, v).is_break() {
                break;
            }
            it.next();
        }
        it.status().map_err(|e| e.to_string())
    }

    /// Visit the keys in `[from, to)` (`to`: `None`, no end) in descending order.
    fn descending(
        &self,
        cf: Cf,
        from: &[u8],
        to: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<(), String> {
        whole_if_by_time(cf, from, to)?;
        let db = match self {
            Store::Rocks(db) => db,
            Store::Memory(m) => {
                let found = m.range(cf, Bound::Included(from), upper(to), true)?;
                visit_copies(found, visit);
                return Ok(());
            }
        };
        let mut it = db.raw_iterator_cf(handle(db, cf)?);
        match to {
            Some(to) => {
                // The last key at or before `to`; `to` itself is not in the range.
                it.seek_for_prev(to);
                if it.key() == Some(to) {
                    it.prev();
                }
            }
            None => it.seek_to_last(),
        }
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k < from || visit(k, v).is_break() {
                break;
            }
            it.prev();
        }
        it.status().map_err(|e| e.to_string())
    }
}

fn upper(to: Option<&[u8]>) -> Bound<&[u8]> {
    to.map_or(Bound::Unbounded, Bound::Excluded)
}

fn visit_copies(found: Vec<KeyValue>, mut visit: impl FnMut(&[u8], &[u8]) -> ControlFlow<()>) {
    for (k, v) in &found {
        if visit(k, v).is_break() {
            break;
        }
    }
}

/// The first key past every key starting with `prefix`; `None` when there is none (the
/// prefix is empty or all `0xff`): the keys with the prefix are those in `[prefix, end)`.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Writes that land together or not at all ([`Store::write`]).
pub struct Batch<'a> {
    ops: Ops<'a>,
}

enum Ops<'a> {
    /// Written into RocksDB's own batch as they come (no copy kept on the side).
    Rocks {
        db: &'a DB,
        batch: WriteBatch,
        /// Column family handles resolved once per batch: RocksDB finds one by its name (a
        /// map of strings), and a group of steps puts about ten keys per transaction.
        handles: [Option<&'a ColumnFamily>; Cf::ALL.len()],
    },
    Memory {
        store: &'a MemoryStore,
        ops: Vec<MemoryOp>,
    },
}

/// `cf`'s handle, resolved the first time this batch needs it.
fn cached<'a>(
    db: &'a DB,
    handles: &mut [Option<&'a ColumnFamily>; Cf::ALL.len()],
    cf: Cf,
) -> Result<&'a ColumnFamily, String> {
    let slot = handles
        .get_mut(cf.index())
        .ok_or_else(|| format!("column family {} out of range", cf.name()))?;
    match slot {
        Some(h) => Ok(h),
        None => Ok(*slot.insert(handle(db, cf)?)),
    }
}

impl Batch<'_> {
    pub fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) -> Result<(), String> {
        match &mut self.ops {
            Ops::Rocks { db, batch, handles } => batch.put_cf(cached(db, handles, cf)?, key, value),
            Ops::Memory { ops, .. } => ops.push(MemoryOp::Put(cf, key.to_vec(), value.to_vec())),
        }
        Ok(())
    }

    pub fn delete(&mut self, cf: Cf, key: &[u8]) -> Result<(), String> {
        match &mut self.ops {
            Ops::Rocks { db, batch, handles } => batch.delete_cf(cached(db, handles, cf)?, key),
            Ops::Memory { ops, .. } => ops.push(MemoryOp::Delete(cf, key.to_vec())),
        }
        Ok(())
    }
}

/// A column family ordered by time ([`Cf::keyed_by_time`]) holds no key range in byte order:
/// it is read by key or scanned whole.
fn whole_if_by_time(cf: Cf, from: &[u8], to: Option<&[u8]>) -> Result<(), String> {
    if cf.keyed_by_time() && (!from.is_empty() || to.is_some()) {
        return Err(format!(
            "column family {} is ordered by time: scanned whole, not by key range",
            cf.name()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
