//! Registry manifest rules of a remote: the tag a `HEAD` resolved to a digest (kept cached
//! without a GET of the tag), an expired manifest revalidated by `HEAD`, the announced digest
//! checked, the media type found in the document, and a manifest stored under its digest too.
//! The generic fill and decision call these hooks; each does nothing for other objects.

use std::sync::Arc;

use futures::StreamExt;

use super::{Fetch, Origin, RemoteRepo, status_error};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::meta::ObjectMeta;
use crate::package::CacheClass;
use crate::path::RepoPath;
use crate::repo::inflight::FillState;
use crate::storage::{CommitError, Expect};
use crate::upstream::{Answer, Validators};

/// Largest manifest read into memory to find its media type (the distribution spec's limit).
pub(super) const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// At most this many pending tag copies are remembered; the least recently used go first.
const MAX_PENDING_TAGS: u64 = 10_000;
/// A pending tag copy not taken within this time is forgotten.
const PENDING_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// What is special about registry manifests.
#[derive(Debug, Clone)]
pub struct ManifestRules {
    /// Also store the manifest under `{prefix}sha256:<hex>` once its digest is known.
    pub digest_alias_prefix: Option<String>,
}

/// Registry manifests by digest key that a `HEAD` of a tag resolved to, with that tag's key:
/// when the digest is committed it is copied to the tag.
pub(super) struct PendingTags(moka::sync::Cache<String, String>);

impl Default for PendingTags {
    fn default() -> Self {
        PendingTags(
            moka::sync::Cache::builder()
                .max_capacity(MAX_PENDING_TAGS)
                .time_to_live(PENDING_FOR)
                .build(),
        )
    }
}

impl PendingTags {
    fn insert(&self, digest_key: &str, tag_key: &str) {
        self.0.insert(digest_key.to_string(), tag_key.to_string());
    }

    fn take(&self, digest_key: &str) -> Option<String> {
        self.0.remove(digest_key)
    }
}

fn is_manifest_type(ct: &str) -> bool {
    ct.starts_with("application/vnd.") && ct.contains("json")
}

/// The `mediaType` of a manifest document, for upstreams that send no useful Content-Type.
pub(super) fn media_type_of(document: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(document).ok()?;
    match v.get("mediaType").and_then(|m| m.as_str()) {
        Some(m) => Some(m.to_string()),
        None if v.get("manifests").is_some() => {
            Some("application/vnd.oci.image.index.v1+json".to_string())
        }
        None => Some("application/vnd.oci.image.manifest.v1+json".to_string()),
    }
}

impl RemoteRepo {
    /// An expired manifest is checked with a `HEAD`: the same digest renews it without a
    /// download (and without using up a pull quota). `None` when a GET must follow.
    pub(super) async fn revalidate_manifest(
        &self,
        fetch: &Fetch,
        stale: &ObjectMeta,
    ) -> Option<FillState> {
        fetch.manifest.as_ref()?;
        match self
            .upstream
            .head(&fetch.upstream_path, &fetch.options(None))
            .await
        {
            Ok(Answer::Body { head, .. }) => {
                let same = head.digest.is_some_and(|d| d == stale.sha256.to_string());
                if !same {
                    return None;
                }
                let renewal = self
                    .renew(&fetch.key, fetch.class, &Validators::default())
                    .await;
                Some(super::fill::renewed(renewal))
            }
            Ok(Answer::NotFound) => None,
            Ok(other) => Some(FillState::Failed(status_error(&other))),
            Err(e) => Some(FillState::Failed(e)),
        }
    }

    /// A whole manifest must hash to the digest upstream announced for it.
    pub(super) fn check_announced(
        fetch: &Fetch,
        announced: Option<&str>,
        digest: &Sha256Digest,
    ) -> Result<()> {
        // Only a sha256 announcement can be checked; another algorithm is left alone.
        if fetch.manifest.is_some()
            && let Some(announced) = announced
            && let Ok(announced) = Sha256Digest::parse(announced)
            && announced != *digest
        {
            return Err(Error::Integrity(format!(
                "content digest is {digest}, upstream announced {announced}"
            )));
        }
        Ok(())
    }

    /// Before a committed manifest's record is written: its media type when upstream sent
    /// none, and its copy to a tag waiting for it (once the digest is a hit, its tag is too).
    pub(super) async fn manifest_committing(&self, fetch: &Fetch, meta: &mut ObjectMeta) {
        if fetch.manifest.is_none() {
            return;
        }
        if !meta.content_type.as_deref().is_some_and(is_manifest_type) {
            meta.content_type = self
                .stored_media_type(&fetch.key, meta.size)
                .await
                .or(meta.content_type.take());
        }
        self.copy_to_pending_tag(&fetch.key, meta).await;
    }

    /// After a tag's manifest is recorded: store it under its digest too.
    pub(super) async fn manifest_committed(&self, fetch: &Fetch, meta: &ObjectMeta) {
        if let Some(prefix) = fetch
            .manifest
            .as_ref()
            .and_then(|r| r.digest_alias_prefix.as_deref())
        {
            let key = fetch.key.as_str();
            let alias = format!("{prefix}{}", meta.sha256);
            if let Err(e) = self
                .store_alias(key, &alias, meta, CacheClass::File, false)
                .await
            {
                tracing::warn!(key, alias, error = %e, "could not store manifest under its digest");
            }
        }
    }

    /// The media type of a stored manifest of `size` bytes.
    async fn stored_media_type(&self, key: &str, size: u64) -> Option<String> {
        if size > MAX_MANIFEST {
            return None;
        }
        let document = self.read_whole(key, size, u64::MAX).await.ok()??;
        media_type_of(&document)
    }

    /// After an upstream `HEAD` of a tag answered `digest`: keep the tag cached without a GET
    /// of the tag. Clients HEAD the tag and then GET the digest; the tag's record follows the
    /// digest's manifest, so a later pull works with upstream down and Docker Hub counts no
    /// extra pull. An unchanged digest renews the expired tag; a known digest is copied; an
    /// unknown one is fetched by digest in the background (the client's own GET joins it).
    pub(super) async fn tag_answered_head(
        self: &Arc<Self>,
        fetch: &Fetch,
        digest: Option<&str>,
        cached: Option<&ObjectMeta>,
    ) {
        let Some(prefix) = fetch
            .manifest
            .as_ref()
            .and_then(|r| r.digest_alias_prefix.as_deref())
        else {
            return;
        };
        let Some(digest) = digest.and_then(|d| Sha256Digest::parse(d).ok()) else {
            return;
        };
        let key = &fetch.key;
        if cached.is_some_and(|m| m.sha256 == digest)
            && self.cache.storage.head(key).await.ok().flatten().is_some()
        {
            if let Err(e) = self.renew(key, fetch.class, &Validators::default()).await {
                tracing::warn!(key, error = %e, "could not renew tag manifest");
            }
            return;
        }
        let digest_key = format!("{prefix}{digest}");
        // Whichever fill commits the digest (ours below, or a client's GET by digest that got
        // there first) copies it to the tag; registered before the check so none is missed.
        self.pending_tags.insert(&digest_key, key);
        if let Ok(Some(meta)) = self.cache.meta.get(&digest_key).await {
            self.copy_to_pending_tag(&digest_key, &meta).await;
            return;
        }
        let Some((dir, _)) = fetch.upstream_path.as_str().rsplit_once('/') else {
            return;
        };
        let Ok(upstream_path) = RepoPath::parse(&format!("{dir}/{digest}")) else {
            return;
        };
        let by_digest = Fetch {
            key: digest_key,
            upstream_path,
            origin: Origin::Base,
            query: None,
            class: CacheClass::File,
            accept: fetch.accept,
            scope: fetch.scope.clone(),
            expected_digest: Some(digest),
            integrity: None,
            manifest: Some(ManifestRules {
                digest_alias_prefix: None,
            }),
        };
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.get_fetch(by_digest, None).await {
                tracing::debug!(error = %e, "background fetch of a manifest by digest failed");
            }
        });
    }

    /// Copies a committed manifest to the tag a `HEAD` resolved to it, if one is waiting.
    async fn copy_to_pending_tag(&self, digest_key: &str, meta: &ObjectMeta) {
        if let Some(tag_key) = self.pending_tags.take(digest_key)
            && let Err(e) = self
                .store_alias(digest_key, &tag_key, meta, CacheClass::Index, true)
                .await
        {
            tracing::warn!(tag_key, error = %e, "could not store manifest under its tag");
        }
    }

    /// Copies a stored object to `alias` with class `class`; an existing alias is kept unless
    /// `replace`. True when the alias holds the object afterwards.
    async fn store_alias(
        &self,
        key: &str,
        alias: &str,
        meta: &ObjectMeta,
        class: CacheClass,
        replace: bool,
    ) -> Result<bool> {
        if !replace && self.cache.storage.head(alias).await?.is_some() {
            return Ok(true);
        }
        let Some(read) = self.cache.storage.get(key, None).await? else {
            return Ok(false);
        };
        let mut writer = self.cache.storage.writer(alias).await?;
        let mut body = read.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Error::storage(format!("reading {key}")))?;
            writer.write(chunk).await?;
        }
        match writer
            .commit_verified(Expect::default().sha256(Some(&meta.sha256)))
            .await
        {
            Ok(_) => {}
            // Replaced underneath us; the next pull fetches it properly.
            Err(CommitError::Mismatch(_)) => return Ok(false),
            Err(CommitError::Storage(e)) => return Err(e),
        }
        let now = crate::now_ms();
        let alias_meta = ObjectMeta {
            class,
            fetched_at_ms: now,
            expires_at_ms: self.expiry(class, now),
            ..meta.clone()
        };
        self.cache.record_committed(alias, &alias_meta).await?;
        self.cache
            .usage
            .stored(alias, alias_meta.size, None, &self.cache.metrics);
        Ok(true)
    }
}
