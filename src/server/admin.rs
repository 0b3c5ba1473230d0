//! Administrative endpoints: `POST /api/v1/cache/flush?remote=NAME&type=all|index|files
//! &unused_for=30d`, which needs the `admin` role on that repository (on `*` without `remote`),
//! and `POST /api/v1/admin/reload`.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::error::Error;
use crate::repo::flush::FlushScope;

#[derive(Deserialize)]
pub struct FlushQuery {
    remote: Option<String>,
    #[serde(rename = "type")]
    scope: Option<String>,
    unused_for: Option<String>,
}

pub async fn flush(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FlushQuery>,
) -> Response {
    if let Err(e) = caller.require(&state.auth(), q.remote.as_deref(), Role::Admin) {
        return ApiError {
            error: e,
            remote: q.remote,
            path: None,
        }
        .into_response();
    }
    let scope = match q.scope.as_deref().unwrap_or("all").parse::<FlushScope>() {
        Ok(s) => s,
        Err(e) => return ApiError::new(e).into_response(),
    };
    let unused_for = match q.unused_for.as_deref().map(crate::config::parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => return ApiError::new(Error::BadRequest(e)).into_response(),
    };
    match state
        .engine()
        .flush(q.remote.as_deref(), scope, unused_for)
        .await
    {
        Ok(report) => axum::Json(serde_json::json!({
            "status": "ok",
            "type": scope,
            "flushed": report,
        }))
        .into_response(),
        Err(e) => ApiError {
            error: e,
            remote: q.remote,
            path: None,
        }
        .into_response(),
    }
}

/// `POST /api/v1/admin/reload`: reads the configuration file again (needs `admin` on every
/// repository). 200 with what is now in force, or 400 `invalid_config` with the report, the
/// old configuration staying in force.
pub async fn reload(State(state): State<AppState>, caller: Caller) -> Response {
    if let Err(e) = caller.require(&state.auth(), None, Role::Admin) {
        return ApiError::new(e).into_response();
    }
    let Some(path) = state.config_path.clone() else {
        return ApiError::new(Error::Unsupported(
            "this server was not started from a configuration file".into(),
        ))
        .into_response();
    };
    let outcome = tokio::task::spawn_blocking(move || {
        super::reload::reload_and_log(&state, &path, "admin endpoint")
    })
    .await;
    match outcome {
        Ok(Ok(r)) => axum::Json(serde_json::json!({
            "status": "ok",
            "repositories": r.repositories,
            "needs_restart": r.needs_restart,
        }))
        .into_response(),
        Ok(Err(report)) => (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "error": "invalid_config",
                "message": report,
            })),
        )
            .into_response(),
        Err(e) => ApiError::new(Error::BadRequest(format!("reload failed: {e}"))).into_response(),
    }
}
