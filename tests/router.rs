//! In-process tests of the router: built from a config string with filesystem storage in a temp
//! dir and driven with `tower::ServiceExt::oneshot`, with no server process and no network. They
//! pin the error mapping (SPEC §3, §3.2, §4, §9.6) and the auth answers (§3.8): status, JSON
//! error body, and `WWW-Authenticate` where the SPEC asks for it. Every request here is refused
//! before any upstream would be asked, so the remotes point at a port nothing listens on.

use std::sync::Arc;

use artifactapi::auth::Policy;
use artifactapi::metrics::Metrics;
use artifactapi::repo::Engine;
use artifactapi::server::{AppState, router};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

const READER: &str = "reader-secret-0123456789";
const WRITER: &str = "writer-secret-0123456789";
const UPLOADS_ONLY: &str = "uploads-secret-0123456789";
const OPS: &str = "ops-secret-0123456789";

/// Nothing listens on port 9 (discard) on loopback: no test may reach an upstream.
const REPOS: &str = "remotes:
  gen:
    type: remote
    package: generic
    base_url: http://127.0.0.1:9/files
  el:
    type: remote
    package: rpm
    base_url: http://127.0.0.1:9/el
    include_patterns: ['\\.rpm$']
  hub:
    type: remote
    package: docker
    base_url: http://127.0.0.1:9
  uploads:
    type: local
    package: generic
  both:
    type: virtual
    package: generic
    members: [uploads, gen]
";

fn auth(anonymous_read: bool) -> String {
    format!(
        "auth:
  anonymous_read: {anonymous_read}
  tokens:
    - name: reader
      secret: {READER}
      roles:
        \"*\": [read]
    - name: writer
      secret: {WRITER}
      roles:
        \"*\": [write]
    - name: uploader
      secret: {UPLOADS_ONLY}
      roles:
        uploads: [read, write]
    - name: ops
      secret: {OPS}
      roles:
        \"*\": [admin]
"
    )
}

/// The router of a server with `REPOS` and `extra` config, and the temp dir holding its data.
async fn build_app(extra: &str) -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "storage:\n  path: {}\n{extra}{REPOS}",
        dir.path().join("data").display()
    );
    let config = artifactapi::config::load_str(&text).unwrap_or_else(|d| panic!("{d:?}"));
    let metrics = Arc::new(Metrics::new());
    let auth = Arc::new(Policy::from_config(&config.auth));
    let engine = Arc::new(Engine::open(config, metrics.clone()).await.unwrap());
    let state = AppState::new(engine, auth, metrics);
    (router(state), dir)
}

/// A response, read whole.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Every value of header `name`.
    fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    /// Asserts a JSON error `{"error": code, "message": …}` with `status`.
    fn expect_error(&self, status: u16, code: &str) -> serde_json::Value {
        let v = self.json();
        assert_eq!(
            (self.status, v["error"].as_str()),
            (status, Some(code)),
            "{v}"
        );
        assert!(v["message"].is_string(), "{v}");
        assert!(
            self.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        v
    }

    /// Asserts a registry error `{"errors":[{"code","message","detail"}]}` with `status`.
    fn expect_registry_error(&self, status: u16, code: &str) {
        let v = self.json();
        assert_eq!(self.status, status, "{v}");
        assert_eq!(v["errors"][0]["code"], code, "{v}");
        assert!(v["errors"][0]["message"].is_string(), "{v}");
        assert!(v["errors"][0].get("detail").is_some(), "{v}");
        assert_eq!(
            self.header_all("docker-distribution-api-version"),
            ["registry/2.0"]
        );
    }
}

/// Sends `method uri` with an optional `Authorization` value.
async fn send(app: &Router, method: &str, uri: &str, authorization: Option<&str>) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = authorization {
        req = req.header(header::AUTHORIZATION, a);
    }
    answer(app, req.body(Body::empty()).unwrap()).await
}

/// Sends `req` and reads the whole response.
async fn answer(app: &Router, req: Request<Body>) -> Answer {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: body.to_vec(),
    }
}

async fn get(app: &Router, uri: &str) -> Answer {
    send(app, "GET", uri, None).await
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

#[tokio::test]
async fn unknown_repositories_and_wrong_types() {
    let (app, _dir) = build_app(&auth(true)).await;
    let a = get(&app, "/api/v1/remote/nope/x").await;
    let v = a.expect_error(404, "repository_not_found");
    assert_eq!(v["remote"], "nope");
    for uri in ["/api/v1/local/nope/x", "/api/v1/virtual/nope/x"] {
        get(&app, uri)
            .await
            .expect_error(404, "repository_not_found");
    }
    // Each endpoint serves one type of repository.
    for uri in [
        "/api/v1/remote/uploads/x",
        "/api/v1/remote/both/x",
        "/api/v1/local/gen/x",
        "/api/v1/virtual/uploads/x",
        "/api/v1/virtual/gen/x",
    ] {
        let v = get(&app, uri)
            .await
            .expect_error(400, "wrong_repository_type");
        assert!(v["remote"].is_string(), "{uri}: {v}");
    }
    let a = send(&app, "PUT", "/api/v1/local/gen/x", Some(&bearer(WRITER))).await;
    a.expect_error(400, "wrong_repository_type");
    // include_patterns refuse before any upstream is asked.
    let v = get(&app, "/api/v1/remote/el/Packages/a.txt")
        .await
        .expect_error(403, "forbidden");
    assert_eq!(
        (v["remote"].as_str(), v["path"].as_str()),
        (Some("el"), Some("Packages/a.txt"))
    );
}

#[tokio::test]
async fn bad_paths_are_400_bad_path() {
    let (app, _dir) = build_app(&auth(true)).await;
    for uri in [
        "/api/v1/remote/gen/../../etc/passwd",
        "/api/v1/remote/gen/a/../b",
        "/api/v1/remote/gen/./x",
        "/api/v1/remote/gen/%2e%2e/%2e%2e/etc/passwd",
        "/api/v1/remote/gen/%2E%2E%2Fetc%2Fpasswd",
        "/api/v1/remote/gen/a%2fb",
        "/api/v1/remote/gen/a%5C..%5Cb",
        "/api/v1/remote/gen/a%00b",
        "/api/v1/remote/gen/%252e%252e/x",
        "/api/v1/remote/gen/dir/",
        "/api/v1/local/uploads/%2e%2e/escape",
        "/api/v1/local/uploads/a%2f..%2fb",
        "/api/v1/local/uploads/.artifactapi-tmp-1-1",
        "/api/v1/virtual/both/%2e%2e/x",
    ] {
        let v = get(&app, uri).await.expect_error(400, "bad_path");
        assert!(v["remote"].is_string(), "{uri}: {v}");
    }
    let a = send(
        &app,
        "PUT",
        "/api/v1/local/uploads/%2e%2e/escape",
        Some(&bearer(WRITER)),
    )
    .await;
    a.expect_error(400, "bad_path");
    // A docker remote under /api/v1/remote/ takes registry paths only.
    get(&app, "/api/v1/remote/hub/blobs/sha256/abc")
        .await
        .expect_error(400, "bad_request");
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let (app, _dir) = build_app(&auth(true)).await;
    for uri in ["/nowhere", "/api/v1/remote", "/api/v2/remote/gen/x"] {
        let a = get(&app, uri).await;
        let v = a.expect_error(404, "route_not_found");
        assert_eq!(v["message"], format!("no route for {uri}"));
    }
    // A known path with another method: 405 with Allow and an empty body.
    let a = send(&app, "POST", "/health", None).await;
    assert_eq!(a.status, 405);
    assert!(a.headers.contains_key(header::ALLOW));
    assert!(a.body.is_empty(), "{:?}", a.body);
    let a = send(&app, "GET", "/api/v1/cache/flush", None).await;
    assert_eq!(a.status, 405);
    // An unknown flush type, from an admin.
    let a = send(
        &app,
        "POST",
        "/api/v1/cache/flush?remote=gen&type=bogus",
        Some(&bearer(OPS)),
    )
    .await;
    a.expect_error(400, "bad_request");
    let a = send(
        &app,
        "POST",
        "/api/v1/cache/flush?remote=nope",
        Some(&bearer(OPS)),
    )
    .await;
    a.expect_error(404, "repository_not_found");
    let a = send(
        &app,
        "POST",
        "/api/v1/cache/flush?remote=uploads",
        Some(&bearer(OPS)),
    )
    .await;
    a.expect_error(400, "wrong_repository_type");
}

#[tokio::test]
async fn registry_errors_use_the_oci_shape() {
    let (app, _dir) = build_app(&auth(true)).await;
    let a = get(&app, "/v2/").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header_all("docker-distribution-api-version"),
        ["registry/2.0"]
    );
    assert_eq!(a.body, b"{}");
    get(&app, "/v2/nosuch/img/manifests/latest")
        .await
        .expect_registry_error(404, "NAME_UNKNOWN");
    // Not a docker repository (no mirror configured either).
    for uri in [
        "/v2/gen/x/manifests/latest",
        "/v2/uploads/x/manifests/latest",
    ] {
        get(&app, uri)
            .await
            .expect_registry_error(400, "UNSUPPORTED");
    }
    for (uri, code) in [
        ("/v2/hub/library/x/manifests/-bad", "TAG_INVALID"),
        ("/v2/hub/library/x/manifests/.bad", "TAG_INVALID"),
        ("/v2/hub/library/x/blobs/sha256:xyz", "DIGEST_INVALID"),
        ("/v2/hub/library/x/blobs/md5:abc", "DIGEST_INVALID"),
        ("/v2/hub/Library/x/manifests/v1", "NAME_INVALID"),
        ("/v2/hub/library/x/tags/list?n=abc", "NAME_INVALID"),
    ] {
        get(&app, uri).await.expect_registry_error(400, code);
    }
    // Read-only, unknown operations and unsupported digest algorithms.
    for (method, uri) in [
        ("PUT", "/v2/hub/library/x/manifests/v1"),
        ("DELETE", "/v2/hub/library/x/manifests/v1"),
        ("POST", "/v2/hub/library/x/blobs/uploads/"),
        ("GET", "/v2/hub/library/x/whatever"),
    ] {
        send(&app, method, uri, None)
            .await
            .expect_registry_error(405, "UNSUPPORTED");
    }
    let sha512 = format!("/v2/hub/library/x/blobs/sha512:{}", "a".repeat(128));
    get(&app, &sha512)
        .await
        .expect_registry_error(405, "UNSUPPORTED");
}

#[tokio::test]
async fn missing_wrong_and_insufficient_credentials() {
    let (app, _dir) = build_app(&auth(false)).await;
    // Nothing tells whether a repository exists before the check.
    for uri in [
        "/api/v1/remote/gen/a.txt",
        "/api/v1/local/uploads/a.txt",
        "/api/v1/virtual/both/a.txt",
        "/api/v1/remote/no-such-repo/a.txt",
    ] {
        let a = get(&app, uri).await;
        a.expect_error(401, "unauthorized");
        assert_eq!(
            a.header_all("www-authenticate"),
            [
                "Basic realm=\"artifactapi\", charset=\"UTF-8\"",
                "Bearer realm=\"artifactapi\""
            ],
            "{uri}"
        );
    }
    // Wrong credentials: an unknown secret, a Basic name not the token's, another scheme.
    for authorization in [
        bearer("wrong-secret-xyz"),
        format!("Basic {}", b64(&format!("ops:{READER}"))),
        "Digest username=\"reader\"".to_string(),
    ] {
        let a = send(
            &app,
            "GET",
            "/api/v1/remote/gen/a.txt",
            Some(&authorization),
        )
        .await;
        a.expect_error(401, "unauthorized");
    }
    // A valid token without the role.
    let a = send(
        &app,
        "PUT",
        "/api/v1/local/uploads/a.txt",
        Some(&bearer(READER)),
    )
    .await;
    a.expect_error(403, "access_denied");
    let a = send(
        &app,
        "GET",
        "/api/v1/remote/gen/a.txt",
        Some(&bearer(UPLOADS_ONLY)),
    )
    .await;
    a.expect_error(403, "access_denied");
    let a = send(&app, "POST", "/api/v1/cache/flush", Some(&bearer(WRITER))).await;
    a.expect_error(403, "access_denied");
    let a = send(&app, "POST", "/api/v1/cache/flush", None).await;
    a.expect_error(401, "unauthorized");
    // With the role, the answer is about the repository again.
    let a = send(&app, "GET", "/api/v1/remote/nope/x", Some(&bearer(READER))).await;
    a.expect_error(404, "repository_not_found");
    let auth = format!("Basic {}", b64(&format!("reader:{READER}")));
    let a = send(&app, "GET", "/api/v1/local/uploads/", Some(&auth)).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    // Health and metrics stay open.
    assert_eq!(get(&app, "/health").await.status, 200);
    assert_eq!(get(&app, "/metrics").await.status, 200);
}

#[tokio::test]
async fn registry_auth_answers_with_a_basic_challenge_only() {
    let (app, _dir) = build_app(&auth(false)).await;
    for uri in ["/v2/", "/v2/hub/library/x/manifests/latest"] {
        let a = get(&app, uri).await;
        a.expect_registry_error(401, "UNAUTHORIZED");
        assert_eq!(
            a.header_all("www-authenticate"),
            ["Basic realm=\"artifactapi\", charset=\"UTF-8\""],
            "{uri}"
        );
    }
    let a = send(&app, "GET", "/v2/", Some(&bearer("wrong-secret-xyz"))).await;
    a.expect_registry_error(401, "UNAUTHORIZED");
    let a = send(
        &app,
        "GET",
        "/v2/hub/library/x/manifests/latest",
        Some(&bearer(UPLOADS_ONLY)),
    )
    .await;
    a.expect_registry_error(403, "DENIED");
    let a = send(&app, "GET", "/v2/", Some(&bearer(READER))).await;
    assert_eq!(a.status, 200);

    // Anonymous reads allowed: no challenge, but wrong credentials are still refused.
    let (open, _dir) = build_app(&auth(true)).await;
    assert_eq!(get(&open, "/v2/").await.status, 200);
    let a = send(&open, "GET", "/v2/", Some(&bearer("wrong-secret-xyz"))).await;
    a.expect_registry_error(401, "UNAUTHORIZED");
    let a = send(
        &open,
        "GET",
        "/api/v1/remote/gen/a.txt",
        Some(&bearer("wrong-secret-xyz")),
    )
    .await;
    a.expect_error(401, "unauthorized");
    let a = send(&open, "PUT", "/api/v1/local/uploads/a.txt", None).await;
    a.expect_error(401, "unauthorized");
    assert!(
        a.header_all("www-authenticate")
            .iter()
            .any(|c| c.starts_with("Basic realm="))
    );
}

fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A PUT of `body` as `content_type` to the local repository, with extra headers.
fn upload(path: &str, content_type: &str, body: &str, extra: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::builder()
        .method("PUT")
        .uri(format!("/api/v1/local/uploads/{path}"))
        .header(header::AUTHORIZATION, bearer(WRITER))
        .header(header::CONTENT_TYPE, content_type)
        .header(header::HOST, "cache.example");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.body(Body::from(body.to_string())).unwrap()
}

#[tokio::test]
async fn browsers_cannot_run_content_or_make_changes_from_another_site() {
    let (app, _dir) = build_app(&auth(true)).await;
    // Changes sent by a page of another site are refused before anything happens.
    for extra in [
        &[("sec-fetch-site", "cross-site")][..],
        &[("sec-fetch-site", "same-site")][..],
        &[("origin", "http://evil.example")][..],
        &[("origin", "null")][..],
    ] {
        let a = answer(
            &app,
            upload("page.html", "text/html", "<script>x</script>", extra),
        )
        .await;
        a.expect_error(403, "cross_site_request");
    }
    let a = get(&app, "/api/v1/local/uploads/page.html").await;
    assert_eq!(a.status, 404, "nothing was stored");
    let mut req = Request::builder()
        .method("POST")
        .uri("/api/v1/cache/flush")
        .header(header::AUTHORIZATION, bearer(OPS))
        .header("sec-fetch-site", "cross-site");
    req = req.header(header::HOST, "cache.example");
    let a = answer(&app, req.body(Body::empty()).unwrap()).await;
    a.expect_error(403, "cross_site_request");

    // The same upload from the proxy's own origin, or from a non-browser client, goes in.
    let same = [
        ("origin", "http://cache.example"),
        ("sec-fetch-site", "same-origin"),
    ];
    let a = answer(
        &app,
        upload("page.html", "text/html", "<script>x</script>", &same),
    )
    .await;
    assert!((200..300).contains(&a.status), "{}", a.status);
    let a = answer(
        &app,
        upload("data.bin", "application/octet-stream", "x", &[]),
    )
    .await;
    assert!((200..300).contains(&a.status), "{}", a.status);

    // Active content is sandboxed and downloaded; every response says nosniff.
    let a = get(&app, "/api/v1/local/uploads/page.html").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header_all("content-security-policy"), ["sandbox"]);
    assert_eq!(a.header_all("content-disposition"), ["attachment"]);
    assert_eq!(a.header_all("x-content-type-options"), ["nosniff"]);
    let a = get(&app, "/api/v1/local/uploads/data.bin").await;
    assert_eq!(a.status, 200);
    assert!(a.header_all("content-security-policy").is_empty());
    assert!(a.header_all("content-disposition").is_empty());
    assert_eq!(a.header_all("x-content-type-options"), ["nosniff"]);
    let a = get(&app, "/no/such/route").await;
    assert_eq!(a.header_all("x-content-type-options"), ["nosniff"]);
}
