//! Extractors shared by the handlers: the `{repo}/{tail}` of `/api/v1/{kind}/...` URLs, and
//! query strings as key/value pairs.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use percent_encoding::percent_decode_str;

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::auth::Role;
use crate::error::Error;

/// The repository (decoded) and the raw, still encoded, path after it in
/// `/api/v1/{kind}/{repo}/{tail}`: the tail stays encoded so that encoded traversal is seen
/// and refused when it is parsed.
pub struct RepoTail {
    pub name: String,
    pub tail: String,
}

impl RepoTail {
    fn from_path(path: &str) -> RepoTail {
        let rest = path
            .strip_prefix("/api/v1/")
            .and_then(|r| r.split_once('/'))
            .map_or("", |(_, r)| r);
        let (raw_name, tail) = rest.split_once('/').unwrap_or((rest, ""));
        RepoTail {
            name: percent_decode_str(raw_name)
                .decode_utf8_lossy()
                .into_owned(),
            tail: tail.to_string(),
        }
    }

    /// Checks that `caller` has `role` on this repository.
    pub fn require(&self, state: &AppState, caller: &Caller, role: Role) -> Result<(), ApiError> {
        caller
            .require(&state.auth(), Some(&self.name), role)
            .map_err(|e| self.error(e))
    }

    /// `error` reported against this repository and the raw tail.
    pub fn error(&self, error: Error) -> ApiError {
        self.error_at(error, &self.tail)
    }

    /// `error` reported against this repository and `path` (a parsed path).
    pub fn error_at(&self, error: Error, path: &str) -> ApiError {
        ApiError::at(error, &self.name, Some(path))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RepoTail {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(RepoTail::from_path(parts.uri.path()))
    }
}

/// The decoded `key=value` pairs of a query string, in order (`+` is a space, a key alone has
/// an empty value). Repeated keys are kept, so the caller chooses which one counts.
pub type QueryPairs = Query<Vec<(String, String)>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_repository_and_raw_tail() {
        let t = RepoTail::from_path("/api/v1/local/my%2Drepo/a/%2e%2e/b");
        assert_eq!(
            (t.name.as_str(), t.tail.as_str()),
            ("my-repo", "a/%2e%2e/b")
        );
        let t = RepoTail::from_path("/api/v1/virtual/only");
        assert_eq!((t.name.as_str(), t.tail.as_str()), ("only", ""));
    }
}
