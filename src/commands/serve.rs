//! `artifactapi serve`: load the config, open the engine, serve HTTP until told to stop.

use std::process::ExitCode;
use std::sync::Arc;

use super::CommandError;
use crate::auth::Policy;
use crate::cli::{GlobalArgs, ServeArgs};
use crate::config;
use crate::metrics::Metrics;
use crate::repo::Engine;
use crate::server::{self, AppState};

pub async fn run(global: &GlobalArgs, args: &ServeArgs) -> Result<ExitCode, CommandError> {
    let config = config::load_file(&global.config)?;
    let listen = args.listen.unwrap_or(config.server.listen);
    let grace = (config.server.drain_delay.0, config.server.shutdown_grace.0);
    let limits = server::listener::Limits {
        max_connections: connection_cap(config.server.max_connections.get()),
        header_timeout: config.server.header_timeout.0,
        send_timeout: config.server.send_timeout.0,
    };
    let metrics = Arc::new(Metrics::new());
    let auth = Arc::new(Policy::from_config(&config.auth));
    let engine = Arc::new(Engine::open(config, metrics.clone()).await?);
    let swept = engine.sweep_temp_files().await?;
    if swept > 0 {
        tracing::info!(
            files = swept,
            "removed temp files left by an earlier process"
        );
    }
    tokio::spawn(count_cache(engine.clone()));
    if engine.cache.meta.shared().is_some() {
        tokio::spawn(share_usage(engine.clone()));
    }
    let mut state = AppState::new(engine, auth, metrics);
    state.config_path = Some(Arc::new(global.config.clone()));
    tokio::spawn(evict_unused(state.clone()));
    tokio::spawn(server::reload::on_sighup(
        state.clone(),
        global.config.clone(),
    ));
    server::run(state, listen, limits, grace, |addr| {
        tracing::info!(version = crate::VERSION, "listening on http://{addr}");
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// File descriptors kept for storage, spool files and upstream sockets, beyond client ones.
const RESERVED_FDS: u64 = 256;

/// `configured`, held under the open-file limit. The soft limit is raised to the hard one
/// first, as most servers do, so that a unit file's `LimitNOFILE` is all it takes.
fn connection_cap(configured: usize) -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), hard) = (limit.current, limit.maximum)
        && hard.is_none_or(|h| h > current)
    {
        let raised = Rlimit {
            current: Some(hard.unwrap_or(current.max(1 << 20))),
            maximum: hard,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    let Some(files) = limit.current else {
        return configured;
    };
    let fit = files.saturating_sub(RESERVED_FDS).max(1) as usize;
    if fit < configured {
        tracing::warn!(
            max_connections = configured,
            open_file_limit = files,
            using = fit,
            "server.max_connections does not fit the open-file limit; raise LimitNOFILE"
        );
        return fit;
    }
    configured
}

/// Seeds the usage index (and with it the size gauges) from the metadata records, in the
/// background: start-up does not wait for it, and eviction begins once it is done. On the
/// filesystem an object's last read is its file's access time, else when it was fetched.
/// With Redis metadata the shared usage is seeded instead (SPEC §12.5).
async fn count_cache(engine: Arc<Engine>) {
    let started = std::time::Instant::now();
    if let Some(redis) = engine.cache.meta.shared() {
        // Usage is kept in Redis: only records from before that need counting, once.
        match count_shared(redis, &engine).await {
            Ok(()) => {
                engine.cache.usage.mark_seeded();
                tracing::info!(
                    ms = started.elapsed().as_millis() as u64,
                    "cache usage ready; eviction on"
                );
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "could not count cached objects in Redis; eviction stays off until a restart");
            }
        }
        return;
    }
    let cache = engine.cache.clone();
    let counted = engine
        .cache
        .meta
        .each("", move |e| {
            let read_ms = cache
                .storage
                .accessed_ms(&e.key)
                .unwrap_or(e.meta.fetched_at_ms);
            cache
                .usage
                .seed(&e.key, e.meta.size, read_ms, &cache.metrics);
        })
        .await;
    if let Err(e) = counted {
        // Evicting from an index that lacks the old objects would pick only new ones.
        tracing::warn!(error = %e, "could not count cached objects; eviction stays off until a restart");
        return;
    }
    engine.cache.usage.mark_seeded();
    tracing::info!(
        remote_bytes = engine.cache.usage.remote_bytes(),
        ms = started.elapsed().as_millis() as u64,
        "cache usage ready; eviction on"
    );
}

/// With Redis metadata: counts, once for all replicas, the records written before usage was
/// kept in Redis. Records written since are counted as they are written.
async fn count_shared(redis: &crate::meta::RedisMeta, engine: &Engine) -> crate::error::Result<()> {
    if redis.usage_seeded().await? {
        return Ok(());
    }
    let remotes = engine.cache.usage.remotes();
    let entries: Vec<(String, u64, u64, bool)> = engine
        .cache
        .meta
        .list("")
        .await?
        .into_iter()
        .map(|e| {
            let remote = remotes
                .iter()
                .any(|r| r == crate::repo::usage::repo_of(&e.key));
            (e.key, e.meta.size, e.meta.fetched_at_ms, remote)
        })
        .collect();
    let added = redis.seed_usage(&entries).await?;
    redis.mark_usage_seeded().await?;
    if added > 0 {
        tracing::info!(
            objects = added,
            "counted cached objects from before usage was shared"
        );
    }
    Ok(())
}

/// With Redis metadata: sends this replica's reads every second, and sets the size gauges
/// from the totals every replica shares every two seconds.
async fn share_usage(engine: Arc<Engine>) {
    let Some(redis) = engine.cache.meta.shared() else {
        return;
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    for n in 0u64.. {
        tick.tick().await;
        let reads = engine.cache.usage.take_reads();
        if !reads.is_empty()
            && let Err(e) = redis.add_reads(&reads).await
            && !std::mem::replace(&mut warned, true)
        {
            tracing::warn!(error = %crate::error_chain(&e), "could not send reads to Redis; eviction order knows less");
        }
        if n % 2 == 0
            && let Ok(totals) = redis.usage_totals().await
        {
            let m = &engine.cache.metrics;
            for (repo, (bytes, objects)) in &totals.by_repo {
                m.cache_bytes.with_label_values(&[repo]).set(*bytes as i64);
                m.cache_objects
                    .with_label_values(&[repo])
                    .set(*objects as i64);
            }
        }
    }
}

/// Evicts what the remotes with `cache.evict_unused_after` have not read for that long, every
/// minute (more often for ages under two minutes), by the configuration in force at each round.
async fn evict_unused(state: AppState) {
    loop {
        let engine = state.engine();
        let ages = engine.remote_ages();
        let every = ages.iter().map(|(_, a)| *a / 2).min().map_or(
            std::time::Duration::from_secs(60),
            |half| {
                half.clamp(
                    std::time::Duration::from_secs(1),
                    std::time::Duration::from_secs(60),
                )
            },
        );
        drop(engine);
        tokio::time::sleep(every).await;
        if !ages.is_empty() {
            state.engine().cache.evict_unused(&ages).await;
        }
    }
}
