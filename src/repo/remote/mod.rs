//! Remote repositories and the decision each request takes: hit → serve from storage; miss →
//! join or start one coalesced fill (`fill`); expired → revalidate, serving the stale copy when
//! upstream fails. Serving lives in `serve` (and `degraded`, for a metadata outage), the
//! registry manifest rules in `manifest`, PyPI's pages and files in `pypi`.

mod degraded;
mod fill;
mod manifest;
mod npm;
mod passthrough;
mod pypi;
mod serve;

use std::ops::ControlFlow;
use std::sync::Arc;

use super::inflight::{self, FillState, Joined};
use super::{Cache, CacheStatus, RepoPath, Served};
use crate::config::{CacheLimits, PackageKind, RemoteConfig};
use crate::digest::{Integrity, Sha256Digest};
use crate::error::{Error, Result};
use crate::meta::ObjectMeta;
use crate::package::{CacheClass, classify};
use crate::storage::ByteRange;
use crate::upstream::{Answer, Head, RequestOptions, Upstream, Validators};

pub use manifest::ManifestRules;

/// One cacheable upstream object: where it is stored, how to ask for it, how to check it.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// Storage key.
    pub key: String,
    /// Path under `base_url` (or `files_url`, see `origin`).
    pub upstream_path: RepoPath,
    /// Which upstream URL the path is under.
    pub origin: Origin,
    /// Query string sent upstream (already encoded), if any.
    pub query: Option<String>,
    pub class: CacheClass,
    pub accept: Option<&'static str>,
    /// Registry token scope.
    pub scope: Option<String>,
    /// The bytes must hash to this `sha256:<hex>`, checked while they stream.
    pub expected_digest: Option<Sha256Digest>,
    /// The bytes must also have this digest (npm's sha512 `integrity` or sha1 `shasum`),
    /// checked while they stream.
    pub integrity: Option<Integrity>,
    /// Registry manifest rules, when this is one.
    pub manifest: Option<ManifestRules>,
}

/// Which upstream URL a fetch's path is under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `base_url/path`.
    Base,
    /// `base_url/path/`: a directory page (PyPI's Simple API).
    BaseDirectory,
    /// `files_url/path`: the file host of a PyPI remote.
    Files,
}

impl Fetch {
    fn options<'a>(&'a self, validators: Option<&'a Validators>) -> RequestOptions<'a> {
        RequestOptions {
            directory: self.origin == Origin::BaseDirectory,
            validators,
            accept: self.accept,
            query: self.query.as_deref(),
            scope: self.scope.as_deref(),
            range_from: None,
        }
    }

    /// Whether the cached `meta` is the object this fetch asks for: a fetch that names a
    /// digest does not take bytes recorded under another.
    fn matches(&self, meta: &ObjectMeta) -> bool {
        self.expected_digest.is_none_or(|d| d == meta.sha256)
    }

    /// The head clients see: the digest asked for, when there is one, over the announced one.
    fn described(&self, head: Head) -> Head {
        Head {
            digest: self.expected_digest.map(|d| d.to_string()).or(head.digest),
            ..head
        }
    }
}

pub struct RemoteRepo {
    name: String,
    config: RemoteConfig,
    upstream: Upstream,
    /// PyPI remotes with a `files_url`: the file host, with this remote's client settings.
    files: Option<Upstream>,
    cache: Arc<Cache>,
    pending_tags: manifest::PendingTags,
    /// Bodies larger than this are passed through uncached.
    max_object_size: Option<u64>,
    /// One permit per fill asking the upstream; fills past `max_concurrent_fills` queue.
    fill_slots: tokio::sync::Semaphore,
}

impl RemoteRepo {
    /// Opens remote `name`. `limits` are the cache's own, which the remote's may lower.
    pub fn new(
        name: &str,
        config: RemoteConfig,
        cache: Arc<Cache>,
        limits: &CacheLimits,
    ) -> Result<RemoteRepo> {
        let upstream = Upstream::new(&config)?;
        let files = match &config.files_url {
            Some(url) => {
                Some(Upstream::files_host(&config, url)?.observed_as(name, &cache.metrics))
            }
            None => None,
        };
        let max_object_size = [
            limits.max_object_size,
            config.cache.max_object_size.map(|b| b.0),
        ]
        .into_iter()
        .flatten()
        .min();
        Ok(RemoteRepo {
            name: name.to_string(),
            upstream: upstream.observed_as(name, &cache.metrics),
            files,
            fill_slots: tokio::sync::Semaphore::new(config.max_concurrent_fills.get()),
            max_object_size,
            config,
            cache,
            pending_tags: manifest::PendingTags::default(),
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

    /// A JSON document of at most `max` bytes from the remote's API host (`api_url`), with
    /// this remote's client, timeouts and token. Not cached: `warm` lists releases with it.
    pub async fn api_json<T: serde::de::DeserializeOwned>(
        &self,
        path_and_query: &str,
        max: usize,
    ) -> Result<T> {
        let answer = self
            .upstream
            .api_get(path_and_query, "application/vnd.github+json")
            .await?;
        let mut stream = match answer {
            Answer::Body { stream, .. } => stream,
            Answer::NotModified { .. } => return Err(Error::UpstreamStatus(304)),
            Answer::NotFound => return Err(Error::NotFound),
            Answer::Denied { status } | Answer::Failed { status } => {
                return Err(Error::UpstreamStatus(status));
            }
        };
        let mut body = Vec::new();
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            let chunk = chunk?;
            if body.len() + chunk.len() > max {
                return Err(Error::UpstreamUnreachable(format!(
                    "API answer larger than {max} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| {
            Error::UpstreamUnreachable(format!("API answer is not the JSON expected: {e}"))
        })
    }

    /// The upstream `fetch` asks.
    fn upstream_of(&self, fetch: &Fetch) -> &Upstream {
        match (fetch.origin, &self.files) {
            (Origin::Files, Some(files)) => files,
            _ => &self.upstream,
        }
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
            origin: Origin::Base,
            query: None,
            class,
            accept: None,
            scope: None,
            expected_digest: None,
            integrity: None,
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

    /// The record of `fetch`, or, with metadata unreachable, the stored object served without
    /// it (`Break`); `Continue(None)` when neither has it.
    async fn record(
        &self,
        fetch: &Fetch,
        range: Option<ByteRange>,
        head_only: bool,
    ) -> Result<ControlFlow<Served, Option<ObjectMeta>>> {
        match self.cache.meta.get(&fetch.key).await {
            Ok(c) => Ok(ControlFlow::Continue(c)),
            Err(e @ Error::Metadata { .. }) => Ok(
                match self.serve_unrecorded(fetch, range, head_only, &e).await? {
                    Some(s) => ControlFlow::Break(s),
                    None => ControlFlow::Continue(None),
                },
            ),
            Err(e) => Err(e),
        }
    }

    /// GET of one object: hit, coalesced fill, revalidation or stale copy.
    pub async fn get_fetch(
        self: &Arc<Self>,
        fetch: Fetch,
        range: Option<ByteRange>,
    ) -> Result<Served> {
        let key = fetch.key.clone();
        let now = crate::now_ms();
        let cached = match self.record(&fetch, range, false).await? {
            ControlFlow::Break(s) => return Ok(s),
            ControlFlow::Continue(c) => c,
        };
        match &cached {
            Some(meta) if meta.is_fresh(now) && fetch.matches(meta) => {
                if let Some(s) = self
                    .serve_stored(&fetch, meta, CacheStatus::Hit, range)
                    .await?
                {
                    return Ok(s);
                }
                // The object went away underneath its record (flushed by another process).
                self.cache.meta.delete(&key).await?;
                self.cache
                    .usage
                    .removed(&key, meta.size, &self.cache.metrics);
            }
            Some(_) => {}
            None => {
                if self.cache.meta.is_negative(&key).await.unwrap_or(false) {
                    return Err(Error::NotFound);
                }
            }
        }
        let stale = cached.filter(|m| !m.is_fresh(now) && fetch.matches(m));
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
        // So are bodies with a digest to match that fit in one write batch: they would be
        // held back whole until checked anyway, and a mismatch is then a clean error answer.
        let state = if fetch.manifest.is_some() {
            wait_for_commit(&mut rx).await
        } else {
            match inflight::started(&mut rx).await {
                FillState::Body(p)
                    if (fetch.expected_digest.is_some() || fetch.integrity.is_some())
                        && !p.done
                        && p.head
                            .content_length
                            .is_some_and(|n| n <= fill::WRITE_BATCH as u64) =>
                {
                    wait_for_commit(&mut rx).await
                }
                s => s,
            }
        };
        match state {
            FillState::Body(p) => {
                let body = inflight::follow(rx, self.resume(&fetch));
                let mut served = Served::from_upstream(&p.head, Some(body));
                if p.bypass.is_some() {
                    served.cache = CacheStatus::Bypass;
                }
                Ok(served)
            }
            FillState::Bypass(head, _) => {
                let body = inflight::follow(rx, self.resume(&fetch));
                Ok(Served {
                    cache: CacheStatus::Bypass,
                    ..Served::from_upstream(&head, Some(body))
                })
            }
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
                    && fetch.matches(&meta)
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
    /// is downloaded (for a registry tag, see [`Self::tag_answered_head`]).
    pub async fn head_fetch(self: &Arc<Self>, fetch: &Fetch) -> Result<Served> {
        let key = &fetch.key;
        let cached = match self.record(fetch, None, true).await? {
            ControlFlow::Break(s) => return Ok(s),
            ControlFlow::Continue(c) => c,
        };
        if let Some(meta) = &cached
            && meta.is_fresh(crate::now_ms())
            && fetch.matches(meta)
            && let Some(size) = self.cache.storage.head(key).await?
        {
            return Ok(Served::from_size(fetch, Some(meta), CacheStatus::Hit, size));
        }
        if cached.is_none() && self.cache.meta.is_negative(key).await.unwrap_or(false) {
            return Err(Error::NotFound);
        }
        let result = self
            .upstream_of(fetch)
            .head(&fetch.upstream_path, &fetch.options(None))
            .await;
        let stale = |e: Error| async {
            if e.is_upstream_failure()
                && let Some(meta) = &cached
                && let Ok(Some(size)) = self.cache.storage.head(key).await
            {
                return Ok(Served::from_size(
                    fetch,
                    Some(meta),
                    CacheStatus::Stale,
                    size,
                ));
            }
            Err(e)
        };
        match result {
            Err(e) => stale(e).await,
            Ok(Answer::Body { head, .. }) => {
                let head = fetch.described(head);
                self.tag_answered_head(fetch, head.digest.as_deref(), cached.as_ref())
                    .await;
                Ok(Served::from_upstream(&head, None))
            }
            Ok(Answer::NotFound) => {
                self.remember_not_found(key).await;
                Err(Error::NotFound)
            }
            Ok(other) => stale(status_error(&other)).await,
        }
    }
}

/// The end of a fill, a committed body as `Ready`.
async fn wait_for_commit(rx: &mut tokio::sync::watch::Receiver<FillState>) -> FillState {
    match inflight::finished(rx).await {
        FillState::Body(p) if p.done => FillState::Ready(CacheStatus::Miss),
        s => s,
    }
}

/// The error of an answer that the caller did not expect.
fn status_error(answer: &Answer) -> Error {
    match answer {
        Answer::Body { .. } => Error::UpstreamStatus(200),
        Answer::NotModified { .. } => Error::UpstreamStatus(304),
        Answer::NotFound => Error::NotFound,
        Answer::Denied { status } | Answer::Failed { status } => Error::UpstreamStatus(*status),
    }
}
