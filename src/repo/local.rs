//! Local repositories: files uploaded through the API and kept under `{repo}/{path}` in
//! storage, each with a record (size, sha256, content type, upload time). An upload streams
//! into a temp object that becomes visible only when the whole body is in and its checksum
//! holds. Local content never expires, and flush never touches it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::Serialize;

use super::{Cache, CacheStatus, RepoPath, Served};
use crate::config::{LocalConfig, PackageKind};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::meta::ObjectMeta;
use crate::package::{CacheClass, classify};
use crate::storage::{ByteRange, CommitError, Expect, Mismatch};

/// Bytes gathered from the client before a write to storage.
const WRITE_BATCH: usize = 256 * 1024;

pub struct LocalRepo {
    name: String,
    config: LocalConfig,
    cache: Arc<Cache>,
    /// Keys with an upload in progress in this process: a second upload of the same path is
    /// refused rather than raced.
    uploading: Mutex<HashSet<String>>,
}

/// The result of an upload.
#[derive(Debug, Clone, Serialize)]
pub struct Uploaded {
    /// False when an existing file was replaced (`allow_overwrite`).
    pub created: bool,
    pub size: u64,
    pub sha256: Sha256Digest,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListEntry {
    pub name: String,
    /// `file` or `directory`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded_at_ms: Option<u64>,
}

/// A page of a directory listing, and the cursor of the next (`None` on the last page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub entries: Vec<ListEntry>,
    pub next: Option<String>,
}

/// Removes its key from the in-progress set when the upload ends, however it ends.
struct UploadSlot<'a> {
    set: &'a Mutex<HashSet<String>>,
    key: String,
}

impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        self.set.lock().expect("upload lock").remove(&self.key);
    }
}

impl LocalRepo {
    pub fn new(name: &str, config: LocalConfig, cache: Arc<Cache>) -> LocalRepo {
        LocalRepo {
            name: name.to_string(),
            config,
            cache,
            uploading: Mutex::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn package(&self) -> PackageKind {
        self.config.package
    }

    pub fn config(&self) -> &LocalConfig {
        &self.config
    }

    fn key(&self, path: &RepoPath) -> String {
        format!("{}/{}", self.name, path)
    }

    /// include_patterns, as for remotes: index files are exempt.
    pub fn check_allowed(&self, path: &RepoPath) -> Result<()> {
        let patterns = &self.config.include_patterns;
        if patterns.is_empty()
            || classify(
                self.config.package,
                path.as_str(),
                &self.config.index_patterns,
            ) == CacheClass::Index
            || patterns.iter().any(|p| p.is_match(path.as_str()))
        {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }

    /// Stores `body` at `path`. With `expected_sha256` the body must hash to it. Nothing is
    /// visible until the whole body is in and checked; on any failure nothing is kept. The
    /// upload must leave `storage.min_free` free (remote objects are evicted for it): one of
    /// announced `length` is refused before its body is read, others as they pass it.
    pub async fn put<S>(
        &self,
        path: &RepoPath,
        body: S,
        length: Option<u64>,
        expected_sha256: Option<&Sha256Digest>,
        content_type: Option<String>,
    ) -> Result<Uploaded>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send,
    {
        self.check_allowed(path)?;
        let key = self.key(path);
        let _slot = self.claim(&key)?;
        let storage = &self.cache.storage;
        let previous = storage.head(&key).await?;
        if previous.is_some() && !self.config.allow_overwrite {
            return Err(Error::Conflict(format!(
                "{path} already exists and repository '{}' does not allow overwrites",
                self.name
            )));
        }
        self.check_no_clash(path).await?;
        if let Some(n) = length
            && !self.cache.make_disk_room(n).await
        {
            return Err(no_room(n));
        }

        let mut writer = storage.writer(&key).await?;
        let mut batch = BytesMut::with_capacity(WRITE_BATCH);
        let mut body = std::pin::pin!(body);
        let mut written = 0u64;
        let mut write = async |batch: Bytes| -> Result<()> {
            written += batch.len() as u64;
            if length.is_none() && !self.cache.make_disk_room(batch.len() as u64).await {
                return Err(no_room(written));
            }
            writer.write(batch).await.map_err(space_error)
        };
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| Error::BadRequest(format!("the upload body ended early: {e}")))?;
            batch.extend_from_slice(&chunk);
            if batch.len() >= WRITE_BATCH {
                write(batch.split().freeze()).await?;
            }
        }
        if !batch.is_empty() {
            write(batch.split().freeze()).await?;
        }
        let expect = Expect::default().sha256(expected_sha256);
        let committed = match writer.commit_verified(expect).await.map_err(|e| match e {
            CommitError::Storage(e) => CommitError::Storage(space_error(e)),
            mismatch => mismatch,
        }) {
            Ok(c) => c,
            Err(CommitError::Mismatch(Mismatch::Sha256 { expected, actual })) => {
                return Err(Error::ChecksumMismatch {
                    expected: expected.hex(),
                    actual: actual.hex(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let (total, sha256) = (committed.size, committed.sha256);
        let meta = ObjectMeta {
            size: total,
            sha256,
            etag: None,
            last_modified: None,
            content_type,
            fetched_at_ms: crate::now_ms(),
            class: CacheClass::File,
            expires_at_ms: None,
        };
        let (usage, metrics) = (&self.cache.usage, &self.cache.metrics);
        if let Err(e) = self.cache.record_committed(&key, &meta).await {
            // The copy this upload replaced is gone with it.
            if let Some(old) = previous {
                usage.removed(&key, old, metrics);
            }
            return Err(e);
        }
        usage.stored(&key, total, previous, metrics);
        Ok(Uploaded {
            created: previous.is_none(),
            size: total,
            sha256,
        })
    }

    fn claim(&self, key: &str) -> Result<UploadSlot<'_>> {
        let mut set = self.uploading.lock().expect("upload lock");
        if !set.insert(key.to_string()) {
            return Err(Error::Conflict(
                "an upload of this path is already in progress".into(),
            ));
        }
        Ok(UploadSlot {
            set: &self.uploading,
            key: key.to_string(),
        })
    }

    /// A file cannot also be a directory: `a/b` cannot be stored under a file `a`, nor `a`
    /// over a directory `a/`.
    async fn check_no_clash(&self, path: &RepoPath) -> Result<()> {
        let storage = &self.cache.storage;
        let segments: Vec<&str> = path.segments().collect();
        for i in 1..segments.len() {
            let parent = segments[..i].join("/");
            if storage
                .head(&format!("{}/{parent}", self.name))
                .await?
                .is_some()
            {
                return Err(Error::Conflict(format!(
                    "{parent} is a file, not a directory"
                )));
            }
        }
        if !storage
            .list(&format!("{}/", self.key(path)))
            .await?
            .is_empty()
        {
            return Err(Error::Conflict(format!("{path} is a directory")));
        }
        Ok(())
    }

    /// GET of a stored file, with an optional range.
    pub async fn get(&self, path: &RepoPath, range: Option<ByteRange>) -> Result<Served> {
        self.check_allowed(path)?;
        let key = self.key(path);
        let Some(read) = self.cache.storage.get(&key, range).await? else {
            return Err(Error::NotFound);
        };
        let meta = self.cache.meta.get(&key).await?;
        let content_length = match read.range {
            Some((a, b)) => b - a + 1,
            None => read.size,
        };
        let mut served = served_from(meta.as_ref(), content_length);
        served.range = read.range.map(|(a, b)| (a, b, read.size));
        served.body = Some(read.body);
        Ok(served)
    }

    /// HEAD of a stored file.
    pub async fn head(&self, path: &RepoPath) -> Result<Served> {
        self.check_allowed(path)?;
        let key = self.key(path);
        let Some(size) = self.cache.storage.head(&key).await? else {
            return Err(Error::NotFound);
        };
        let meta = self.cache.meta.get(&key).await?;
        Ok(served_from(meta.as_ref(), size))
    }

    /// Removes a file and its record.
    pub async fn delete(&self, path: &RepoPath) -> Result<()> {
        let key = self.key(path);
        let size = self.cache.storage.head(&key).await?;
        // Object first: a record without its object is never served.
        let existed = self.cache.storage.delete(&key).await?;
        self.cache.meta.delete(&key).await?;
        if !existed {
            return Err(Error::NotFound);
        }
        self.cache
            .usage
            .removed(&key, size.unwrap_or(0), &self.cache.metrics);
        Ok(())
    }

    /// One page of directory `dir` (the root when `None`): at most `limit` entries after
    /// cursor `after`, and the cursor of the next page. Only that directory level is read from
    /// storage, and only the records of the files shown. An empty or unknown directory other
    /// than the root is `NotFound`.
    pub async fn list(
        &self,
        dir: Option<&RepoPath>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage> {
        let prefix = match dir {
            Some(d) => format!("{}/", self.key(d)),
            None => format!("{}/", self.name),
        };
        let page = self.cache.storage.list_dir(&prefix, after, limit).await?;
        if page.entries.is_empty() && dir.is_some() && after.is_none() {
            return Err(Error::NotFound);
        }
        let meta = &self.cache.meta;
        let entries = futures::stream::iter(page.entries)
            .map(|e| {
                let key = format!("{prefix}{}", e.name);
                async move {
                    let Some(size) = e.size else {
                        return Ok(ListEntry {
                            name: e.name,
                            kind: "directory",
                            size: None,
                            sha256: None,
                            uploaded_at_ms: None,
                        });
                    };
                    let record = meta.get(&key).await?;
                    Ok::<_, Error>(ListEntry {
                        name: e.name,
                        kind: "file",
                        size: Some(size),
                        sha256: record.as_ref().map(|m| m.sha256),
                        uploaded_at_ms: record.as_ref().map(|m| m.fetched_at_ms),
                    })
                }
            })
            .buffered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        Ok(ListPage {
            entries,
            next: page.next,
        })
    }
}

/// Headers of a stored file: its sha256 as ETag and digest, its upload time as Last-Modified.
fn served_from(meta: Option<&ObjectMeta>, content_length: u64) -> Served {
    let last_modified = meta.map(|m| {
        httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(m.fetched_at_ms),
        )
    });
    Served {
        cache: CacheStatus::Hit,
        content_length: Some(content_length),
        range: None,
        content_type: meta.and_then(|m| m.content_type.clone()),
        etag: meta.map(|m| format!("\"{}\"", m.sha256.hex())),
        last_modified,
        digest: meta.map(|m| m.sha256).map(|d| d.to_string()),
        body: None,
    }
}

/// The refusal of an upload that would leave less than `storage.min_free` free.
fn no_room(bytes: u64) -> Error {
    Error::InsufficientStorage(format!(
        "no room for {bytes} bytes: storage is full or would pass storage.min_free"
    ))
}

/// Storage refusing a write for lack of space is the uploader's answer, not an outage.
fn space_error(e: Error) -> Error {
    if e.is_no_space() {
        Error::InsufficientStorage("storage is full".into())
    } else {
        e
    }
}
