//! Remote repositories: hit → serve from storage; miss → one coalesced upstream fetch that
//! streams to every waiting client while it is written to storage, committed only when whole;
//! expired → conditional revalidation, serving the stale copy when upstream fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use futures::{FutureExt, StreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, HeaderMap, HeaderName, LAST_MODIFIED};
use reqwest::{Method, Response};
use sha2::{Digest, Sha256};

use super::fill::{self, BodyHead, FillSender, FillState, Joined};
use super::lease::Claim;
use super::{Cache, CacheStatus, RepoPath, Served, hot};
use crate::config::{PackageKind, RemoteConfig};
use crate::error::{Error, Result};
use crate::meta::ObjectMeta;
use crate::package::{CacheClass, classify};
use crate::storage::ByteRange;
use crate::upstream::{RequestOptions, Upstream, Validators, transport_error};

/// Bytes gathered from upstream before a write to storage (unless upstream pauses first).
const WRITE_BATCH: usize = 256 * 1024;

/// The registry header carrying a content digest.
pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// One cacheable upstream object: where it is stored, how to ask for it, how to check it.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// Storage key.
    pub key: String,
    /// Path under `base_url`.
    pub upstream_path: RepoPath,
    /// Query string sent upstream (already encoded), if any.
    pub query: Option<String>,
    pub class: CacheClass,
    pub accept: Option<&'static str>,
    /// Registry token scope.
    pub scope: Option<String>,
    /// The bytes must hash to this `sha256:<hex>`, checked while they stream.
    pub expected_digest: Option<String>,
    /// Registry manifest rules, when this is one.
    pub manifest: Option<ManifestRules>,
}

/// What is special about registry manifests.
#[derive(Debug, Clone)]
pub struct ManifestRules {
    /// Also store the manifest under `{prefix}sha256:<hex>` once its digest is known.
    pub digest_alias_prefix: Option<String>,
}

impl Fetch {
    fn options<'a>(&'a self, validators: Option<&'a Validators>) -> RequestOptions<'a> {
        RequestOptions {
            validators,
            accept: self.accept,
            query: self.query.as_deref(),
            scope: self.scope.as_deref(),
        }
    }
}

pub struct RemoteRepo {
    name: String,
    config: RemoteConfig,
    upstream: Upstream,
    cache: Arc<Cache>,
    /// Registry manifests by digest key that a `HEAD` of a tag resolved to, with that tag's
    /// key: when the digest is committed it is copied to the tag.
    pending_tags: Mutex<HashMap<String, String>>,
}

/// At most this many pending tag copies are remembered.
const MAX_PENDING_TAGS: usize = 10_000;

impl RemoteRepo {
    pub fn new(name: &str, config: RemoteConfig, cache: Arc<Cache>) -> Result<RemoteRepo> {
        let upstream = Upstream::new(&config)?.ok_or_else(|| {
            Error::BadRequest(format!("remote repository '{name}' has no base_url"))
        })?;
        Ok(RemoteRepo {
            name: name.to_string(),
            config,
            upstream,
            cache,
            pending_tags: Mutex::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn package(&self) -> PackageKind {
        self.config.package
    }

    pub fn config(&self) -> &RemoteConfig {
        &self.config
    }

    /// The storage key of `path`.
    pub fn key(&self, path: &RepoPath) -> String {
        format!("{}/{}", self.name, path)
    }

    pub fn class_of(&self, path: &RepoPath) -> CacheClass {
        classify(
            self.config.package,
            path.as_str(),
            &self.config.index_patterns,
        )
    }

    /// include_patterns: when set, a file must match its path or its full upstream URL. Index
    /// files are exempt, so a filtered mirror still has working metadata.
    fn check_allowed(&self, path: &RepoPath, class: CacheClass) -> Result<()> {
        let patterns = &self.config.include_patterns;
        if patterns.is_empty() || class == CacheClass::Index {
            return Ok(());
        }
        let url = self.upstream.url(path);
        if patterns
            .iter()
            .any(|p| p.is_match(path.as_str()) || p.is_match(&url))
        {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }

    fn expiry(&self, class: CacheClass, now_ms: u64) -> Option<u64> {
        let ttl = match class {
            CacheClass::Index => self.config.cache.index_ttl,
            CacheClass::File if self.config.cache.file_ttl.is_zero() => return None,
            CacheClass::File => self.config.cache.file_ttl,
        };
        Some(now_ms + ttl.0.as_millis() as u64)
    }

    /// The fetch of `path` in a plain (non-registry) repository, after include_patterns.
    pub fn plain_fetch(&self, path: &RepoPath) -> Result<Fetch> {
        let class = self.class_of(path);
        self.check_allowed(path, class)?;
        Ok(Fetch {
            key: self.key(path),
            upstream_path: path.clone(),
            query: None,
            class,
            accept: None,
            scope: None,
            expected_digest: None,
            manifest: None,
        })
    }

    /// The fetch of `path` asked for by path (not under `/v2/`): docker remotes take registry
    /// paths with the registry's keys and digest checks, so no route can store unverified
    /// bytes where the registry looks for a blob; other packages take plain paths.
    pub fn path_fetch(&self, path: &RepoPath) -> Result<Fetch> {
        if self.config.package == PackageKind::Docker {
            self.docker_path_fetch(path.as_str())
        } else {
            self.plain_fetch(path)
        }
    }

    /// Answers a GET for `path`. `range` is honoured for cached objects.
    pub async fn get(
        self: &Arc<Self>,
        path: &RepoPath,
        range: Option<ByteRange>,
    ) -> Result<Served> {
        let fetch = self.path_fetch(path)?;
        self.get_fetch(fetch, range).await
    }

    /// Answers a HEAD for `path` without downloading a body.
    pub async fn head(self: &Arc<Self>, path: &RepoPath) -> Result<Served> {
        let fetch = self.path_fetch(path)?;
        self.head_fetch(&fetch).await
    }

    /// GET of one object: hit, coalesced fill, revalidation or stale copy.
    pub async fn get_fetch(
        self: &Arc<Self>,
        fetch: Fetch,
        range: Option<ByteRange>,
    ) -> Result<Served> {
        let key = fetch.key.clone();
        let now = crate::now_ms();
        let cached = match self.cache.meta.get(&key).await {
            Ok(c) => c,
            Err(e @ Error::Metadata { .. }) => {
                if let Some(s) = self.serve_unrecorded(&fetch, range, false, &e).await? {
                    return Ok(s);
                }
                None
            }
            Err(e) => return Err(e),
        };
        match &cached {
            Some(meta) if meta.is_fresh(now) => {
                if let Some(s) = self
                    .serve_stored(&fetch, meta, CacheStatus::Hit, range)
                    .await?
                {
                    return Ok(s);
                }
                // The object went away underneath its record (flushed by another process).
                self.cache.meta.delete(&key).await?;
            }
            Some(_) => {}
            None => {
                if self.cache.meta.is_negative(&key).await.unwrap_or(false) {
                    return Err(Error::NotFound);
                }
            }
        }
        let stale = cached.filter(|m| !m.is_fresh(now));
        let mut rx = match self.cache.inflight.join(&key) {
            Joined::Started(tx, rx) => {
                let this = self.clone();
                let fetch = fetch.clone();
                tokio::spawn(async move { this.run_fill(fetch, stale, tx).await });
                rx
            }
            Joined::Waiting(rx) => {
                self.cache
                    .metrics
                    .coalesced_waiters
                    .with_label_values(&[&self.name])
                    .inc();
                rx
            }
        };
        // Manifests are small and their digest and media type are only certain once the
        // whole document is in: wait for the commit and answer from storage.
        let state = if fetch.manifest.is_some() {
            match fill::finished(&mut rx).await {
                FillState::Body(p) if p.done => FillState::Ready(CacheStatus::Miss),
                s => s,
            }
        } else {
            fill::started(&mut rx).await
        };
        match state {
            FillState::Body(p) => Ok(Served {
                cache: CacheStatus::Miss,
                content_length: p.head.content_length,
                range: None,
                content_type: p.head.content_type.clone(),
                etag: p.head.etag.clone(),
                last_modified: p.head.last_modified.clone(),
                digest: p.head.digest.clone(),
                body: Some(fill::follow(rx)),
            }),
            FillState::Ready(status) => {
                let meta = self.cache.meta.get(&key).await?;
                match meta {
                    Some(m) => self.serve_stored(&fetch, &m, status, range).await?,
                    None => None,
                }
                .ok_or_else(|| Error::UpstreamUnreachable("cached object vanished".into()))
            }
            FillState::Failed(e) => {
                if e.is_upstream_failure()
                    && let Some(meta) = self.cache.meta.get(&key).await?
                    && let Some(s) = self
                        .serve_stored(&fetch, &meta, CacheStatus::Stale, range)
                        .await?
                {
                    tracing::warn!(repository = %self.name, key, error = %e, "serving stale copy");
                    return Ok(s);
                }
                Err(e)
            }
            FillState::Pending => unreachable!("started() never returns Pending"),
        }
    }

    /// HEAD of one object: from metadata on a hit; otherwise an upstream HEAD, so that no body
    /// is downloaded (for a registry tag, see [`Self::cache_tag_after_head`]).
    pub async fn head_fetch(self: &Arc<Self>, fetch: &Fetch) -> Result<Served> {
        let key = &fetch.key;
        let cached = match self.cache.meta.get(key).await {
            Ok(c) => c,
            Err(e @ Error::Metadata { .. }) => {
                if let Some(s) = self.serve_unrecorded(fetch, None, true, &e).await? {
                    return Ok(s);
                }
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(meta) = &cached
            && meta.is_fresh(crate::now_ms())
            && let Some(size) = self.cache.storage.head(key).await?
        {
            return Ok(served_from_meta(fetch, meta, size, CacheStatus::Hit));
        }
        if cached.is_none() && self.cache.meta.is_negative(key).await.unwrap_or(false) {
            return Err(Error::NotFound);
        }
        let result = self.upstream_request(Method::HEAD, fetch, None).await;
        let stale = |e: Error| async {
            if e.is_upstream_failure()
                && let Some(meta) = &cached
                && let Ok(Some(size)) = self.cache.storage.head(key).await
            {
                return Ok(served_from_meta(fetch, meta, size, CacheStatus::Stale));
            }
            Err(e)
        };
        let resp = match result {
            Ok(r) => r,
            Err(e) => return stale(e).await,
        };
        match resp.status().as_u16() {
            200 => {
                let h = body_head(resp.headers(), fetch);
                if let Some(prefix) = fetch
                    .manifest
                    .as_ref()
                    .and_then(|r| r.digest_alias_prefix.as_deref())
                    && let Some(digest) = h.digest.as_deref().filter(|d| d.starts_with("sha256:"))
                {
                    self.cache_tag_after_head(fetch, prefix, digest, cached.as_ref())
                        .await;
                }
                Ok(Served {
                    cache: CacheStatus::Miss,
                    content_length: h.content_length,
                    range: None,
                    content_type: h.content_type,
                    etag: h.etag,
                    last_modified: h.last_modified,
                    digest: h.digest,
                    body: None,
                })
            }
            404 | 410 => {
                self.remember_not_found(key).await;
                Err(Error::NotFound)
            }
            s => stale(Error::UpstreamStatus(s)).await,
        }
    }

    /// After an upstream `HEAD` of a tag answered `digest`: keep the tag cached without a GET
    /// of the tag. Clients HEAD the tag and then GET the digest; the tag's record follows the
    /// digest's manifest, so a later pull works with upstream down and Docker Hub counts no
    /// extra pull. An unchanged digest renews the expired tag; a known digest is copied; an
    /// unknown one is fetched by digest in the background (the client's own GET joins it).
    async fn cache_tag_after_head(
        self: &Arc<Self>,
        fetch: &Fetch,
        prefix: &str,
        digest: &str,
        cached: Option<&ObjectMeta>,
    ) {
        let key = &fetch.key;
        if cached.is_some_and(|m| digest.strip_prefix("sha256:") == Some(m.sha256.as_str()))
            && self.cache.storage.head(key).await.ok().flatten().is_some()
        {
            if let Err(e) = self.renew(key, fetch.class, &HeaderMap::new()).await {
                tracing::warn!(key, error = %e, "could not renew tag manifest");
            }
            return;
        }
        let digest_key = format!("{prefix}{digest}");
        // Whichever fill commits the digest (ours below, or a client's GET by digest that got
        // there first) copies it to the tag; registered before the check so none is missed.
        {
            let mut pending = self.pending_tags.lock().expect("pending tags lock");
            if pending.len() >= MAX_PENDING_TAGS {
                pending.clear();
            }
            pending.insert(digest_key.clone(), key.clone());
        }
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
            query: None,
            class: CacheClass::File,
            accept: fetch.accept,
            scope: fetch.scope.clone(),
            expected_digest: Some(digest.to_string()),
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
        let tag_key = self
            .pending_tags
            .lock()
            .expect("pending tags lock")
            .remove(digest_key);
        if let Some(tag_key) = tag_key
            && let Err(e) = self
                .store_alias(digest_key, &tag_key, meta, CacheClass::Index, true)
                .await
        {
            tracing::warn!(tag_key, error = %e, "could not store manifest under its tag");
        }
    }

    async fn serve_stored(
        &self,
        fetch: &Fetch,
        meta: &ObjectMeta,
        status: CacheStatus,
        range: Option<ByteRange>,
    ) -> Result<Option<Served>> {
        if range.is_none() && self.cache.hot.wants(meta.size) {
            return self.serve_hot(fetch, meta, status).await;
        }
        let Some(read) = self.cache.storage.get(&fetch.key, range).await? else {
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
            content_type: meta.content_type.clone(),
            etag: meta.etag.clone(),
            last_modified: meta.last_modified.clone(),
            digest: stored_digest(fetch, meta),
            body: Some(read.body),
        }))
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
        let bytes = match hot.get(&fetch.key, &meta.sha256) {
            Some(b) => b,
            None => {
                let Some(read) = self.cache.storage.get(&fetch.key, None).await? else {
                    return Ok(None);
                };
                let mut buf = BytesMut::with_capacity(meta.size as usize);
                let mut body = read.body;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(Error::storage(format!("reading {}", fetch.key)))?;
                    if (buf.len() + chunk.len()) as u64 > hot::HOT_OBJECT_MAX {
                        // Not the object the record describes: treat it as missing.
                        return Ok(None);
                    }
                    buf.extend_from_slice(&chunk);
                }
                let bytes = buf.freeze();
                if hex::encode(Sha256::digest(&bytes)) != meta.sha256 {
                    // Replaced underneath its record (by another replica or process).
                    return Ok(None);
                }
                hot.put(&fetch.key, &meta.sha256, bytes.clone());
                bytes
            }
        };
        Ok(Some(Served {
            cache: status,
            content_length: Some(bytes.len() as u64),
            range: None,
            content_type: meta.content_type.clone(),
            etag: meta.etag.clone(),
            last_modified: meta.last_modified.clone(),
            digest: stored_digest(fetch, meta),
            body: Some(futures::stream::once(async move { Ok(bytes) }).boxed()),
        }))
    }

    /// Sends one request upstream and records it in the metrics.
    async fn upstream_request(
        &self,
        method: Method,
        fetch: &Fetch,
        validators: Option<&Validators>,
    ) -> Result<Response> {
        let started = Instant::now();
        let result = self
            .upstream
            .send(method, &fetch.upstream_path, &fetch.options(validators))
            .await;
        let m = &self.cache.metrics;
        m.upstream_latency
            .with_label_values(&[&self.name])
            .observe(started.elapsed().as_secs_f64());
        let status = match &result {
            Ok(r) => r.status().as_u16().to_string(),
            Err(_) => "error".to_string(),
        };
        m.upstream_requests
            .with_label_values(&[self.name.as_str(), status.as_str()])
            .inc();
        result
    }

    async fn remember_not_found(&self, key: &str) {
        let ttl = self.config.cache.negative_ttl;
        if !ttl.is_zero() {
            let until = crate::now_ms() + ttl.0.as_millis() as u64;
            if let Err(e) = self.cache.meta.put_negative(key, until).await {
                tracing::warn!(key, error = %e, "could not record negative cache entry");
            }
        }
    }

    /// Drives one fill to its end; every outcome is published through `tx`. `stale` is the
    /// expired record being revalidated, if any.
    async fn run_fill(self: Arc<Self>, fetch: Fetch, stale: Option<ObjectMeta>, tx: FillSender) {
        let key = &fetch.key;
        // Another fill may have committed between the caller's lookup and its join.
        if stale.is_none()
            && let Ok(Some(meta)) = self.cache.meta.get(key).await
            && meta.is_fresh(crate::now_ms())
            && let Ok(Some(_)) = self.cache.storage.head(key).await
        {
            tx.finish(FillState::Ready(CacheStatus::Hit));
            return;
        }
        // Other replicas: one fetch per key across all of them.
        let _lease = match super::lease::claim(&self.cache, key, stale.as_ref()).await {
            Claim::Mine(guard) => guard,
            Claim::FilledElsewhere => return tx.finish(FillState::Ready(CacheStatus::Miss)),
            Claim::NotFound => return tx.finish(FillState::Failed(Error::NotFound)),
        };
        // Registries: an expired tag is checked with a HEAD; the same digest renews it without
        // a download (and without using up a pull quota).
        if let (Some(meta), Some(_)) = (&stale, &fetch.manifest) {
            match self.upstream_request(Method::HEAD, &fetch, None).await {
                Ok(r) if r.status().as_u16() == 200 => {
                    let same = header(r.headers(), &DOCKER_CONTENT_DIGEST)
                        .is_some_and(|d| d == format!("sha256:{}", meta.sha256));
                    if same {
                        return match self.renew(key, fetch.class, &HeaderMap::new()).await {
                            Ok(()) => tx.finish(FillState::Ready(CacheStatus::Revalidated)),
                            Err(e) => tx.finish(FillState::Failed(e)),
                        };
                    }
                }
                Ok(r) if matches!(r.status().as_u16(), 404 | 410) => {}
                Ok(r) => {
                    return tx.finish(FillState::Failed(Error::UpstreamStatus(
                        r.status().as_u16(),
                    )));
                }
                Err(e) => return tx.finish(FillState::Failed(e)),
            }
        }
        let validators = stale
            .as_ref()
            .filter(|_| fetch.manifest.is_none())
            .map(|m| Validators {
                etag: m.etag.clone(),
                last_modified: m.last_modified.clone(),
            });
        tracing::info!(repository = %self.name, key, revalidate = stale.is_some(), "fetching from upstream");
        let resp = match self
            .upstream_request(Method::GET, &fetch, validators.as_ref())
            .await
        {
            Ok(r) => r,
            Err(e) => return tx.finish(FillState::Failed(e)),
        };
        match resp.status().as_u16() {
            200 => match self.store_body(resp, &fetch, stale.as_ref(), &tx).await {
                Ok(()) => tx.complete(),
                Err(e) => {
                    tracing::warn!(repository = %self.name, key, error = %e, "fetch failed; nothing cached");
                    tx.finish(FillState::Failed(e))
                }
            },
            304 if validators.is_some() => match self.renew(key, fetch.class, resp.headers()).await
            {
                Ok(()) => tx.finish(FillState::Ready(CacheStatus::Revalidated)),
                Err(e) => tx.finish(FillState::Failed(e)),
            },
            404 | 410 => {
                self.remember_not_found(key).await;
                if stale.is_some() {
                    // Upstream removed it: drop our copy too.
                    let _ = self.cache.meta.delete(key).await;
                    let _ = self.cache.storage.delete(key).await;
                }
                tx.finish(FillState::Failed(Error::NotFound))
            }
            s => tx.finish(FillState::Failed(Error::UpstreamStatus(s))),
        }
    }

    /// A 304: the cached copy is good for another TTL.
    async fn renew(&self, key: &str, class: CacheClass, headers: &HeaderMap) -> Result<()> {
        let Some(mut meta) = self.cache.meta.get(key).await? else {
            return Err(Error::UpstreamUnreachable(
                "revalidated object has no record".into(),
            ));
        };
        let now = crate::now_ms();
        meta.fetched_at_ms = now;
        meta.expires_at_ms = self.expiry(class, now);
        if let Some(etag) = header(headers, &ETAG) {
            meta.etag = Some(etag);
        }
        if let Some(lm) = header(headers, &LAST_MODIFIED) {
            meta.last_modified = Some(lm);
        }
        self.cache.meta.put(key, &meta).await
    }

    /// Streams a 200 body into storage while publishing progress; commits only a whole body
    /// whose length and digest check out.
    async fn store_body(
        &self,
        resp: Response,
        fetch: &Fetch,
        previous: Option<&ObjectMeta>,
        tx: &FillSender,
    ) -> Result<()> {
        let key = fetch.key.as_str();
        let head = body_head(resp.headers(), fetch);
        let announced = header(resp.headers(), &DOCKER_CONTENT_DIGEST);
        let expected = head.content_length;
        let mut writer = self.cache.storage.writer(key).await?;
        let spool = writer
            .spool_reader()
            .map_err(Error::storage("opening spool"))?;
        tx.body(head.clone(), spool);

        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        let mut batch = BytesMut::new();
        let mut body = resp.bytes_stream();
        let upstream_bytes = self
            .cache
            .metrics
            .upstream_bytes
            .with_label_values(&[&self.name]);
        loop {
            let next = match body.next().now_or_never() {
                Some(item) => item,
                None => {
                    // Upstream is pausing: hand what we have to the waiting clients.
                    if !batch.is_empty() {
                        let n = batch.len() as u64;
                        writer.write(batch.split().freeze()).await?;
                        tx.progress(n);
                    }
                    body.next().await
                }
            };
            let chunk = match next {
                None => break,
                Some(Ok(c)) => c,
                Some(Err(e)) => return Err(transport_error(e)),
            };
            total += chunk.len() as u64;
            upstream_bytes.inc_by(chunk.len() as u64);
            if expected.is_some_and(|cl| total > cl) {
                return Err(Error::Integrity(format!(
                    "upstream sent more than its Content-Length of {}",
                    expected.unwrap_or_default()
                )));
            }
            hasher.update(&chunk);
            batch.extend_from_slice(&chunk);
            if batch.len() >= WRITE_BATCH {
                let n = batch.len() as u64;
                writer.write(batch.split().freeze()).await?;
                tx.progress(n);
            }
        }
        if let Some(cl) = expected
            && total != cl
        {
            return Err(Error::Integrity(format!(
                "upstream body ended after {total} of {cl} bytes"
            )));
        }
        let sha256 = hex::encode(hasher.finalize());
        let digest = format!("sha256:{sha256}");
        if let Some(want) = &fetch.expected_digest
            && *want != digest
        {
            return Err(Error::Integrity(format!(
                "content digest is {digest}, expected {want}"
            )));
        }
        if fetch.manifest.is_some()
            && let Some(announced) = &announced
            && announced.starts_with("sha256:")
            && *announced != digest
        {
            return Err(Error::Integrity(format!(
                "content digest is {digest}, upstream announced {announced}"
            )));
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            writer.write(batch.split().freeze()).await?;
            tx.progress(n);
        }
        writer.commit().await?;
        let now = crate::now_ms();
        let mut content_type = head.content_type;
        if fetch.manifest.is_some() && !content_type.as_deref().is_some_and(is_manifest_type) {
            content_type = self.manifest_media_type(key, total).await.or(content_type);
        }
        let meta = ObjectMeta {
            size: total,
            sha256: sha256.clone(),
            etag: head.etag,
            last_modified: head.last_modified,
            content_type,
            fetched_at_ms: now,
            class: fetch.class,
            expires_at_ms: self.expiry(fetch.class, now),
        };
        if fetch.manifest.is_some() {
            // Before the record: once the digest is a hit, its tag is too.
            self.copy_to_pending_tag(key, &meta).await;
        }
        if let Err(e) = self.cache.meta.put(key, &meta).await {
            // The object is whole and stored: serve it; without a record it is served from
            // storage while metadata is down, and fetched again once it is back.
            tracing::warn!(key, error = %crate::error_chain(&e), "stored object has no record");
        }
        let m = &self.cache.metrics;
        match previous {
            Some(p) => m.cache_bytes.add(total as i64 - p.size as i64),
            None => {
                m.cache_objects.inc();
                m.cache_bytes.add(total as i64);
            }
        }
        if let Some(prefix) = fetch
            .manifest
            .as_ref()
            .and_then(|r| r.digest_alias_prefix.as_deref())
        {
            let alias = format!("{prefix}{digest}");
            if let Err(e) = self
                .store_alias(key, &alias, &meta, CacheClass::File, false)
                .await
            {
                tracing::warn!(key, alias, error = %e, "could not store manifest under its digest");
            }
        }
        tracing::info!(repository = %self.name, key, bytes = total, "cached");
        Ok(())
    }

    /// The `mediaType` of a stored manifest, for upstreams that send no useful Content-Type.
    async fn manifest_media_type(&self, key: &str, size: u64) -> Option<String> {
        if size > MAX_MANIFEST {
            return None;
        }
        let read = self.cache.storage.get(key, None).await.ok()??;
        let mut body = read.body;
        let mut buf = Vec::with_capacity(size as usize);
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk.ok()?);
        }
        let v: serde_json::Value = serde_json::from_slice(&buf).ok()?;
        match v.get("mediaType").and_then(|m| m.as_str()) {
            Some(m) => Some(m.to_string()),
            None if v.get("manifests").is_some() => {
                Some("application/vnd.oci.image.index.v1+json".to_string())
            }
            None => Some("application/vnd.oci.image.manifest.v1+json".to_string()),
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
        let mut hasher = Sha256::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Error::storage(format!("reading {key}")))?;
            hasher.update(&chunk);
            writer.write(chunk).await?;
        }
        if hex::encode(hasher.finalize()) != meta.sha256 {
            // Replaced underneath us; the next pull fetches it properly.
            return Ok(false);
        }
        writer.commit().await?;
        let now = crate::now_ms();
        let alias_meta = ObjectMeta {
            class,
            fetched_at_ms: now,
            expires_at_ms: self.expiry(class, now),
            ..meta.clone()
        };
        self.cache.meta.put(alias, &alias_meta).await?;
        Ok(true)
    }
}

mod degraded;

/// Largest manifest read into memory to find its media type (the distribution spec's limit).
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

fn is_manifest_type(ct: &str) -> bool {
    ct.starts_with("application/vnd.") && ct.contains("json")
}

/// The digest a registry response reports for a stored object.
fn stored_digest(fetch: &Fetch, meta: &ObjectMeta) -> Option<String> {
    (fetch.manifest.is_some() || fetch.expected_digest.is_some())
        .then(|| format!("sha256:{}", meta.sha256))
}

fn served_from_meta(fetch: &Fetch, meta: &ObjectMeta, size: u64, cache: CacheStatus) -> Served {
    Served {
        cache,
        content_length: Some(size),
        range: None,
        content_type: meta.content_type.clone(),
        etag: meta.etag.clone(),
        last_modified: meta.last_modified.clone(),
        digest: stored_digest(fetch, meta),
        body: None,
    }
}

fn header(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn body_head(headers: &HeaderMap, fetch: &Fetch) -> BodyHead {
    BodyHead {
        content_length: header(headers, &CONTENT_LENGTH).and_then(|v| v.trim().parse().ok()),
        digest: fetch
            .expected_digest
            .clone()
            .or_else(|| header(headers, &DOCKER_CONTENT_DIGEST)),
        content_type: header(headers, &CONTENT_TYPE),
        etag: header(headers, &ETAG),
        last_modified: header(headers, &LAST_MODIFIED),
    }
}
