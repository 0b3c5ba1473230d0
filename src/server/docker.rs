//! The registry API: `GET /v2/` and `GET`/`HEAD` of manifests, blobs and tag lists under
//! `/v2/{remote}/{name}/...` or, for mirrors, `/v2/{name}/...`. Parsing is in
//! `package::docker`, the work in `repo`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;

use super::AppState;
use super::auth::Caller;
use super::error::RegistryError;
use super::respond::{parse_range, served};
use crate::auth::Role;
use crate::config::{PackageKind, RepoKind};
use crate::error::Error;
use crate::package::docker::{Tag, parse_v2_path};
use crate::repo::docker::TagPage;

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// `GET /v2/`: the API version check clients make first. With anonymous reads disabled it
/// answers 401 to clients without credentials, so that they log in.
pub async fn ping(State(state): State<AppState>, caller: Caller) -> Response {
    if let Err(error) = state.auth.require_identity(caller.0.as_deref()) {
        return RegistryError {
            error,
            unknown_code: "NAME_UNKNOWN",
        }
        .into_response();
    }
    let mut resp = axum::Json(serde_json::json!({})).into_response();
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

#[derive(Default)]
struct V2Query {
    /// containerd's upstream host in mirror mode.
    ns: Option<String>,
    n: Option<String>,
    last: Option<String>,
}

pub async fn v2(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let query = parse_query(uri.query().unwrap_or(""));
    let rest = uri.path().strip_prefix("/v2/").unwrap_or_default();
    let fail = |error: Error, unknown_code: &'static str| {
        RegistryError {
            error,
            unknown_code,
        }
        .into_response()
    };
    if method != Method::GET && method != Method::HEAD {
        return fail(
            Error::Unsupported("this registry is a read-only pull-through cache".into()),
            "NAME_UNKNOWN",
        );
    }
    let v2 = match parse_v2_path(rest) {
        Ok(p) => p,
        Err(e) => return fail(e, "NAME_UNKNOWN"),
    };
    let unknown = v2.endpoint.unknown_code();
    if let Err(e) = state.auth.require_identity(caller.0.as_deref()) {
        return fail(e, unknown);
    }
    let is_virtual = state
        .engine
        .config
        .remotes
        .get(v2.segments[0].as_str())
        .is_some_and(|c| c.kind == RepoKind::Virtual && c.package == PackageKind::Docker);
    if is_virtual {
        return super::virtual_repo::v2(&state, &caller, &method, &v2, tag_page(&query), &headers)
            .await;
    }
    let (repo, name) = match state.engine.docker_target(&v2, query.ns.as_deref()) {
        Ok(t) => t,
        Err(e) => return fail(e, "NAME_UNKNOWN"),
    };
    if let Err(e) = caller.require(&state.auth, Some(repo.name()), Role::Read) {
        return fail(e, unknown);
    }
    let page = match tag_page(&query) {
        Ok(p) => p,
        Err(e) => return fail(e, unknown),
    };
    let fetch = match repo.docker_fetch(&name, &v2.endpoint, &page) {
        Ok(f) => f,
        Err(e) => return fail(e, unknown),
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
    state
        .metrics
        .requests
        .with_label_values(&[repo.name(), "docker", label])
        .inc();
    match result {
        Ok(s) => {
            let digest = s.digest.clone();
            let mut resp = served(
                s,
                state.metrics.bytes_served.with_label_values(&[repo.name()]),
            );
            let h = resp.headers_mut();
            h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
            if let Some(d) = digest.and_then(|d| HeaderValue::from_str(&d).ok()) {
                h.insert(CONTENT_DIGEST, d);
            }
            resp
        }
        Err(e) => fail(e, unknown),
    }
}

fn parse_query(raw: &str) -> V2Query {
    let mut q = V2Query::default();
    for pair in raw.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode_str(&v.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        match k {
            "ns" => q.ns = Some(v),
            "n" => q.n = Some(v),
            "last" => q.last = Some(v),
            _ => {}
        }
    }
    q
}

fn tag_page(q: &V2Query) -> Result<TagPage, Error> {
    let n = match &q.n {
        Some(n) => Some(
            n.parse::<u32>()
                .map_err(|_| Error::BadRequest(format!("invalid n {n:?}")))?,
        ),
        None => None,
    };
    let last = q.last.as_deref().map(Tag::parse).transpose()?;
    Ok(TagPage { n, last })
}
