//! Eviction: making room for a fill under the limits (`storage.max_size`, a remote's
//! `cache.max_size`, `storage.min_free`) and removing what remotes have not read for their
//! `cache.evict_unused_after`. On one node the choice comes from the in-memory index
//! ([`usage::Usage`]); with Redis metadata it comes from the usage every replica shares, and
//! one replica at a time evicts, under a lock in Redis.

use std::time::{Duration, Instant};

use super::{Cache, lease, usage};
use crate::meta::{ObjectMeta, RedisMeta, SharedTotals};

/// Candidates read from Redis per repository in one round of a shared eviction.
const SHARED_CANDIDATES: usize = 32;
/// Objects of one repository removed per round of the shared `evict_unused_after` pass.
const SHARED_UNUSED_BATCH: usize = 500;

impl Cache {
    /// Makes room for `extra` more bytes at `key`, evicting the remote objects worth least to
    /// keep as the limits require (`storage.max_size`, the remote's `cache.max_size`,
    /// `storage.min_free`), and reserves it until the returned guard is dropped. `None` when
    /// the room cannot be made (the object is larger than a limit, or not enough can be
    /// evicted): the caller then passes the body through uncached. Nothing is evicted for an
    /// object that could not fit anyway. `key`, and objects being filled, are never evicted.
    pub async fn make_room(&self, key: &str, extra: u64) -> Option<usage::Reservation<'_>> {
        let repo = usage::repo_of(key);
        let limited = self.usage.max_size().is_some() || self.usage.repo_limit(repo).is_some();
        let space = self.storage.object_space();
        let disk_fits = |space: Option<(u64, u64)>, reserved: u64| match space {
            Some((free, total)) => {
                free.saturating_sub(reserved) >= extra.saturating_add(self.min_free().of(total))
            }
            None => self.storage.has_room_for(extra),
        };
        // Larger than a limit: evicting everything would not help.
        let too_large = self.usage.max_size().is_some_and(|m| extra > m)
            || self.usage.repo_limit(repo).is_some_and(|m| extra > m)
            || space
                .is_some_and(|(_, total)| extra.saturating_add(self.min_free().of(total)) > total);
        if too_large {
            return None;
        }
        if let Some(redis) = self.meta.shared() {
            if !limited {
                return Some(self.usage.reserve(repo, extra));
            }
            return self.make_room_shared(redis, key, extra, true).await;
        }
        // No size limit and room on the disk: no need to wait for an eviction in progress.
        if !limited && disk_fits(space, self.usage.reserved()) {
            return Some(self.usage.reserve(repo, extra));
        }
        let _one_at_a_time = self.evicting.lock().await;
        if self.usage.is_seeded() {
            let skip = |k: &str| k == key || self.inflight.contains(k);
            for (reason, scope, over) in self.usage.excess(repo, extra) {
                self.evict(scope.as_deref(), over, &skip, reason).await;
            }
            if let Some((free, total)) = self.storage.object_space() {
                let want = extra
                    .saturating_add(self.min_free().of(total))
                    .saturating_add(self.usage.reserved());
                let short = want.saturating_sub(free);
                if short > 0 {
                    self.evict(None, short, &skip, usage::EvictReason::MinFree)
                        .await;
                }
            }
        }
        let fits = self.usage.excess(repo, extra).is_empty()
            && disk_fits(self.storage.object_space(), self.usage.reserved());
        fits.then(|| self.usage.reserve(repo, extra))
    }

    /// Makes room on the file system for `extra` more bytes of hosted content (a local
    /// upload), evicting remote objects when `storage.min_free` requires it. Hosted content is
    /// held to `min_free` only, never to the size limits of cached content. False when the
    /// room cannot be made.
    pub async fn make_disk_room(&self, extra: u64) -> bool {
        let Some((_, total)) = self.storage.object_space() else {
            return self.storage.has_room_for(extra);
        };
        let keep = self.min_free().of(total);
        let short = |space: Option<(u64, u64)>| match space {
            Some((free, _)) => extra
                .saturating_add(keep)
                .saturating_add(self.usage.reserved())
                .saturating_sub(free),
            None => 0,
        };
        if short(self.storage.object_space()) == 0 {
            return true;
        }
        if extra.saturating_add(keep) > total {
            return false;
        }
        let _one_at_a_time = self.evicting.lock().await;
        let missing = short(self.storage.object_space());
        if missing > 0 && self.usage.is_seeded() {
            let skip = |k: &str| self.inflight.contains(k);
            self.evict(None, missing, &skip, usage::EvictReason::MinFree)
                .await;
        }
        short(self.storage.object_space()) == 0
    }

    /// When the object at `key` (with record `meta`) was last read, as far as this process
    /// can tell: what it saw while running, else the file's access time, else when it was
    /// fetched.
    pub fn last_read_ms(&self, key: &str, meta: &ObjectMeta) -> u64 {
        self.usage
            .read_ms(key)
            .or_else(|| self.storage.accessed_ms(key))
            .unwrap_or(meta.fetched_at_ms)
    }

    /// Evicts the objects of each remote in `ages` (name, `cache.evict_unused_after`) not
    /// read for that long. Nothing happens before the start-up count is done.
    pub async fn evict_unused(&self, ages: &[(String, std::time::Duration)]) {
        if !self.usage.is_seeded() {
            return;
        }
        if let Some(redis) = self.meta.shared() {
            return self.evict_unused_shared(redis, ages).await;
        }
        let _one_at_a_time = self.evicting.lock().await;
        for (repo, age) in ages {
            let victims = self.usage.unused(repo, *age);
            self.remove_evicted(victims, usage::EvictReason::Unused)
                .await;
        }
    }

    /// Evicts the objects worth least (of `repo`, or of any remote) until `bytes` are
    /// freed or none is left; record first, so that a reader sees a miss, never a record
    /// without its object. An object being read stays readable by whoever has it open.
    async fn evict(
        &self,
        repo: Option<&str>,
        bytes: u64,
        skip: &(dyn Fn(&str) -> bool + Sync),
        reason: usage::EvictReason,
    ) {
        let victims = self.usage.victims(repo, bytes, skip);
        self.remove_evicted(victims, reason).await;
    }

    /// Removes `victims` (key, size), record first; false when one could not be removed.
    async fn remove_evicted(
        &self,
        victims: Vec<(String, u64)>,
        reason: usage::EvictReason,
    ) -> bool {
        for (victim, size) in victims {
            let removed = async {
                self.meta.delete(&victim).await?;
                self.storage.delete(&victim).await
            };
            match removed.await {
                Ok(_) => {
                    self.hot.forget(&victim);
                    self.usage.removed(&victim, size, &self.metrics);
                    self.metrics
                        .evictions
                        .with_label_values(&[usage::repo_of(&victim), reason.as_str()])
                        .inc();
                    tracing::debug!(
                        key = victim,
                        bytes = size,
                        reason = reason.as_str(),
                        "evicted"
                    );
                }
                Err(e) => {
                    tracing::warn!(key = victim, error = %crate::error_chain(&e), "eviction failed");
                    return false;
                }
            }
        }
        true
    }

    /// What must go before `extra` more bytes at `repo` fit, by the totals every replica
    /// shares: the bytes over `storage.max_size`, then over the repository's `cache.max_size`.
    /// `reserved` counts the room promised to this replica's fills in progress.
    fn shared_excess(
        &self,
        totals: &SharedTotals,
        repo: &str,
        extra: u64,
        reserved: bool,
    ) -> Option<(usage::EvictReason, Option<String>, u64)> {
        let (all, mine) = if reserved {
            (self.usage.reserved(), self.usage.reserved_by(repo))
        } else {
            (0, 0)
        };
        if let Some(max) = self.usage.max_size() {
            let used: u64 = self.usage.remotes().iter().map(|r| totals.bytes(r)).sum();
            let over = (used + all + extra).saturating_sub(max);
            if over > 0 {
                return Some((usage::EvictReason::MaxSize, None, over));
            }
        }
        let max = self.usage.repo_limit(repo)?;
        let over = (totals.bytes(repo) + mine + extra).saturating_sub(max);
        (over > 0).then(|| {
            (
                usage::EvictReason::RepositoryMaxSize,
                Some(repo.to_string()),
                over,
            )
        })
    }

    /// [`Cache::make_room`] with usage shared through Redis. The totals are read fresh; when
    /// they are over a limit this replica takes the eviction lock (waiting for the replica
    /// that holds it, at most one lock lifetime), then evicts the objects worth least across
    /// every replica's reads until the totals fit. `reserved` is false for the check after a
    /// commit, whose own bytes are already in the totals.
    pub(super) async fn make_room_shared(
        &self,
        redis: &RedisMeta,
        key: &str,
        extra: u64,
        reserved: bool,
    ) -> Option<usage::Reservation<'_>> {
        let repo = usage::repo_of(key);
        let _one_here = self.evicting.lock().await;
        let deadline = Instant::now() + crate::meta::EVICTION_LOCK_TTL;
        let mut token: Option<String> = None;
        let fits = loop {
            let totals = match redis.usage_totals().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "cache usage unreadable; not caching");
                    break false;
                }
            };
            let Some((reason, scope, over)) = self.shared_excess(&totals, repo, extra, reserved)
            else {
                break true;
            };
            if !self.usage.is_seeded() {
                break false;
            }
            let Some(held) = &token else {
                let mine = lease::new_token();
                match redis.lock_eviction(&mine).await {
                    Ok(true) => token = Some(mine),
                    Ok(false) if Instant::now() < deadline => {
                        // Another replica is evicting: its removals show in the next totals.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(false) => break false,
                    Err(e) => {
                        tracing::warn!(error = %crate::error_chain(&e), "eviction lock unavailable");
                        break false;
                    }
                }
                continue;
            };
            let repos = match scope {
                Some(r) => vec![r],
                None => self.usage.remotes(),
            };
            let repos: Vec<&str> = repos.iter().map(String::as_str).collect();
            let candidates = match redis.least_worth(&repos, SHARED_CANDIDATES).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "eviction candidates unreadable");
                    break false;
                }
            };
            let mut victims = Vec::new();
            let (mut freed, mut worth) = (0u64, 0f64);
            for c in candidates {
                if freed >= over {
                    break;
                }
                if c.key == key || self.inflight.contains(&c.key) {
                    continue;
                }
                freed += c.size;
                worth = worth.max(c.worth);
                victims.push((c.key, c.size));
            }
            if victims.is_empty() || !self.remove_evicted(victims, reason).await {
                break false;
            }
            // Objects read or stored from now on start from the worth of what just went.
            let _ = redis.raise_inflation(worth).await;
            if !matches!(redis.renew_eviction(held).await, Ok(true)) {
                token = None;
            }
        };
        if let Some(t) = token {
            let _ = redis.unlock_eviction(&t).await;
        }
        fits.then(|| self.usage.reserve(repo, extra))
    }

    /// After a commit with shared usage: other replicas may have committed at the same time,
    /// each within the limit on its own; whoever finds the total over evicts back under it.
    pub async fn settle_shared(&self, key: &str) {
        if let Some(redis) = self.meta.shared()
            && (self.usage.max_size().is_some()
                || self.usage.repo_limit(usage::repo_of(key)).is_some())
        {
            drop(self.make_room_shared(redis, key, 0, false).await);
        }
    }

    /// [`Cache::evict_unused`] with usage shared through Redis: by every replica's reads, by
    /// the replica that holds the eviction lock (the others skip the round).
    async fn evict_unused_shared(&self, redis: &RedisMeta, ages: &[(String, Duration)]) {
        let _one_here = self.evicting.lock().await;
        let token = lease::new_token();
        if !matches!(redis.lock_eviction(&token).await, Ok(true)) {
            return;
        }
        'repos: for (repo, age) in ages {
            let before = crate::now_ms().saturating_sub(age.as_millis() as u64);
            loop {
                let Ok(old) = redis.unread_since(repo, before, SHARED_UNUSED_BATCH).await else {
                    break 'repos;
                };
                let last = old.len() < SHARED_UNUSED_BATCH;
                let victims = old.into_iter().map(|c| (c.key, c.size)).collect();
                if !self
                    .remove_evicted(victims, usage::EvictReason::Unused)
                    .await
                    || !matches!(redis.renew_eviction(&token).await, Ok(true))
                {
                    break 'repos;
                }
                if last {
                    break;
                }
            }
        }
        let _ = redis.unlock_eviction(&token).await;
    }
}
