//! Serving while the metadata backend is unreachable: a stored object is still served, from
//! storage alone (file class as a hit, index class as a stale copy); what storage lacks is
//! fetched from upstream as usual.

use super::manifest::{MAX_MANIFEST, media_type_of};
use super::serve::once;
use super::{Fetch, RemoteRepo};
use crate::digest::Sha256Digest;
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
            return self
                .serve_unrecorded_manifest(fetch, range, head_only, status)
                .await;
        }
        if head_only {
            let Some(size) = self.cache.storage.head(key).await? else {
                return Ok(None);
            };
            return Ok(Some(Served::from_size(fetch, None, status, size)));
        }
        let Some(read) = self.cache.storage.get(key, range).await? else {
            return Ok(None);
        };
        Ok(Some(Served::from_read(fetch, None, status, read)))
    }

    /// Clients need a manifest's media type and digest: read it (it is small).
    async fn serve_unrecorded_manifest(
        &self,
        fetch: &Fetch,
        range: Option<ByteRange>,
        head_only: bool,
        status: CacheStatus,
    ) -> Result<Option<Served>> {
        let key = &fetch.key;
        let Some(size) = self.cache.storage.head(key).await? else {
            return Ok(None);
        };
        if size > MAX_MANIFEST {
            return Ok(None);
        }
        let Some(document) = self.read_whole(key, size, MAX_MANIFEST).await? else {
            return Ok(None);
        };
        let total = document.len() as u64;
        let (body, served_range) = match range.map(|r| r.resolve(total)) {
            None => (document.clone(), None),
            Some(None) => return Err(Error::RangeNotSatisfiable { size: total }),
            Some(Some((a, b))) => (document.slice(a as usize..=b as usize), Some((a, b, total))),
        };
        Ok(Some(Served {
            cache: status,
            content_length: Some(body.len() as u64),
            range: served_range,
            content_type: media_type_of(&document),
            etag: None,
            last_modified: None,
            digest: Some(Sha256Digest::of(&document).to_string()),
            body: (!head_only).then(|| once(body)),
        }))
    }
}
