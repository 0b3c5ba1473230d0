//! The miss path of a remote: one fill per key asks upstream, streams the body into storage
//! while its waiters follow the spool, checks it (length, digest), commits and records it, and
//! counts it. A 304 renews the cached copy; a 404 is remembered for `negative_ttl`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};

use super::passthrough::is_no_space;
use super::{Fetch, RemoteRepo, status_error};
use crate::digest::{ContentDigests, Integrity, IntegrityHasher};
use crate::error::{Error, Result};
use crate::meta::ObjectMeta;
use crate::package::CacheClass;
use crate::repo::CacheStatus;
use crate::repo::inflight::{BypassReason, FillSender, FillState};
use crate::repo::lease::{self, Claim};
use crate::storage::{Expect, StorageWriter};
use crate::upstream::{Answer, BodyStream, Head, Validators};

/// Bytes gathered from upstream before a write to storage (unless upstream pauses first).
pub(super) const WRITE_BATCH: usize = 256 * 1024;

/// The final state of a fill that renewed the cached copy.
pub(super) fn renewed(result: Result<()>) -> FillState {
    match result {
        Ok(()) => FillState::Ready(CacheStatus::Revalidated),
        Err(e) => FillState::Failed(e),
    }
}

/// A body received whole from upstream: every byte is in the writer (which counted and hashed
/// them), all but the last batch announced to the followers.
struct Received {
    digests: ContentDigests,
    /// Bytes of the last batch, announced only once the body checks out, so that followers
    /// never see all of a bad body.
    held_back: u64,
}

impl RemoteRepo {
    /// Drives one fill to its end; every outcome is published through `tx`. `stale` is the
    /// expired record being revalidated, if any.
    pub(super) async fn run_fill(
        self: Arc<Self>,
        fetch: Fetch,
        stale: Option<ObjectMeta>,
        tx: FillSender,
    ) {
        let key = &fetch.key;
        // Another fill may have committed between the caller's lookup and its join.
        if stale.is_none()
            && let Ok(Some(meta)) = self.cache.meta.get(key).await
            && meta.is_fresh(crate::now_ms())
            && fetch.matches(&meta)
            && let Ok(Some(_)) = self.cache.storage.head(key).await
        {
            tx.finish(FillState::Ready(CacheStatus::Hit));
            return;
        }
        // At most `max_concurrent_fills` ask this upstream at once; the others wait in turn.
        let _slot = self
            .fill_slots
            .acquire()
            .await
            .expect("the fill semaphore is never closed");
        // Other replicas: one fetch per key across all of them.
        let _lease =
            match lease::claim(&self.cache, key, stale.as_ref(), fetch.expected_digest).await {
                Claim::Mine(guard) => guard,
                Claim::FilledElsewhere => return tx.finish(FillState::Ready(CacheStatus::Miss)),
                Claim::NotFound => return tx.finish(FillState::Failed(Error::NotFound)),
            };
        if let Some(meta) = &stale
            && let Some(state) = self.revalidate_manifest(&fetch, meta).await
        {
            return tx.finish(state);
        }
        let validators = stale
            .as_ref()
            .filter(|_| fetch.manifest.is_none())
            .map(|m| Validators {
                etag: m.etag.clone(),
                last_modified: m.last_modified.clone(),
            });
        tracing::info!(repository = %self.name, key, revalidate = stale.is_some(), "fetching from upstream");
        let answer = self
            .upstream_of(&fetch)
            .get(&fetch.upstream_path, &fetch.options(validators.as_ref()))
            .await;
        match answer {
            Err(e) => tx.finish(FillState::Failed(e)),
            // Only a pass-through asks for part of a body.
            Ok(Answer::Body { head, .. }) if head.range_start.is_some() => {
                tx.finish(FillState::Failed(Error::UpstreamStatus(206)))
            }
            Ok(Answer::Body { head, stream }) => {
                match self
                    .store_body(head.clone(), stream, &fetch, stale.as_ref(), &tx)
                    .await
                {
                    Ok(()) => tx.complete(),
                    Err(e) if is_no_space(&e) || matches!(e, Error::TooLargeToCache { .. }) => {
                        let reason = match e {
                            Error::TooLargeToCache { .. } => BypassReason::TooLarge,
                            _ => BypassReason::NoSpace,
                        };
                        self.bypassed(key, reason, &e);
                        tx.bypass(fetch.described(head), reason)
                    }
                    Err(e) => {
                        tracing::warn!(repository = %self.name, key, error = %e, "fetch failed; nothing cached");
                        tx.finish(FillState::Failed(e))
                    }
                }
            }
            Ok(Answer::NotModified { validators: fresh }) if validators.is_some() => {
                tx.finish(renewed(self.renew(key, fetch.class, &fresh).await))
            }
            Ok(Answer::NotFound) => {
                self.remember_not_found(key).await;
                if let Some(old) = &stale {
                    // Upstream removed it: drop our copy too.
                    let _ = self.cache.meta.delete(key).await;
                    if let Ok(true) = self.cache.storage.delete(key).await {
                        self.cache.usage.removed(key, old.size, &self.cache.metrics);
                    }
                }
                tx.finish(FillState::Failed(Error::NotFound))
            }
            Ok(other) => tx.finish(FillState::Failed(status_error(&other))),
        }
    }

    /// A 304: the cached copy is good for another TTL, with the validators upstream sent.
    pub(super) async fn renew(
        &self,
        key: &str,
        class: CacheClass,
        validators: &Validators,
    ) -> Result<()> {
        let Some(mut meta) = self.cache.meta.get(key).await? else {
            return Err(Error::UpstreamUnreachable(
                "revalidated object has no record".into(),
            ));
        };
        let now = crate::now_ms();
        meta.fetched_at_ms = now;
        meta.expires_at_ms = self.expiry(class, now);
        if let Some(etag) = &validators.etag {
            meta.etag = Some(etag.clone());
        }
        if let Some(lm) = &validators.last_modified {
            meta.last_modified = Some(lm.clone());
        }
        self.cache.meta.put(key, &meta).await
    }

    pub(super) async fn remember_not_found(&self, key: &str) {
        let ttl = self.config.cache.negative_ttl;
        if !ttl.is_zero() {
            let until = crate::now_ms() + ttl.0.as_millis() as u64;
            if let Err(e) = self.cache.meta.put_negative(key, until).await {
                tracing::warn!(key, error = %e, "could not record negative cache entry");
            }
        }
    }

    /// Streams a 200 body into storage while publishing progress; commits only a whole body
    /// whose length and digest check out.
    async fn store_body(
        &self,
        head: Head,
        stream: BodyStream,
        fetch: &Fetch,
        previous: Option<&ObjectMeta>,
        tx: &FillSender,
    ) -> Result<()> {
        let announced = head.digest.clone();
        let head = fetch.described(head);
        if let (Some(len), Some(limit)) = (head.content_length, self.max_object_size)
            && len > limit
        {
            return Err(Error::TooLargeToCache { limit });
        }
        // The room for a body of known length is reserved until it is recorded.
        let _room = match head.content_length {
            Some(len) => match self.cache.make_room(&fetch.key, len).await {
                Some(room) => Some(room),
                None => {
                    return Err(Error::storage(format!("no room for {len} bytes"))(
                        std::io::ErrorKind::StorageFull.into(),
                    ));
                }
            },
            None => None,
        };
        let mut writer = self.cache.storage.writer(&fetch.key).await?;
        let spool = writer
            .spool_reader()
            .map_err(Error::storage("opening spool"))?;
        tx.body(head.clone(), spool);
        // An asked-for digest that is not a valid sha256 can match no body: it is refused
        // below, once the body is in, as any other mismatch.
        let expect = Expect::default()
            .size(head.content_length)
            .sha256(fetch.expected_digest.as_ref());
        let mut integrity = fetch.integrity.as_ref().map(Integrity::hasher);
        let received = self
            .receive(stream, &mut writer, &expect, integrity.as_mut(), tx)
            .await?;
        expect.check(&received.digests)?;
        if let (Some(want), Some(h)) = (&fetch.integrity, integrity) {
            let got = h.finish();
            if got != *want {
                return Err(Error::Integrity(format!(
                    "content digest is {got}, expected {want}"
                )));
            }
        }
        RemoteRepo::check_announced(fetch, announced.as_deref(), &received.digests.sha256)?;
        tx.progress(received.held_back);
        writer.commit_verified(expect).await?;
        self.record_body(fetch, head, &received.digests, previous)
            .await;
        Ok(())
    }

    /// The stream loop: writes every chunk (the writer counts and hashes it; `integrity`, when
    /// given, hashes it too) in batches, each
    /// announced to the followers when it is full or upstream pauses; the last batch is
    /// written but held back. An overlong body is refused as soon as it passes its length.
    async fn receive(
        &self,
        mut body: BodyStream,
        writer: &mut StorageWriter,
        expect: &Expect<'_>,
        mut integrity: Option<&mut IntegrityHasher>,
        tx: &FillSender,
    ) -> Result<Received> {
        let mut total: u64 = 0;
        let mut batch = BytesMut::new();
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
                    spool_batch(writer, batch.split().freeze(), tx).await?;
                    body.next().await
                }
            };
            let Some(chunk) = next.transpose()? else {
                break;
            };
            total += chunk.len() as u64;
            upstream_bytes.inc_by(chunk.len() as u64);
            if let Some(h) = integrity.as_deref_mut() {
                h.update(&chunk);
            }
            expect.check_partial(total)?;
            if let Some(limit) = self.max_object_size
                && total > limit
            {
                // A body of unannounced length outgrew the limit: what is spooled is good,
                // the clients take the rest from upstream.
                return Err(Error::TooLargeToCache { limit });
            }
            batch.extend_from_slice(&chunk);
            if batch.len() >= WRITE_BATCH {
                spool_batch(writer, batch.split().freeze(), tx).await?;
            }
        }
        let held_back = batch.len() as u64;
        if held_back > 0 {
            writer.write(batch.freeze()).await?;
        }
        Ok(Received {
            digests: writer.digests(),
            held_back,
        })
    }

    /// Records a committed body (after the manifest hooks) and counts it.
    async fn record_body(
        &self,
        fetch: &Fetch,
        head: Head,
        received: &ContentDigests,
        previous: Option<&ObjectMeta>,
    ) {
        let key = fetch.key.as_str();
        let head_length_unknown = head.content_length.is_none();
        let now = crate::now_ms();
        let mut meta = ObjectMeta {
            size: received.size,
            sha256: received.sha256,
            etag: head.etag,
            last_modified: head.last_modified,
            content_type: head.content_type,
            fetched_at_ms: now,
            class: fetch.class,
            expires_at_ms: self.expiry(fetch.class, now),
        };
        self.manifest_committing(fetch, &mut meta).await;
        if let Err(e) = self.cache.record_committed(key, &meta).await {
            // The clients of this fill still get the whole body (they read the spool); the
            // object is not kept, and the next request fetches it again.
            tracing::warn!(key, error = %crate::error_chain(&e), "record not written; object not kept");
            if let Some(p) = previous {
                self.cache.usage.removed(key, p.size, &self.cache.metrics);
            }
            return;
        }
        let (cache, size) = (&self.cache, received.size);
        cache
            .usage
            .stored(key, size, previous.map(|p| p.size), &cache.metrics);
        if cache.meta.shared().is_some() {
            cache.settle_shared(key).await;
        } else if head_length_unknown {
            // A body of unannounced length may have taken the cache past a limit.
            drop(cache.make_room(key, 0).await);
        }
        self.manifest_committed(fetch, &meta).await;
        tracing::info!(repository = %self.name, key, bytes = received.size, "cached");
    }
}

/// Writes `batch` (if any) to storage and tells the followers it is there.
async fn spool_batch(writer: &mut StorageWriter, batch: Bytes, tx: &FillSender) -> Result<()> {
    if !batch.is_empty() {
        let n = batch.len() as u64;
        writer.write(batch).await?;
        tx.progress(n);
    }
    Ok(())
}
