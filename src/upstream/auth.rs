//! Registry authentication: parsing `WWW-Authenticate` challenges and the bearer-token cache
//! (tokens keyed by realm, service, scope and user, dropped 30 s before they expire).

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

/// Tokens (and scope hints) kept per remote, at most; the least recently used go first.
const MAX_TOKENS: u64 = 10_000;
/// A token response larger than this is refused.
const MAX_TOKEN_RESPONSE: usize = 1024 * 1024;

/// Each token lives until 30 s before the realm said it expires.
struct TokenExpiry;

impl moka::Expiry<TokenKey, (Secret, Instant)> for TokenExpiry {
    fn expire_after_create(
        &self,
        _: &TokenKey,
        (_, until): &(Secret, Instant),
        now: Instant,
    ) -> Option<Duration> {
        Some(until.saturating_duration_since(now))
    }
}

/// Bearer tokens of one remote. Concurrent requests for one token cause one token request;
/// requests for other tokens do not wait for it.
pub struct TokenCache {
    tokens: moka::future::Cache<TokenKey, (Secret, Instant)>,
    /// The last challenge seen per scope, so later requests can send a cached token at once.
    hints: moka::sync::Cache<String, (String, String)>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            tokens: moka::future::Cache::builder()
                .max_capacity(MAX_TOKENS)
                .expire_after(TokenExpiry)
                .build(),
            hints: moka::sync::Cache::new(MAX_TOKENS),
        }
    }
}

impl TokenCache {
    /// A cached, unexpired token for `scope` from a challenge seen before.
    pub async fn cached_for_scope(&self, scope: &str, user: &str) -> Option<Secret> {
        let (realm, service) = self.hints.get(scope)?;
        let key = TokenKey {
            realm,
            service,
            scope: scope.to_string(),
            user: user.to_string(),
        };
        self.tokens
            .get(&key)
            .await
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t)
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
                .insert(scope.to_string(), (key.realm.clone(), key.service.clone()));
        }
        if let Some((t, until)) = self.tokens.get(&key).await
            && Instant::now() < until
        {
            return Ok(t);
        }
        let fetch = fetch_token(client, realm, service, scope, credentials);
        self.tokens
            .try_get_with(key, fetch)
            .await
            .map(|(t, _)| t)
            .map_err(|e: std::sync::Arc<Error>| (*e).clone())
    }
}

/// Asks `realm` for a token, and says until when to use it.
async fn fetch_token(
    client: &reqwest::Client,
    realm: &str,
    service: Option<&str>,
    scope: Option<&str>,
    credentials: Option<&(String, Secret)>,
) -> Result<(Secret, Instant)> {
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
    let mut resp = req.send().await.map_err(super::transport_error)?;
    if !resp.status().is_success() {
        tracing::warn!(
            realm,
            status = resp.status().as_u16(),
            "token request refused"
        );
        return Err(Error::UpstreamStatus(resp.status().as_u16()));
    }
    let too_big = || Error::UpstreamUnreachable("token response is too large".into());
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(super::transport_error)? {
        if body.len() + chunk.len() > MAX_TOKEN_RESPONSE {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    let body: TokenResponse = serde_json::from_slice(&body)
        .map_err(|_| Error::UpstreamUnreachable("token response is not valid JSON".into()))?;
    let token = body
        .token
        .or(body.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::UpstreamUnreachable("token response has no token".into()))?;
    let lifetime = body.expires_in.unwrap_or(60).saturating_sub(30).max(1);
    Ok((
        Secret::new(token),
        Instant::now() + Duration::from_secs(lifetime),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A token realm on loopback: scope `slow` answers after 1.5 s, others at once. Counts the
    /// requests per scope.
    async fn realm() -> (String, Arc<[AtomicUsize; 2]>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let counts = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let seen = counts.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap();
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let slow = head.contains("scope=slow");
                    seen[usize::from(slow)].fetch_add(1, Ordering::SeqCst);
                    if slow {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                    }
                    let body = r#"{"token":"t","expires_in":300}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        (url, counts)
    }

    #[tokio::test]
    async fn one_fetch_per_token_and_other_tokens_do_not_wait() {
        let (url, counts) = realm().await;
        let cache = Arc::new(TokenCache::default());
        let client = reqwest::Client::new();
        let slow: Vec<_> = (0..8)
            .map(|_| {
                let (cache, client, url) = (cache.clone(), client.clone(), url.clone());
                tokio::spawn(
                    async move { cache.token(&client, &url, None, Some("slow"), None).await },
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let fast = cache.token(&client, &url, None, Some("fast"), None).await;
        assert_eq!(fast.unwrap().expose(), "t");
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "a token for another scope waited for the slow one: {:?}",
            started.elapsed()
        );
        for t in slow {
            assert_eq!(t.await.unwrap().unwrap().expose(), "t");
        }
        assert_eq!(
            counts[1].load(Ordering::SeqCst),
            1,
            "one fetch for eight callers"
        );
        assert_eq!(counts[0].load(Ordering::SeqCst), 1);
        assert_eq!(
            cache
                .cached_for_scope("slow", "")
                .await
                .map(|t| t.expose().to_string()),
            Some("t".to_string())
        );
    }

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
