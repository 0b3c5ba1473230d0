//! End-to-end tests of registry upstreams that need credentials: htpasswd (Basic) and token
//! auth against a real distribution registry and the harness's token server, token caching and
//! renewal near expiry.

mod common;

use std::time::Duration;

use common::docker::{check_pulled_image, docker_remote, small_layers};
use common::layout::{Layout, pull};
use common::registry::{Auth, Registry};
use common::{Proxy, client, expect_registry_error, tools};

#[tokio::test]
async fn htpasswd_upstream_needs_the_configured_credentials() {
    if !tools(&["docker-registry", "skopeo", "umoci", "htpasswd"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(
        &tmp.path().join("reg"),
        Auth::htpasswd("alice", "s3cret-pw"),
    );
    let layout = Layout::init(&tmp.path().join("oci"));
    layout.add_image("t1", "amd64", &small_layers(2, 31));
    reg.push(&layout, "t1", "team/app:t1");
    let upstream_manifest = reg.manifest("team/app:t1");

    let remotes = [
        docker_remote(
            "priv",
            &reg.url(),
            "    username: alice\n    password: s3cret-pw\n",
        ),
        docker_remote("anon", &reg.url(), ""),
        docker_remote(
            "wrong",
            &reg.url(),
            "    username: alice\n    password: not-it\n",
        ),
    ]
    .concat();
    let proxy = Proxy::start(&remotes);
    let host = proxy.addr.to_string();
    let c = client();

    let out = tmp.path().join("priv");
    pull(&host, "priv/team/app:t1", &out, &[]).unwrap();
    check_pulled_image(&out, &upstream_manifest, &layout);
    // After the first Basic challenge the credentials go with every request.
    let log = reg.access_log();
    let by_proxy: Vec<_> = log.iter().filter(|l| l.by_proxy()).collect();
    let unauthorized = by_proxy.iter().filter(|l| l.status == 401).count();
    assert!(by_proxy.len() >= 4, "{} proxy requests", by_proxy.len());
    assert_eq!(unauthorized, 1, "one 401, then Basic up front");

    for remote in ["anon", "wrong"] {
        let r = c
            .get(proxy.url(&format!("/v2/{remote}/team/app/manifests/t1")))
            .send()
            .await
            .unwrap();
        assert!(!r.status().is_success(), "{remote}: {}", r.status());
        let blob = &layout.image_blobs("t1")[1];
        let r = c
            .get(proxy.url(&format!("/v2/{remote}/team/app/blobs/{blob}")))
            .send()
            .await
            .unwrap();
        assert!(!r.status().is_success(), "{remote}: {}", r.status());
        let out = tmp.path().join(remote);
        assert!(pull(&host, &format!("{remote}/team/app:t1"), &out, &[]).is_err());
    }
    // Nothing was cached for the remotes without valid credentials.
    assert!(
        proxy
            .stored("anon/images/team/app/_manifests/t1")
            .await
            .is_none()
    );
    assert!(proxy.stored_keys("wrong/").await.is_empty());
}

#[tokio::test]
async fn token_upstream_is_pulled_with_few_token_requests() {
    if !tools(&["docker-registry", "skopeo", "umoci", "openssl"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), Auth::token("bob", "b0b-pw"));
    let token = reg.token.as_ref().unwrap();
    assert_eq!(token.kid().len(), 59, "12 groups of 4 base32 characters");
    let layout = Layout::init(&tmp.path().join("oci"));
    layout.add_image("a", "amd64", &small_layers(3, 41));
    layout.add_image("b", "amd64", &small_layers(2, 42));
    reg.push(&layout, "a", "library/test:a");
    reg.push(&layout, "b", "library/test:b");
    let manifest_a = reg.manifest("library/test:a");
    let manifest_b = reg.manifest("library/test:b");
    assert!(token.proxy_requests().is_empty());

    let remotes = [
        docker_remote(
            "tok",
            &reg.url(),
            "    username: bob\n    password: b0b-pw\n",
        ),
        docker_remote("anon", &reg.url(), ""),
        docker_remote(
            "bad",
            &reg.url(),
            "    username: bob\n    password: wrong\n",
        ),
    ]
    .concat();
    let proxy = Proxy::start(&remotes);
    let host = proxy.addr.to_string();

    let out = tmp.path().join("a1");
    pull(&host, "tok/library/test:a", &out, &[]).unwrap();
    check_pulled_image(&out, &manifest_a, &layout);
    let out = tmp.path().join("a2");
    pull(&host, "tok/library/test:a", &out, &[]).unwrap();
    check_pulled_image(&out, &manifest_a, &layout);
    let out = tmp.path().join("b1");
    pull(&host, "tok/library/test:b", &out, &[]).unwrap();
    check_pulled_image(&out, &manifest_b, &layout);

    // Tokens are cached per (realm, service, scope, user) until 30 s before expires_in (300 s
    // here). Both images are in one repository, so every upstream request has the one scope
    // `repository:library/test:pull`: one token request is expected for all of it. The bound of
    // 2 leaves room for one extra request; it is still far below one per upstream request
    // (two manifests and seven blobs here).
    let upstream: Vec<_> = reg
        .access_log()
        .into_iter()
        .filter(|l| l.by_proxy())
        .collect();
    let authorized = upstream.iter().filter(|l| l.status == 200).count();
    assert!(authorized >= 9, "{upstream:?}");
    let tokens = token.proxy_requests();
    assert!(
        !tokens.is_empty() && tokens.len() <= 2,
        "{} token requests for {authorized} upstream requests: {tokens:?}",
        tokens.len()
    );
    for t in &tokens {
        assert_eq!(t.status, 200);
        assert_eq!(t.user.as_deref(), Some("bob"));
        assert_eq!(t.scopes, vec!["repository:library/test:pull".to_string()]);
    }
    // With a cached token, requests carry it at once: few upstream 401s.
    let challenged = upstream.iter().filter(|l| l.status == 401).count();
    assert!(challenged <= 2, "{upstream:?}");

    // Without credentials the token grants nothing and the pull fails.
    let c = client();
    let r = c
        .get(proxy.url("/v2/anon/library/test/manifests/a"))
        .send()
        .await
        .unwrap();
    assert!(!r.status().is_success(), "{}", r.status());
    assert!(
        token
            .proxy_requests()
            .iter()
            .any(|t| t.user.is_none() && t.status == 200),
        "{:?}",
        token.proxy_requests()
    );
    // A refused token request (wrong password) is 502 UNAVAILABLE.
    let r = c
        .get(proxy.url("/v2/bad/library/test/manifests/a"))
        .send()
        .await
        .unwrap();
    expect_registry_error(r, 502, "UNAVAILABLE").await;
    assert!(
        token
            .proxy_requests()
            .iter()
            .any(|t| t.user.as_deref() == Some("bob") && t.status == 401)
    );
}

#[tokio::test]
async fn token_is_fetched_again_once_it_nears_expiry() {
    if !tools(&["docker-registry", "skopeo", "umoci", "openssl"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // expires_in 32 s: the proxy keeps the token until 30 s before that, i.e. for 2 s.
    let auth = Auth::Token {
        user: "bob".into(),
        pass: "b0b-pw".into(),
        expires_in: 32,
    };
    let reg = Registry::start(&tmp.path().join("reg"), auth);
    let token = reg.token.as_ref().unwrap();
    let layout = Layout::init(&tmp.path().join("oci"));
    layout.add_image("a", "amd64", &small_layers(1, 151));
    layout.add_image("b", "amd64", &small_layers(1, 152));
    reg.push(&layout, "a", "library/test:a");
    reg.push(&layout, "b", "library/test:b");
    let proxy = Proxy::start(&docker_remote(
        "tok",
        &reg.url(),
        "    username: bob\n    password: b0b-pw\n",
    ));
    let host = proxy.addr.to_string();

    pull(&host, "tok/library/test:a", &tmp.path().join("a"), &[]).unwrap();
    let first = token.proxy_requests().len();
    assert!(first >= 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let out = tmp.path().join("b");
    pull(&host, "tok/library/test:b", &out, &[]).unwrap();
    check_pulled_image(&out, &reg.manifest("library/test:b"), &layout);
    let tokens = token.proxy_requests();
    assert!(
        tokens.len() > first,
        "no new token after expiry: {tokens:?}"
    );
    assert!(tokens.iter().all(|t| t.status == 200));
}

/// The token server's key ID depends on this encoder (RFC 4648 test vectors, unpadded).
#[test]
fn base32_matches_rfc4648() {
    use common::token::base32;
    for (input, want) in [
        ("", ""),
        ("f", "MY"),
        ("fo", "MZXQ"),
        ("foo", "MZXW6"),
        ("foob", "MZXW6YQ"),
        ("fooba", "MZXW6YTB"),
        ("foobar", "MZXW6YTBOI"),
    ] {
        assert_eq!(base32(input.as_bytes()), want, "{input:?}");
    }
}
