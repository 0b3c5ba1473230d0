//! Repositories and the cache engine. `Engine` is what the server and the CLI hold: the config,
//! the shared cache (storage, metadata, fills in flight, metrics) and one opened repository per
//! configured name. Callers ask it for a repository and then for a path; it never sees HTTP
//! serving.

pub mod docker;
pub mod flush;
pub mod hot;
pub mod inflight;
pub mod lease;
pub mod local;
pub mod remote;
pub mod resolve;
pub mod usage;
pub mod virtual_repo;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{CacheLimits, Config, RepoConfig};
use crate::error::Result;
use crate::meta::{MetaStore, ObjectMeta};
use crate::metrics::Metrics;
use crate::storage::{ByteStream, Storage};

pub use crate::path::RepoPath;
pub use inflight::Inflight;
pub use local::LocalRepo;
pub use remote::RemoteRepo;
pub use resolve::{Repo, V2Target};
pub use virtual_repo::VirtualRepo;

/// Where a response came from, reported as `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache without asking upstream.
    Hit,
    /// Fetched from upstream (and cached as it streamed).
    Miss,
    /// Expired, upstream failed, the old copy was served.
    Stale,
    /// Expired, upstream confirmed the cached copy (304).
    Revalidated,
    /// Passed from upstream without being cached (storage had no room).
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// An answer to a GET or HEAD, ready to be turned into a response.
pub struct Served {
    pub cache: CacheStatus,
    /// Length of the body that follows (the range when one is served); `None` when upstream
    /// did not say and the body streams as it arrives.
    pub content_length: Option<u64>,
    /// `(first, last, total)` when a single range is served.
    pub range: Option<(u64, u64, u64)>,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Content digest (`sha256:<hex>`), reported by registry endpoints.
    pub digest: Option<String>,
    /// The body; `None` for HEAD.
    pub body: Option<ByteStream>,
}

/// State shared by every repository: where objects and records live, what is being fetched.
pub struct Cache {
    pub storage: Storage,
    pub meta: MetaStore,
    pub inflight: Inflight,
    pub metrics: Arc<Metrics>,
    /// Small objects of shared (S3) storage, in memory.
    pub hot: hot::HotCache,
    /// What is stored, per repository and per remote object, and the limits on it.
    pub usage: usage::Usage,
    /// `storage.min_free` and the other limits of the whole cache.
    pub limits: CacheLimits,
    /// Held while evicting: one eviction at a time, so that two fills do not both evict for
    /// the same room.
    evicting: tokio::sync::Mutex<()>,
}

/// The configured repositories over one shared cache.
pub struct Engine {
    pub config: Arc<Config>,
    pub cache: Arc<Cache>,
    /// Every repository by name, virtual ones with their members resolved.
    repos: BTreeMap<String, Repo>,
    virtuals: virtual_repo::Virtuals,
}

impl Cache {
    /// Makes room for `extra` more bytes at `key`, evicting the remote objects worth least to
    /// keep as the limits require (`storage.max_size`, the remote's `cache.max_size`,
    /// `storage.min_free`), and reserves it until the returned guard is dropped. `None` when
    /// the room cannot be made (the object is larger than a limit, or not enough can be
    /// evicted): the caller then passes the body through uncached. Nothing is evicted for an
    /// object that could not fit anyway. `key`, and objects being filled, are never evicted.
    pub async fn make_room(&self, key: &str, extra: u64) -> Option<usage::Reservation<'_>> {
        let repo = usage::repo_of(key);
        let limited = self.usage.max_size.is_some() || self.usage.repo_limit(repo).is_some();
        let space = self.storage.object_space();
        let disk_fits = |space: Option<(u64, u64)>, reserved: u64| match space {
            Some((free, total)) => {
                free.saturating_sub(reserved)
                    >= extra.saturating_add(self.limits.min_free.of(total))
            }
            None => self.storage.has_room_for(extra),
        };
        // Larger than a limit: evicting everything would not help.
        let too_large = self.usage.max_size.is_some_and(|m| extra > m)
            || self.usage.repo_limit(repo).is_some_and(|m| extra > m)
            || space.is_some_and(|(_, total)| {
                extra.saturating_add(self.limits.min_free.of(total)) > total
            });
        if too_large {
            return None;
        }
        // No size limit and room on the disk: no need to wait for an eviction in progress.
        if !limited && disk_fits(space, self.usage.reserved()) {
            return Some(self.usage.reserve(repo, extra));
        }
        let _one_at_a_time = self.evicting.lock().await;
        if self.usage.is_seeded() {
            let skip = |k: &str| k == key || self.inflight.contains(k);
            for (reason, scope, over) in self.usage.excess(repo, extra) {
                self.evict(scope.as_deref(), over, &skip, reason).await;
            }
            if let Some((free, total)) = self.storage.object_space() {
                let want = extra
                    .saturating_add(self.limits.min_free.of(total))
                    .saturating_add(self.usage.reserved());
                let short = want.saturating_sub(free);
                if short > 0 {
                    self.evict(None, short, &skip, usage::EvictReason::MinFree)
                        .await;
                }
            }
        }
        let fits = self.usage.excess(repo, extra).is_empty()
            && disk_fits(self.storage.object_space(), self.usage.reserved());
        fits.then(|| self.usage.reserve(repo, extra))
    }

    /// When the object at `key` (with record `meta`) was last read, as far as this process
    /// can tell: what it saw while running, else the file's access time, else when it was
    /// fetched.
    pub fn last_read_ms(&self, key: &str, meta: &ObjectMeta) -> u64 {
        self.usage
            .read_ms(key)
            .or_else(|| self.storage.accessed_ms(key))
            .unwrap_or(meta.fetched_at_ms)
    }

    /// Evicts the objects of each remote in `ages` (name, `cache.evict_unused_after`) not
    /// read for that long. Nothing happens before the start-up count is done.
    pub async fn evict_unused(&self, ages: &[(String, std::time::Duration)]) {
        if !self.usage.is_seeded() {
            return;
        }
        let _one_at_a_time = self.evicting.lock().await;
        for (repo, age) in ages {
            let victims = self.usage.unused(repo, *age);
            self.remove_evicted(victims, usage::EvictReason::Unused)
                .await;
        }
    }

    /// Evicts the objects worth least (of `repo`, or of any remote) until `bytes` are
    /// freed or none is left; record first, so that a reader sees a miss, never a record
    /// without its object. An object being read stays readable by whoever has it open.
    async fn evict(
        &self,
        repo: Option<&str>,
        bytes: u64,
        skip: &(dyn Fn(&str) -> bool + Sync),
        reason: usage::EvictReason,
    ) {
        let victims = self.usage.victims(repo, bytes, skip);
        self.remove_evicted(victims, reason).await;
    }

    async fn remove_evicted(&self, victims: Vec<(String, u64)>, reason: usage::EvictReason) {
        for (victim, size) in victims {
            let removed = async {
                self.meta.delete(&victim).await?;
                self.storage.delete(&victim).await
            };
            match removed.await {
                Ok(_) => {
                    self.hot.forget(&victim);
                    self.usage.removed(&victim, size, &self.metrics);
                    self.metrics
                        .evictions
                        .with_label_values(&[usage::repo_of(&victim), reason.as_str()])
                        .inc();
                    tracing::debug!(
                        key = victim,
                        bytes = size,
                        reason = reason.as_str(),
                        "evicted"
                    );
                }
                Err(e) => {
                    tracing::warn!(key = victim, error = %crate::error_chain(&e), "eviction failed");
                    return;
                }
            }
        }
    }

    /// Writes the record of the object just committed at `key`. When that fails the object is
    /// removed as well (with the record of the copy it replaced, if that can still be
    /// removed): an object is kept only with its own record.
    pub async fn record_committed(&self, key: &str, meta: &ObjectMeta) -> Result<()> {
        let Err(e) = self.meta.put(key, meta).await else {
            return Ok(());
        };
        let _ = self.meta.delete(key).await;
        if let Err(removal) = self.storage.delete(key).await {
            tracing::error!(key, error = %crate::error_chain(&removal), "removing an object whose record could not be written");
        }
        Err(e)
    }
}

impl Engine {
    /// Opens the backends the config names and prepares every repository.
    pub async fn open(config: Config, metrics: Arc<Metrics>) -> Result<Engine> {
        let storage = Storage::from_config(&config).await?;
        let meta = MetaStore::from_config(&config).await?;
        let evictable = config
            .remotes
            .iter()
            .filter_map(|(name, repo)| match repo {
                RepoConfig::Remote(r) => {
                    Some((name.as_str().to_string(), r.cache.max_size.map(|b| b.0)))
                }
                _ => None,
            })
            .collect();
        metrics
            .cache_limit_bytes
            .set(config.limits.max_size.unwrap_or(0) as i64);
        let cache = Arc::new(Cache {
            storage,
            meta,
            inflight: Inflight::default(),
            hot: hot::HotCache::default(),
            usage: usage::Usage::new(evictable, config.limits.max_size),
            limits: config.limits.clone(),
            evicting: tokio::sync::Mutex::new(()),
            metrics,
        });
        let mut repos = BTreeMap::new();
        for (name, repo) in &config.remotes {
            let opened = match repo {
                RepoConfig::Local(c) => Repo::Local(Arc::new(LocalRepo::new(
                    name.as_str(),
                    c.clone(),
                    cache.clone(),
                ))),
                RepoConfig::Remote(c) => Repo::Remote(Arc::new(RemoteRepo::new(
                    name.as_str(),
                    (**c).clone(),
                    cache.clone(),
                    &config.limits,
                )?)),
                RepoConfig::Virtual(_) => continue,
            };
            repos.insert(name.as_str().to_string(), opened);
        }
        for name in config.remotes.keys() {
            virtual_repo::resolve(name.as_str(), &config, &mut repos, &mut Vec::new());
        }
        Ok(Engine {
            config: Arc::new(config),
            cache,
            repos,
            virtuals: virtual_repo::Virtuals::default(),
        })
    }

    /// Removes temp files left by processes that died mid-write.
    pub async fn sweep_temp_files(&self) -> Result<u64> {
        Ok(self.cache.storage.sweep_temp_files().await?
            + self.cache.meta.sweep_temp_files().await?)
    }
}
