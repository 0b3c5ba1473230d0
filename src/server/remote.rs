//! `GET`/`HEAD /api/v1/remote/{remote}/{path}`: parse, ask the engine, respond.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;

use super::auth::Caller;
use super::extract::RepoTail;
use super::pypi;
use super::respond::{read_op, record_request, served};
use super::{ApiError, AppState};
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
    if repo.package() == PackageKind::Pypi {
        let result = pypi::remote(repo, &req.tail, uri.query(), &method, &headers).await;
        let bytes = metrics.bytes_served.with_label_values(&[name]);
        return match result {
            Ok(pypi::Answer::Redirect(resp)) => Ok(resp),
            Ok(pypi::Answer::Served(s, page)) => {
                record_request(metrics, name, package, Ok(s.cache));
                Ok(pypi::respond(s, page, bytes))
            }
            Err(e) => {
                record_request(metrics, name, package, Err(&e));
                Err(req.error(e))
            }
        };
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
