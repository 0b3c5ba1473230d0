//! Flushing cached content: by remote, by class, or everything. Local repositories are never
//! touched. Used by `artifactapi flush` and `POST /api/v1/cache/flush`.

use serde::Serialize;

use super::Engine;
use crate::error::{Error, Result};
use crate::package::CacheClass;

/// What a flush removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushScope {
    /// Every cached object and record.
    All,
    /// Index-class objects only (metadata that must be re-fetched).
    Index,
    /// File-class objects only.
    Files,
}

impl std::str::FromStr for FlushScope {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "all" => Ok(FlushScope::All),
            "index" => Ok(FlushScope::Index),
            "files" | "file" => Ok(FlushScope::Files),
            other => Err(Error::BadRequest(format!(
                "unknown flush type {other:?}: use all, index or files"
            ))),
        }
    }
}

/// What one flush removed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FlushReport {
    /// Repositories flushed.
    pub remotes: Vec<String>,
    /// Stored objects deleted.
    pub objects: u64,
    /// Bytes of the deleted objects.
    pub bytes: u64,
    /// Metadata records deleted.
    pub metadata: u64,
    /// Remembered upstream 404s forgotten.
    pub negative: u64,
}

impl Engine {
    /// Flushes `remote` (or every remote repository) of the objects in `scope`; with
    /// `unused_for`, only of those not read for that long.
    pub async fn flush(
        &self,
        remote: Option<&str>,
        scope: FlushScope,
        unused_for: Option<std::time::Duration>,
    ) -> Result<FlushReport> {
        let cutoff = unused_for.map(|d| crate::now_ms().saturating_sub(d.as_millis() as u64));
        let names: Vec<String> = match remote {
            Some(name) => vec![self.remote(name)?.name().to_string()],
            None => self.remotes().map(|r| r.name().to_string()).collect(),
        };
        let mut report = FlushReport {
            remotes: names.clone(),
            ..FlushReport::default()
        };
        let cache = &self.cache;
        for name in &names {
            let prefix = format!("{name}/");
            let records = cache.meta.list(&prefix).await?;
            let wanted: Vec<String> = records
                .iter()
                .filter(|entry| match scope {
                    FlushScope::All => true,
                    FlushScope::Index => entry.meta.class == CacheClass::Index,
                    FlushScope::Files => entry.meta.class == CacheClass::File,
                })
                .filter(|entry| {
                    cutoff.is_none_or(|c| cache.last_read_ms(&entry.key, &entry.meta) < c)
                })
                .map(|entry| entry.key.clone())
                .collect();
            // Records first: a reader then sees a miss, never a record without its object.
            report.metadata += cache.meta.delete_many(&wanted).await?;
            let stored = cache.storage.list(&prefix).await?;
            // With `all` (and no age), also objects whose record is gone (an interrupted
            // flush, a lost record).
            let wanted: std::collections::HashSet<String> = wanted.into_iter().collect();
            let orphans_too = scope == FlushScope::All && cutoff.is_none();
            let doomed: Vec<_> = stored
                .into_iter()
                .filter(|o| orphans_too || wanted.contains(&o.key))
                .collect();
            let keys: Vec<String> = doomed.iter().map(|o| o.key.clone()).collect();
            cache.storage.delete_many(&keys).await?;
            for o in &doomed {
                cache.usage.removed(&o.key, o.size, &cache.metrics);
            }
            report.objects += keys.len() as u64;
            report.bytes += doomed.iter().map(|o| o.size).sum::<u64>();
            report.negative += cache.meta.clear_negative(&prefix).await?;
        }
        tracing::info!(
            remotes = ?report.remotes,
            objects = report.objects,
            bytes = report.bytes,
            "flushed"
        );
        Ok(report)
    }
}
