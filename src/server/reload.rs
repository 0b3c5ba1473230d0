//! Reloading the configuration without a restart (SIGHUP, `POST /api/v1/admin/reload`): the
//! file is read and checked again, and when it is good its repositories, tokens, patterns and
//! limits replace the old ones for the requests that start from then on. Requests and fills in
//! flight finish with what they started with; a bad file changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::AppState;
use crate::auth::Policy;

/// What a successful reload put in force.
#[derive(Debug, serde::Serialize)]
pub struct Reloaded {
    /// Repositories now configured.
    pub repositories: usize,
    /// `server:` settings that changed but take effect only after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Reads `path` again and, if it is valid, puts it in force. The error is the report a user
/// sees (`FILE:LINE:COL: message` for a bad file).
pub fn reload(state: &AppState, path: &Path) -> Result<Reloaded, String> {
    let config = crate::config::load_file(path).map_err(|e| e.to_string())?;
    let old = state.engine();
    let server = (&old.config.server, &config.server);
    let mut needs_restart = Vec::new();
    for (key, changed) in [
        ("server.listen", server.0.listen != server.1.listen),
        (
            "server.max_connections",
            server.0.max_connections != server.1.max_connections,
        ),
        (
            "server.header_timeout",
            server.0.header_timeout != server.1.header_timeout,
        ),
        (
            "server.send_timeout",
            server.0.send_timeout != server.1.send_timeout,
        ),
        (
            "server.shutdown_grace",
            server.0.shutdown_grace != server.1.shutdown_grace,
        ),
        (
            "server.drain_delay",
            server.0.drain_delay != server.1.drain_delay,
        ),
    ] {
        if changed {
            needs_restart.push(key);
        }
    }
    let auth = Arc::new(Policy::from_config(&config.auth));
    let engine = old
        .reload(config)
        .map_err(|e| format!("{}: {}", path.display(), crate::error_chain(&e)))?;
    let repositories = engine.config.remotes.len();
    state.replace(Arc::new(engine), auth);
    Ok(Reloaded {
        repositories,
        needs_restart,
    })
}

/// Reloads from `path` and logs the outcome.
pub fn reload_and_log(state: &AppState, path: &Path, why: &str) -> Result<Reloaded, String> {
    let result = reload(state, path);
    match &result {
        Ok(r) => {
            tracing::info!(
                trigger = why,
                repositories = r.repositories,
                "configuration reloaded"
            );
            if !r.needs_restart.is_empty() {
                tracing::warn!(
                    settings = r.needs_restart.join(", "),
                    "these settings changed but take effect only after a restart"
                );
            }
        }
        Err(report) => {
            tracing::error!(
                trigger = why,
                "configuration not reloaded; the one in force stays:\n{report}"
            );
        }
    }
    result
}

/// Reloads from `path` on every SIGHUP, for as long as the server runs.
pub async fn on_sighup(state: AppState, path: PathBuf) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; reload through the admin endpoint");
            return;
        };
        while hup.recv().await.is_some() {
            let (state, path) = (state.clone(), path.clone());
            // Reading and checking the file is blocking work.
            let _ =
                tokio::task::spawn_blocking(move || reload_and_log(&state, &path, "SIGHUP")).await;
        }
    }
    #[cfg(not(unix))]
    let _ = (state, path);
}
