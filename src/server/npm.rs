//! npm routes on an npm remote: packuments (`/{name}`, `/@scope%2fname`, `/@scope/name`), full
//! or abbreviated as the client's `Accept` asks (with `Vary: Accept`), and the tarballs they
//! link to (`/{name}/-/{file}.tgz`). Other paths (`-/…`) are plain files of the repository.
//! Tarball links are absolute (npm needs them so), built from the URL the client used.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, Uri, header};

use super::remote::read_fetch;
use super::respond::{Answer, read_op};
use crate::error::{Error, Result};
use crate::package::npm::{self, Kind, Route};
use crate::repo::virtual_repo::ReadOp;
use crate::repo::{RemoteRepo, RepoPath};

/// Answers `tail` (raw, after the repository name) of the npm remote `repo`; `public` is the
/// repository's URL as the client reached it.
pub(super) async fn remote(
    repo: &Arc<RemoteRepo>,
    tail: &str,
    public: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Answer> {
    let op = read_op(method, headers);
    match npm::route(tail) {
        Err(Error::NotFound) => {
            let fetch = repo.path_fetch(&RepoPath::parse(tail)?)?;
            Ok(Answer::Served(read_fetch(repo, fetch, op).await?, false))
        }
        Err(e) => Err(e),
        Ok(Route::Packument(name)) => {
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
            let mut s = repo
                .npm_packument(&name, Kind::of_accept(accept), public)
                .await?;
            if matches!(op, ReadOp::Head) {
                s.body = None;
            }
            Ok(Answer::Served(s, true))
        }
        Ok(Route::Tarball { name, file }) => {
            let fetch = repo.npm_tarball(&name, &file).await?;
            Ok(Answer::Served(read_fetch(repo, fetch, op).await?, false))
        }
    }
}

/// The absolute URL of `path` on this server as the client reached it: the request's host
/// (`Host`, or the authority of an HTTP/2 request) and `https` when a TLS-terminating proxy
/// says so with `X-Forwarded-Proto`. A host that is not a plain host name or address (with
/// port) is replaced by `localhost`.
pub(super) fn public_url(uri: &Uri, headers: &HeaderMap, path: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("localhost");
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_come_from_the_request() {
        let uri: Uri = "/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "proxy.example:8000".parse().unwrap());
        assert_eq!(
            public_url(&uri, &h, "/api/v1/remote/npm"),
            "http://proxy.example:8000/api/v1/remote/npm"
        );
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(public_url(&uri, &h, "/r"), "https://proxy.example:8000/r");
        h.insert(header::HOST, "evil.example/\"x".parse().unwrap());
        assert_eq!(public_url(&uri, &h, "/r"), "https://localhost/r");
    }
}
