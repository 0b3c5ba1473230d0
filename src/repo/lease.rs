//! Cross-replica coalescing. Before a replica asks upstream for a key it takes a short lease on
//! the key in the shared metadata store (renewed while the fill runs, released at its end). A
//! replica that finds the lease taken waits for the holder's commit and then serves the stored
//! object: it wakes on the store's commit notification for the key and looks again at a slow
//! pace in case a notification is lost; a lease whose holder died simply expires. Without a
//! shared store, or while it is unreachable, fills go ahead uncoordinated (each replica still
//! coalesces its own clients).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Cache;
use crate::digest::Sha256Digest;
use crate::meta::ObjectMeta;

/// Lifetime of a lease that is not renewed (how long a crashed replica holds up the others).
const LEASE_TTL: Duration = Duration::from_secs(8);
/// How often a held lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often a waiting replica looks for the commit when no notification comes (a lost message,
/// a listener reconnecting, a lease that expired).
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// Longest wait on another replica's fill before fetching anyway.
const MAX_WAIT: Duration = Duration::from_secs(600);

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The outcome of [`claim`].
pub enum Claim {
    /// This replica fills the key (holding the lease, if there is a shared store).
    Mine(Option<LeaseGuard>),
    /// Another replica committed the key while we waited.
    FilledElsewhere,
    /// Another replica found the key missing upstream.
    NotFound,
}

/// A token no other process or replica holds: the process id alone is not enough (it is 1 in
/// every container), so it also carries per-process random bits, the time and a counter.
pub fn new_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    static SALT: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    format!(
        "{}-{:016x}-{}-{}",
        std::process::id(),
        *SALT,
        crate::now_ms(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Takes the fill lease of `key`, or waits for the replica that holds it. `stale` is the record
/// being revalidated, if any: a commit counts only when it is newer, and, with `expected`, only
/// when it has that digest.
pub async fn claim(
    cache: &Arc<Cache>,
    key: &str,
    stale: Option<&ObjectMeta>,
    expected: Option<Sha256Digest>,
) -> Claim {
    let Some(shared) = cache.meta.coordination() else {
        return Claim::Mine(None);
    };
    let token = new_token();
    let filled = |m: &ObjectMeta| {
        m.is_fresh(crate::now_ms())
            && stale.is_none_or(|s| m.fetched_at_ms > s.fetched_at_ms)
            && expected.is_none_or(|d| d == m.sha256)
    };
    let deadline = Instant::now() + MAX_WAIT;
    // Listening starts before the first look at the lease, so a commit after it always wakes us.
    let mut commits = shared.watch_commits(key);
    loop {
        match shared.try_lease(key, &token, LEASE_TTL).await {
            Ok(true) => {
                let guard = LeaseGuard::start(cache.clone(), key, token);
                // The holder before us may have committed just before it let go.
                if let Ok(Some(m)) = cache.meta.get(key).await
                    && filled(&m)
                {
                    return Claim::FilledElsewhere;
                }
                return Claim::Mine(Some(guard));
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(key, error = %crate::error_chain(&e), "fill lease unavailable; fetching uncoordinated");
                return Claim::Mine(None);
            }
        }
        tracing::debug!(key, "another replica is filling; waiting for its commit");
        loop {
            commits.wait(FALLBACK_POLL).await;
            match cache.meta.get(key).await {
                Ok(Some(m)) if filled(&m) => return Claim::FilledElsewhere,
                Ok(_) => {}
                Err(_) => return Claim::Mine(None),
            }
            if Instant::now() > deadline {
                tracing::warn!(key, "gave up waiting for another replica's fill");
                return Claim::Mine(None);
            }
            match shared.lease_held(key).await {
                Ok(true) => continue,
                Ok(false) => {
                    if let Ok(Some(m)) = cache.meta.get(key).await
                        && filled(&m)
                    {
                        return Claim::FilledElsewhere;
                    }
                    if stale.is_none() && cache.meta.is_negative(key).await.unwrap_or(false) {
                        return Claim::NotFound;
                    }
                    // Released (or expired) without a commit: try to take it ourselves.
                    break;
                }
                Err(_) => return Claim::Mine(None),
            }
        }
    }
}

/// A held lease: renewed in the background, released when dropped.
pub struct LeaseGuard {
    cache: Arc<Cache>,
    key: String,
    token: String,
    renewer: tokio::task::JoinHandle<()>,
}

impl LeaseGuard {
    fn start(cache: Arc<Cache>, key: &str, token: String) -> LeaseGuard {
        let (c, k, t) = (cache.clone(), key.to_string(), token.clone());
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                if let Some(shared) = c.meta.coordination() {
                    match shared.renew_lease(&k, &t, LEASE_TTL).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(
                                key = k,
                                "fill lease lost; another replica may fetch too"
                            );
                        }
                        Err(e) => {
                            tracing::warn!(key = k, error = %crate::error_chain(&e), "could not renew fill lease");
                        }
                    }
                }
            }
        });
        LeaseGuard {
            cache,
            key: key.to_string(),
            token,
            renewer,
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewer.abort();
        let cache = self.cache.clone();
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(shared) = cache.meta.coordination() {
                    let _ = shared.release_lease(&key, &token).await;
                }
            });
        }
    }
}
