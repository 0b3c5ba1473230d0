//! Registry authentication: parsing `WWW-Authenticate` challenges and the bearer-token cache
//! (tokens keyed by realm, service, scope and user, dropped 30 s before they expire).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::Secret;
use crate::error::{Error, Result};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// Parses the first challenge we can answer (Bearer or Basic) from a header value.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let realm = get("realm")?;
    if !(realm.starts_with("http://") || realm.starts_with("https://")) {
        return None;
    }
    Some(Challenge::Bearer {
        realm,
        service: get("service"),
        scope: get("scope"),
    })
}

/// `key="quoted, value", key2=token` → pairs. Quoted values may contain commas and `\"`.
fn parse_params(input: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        let key = key.trim().to_string();
        if key.is_empty() {
            break;
        }
        out.push((key, value.trim().to_string()));
    }
    out
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    realm: String,
    service: String,
    scope: String,
    user: String,
}

/// Bearer tokens of one remote. Fetches are serialised, so concurrent requests for one scope
/// cause one token request.
#[derive(Default)]
pub struct TokenCache {
    tokens: tokio::sync::Mutex<HashMap<TokenKey, (Secret, Instant)>>,
    /// The last challenge seen per scope, so later requests can send a cached token at once.
    hints: std::sync::Mutex<HashMap<String, (String, String)>>,
}

impl TokenCache {
    /// A cached, unexpired token for `scope` from a challenge seen before.
    pub async fn cached_for_scope(&self, scope: &str, user: &str) -> Option<Secret> {
        let (realm, service) = self.hints.lock().expect("hints lock").get(scope).cloned()?;
        let key = TokenKey {
            realm,
            service,
            scope: scope.to_string(),
            user: user.to_string(),
        };
        let tokens = self.tokens.lock().await;
        tokens
            .get(&key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone())
    }

    /// A token for the challenge, from the cache or from the realm.
    pub async fn token(
        &self,
        client: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        credentials: Option<&(String, Secret)>,
    ) -> Result<Secret> {
        let key = TokenKey {
            realm: realm.to_string(),
            service: service.unwrap_or_default().to_string(),
            scope: scope.unwrap_or_default().to_string(),
            user: credentials.map(|c| c.0.clone()).unwrap_or_default(),
        };
        if let Some(scope) = scope {
            self.hints
                .lock()
                .expect("hints lock")
                .insert(scope.to_string(), (key.realm.clone(), key.service.clone()));
        }
        let mut tokens = self.tokens.lock().await;
        if let Some((t, until)) = tokens.get(&key)
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| Error::UpstreamUnreachable(format!("invalid token realm: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if let Some(s) = scope {
                q.append_pair("scope", s);
            }
        }
        let mut req = client.get(url);
        if let Some((user, pass)) = credentials {
            req = req.basic_auth(user, Some(pass.expose()));
        }
        let resp = req.send().await.map_err(super::transport_error)?;
        if !resp.status().is_success() {
            tracing::warn!(
                realm,
                status = resp.status().as_u16(),
                "token request refused"
            );
            return Err(Error::UpstreamStatus(resp.status().as_u16()));
        }
        let body: TokenResponse = resp
            .json()
            .await
            .map_err(|_| Error::UpstreamUnreachable("token response is not valid JSON".into()))?;
        let token = body
            .token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::UpstreamUnreachable("token response has no token".into()))?;
        let lifetime = body.expires_in.unwrap_or(60).saturating_sub(30).max(1);
        let secret = Secret::new(token);
        tokens.insert(
            key,
            (
                secret.clone(),
                Instant::now() + Duration::from_secs(lifetime),
            ),
        );
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            }
        );
        let c = parse_challenge(r#"bearer realm="http://h/t", scope="a:b:pull,push""#).unwrap();
        assert!(
            matches!(c, Challenge::Bearer { scope: Some(s), service: None, .. } if s == "a:b:pull,push")
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(
            parse_challenge(r#"Bearer realm="file:///etc/passwd""#),
            None
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(""), None);
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
    }
}
