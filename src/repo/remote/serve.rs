//! Serving a remote's stored objects: from storage (with ranges), small ones from the hot
//! cache, and the [`Served`] answers built from a record, a stored read or an upstream head.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{Fetch, RemoteRepo};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::meta::ObjectMeta;
use crate::repo::{CacheStatus, Served, hot};
use crate::storage::{ByteRange, ByteStream, ObjectRead};
use crate::upstream::Head;

impl Served {
    /// An object as upstream describes it (a miss); `body` is `None` for HEAD.
    pub(super) fn from_upstream(head: &Head, body: Option<ByteStream>) -> Served {
        Served {
            cache: CacheStatus::Miss,
            content_length: head.content_length,
            range: None,
            content_type: head.content_type.clone(),
            etag: head.etag.clone(),
            last_modified: head.last_modified.clone(),
            digest: head.digest.clone(),
            body,
        }
    }

    /// A HEAD of a stored object of `size` bytes, described by `meta` when there is a record.
    pub(super) fn from_size(
        fetch: &Fetch,
        meta: Option<&ObjectMeta>,
        cache: CacheStatus,
        size: u64,
    ) -> Served {
        Served {
            content_length: Some(size),
            ..Served::described(fetch, meta, cache)
        }
    }

    /// A stored read (whole or one range), described by `meta` when there is a record.
    pub(super) fn from_read(
        fetch: &Fetch,
        meta: Option<&ObjectMeta>,
        cache: CacheStatus,
        read: ObjectRead,
    ) -> Served {
        let content_length = match read.range {
            Some((a, b)) => b - a + 1,
            None => read.size,
        };
        Served {
            content_length: Some(content_length),
            range: read.range.map(|(a, b)| (a, b, read.size)),
            body: Some(read.body),
            ..Served::described(fetch, meta, cache)
        }
    }

    /// Bytes held in memory, sent in one piece.
    pub(super) fn from_bytes(
        fetch: &Fetch,
        meta: &ObjectMeta,
        cache: CacheStatus,
        bytes: Bytes,
    ) -> Served {
        Served {
            content_length: Some(bytes.len() as u64),
            body: Some(once(bytes)),
            ..Served::described(fetch, Some(meta), cache)
        }
    }

    /// The headers of a stored object, without length or body: from its record, or, without
    /// one, only the digest asked for.
    fn described(fetch: &Fetch, meta: Option<&ObjectMeta>, cache: CacheStatus) -> Served {
        Served {
            cache,
            content_length: None,
            range: None,
            content_type: meta.and_then(|m| m.content_type.clone()),
            etag: meta.and_then(|m| m.etag.clone()),
            last_modified: meta.and_then(|m| m.last_modified.clone()),
            digest: match meta {
                Some(m) => stored_digest(fetch, m),
                None => fetch.expected_digest.map(|d| d.to_string()),
            },
            body: None,
        }
    }
}

/// A body of one chunk.
pub(super) fn once(bytes: Bytes) -> ByteStream {
    futures::stream::once(async move { Ok(bytes) }).boxed()
}

/// The digest a registry response reports for a stored object.
fn stored_digest(fetch: &Fetch, meta: &ObjectMeta) -> Option<String> {
    (fetch.manifest.is_some() || fetch.expected_digest.is_some()).then(|| meta.sha256.to_string())
}

impl RemoteRepo {
    /// The stored object of `meta`, or `None` when storage no longer has it.
    pub(super) async fn serve_stored(
        &self,
        fetch: &Fetch,
        meta: &ObjectMeta,
        status: CacheStatus,
        range: Option<ByteRange>,
    ) -> Result<Option<Served>> {
        // In memory only: eviction weighs reads (SPEC §6.8).
        self.cache.usage.read(&fetch.key);
        if range.is_none() && self.cache.hot.wants(meta.size) {
            return self.serve_hot(fetch, meta, status).await;
        }
        let Some(read) = self.cache.storage.get(&fetch.key, range).await? else {
            return Ok(None);
        };
        Ok(Some(Served::from_read(fetch, Some(meta), status, read)))
    }

    /// A small object: from memory when kept with the record's digest,
    /// otherwise read whole from storage, checked against the record, and kept.
    async fn serve_hot(
        &self,
        fetch: &Fetch,
        meta: &ObjectMeta,
        status: CacheStatus,
    ) -> Result<Option<Served>> {
        let hot = &self.cache.hot;
        let bytes = match hot.get(&fetch.key, meta.sha256) {
            Some(b) => b,
            None => {
                // Larger than a hot object: not the object the record describes.
                let Some(bytes) = self
                    .read_whole(&fetch.key, meta.size, hot::HOT_OBJECT_MAX)
                    .await?
                else {
                    return Ok(None);
                };
                if Sha256Digest::of(&bytes) != meta.sha256 {
                    // Replaced underneath its record (by another replica or process).
                    return Ok(None);
                }
                hot.put(&fetch.key, meta.sha256, bytes.clone());
                bytes
            }
        };
        Ok(Some(Served::from_bytes(fetch, meta, status, bytes)))
    }

    /// The whole stored object `key` in memory (`size` is the expected length); `None` when
    /// storage has none or it is larger than `max` bytes.
    pub(super) async fn read_whole(&self, key: &str, size: u64, max: u64) -> Result<Option<Bytes>> {
        let Some(read) = self.cache.storage.get(key, None).await? else {
            return Ok(None);
        };
        let mut buf = BytesMut::with_capacity(size.min(max) as usize);
        let mut body = read.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Error::storage(format!("reading {key}")))?;
            if (buf.len() + chunk.len()) as u64 > max {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Some(buf.freeze()))
    }
}
