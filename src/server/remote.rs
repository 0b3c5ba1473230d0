//! `GET`/`HEAD /api/v1/remote/{remote}/{path}`: parse, ask the engine, respond.

use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;

use super::auth::Caller;
use super::respond::{parse_range, served};
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::error::Error;
use crate::repo::RepoPath;

const PREFIX: &str = "/api/v1/remote/";

pub async fn get_remote(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    // The raw (still encoded) path, so that encoded traversal is seen and refused.
    let rest = uri.path().strip_prefix(PREFIX).unwrap_or_default();
    let (raw_name, raw_path) = rest.split_once('/').unwrap_or((rest, ""));
    let name = percent_decode_str(raw_name)
        .decode_utf8_lossy()
        .into_owned();
    if let Err(e) = caller.require(&state.auth, Some(&name), Role::Read) {
        return ApiError::at(e, &name, Some(raw_path)).into_response();
    }
    let metrics = &state.metrics;
    let repo = match state.engine.remote(&name) {
        Ok(r) => r.clone(),
        Err(e) => return ApiError::at(e, &name, Some(raw_path)).into_response(),
    };
    let package = repo.package().as_str();
    let fetch = RepoPath::parse(raw_path).and_then(|p| repo.path_fetch(&p));
    let fetch = match fetch {
        Ok(f) => f,
        Err(e) => {
            let label = if matches!(e, Error::Forbidden) {
                "DENIED"
            } else {
                "ERROR"
            };
            metrics
                .requests
                .with_label_values(&[&name, package, label])
                .inc();
            return ApiError::at(e, &name, Some(raw_path)).into_response();
        }
    };
    let result = if method == Method::HEAD {
        repo.head_fetch(&fetch).await
    } else {
        repo.get_fetch(fetch, parse_range(&headers)).await
    };
    let label = match &result {
        Ok(s) => s.cache.as_str(),
        Err(Error::NotFound) => "NOT_FOUND",
        Err(Error::Forbidden) => "DENIED",
        Err(_) => "ERROR",
    };
    metrics
        .requests
        .with_label_values(&[&name, package, label])
        .inc();
    match result {
        Ok(s) => served(s, metrics.bytes_served.with_label_values(&[&name])),
        Err(e) => ApiError::at(e, &name, Some(raw_path)).into_response(),
    }
}
