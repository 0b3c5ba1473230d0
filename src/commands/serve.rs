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
    let grace = config.server.shutdown_grace.0;
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
    let state = AppState {
        engine,
        metrics,
        auth,
    };
    server::run(state, listen, grace, |addr| {
        tracing::info!(version = crate::VERSION, "listening on http://{addr}");
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Seeds the cache size gauges from the metadata records.
async fn count_cache(engine: Arc<Engine>) {
    match engine.cache.meta.list("").await {
        Ok(entries) => {
            let m = &engine.cache.metrics;
            m.cache_objects.add(entries.len() as i64);
            m.cache_bytes
                .add(entries.iter().map(|e| e.meta.size as i64).sum::<i64>());
        }
        Err(e) => tracing::warn!(error = %e, "could not count cached objects"),
    }
}
