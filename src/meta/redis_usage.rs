//! Cache usage shared by replicas through Redis: each stored object's size and reads, the
//! totals per repository, the order in which remote objects go (GDSF worth) and the lock that
//! lets one replica evict at a time. Record writes and deletes change usage in the same script
//! (see [`super::redis`]), so usage always matches the records, whichever replica wrote them.
//!
//! Keys (`P` is `metadata.key_prefix`, `R` a repository, `KEY` a storage key):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P` `usage:size` | hash | KEY → bytes, for every record |
//! | `P` `usage:bytes`, `P` `usage:objects` | hash | R → totals |
//! | `P` `usage:hits` | hash | KEY → reads, remote objects only |
//! | `P` `usage:worth:` R | sorted set | KEY by worth (inflation + reads / size^[`SIZE_WEIGHT`]) |
//! | `P` `usage:read:` R | sorted set | KEY by last read (ms since the epoch) |
//! | `P` `usage:inflation` | string | the worth of the last object evicted |
//! | `P` `usage:seeded` | string | set once records from before usage was kept are counted |
//! | `P` `usage:evicting` | string | token of the replica evicting, expiring |

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::redis::RedisMeta;
use crate::error::Result;
use crate::repo::usage::SIZE_WEIGHT;

/// How long the eviction lock is held without being renewed: a replica that dies while
/// evicting holds up the others no longer than this.
pub const EVICTION_LOCK_TTL: Duration = Duration::from_secs(15);

/// Entries sent in one script call.
const CHUNK: usize = 500;

/// Writes a record and counts it. KEYS: record, fresh marker. ARGV: record JSON, freshness in
/// ms (0: none), commit channel, KEY, R, size, "1" when R is a remote, now (ms), P.
pub(super) static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local p, key, repo, size = ARGV[9], ARGV[4], ARGV[5], tonumber(ARGV[6])
redis.call('set', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 then
  redis.call('set', KEYS[2], 1, 'PX', ARGV[2])
else
  redis.call('del', KEYS[2])
end
local old = redis.call('hget', p .. 'usage:size', key)
redis.call('hset', p .. 'usage:size', key, size)
if old then
  redis.call('hincrby', p .. 'usage:bytes', repo, size - tonumber(old))
else
  redis.call('hincrby', p .. 'usage:bytes', repo, size)
  redis.call('hincrby', p .. 'usage:objects', repo, 1)
end
if ARGV[7] == '1' then
  local hits = tonumber(redis.call('hget', p .. 'usage:hits', key) or '0')
  if hits < 1 then
    hits = 1
    redis.call('hset', p .. 'usage:hits', key, 1)
  end
  local base = tonumber(redis.call('get', p .. 'usage:inflation') or '0')
  redis.call('zadd', p .. 'usage:worth:' .. repo, base + hits / math.max(size, 1) ^ {w}, key)
  redis.call('zadd', p .. 'usage:read:' .. repo, ARGV[8], key)
end
redis.call('publish', ARGV[3], key)
return 1
",
        w = SIZE_WEIGHT
    ))
});

/// Deletes records and uncounts them. ARGV: P, then the KEYs. Returns how many records existed.
pub(super) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = ARGV[1]
local n = 0
for i = 2, #ARGV do
  local key = ARGV[i]
  local repo = string.match(key, '^[^/]*')
  n = n + redis.call('del', p .. 'meta:' .. key)
  redis.call('del', p .. 'fresh:' .. key)
  local old = redis.call('hget', p .. 'usage:size', key)
  if old then
    redis.call('hdel', p .. 'usage:size', key)
    redis.call('hdel', p .. 'usage:hits', key)
    redis.call('hincrby', p .. 'usage:bytes', repo, -tonumber(old))
    redis.call('hincrby', p .. 'usage:objects', repo, -1)
    redis.call('zrem', p .. 'usage:worth:' .. repo, key)
    redis.call('zrem', p .. 'usage:read:' .. repo, key)
  end
end
return n
",
    )
});

/// Adds reads. ARGV: P, now (ms), then KEY and count pairs. Objects no longer cached are
/// skipped.
static READS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local p, now = ARGV[1], ARGV[2]
local base = tonumber(redis.call('get', p .. 'usage:inflation') or '0')
for i = 3, #ARGV, 2 do
  local key = ARGV[i]
  local repo = string.match(key, '^[^/]*')
  local worth = p .. 'usage:worth:' .. repo
  if redis.call('zscore', worth, key) then
    local size = tonumber(redis.call('hget', p .. 'usage:size', key) or '1')
    local hits = redis.call('hincrby', p .. 'usage:hits', key, ARGV[i + 1])
    redis.call('zadd', worth, base + hits / math.max(size, 1) ^ {w}, key)
    redis.call('zadd', p .. 'usage:read:' .. repo, now, key)
  end
end
return 1
",
        w = SIZE_WEIGHT
    ))
});

/// Counts records that usage does not know yet. ARGV: P, then KEY, size, last read (ms) and
/// "1" for a remote, four by four. Returns how many were added.
static SEED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local p = ARGV[1]
local n = 0
for i = 2, #ARGV, 4 do
  local key, size = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('exists', p .. 'meta:' .. key) == 1
     and redis.call('hsetnx', p .. 'usage:size', key, size) == 1 then
    local repo = string.match(key, '^[^/]*')
    redis.call('hincrby', p .. 'usage:bytes', repo, size)
    redis.call('hincrby', p .. 'usage:objects', repo, 1)
    if ARGV[i + 3] == '1' then
      redis.call('hset', p .. 'usage:hits', key, 1)
      redis.call('zadd', p .. 'usage:worth:' .. repo, 1 / math.max(size, 1) ^ {w}, key)
      redis.call('zadd', p .. 'usage:read:' .. repo, ARGV[i + 2], key)
    end
    n = n + 1
  end
end
return n
",
        w = SIZE_WEIGHT
    ))
});

/// Raises the inflation value to ARGV[1] if it is lower. KEYS: the inflation key.
static INFLATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if tonumber(redis.call('get', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('set', KEYS[1], ARGV[1])
end
return 1
",
    )
});

/// Renews (ARGV[2] ms) or, with ARGV[2] = 0, releases a lock if ARGV[1] still holds it.
static LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('pexpire', KEYS[1], ARGV[2])
else
  redis.call('del', KEYS[1])
end
return 1
",
    )
});

/// Bytes and objects per repository, as every replica sees them.
#[derive(Debug, Default, Clone)]
pub struct SharedTotals {
    pub by_repo: HashMap<String, (u64, u64)>,
}

impl SharedTotals {
    pub fn bytes(&self, repo: &str) -> u64 {
        self.by_repo.get(repo).map_or(0, |t| t.0)
    }
}

/// A remote object that may be evicted.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub key: String,
    pub worth: f64,
    pub size: u64,
}

impl RedisMeta {
    fn usage_key(&self, name: &str) -> String {
        format!("{}usage:{name}", self.prefix())
    }

    /// Totals of every repository.
    pub async fn usage_totals(&self) -> Result<SharedTotals> {
        let mut pipe = redis::pipe();
        pipe.hgetall(self.usage_key("bytes"))
            .hgetall(self.usage_key("objects"));
        let (bytes, objects): (HashMap<String, i64>, HashMap<String, i64>) =
            self.run_pipe("reading cache usage", &pipe).await?;
        let mut by_repo = HashMap::new();
        for (repo, b) in bytes {
            let n = objects.get(&repo).copied().unwrap_or(0);
            by_repo.insert(repo, (b.max(0) as u64, n.max(0) as u64));
        }
        Ok(SharedTotals { by_repo })
    }

    /// Up to `n` of the objects of each of `repos` worth least, least first.
    pub async fn least_worth(&self, repos: &[&str], n: usize) -> Result<Vec<Candidate>> {
        let mut pipe = redis::pipe();
        for repo in repos {
            pipe.zrange_withscores(self.usage_key(&format!("worth:{repo}")), 0, n as isize - 1);
        }
        let lists: Vec<Vec<(String, f64)>> =
            self.run_pipe("reading eviction candidates", &pipe).await?;
        let mut found: Vec<(String, f64)> = lists.into_iter().flatten().collect();
        found.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        self.with_sizes(found).await
    }

    /// Up to `n` objects of `repo` last read before `before_ms`, oldest first.
    pub async fn unread_since(
        &self,
        repo: &str,
        before_ms: u64,
        n: usize,
    ) -> Result<Vec<Candidate>> {
        let keys: Vec<(String, f64)> = self
            .run(
                "reading unused objects",
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.usage_key(&format!("read:{repo}")))
                    .arg("-inf")
                    .arg(format!("({before_ms}"))
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(n),
            )
            .await?;
        let keys = keys.into_iter().map(|(k, _)| (k, 0.0)).collect();
        self.with_sizes(keys).await
    }

    async fn with_sizes(&self, found: Vec<(String, f64)>) -> Result<Vec<Candidate>> {
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        let sizes: Vec<Option<u64>> = self
            .run(
                "reading object sizes",
                redis::cmd("HMGET").arg(self.usage_key("size")).arg(keys),
            )
            .await?;
        Ok(found
            .into_iter()
            .zip(sizes)
            .filter_map(|((key, worth), size)| {
                Some(Candidate {
                    key,
                    worth,
                    size: size?,
                })
            })
            .collect())
    }

    /// Raises the inflation value to `worth`, the worth of an object just evicted.
    pub async fn raise_inflation(&self, worth: f64) -> Result<()> {
        let mut inv = INFLATE.prepare_invoke();
        inv.key(self.usage_key("inflation")).arg(worth);
        self.run_script::<i64>("raising the eviction inflation", &inv)
            .await
            .map(drop)
    }

    /// Sends reads counted since the last call: (KEY, count).
    pub async fn add_reads(&self, reads: &[(Box<str>, u32)]) -> Result<()> {
        let now = crate::now_ms();
        for chunk in reads.chunks(CHUNK) {
            let mut inv = READS.prepare_invoke();
            inv.arg(self.prefix()).arg(now);
            for (key, n) in chunk {
                inv.arg(&**key).arg(*n);
            }
            self.run_script::<i64>("recording reads", &inv).await?;
        }
        Ok(())
    }

    /// True once the records from before usage was kept have been counted.
    pub async fn usage_seeded(&self) -> Result<bool> {
        let n: u64 = self
            .run(
                "reading cache usage",
                redis::cmd("EXISTS").arg(self.usage_key("seeded")),
            )
            .await?;
        Ok(n > 0)
    }

    /// Counts records usage does not know yet: (KEY, size, last read ms, remote?). Returns how
    /// many were added. Idempotent: a record already counted, or gone, is skipped.
    pub async fn seed_usage(&self, entries: &[(String, u64, u64, bool)]) -> Result<u64> {
        let mut added = 0;
        for chunk in entries.chunks(CHUNK) {
            let mut inv = SEED.prepare_invoke();
            inv.arg(self.prefix());
            for (key, size, read, remote) in chunk {
                inv.arg(key)
                    .arg(*size)
                    .arg(*read)
                    .arg(if *remote { "1" } else { "0" });
            }
            added += self
                .run_script::<u64>("counting cached objects", &inv)
                .await?;
        }
        Ok(added)
    }

    pub async fn mark_usage_seeded(&self) -> Result<()> {
        self.run::<()>(
            "writing cache usage",
            redis::cmd("SET").arg(self.usage_key("seeded")).arg(1),
        )
        .await
    }

    /// Takes the eviction lock for `token` unless another replica holds it.
    pub async fn lock_eviction(&self, token: &str) -> Result<bool> {
        let r: Option<String> = self
            .run(
                "taking the eviction lock",
                redis::cmd("SET")
                    .arg(self.usage_key("evicting"))
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(EVICTION_LOCK_TTL.as_millis() as u64),
            )
            .await?;
        Ok(r.is_some())
    }

    /// Extends the eviction lock; false when `token` no longer holds it.
    pub async fn renew_eviction(&self, token: &str) -> Result<bool> {
        self.eviction_lock_script(token, EVICTION_LOCK_TTL.as_millis() as u64)
            .await
    }

    /// Gives the eviction lock back if `token` still holds it.
    pub async fn unlock_eviction(&self, token: &str) -> Result<()> {
        self.eviction_lock_script(token, 0).await.map(drop)
    }

    async fn eviction_lock_script(&self, token: &str, ttl_ms: u64) -> Result<bool> {
        let mut inv = LOCK.prepare_invoke();
        inv.key(self.usage_key("evicting")).arg(token).arg(ttl_ms);
        Ok(self
            .run_script::<i64>("holding the eviction lock", &inv)
            .await?
            == 1)
    }
}
