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
    let proxy = Proxy::start(&generic("gen", &base, &credentials()));
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
        "  hub:\n    type: remote\n    package: docker\n    base_url: {}\n{}",
        base.url(),
        credentials()
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
