//! Talking to upstreams: one reqwest client per repository (its own timeouts and credentials),
//! URLs built only from `base_url` and a validated path, conditional requests, registry
//! challenges (bearer tokens, Basic), where redirects may lead (`redirect`), and the mapping of
//! transport failures to core errors.

mod answer;
pub mod auth;
mod redirect;

use reqwest::header::{
    ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, RANGE,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use prometheus::{Histogram, IntCounterVec};

use crate::config::{BaseUrl, PackageKind, RemoteConfig, Secret, UpstreamHost};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::path::RepoPath;

pub use answer::{Answer, BodyStream, DOCKER_CONTENT_DIGEST, Head};

/// The `User-Agent` sent upstream.
pub const USER_AGENT: &str = concat!("artifactapi/", env!("CARGO_PKG_VERSION"));

/// The releases API used when a remote sets no `api_url`.
pub const GITHUB_API: &str = "https://api.github.com";

/// Validators of a cached copy, sent to revalidate it.
#[derive(Debug, Clone, Default)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// Per-request options.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions<'a> {
    /// Validators of a cached copy, to revalidate it.
    pub validators: Option<&'a Validators>,
    /// `Accept` header.
    pub accept: Option<&'a str>,
    /// Query string (without `?`), already encoded.
    pub query: Option<&'a str>,
    /// Registry token scope (`repository:NAME:pull`), to reuse cached tokens.
    pub scope: Option<&'a str>,
    /// Ask for the body from this offset on (`Range: bytes=N-`); upstream may send it whole.
    pub range_from: Option<u64>,
    /// Ask for the path as a directory (`path/`): PyPI's Simple API pages.
    pub directory: bool,
}

/// An upstream of one remote repository.
pub struct Upstream {
    client: reqwest::Client,
    base: BaseUrl,
    /// The releases API of a generic remote on GitHub (`api_url`), read by `warm`.
    api: BaseUrl,
    /// Sent to `api` as a bearer token: the remote's password, with or without a username.
    api_token: Option<Secret>,
    credentials: Option<(String, Secret)>,
    /// Send Basic credentials with every request (plain HTTP remotes); registries get them only
    /// when they challenge.
    preemptive_basic: bool,
    /// A registry answered a Basic challenge: send Basic from then on, saving a 401 round trip
    /// per object.
    basic_challenged: AtomicBool,
    tokens: auth::TokenCache,
    /// The hosts requests may reach whatever their address; token realms are added as
    /// base_url names them.
    destinations: std::sync::Arc<redirect::Destinations>,
    /// Where each request's latency and status are recorded, once a repository is named.
    observer: Option<Observer>,
}

/// The upstream request metrics of one repository.
struct Observer {
    repository: String,
    latency: Histogram,
    requests: IntCounterVec,
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
    /// Builds the client for a remote.
    pub fn new(repo: &RemoteConfig) -> Result<Upstream> {
        let base = repo.base_url.clone();
        let api = match &repo.api_url {
            Some(u) => u.clone(),
            None => BaseUrl::parse(GITHUB_API).expect("a valid URL"),
        };
        let trusted = repo
            .allowed_redirect_hosts
            .iter()
            .cloned()
            .chain(UpstreamHost::of_url(api.url()))
            .chain(redirect::proxy_hosts());
        let destinations = redirect::Destinations::new(base.url(), trusted);
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(repo.connect_timeout.0)
            .read_timeout(repo.read_timeout.0)
            .redirect(destinations.policy())
            .dns_resolver(destinations.resolver())
            .build()
            .map_err(|e| Error::UpstreamUnreachable(format!("building HTTP client: {e}")))?;
        // An empty user (e.g. `${USER:-}` left unset) means anonymous.
        let credentials = match (&repo.username, &repo.password) {
            (Some(u), p) if !u.is_empty() => {
                Some((u.0.clone(), p.clone().unwrap_or_else(|| Secret::new(""))))
            }
            _ => None,
        };
        Ok(Upstream {
            client,
            base,
            api,
            api_token: repo.password.clone(),
            credentials,
            preemptive_basic: repo.package != PackageKind::Docker,
            basic_challenged: AtomicBool::new(false),
            tokens: auth::TokenCache::default(),
            destinations,
            observer: None,
        })
    }

    /// The file host of a PyPI remote (`files_url`): the remote's client settings with `url`
    /// as the base. The remote's credentials go along only when it is base_url's origin.
    pub fn files_host(repo: &RemoteConfig, url: &BaseUrl) -> Result<Upstream> {
        let mut config = repo.clone();
        if url.url().origin() != repo.base_url.url().origin() {
            config.username = None;
            config.password = None;
        }
        config.base_url = url.clone();
        Upstream::new(&config)
    }

    /// Records every request of this upstream in `metrics` under `repository`.
    pub fn observed_as(mut self, repository: &str, metrics: &Metrics) -> Upstream {
        self.observer = Some(Observer {
            repository: repository.to_string(),
            latency: metrics.upstream_latency.with_label_values(&[repository]),
            requests: metrics.upstream_requests.clone(),
        });
        self
    }

    /// A `GET` of `path`: the body streams as it arrives.
    pub async fn get(&self, path: &RepoPath, opts: &RequestOptions<'_>) -> Result<Answer> {
        self.observed(Method::GET, path, opts).await
    }

    /// A `HEAD` of `path`: the answer's body is empty.
    pub async fn head(&self, path: &RepoPath, opts: &RequestOptions<'_>) -> Result<Answer> {
        self.observed(Method::HEAD, path, opts).await
    }

    /// A `GET` of `path_and_query` (already encoded, no leading `/`) on the remote's API host
    /// (`api_url`), with the remote's client and timeouts. The remote's password, if any, goes
    /// as a bearer token, to that host only.
    pub async fn api_get(&self, path_and_query: &str, accept: &str) -> Result<Answer> {
        let url = format!("{}/{path_and_query}", self.api.as_prefix());
        let mut req = self.client.get(url).header(ACCEPT, accept);
        if let Some(token) = &self.api_token {
            req = req.bearer_auth(token.expose());
        }
        let started = Instant::now();
        let result = req.send().await.map_err(transport_error);
        self.record(started, &result);
        result.map(Answer::from_response)
    }

    /// Sends one request and records its latency and status (or "error").
    async fn observed(
        &self,
        method: Method,
        path: &RepoPath,
        opts: &RequestOptions<'_>,
    ) -> Result<Answer> {
        let started = Instant::now();
        let result = self.send(method, path, opts).await;
        self.record(started, &result);
        result.map(Answer::from_response)
    }

    /// Records a request's latency and status (or "error").
    fn record(&self, started: Instant, result: &Result<Response>) {
        if let Some(o) = &self.observer {
            o.latency.observe(started.elapsed().as_secs_f64());
            let status = match result {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            o.requests
                .with_label_values(&[o.repository.as_str(), status.as_str()])
                .inc();
        }
    }

    /// The base every path is under.
    pub fn base(&self) -> &BaseUrl {
        &self.base
    }

    /// `base_url` + `/` + the encoded path. The path was validated, so the result stays on
    /// base_url's host and under its path.
    pub fn url(&self, path: &RepoPath) -> String {
        format!("{}/{}", self.base.as_prefix(), path.encoded())
    }

    /// Sends `method` for `path`. Redirects are followed; reqwest drops the `Authorization`
    /// header when one leads to another host. A 401 with a Bearer or Basic challenge is
    /// answered once (anonymously when the remote has no credentials), and only when the 401
    /// comes from base_url's origin: a redirect target's challenge is an upstream error.
    async fn send(
        &self,
        method: Method,
        path: &RepoPath,
        opts: &RequestOptions<'_>,
    ) -> Result<Response> {
        let user = self
            .credentials
            .as_ref()
            .map(|c| c.0.as_str())
            .unwrap_or("");
        let mut auth = match opts.scope {
            Some(scope) => self
                .tokens
                .cached_for_scope(scope, user)
                .await
                .map(|t| format!("Bearer {}", t.expose())),
            None => None,
        };
        if auth.is_none()
            && (self.preemptive_basic || self.basic_challenged.load(Ordering::Relaxed))
        {
            auth = self.basic();
        }
        let resp = self.request(&method, path, opts, auth.as_deref()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        if resp.url().origin() != self.base.url().origin() {
            tracing::warn!(
                upstream = %self.base.url().origin().ascii_serialization(),
                from = %resp.url().origin().ascii_serialization(),
                "a redirect target asked for credentials; its challenge is not answered"
            );
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(auth::parse_challenge);
        let retry_auth = match challenge {
            Some(auth::Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope.as_deref().or(opts.scope);
                // base_url named this realm, so it may have any address (an internal registry's
                // token service).
                if let Ok(url) = reqwest::Url::parse(&realm) {
                    self.destinations.trust(&url);
                }
                let token = self
                    .tokens
                    .token(
                        &self.client,
                        &realm,
                        service.as_deref(),
                        scope,
                        self.credentials_for(&realm),
                    )
                    .await?;
                format!("Bearer {}", token.expose())
            }
            Some(auth::Challenge::Basic) if auth.is_none() => match self.basic() {
                Some(b) => {
                    self.basic_challenged.store(true, Ordering::Relaxed);
                    b
                }
                None => return Ok(resp),
            },
            _ => return Ok(resp),
        };
        self.request(&method, path, opts, Some(&retry_auth)).await
    }

    /// The credentials to send to a token `realm` named by base_url's own challenge: none
    /// over plain HTTP when base_url is HTTPS (the token is then asked for anonymously).
    fn credentials_for(&self, realm: &str) -> Option<&(String, Secret)> {
        let credentials = self.credentials.as_ref()?;
        let downgrade = self.base.url().scheme() == "https"
            && reqwest::Url::parse(realm).is_ok_and(|u| u.scheme() != "https");
        if downgrade {
            tracing::warn!(
                upstream = %self.base.url().origin().ascii_serialization(),
                "the token realm is plain HTTP; asking for a token without the credentials"
            );
            return None;
        }
        Some(credentials)
    }

    fn basic(&self) -> Option<String> {
        use base64::Engine;
        let (user, pass) = self.credentials.as_ref()?;
        let raw = format!("{user}:{}", pass.expose());
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
    }

    async fn request(
        &self,
        method: &Method,
        path: &RepoPath,
        opts: &RequestOptions<'_>,
        auth: Option<&str>,
    ) -> Result<Response> {
        let mut headers = HeaderMap::new();
        if let Some(v) = opts.validators {
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
        if let Some(a) = opts.accept.and_then(|a| HeaderValue::from_str(a).ok()) {
            headers.insert(ACCEPT, a);
        }
        if let Some(from) = opts.range_from.filter(|n| *n > 0) {
            headers.insert(
                RANGE,
                HeaderValue::from_str(&format!("bytes={from}-")).expect("ASCII"),
            );
        }
        if let Some(a) = auth.and_then(|a| HeaderValue::from_str(a).ok()) {
            let mut a = a;
            a.set_sensitive(true);
            headers.insert(AUTHORIZATION, a);
        }
        let mut url = self.url(path);
        if opts.directory {
            url.push('/');
        }
        if let Some(q) = opts.query {
            url.push('?');
            url.push_str(q);
        }
        self.client
            .request(method.clone(), url)
            .headers(headers)
            .send()
            .await
            .map_err(transport_error)
    }
}

/// Maps a reqwest failure to a core error without leaking credentials (URLs carry none).
pub fn transport_error(e: reqwest::Error) -> Error {
    // The URL goes to the log without its query: a redirect target's query may be a signed
    // link's credentials (S3, CDN tokens).
    let url = e.url().map(|u| {
        let mut u = u.clone();
        u.set_query(None);
        let _ = u.set_password(None);
        u
    });
    let e = e.without_url();
    let detail = match url {
        Some(url) => format!("{} (url: {url})", crate::error_chain(&e)),
        None => crate::error_chain(&e),
    };
    if redirect::is_refused(&e) {
        Error::RedirectRefused(detail)
    } else if e.is_timeout() {
        Error::UpstreamTimeout(detail)
    } else {
        Error::UpstreamUnreachable(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(base_url: &str) -> Upstream {
        let text = format!(
            "remotes:\n  r:\n    type: remote\n    package: docker\n    base_url: {base_url}\n    username: u\n    password: p\n"
        );
        let config = crate::config::load_str(&text).unwrap();
        let crate::config::RepoConfig::Remote(r) = &config.remotes["r"] else {
            panic!("r is a remote");
        };
        Upstream::new(r).unwrap()
    }

    #[test]
    fn credentials_never_go_to_a_plain_http_realm_of_an_https_registry() {
        let u = upstream("https://registry.example");
        assert!(u.credentials_for("https://auth.example/token").is_some());
        assert!(u.credentials_for("http://auth.example/token").is_none());
        let u = upstream("http://registry.example");
        assert!(u.credentials_for("http://auth.example/token").is_some());
    }
}
