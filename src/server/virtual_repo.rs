//! `GET`/`HEAD /api/v1/virtual/{repo}/{path}` and `/v2/{virtual}/...`: ask the engine, which
//! tries each member the caller may read in order, and say which member answered
//! (`X-Artifactapi-Member`). Pypi virtual repositories merge their pages (see `pypi`).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use axum::response::Response;

use super::auth::Caller;
use super::error::RegistryError;
use super::extract::RepoTail;
use super::pypi;
use super::respond::{answer, read_op, record_request, registry_headers, served};
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::config::PackageKind;
use crate::error::Result;
use crate::package::docker::V2Path;
use crate::repo::docker::TagPage;
use crate::repo::virtual_repo::VirtualServed;
use crate::repo::{RepoPath, VirtualRepo};

/// The member repository that answered a virtual request.
pub const X_MEMBER: HeaderName = HeaderName::from_static("x-artifactapi-member");

pub async fn read(
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
    let kind = engine
        .virtual_repo(name)
        .map_err(|e| req.error(e))?
        .package();
    let package = kind.as_str();
    let metrics = &state.metrics;
    let auth = state.auth();
    let may_read = |member: &str| caller.require(&auth, Some(member), Role::Read).is_ok();
    if kind == PackageKind::Pypi
        && let Some(answer_of) = pypi::virtual_page(
            &engine,
            name,
            &req.tail,
            (uri.query(), &method, &headers),
            &may_read,
        )
        .await
    {
        let bytes = metrics.bytes_served.with_label_values(&[name]);
        let (result, member) = match answer_of {
            Ok((a, member)) => (Ok(a), member),
            Err(e) => (Err(e), None),
        };
        record_request(metrics, name, package, super::remote::cache_of(&result));
        let mut resp = answer(result.map_err(|e| req.error(e))?, bytes);
        if let Some(m) = member.and_then(|m| HeaderValue::from_str(&m).ok()) {
            resp.headers_mut().insert(X_MEMBER, m);
        }
        return Ok(resp);
    }
    let path = RepoPath::parse(&req.tail).map_err(|e| {
        record_request(metrics, name, package, Err(&e));
        req.error(e)
    })?;
    let result = engine
        .virtual_read(name, &path, read_op(&method, &headers), &may_read)
        .await;
    record_request(metrics, name, package, cache_status(&result));
    let v = result.map_err(|e| req.error_at(e, path.as_str()))?;
    Ok(respond(&state, name, v))
}

/// A `/v2/` request whose first segment names docker virtual repository `repo`.
pub(super) async fn v2(
    state: &AppState,
    caller: &Caller,
    repo: &VirtualRepo,
    (method, headers): (&Method, &HeaderMap),
    v2: &V2Path,
    page: Result<TagPage>,
) -> Result<Response, RegistryError> {
    let name = repo.name();
    // The caller's read role on `repo` was checked when the path was resolved.
    let fail = RegistryError::with(v2.endpoint.unknown_code());
    let page = page.map_err(&fail)?;
    let result = state
        .engine()
        .docker_virtual_read(
            name,
            &v2.segments[1..],
            &v2.endpoint,
            &page,
            read_op(method, headers),
            &|member| {
                caller
                    .require(&state.auth(), Some(member), Role::Read)
                    .is_ok()
            },
        )
        .await;
    record_request(&state.metrics, name, "docker", cache_status(&result));
    let v = result.map_err(&fail)?;
    let digest = v.served.digest.clone();
    let mut resp = respond(state, name, v);
    registry_headers(resp.headers_mut(), digest.as_deref());
    Ok(resp)
}

fn cache_status(
    result: &Result<VirtualServed>,
) -> std::result::Result<crate::repo::CacheStatus, &crate::error::Error> {
    result.as_ref().map(|v| v.served.cache)
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
