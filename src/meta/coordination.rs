//! Fill coordination across replicas, in terms that name no backend: fill leases on keys, and
//! commit notifications that wake a replica waiting for another one's fill. `repo` sees only
//! [`Coordinator`] and [`CommitWatch`]; which store carries them (Redis) stays inside `meta`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::redis::RedisMeta;
use crate::error::Result;

/// The shared store's fill coordination, from [`super::MetaStore::coordination`].
#[derive(Clone, Copy)]
pub struct Coordinator<'a> {
    backend: &'a RedisMeta,
}

impl<'a> Coordinator<'a> {
    pub(super) fn new(backend: &'a RedisMeta) -> Coordinator<'a> {
        Coordinator { backend }
    }

    /// Takes the fill lease of `key` for `ttl` unless another replica holds it.
    pub async fn try_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        self.backend.try_lease(key, token, ttl).await
    }

    /// Extends a lease we hold; false when it is no longer ours.
    pub async fn renew_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        self.backend.renew_lease(key, token, ttl).await
    }

    /// Gives a lease back, if it is still ours, and wakes the replicas waiting on it.
    pub async fn release_lease(&self, key: &str, token: &str) -> Result<()> {
        self.backend.release_lease(key, token).await
    }

    /// True while some replica holds the lease of `key`.
    pub async fn lease_held(&self, key: &str) -> Result<bool> {
        self.backend.lease_held(key).await
    }

    /// Starts listening for news of `key`: its record written, an upstream 404 remembered, or
    /// its lease released, by any replica. Call it before looking at the record, so that nothing
    /// done after that look goes unnoticed.
    pub fn watch_commits(&self, key: &str) -> CommitWatch {
        self.backend.watch_commits(key)
    }
}

/// Who in this process waits for news of which key. The backend's listener calls
/// [`Waiters::wake`] for each key it hears about, and [`Waiters::wake_all`] whenever it may have
/// missed some (after it (re)connects).
#[derive(Default)]
pub(super) struct Waiters {
    keys: Mutex<HashMap<String, watch::Sender<()>>>,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<()>>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn register(self: &Arc<Self>, key: &str) -> CommitWatch {
        let rx = self
            .lock()
            .entry(key.to_string())
            .or_insert_with(|| watch::channel(()).0)
            .subscribe();
        CommitWatch {
            waiters: self.clone(),
            key: key.to_string(),
            rx: Some(rx),
        }
    }

    pub(super) fn wake(&self, key: &str) {
        if let Some(tx) = self.lock().get(key) {
            tx.send_replace(());
        }
    }

    pub(super) fn wake_all(&self) {
        for tx in self.lock().values() {
            tx.send_replace(());
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A replica's interest in one key's news, from [`Coordinator::watch_commits`].
pub struct CommitWatch {
    waiters: Arc<Waiters>,
    key: String,
    rx: Option<watch::Receiver<()>>,
}

impl CommitWatch {
    /// Returns at the next news of the key since the last return (or since the watch began),
    /// or after `fallback` at the latest: a lost message or a listener that is down costs
    /// that long, never a stalled wait.
    pub async fn wait(&mut self, fallback: Duration) {
        let Some(rx) = self.rx.as_mut() else {
            return tokio::time::sleep(fallback).await;
        };
        let news = async {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let _ = tokio::time::timeout(fallback, news).await;
    }
}

impl Drop for CommitWatch {
    fn drop(&mut self) {
        let mut keys = self.waiters.lock();
        drop(self.rx.take());
        if keys
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            keys.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_wake_before_the_wait_is_not_lost() {
        let waiters = Arc::new(Waiters::default());
        let mut w = waiters.register("r/a");
        waiters.wake("r/a");
        let start = Instant::now();
        w.wait(LONG).await;
        assert!(start.elapsed() < LONG / 2);
    }

    #[tokio::test]
    async fn only_the_named_key_wakes() {
        let waiters = Arc::new(Waiters::default());
        let mut a = waiters.register("r/a");
        let mut b = waiters.register("r/b");
        waiters.wake("r/b");
        let start = Instant::now();
        b.wait(LONG).await;
        assert!(start.elapsed() < LONG / 2);
        a.wait(Duration::from_millis(50)).await;
        assert!(start.elapsed() >= Duration::from_millis(50));
        waiters.wake_all();
        a.wait(LONG).await;
        assert!(start.elapsed() < LONG / 2);
    }

    #[tokio::test]
    async fn the_last_watch_of_a_key_removes_it() {
        let waiters = Arc::new(Waiters::default());
        let a = waiters.register("r/a");
        let b = waiters.register("r/a");
        assert_eq!(waiters.len(), 1);
        drop(a);
        assert_eq!(waiters.len(), 1);
        drop(b);
        assert_eq!(waiters.len(), 0);
    }
}
