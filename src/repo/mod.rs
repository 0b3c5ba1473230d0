//! Repositories and the cache engine. `Engine` is what the server and the CLI hold: the config,
//! the shared cache (storage, metadata, fills in flight, metrics) and one opened repository per
//! configured name. Callers ask it for a repository and then for a path; it never sees HTTP
//! serving.

pub mod docker;
mod evict;
pub mod flush;
pub mod hot;
pub mod inflight;
pub mod lease;
pub mod local;
pub mod pypi;
pub mod remote;
pub mod resolve;
pub mod usage;
pub mod virtual_repo;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{CacheLimits, Config, RepoConfig};
use crate::error::{Error, Result};
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
    /// `storage.min_free` and the other limits of the whole cache; replaced on reload.
    limits: std::sync::RwLock<CacheLimits>,
    /// Held while evicting: one eviction at a time, so that two fills do not both evict for
    /// the same room.
    pub(crate) evicting: tokio::sync::Mutex<()>,
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
    /// `storage.min_free`.
    pub fn min_free(&self) -> crate::config::MinFree {
        self.limits
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .min_free
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
        metrics
            .cache_limit_bytes
            .set(config.limits.max_size.unwrap_or(0) as i64);
        let shared = meta.shared().is_some();
        let cache = Arc::new(Cache {
            storage,
            meta,
            inflight: Inflight::default(),
            hot: hot::HotCache::default(),
            usage: usage::Usage::with_sharing(
                remote_limits(&config),
                config.limits.max_size,
                shared,
            ),
            limits: std::sync::RwLock::new(config.limits.clone()),
            evicting: tokio::sync::Mutex::new(()),
            metrics,
        });
        Engine::over(config, cache)
    }

    /// The repositories of a new `config` over this engine's cache, which goes on: fills in
    /// flight, the usage index and the backends stay as they are. Refused when the storage or
    /// metadata settings changed, as those need a restart; the new limits apply from now on.
    pub fn reload(&self, config: Config) -> Result<Engine> {
        for (what, same) in [
            ("storage", config.storage == self.config.storage),
            ("metadata", config.metadata == self.config.metadata),
        ] {
            if !same {
                return Err(Error::BadRequest(format!(
                    "the {what} settings changed: that needs a restart; nothing was reloaded"
                )));
            }
        }
        let engine = Engine::over(config, self.cache.clone())?;
        let cache = &self.cache;
        let config = &engine.config;
        cache
            .usage
            .set_limits(remote_limits(config), config.limits.max_size);
        *cache
            .limits
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config.limits.clone();
        if let Some(redis) = cache.meta.shared() {
            redis.set_remotes(remote_limits(config).into_keys().collect());
        }
        cache
            .metrics
            .cache_limit_bytes
            .set(config.limits.max_size.unwrap_or(0) as i64);
        Ok(engine)
    }

    /// Every repository of `config`, over `cache`.
    fn over(config: Config, cache: Arc<Cache>) -> Result<Engine> {
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

    /// The remotes of this configuration with a `cache.evict_unused_after`, and that age.
    pub fn remote_ages(&self) -> Vec<(String, std::time::Duration)> {
        self.config
            .remotes
            .iter()
            .filter_map(|(name, repo)| match repo {
                RepoConfig::Remote(r) => r
                    .cache
                    .evict_unused_after
                    .filter(|a| !a.is_zero())
                    .map(|a| (name.as_str().to_string(), a.0)),
                _ => None,
            })
            .collect()
    }

    /// Removes temp files left by processes that died mid-write.
    pub async fn sweep_temp_files(&self) -> Result<u64> {
        Ok(self.cache.storage.sweep_temp_files().await?
            + self.cache.meta.sweep_temp_files().await?)
    }
}

/// The remote repositories of `config`, each with its `cache.max_size`.
fn remote_limits(config: &Config) -> std::collections::HashMap<String, Option<u64>> {
    config
        .remotes
        .iter()
        .filter_map(|(name, repo)| match repo {
            RepoConfig::Remote(r) => {
                Some((name.as_str().to_string(), r.cache.max_size.map(|b| b.0)))
            }
            _ => None,
        })
        .collect()
}
