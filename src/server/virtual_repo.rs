//! `GET`/`HEAD /api/v1/virtual/{repo}/{path}` and `/v2/{virtual}/...`: ask the engine, which
//! tries each member in order, and say which member answered (`X-Artifactapi-Member`).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};

use super::auth::Caller;
use super::error::RegistryError;
use super::local::split_repo_path;
use super::respond::{parse_range, served};
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::error::{Error, Result};
use crate::package::docker::V2Path;
use crate::repo::RepoPath;
use crate::repo::docker::TagPage;
use crate::repo::virtual_repo::{ReadOp, VirtualServed};

const PREFIX: &str = "/api/v1/virtual/";

/// The member repository that answered a virtual request.
pub const X_MEMBER: HeaderName = HeaderName::from_static("x-artifactapi-member");
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let (name, raw_path) = split_repo_path(&uri, PREFIX);
    let fail = |e: Error, path: &str| ApiError::at(e, &name, Some(path)).into_response();
    if let Err(e) = caller.require(&state.auth, Some(&name), Role::Read) {
        return fail(e, &raw_path);
    }
    let package = match state.engine.virtual_config(&name) {
        Ok(c) => c.package.as_str(),
        Err(e) => return fail(e, &raw_path),
    };
    let path = match RepoPath::parse(&raw_path) {
        Ok(p) => p,
        Err(e) => {
            count(&state, &name, package, Err(&e));
            return fail(e, &raw_path);
        }
    };
    let op = if method == Method::HEAD {
        ReadOp::Head
    } else {
        ReadOp::Get(parse_range(&headers))
    };
    let result = state.engine.virtual_read(&name, &path, op).await;
    count(&state, &name, package, result.as_ref());
    match result {
        Ok(v) => respond(&state, &name, v),
        Err(e) => fail(e, path.as_str()),
    }
}

/// A `/v2/` request whose first segment names a docker virtual repository.
pub(super) async fn v2(
    state: &AppState,
    caller: &Caller,
    method: &Method,
    v2: &V2Path,
    page: Result<TagPage>,
    headers: &HeaderMap,
) -> Response {
    let name = v2.segments[0].as_str();
    let unknown = v2.endpoint.unknown_code();
    let fail = |error: Error| {
        RegistryError {
            error,
            unknown_code: unknown,
        }
        .into_response()
    };
    if let Err(e) = caller.require(&state.auth, Some(name), Role::Read) {
        return fail(e);
    }
    let page = match page {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let op = if method == Method::HEAD {
        ReadOp::Head
    } else {
        ReadOp::Get(parse_range(headers))
    };
    let result = state
        .engine
        .docker_virtual_read(name, &v2.segments[1..], &v2.endpoint, &page, op)
        .await;
    count(state, name, "docker", result.as_ref());
    match result {
        Ok(v) => {
            let digest = v.served.digest.clone();
            let mut resp = respond(state, name, v);
            let h = resp.headers_mut();
            h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
            if let Some(d) = digest.and_then(|d| HeaderValue::from_str(&d).ok()) {
                h.insert(CONTENT_DIGEST, d);
            }
            resp
        }
        Err(e) => fail(e),
    }
}

fn respond(state: &AppState, name: &str, v: VirtualServed) -> Response {
    let mut resp = served(
        v.served,
        state.metrics.bytes_served.with_label_values(&[name]),
    );
    if let Ok(m) = HeaderValue::from_str(&v.member) {
        resp.headers_mut().insert(X_MEMBER, m);
    }
    resp
}

/// Counts a request under the virtual repository's name, by the answering member's outcome.
fn count(state: &AppState, name: &str, package: &str, result: Result<&VirtualServed, &Error>) {
    let label = match result {
        Ok(v) => v.served.cache.as_str(),
        Err(Error::NotFound) => "NOT_FOUND",
        Err(Error::Forbidden) => "DENIED",
        Err(_) => "ERROR",
    };
    state
        .metrics
        .requests
        .with_label_values(&[name, package, label])
        .inc();
}
