//! Cross-replica waiting: two engines on one redis-server, one holding a key's fill lease and
//! the other waiting on it. The waiter must wake on the holder's commit (or release) at once,
//! not at its next look at the record, also after Redis restarts, and all of a replica's
//! waiters share one subscriber connection.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use artifactapi::meta::ObjectMeta;
use artifactapi::metrics::Metrics;
use artifactapi::package::CacheClass;
use artifactapi::repo::lease::{Claim, LeaseGuard, claim};
use artifactapi::repo::{Cache, Engine};
use common::backends::{Redis, unique_name};

/// Far below the fallback poll of a waiting replica (1 s): only a notification meets it.
const WAKE_BOUND: Duration = Duration::from_millis(50);
/// Bounds a waiter that never wakes, so a regression fails instead of hanging.
const GIVE_UP: Duration = Duration::from_secs(10);
/// How long the waiter is left waiting before the holder commits; trial `n` adds `n` × 30 ms,
/// so the commit does not keep one phase against any periodic look.
const SETTLE: Duration = Duration::from_millis(250);

fn settle(trial: u32) -> Duration {
    SETTLE + Duration::from_millis(30) * trial
}

struct Replica {
    engine: Engine,
    _dir: tempfile::TempDir,
}

impl Replica {
    async fn open(redis: &Redis, name: &str) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "storage:\n  path: {}\nmetadata:\n  backend: redis\n  url: {}\n  key_prefix: \"{name}:\"\nremotes: {{}}\n",
            dir.path().join("data").display(),
            redis.url()
        );
        let config = artifactapi::config::load_str(&yaml).expect("config");
        let engine = Engine::open(config, Arc::new(Metrics::new()))
            .await
            .expect("engine");
        Replica { engine, _dir: dir }
    }

    fn cache(&self) -> &Arc<Cache> {
        &self.engine.cache
    }

    /// Takes the lease of `key`, which nobody holds.
    async fn take(&self, key: &str) -> LeaseGuard {
        match claim(self.cache(), key, None, None).await {
            Claim::Mine(Some(guard)) => guard,
            _ => panic!("{key}: expected to take the lease"),
        }
    }

    /// Waits until Redis answers again (after a restart).
    async fn reconnect(&self) {
        let start = Instant::now();
        while self.cache().meta.check().await.is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "Redis not back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn record() -> ObjectMeta {
    ObjectMeta {
        size: 1,
        sha256: artifactapi::digest::Sha256Digest::from_hex(&"0".repeat(64)).unwrap(),
        etag: None,
        last_modified: None,
        content_type: None,
        fetched_at_ms: artifactapi::now_ms(),
        class: CacheClass::File,
        expires_at_ms: None,
    }
}

/// Starts `waiter` claiming `key` in the background; resolves to its answer and when it came.
fn wait_on(waiter: &Replica, key: &str) -> tokio::task::JoinHandle<(Claim, Instant)> {
    let cache = waiter.cache().clone();
    let key = key.to_string();
    tokio::spawn(async move {
        let c = claim(&cache, &key, None, None).await;
        (c, Instant::now())
    })
}

/// What the lease holder does once the other replica waits.
#[derive(Clone, Copy)]
enum Ending {
    /// Writes the record.
    Commit,
    /// Lets the lease go without a record (its fetch failed).
    Release,
}

/// `holder` takes `key`, `waiter` waits on it, `holder` ends its fill as `ending` says: the
/// waiter must come back with the matching answer within [`WAKE_BOUND`] of the ending.
async fn assert_wakes_at_once(
    holder: &Replica,
    waiter: &Replica,
    key: &str,
    trial: u32,
    ending: Ending,
) {
    let guard = holder.take(key).await;
    let waiting = wait_on(waiter, key);
    tokio::time::sleep(settle(trial)).await;
    assert!(!waiting.is_finished(), "{key}: the waiter did not wait");
    let ended = Instant::now();
    let guard = match ending {
        Ending::Commit => {
            holder.cache().meta.put(key, &record()).await.unwrap();
            Some(guard)
        }
        Ending::Release => {
            drop(guard);
            None
        }
    };
    let (answer, at) = tokio::time::timeout(GIVE_UP, waiting)
        .await
        .unwrap_or_else(|_| panic!("{key}: the waiter never came back"))
        .unwrap();
    let latency = at.saturating_duration_since(ended);
    drop(guard);
    match ending {
        Ending::Commit => assert!(
            matches!(answer, Claim::FilledElsewhere),
            "{key}: not filled"
        ),
        Ending::Release => assert!(matches!(answer, Claim::Mine(Some(_))), "{key}: not taken"),
    }
    assert!(
        latency < WAKE_BOUND,
        "{key} (trial {trial}): the waiter saw the end of the fill after {latency:?}"
    );
}

/// A redis-server and two replicas of one cache on it.
async fn two_replicas() -> Option<(Redis, String, Replica, Replica)> {
    let redis = Redis::start()?;
    let name = unique_name();
    let a = Replica::open(&redis, &name).await;
    let b = Replica::open(&redis, &name).await;
    Some((redis, name, a, b))
}

fn subscribers(redis: &Redis, name: &str) -> String {
    let out = redis.cli(&["PUBSUB", "NUMSUB", &format!("{name}:commits")]);
    out.lines().nth(1).unwrap_or("").trim().to_string()
}

/// `trials` fills of fresh keys, each ended as `ending` says while the other replica waits.
async fn assert_trials_wake_at_once(trials: u32, ending: Ending) {
    let Some((_redis, _, a, b)) = two_replicas().await else {
        return;
    };
    for trial in 0..trials {
        let key = format!("gen/file-{trial}");
        assert_wakes_at_once(&a, &b, &key, trial, ending).await;
    }
}

#[tokio::test]
async fn a_commit_wakes_the_waiting_replica_at_once() {
    assert_trials_wake_at_once(5, Ending::Commit).await;
}

#[tokio::test]
async fn a_released_lease_wakes_the_waiting_replica_at_once() {
    assert_trials_wake_at_once(3, Ending::Release).await;
}

#[tokio::test]
async fn waiters_share_one_subscriber_that_survives_a_redis_restart() {
    let Some((redis, name, a, b)) = two_replicas().await else {
        return;
    };
    // Several keys waited on at once: one connection per replica listens for all of them.
    let keys: Vec<String> = (0..4).map(|i| format!("gen/many-{i}")).collect();
    let mut guards = Vec::new();
    for k in &keys {
        guards.push(a.take(k).await);
    }
    let waiting: Vec<_> = keys.iter().map(|k| wait_on(&b, k)).collect();
    tokio::time::sleep(SETTLE).await;
    assert_eq!(subscribers(&redis, &name), "2");
    for k in &keys {
        a.cache().meta.put(k, &record()).await.unwrap();
    }
    for w in waiting {
        assert!(matches!(w.await.unwrap().0, Claim::FilledElsewhere));
    }
    drop(guards);

    redis.restart();
    a.reconnect().await;
    b.reconnect().await;
    let start = Instant::now();
    while subscribers(&redis, &name) != "2" {
        assert!(start.elapsed() < Duration::from_secs(10), "no resubscribe");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_wakes_at_once(&a, &b, "gen/after-restart", 1, Ending::Commit).await;
}
