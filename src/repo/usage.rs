//! What the cache holds and what it may hold: bytes and objects per repository (the gauges),
//! each cached remote object's size and last read, and the limits eviction keeps them under
//! (`storage.max_size`, a remote's `cache.max_size`, `storage.min_free`). Local repositories
//! are counted but never evicted.
//!
//! Reads are recorded in memory only: a hit costs no disk or Redis write. When the process
//! starts, the index is seeded in the background from the metadata records, with the object
//! file's access time (relatime: at most a day late) where the filesystem has one.
//!
//! With Redis metadata, usage is shared by every replica ([`crate::meta::SharedTotals`]): the
//! totals and the eviction order live in Redis, reads are gathered here and sent in batches,
//! and the size gauges are set from the shared totals.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use indexmap::IndexMap;

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
    /// Reads since it was cached (the fill counts as one).
    hits: u32,
    /// The inflation value when it was last read or stored: see [`Inner::inflation`].
    base: f64,
}

/// How much an object's size lowers its worth: reads / size^SIZE_WEIGHT. Plain GDSF (1)
/// keeps the most objects but loses byte hits to LRU; 0.15 was measured to beat LRU on both
/// object and byte hits at 10% and 30% caches (SPEC §6.8). Also used by the Redis scripts.
pub const SIZE_WEIGHT: f64 = 0.15;

impl Tracked {
    /// The object's worth under GDSF: objects read often and small ones are kept longest.
    fn priority(&self) -> f64 {
        self.base + f64::from(self.hits) / (self.size.max(1) as f64).powf(SIZE_WEIGHT)
    }
}

/// Every remote repository's objects: a map that can also be sampled by position.
type Objects = IndexMap<Box<str>, Tracked>;

/// At most this many objects are looked at to choose one victim. Below this many candidates
/// the choice is exact.
const SAMPLE: usize = 64;

/// The best candidates kept between the draws of one eviction.
const POOL: usize = 256;

#[derive(Default)]
struct Inner {
    /// Remote objects by repository, then by key: the candidates for eviction.
    objects: HashMap<String, Objects>,
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
    /// GDSF's inflation value: the priority of the last object evicted. An object read or
    /// stored now starts from it, so objects that were popular long ago age out.
    inflation: f64,
    /// State of the sampler's xorshift generator.
    rng: u64,
    /// Usage is shared through Redis: the gauges are set from the shared totals, not here.
    shared: bool,
    /// With shared usage: reads not sent to Redis yet, by key.
    pending_reads: HashMap<Box<str>, u32>,
}

/// Reads held for Redis at most: past this many distinct keys between two sends, more are
/// dropped (eviction then knows a little less about what is popular).
const MAX_PENDING_READS: usize = 100_000;

impl Inner {
    fn tracked(&self, key: &str) -> Option<&Tracked> {
        self.objects.get(repo_of(key))?.get(key)
    }

    fn tracked_mut(&mut self, key: &str) -> Option<&mut Tracked> {
        self.objects.get_mut(repo_of(key))?.get_mut(key)
    }

    fn remove_tracked(&mut self, key: &str) -> Option<Tracked> {
        let map = self.objects.get_mut(repo_of(key))?;
        let t = map.swap_remove(key);
        if map.is_empty() {
            self.objects.remove(repo_of(key));
        }
        t
    }

    fn next_random(&mut self) -> u64 {
        if self.rng == 0 {
            self.rng = crate::now_ms() | 1;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Up to [`SAMPLE`] candidates from the maps in `maps` (all of them when they hold no
    /// more), as (priority, last read, map, index).
    fn sample(&mut self, maps: &[&str], out: &mut Vec<(f64, u64, usize, usize)>) {
        out.clear();
        let lens: Vec<usize> = maps
            .iter()
            .map(|r| self.objects.get(*r).map_or(0, |m| m.len()))
            .collect();
        let total: usize = lens.iter().sum();
        let push = |inner: &Inner, m: usize, i: usize, out: &mut Vec<_>| {
            if let Some((_, t)) = inner.objects.get(maps[m]).and_then(|o| o.get_index(i)) {
                out.push((t.priority(), t.read, m, i));
            }
        };
        if total <= SAMPLE {
            for (m, len) in lens.iter().enumerate() {
                for i in 0..*len {
                    push(self, m, i, out);
                }
            }
            return;
        }
        for _ in 0..SAMPLE {
            let mut at = (self.next_random() % total as u64) as usize;
            let m = lens
                .iter()
                .position(|len| {
                    let here = at < *len;
                    if !here {
                        at -= len;
                    }
                    here
                })
                .unwrap_or(0);
            push(self, m, at, out);
        }
    }
}
/// The cache's usage, shared by every repository.
pub struct Usage {
    inner: Mutex<Inner>,
    /// Names of the repositories whose objects may be evicted (remotes), with their limit,
    /// and `storage.max_size`: replaced when the configuration is reloaded.
    limits: std::sync::RwLock<Limits>,
    /// Set once the start-up scan has seeded the index: eviction waits for it, so that it
    /// never picks new objects only because the old ones are not known yet.
    seeded: AtomicBool,
}

/// The limits of [`Usage`].
struct Limits {
    evictable: HashMap<String, Option<u64>>,
    max_size: Option<u64>,
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
        Usage::with_sharing(evictable, max_size, false)
    }

    /// As [`Usage::new`]; `shared` when usage is kept in Redis for every replica.
    pub fn with_sharing(
        evictable: HashMap<String, Option<u64>>,
        max_size: Option<u64>,
        shared: bool,
    ) -> Usage {
        Usage {
            inner: Mutex::new(Inner {
                shared,
                ..Inner::default()
            }),
            limits: std::sync::RwLock::new(Limits {
                evictable,
                max_size,
            }),
            seeded: AtomicBool::new(false),
        }
    }

    /// New limits, from a reloaded configuration. Objects of a repository that became a
    /// remote are tracked from their next store; those of one that is no longer a remote stay
    /// tracked until removed.
    pub fn set_limits(&self, evictable: HashMap<String, Option<u64>>, max_size: Option<u64>) {
        *self
            .limits
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Limits {
            evictable,
            max_size,
        };
    }

    fn limits(&self) -> std::sync::RwLockReadGuard<'_, Limits> {
        self.limits
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_evictable(&self, repo: &str) -> bool {
        self.limits().evictable.contains_key(repo)
    }

    /// `storage.max_size`.
    pub fn max_size(&self) -> Option<u64> {
        self.limits().max_size
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
        if inner.tracked(key).is_some() || inner.before_seed.contains_key(key) {
            return;
        }
        if self.is_evictable(repo) {
            // How often it was read before is not known: it starts as if cached just now,
            // but without the inflation objects cached since the start have.
            let tracked = Tracked {
                size,
                read: read_ms.saturating_mul(1000),
                hits: 1,
                base: 0.0,
            };
            inner
                .objects
                .entry(repo.to_string())
                .or_default()
                .insert(key.into(), tracked);
            inner.remote_bytes += size;
        }
        add(&mut inner, repo, size as i64, 1, metrics);
    }

    /// An object was stored at `key`. `previous` is the size of the object it replaced, as
    /// storage said; for remote objects the index's own knowledge is used instead.
    pub fn stored(&self, key: &str, size: u64, previous: Option<u64>, metrics: &Metrics) {
        let mut inner = self.lock();
        let repo = repo_of(key);
        let old = if self.is_evictable(repo) {
            let base = inner.inflation;
            let map = inner.objects.entry(repo.to_string()).or_default();
            let (old, hits) = match map.get(key) {
                // A refetch of an object that was cached: its reads still count.
                Some(t) => (Some(t.size), t.hits.saturating_add(1)),
                None => (None, 1),
            };
            let tracked = Tracked {
                size,
                read: stamp(),
                hits,
                base,
            };
            map.insert(key.into(), tracked);
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
        let counted = if self.is_evictable(repo) {
            let tracked = inner.remove_tracked(key).map(|t| t.size);
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
        self.limits().evictable.get(repo).copied().flatten()
    }

    /// The object at `key` was read.
    pub fn read(&self, key: &str) {
        let mut inner = self.lock();
        let base = inner.inflation;
        if let Some(t) = inner.tracked_mut(key) {
            t.read = stamp();
            t.hits = t.hits.saturating_add(1);
            t.base = base;
        }
        if inner.shared {
            let pending = inner.pending_reads.len();
            match inner.pending_reads.get_mut(key) {
                Some(n) => *n = n.saturating_add(1),
                None if pending < MAX_PENDING_READS => {
                    inner.pending_reads.insert(key.into(), 1);
                }
                None => {}
            }
        }
    }

    /// With shared usage: the reads gathered since the last call, to be sent to Redis.
    pub fn take_reads(&self) -> Vec<(Box<str>, u32)> {
        std::mem::take(&mut self.lock().pending_reads)
            .into_iter()
            .collect()
    }

    /// The names of the remote repositories (whose objects may be evicted).
    pub fn remotes(&self) -> Vec<String> {
        self.limits().evictable.keys().cloned().collect()
    }

    /// Bytes promised to fills of `repo` that are writing now.
    pub fn reserved_by(&self, repo: &str) -> u64 {
        self.lock().reserved_by_repo.get(repo).copied().unwrap_or(0)
    }

    /// When the remote object at `key` was last read (ms since the epoch), if it is tracked.
    pub fn read_ms(&self, key: &str) -> Option<u64> {
        self.lock().tracked(key).map(|t| t.read / 1000)
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
        let (max_size, repo_max) = {
            let l = self.limits();
            (l.max_size, l.evictable.get(repo).copied().flatten())
        };
        if let Some(max) = max_size {
            let over = inner
                .remote_bytes
                .saturating_add(inner.reserved)
                .saturating_add(extra)
                .saturating_sub(max);
            if over > 0 {
                out.push((EvictReason::MaxSize, None, over));
            }
        }
        if let Some(max) = repo_max {
            let used = inner.repos.get(repo).map_or(0, |u| u.bytes);
            let reserved = inner.reserved_by_repo.get(repo).copied().unwrap_or(0);
            let over = used
                .saturating_add(reserved)
                .saturating_add(extra)
                .saturating_sub(max);
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
        let Some(map) = inner.objects.get(repo) else {
            return Vec::new();
        };
        let mut out: Vec<(u64, String, u64)> = map
            .iter()
            .filter(|(_, t)| t.read < cutoff)
            .map(|(k, t)| (t.read, k.to_string(), t.size))
            .collect();
        out.sort_unstable();
        out.into_iter().map(|(_, k, size)| (k, size)).collect()
    }

    /// The remote objects (of `repo`, or of every remote) worth least to keep whose sizes add
    /// up to at least `bytes`, in the order they should go; fewer when there are not enough.
    /// Keys for which `skip` holds (the object being stored, objects being filled) are never
    /// picked.
    ///
    /// The policy is GDSF (greedy-dual size frequency) over samples: each victim is the one of
    /// lowest [`Tracked::priority`] among the objects drawn at random so far ([`SAMPLE`] more
    /// for each victim), or among all when there are no more than that. Sampling keeps the
    /// lock short however large the cache is.
    pub fn victims(
        &self,
        repo: Option<&str>,
        bytes: u64,
        skip: &dyn Fn(&str) -> bool,
    ) -> Vec<(String, u64)> {
        let mut inner = self.lock();
        let maps: Vec<String> = match repo {
            Some(r) => vec![r.to_string()],
            None => inner.objects.keys().cloned().collect(),
        };
        let maps: Vec<&str> = maps.iter().map(String::as_str).collect();
        let mut chosen: HashSet<(usize, usize)> = HashSet::new();
        let mut out = Vec::new();
        let mut freed = 0u64;
        // The best candidates seen so far in this call: each victim is the best of everything
        // drawn, so a large eviction looks at many more objects than one sample.
        let mut pool: Vec<(f64, u64, usize, usize)> = Vec::with_capacity(POOL + SAMPLE);
        let mut sample = Vec::with_capacity(SAMPLE);
        let mut fruitless = 0;
        while freed < bytes {
            inner.sample(&maps, &mut sample);
            let exact = sample.len() < SAMPLE;
            if exact {
                pool.clear();
            }
            pool.extend(sample.drain(..).filter(|(_, _, m, i)| {
                !chosen.contains(&(*m, *i))
                    && inner.objects[maps[*m]]
                        .get_index(*i)
                        .is_some_and(|(k, _)| !skip(k))
            }));
            // Of equal worth, the least recently read goes first.
            pool.sort_unstable_by(|a, b| {
                a.0.total_cmp(&b.0)
                    .then(a.1.cmp(&b.1))
                    .then((a.2, a.3).cmp(&(b.2, b.3)))
            });
            pool.dedup_by_key(|c| (c.2, c.3));
            pool.truncate(POOL);
            if pool.is_empty() {
                // Everything drawn was skipped or chosen: try again a few times unless the
                // draw was already everything.
                fruitless += 1;
                if exact || fruitless > 16 {
                    break;
                }
                continue;
            }
            let (priority, _, m, i) = pool.remove(0);
            chosen.insert((m, i));
            let (key, t) = inner.objects[maps[m]].get_index(i).expect("sampled index");
            freed += t.size;
            out.push((key.to_string(), t.size));
            inner.inflation = inner.inflation.max(priority);
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
    if inner.shared {
        return;
    }
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
    fn victims_are_the_objects_worth_least_and_local_content_is_never_one() {
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
        // Equal in size and reads: the least recently read go first.
        let v = usage.victims(Some("r"), 70, &|k| k == "r/new");
        assert_eq!(v, vec![("r/older".into(), 40), ("r/old".into(), 40)]);
        // Of the same reads, the larger object goes first, even if read last.
        let v = usage.victims(None, 1, &|_| false);
        assert_eq!(v, vec![("s/x".into(), 100)]);
        // An object read again is worth more than one read as often but later.
        usage.read("r/older");
        let v = usage.victims(Some("r"), 1, &|_| false);
        assert_eq!(v, vec![("r/old".into(), 40)]);
        // Reads outweigh size: s/x read four times more is worth more than r/old.
        for _ in 0..4 {
            usage.read("s/x");
        }
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

    #[test]
    fn evicting_raises_the_worth_of_what_is_read_after_it() {
        // Objects popular long ago age out: after evictions, a newly read object outranks one
        // read more often before them.
        let metrics = Metrics::new();
        let usage = Usage::new(HashMap::from([("r".to_string(), None)]), None);
        usage.stored("r/past", 100, None, &metrics);
        for _ in 0..3 {
            usage.read("r/past");
        }
        for i in 0..40 {
            let key = format!("r/filler-{i}");
            usage.stored(&key, 100, None, &metrics);
            let victims = usage.victims(Some("r"), 100, &|k| k == key || k == "r/past");
            for (k, size) in victims {
                usage.removed(&k, size, &metrics);
            }
        }
        usage.stored("r/now", 100, None, &metrics);
        usage.read("r/now");
        let v = usage.victims(Some("r"), 1, &|k| k.starts_with("r/filler"));
        assert_eq!(v, vec![("r/past".into(), 100)]);
    }

    #[test]
    fn a_large_cache_is_sampled_and_still_loses_its_least_worth_objects_first() {
        let metrics = Metrics::new();
        let usage = Usage::new(HashMap::from([("r".to_string(), None)]), None);
        // 10,000 small objects read often, 100 large ones read once.
        for i in 0..10_000 {
            let key = format!("r/small-{i}");
            usage.stored(&key, 1_000, None, &metrics);
            usage.read(&key);
        }
        for i in 0..100 {
            usage.stored(&format!("r/large-{i}"), 1_000_000, None, &metrics);
        }
        // Sampling is not exact: a few small objects may go too, but the room is made of large
        // ones and no object is picked twice.
        let v = usage.victims(None, 20_000_000, &|_| false);
        let large = v.iter().filter(|(k, _)| k.starts_with("r/large-")).count();
        assert_eq!(large, 20, "{v:?}");
        assert!(
            v.len() - large <= 100,
            "{} small objects evicted",
            v.len() - large
        );
        let distinct: HashSet<&String> = v.iter().map(|(k, _)| k).collect();
        assert_eq!(distinct.len(), v.len());
    }
}
