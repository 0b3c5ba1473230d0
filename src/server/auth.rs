//! Reading the caller from `Authorization` (Bearer token, or Basic `name:token`) as an axum
//! extractor. Invalid credentials are refused here with 401; what a valid caller may do is
//! decided by `crate::auth::Policy` in each handler, once it knows the repository.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::AppState;
use super::error::{ApiError, RegistryError};
use crate::auth::{Credentials, Policy, Principal, Role};
use crate::error::{Error, Result};

/// The client behind a request: `None` when it presented no credentials (or when no tokens
/// are configured, so that there is nothing to check them against).
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Arc<Principal>>);

impl Caller {
    /// Refuses the request unless the caller holds `need` on `repo` (`None`: every repository).
    pub fn require(&self, policy: &Policy, repo: Option<&str>, need: Role) -> Result<()> {
        policy.authorize(self.0.as_deref(), repo, need)
    }

    /// The token name, for logs.
    pub fn name(&self) -> Option<&str> {
        self.0.as_deref().map(Principal::name)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        if !state.auth().has_tokens() {
            return Ok(Caller(None));
        }
        let result = match parts.headers.get(AUTHORIZATION) {
            None => return Ok(Caller(None)),
            Some(value) => {
                credentials(value.as_bytes()).and_then(|c| state.auth().authenticate(&c))
            }
        };
        match result {
            Ok(p) => Ok(Caller(Some(p))),
            Err(e) if parts.uri.path().starts_with("/v2") => Err(RegistryError {
                error: e,
                unknown_code: "NAME_UNKNOWN",
            }
            .into_response()),
            Err(e) => Err(ApiError::new(e).into_response()),
        }
    }
}

/// Parses an `Authorization` value. The scheme is case-insensitive.
fn credentials(value: &[u8]) -> Result<Credentials> {
    let bad = |why: &str| Error::Unauthenticated(format!("invalid credentials: {why}"));
    let text = std::str::from_utf8(value).map_err(|_| bad("not UTF-8"))?;
    let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Ok(Credentials::Bearer(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| bad("Basic credentials are not base64"))?;
        let pair = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
        let (name, secret) = pair
            .split_once(':')
            .ok_or_else(|| bad("Basic credentials need name:token"))?;
        return Ok(Credentials::Basic {
            name: name.to_string(),
            secret: secret.to_string(),
        });
    }
    Err(bad("use Bearer TOKEN or Basic name:TOKEN"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic() {
        assert!(matches!(
            credentials(b"Bearer abc"),
            Ok(Credentials::Bearer(t)) if t == "abc"
        ));
        assert!(matches!(
            credentials(b"bearer  abc "),
            Ok(Credentials::Bearer(t)) if t == "abc"
        ));
        // "ci:to:ken": the name ends at the first colon.
        assert!(matches!(
            credentials(b"Basic Y2k6dG86a2Vu"),
            Ok(Credentials::Basic { name, secret }) if name == "ci" && secret == "to:ken"
        ));
        for bad in [&b"Bearer"[..], b"Basic !!", b"Basic Y2k=", b"Digest x", b""] {
            assert!(credentials(bad).is_err(), "{bad:?}");
        }
    }
}
