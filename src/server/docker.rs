//! The registry API: `GET /v2/` and `GET`/`HEAD` of manifests, blobs and tag lists under
//! `/v2/{remote}/{name}/...` or, for mirrors, `/v2/{name}/...`. Parsing is in
//! `package::docker`, the choice of repository and the work in `repo`.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::Caller;
use super::error::RegistryError;
use super::extract::QueryPairs;
use super::remote::read_fetch;
use super::respond::{read_op, record_request, registry_headers, served};
use crate::auth::Role;
use crate::error::Error;
use crate::package::docker::{Tag, parse_v2_path};
use crate::repo::V2Target;
use crate::repo::docker::TagPage;

/// `GET /v2/`: the API version check clients make first. With anonymous reads disabled it
/// answers 401 to clients without credentials, so that they log in.
pub async fn ping(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, RegistryError> {
    state
        .auth()
        .require_identity(caller.0.as_deref())
        .map_err(RegistryError::with("NAME_UNKNOWN"))?;
    let mut resp = axum::Json(serde_json::json!({})).into_response();
    registry_headers(resp.headers_mut(), None);
    Ok(resp)
}

/// The query parameters `/v2/` understands; the last of a repeated one counts.
#[derive(Default)]
struct V2Query {
    /// containerd's upstream host in mirror mode.
    ns: Option<String>,
    n: Option<String>,
    last: Option<String>,
}

impl V2Query {
    fn from_pairs(pairs: Vec<(String, String)>) -> V2Query {
        let mut q = V2Query::default();
        for (k, v) in pairs {
            match k.as_str() {
                "ns" => q.ns = Some(v),
                "n" => q.n = Some(v),
                "last" => q.last = Some(v),
                _ => {}
            }
        }
        q
    }

    fn tag_page(&self) -> Result<TagPage, Error> {
        let n = match &self.n {
            Some(n) => Some(
                n.parse::<u32>()
                    .map_err(|_| Error::BadRequest(format!("invalid n {n:?}")))?,
            ),
            None => None,
        };
        let last = self.last.as_deref().map(Tag::parse).transpose()?;
        Ok(TagPage { n, last })
    }
}

pub async fn v2(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    Query(pairs): QueryPairs,
    headers: HeaderMap,
) -> Result<Response, RegistryError> {
    let query = V2Query::from_pairs(pairs);
    let rest = uri.path().strip_prefix("/v2/").unwrap_or_default();
    let name_unknown = RegistryError::with("NAME_UNKNOWN");
    if method != Method::GET && method != Method::HEAD {
        return Err(name_unknown(Error::Unsupported(
            "this registry is a read-only pull-through cache".into(),
        )));
    }
    let v2 = parse_v2_path(rest).map_err(&name_unknown)?;
    let fail = RegistryError::with(v2.endpoint.unknown_code());
    state
        .auth()
        .require_identity(caller.0.as_deref())
        .map_err(&fail)?;
    let authorize = |repo: &str| caller.require(&state.auth(), Some(repo), Role::Read);
    let (repo, name) = match state
        .engine()
        .docker_target(&v2, query.ns.as_deref(), &authorize)
        .map_err(&name_unknown)?
    {
        V2Target::Virtual(repo) => {
            let request = (&method, &headers);
            return super::virtual_repo::v2(&state, &caller, &repo, request, &v2, query.tag_page())
                .await;
        }
        V2Target::Remote(repo, name) => (repo, name),
    };
    let page = query.tag_page().map_err(&fail)?;
    let fetch = repo
        .docker_fetch(&name, &v2.endpoint, &page)
        .map_err(&fail)?;
    let result = read_fetch(&repo, fetch, read_op(&method, &headers)).await;
    record_request(
        &state.metrics,
        repo.name(),
        "docker",
        result.as_ref().map(|s| s.cache),
    );
    let s = result.map_err(&fail)?;
    let digest = s.digest.clone();
    let mut resp = served(
        s,
        state.metrics.bytes_served.with_label_values(&[repo.name()]),
    );
    registry_headers(resp.headers_mut(), digest.as_deref());
    Ok(resp)
}
