//! Talking to upstreams: one reqwest client per repository (its own timeouts and credentials),
//! URLs built only from `base_url` and a validated path, conditional requests, and the mapping
//! of transport failures to core errors.

use reqwest::header::{HeaderMap, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH};
use reqwest::{Method, Response};

use crate::config::{BaseUrl, RepoConfig, Secret};
use crate::error::{Error, Result};
use crate::repo::path::RepoPath;

/// The `User-Agent` sent upstream.
pub const USER_AGENT: &str = concat!("artifactapi/", env!("CARGO_PKG_VERSION"));

/// Validators of a cached copy, sent to revalidate it.
#[derive(Debug, Clone, Default)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// An upstream of one remote repository.
pub struct Upstream {
    client: reqwest::Client,
    base: BaseUrl,
    credentials: Option<(String, Secret)>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.base)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the client for a remote; `None` when the repository has no `base_url`.
    pub fn new(repo: &RepoConfig) -> Result<Option<Upstream>> {
        let Some(base) = repo.base_url.clone() else {
            return Ok(None);
        };
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(repo.connect_timeout.0)
            .read_timeout(repo.read_timeout.0)
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| Error::UpstreamUnreachable(format!("building HTTP client: {e}")))?;
        let credentials = match (&repo.username, &repo.password) {
            (Some(u), Some(p)) => Some((u.0.clone(), p.clone())),
            (Some(u), None) => Some((u.0.clone(), Secret::new(""))),
            _ => None,
        };
        Ok(Some(Upstream {
            client,
            base,
            credentials,
        }))
    }

    /// `base_url` + `/` + the encoded path. The path was validated, so the result stays on
    /// base_url's host and under its path.
    pub fn url(&self, path: &RepoPath) -> String {
        format!("{}/{}", self.base.as_prefix(), path.encoded())
    }

    /// Sends `method` for `path`, with validators when revalidating. Redirects are followed;
    /// reqwest drops the `Authorization` header when one leads to another host.
    pub async fn send(
        &self,
        method: Method,
        path: &RepoPath,
        validators: Option<&Validators>,
    ) -> Result<Response> {
        let mut headers = HeaderMap::new();
        if let Some(v) = validators {
            if let Some(etag) = v
                .etag
                .as_deref()
                .and_then(|e| HeaderValue::from_str(e).ok())
            {
                headers.insert(IF_NONE_MATCH, etag);
            }
            if let Some(lm) = v
                .last_modified
                .as_deref()
                .and_then(|e| HeaderValue::from_str(e).ok())
            {
                headers.insert(IF_MODIFIED_SINCE, lm);
            }
        }
        let mut req = self.client.request(method, self.url(path)).headers(headers);
        if let Some((user, pass)) = &self.credentials {
            req = req.basic_auth(user, Some(pass.expose()));
        }
        req.send().await.map_err(transport_error)
    }
}

/// Maps a reqwest failure to a core error without leaking credentials (URLs carry none).
pub fn transport_error(e: reqwest::Error) -> Error {
    let detail = crate::error_chain(&e);
    if e.is_timeout() {
        Error::UpstreamTimeout(detail)
    } else {
        Error::UpstreamUnreachable(detail)
    }
}
