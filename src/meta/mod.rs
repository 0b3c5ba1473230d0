//! Cache metadata: one record per stored object (size, digest, upstream validators, class,
//! expiry) and short-lived negative entries for upstream 404s, behind the configured backend.

mod coordination;
mod embedded;
mod redis;
mod redis_commits;
mod redis_usage;

use serde::{Deserialize, Serialize};

use crate::config::{Config, MetadataConfig};
use crate::digest::Sha256Digest;
use crate::error::Result;
use crate::package::CacheClass;

pub use coordination::{CommitWatch, Coordinator};
pub use embedded::EmbeddedMeta;
pub use redis::RedisMeta;
pub use redis_usage::{Candidate, EVICTION_LOCK_TTL, SharedTotals};

/// What we know about one stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the bytes, stored as the bare lower-case hex.
    pub sha256: Sha256Digest,
    /// Upstream `ETag`, for `If-None-Match`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Upstream `Last-Modified`, for `If-Modified-Since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// Upstream `Content-Type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// When the bytes (or their last revalidation) came from upstream, ms since the epoch.
    pub fetched_at_ms: u64,
    /// Index or file.
    pub class: CacheClass,
    /// When the object must be revalidated, ms since the epoch; `None` = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

impl ObjectMeta {
    /// True while the object may be served without asking upstream.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|t| now_ms < t)
    }
}

/// A stored record with its key, as listed.
#[derive(Debug, Clone)]
pub struct MetaEntry {
    pub key: String,
    pub meta: ObjectMeta,
}

/// The configured metadata backend.
pub enum MetaStore {
    Embedded(EmbeddedMeta),
    /// Boxed: the client and its settings are much larger than the embedded backend.
    Redis(Box<RedisMeta>),
}

impl MetaStore {
    pub async fn from_config(config: &Config) -> Result<MetaStore> {
        match &config.metadata {
            MetadataConfig::Embedded { path } => {
                Ok(MetaStore::Embedded(EmbeddedMeta::open(path).await?))
            }
            MetadataConfig::Redis(redis) => {
                let remotes = config
                    .remotes
                    .iter()
                    .filter(|(_, r)| matches!(r, crate::config::RepoConfig::Remote(_)))
                    .map(|(name, _)| name.as_str().to_string())
                    .collect();
                Ok(MetaStore::Redis(Box::new(RedisMeta::open(redis, remotes)?)))
            }
        }
    }

    /// The Redis backend, where usage is shared by every replica.
    pub fn shared(&self) -> Option<&RedisMeta> {
        match self {
            MetaStore::Embedded(_) => None,
            MetaStore::Redis(m) => Some(m.as_ref()),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<ObjectMeta>> {
        match self {
            MetaStore::Embedded(m) => m.get(key).await,
            MetaStore::Redis(m) => m.get(key).await,
        }
    }

    /// Writes the record of `key`; with a shared backend this also wakes the replicas waiting
    /// for its commit.
    pub async fn put(&self, key: &str, meta: &ObjectMeta) -> Result<()> {
        match self {
            MetaStore::Embedded(m) => m.put(key, meta).await,
            MetaStore::Redis(m) => m.put(key, meta).await,
        }
    }

    /// Removes a record; true when it existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        match self {
            MetaStore::Embedded(m) => m.delete(key).await,
            MetaStore::Redis(m) => m.delete(key).await,
        }
    }

    /// Removes many records; returns how many existed.
    pub async fn delete_many(&self, keys: &[String]) -> Result<u64> {
        match self {
            MetaStore::Embedded(m) => {
                let mut n = 0;
                for k in keys {
                    n += u64::from(m.delete(k).await?);
                }
                Ok(n)
            }
            MetaStore::Redis(m) => m.delete_many(keys).await,
        }
    }

    /// Fill coordination across replicas, when the backend is shared by them.
    pub fn coordination(&self) -> Option<Coordinator<'_>> {
        match self {
            MetaStore::Embedded(_) => None,
            MetaStore::Redis(m) => Some(Coordinator::new(m)),
        }
    }

    /// Every record under the directory `prefix` (`"fedora/"`), or all.
    pub async fn list(&self, prefix: &str) -> Result<Vec<MetaEntry>> {
        match self {
            MetaStore::Embedded(m) => m.list(prefix).await,
            MetaStore::Redis(m) => m.list(prefix).await,
        }
    }

    /// Calls `f` with every record under the directory `prefix`, in no set order, off the
    /// async workers. The embedded backend walks its records one at a time and holds none of
    /// them; Redis lists the keys first (SCAN may repeat one), then reads them in batches.
    pub async fn each<F>(&self, prefix: &str, mut f: F) -> Result<()>
    where
        F: FnMut(MetaEntry) + Send + 'static,
    {
        match self {
            MetaStore::Embedded(m) => m.each(prefix, f).await,
            MetaStore::Redis(m) => {
                let entries = m.list(prefix).await?;
                tokio::task::spawn_blocking(move || entries.into_iter().for_each(&mut f))
                    .await
                    .map_err(|e| {
                        crate::error::Error::metadata("listing records")(std::io::Error::other(
                            e.to_string(),
                        ))
                    })
            }
        }
    }

    /// True while an upstream 404 for `key` is remembered.
    pub async fn is_negative(&self, key: &str) -> Result<bool> {
        match self {
            MetaStore::Embedded(m) => Ok(m.is_negative(key)),
            MetaStore::Redis(m) => m.is_negative(key).await,
        }
    }

    /// Remembers an upstream 404 for `key` until `expires_at_ms` (waking waiters, as `put`).
    pub async fn put_negative(&self, key: &str, expires_at_ms: u64) -> Result<()> {
        match self {
            MetaStore::Embedded(m) => {
                m.put_negative(key, expires_at_ms);
                Ok(())
            }
            MetaStore::Redis(m) => m.put_negative(key, expires_at_ms).await,
        }
    }

    /// Forgets negative entries under `prefix`; returns how many.
    pub async fn clear_negative(&self, prefix: &str) -> Result<u64> {
        match self {
            MetaStore::Embedded(m) => Ok(m.clear_negative(prefix)),
            MetaStore::Redis(m) => m.clear_negative(prefix).await,
        }
    }

    pub async fn sweep_temp_files(&self) -> Result<u64> {
        match self {
            MetaStore::Embedded(m) => m.sweep_temp_files().await,
            MetaStore::Redis(_) => Ok(0),
        }
    }

    pub async fn check(&self) -> Result<()> {
        match self {
            MetaStore::Embedded(m) => m.check().await,
            MetaStore::Redis(m) => m.check().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as stored by earlier versions (bare hex digest) reads and writes back unchanged.
    #[test]
    fn record_in_stored_form_round_trips() {
        let stored = r#"{"size":5,"sha256":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","etag":"\"v1\"","fetched_at_ms":1700000000000,"class":"file"}"#;
        let meta: ObjectMeta = serde_json::from_str(stored).unwrap();
        assert_eq!(meta.sha256, Sha256Digest::of(b"hello"));
        assert_eq!(serde_json::to_string(&meta).unwrap(), stored);
    }
}
