//! End-to-end tests of upstream redirects and the credentials that go with them: a challenge
//! is answered only for base_url's origin, and a redirect may not lead to an internal address
//! unless the remote allows that host.

mod common;

use base64::Engine;
use common::{Proxy, TestUpstream, client, status_and_code};

const USER: &str = "alice";
const PASS: &str = "s3cret-pw";

/// The Basic `Authorization` value of the remote's credentials.
fn basic() -> String {
    let raw = format!("{USER}:{PASS}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Fails unless every `Authorization` header that `up` received is `allowed`.
fn assert_no_credentials(up: &TestUpstream, what: &str) {
    let got = up.authorizations();
    assert!(got.is_empty(), "{what} received credentials: {got:?}");
}

/// A generic remote `name` in front of `up`'s `/files`, with `extra` lines.
fn generic(name: &str, up: &TestUpstream, extra: &str) -> String {
    format!(
        "  {name}:\n    type: remote\n    package: generic\n    base_url: {}/files\n{extra}",
        up.url()
    )
}

fn credentials() -> String {
    format!("    username: {USER}\n    password: {PASS}\n")
}

/// `allowed_redirect_hosts` of a remote, as config lines.
fn allowed(hosts: &[&str]) -> String {
    format!("    allowed_redirect_hosts: {hosts:?}\n")
}

/// GETs `path` of remote `remote` and expects `502 redirect_refused` with a message that names
/// no address.
async fn expect_refused(proxy: &Proxy, remote: &str, path: &str) {
    let r = client()
        .get(proxy.remote(remote, path))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502, "{path}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "redirect_refused", "{path}: {body}");
    assert_eq!(
        body["message"], "the upstream redirected to an address this remote may not reach",
        "{path}: {body}"
    );
    assert!(!body.to_string().contains("127.0.0"), "{body}");
}

#[tokio::test]
async fn a_challenge_from_a_redirect_target_is_not_answered() {
    let base = TestUpstream::start();
    let cdn = TestUpstream::start_at([127, 0, 0, 2]);
    let realm = TestUpstream::start_at([127, 0, 0, 3]);
    realm.put("steal", &br#"{"token":"stolen"}"#[..]);
    base.put_redirect(
        "files/tool.tar.gz",
        &format!("{}/cdn/tool.tar.gz", cdn.url()),
    );
    let challenge = format!(r#"Bearer realm="{}/steal",service="x""#, realm.url());
    cdn.put_reply("cdn/tool.tar.gz", 401, &[("www-authenticate", &challenge)]);
    let proxy = Proxy::start(&generic(
        "gen",
        &base,
        &(credentials() + &allowed(&["127.0.0.2"])),
    ));
    let c = client();

    let r = c
        .get(proxy.remote("gen", "tool.tar.gz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_code(r).await,
        (502, "upstream_error".to_string())
    );
    assert_eq!(realm.total_requests(), 0, "{:?}", realm.requests());
    assert_no_credentials(&realm, "the realm");
    assert_no_credentials(&cdn, "the redirect target");
    // base_url's own host got the remote's Basic credentials, as it always does.
    assert!(
        base.authorizations().iter().all(|(_, a)| *a == basic()),
        "{:?}",
        base.authorizations()
    );
    assert!(proxy.stored("gen/tool.tar.gz").await.is_none());
}

#[tokio::test]
async fn a_docker_blob_redirected_to_a_challenging_cdn_gets_no_credentials() {
    let base = TestUpstream::start();
    let auth = TestUpstream::start_at([127, 0, 0, 4]);
    let cdn = TestUpstream::start_at([127, 0, 0, 2]);
    let realm = TestUpstream::start_at([127, 0, 0, 3]);
    // The registry's own challenge names a token service on another host: that one is
    // answered, with the credentials.
    auth.put("token", &br#"{"token":"registry-token"}"#[..]);
    realm.put("steal", &br#"{"token":"stolen"}"#[..]);
    let digests: Vec<String> = ["ab", "cd"]
        .iter()
        .map(|h| format!("sha256:{}", h.repeat(32)))
        .collect();
    for (i, digest) in digests.iter().enumerate() {
        base.put_file(
            &format!("v2/team/app/blobs/{digest}"),
            common::UpFile {
                body: Default::default(),
                etag: None,
                mode: common::Mode::Challenge {
                    www_authenticate: format!(
                        r#"Bearer realm="{}/token",service="registry",scope="repository:team/app:pull""#,
                        auth.url()
                    ),
                    then: Box::new(common::Mode::Reply {
                        status: 307,
                        headers: vec![("location".into(), format!("{}/blob{i}", cdn.url()))],
                    }),
                },
            },
        );
    }
    let steal = format!(r#"Bearer realm="{}/steal",service="cdn""#, realm.url());
    for i in 0..2 {
        cdn.put_reply(&format!("blob{i}"), 401, &[("www-authenticate", &steal)]);
    }
    let proxy = Proxy::start(&format!(
        "  hub:\n    type: remote\n    package: docker\n    base_url: {}\n{}{}",
        base.url(),
        credentials(),
        allowed(&["127.0.0.2"])
    ));
    let c = client();

    // The first blob meets the registry's challenge, the second goes with the cached token
    // at once: either way the CDN's own challenge is an upstream error.
    for digest in &digests {
        let r = c
            .get(proxy.url(&format!("/v2/hub/team/app/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "{digest}");
        assert_eq!(
            common::header(&r, "docker-distribution-api-version"),
            "registry/2.0"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    }

    assert_eq!(
        auth.authorizations(),
        vec![("GET /token".to_string(), basic())],
        "the registry's token service gets the credentials once"
    );
    assert_eq!(realm.total_requests(), 0, "{:?}", realm.requests());
    assert_no_credentials(&cdn, "the CDN");
    assert!(
        base.authorizations()
            .iter()
            .all(|(_, a)| a == "Bearer registry-token"),
        "{:?}",
        base.authorizations()
    );
    assert!(proxy.stored_keys("hub/").await.is_empty());
}

#[tokio::test]
async fn a_redirect_to_an_internal_address_is_refused() {
    let base = TestUpstream::start();
    let inner = TestUpstream::start_at([127, 0, 0, 2]);
    let same_host = TestUpstream::start();
    inner.put("inner/a.bin", &b"internal"[..]);
    same_host.put("other/c.bin", &b"same host, other port"[..]);
    let inner_port = inner.addr.port();
    base.put_redirect("files/a.bin", &format!("{}/inner/a.bin", inner.url()));
    base.put_redirect(
        "files/mapped.bin",
        &format!("http://[::ffff:127.0.0.2]:{inner_port}/inner/a.bin"),
    );
    base.put_redirect(
        "files/metadata",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    );
    base.put_redirect("files/c.bin", &format!("{}/other/c.bin", same_host.url()));
    let proxy = Proxy::start(&generic("gen", &base, "    connect_timeout: 2\n"));

    for path in ["a.bin", "mapped.bin", "metadata"] {
        expect_refused(&proxy, "gen", path).await;
        // Refusals are not cached: asking again asks upstream again.
        expect_refused(&proxy, "gen", path).await;
        assert!(
            proxy.stored(&format!("gen/{path}")).await.is_none(),
            "{path}"
        );
    }
    assert_eq!(base.count("GET", "files/a.bin"), 2);
    assert_eq!(inner.total_requests(), 0, "{:?}", inner.requests());

    // base_url's host may be internal, and so may a redirect to it on another port.
    let r = client()
        .get(proxy.remote("gen", "c.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), &b"same host, other port"[..]);

    // Under /v2/ the refusal is in the registry format.
    let digest = format!("sha256:{}", "ef".repeat(32));
    base.put_redirect(
        &format!("v2/team/app/blobs/{digest}"),
        &format!("{}/inner/blob", inner.url()),
    );
    let proxy = Proxy::start(&format!(
        "  hub:\n    type: remote\n    package: docker\n    base_url: {}\n",
        base.url()
    ));
    let r = client()
        .get(proxy.url(&format!("/v2/hub/team/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        common::header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    assert_eq!(
        body["errors"][0]["detail"]["error"], "redirect_refused",
        "{body}"
    );
    assert_eq!(inner.total_requests(), 0, "{:?}", inner.requests());
    assert!(proxy.stored_keys("hub/").await.is_empty());
}

#[tokio::test]
async fn a_redirect_to_a_name_of_an_internal_address_is_refused() {
    // `localhost` is 127.0.0.1, base_url's own address; but the name is not base_url's host,
    // so it may only lead to public addresses, whatever it resolves to when connected.
    let base = TestUpstream::start();
    let inner = TestUpstream::start();
    inner.put("inner/a.bin", &b"internal"[..]);
    base.put_redirect(
        "files/a.bin",
        &format!("http://localhost:{}/inner/a.bin", inner.addr.port()),
    );
    let proxy = Proxy::start(&generic("gen", &base, ""));

    expect_refused(&proxy, "gen", "a.bin").await;
    assert_eq!(inner.total_requests(), 0, "{:?}", inner.requests());
    assert!(proxy.stored("gen/a.bin").await.is_none());
}

#[tokio::test]
async fn allowed_redirect_hosts_may_be_internal() {
    let base = TestUpstream::start();
    let inner = TestUpstream::start_at([127, 0, 0, 2]);
    let named = TestUpstream::start();
    inner.put("inner/a.bin", &b"from 127.0.0.2"[..]);
    named.put("named/b.bin", &b"from localhost"[..]);
    base.put_redirect("files/a.bin", &format!("{}/inner/a.bin", inner.url()));
    base.put_redirect(
        "files/b.bin",
        &format!("http://localhost:{}/named/b.bin", named.addr.port()),
    );
    let proxy = Proxy::start(&generic(
        "gen",
        &base,
        &allowed(&["127.0.0.2", "localhost"]),
    ));
    let c = client();

    for (path, body) in [("a.bin", "from 127.0.0.2"), ("b.bin", "from localhost")] {
        let url = proxy.remote("gen", path);
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(common::header(&r, "x-cache"), "MISS");
        assert_eq!(r.bytes().await.unwrap(), body.as_bytes());
        common::wait_for_hit(&c, &url).await;
        // Stored under the requested path, not the redirect target.
        assert_eq!(
            proxy.stored(&format!("gen/{path}")).await.unwrap(),
            body.as_bytes()
        );
    }
    assert_eq!(inner.count("GET", "inner/a.bin"), 1);
    assert_eq!(named.count("GET", "named/b.bin"), 1);
}

#[tokio::test]
async fn a_failed_redirect_is_logged_without_the_target_query() {
    let up = TestUpstream::start();
    // A signed link on base_url's host, to a port where nothing listens.
    let dead = common::free_port();
    let target = format!("http://127.0.0.1:{dead}/bucket/obj?X-Amz-Signature=SIGNED-SECRET-42");
    up.put_redirect("files/signed.bin", &target);
    let proxy = Proxy::start(&generic("gen", &up, &allowed(&["127.0.0.1"])));
    let r = client()
        .get(proxy.remote("gen", "signed.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_code(r).await,
        (504, "upstream_unreachable".into())
    );
    assert!(proxy.log_shows("Connection refused"));
    let log = proxy.log.lock().unwrap().clone();
    assert!(
        !log.contains("SIGNED-SECRET-42"),
        "the signature is in the log"
    );
}
