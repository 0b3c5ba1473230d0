//! The embedded metadata backend: one JSON record per object under `ROOT/meta/{key};meta.json`,
//! written by temp file (in `ROOT/tmp/`) and rename so that a server and CLI commands on the
//! same data directory always read whole records. No key segment holds `;`, so a record file
//! never has the name of a directory that another key's record needs. Records written before
//! that naming (`{key}.json`) are still read, and replaced by the next write. Negative (404)
//! entries live in this process's memory, bounded by bytes, and so does a short-lived copy of
//! recently read records, which spares a cache hit its file read.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::Expiry;
use moka::sync::Cache;

use super::{MetaEntry, ObjectMeta};
use crate::error::{Error, Result};
use crate::storage::{StorageKey, TEMP_DIR, TEMP_PREFIX, is_absent, sweep_dir, walk};

/// Appended to a key to name its record file.
const SUFFIX: &str = ";meta.json";
/// The suffix of records written by earlier versions, which could collide with directories.
const LEGACY_SUFFIX: &str = ".json";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How long a record read from disk is reused without reading it again. Records written by this
/// process are always current; this bounds how late a change made by another process on the
/// same data directory (a CLI `fetch` or `flush`) is noticed. A flushed object is noticed at
/// once anyway, since its file is gone.
const RECENT_FOR: Duration = Duration::from_secs(1);
/// At most this many records are kept in memory.
const RECENT_MAX: u64 = 65_536;
/// Memory for negative (404) entries, counting each key's length plus `NEGATIVE_ENTRY_COST`;
/// the least recently used go first. 32 MiB holds about 70,000 entries of typical paths.
const NEGATIVE_MAX_BYTES: u64 = 32 * 1024 * 1024;
/// What one negative entry costs beyond its key, as measured: the expiry and moka's
/// bookkeeping (hash, access and write order, timer wheel).
const NEGATIVE_ENTRY_COST: usize = 400;

pub struct EmbeddedMeta {
    root: PathBuf,
    /// Temp files of records being written (`ROOT/tmp/`, shared with the objects).
    tmp: PathBuf,
    /// Paths the upstream answered 404 for, until when (ms since the epoch).
    negative: Cache<String, u64>,
    recent: Cache<String, ObjectMeta>,
}

/// Each negative entry lives until its own expiry.
struct NegativeExpiry;

impl Expiry<String, u64> for NegativeExpiry {
    fn expire_after_create(
        &self,
        _: &String,
        until: &u64,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_millis(until.saturating_sub(crate::now_ms())))
    }

    fn expire_after_update(
        &self,
        _: &String,
        until: &u64,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(Duration::from_millis(until.saturating_sub(crate::now_ms())))
    }
}

fn negative_cache() -> Cache<String, u64> {
    Cache::builder()
        .max_capacity(NEGATIVE_MAX_BYTES)
        .weigher(|k: &String, _: &u64| {
            u32::try_from(k.len() + NEGATIVE_ENTRY_COST).unwrap_or(u32::MAX)
        })
        .expire_after(NegativeExpiry)
        .build()
}

fn recent_cache() -> Cache<String, ObjectMeta> {
    Cache::builder()
        .max_capacity(RECENT_MAX)
        .time_to_live(RECENT_FOR)
        .build()
}

impl EmbeddedMeta {
    pub async fn open(root: &Path) -> Result<EmbeddedMeta> {
        let tmp = root.join(TEMP_DIR);
        let root = root.join("meta");
        for dir in [&root, &tmp] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(Error::storage(format!("creating {}", dir.display())))?;
        }
        Ok(EmbeddedMeta {
            root,
            tmp,
            negative: negative_cache(),
            recent: recent_cache(),
        })
    }

    fn remember(&self, key: &str, meta: Option<&ObjectMeta>) {
        match meta {
            Some(m) => self.recent.insert(key.to_string(), m.clone()),
            None => self.recent.invalidate(key),
        }
    }

    fn recent(&self, key: &str) -> Option<ObjectMeta> {
        self.recent.get(key)
    }

    /// The record file of `key`, and where an earlier version kept it.
    fn paths_of(&self, key: &str) -> Result<(PathBuf, PathBuf)> {
        let key = StorageKey::parse(key)
            .map_err(|_| Error::BadPath(format!("unsafe metadata key {key:?}")))?;
        Ok((
            self.root.join(format!("{key}{SUFFIX}")),
            self.root.join(format!("{key}{LEGACY_SUFFIX}")),
        ))
    }

    pub async fn get(&self, key: &str) -> Result<Option<ObjectMeta>> {
        if let Some(m) = self.recent(key) {
            return Ok(Some(m));
        }
        let (path, legacy) = self.paths_of(key)?;
        let bytes = match read_record(&path, key).await? {
            Some(bytes) => bytes,
            None => match read_record(&legacy, key).await? {
                Some(bytes) => bytes,
                None => return Ok(None),
            },
        };
        let meta: ObjectMeta = serde_json::from_slice(&bytes)
            .map_err(Error::metadata(format!("decoding record of {key}")))?;
        self.remember(key, Some(&meta));
        Ok(Some(meta))
    }

    pub async fn put(&self, key: &str, meta: &ObjectMeta) -> Result<()> {
        let (path, legacy) = self.paths_of(key)?;
        let body = serde_json::to_vec(meta).map_err(Error::metadata("encoding record"))?;
        let ctx = format!("writing record of {key}");
        // Forget first: a failed write must not leave the new record served from memory.
        self.remember(key, None);
        let tmp_dir = self.tmp.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let dir = path.parent().expect("record path has a parent");
            std::fs::create_dir_all(dir)?;
            let tmp = tmp_dir.join(format!(
                "{TEMP_PREFIX}{}-m{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let result = std::fs::write(&tmp, &body).and_then(|_| std::fs::rename(&tmp, &path));
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            } else if std::fs::symlink_metadata(&legacy).is_ok_and(|m| m.is_file()) {
                let _ = std::fs::remove_file(&legacy);
            }
            result
        })
        .await
        .map_err(|e| Error::metadata(ctx.clone())(io::Error::other(e.to_string())))?
        .map_err(Error::metadata(ctx))?;
        self.remember(key, Some(meta));
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> Result<bool> {
        let (path, legacy) = self.paths_of(key)?;
        self.remember(key, None);
        let mut removed = false;
        for p in [path, legacy] {
            // A legacy name may be another key's directory: only files are records.
            match tokio::fs::symlink_metadata(&p).await {
                Ok(m) if m.is_file() => {}
                _ => continue,
            }
            match tokio::fs::remove_file(&p).await {
                Ok(()) => removed = true,
                Err(e) if is_absent(&e) => {}
                Err(e) => return Err(Error::metadata(format!("deleting record of {key}"))(e)),
            }
        }
        Ok(removed)
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<MetaEntry>> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.each(prefix, move |entry| {
            let _ = tx.send(entry);
        })
        .await?;
        let mut out: Vec<MetaEntry> = rx.try_iter().collect();
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Calls `f` with every record under the directory `prefix`, one at a time, off the async
    /// workers: nothing is collected, however many records there are. A key with both a
    /// current and a legacy record is reported once, with the current. In no set order.
    pub async fn each<F>(&self, prefix: &str, mut f: F) -> Result<()>
    where
        F: FnMut(MetaEntry) + Send + 'static,
    {
        let root = self.root.clone();
        let prefix = prefix.trim_end_matches('/').to_string();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let start = if prefix.is_empty() {
                root.clone()
            } else {
                root.join(&prefix)
            };
            walk(&start, &mut |path, _| {
                let Some(rel) = path.strip_prefix(&root).ok().and_then(|r| r.to_str()) else {
                    return;
                };
                let key = match rel.strip_suffix(SUFFIX) {
                    Some(key) => key,
                    None => match rel.strip_suffix(LEGACY_SUFFIX) {
                        // Only when the current record is absent.
                        Some(key) if !root.join(format!("{key}{SUFFIX}")).is_file() => key,
                        _ => return,
                    },
                };
                if path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(TEMP_PREFIX))
                {
                    return;
                }
                if let Ok(bytes) = std::fs::read(path)
                    && let Ok(meta) = serde_json::from_slice(&bytes)
                {
                    let entry = MetaEntry {
                        key: key.to_string(),
                        meta,
                    };
                    f(entry);
                }
            })
        })
        .await
        .map_err(|e| Error::metadata("listing records")(io::Error::other(e.to_string())))?
        .map_err(Error::metadata("listing records"))
    }

    pub fn is_negative(&self, key: &str) -> bool {
        self.negative
            .get(key)
            .is_some_and(|until| crate::now_ms() < until)
    }

    pub fn put_negative(&self, key: &str, expires_at_ms: u64) {
        self.negative.insert(key.to_string(), expires_at_ms);
    }

    pub fn clear_negative(&self, prefix: &str) -> u64 {
        let keys: Vec<std::sync::Arc<String>> = self
            .negative
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k)
            .collect();
        for k in &keys {
            self.negative.invalidate(k.as_str());
        }
        keys.len() as u64
    }

    pub async fn sweep_temp_files(&self) -> Result<u64> {
        let root = self.tmp.clone();
        tokio::task::spawn_blocking(move || sweep_dir(&root))
            .await
            .map_err(|e| Error::metadata("sweep")(io::Error::other(e.to_string())))?
            .map_err(Error::metadata("sweeping temp files"))
    }

    pub async fn check(&self) -> Result<()> {
        tokio::fs::metadata(&self.root)
            .await
            .map(|_| ())
            .map_err(Error::metadata("metadata directory"))
    }
}

/// The bytes of record file `path`, or `None` when there is none. A legacy name may be a
/// directory (other keys' records live below it): that holds no record either.
async fn read_record(path: &Path, key: &str) -> Result<Option<Vec<u8>>> {
    match tokio::fs::read(path).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if is_absent(&e) || e.kind() == io::ErrorKind::IsADirectory => Ok(None),
        Err(e) => Err(Error::metadata(format!("reading record of {key}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::CacheClass;

    fn sample() -> ObjectMeta {
        ObjectMeta {
            size: 3,
            sha256: crate::digest::Sha256Digest::of(b"ab"),
            etag: Some("\"e\"".into()),
            last_modified: None,
            content_type: Some("text/plain".into()),
            fetched_at_ms: 1,
            class: CacheClass::Index,
            expires_at_ms: Some(10),
        }
    }

    #[tokio::test]
    async fn round_trip_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let m = EmbeddedMeta::open(dir.path()).await.unwrap();
        m.put("r/a/b", &sample()).await.unwrap();
        m.put("s/c", &sample()).await.unwrap();
        assert_eq!(m.get("r/a/b").await.unwrap(), Some(sample()));
        let listed: Vec<_> = m
            .list("r/")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(listed, vec!["r/a/b"]);
        assert!(m.delete("r/a/b").await.unwrap());
        assert_eq!(m.get("r/a/b").await.unwrap(), None);
        assert!(!sample().is_fresh(10));
        assert!(sample().is_fresh(9));
    }

    #[tokio::test]
    async fn a_directory_at_a_legacy_record_name_is_not_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let m = EmbeddedMeta::open(dir.path()).await.unwrap();
        // The record of `r/x.json/y` makes `meta/r/x.json/`, the legacy name of `r/x`'s record.
        m.put("r/x.json/y", &sample()).await.unwrap();
        assert_eq!(m.get("r/x").await.unwrap(), None);
        assert!(!m.delete("r/x").await.unwrap());
        m.put("r/x", &sample()).await.unwrap();
        assert_eq!(m.get("r/x").await.unwrap(), Some(sample()));
        assert_eq!(m.get("r/x.json/y").await.unwrap(), Some(sample()));
        let keys: Vec<_> = m
            .list("r")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, vec!["r/x", "r/x.json/y"]);
    }

    #[test]
    fn negative_entries_expire() {
        let dir = tempfile::tempdir().unwrap();
        let m = EmbeddedMeta {
            root: dir.path().to_path_buf(),
            tmp: dir.path().to_path_buf(),
            negative: negative_cache(),
            recent: recent_cache(),
        };
        m.put_negative("r/x", crate::now_ms() + 60_000);
        m.put_negative("r/y", crate::now_ms() - 1);
        assert!(m.is_negative("r/x"));
        assert!(!m.is_negative("r/y"));
        assert_eq!(m.clear_negative("r/"), 1);
        assert!(!m.is_negative("r/x"));
    }
}
