//! The Redis metadata backend, shared by every replica: object records, freshness (index TTLs)
//! as expiring keys, negative-cache entries and fill leases. Every call has a bounded timeout,
//! so a Redis outage turns into errors callers can fall back from, never into hung requests.
//!
//! Key layout (`P` is `metadata.key_prefix`, default `artifactapi:`; `KEY` is the storage key
//! `{repository}/{path}`):
//!
//! | key | value | expiry |
//! |---|---|---|
//! | `P` `meta:` KEY | the JSON record ([`ObjectMeta`]) | none |
//! | `P` `fresh:` KEY | `1` while the object may be served without asking upstream | the TTL |
//! | `P` `neg:` KEY | `1` while an upstream 404 is remembered | `negative_ttl` |
//! | `P` `lease:` KEY | token of the replica filling KEY | a few seconds, renewed |
//!
//! Writing a record, remembering a 404 and releasing a lease also publish KEY on the channel
//! `P` `commits`, in the same transaction, for the replicas waiting on KEY
//! ([`super::redis_commits`]). Writing and deleting a record also count it, in the same script,
//! in the usage keys of [`super::redis_usage`].

use std::collections::HashSet;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, Script, ScriptInvocation};

use super::coordination::CommitWatch;
use super::redis_commits::CommitSubscriber;
use super::redis_usage;
use super::{MetaEntry, ObjectMeta};
use crate::config::RedisConfig;
use crate::error::{Error, Result};

/// Time allowed for one Redis command (connecting included).
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys fetched per MGET/DEL batch.
const BATCH: usize = 500;

pub struct RedisMeta {
    conn: ConnectionManager,
    prefix: String,
    commits: CommitSubscriber,
    /// The remote repositories: their objects are ranked for eviction. Replaced on reload.
    evictable: std::sync::RwLock<HashSet<String>>,
}

/// Redis errors carry the server address but never the password; still, keep them short.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RedisCause(String);

fn redis_error(context: &str) -> impl FnOnce(redis::RedisError) -> Error + '_ {
    move |e| {
        let kind = format!("{:?}", e.kind());
        Error::metadata(context.to_string())(RedisCause(format!(
            "redis {kind}: {}",
            e.detail().unwrap_or("")
        )))
    }
}

fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisMeta {
    /// Prepares a connection (made lazily, re-made after failures): start-up does not need
    /// Redis to be up. `evictable` names the remote repositories.
    pub fn open(settings: &RedisConfig, evictable: HashSet<String>) -> Result<RedisMeta> {
        let url = settings.url.as_ref().ok_or_else(|| {
            Error::BadRequest("metadata.url is required for backend redis".into())
        })?;
        let invalid = |e: redis::RedisError| {
            Error::metadata("metadata.url")(RedisCause(format!(
                "invalid Redis URL: {:?}",
                e.kind()
            )))
        };
        let client = match &settings.ca_file {
            Some(_) if !url.expose().starts_with("rediss://") => {
                return Err(Error::BadRequest(
                    "metadata.ca_file is for TLS: metadata.url must start with rediss://".into(),
                ));
            }
            Some(ca) => {
                let root = std::fs::read(ca).map_err(Error::metadata(format!(
                    "reading metadata.ca_file {}",
                    ca.display()
                )))?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root),
                };
                redis::Client::build_with_tls(url.expose(), certs).map_err(|e| {
                    if e.kind() == redis::ErrorKind::InvalidClientConfig {
                        invalid(e)
                    } else {
                        Error::metadata("metadata.ca_file")(RedisCause(format!(
                            "not a usable CA certificate: {}",
                            e.detail().unwrap_or("")
                        )))
                    }
                })?
            }
            None => redis::Client::open(url.expose()).map_err(invalid)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let prefix = settings
            .key_prefix
            .as_ref()
            .map_or("artifactapi:", |p| p.0.as_str())
            .to_string();
        let commits = CommitSubscriber::new(client.clone(), format!("{prefix}commits"));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(redis_error("connecting to Redis"))?;
        Ok(RedisMeta {
            conn,
            prefix,
            commits,
            evictable: std::sync::RwLock::new(evictable),
        })
    }

    /// The remote repositories, after a reload.
    pub fn set_remotes(&self, remotes: HashSet<String>) {
        *self
            .evictable
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = remotes;
    }

    fn is_remote(&self, repo: &str) -> bool {
        self.evictable
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(repo)
    }

    /// `metadata.key_prefix`.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn k(&self, kind: &str, key: &str) -> String {
        format!("{}{kind}:{key}", self.prefix)
    }

    pub(super) async fn run<T: FromRedisValue>(&self, context: &str, cmd: &Cmd) -> Result<T> {
        let mut conn = self.conn.clone();
        timed(context, cmd.query_async(&mut conn)).await
    }

    pub(super) async fn run_pipe<T: FromRedisValue>(
        &self,
        context: &str,
        pipe: &Pipeline,
    ) -> Result<T> {
        let mut conn = self.conn.clone();
        timed(context, pipe.query_async(&mut conn)).await
    }

    pub(super) async fn run_script<T: FromRedisValue>(
        &self,
        context: &str,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = self.conn.clone();
        timed(context, inv.invoke_async(&mut conn)).await
    }

    pub async fn get(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let mut pipe = redis::pipe();
        pipe.get(self.k("meta", key)).pttl(self.k("fresh", key));
        let (raw, pttl): (Option<String>, i64) = self.run_pipe("reading a record", &pipe).await?;
        let Some(raw) = raw else { return Ok(None) };
        let mut meta: ObjectMeta = serde_json::from_str(&raw)
            .map_err(Error::metadata(format!("decoding record of {key}")))?;
        apply_fresh(&mut meta, pttl, crate::now_ms());
        Ok(Some(meta))
    }

    pub async fn put(&self, key: &str, meta: &ObjectMeta) -> Result<()> {
        let body = serde_json::to_string(meta).map_err(Error::metadata("encoding record"))?;
        let now = crate::now_ms();
        let fresh_ms = match meta.expires_at_ms {
            Some(t) if t > now => t - now,
            _ => 0,
        };
        let repo = crate::repo::usage::repo_of(key);
        let mut inv = redis_usage::PUT.prepare_invoke();
        inv.key(self.k("meta", key))
            .key(self.k("fresh", key))
            .arg(body)
            .arg(fresh_ms)
            .arg(self.commits.channel())
            .arg(key)
            .arg(repo)
            .arg(meta.size)
            .arg(if self.is_remote(repo) { "1" } else { "0" })
            .arg(now)
            .arg(&self.prefix);
        self.run_script::<i64>("writing a record", &inv)
            .await
            .map(drop)
    }

    pub async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.delete_many(&[key.to_string()]).await? > 0)
    }

    /// Deletes many records; returns how many existed.
    pub async fn delete_many(&self, keys: &[String]) -> Result<u64> {
        let mut total = 0;
        for batch in keys.chunks(BATCH) {
            let mut inv = redis_usage::DELETE.prepare_invoke();
            inv.arg(&self.prefix);
            for key in batch {
                inv.arg(key);
            }
            total += self.run_script::<u64>("deleting records", &inv).await?;
        }
        Ok(total)
    }

    /// Every key matching `P{kind}:{prefix}*`, without the `P{kind}:` part.
    async fn scan(&self, kind: &str, prefix: &str) -> Result<Vec<String>> {
        let pattern = format!("{}*", escape_glob(&self.k(kind, prefix)));
        let strip = self.k(kind, "");
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, keys): (u64, Vec<String>) = self.run("listing records", &cmd).await?;
            out.extend(
                keys.into_iter()
                    .filter_map(|k| k.strip_prefix(&strip).map(str::to_string)),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<MetaEntry>> {
        let keys = self.scan("meta", prefix).await?;
        let now = crate::now_ms();
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(BATCH) {
            let mut pipe = redis::pipe();
            pipe.mget(batch.iter().map(|k| self.k("meta", k)).collect::<Vec<_>>());
            for k in batch {
                pipe.pttl(self.k("fresh", k));
            }
            let mut values: Vec<redis::Value> = self.run_pipe("listing records", &pipe).await?;
            if values.is_empty() {
                continue;
            }
            let raws: Vec<Option<String>> = redis::from_redis_value(values.remove(0))
                .map_err(|e| Error::metadata("listing records")(RedisCause(e.to_string())))?;
            for ((key, raw), pttl) in batch.iter().zip(raws).zip(values) {
                let pttl: i64 = redis::from_redis_value(pttl).unwrap_or(-2);
                if let Some(raw) = raw
                    && let Ok(mut meta) = serde_json::from_str::<ObjectMeta>(&raw)
                {
                    apply_fresh(&mut meta, pttl, now);
                    out.push(MetaEntry {
                        key: key.clone(),
                        meta,
                    });
                }
            }
        }
        Ok(out)
    }

    pub async fn is_negative(&self, key: &str) -> Result<bool> {
        let n: u64 = self
            .run(
                "reading a negative entry",
                redis::cmd("EXISTS").arg(self.k("neg", key)),
            )
            .await?;
        Ok(n > 0)
    }

    pub async fn put_negative(&self, key: &str, expires_at_ms: u64) -> Result<()> {
        let ttl = expires_at_ms.saturating_sub(crate::now_ms()).max(1);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.k("neg", key))
            .arg(1)
            .arg("PX")
            .arg(ttl)
            .ignore()
            .publish(self.commits.channel(), key)
            .ignore();
        self.run_pipe("writing a negative entry", &pipe).await
    }

    pub async fn clear_negative(&self, prefix: &str) -> Result<u64> {
        let keys = self.scan("neg", prefix).await?;
        let mut total = 0;
        for batch in keys.chunks(BATCH) {
            let full: Vec<String> = batch.iter().map(|k| self.k("neg", k)).collect();
            let n: u64 = self
                .run("clearing negative entries", redis::cmd("DEL").arg(full))
                .await?;
            total += n;
        }
        Ok(total)
    }

    /// Takes the fill lease of `key` for `ttl` unless another replica holds it.
    pub async fn try_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        let r: Option<String> = self
            .run(
                "taking a fill lease",
                redis::cmd("SET")
                    .arg(self.k("lease", key))
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64),
            )
            .await?;
        Ok(r.is_some())
    }

    /// Extends a lease we hold; false when it is no longer ours.
    pub async fn renew_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        let script = Script::new(
            "if redis.call('get', KEYS[1]) == ARGV[1] then \
             return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end",
        );
        let mut inv = script.prepare_invoke();
        inv.key(self.k("lease", key))
            .arg(token)
            .arg(ttl.as_millis() as u64);
        let mut conn = self.conn.clone();
        let n: i64 = match tokio::time::timeout(OP_TIMEOUT, inv.invoke_async(&mut conn)).await {
            Ok(r) => r.map_err(redis_error("renewing a fill lease"))?,
            Err(_) => return Ok(false),
        };
        Ok(n == 1)
    }

    /// Gives a lease back, if it is still ours, and tells the replicas waiting on it.
    pub async fn release_lease(&self, key: &str, token: &str) -> Result<()> {
        let script = Script::new(
            "if redis.call('get', KEYS[1]) == ARGV[1] then \
             redis.call('del', KEYS[1]); redis.call('publish', ARGV[2], ARGV[3]); \
             return 1 else return 0 end",
        );
        let mut inv = script.prepare_invoke();
        inv.key(self.k("lease", key))
            .arg(token)
            .arg(self.commits.channel())
            .arg(key);
        let mut conn = self.conn.clone();
        match tokio::time::timeout(OP_TIMEOUT, inv.invoke_async::<i64>(&mut conn)).await {
            Ok(r) => r.map(|_| ()).map_err(redis_error("releasing a fill lease")),
            Err(_) => Ok(()),
        }
    }

    /// True while some replica holds the lease of `key`.
    pub async fn lease_held(&self, key: &str) -> Result<bool> {
        let n: u64 = self
            .run(
                "reading a fill lease",
                redis::cmd("EXISTS").arg(self.k("lease", key)),
            )
            .await?;
        Ok(n > 0)
    }

    /// Wakes on [`Self::put`], [`Self::put_negative`] and [`Self::release_lease`] of `key`, by
    /// any replica.
    pub fn watch_commits(&self, key: &str) -> CommitWatch {
        self.commits.watch(key)
    }

    pub async fn check(&self) -> Result<()> {
        let _: String = self.run("pinging Redis", &redis::cmd("PING")).await?;
        Ok(())
    }
}

/// `call`, bounded by [`OP_TIMEOUT`], with `context` in its error.
async fn timed<T>(
    context: &str,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(OP_TIMEOUT, call).await {
        Ok(r) => r.map_err(redis_error(context)),
        Err(_) => Err(Error::metadata(context.to_string())(RedisCause(
            "Redis did not answer in time".into(),
        ))),
    }
}

/// Freshness comes from the `fresh:` key's remaining lifetime, not the writer's clock: absent
/// means expired (a record with an expiry), present means `now + pttl`.
fn apply_fresh(meta: &mut ObjectMeta, pttl: i64, now: u64) {
    if meta.expires_at_ms.is_some() {
        meta.expires_at_ms = Some(if pttl > 0 {
            now + pttl as u64
        } else {
            now.min(meta.expires_at_ms.unwrap_or(now))
        });
    }
}
