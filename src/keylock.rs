//! Locks by key (a card, an account, a card number), held across `.await`, and forgotten
//! when nobody holds or waits for them: a map of one lock per key ever asked for would grow
//! with every id a caller makes up.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{Mutex, OwnedMutexGuard};

#[derive(Default)]
pub struct KeyLocks {
    locks: DashMap<String, Entry>,
}

#[derive(Default)]
struct Entry {
    lock: Arc<Mutex<()>>,
    /// Holders and waiters: the key is forgotten when the last of them goes.
    users: usize,
}

/// One user of a key's lock, counted from before it waits until it releases the lock or
/// stops waiting (its request dropped mid-wait): the last one out removes the key. A count
/// rather than the lock's reference count, because a waiter dropped mid-wait may give up
/// its reference after its other parts are gone.
struct User<'a> {
    owner: &'a KeyLocks,
    key: String,
}

impl Drop for User<'_> {
    fn drop(&mut self) {
        self.owner.locks.remove_if_mut(&self.key, |_, e| {
            e.users -= 1;
            e.users == 0
        });
    }
}

/// Held: the key's lock. Dropped: released, and the key forgotten if nobody else has it.
pub struct KeyGuard<'a> {
    // Fields drop in order: the lock is released before the user is counted out.
    _guard: OwnedMutexGuard<()>,
    _user: User<'a>,
}

impl KeyLocks {
    pub fn new() -> KeyLocks {
        KeyLocks::default()
    }

    /// Wait for the key's lock.
    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let (lock, user) = {
            // Counted under the entry's shard lock, so the removal (under the same lock)
            // never removes a key someone holds or waits for.
            let mut entry = self.locks.entry(key.to_string()).or_default();
            entry.users += 1;
            let user = User {
                owner: self,
                key: key.to_string(),
            };
            (entry.lock.clone(), user)
        };
        KeyGuard {
            _guard: lock.lock_owned().await,
            _user: user,
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

    /// A waiter dropped mid-wait (its request cancelled) leaves nothing behind, even when
    /// the holder released the lock to it before it could take it.
    #[tokio::test]
    async fn a_waiter_dropped_mid_wait_leaves_nothing_behind() {
        let locks = KeyLocks::new();
        for release_first in [false, true] {
            let held = locks.lock("k").await;
            let mut waiter = Box::pin(locks.lock("k"));
            assert!(futures::poll!(&mut waiter).is_pending());
            if release_first {
                // The lock is the waiter's now; it is dropped before it takes it.
                drop(held);
                drop(waiter);
            } else {
                drop(waiter);
                drop(held);
            }
            assert!(locks.is_empty(), "{} keys kept", locks.len());
        }
        // And the key still locks one at a time afterwards.
        let first = locks.lock("k").await;
        let mut second = Box::pin(locks.lock("k"));
        assert!(futures::poll!(&mut second).is_pending());
        drop(first);
        drop(second.await);
        assert!(locks.is_empty());
    }
}
