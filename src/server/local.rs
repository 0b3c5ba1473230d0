//! `/api/v1/local/{repo}/{path}`: `PUT` uploads (streamed, optional `X-Checksum-Sha256`),
//! `GET`/`HEAD` of a file or of a directory listing (`{dir}/` or `?list`), and `DELETE`.
//! Reads need the `read` role (or anonymous reads), uploads and deletes `write`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use percent_encoding::percent_decode_str;
use serde_json::json;

use super::auth::Caller;
use super::respond::{parse_range, served};
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::digest::Sha256Digest;
use crate::error::Error;
use crate::repo::{LocalRepo, RepoPath};

const PREFIX: &str = "/api/v1/local/";

/// Request header with the expected SHA-256 of an upload; response header of a stored file.
pub const X_CHECKSUM_SHA256: HeaderName = HeaderName::from_static("x-checksum-sha256");

/// The repository name (decoded) and the raw path tail of a local or virtual URL.
pub(super) fn split_repo_path(uri: &Uri, prefix: &str) -> (String, String) {
    let rest = uri.path().strip_prefix(prefix).unwrap_or_default();
    let (raw_name, raw_path) = rest.split_once('/').unwrap_or((rest, ""));
    let name = percent_decode_str(raw_name)
        .decode_utf8_lossy()
        .into_owned();
    (name, raw_path.to_string())
}

/// The repository after the caller's role on it is checked.
fn open(
    state: &AppState,
    caller: &Caller,
    name: &str,
    need: Role,
) -> Result<std::sync::Arc<LocalRepo>, Error> {
    caller.require(&state.auth, Some(name), need)?;
    state.engine.local(name).cloned()
}

/// `GET`/`HEAD`: a file, or the listing of a directory.
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let (name, raw_path) = split_repo_path(&uri, PREFIX);
    let repo = match open(&state, &caller, &name, Role::Read) {
        Ok(r) => r,
        Err(e) => return ApiError::at(e, &name, Some(&raw_path)).into_response(),
    };
    let wants_list = raw_path.is_empty()
        || raw_path.ends_with('/')
        || uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "list" || p.starts_with("list=")));
    if wants_list {
        return list(&repo, &name, &raw_path).await;
    }
    let metrics = &state.metrics;
    let package = repo.package().as_str();
    let path = match RepoPath::parse(&raw_path) {
        Ok(p) => p,
        Err(e) => {
            metrics
                .requests
                .with_label_values(&[&name, package, "ERROR"])
                .inc();
            return ApiError::at(e, &name, Some(&raw_path)).into_response();
        }
    };
    let result = if method == Method::HEAD {
        repo.head(&path).await
    } else {
        repo.get(&path, parse_range(&headers)).await
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
        Ok(s) => {
            let sha = s
                .digest
                .as_deref()
                .map(|d| d.trim_start_matches("sha256:").to_string());
            let mut resp = served(s, metrics.bytes_served.with_label_values(&[&name]));
            if let Some(v) = sha.and_then(|s| HeaderValue::from_str(&s).ok()) {
                resp.headers_mut().insert(X_CHECKSUM_SHA256, v);
            }
            resp
        }
        Err(e) => ApiError::at(e, &name, Some(path.as_str())).into_response(),
    }
}

async fn list(repo: &LocalRepo, name: &str, raw_path: &str) -> Response {
    let raw_dir = raw_path.trim_end_matches('/');
    let dir = if raw_dir.is_empty() {
        None
    } else {
        match RepoPath::parse(raw_dir) {
            Ok(p) => Some(p),
            Err(e) => return ApiError::at(e, name, Some(raw_path)).into_response(),
        }
    };
    match repo.list(dir.as_ref()).await {
        Ok(entries) => Json(json!({
            "repository": name,
            "path": dir.as_ref().map(|d| format!("{d}/")).unwrap_or_default(),
            "entries": entries,
        }))
        .into_response(),
        Err(e) => ApiError::at(e, name, dir.as_ref().map(RepoPath::as_str)).into_response(),
    }
}

/// `PUT`: streams the body into the repository; 201 when created, 200 when replaced.
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (name, raw_path) = split_repo_path(&uri, PREFIX);
    let repo = match open(&state, &caller, &name, Role::Write) {
        Ok(r) => r,
        Err(e) => return ApiError::at(e, &name, Some(&raw_path)).into_response(),
    };
    let fail = |e: Error, path: &str| ApiError::at(e, &name, Some(path)).into_response();
    let path = match RepoPath::parse(&raw_path) {
        Ok(p) => p,
        Err(e) => return fail(e, &raw_path),
    };
    let expected = match expected_sha256(&headers) {
        Ok(e) => e,
        Err(e) => return fail(e, path.as_str()),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    match repo
        .put(&path, stream, expected.as_ref(), content_type)
        .await
    {
        Ok(up) => {
            tracing::info!(
                repository = %name,
                path = %path,
                bytes = up.size,
                sha256 = %up.sha256,
                token = caller.name(),
                created = up.created,
                "uploaded"
            );
            let status = if up.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let body = json!({
                "repository": name,
                "path": path.as_str(),
                "size": up.size,
                "sha256": up.sha256,
                "created": up.created,
            });
            (status, Json(body)).into_response()
        }
        Err(e) => fail(e, path.as_str()),
    }
}

/// `DELETE`: removes a file; 204, or 404 when there was none.
pub async fn delete(State(state): State<AppState>, caller: Caller, uri: Uri) -> Response {
    let (name, raw_path) = split_repo_path(&uri, PREFIX);
    let repo = match open(&state, &caller, &name, Role::Write) {
        Ok(r) => r,
        Err(e) => return ApiError::at(e, &name, Some(&raw_path)).into_response(),
    };
    let path = match RepoPath::parse(&raw_path) {
        Ok(p) => p,
        Err(e) => return ApiError::at(e, &name, Some(&raw_path)).into_response(),
    };
    match repo.delete(&path).await {
        Ok(()) => {
            tracing::info!(repository = %name, path = %path, token = caller.name(), "deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => ApiError::at(e, &name, Some(path.as_str())).into_response(),
    }
}

/// `X-Checksum-Sha256`: 64 hex digits, optionally prefixed `sha256:`.
fn expected_sha256(headers: &HeaderMap) -> Result<Option<Sha256Digest>, Error> {
    let Some(v) = headers.get(X_CHECKSUM_SHA256) else {
        return Ok(None);
    };
    let raw = v.to_str().unwrap_or("").trim();
    let hex = raw
        .strip_prefix("sha256:")
        .unwrap_or(raw)
        .to_ascii_lowercase();
    match Sha256Digest::from_hex(&hex) {
        Ok(d) => Ok(Some(d)),
        Err(_) => Err(Error::BadRequest(
            "X-Checksum-Sha256 must be 64 hexadecimal digits".into(),
        )),
    }
}
