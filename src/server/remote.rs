//! `GET`/`HEAD /api/v1/remote/{remote}/{path}`: parse, ask the engine, respond. Pypi and npm
//! remotes route their own paths first (see `pypi`, `npm`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;

use super::auth::Caller;
use super::extract::RepoTail;
use super::respond::{Answer, answer, read_op, record_request, served};
use super::{ApiError, AppState};
use super::{npm, pypi};
use crate::auth::Role;
use crate::config::PackageKind;
use crate::error::Result;
use crate::repo::remote::Fetch;
use crate::repo::virtual_repo::ReadOp;
use crate::repo::{RemoteRepo, RepoPath, Served};

pub async fn get_remote(
    State(state): State<AppState>,
    caller: Caller,
    req: RepoTail,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    req.require(&state, &caller, Role::Read)?;
    let name = req.name.as_str();
    let engine = state.engine();
    let repo = engine.remote(name).map_err(|e| req.error(e))?;
    let package = repo.package().as_str();
    let metrics = &state.metrics;
    let routed = match repo.package() {
        PackageKind::Pypi => {
            Some(pypi::remote(repo, &req.tail, uri.query(), &method, &headers).await)
        }
        PackageKind::Npm => {
            let public = npm::public_url(&uri, &headers, &format!("/api/v1/remote/{name}"));
            Some(npm::remote(repo, &req.tail, &public, &method, &headers).await)
        }
        _ => None,
    };
    if let Some(result) = routed {
        let bytes = metrics.bytes_served.with_label_values(&[name]);
        record_request(metrics, name, package, cache_of(&result));
        return result.map(|a| answer(a, bytes)).map_err(|e| req.error(e));
    }
    let fetch = RepoPath::parse(&req.tail)
        .and_then(|p| repo.path_fetch(&p))
        .map_err(|e| {
            record_request(metrics, name, package, Err(&e));
            req.error(e)
        })?;
    let result = read_fetch(repo, fetch, read_op(&method, &headers)).await;
    record_request(metrics, name, package, result.as_ref().map(|s| s.cache));
    let s = result.map_err(|e| req.error(e))?;
    Ok(served(s, metrics.bytes_served.with_label_values(&[name])))
}

/// A HEAD or GET of one fetch of a remote.
pub(super) async fn read_fetch(repo: &Arc<RemoteRepo>, fetch: Fetch, op: ReadOp) -> Result<Served> {
    match op {
        ReadOp::Head => repo.head_fetch(&fetch).await,
        ReadOp::Get(range) => repo.get_fetch(fetch, range).await,
    }
}

/// The cache status of a format's answer, for the request metrics (a redirect is a hit).
pub(super) fn cache_of(
    result: &Result<Answer>,
) -> std::result::Result<crate::repo::CacheStatus, &crate::error::Error> {
    match result {
        Ok(Answer::Served(s, _)) => Ok(s.cache),
        Ok(Answer::Redirect(_)) => Ok(crate::repo::CacheStatus::Hit),
        Err(e) => Err(e),
    }
}
