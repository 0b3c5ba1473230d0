//! Administrative endpoints: `POST /api/v1/cache/flush?remote=NAME&type=all|index|files`.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::repo::flush::FlushScope;

#[derive(Deserialize)]
pub struct FlushQuery {
    remote: Option<String>,
    #[serde(rename = "type")]
    scope: Option<String>,
}

pub async fn flush(State(state): State<AppState>, Query(q): Query<FlushQuery>) -> Response {
    let scope = match q.scope.as_deref().unwrap_or("all").parse::<FlushScope>() {
        Ok(s) => s,
        Err(e) => return ApiError::new(e).into_response(),
    };
    match state.engine.flush(q.remote.as_deref(), scope).await {
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
