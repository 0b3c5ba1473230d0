//! Serving while the metadata backend is unreachable: a stored object is still served, from
//! storage alone (file class as a hit, index class as a stale copy); what storage lacks is
//! fetched from upstream as usual.

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{Fetch, MAX_MANIFEST, RemoteRepo};
use crate::error::{Error, Result};
use crate::package::CacheClass;
use crate::repo::{CacheStatus, Served};
use crate::storage::ByteRange;

impl RemoteRepo {
    /// The stored object of `fetch` without its record, or `None` when storage has none.
    pub(super) async fn serve_unrecorded(
        &self,
        fetch: &Fetch,
        range: Option<ByteRange>,
        head_only: bool,
        cause: &Error,
    ) -> Result<Option<Served>> {
        let key = &fetch.key;
        let status = match fetch.class {
            CacheClass::File => CacheStatus::Hit,
            CacheClass::Index => CacheStatus::Stale,
        };
        tracing::warn!(repository = %self.name, key, error = %crate::error_chain(cause), "metadata unavailable; serving from storage alone");
        if fetch.manifest.is_some() {
            // Clients need a manifest's media type and digest: read it (it is small).
            let Some(size) = self.cache.storage.head(key).await? else {
                return Ok(None);
            };
            if size > MAX_MANIFEST {
                return Ok(None);
            }
            let Some(read) = self.cache.storage.get(key, None).await? else {
                return Ok(None);
            };
            let mut buf = Vec::with_capacity(size as usize);
            let mut body = read.body;
            while let Some(chunk) = body.next().await {
                buf.extend_from_slice(&chunk.map_err(Error::storage(format!("reading {key}")))?);
            }
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&buf)));
            let content_type = self.manifest_media_type(key, size).await;
            let total = buf.len() as u64;
            let (body, served_range) = match range.map(|r| r.resolve(total)) {
                None => (buf, None),
                Some(None) => return Err(Error::RangeNotSatisfiable { size: total }),
                Some(Some((a, b))) => (buf[a as usize..=b as usize].to_vec(), Some((a, b, total))),
            };
            return Ok(Some(Served {
                cache: status,
                content_length: Some(body.len() as u64),
                range: served_range,
                content_type,
                etag: None,
                last_modified: None,
                digest: Some(digest),
                body: (!head_only).then(|| {
                    futures::stream::once(async move { Ok(bytes::Bytes::from(body)) }).boxed()
                }),
            }));
        }
        if head_only {
            let Some(size) = self.cache.storage.head(key).await? else {
                return Ok(None);
            };
            return Ok(Some(Served {
                cache: status,
                content_length: Some(size),
                range: None,
                content_type: None,
                etag: None,
                last_modified: None,
                digest: fetch.expected_digest.clone(),
                body: None,
            }));
        }
        let Some(read) = self.cache.storage.get(key, range).await? else {
            return Ok(None);
        };
        let content_length = match read.range {
            Some((a, b)) => b - a + 1,
            None => read.size,
        };
        Ok(Some(Served {
            cache: status,
            content_length: Some(content_length),
            range: read.range.map(|(a, b)| (a, b, read.size)),
            content_type: None,
            etag: None,
            last_modified: None,
            digest: fetch.expected_digest.clone(),
            body: Some(read.body),
        }))
    }
}
