//! The embedded metadata backend: one JSON record per object under `ROOT/meta/{key}.json`,
//! written by temp file (in `ROOT/tmp/`) and rename so that a server and CLI commands on the same data directory
//! always read whole records. Negative (404) entries live in this process's memory, and so does
//! a short-lived copy of recently read records, which spares a cache hit its file read.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{MetaEntry, ObjectMeta};
use crate::error::{Error, Result};
use crate::storage::{StorageKey, TEMP_DIR, TEMP_PREFIX, is_absent, sweep_dir, walk};

const SUFFIX: &str = ".json";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How long a record read from disk is reused without reading it again. Records written by this
/// process are always current; this bounds how late a change made by another process on the
/// same data directory (a CLI `fetch` or `flush`) is noticed. A flushed object is noticed at
/// once anyway, since its file is gone.
const RECENT_FOR: Duration = Duration::from_secs(1);
/// At most this many records are kept in memory.
const RECENT_MAX: usize = 65_536;

pub struct EmbeddedMeta {
    root: PathBuf,
    /// Temp files of records being written (`ROOT/tmp/`, shared with the objects).
    tmp: PathBuf,
    negative: Mutex<HashMap<String, u64>>,
    recent: Mutex<HashMap<String, (Instant, ObjectMeta)>>,
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
            negative: Mutex::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
        })
    }

    fn remember(&self, key: &str, meta: Option<&ObjectMeta>) {
        let mut recent = self.recent.lock().expect("record cache lock");
        match meta {
            Some(m) => {
                if recent.len() >= RECENT_MAX && !recent.contains_key(key) {
                    let now = Instant::now();
                    recent.retain(|_, (at, _)| now.duration_since(*at) < RECENT_FOR);
                    if recent.len() >= RECENT_MAX {
                        recent.clear();
                    }
                }
                recent.insert(key.to_string(), (Instant::now(), m.clone()));
            }
            None => {
                recent.remove(key);
            }
        }
    }

    fn recent(&self, key: &str) -> Option<ObjectMeta> {
        let recent = self.recent.lock().expect("record cache lock");
        recent
            .get(key)
            .filter(|(at, _)| at.elapsed() < RECENT_FOR)
            .map(|(_, m)| m.clone())
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        let key = StorageKey::parse(key)
            .map_err(|_| Error::BadPath(format!("unsafe metadata key {key:?}")))?;
        Ok(self.root.join(format!("{key}{SUFFIX}")))
    }

    pub async fn get(&self, key: &str) -> Result<Option<ObjectMeta>> {
        if let Some(m) = self.recent(key) {
            return Ok(Some(m));
        }
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => {
                let meta: ObjectMeta = serde_json::from_slice(&bytes)
                    .map_err(Error::metadata(format!("decoding record of {key}")))?;
                self.remember(key, Some(&meta));
                Ok(Some(meta))
            }
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(Error::metadata(format!("reading record of {key}"))(e)),
        }
    }

    pub async fn put(&self, key: &str, meta: &ObjectMeta) -> Result<()> {
        let path = self.path_of(key)?;
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
        let path = self.path_of(key)?;
        self.remember(key, None);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(Error::metadata(format!("deleting record of {key}"))(e)),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<MetaEntry>> {
        let root = self.root.clone();
        let prefix = prefix.trim_end_matches('/').to_string();
        tokio::task::spawn_blocking(move || -> io::Result<Vec<MetaEntry>> {
            let start = if prefix.is_empty() {
                root.clone()
            } else {
                root.join(&prefix)
            };
            let mut out = Vec::new();
            walk(&start, &mut |path, _| {
                let Some(rel) = path.strip_prefix(&root).ok().and_then(|r| r.to_str()) else {
                    return;
                };
                let Some(key) = rel.strip_suffix(SUFFIX) else {
                    return;
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
                    out.push(MetaEntry {
                        key: key.to_string(),
                        meta,
                    });
                }
            })?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(|e| Error::metadata("listing records")(io::Error::other(e.to_string())))?
        .map_err(Error::metadata("listing records"))
    }

    pub fn is_negative(&self, key: &str) -> bool {
        let now = crate::now_ms();
        let mut map = self.negative.lock().expect("negative cache lock");
        match map.get(key) {
            Some(&until) if now < until => true,
            Some(_) => {
                map.remove(key);
                false
            }
            None => false,
        }
    }

    pub fn put_negative(&self, key: &str, expires_at_ms: u64) {
        let now = crate::now_ms();
        let mut map = self.negative.lock().expect("negative cache lock");
        if map.len() > 100_000 {
            map.retain(|_, until| *until > now);
        }
        map.insert(key.to_string(), expires_at_ms);
    }

    pub fn clear_negative(&self, prefix: &str) -> u64 {
        let mut map = self.negative.lock().expect("negative cache lock");
        let before = map.len();
        map.retain(|k, _| !k.starts_with(prefix));
        (before - map.len()) as u64
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

    #[test]
    fn negative_entries_expire() {
        let dir = tempfile::tempdir().unwrap();
        let m = EmbeddedMeta {
            root: dir.path().to_path_buf(),
            tmp: dir.path().to_path_buf(),
            negative: Mutex::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
        };
        m.put_negative("r/x", crate::now_ms() + 60_000);
        m.put_negative("r/y", crate::now_ms() - 1);
        assert!(m.is_negative("r/x"));
        assert!(!m.is_negative("r/y"));
        assert_eq!(m.clear_negative("r/"), 1);
        assert!(!m.is_negative("r/x"));
    }
}
