//! What the cache holds and what it may hold: bytes and objects per repository (the gauges),
//! each cached remote object's size and last read, and the limits eviction keeps them under
//! (`storage.max_size`, a remote's `cache.max_size`, `storage.min_free`). Local repositories
//! are counted but never evicted.
//!
//! Reads are recorded in memory only: a hit costs no disk or Redis write. When the process
//! starts, the index is seeded in the background from the metadata records, with the object
//! file's access time (relatime: at most a day late) where the filesystem has one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::metrics::Metrics;

/// Why an object was evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    /// The total passed `storage.max_size`.
    MaxSize,
    /// Not read for the remote's `cache.evict_unused_after`.
    Unused,
    /// The repository passed its `cache.max_size`.
    RepositoryMaxSize,
    /// The file system passed `storage.min_free`.
    MinFree,
}

impl EvictReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EvictReason::MaxSize => "max_size",
            EvictReason::Unused => "unused",
            EvictReason::RepositoryMaxSize => "repository_max_size",
            EvictReason::MinFree => "min_free",
        }
    }
}

/// Bytes and objects of one repository.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RepoUsage {
    pub bytes: u64,
    pub objects: u64,
}

/// A cached remote object.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    size: u64,
    /// Last read, as a [`stamp`].
    read: u64,
}

#[derive(Default)]
struct Inner {
    /// Remote objects by key: the candidates for eviction.
    objects: HashMap<Box<str>, Tracked>,
    /// Every repository's totals, local ones included.
    repos: HashMap<String, RepoUsage>,
    /// Bytes of all remote objects.
    remote_bytes: u64,
    /// Bytes promised to fills that are writing, in all and per repository.
    reserved: u64,
    reserved_by_repo: HashMap<String, u64>,
    /// Until the start-up scan is done: keys stored (`Some(size)`) or removed (`None`) since
    /// the process started that the index does not track (removed remote objects, local
    /// files). The scan skips them, so that nothing is counted twice or brought back.
    before_seed: HashMap<Box<str>, Option<u64>>,
}

/// The cache's usage, shared by every repository.
pub struct Usage {
    inner: Mutex<Inner>,
    /// Names of the repositories whose objects may be evicted (remotes), with their limit.
    evictable: HashMap<String, Option<u64>>,
    /// `storage.max_size`.
    pub max_size: Option<u64>,
    /// Set once the start-up scan has seeded the index: eviction waits for it, so that it
    /// never picks new objects only because the old ones are not known yet.
    seeded: AtomicBool,
}

/// Microseconds since the epoch, strictly increasing within the process: reads in the same
/// millisecond still have an order, and a stamp compares with a time from the start-up scan
/// (`ms * 1000`).
fn stamp() -> u64 {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = crate::now_ms() * 1000;
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// The repository of storage key `key` (its first segment).
pub fn repo_of(key: &str) -> &str {
    key.split_once('/').map_or(key, |(r, _)| r)
}

impl Usage {
    /// `evictable` names the remote repositories, each with its own `cache.max_size`.
    pub fn new(evictable: HashMap<String, Option<u64>>, max_size: Option<u64>) -> Usage {
        Usage {
            inner: Mutex::default(),
            evictable,
            max_size,
            seeded: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn is_seeded(&self) -> bool {
        self.seeded.load(Ordering::Acquire)
    }

    /// The start-up scan is done.
    pub fn mark_seeded(&self) {
        let mut inner = self.lock();
        self.seeded.store(true, Ordering::Release);
        inner.before_seed = HashMap::new();
    }

    /// An object found by the start-up scan, last read at `read_ms`. Objects stored or removed
    /// since the process started are already accounted for and are left as they are.
    pub fn seed(&self, key: &str, size: u64, read_ms: u64, metrics: &Metrics) {
        let mut inner = self.lock();
        let repo = repo_of(key);
        if inner.objects.contains_key(key) || inner.before_seed.contains_key(key) {
            return;
        }
        if self.evictable.contains_key(repo) {
            let read = read_ms.saturating_mul(1000);
            inner.objects.insert(key.into(), Tracked { size, read });
            inner.remote_bytes += size;
        }
        add(&mut inner, repo, size as i64, 1, metrics);
    }

    /// An object was stored at `key`. `previous` is the size of the object it replaced, as
    /// storage said; for remote objects the index's own knowledge is used instead.
    pub fn stored(&self, key: &str, size: u64, previous: Option<u64>, metrics: &Metrics) {
        let mut inner = self.lock();
        let repo = repo_of(key);
        let old = if self.evictable.contains_key(repo) {
            let old = inner
                .objects
                .insert(
                    key.into(),
                    Tracked {
                        size,
                        read: stamp(),
                    },
                )
                .map(|t| t.size);
            inner.remote_bytes = inner.remote_bytes + size - old.unwrap_or(0);
            old
        } else if !self.is_seeded() {
            // Counted only if it was stored since the start; the scan skips it either way.
            inner.before_seed.insert(key.into(), Some(size)).flatten()
        } else {
            previous
        };
        let objects = if old.is_some() { 0 } else { 1 };
        add(
            &mut inner,
            repo,
            size as i64 - old.unwrap_or(0) as i64,
            objects,
            metrics,
        );
    }

    /// The object at `key`, of `size` bytes (as storage said), is gone.
    pub fn removed(&self, key: &str, size: u64, metrics: &Metrics) {
        let mut inner = self.lock();
        let repo = repo_of(key);
        let counted = if self.evictable.contains_key(repo) {
            let tracked = inner.objects.remove(key).map(|t| t.size);
            if let Some(t) = tracked {
                inner.remote_bytes -= t;
            } else if !self.is_seeded() {
                inner.before_seed.insert(key.into(), None);
            }
            // An untracked remote object (one without a record) was never counted.
            tracked
        } else if !self.is_seeded() {
            inner.before_seed.insert(key.into(), None).flatten()
        } else {
            Some(size)
        };
        if let Some(size) = counted {
            add(&mut inner, repo, -(size as i64), -1, metrics);
        }
    }

    /// Promises `bytes` to a fill of `repo` until the returned guard is dropped, so that
    /// concurrent fills do not all count on the same room.
    pub fn reserve(&self, repo: &str, bytes: u64) -> Reservation<'_> {
        let mut inner = self.lock();
        inner.reserved = inner.reserved.saturating_add(bytes);
        let r = inner.reserved_by_repo.entry(repo.to_string()).or_default();
        *r = r.saturating_add(bytes);
        Reservation {
            usage: self,
            repo: repo.to_string(),
            bytes,
        }
    }

    /// Bytes promised to fills that are writing now.
    pub fn reserved(&self) -> u64 {
        self.lock().reserved
    }

    /// The limit of `repo` (its `cache.max_size`), if it is a remote with one.
    pub fn repo_limit(&self, repo: &str) -> Option<u64> {
        self.evictable.get(repo).copied().flatten()
    }

    /// The object at `key` was read.
    pub fn read(&self, key: &str) {
        if let Some(t) = self.lock().objects.get_mut(key) {
            t.read = stamp();
        }
    }

    /// When the remote object at `key` was last read (ms since the epoch), if it is tracked.
    pub fn read_ms(&self, key: &str) -> Option<u64> {
        self.lock().objects.get(key).map(|t| t.read / 1000)
    }

    /// Bytes and objects of `repo`.
    pub fn of(&self, repo: &str) -> RepoUsage {
        self.lock().repos.get(repo).copied().unwrap_or_default()
    }

    /// Bytes of all cached remote content.
    pub fn remote_bytes(&self) -> u64 {
        self.lock().remote_bytes
    }

    /// What must go before `extra` more bytes of repository `repo` fit, and why: the bytes
    /// over `storage.max_size`, then over the repository's `cache.max_size`.
    pub fn excess(&self, repo: &str, extra: u64) -> Vec<(EvictReason, Option<String>, u64)> {
        let inner = self.lock();
        let mut out = Vec::new();
        if let Some(max) = self.max_size {
            let over = inner
                .remote_bytes
                .saturating_add(inner.reserved)
                .saturating_add(extra)
                .saturating_sub(max);
            if over > 0 {
                out.push((EvictReason::MaxSize, None, over));
            }
        }
        if let Some(Some(max)) = self.evictable.get(repo) {
            let used = inner.repos.get(repo).map_or(0, |u| u.bytes);
            let reserved = inner.reserved_by_repo.get(repo).copied().unwrap_or(0);
            let over = used
                .saturating_add(reserved)
                .saturating_add(extra)
                .saturating_sub(*max);
            if over > 0 {
                out.push((EvictReason::RepositoryMaxSize, Some(repo.to_string()), over));
            }
        }
        out
    }

    /// The objects of `repo` not read within `age`, oldest first.
    pub fn unused(&self, repo: &str, age: std::time::Duration) -> Vec<(String, u64)> {
        let cutoff = (crate::now_ms() * 1000).saturating_sub(age.as_micros() as u64);
        let inner = self.lock();
        let mut out: Vec<(u64, String, u64)> = inner
            .objects
            .iter()
            .filter(|(k, t)| t.read < cutoff && repo_of(k) == repo)
            .map(|(k, t)| (t.read, k.to_string(), t.size))
            .collect();
        out.sort_unstable();
        out.into_iter().map(|(_, k, size)| (k, size)).collect()
    }

    /// The least recently read remote objects (of `repo`, or of every remote) whose sizes add
    /// up to at least `bytes`, oldest first; fewer when there are not enough. Keys for which
    /// `skip` holds (the object being stored, objects being filled) are never picked.
    pub fn victims(
        &self,
        repo: Option<&str>,
        bytes: u64,
        skip: &dyn Fn(&str) -> bool,
    ) -> Vec<(String, u64)> {
        let inner = self.lock();
        let mut candidates: Vec<(u64, &str, u64)> = inner
            .objects
            .iter()
            .filter(|(k, _)| repo.is_none_or(|r| repo_of(k) == r) && !skip(k))
            .map(|(k, t)| (t.read, &**k, t.size))
            .collect();
        candidates.sort_unstable_by_key(|(read, k, _)| (*read, *k));
        let mut out = Vec::new();
        let mut freed = 0;
        for (_, k, size) in candidates {
            if freed >= bytes {
                break;
            }
            freed += size;
            out.push((k.to_string(), size));
        }
        out
    }
}

/// Bytes promised to one fill; given back when dropped.
pub struct Reservation<'a> {
    usage: &'a Usage,
    repo: String,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut inner = self.usage.lock();
        inner.reserved = inner.reserved.saturating_sub(self.bytes);
        if let Some(r) = inner.reserved_by_repo.get_mut(&self.repo) {
            *r = r.saturating_sub(self.bytes);
        }
    }
}

fn add(inner: &mut Inner, repo: &str, bytes: i64, objects: i64, metrics: &Metrics) {
    let u = inner.repos.entry(repo.to_string()).or_default();
    u.bytes = (u.bytes as i64 + bytes).max(0) as u64;
    u.objects = (u.objects as i64 + objects).max(0) as u64;
    metrics
        .cache_bytes
        .with_label_values(&[repo])
        .set(u.bytes as i64);
    metrics
        .cache_objects
        .with_label_values(&[repo])
        .set(u.objects as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_before_the_start_up_scan_are_neither_lost_nor_counted_twice() {
        let metrics = Metrics::new();
        let usage = Usage::new(HashMap::from([("r".to_string(), None)]), None);
        // Before the scan: a remote object replaced, one removed, a local file stored, one
        // removed, one stored twice.
        usage.stored("r/replaced", 10, Some(7), &metrics);
        usage.removed("r/gone", 5, &metrics);
        usage.stored("l/new", 3, None, &metrics);
        usage.removed("l/deleted", 4, &metrics);
        usage.stored("l/twice", 2, Some(9), &metrics);
        usage.stored("l/twice", 6, Some(2), &metrics);
        // The scan's snapshot still has the old states of all of them.
        for (k, size) in [
            ("r/replaced", 7),
            ("r/gone", 5),
            ("r/kept", 1),
            ("l/new", 3),
            ("l/deleted", 4),
            ("l/twice", 9),
            ("l/old", 8),
        ] {
            usage.seed(k, size, 0, &metrics);
        }
        usage.mark_seeded();
        assert_eq!(
            usage.of("r"),
            RepoUsage {
                bytes: 11,
                objects: 2
            }
        );
        assert_eq!(usage.remote_bytes(), 11);
        assert_eq!(
            usage.of("l"),
            RepoUsage {
                bytes: 17,
                objects: 3
            }
        );
        // After it, storage's word is used for local files, the index's for remote objects.
        usage.stored("l/old", 10, Some(8), &metrics);
        usage.stored("r/kept", 4, None, &metrics);
        usage.removed("r/never-recorded", 100, &metrics);
        assert_eq!(
            usage.of("l"),
            RepoUsage {
                bytes: 19,
                objects: 3
            }
        );
        assert_eq!(
            usage.of("r"),
            RepoUsage {
                bytes: 14,
                objects: 2
            }
        );
    }

    #[test]
    fn reservations_count_against_the_limits_until_dropped() {
        let usage = Usage::new(HashMap::from([("r".to_string(), Some(100))]), Some(150));
        let a = usage.reserve("r", 60);
        assert_eq!(
            usage.excess("r", 50),
            vec![(EvictReason::RepositoryMaxSize, Some("r".into()), 10)]
        );
        let b = usage.reserve("s", 80);
        assert_eq!(usage.excess("r", 20)[0], (EvictReason::MaxSize, None, 10));
        drop((a, b));
        assert!(usage.excess("r", 100).is_empty());
        assert_eq!(usage.reserved(), 0);
        // Sizes near u64::MAX do not wrap.
        assert!(!usage.excess("r", u64::MAX).is_empty());
    }

    #[test]
    fn victims_are_the_least_recently_read_and_local_content_is_never_one() {
        let metrics = Metrics::new();
        let usage = Usage::new(
            HashMap::from([("r".to_string(), Some(100)), ("s".to_string(), None)]),
            Some(250),
        );
        usage.seed("r/old", 40, 1_000_000, &metrics);
        usage.seed("r/older", 40, 500_000, &metrics);
        usage.seed("s/x", 100, 2_000_000, &metrics);
        usage.seed("local/y", 1000, 0, &metrics);
        usage.stored("r/new", 40, None, &metrics);
        assert_eq!(
            usage.of("r"),
            RepoUsage {
                bytes: 120,
                objects: 3
            }
        );
        assert_eq!(usage.remote_bytes(), 220, "local content does not count");
        assert_eq!(
            usage.excess("r", 50),
            vec![
                (EvictReason::MaxSize, None, 20),
                (EvictReason::RepositoryMaxSize, Some("r".into()), 70)
            ]
        );
        let v = usage.victims(Some("r"), 70, &|k| k == "r/new");
        assert_eq!(v, vec![("r/older".into(), 40), ("r/old".into(), 40)]);
        // A read makes an object the most recent.
        usage.read("r/older");
        let v = usage.victims(None, 1, &|_| false);
        assert_eq!(v, vec![("r/old".into(), 40)]);
        assert_eq!(
            usage.unused("r", std::time::Duration::from_secs(60)),
            vec![("r/old".to_string(), 40)],
            "read at 1,000 s after the epoch; the others since"
        );
        usage.removed("r/old", 40, &metrics);
        assert_eq!(
            usage.of("r"),
            RepoUsage {
                bytes: 80,
                objects: 2
            }
        );
        assert!(
            usage
                .victims(None, 10_000, &|_| false)
                .iter()
                .all(|(k, _)| !k.starts_with("local/"))
        );
    }
}
