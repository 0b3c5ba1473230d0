//! npm remotes: packuments are cached as the upstream sent them (index class: fresh for
//! `index_ttl`, revalidated, served stale when upstream is down), full and abbreviated apart,
//! and sent with each version's `dist.tarball` pointing back at this remote, rewritten as the
//! bytes go out; tarballs are file class, checked against the packument's `integrity` (or
//! `shasum`) before they are committed.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{Fetch, Origin, RemoteRepo};
use crate::digest::{Integrity, Sha256Digest};
use crate::error::{Error, Result};
use crate::package::CacheClass;
use crate::package::npm::{self, Kind, Name};
use crate::path::RepoPath;
use crate::repo::Served;
use crate::storage::ByteStream;

/// Upstream packuments larger than this are refused. The largest on registry.npmjs.org are
/// about 100 MB.
const MAX_PACKUMENT: usize = 256 * 1024 * 1024;

impl RemoteRepo {
    /// The fetch of `name`'s packument of `kind`.
    fn packument_fetch(&self, name: &Name, kind: Kind) -> Fetch {
        Fetch {
            key: format!("{}/{name}/{}", self.name, kind.key_suffix()),
            upstream_path: name.path(),
            origin: Origin::Base,
            query: None,
            class: CacheClass::Index,
            accept: Some(kind.accept()),
            scope: None,
            expected_digest: None,
            integrity: None,
            manifest: None,
        }
    }

    /// `name`'s packument of `kind`, each tarball link written as
    /// `{public}/{name}/-/{file}`, where `public` is this remote's URL as the client reached
    /// it. The stored document is read into memory once; the answer is slices of it and the
    /// new links, sent in turn.
    pub async fn npm_packument(
        self: &Arc<Self>,
        name: &Name,
        kind: Kind,
        public: &str,
    ) -> Result<Served> {
        let served = self
            .get_fetch(self.packument_fetch(name, kind), None)
            .await?;
        let doc = read_document(served.body).await?;
        let prefix = format!("{public}/{name}/-/");
        let etag_input = (doc.clone(), prefix.clone());
        let (pieces, etag) = tokio::task::spawn_blocking(move || -> Result<_> {
            let pieces = npm::rewrite_tarballs(&doc, |url| {
                npm::tarball_file(url).map(|f| format!("{prefix}{f}"))
            })?;
            let mut h = crate::digest::ContentHasher::default();
            h.update(&etag_input.0);
            h.update(etag_input.1.as_bytes());
            Ok((pieces, h.digests().sha256))
        })
        .await
        .map_err(|e| Error::UpstreamUnreachable(format!("reading the packument: {e}")))??;
        let len: usize = pieces.iter().map(Bytes::len).sum();
        let body: ByteStream = Box::pin(futures::stream::iter(pieces.into_iter().map(Ok)));
        Ok(Served {
            cache: served.cache,
            content_length: Some(len as u64),
            range: None,
            content_type: Some(kind.content_type().to_string()),
            etag: Some(format!("\"{}\"", &etag.hex()[..32])),
            last_modified: served.last_modified,
            digest: None,
            body: Some(body),
        })
    }

    /// The fetch of tarball `file` of `name`, from `{base_url}/{name}/-/{file}` (the layout
    /// every npm registry uses). One not yet stored is checked against the `integrity` (or
    /// `shasum`) its packument gives; a tarball the packument does not list is `NotFound`.
    pub async fn npm_tarball(self: &Arc<Self>, name: &Name, file: &str) -> Result<Fetch> {
        let upstream_path = RepoPath::parse(&format!("{name}/-/{file}"))?;
        self.check_allowed(&upstream_path, CacheClass::File)?;
        let key = format!("{}/{upstream_path}", self.name);
        let stored = self.cache.meta.get(&key).await?.is_some();
        let integrity = if stored {
            // It was checked when it was committed; tarballs do not change.
            None
        } else {
            let served = self
                .get_fetch(self.packument_fetch(name, Kind::Abbreviated), None)
                .await?;
            let doc = read_document(served.body).await?;
            let file = file.to_string();
            let dist = tokio::task::spawn_blocking(move || npm::dist_of(&doc, &file))
                .await
                .map_err(|e| Error::UpstreamUnreachable(format!("reading the packument: {e}")))??
                .ok_or(Error::NotFound)?;
            let integrity = Integrity::from_dist(dist.integrity.as_deref(), dist.shasum.as_deref());
            if integrity.is_none() {
                tracing::warn!(
                    repository = %self.name,
                    package = %name,
                    "packument gives no readable integrity or shasum; tarball not verified"
                );
            }
            integrity
        };
        Ok(Fetch {
            key,
            upstream_path,
            origin: Origin::Base,
            query: None,
            class: CacheClass::File,
            accept: None,
            scope: None,
            expected_digest: None::<Sha256Digest>,
            integrity,
            manifest: None,
        })
    }
}

/// A document's body, whole, refused past [`MAX_PACKUMENT`].
async fn read_document(body: Option<ByteStream>) -> Result<Bytes> {
    let mut out = BytesMut::new();
    let Some(mut body) = body else {
        return Ok(out.freeze());
    };
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| Error::UpstreamUnreachable(format!("reading the packument: {e}")))?;
        if out.len() + chunk.len() > MAX_PACKUMENT {
            return Err(Error::UpstreamUnreachable(format!(
                "packument larger than {MAX_PACKUMENT} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}
