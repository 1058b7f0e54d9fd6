//! Locks by key (a card, an account, a card number), held across `.await`, and forgotten
//! when nobody holds or waits for them: a map of one lock per key ever asked for would grow
//! with every id a caller makes up.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{Mutex, OwnedMutexGuard};

#[derive(Default)]
pub struct KeyLocks {
    locks: DashMap<String, Arc<Mutex<()>>>,
}

/// Held: the key's lock. Dropped: released, and removed from the map if nobody else has it.
pub struct KeyGuard<'a> {
    owner: &'a KeyLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyLocks {
    pub fn new() -> KeyLocks {
        KeyLocks::default()
    }

    /// Wait for the key's lock.
    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        // The clone is taken under the map's shard lock, so the removal in `drop` (which
        // checks the count under the same shard lock) never removes a lock someone waits for.
        let lock = self.locks.entry(key.to_string()).or_default().clone();
        KeyGuard {
            owner: self,
            key: key.to_string(),
            guard: Some(lock.lock_owned().await),
        }
    }

    /// Keys with a lock held or waited for.
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        // Release first: the guard holds a reference to the lock.
        drop(self.guard.take());
        self.owner
            .locks
            .remove_if(&self.key, |_, lock| Arc::strong_count(lock) == 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_holder_at_a_time_and_nothing_kept_once_released() {
        let locks = Arc::new(KeyLocks::new());
        let holders: Arc<Vec<std::sync::atomic::AtomicUsize>> =
            Arc::new((0..4).map(|_| Default::default()).collect());
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (locks, holders) = (locks.clone(), holders.clone());
                tokio::spawn(async move {
                    let k = i % 4;
                    for _ in 0..20 {
                        let _g = locks.lock(&format!("k{k}")).await;
                        let before = holders[k].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        assert_eq!(before, 0, "one holder per key");
                        tokio::task::yield_now().await;
                        holders[k].fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(locks.is_empty(), "{} locks kept", locks.len());
        // Ids nobody will ask for again leave nothing behind.
        for i in 0..1000 {
            drop(locks.lock(&format!("made-up-{i}")).await);
        }
        assert_eq!(locks.len(), 0);
    }
}
