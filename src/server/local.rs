//! `/api/v1/local/{repo}/{path}`: `PUT` uploads (streamed, optional `X-Checksum-Sha256`),
//! `GET`/`HEAD` of a file or of a directory listing (`{dir}/` or `?list`), and `DELETE`; in
//! pypi repositories also the Simple API pages and the upload `POST` (see `pypi`).
//! Reads need the `read` role (or anonymous reads), uploads and deletes `write`, and deletes
//! in a repository without `allow_overwrite` `admin`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde_json::json;

use super::auth::Caller;
use super::extract::{QueryPairs, RepoTail};
use super::pypi;
use super::respond::{answer, read_op, record_request, served};
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::config::PackageKind;
use crate::digest::Sha256Digest;
use crate::error::Error;
use crate::repo::virtual_repo::ReadOp;
use crate::repo::{LocalRepo, RepoPath};

/// Request header with the expected SHA-256 of an upload; response header of a stored file.
pub const X_CHECKSUM_SHA256: HeaderName = HeaderName::from_static("x-checksum-sha256");

/// The repository after the caller's role on it is checked.
fn open(
    state: &AppState,
    caller: &Caller,
    req: &RepoTail,
    need: Role,
) -> Result<Arc<LocalRepo>, ApiError> {
    req.require(state, caller, need)?;
    state
        .engine()
        .local(&req.name)
        .cloned()
        .map_err(|e| req.error(e))
}

/// `GET`/`HEAD`: a file, or the listing of a directory (`{dir}/` or `?list`).
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    req: RepoTail,
    method: Method,
    uri: Uri,
    Query(query): QueryPairs,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let repo = open(&state, &caller, &req, Role::Read)?;
    if repo.package() == PackageKind::Pypi
        && let Some(answer_of) =
            pypi::local_page(&repo, &req.tail, uri.query(), &method, &headers).await
    {
        let bytes = state.metrics.bytes_served.with_label_values(&[&req.name]);
        return Ok(answer(answer_of.map_err(|e| req.error(e))?, bytes));
    }
    let wants_list =
        req.tail.is_empty() || req.tail.ends_with('/') || query.iter().any(|(k, _)| k == "list");
    if wants_list {
        return list(&repo, &req, &query).await;
    }
    let metrics = &state.metrics;
    let name = req.name.as_str();
    let package = repo.package().as_str();
    let path = RepoPath::parse(&req.tail).map_err(|e| {
        record_request(metrics, name, package, Err(&e));
        req.error(e)
    })?;
    let result = match read_op(&method, &headers) {
        ReadOp::Head => repo.head(&path).await,
        ReadOp::Get(range) => repo.get(&path, range).await,
    };
    record_request(metrics, name, package, result.as_ref().map(|s| s.cache));
    let s = result.map_err(|e| req.error_at(e, path.as_str()))?;
    let sha = s
        .digest
        .as_deref()
        .map(|d| d.trim_start_matches("sha256:").to_string());
    let mut resp = served(s, metrics.bytes_served.with_label_values(&[name]));
    if let Some(v) = sha.and_then(|s| HeaderValue::from_str(&s).ok()) {
        resp.headers_mut().insert(X_CHECKSUM_SHA256, v);
    }
    Ok(resp)
}

/// Entries per listing page unless `limit` says otherwise, and the most `limit` may ask.
const LIST_PAGE: usize = 1000;
const LIST_PAGE_MAX: usize = 10_000;

async fn list(
    repo: &LocalRepo,
    req: &RepoTail,
    query: &[(String, String)],
) -> Result<Response, ApiError> {
    let raw_dir = req.tail.trim_end_matches('/');
    let dir = if raw_dir.is_empty() {
        None
    } else {
        Some(RepoPath::parse(raw_dir).map_err(|e| req.error(e))?)
    };
    let (after, limit) = page_params(query).map_err(|e| req.error(e))?;
    let page = repo
        .list(dir.as_ref(), after, limit)
        .await
        .map_err(|e| ApiError::at(e, &req.name, dir.as_ref().map(RepoPath::as_str)))?;
    let mut body = json!({
        "repository": req.name,
        "path": dir.as_ref().map(|d| format!("{d}/")).unwrap_or_default(),
        "entries": page.entries,
    });
    if let Some(next) = page.next {
        body["next"] = json!(next);
    }
    Ok(Json(body).into_response())
}

/// `after` (a cursor from an earlier page's `next`) and `limit` (1 to 10,000; 1,000 unless
/// given) of a listing.
fn page_params(query: &[(String, String)]) -> Result<(Option<&str>, usize), Error> {
    let mut after = None;
    let mut limit = LIST_PAGE;
    for (k, v) in query {
        match k.as_str() {
            "after" => {
                let name = v.strip_suffix('/').unwrap_or(v);
                if name.is_empty() || name.contains('/') || v.len() > 1024 {
                    return Err(Error::BadRequest(
                        "after must be the next value of an earlier page".into(),
                    ));
                }
                after = Some(v.as_str());
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=LIST_PAGE_MAX).contains(n))
                    .ok_or_else(|| {
                        Error::BadRequest(format!(
                            "limit must be a whole number from 1 to {LIST_PAGE_MAX}"
                        ))
                    })?;
            }
            _ => {}
        }
    }
    Ok((after, limit))
}

/// `PUT`: streams the body into the repository; 201 when created, 200 when replaced.
pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    req: RepoTail,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let repo = open(&state, &caller, &req, Role::Write)?;
    let path = RepoPath::parse(&req.tail).map_err(|e| req.error(e))?;
    let fail = |e: Error| req.error_at(e, path.as_str());
    let expected = expected_sha256(&headers).map_err(fail)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let up = repo
        .put(&path, stream, length, expected.as_ref(), content_type)
        .await
        .map_err(fail)?;
    tracing::info!(
        repository = %req.name,
        path = %path,
        bytes = up.size,
        sha256 = %up.sha256.hex(),
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
        "repository": req.name,
        "path": path.as_str(),
        "size": up.size,
        "sha256": up.sha256,
        "created": up.created,
    });
    Ok((status, Json(body)).into_response())
}

/// `POST`: the PyPI legacy upload API of a pypi repository (twine, `uv publish`); 200 when
/// stored.
pub async fn post(
    State(state): State<AppState>,
    caller: Caller,
    req: RepoTail,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let repo = open(&state, &caller, &req, Role::Write)?;
    if repo.package() != PackageKind::Pypi || !matches!(req.tail.as_str(), "" | "legacy/") {
        return Err(req.error(Error::Unsupported(
            "POST is the upload API of pypi repositories, at the repository's own URL; upload other files with PUT".into(),
        )));
    }
    let (upload, up) = pypi::upload(&repo, multipart)
        .await
        .map_err(|e| req.error(e))?;
    tracing::info!(
        repository = %req.name,
        project = %upload.name,
        file = %upload.filename,
        bytes = up.size,
        sha256 = %up.sha256.hex(),
        token = caller.name(),
        "uploaded"
    );
    let body = json!({
        "repository": req.name,
        "project": crate::package::pypi::normalize(&upload.name),
        "filename": upload.filename,
        "size": up.size,
        "sha256": up.sha256,
        "created": up.created,
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// `DELETE`: removes a file; 204, or 404 when there was none.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    req: RepoTail,
) -> Result<Response, ApiError> {
    let repo = open(&state, &caller, &req, Role::Write)?;
    if !repo.config().allow_overwrite {
        // Without overwrites a release is immutable: removing one is an administrative act.
        req.require(&state, &caller, Role::Admin)?;
    }
    let path = RepoPath::parse(&req.tail).map_err(|e| req.error(e))?;
    repo.delete(&path)
        .await
        .map_err(|e| req.error_at(e, path.as_str()))?;
    tracing::info!(repository = %req.name, path = %path, token = caller.name(), "deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
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
