//! End-to-end tests of the Docker/OCI pull-through registry: the built binary in front of a real
//! distribution registry (anonymous, htpasswd or token auth), images built with umoci and pulled
//! with skopeo, and a `TestUpstream` posing as a registry where requests must be counted or the
//! upstream must misbehave.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::registry::{Auth, LayerFile, Layout, Registry, blobs_of, digest_of, pull, skopeo};
use common::{Mode, Proxy, TestUpstream, client, have_tool, sha256_hex, test_bytes};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Checks every tool (so CI reports all missing ones) and says whether the test can run.
fn tools(list: &[&str]) -> bool {
    let mut ok = true;
    for t in list {
        ok &= have_tool(t);
    }
    ok
}

fn docker_remote(name: &str, base_url: &str, extra: &str) -> String {
    format!("  {name}:\n    type: remote\n    package: docker\n    base_url: {base_url}\n{extra}")
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn file(name: &str, data: impl Into<Vec<u8>>) -> LayerFile {
    (name.to_string(), data.into())
}

/// Asserts a registry error body `{"errors":[{"code","message","detail"}]}` with `code`.
async fn expect_error(r: reqwest::Response, status: u16, code: &str) {
    let url = r.url().to_string();
    assert_eq!(r.status(), status, "{url}");
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0",
        "{url}"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    let e = &body["errors"][0];
    assert_eq!(e["code"], code, "{url}: {body}");
    assert!(e["message"].is_string(), "{url}: {body}");
    assert!(e.get("detail").is_some(), "{url}: {body}");
}

/// Polls HEAD `url` until the proxy answers it from its cache.
async fn wait_for_hit(c: &reqwest::Client, url: &str) {
    for _ in 0..200 {
        let r = c.head(url).send().await.unwrap();
        if header(&r, "x-cache") == "HIT" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{url} never became a hit");
}

/// A `skopeo copy ... dir:OUT` result holds `manifest` and each blob it names, byte for byte
/// as in `layout`.
fn check_pulled_image(out: &Path, manifest: &[u8], layout: &Layout) {
    assert_eq!(
        std::fs::read(out.join("manifest.json")).unwrap(),
        manifest,
        "manifest bytes differ from upstream"
    );
    for d in blobs_of(manifest) {
        let got = std::fs::read(out.join(d.trim_start_matches("sha256:"))).unwrap();
        assert_eq!(digest_of(&got), d);
        assert!(got == layout.blob(&d), "blob {d} differs from the layout");
    }
}

/// Layers of `n` small files each (distinct per `seed`).
fn small_layers(n: usize, seed: u64) -> Vec<Vec<LayerFile>> {
    (0..n)
        .map(|i| {
            vec![file(
                &format!("data/f{seed}-{i}.bin"),
                test_bytes(20_000 + i * 1000, seed * 100 + i as u64).to_vec(),
            )]
        })
        .collect()
}

#[tokio::test]
async fn cold_pull_then_warm_pull_with_upstream_stopped() {
    if !tools(&["docker-registry", "skopeo", "umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut reg = Registry::start(&tmp.path().join("reg"), Auth::None);
    let layout = Layout::init(&tmp.path().join("oci"));
    // Random bytes: gzip cannot shrink them, so the layer blob stays over 50 MiB.
    let big = test_bytes(50 * 1024 * 1024, 11).to_vec();
    layout.add_image(
        "t1",
        "amd64",
        &[
            vec![file("opt/big.bin", big)],
            vec![file("etc/hello.txt", "hello\n")],
        ],
    );
    let blobs = layout.image_blobs("t1");
    assert_eq!(blobs.len(), 3);
    let largest = blobs
        .iter()
        .map(|d| std::fs::metadata(layout.blob_path(d)).unwrap().len())
        .max()
        .unwrap();
    assert!(
        largest >= 50 * 1024 * 1024,
        "largest blob is {largest} bytes"
    );
    reg.push(&layout, "t1", "library/test:t1");
    let upstream_manifest = reg.manifest("library/test:t1");
    let manifest_digest = layout.manifest_digest("t1");
    assert_eq!(digest_of(&upstream_manifest), manifest_digest);

    let proxy = Proxy::start(&docker_remote("hub", &reg.url(), ""));
    let c = client();
    let host = proxy.addr.to_string();

    let r = c.get(proxy.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_eq!(r.text().await.unwrap(), "{}");

    // HEAD of an uncached tag: answered from an upstream HEAD; the tag is not downloaded, the
    // manifest is fetched once by digest in the background (as the client is about to).
    let r = c
        .head(proxy.url("/v2/hub/library/test/manifests/t1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), manifest_digest);
    assert_eq!(
        header(&r, "content-length"),
        upstream_manifest.len().to_string()
    );
    assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
    assert_eq!(
        reg.proxy_count("HEAD", "/v2/library/test/manifests/t1", Some(200)),
        1
    );
    assert_eq!(
        reg.proxy_count("GET", "/v2/library/test/manifests/t1", None),
        0
    );
    wait_for_hit(
        &c,
        &proxy.url(&format!("/v2/hub/library/test/manifests/{manifest_digest}")),
    )
    .await;

    let out = tmp.path().join("pull-cold");
    pull(&host, "hub/library/test:t1", &out, &[]).unwrap();
    check_pulled_image(&out, &upstream_manifest, &layout);

    // Fills commit just after their last byte: wait until everything is a hit.
    let manifest_url = proxy.url("/v2/hub/library/test/manifests/t1");
    let blob_url = |d: &str| proxy.url(&format!("/v2/hub/library/test/blobs/{d}"));
    wait_for_hit(&c, &manifest_url).await;
    for d in &blobs {
        wait_for_hit(&c, &blob_url(d)).await;
    }
    // One upstream GET per blob and for the manifest, whatever skopeo asked.
    for d in &blobs {
        assert_eq!(
            reg.proxy_count("GET", &format!("/v2/library/test/blobs/{d}"), Some(200)),
            1,
            "{d}"
        );
    }
    // The manifest itself: once, by digest (after the HEAD); the tag was then a hit.
    assert_eq!(
        reg.proxy_count("GET", "/v2/library/test/manifests/t1", None),
        0
    );
    assert_eq!(
        reg.proxy_count(
            "GET",
            &format!("/v2/library/test/manifests/{manifest_digest}"),
            None
        ),
        1
    );

    reg.stop();
    let out = tmp.path().join("pull-warm");
    pull(&host, "hub/library/test:t1", &out, &[]).unwrap();
    check_pulled_image(&out, &upstream_manifest, &layout);

    let r = c.get(&manifest_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "HIT");
    assert_eq!(header(&r, "docker-content-digest"), manifest_digest);
    assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
    assert_eq!(
        header(&r, "content-length"),
        upstream_manifest.len().to_string()
    );
    assert_eq!(r.bytes().await.unwrap(), upstream_manifest);
    let r = c
        .get(proxy.url(&format!("/v2/hub/library/test/manifests/{manifest_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-cache"), "HIT");
    assert_eq!(r.bytes().await.unwrap(), upstream_manifest);
    for d in &blobs {
        let r = c.get(blob_url(d)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-cache"), "HIT");
        assert_eq!(header(&r, "docker-content-digest"), *d);
        assert_eq!(digest_of(&r.bytes().await.unwrap()), *d);
    }

    // The documented layout: blobs once per remote, tag manifests and their digest alias.
    for d in &blobs {
        let key = format!("hub/blobs/sha256/{}", d.trim_start_matches("sha256:"));
        assert!(proxy.stored(&key).await.unwrap() == layout.blob(d), "{d}");
    }
    let by_tag = proxy.stored("hub/images/library/test/_manifests/t1").await;
    assert_eq!(by_tag.unwrap(), upstream_manifest);
    let by_digest = format!("hub/images/library/test/_manifests/{manifest_digest}");
    assert_eq!(proxy.stored(&by_digest).await.unwrap(), upstream_manifest);
    assert!(proxy.temp_files().is_empty());
}

#[tokio::test]
async fn multi_arch_index_by_tag_and_digest_with_upstream_stopped() {
    if !tools(&["docker-registry", "skopeo", "umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut reg = Registry::start(&tmp.path().join("reg"), Auth::None);
    let layout = Layout::init(&tmp.path().join("oci"));
    let amd = layout.add_image("amd", "amd64", &small_layers(2, 21));
    let arm = layout.add_image("arm", "arm64", &small_layers(2, 22));
    let index_digest = layout.add_index("multi", &[("amd", "amd64"), ("arm", "arm64")]);
    reg.push(&layout, "multi", "library/multi:v1");
    let upstream_index = reg.manifest("library/multi:v1");
    assert_eq!(digest_of(&upstream_index), index_digest);
    assert_eq!(
        reg.manifest(&format!("library/multi@{arm}")),
        layout.manifest("arm")
    );

    let proxy = Proxy::start(&docker_remote("hub", &reg.url(), ""));
    let c = client();
    let host = proxy.addr.to_string();

    let check_all = |out: &Path| {
        assert_eq!(
            std::fs::read(out.join("manifest.json")).unwrap(),
            upstream_index
        );
        for (tag, digest) in [("amd", &amd), ("arm", &arm)] {
            let hex = digest.trim_start_matches("sha256:");
            let child = std::fs::read(out.join(format!("{hex}.manifest.json"))).unwrap();
            assert_eq!(child, layout.manifest(tag));
            for d in layout.image_blobs(tag) {
                let got = std::fs::read(out.join(d.trim_start_matches("sha256:"))).unwrap();
                assert_eq!(digest_of(&got), d);
            }
        }
    };
    let out = tmp.path().join("cold");
    pull(&host, "hub/library/multi:v1", &out, &["--all"]).unwrap();
    check_all(&out);

    let url = |tail: &str| proxy.url(&format!("/v2/hub/library/multi/{tail}"));
    wait_for_hit(&c, &url("manifests/v1")).await;
    for tag in ["amd", "arm"] {
        wait_for_hit(
            &c,
            &url(&format!("manifests/{}", layout.manifest_digest(tag))),
        )
        .await;
        for d in layout.image_blobs(tag) {
            wait_for_hit(&c, &url(&format!("blobs/{d}"))).await;
        }
    }
    reg.stop();

    let out = tmp.path().join("warm-tag");
    pull(&host, "hub/library/multi:v1", &out, &["--all"]).unwrap();
    check_all(&out);
    let out = tmp.path().join("warm-digest");
    pull(
        &host,
        &format!("hub/library/multi@{index_digest}"),
        &out,
        &["--all"],
    )
    .unwrap();
    check_all(&out);
    let out = tmp.path().join("warm-child");
    pull(&host, &format!("hub/library/multi@{arm}"), &out, &[]).unwrap();
    check_pulled_image(&out, &layout.manifest("arm"), &layout);
    let out = tmp.path().join("warm-platform");
    pull(
        &host,
        "hub/library/multi:v1",
        &out,
        &["--override-arch=arm64"],
    )
    .unwrap();
    check_pulled_image(&out, &layout.manifest("arm"), &layout);

    for (tail, digest, ct) in [
        ("manifests/v1".to_string(), &index_digest, OCI_INDEX),
        (
            format!("manifests/{index_digest}"),
            &index_digest,
            OCI_INDEX,
        ),
        (format!("manifests/{amd}"), &amd, OCI_MANIFEST),
    ] {
        let r = c.get(url(&tail)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{tail}");
        assert_eq!(header(&r, "x-cache"), "HIT", "{tail}");
        assert_eq!(header(&r, "docker-content-digest"), *digest, "{tail}");
        assert_eq!(header(&r, "content-type"), ct, "{tail}");
    }
}

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
    expect_error(r, 502, "UNAVAILABLE").await;
    assert!(
        token
            .proxy_requests()
            .iter()
            .any(|t| t.user.as_deref() == Some("bob") && t.status == 401)
    );
}

#[tokio::test]
async fn concurrent_cold_pulls_fetch_each_blob_once() {
    if !tools(&["docker-registry", "skopeo", "umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), Auth::None);
    let layout = Layout::init(&tmp.path().join("oci"));
    let mut layers = vec![vec![file(
        "big.bin",
        test_bytes(16 * 1024 * 1024, 51).to_vec(),
    )]];
    layers.extend(small_layers(2, 52));
    layout.add_image("t1", "amd64", &layers);
    reg.push(&layout, "t1", "library/test:t1");
    let upstream_manifest = reg.manifest("library/test:t1");
    let blobs = layout.image_blobs("t1");

    let proxy = Proxy::start(&docker_remote("hub", &reg.url(), ""));
    let host = proxy.addr.to_string();
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let out = tmp.path().join(format!("pull-{i}"));
                let host = host.clone();
                s.spawn(move || pull(&host, "hub/library/test:t1", &out, &[]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in results.into_iter().enumerate() {
        r.unwrap_or_else(|e| panic!("pull {i}: {e}"));
        check_pulled_image(
            &tmp.path().join(format!("pull-{i}")),
            &upstream_manifest,
            &layout,
        );
    }
    // How many requests joined a fill in flight (timing-dependent, so only reported).
    let metrics = client()
        .get(proxy.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let coalesced: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("artifactapi_coalesced_waiters_total"))
        .collect();
    eprintln!("coalesced waiters: {coalesced:?}");
    let log = reg.access_log();
    let proxy_lines: Vec<_> = log.iter().filter(|l| l.by_proxy()).collect();
    for d in &blobs {
        let uri = format!("/v2/library/test/blobs/{d}");
        let n = proxy_lines
            .iter()
            .filter(|l| l.method == "GET" && l.uri == uri)
            .count();
        assert_eq!(n, 1, "upstream GETs of {d}: {proxy_lines:?}");
    }
    let n = proxy_lines
        .iter()
        .filter(|l| l.method == "GET" && l.uri == "/v2/library/test/manifests/t1")
        .count();
    assert_eq!(n, 1, "{proxy_lines:?}");
}

#[tokio::test]
async fn retagged_manifest_is_served_until_index_ttl_then_revalidated_with_head() {
    if !tools(&["docker-registry", "skopeo", "umoci"]) {
        return;
    }
    let ttl = Duration::from_secs(5);
    let tmp = tempfile::tempdir().unwrap();
    let mut reg = Registry::start(&tmp.path().join("reg"), Auth::None);
    let layout = Layout::init(&tmp.path().join("oci"));
    let d1 = layout.add_image("one", "amd64", &small_layers(1, 61));
    let d2 = layout.add_image("two", "amd64", &small_layers(1, 62));
    reg.push(&layout, "one", "library/test:t1");
    reg.push(&layout, "two", "library/test:t2");

    let proxy = Proxy::start(&docker_remote(
        "hub",
        &reg.url(),
        &format!("    cache:\n      index_ttl: {}\n", ttl.as_secs()),
    ));
    let c = client();
    let url = proxy.url("/v2/hub/library/test/manifests/t1");
    let upstream_uri = "/v2/library/test/manifests/t1";

    let t0 = Instant::now();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(header(&r, "docker-content-digest"), d1);
    r.bytes().await.unwrap();
    // A manifest miss is answered after its commit, so the record expires by `ttl` from here.
    let stored0 = Instant::now();

    // Push image "two" to the same tag: a manifest PUT, as the last step of any push.
    let r = c
        .put(format!("{}{upstream_uri}", reg.url()))
        .header("content-type", OCI_MANIFEST)
        .body(layout.manifest("two"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let r = c.get(&url).send().await.unwrap();
    assert!(
        t0.elapsed() < ttl,
        "the machine is too slow for a {ttl:?} TTL"
    );
    assert_eq!(header(&r, "x-cache"), "HIT");
    assert_eq!(
        header(&r, "docker-content-digest"),
        d1,
        "old digest within the TTL"
    );
    assert_eq!(r.bytes().await.unwrap(), layout.manifest("one"));
    assert_eq!(
        digest_of(&reg.manifest("library/test:t1")),
        d2,
        "upstream has moved on"
    );

    tokio::time::sleep(
        (stored0 + ttl + Duration::from_millis(300)).saturating_duration_since(Instant::now()),
    )
    .await;
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-cache"),
        "MISS",
        "changed digest: fetched again"
    );
    assert_eq!(header(&r, "docker-content-digest"), d2);
    assert_eq!(r.bytes().await.unwrap(), layout.manifest("two"));
    wait_for_hit(&c, &url).await;
    let stored1 = Instant::now();
    // The changed tag was found with a HEAD, then fetched with a GET.
    assert_eq!(reg.proxy_count("HEAD", upstream_uri, Some(200)), 1);
    assert_eq!(reg.proxy_count("GET", upstream_uri, Some(200)), 2);

    // Unchanged after expiry: a HEAD renews it, without a GET.
    tokio::time::sleep(
        (stored1 + ttl + Duration::from_millis(300)).saturating_duration_since(Instant::now()),
    )
    .await;
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "REVALIDATED");
    assert_eq!(header(&r, "docker-content-digest"), d2);
    assert_eq!(r.bytes().await.unwrap(), layout.manifest("two"));
    let renewed = Instant::now();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "HIT", "renewed for another TTL");
    assert_eq!(reg.proxy_count("HEAD", upstream_uri, Some(200)), 2);
    assert_eq!(reg.proxy_count("GET", upstream_uri, None), 2);

    // A pull through the proxy now gets image "two".
    let out = tmp.path().join("pull");
    pull(&proxy.addr.to_string(), "hub/library/test:t1", &out, &[]).unwrap();
    check_pulled_image(&out, &layout.manifest("two"), &layout);

    // Expired and upstream down: the stale copy.
    reg.stop();
    tokio::time::sleep(
        (renewed + ttl + Duration::from_millis(300)).saturating_duration_since(Instant::now()),
    )
    .await;
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "STALE");
    assert_eq!(header(&r, "docker-content-digest"), d2);
    assert_eq!(r.bytes().await.unwrap(), layout.manifest("two"));
}

#[tokio::test]
async fn digest_mismatch_is_never_served_whole_nor_stored() {
    let up = TestUpstream::start();
    // A small body and one streamed in pieces over several storage write batches.
    let small = test_bytes(1000, 70);
    let small_path = format!(
        "v2/bad/img/blobs/sha256:{}",
        sha256_hex(&test_bytes(1000, 71))
    );
    up.put(&small_path, small.clone());
    let big = test_bytes(3 * 1024 * 1024, 72);
    let big_path = format!(
        "v2/bad/img/blobs/sha256:{}",
        sha256_hex(&test_bytes(3 * 1024 * 1024, 73))
    );
    up.put(&big_path, big.clone());
    up.set_mode(
        &big_path,
        Mode::Slow {
            chunk: 128 * 1024,
            delay: Duration::from_millis(5),
        },
    );
    // A manifest by digest whose bytes are something else.
    let manifest_path = format!(
        "v2/bad/img/manifests/sha256:{}",
        sha256_hex(b"{\"schemaVersion\":2}")
    );
    let wrong_manifest = &b"{\"schemaVersion\":2,\"layers\":[]}"[..];
    up.put(&manifest_path, wrong_manifest);
    // A right blob whose connection drops half-way.
    let cut = test_bytes(2 * 1024 * 1024, 74);
    let cut_path = format!("v2/bad/img/blobs/{}", digest_of(&cut));
    up.put(&cut_path, cut.clone());
    up.set_mode(&cut_path, Mode::Cut { after: 1024 * 1024 });

    let proxy = Proxy::start(&docker_remote("fake", &up.url(), ""));
    let c = client();
    for (path, len) in [
        (&small_path, small.len()),
        (&big_path, big.len()),
        (&manifest_path, wrong_manifest.len()),
        (&cut_path, cut.len()),
    ] {
        for attempt in 1..=2 {
            let sent = c
                .get(proxy.url(&format!("/{}", path.replacen("v2/", "v2/fake/", 1))))
                .send()
                .await;
            match sent {
                // The proxy answered 200 but the fill failed before its headers left the
                // write buffer: the connection is closed without a response.
                Err(e) => assert!(e.is_request(), "{path}: {e:?}"),
                Ok(r) if r.status() == 200 => {
                    // An aborted body is an error; a short one is also acceptable.
                    if let Ok(b) = r.bytes().await {
                        assert!(
                            b.len() < len,
                            "{path}: a complete body ({} bytes) with the wrong digest",
                            b.len()
                        );
                    }
                }
                Ok(r) => expect_error(r, 502, "UNAVAILABLE").await,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(up.count("GET", path), attempt, "{path}: nothing cached");
        }
    }
    let stored = proxy.stored_keys("fake/").await;
    assert!(stored.is_empty(), "{stored:?}");
    assert!(proxy.temp_files().is_empty(), "{:?}", proxy.temp_files());
}

#[tokio::test]
async fn include_patterns_and_registry_errors() {
    let up = TestUpstream::start();
    let layer = test_bytes(5000, 80);
    let layer_digest = digest_of(&layer);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": layer_digest, "size": 5000},
        "layers": [],
    }))
    .unwrap();
    up.put("v2/library/allowed/manifests/v1", manifest.clone());
    up.put(
        &format!("v2/library/allowed/blobs/{layer_digest}"),
        layer.clone(),
    );
    up.put(
        "v2/library/allowed/tags/list",
        &br#"{"name":"library/allowed","tags":["v1"]}"#[..],
    );
    up.put("v2/library/other/manifests/v1", manifest.clone());
    let remotes = [
        docker_remote(
            "dock",
            &up.url(),
            "    include_patterns:\n      - '^library/allowed'\n",
        ),
        format!(
            "  gen:\n    type: remote\n    package: generic\n    base_url: {}/files\n",
            up.url()
        ),
    ]
    .concat();
    let proxy = Proxy::start(&remotes);
    let c = client();
    let v2 = |p: &str| proxy.url(&format!("/v2/{p}"));

    let r = c
        .get(v2("dock/library/allowed/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), manifest);
    // This fake upstream sends no Docker-Content-Digest; once stored, the proxy knows it.
    wait_for_hit(&c, &v2("dock/library/allowed/manifests/v1")).await;
    let r = c
        .get(v2("dock/library/allowed/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest"), digest_of(&manifest));
    assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let r = c
        .get(v2(&format!("dock/library/allowed/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), layer_digest);
    assert_eq!(r.bytes().await.unwrap(), layer);
    let r = c
        .get(v2("dock/library/allowed/tags/list?n=10"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tags: serde_json::Value = r.json().await.unwrap();
    assert_eq!(tags["tags"][0], "v1");
    let before = up.total_requests();

    // Denied by include_patterns, without asking upstream.
    let r = c
        .get(v2("dock/library/other/manifests/v1"))
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "DENIED").await;
    let r = c
        .get(v2(&format!("dock/library/other/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "DENIED").await;
    let r = c
        .head(v2("dock/library/other/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Not a docker remote; not a remote at all (and no mirror configured).
    let r = c.get(v2("gen/x/manifests/latest")).send().await.unwrap();
    expect_error(r, 400, "UNSUPPORTED").await;
    let r = c
        .get(v2("nosuch/img/manifests/latest"))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "NAME_UNKNOWN").await;

    // Read-only.
    let r = c
        .put(v2("dock/library/allowed/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "UNSUPPORTED").await;
    let r = c
        .post(v2("dock/library/allowed/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "UNSUPPORTED").await;
    let r = c
        .delete(v2("dock/library/allowed/manifests/v1"))
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "UNSUPPORTED").await;

    // Invalid names, tags and digests.
    for (path, code) in [
        ("dock/library/allowed/manifests/-bad", "TAG_INVALID"),
        ("dock/library/allowed/manifests/.bad", "TAG_INVALID"),
        ("dock/library/allowed/blobs/sha256:xyz", "DIGEST_INVALID"),
        (
            "dock/library/allowed/manifests/sha256:ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789",
            "DIGEST_INVALID",
        ),
        ("dock/library/allowed/blobs/md5:abc", "DIGEST_INVALID"),
        ("dock/library/Allowed/manifests/v1", "NAME_INVALID"),
    ] {
        let r = c.get(v2(path)).send().await.unwrap();
        expect_error(r, 400, code).await;
    }
    assert_eq!(
        up.total_requests(),
        before,
        "no refused request reached upstream"
    );

    // Upstream 404s.
    let r = c
        .get(v2("dock/library/allowed/manifests/missing"))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    let missing = format!("sha256:{}", "0".repeat(64));
    let r = c
        .get(v2(&format!("dock/library/allowed/blobs/{missing}")))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "BLOB_UNKNOWN").await;
    let r = c
        .get(v2("dock/library/allowed/tags/list?n=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "tags/list?n=5 is its own key, fetched upstream"
    );
    up.put("v2/library/allowed/manifests/busy", &b"{}"[..]);
    up.set_mode("v2/library/allowed/manifests/busy", Mode::Status(429));
    let r = c
        .get(v2("dock/library/allowed/manifests/busy"))
        .send()
        .await
        .unwrap();
    expect_error(r, 429, "TOOMANYREQUESTS").await;
    up.set_mode("v2/library/allowed/manifests/busy", Mode::Status(500));
    let r = c
        .get(v2("dock/library/allowed/manifests/busy"))
        .send()
        .await
        .unwrap();
    expect_error(r, 502, "UNAVAILABLE").await;

    // Other refusals that never reach upstream.
    let before = up.total_requests();
    let r = c
        .get(v2(&format!(
            "dock/library/allowed/blobs/sha512:{}",
            "a".repeat(128)
        )))
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "UNSUPPORTED").await;
    let r = c
        .get(v2("dock/library/allowed/tags/list?n=abc"))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "NAME_INVALID").await;
    let r = c
        .get(v2("dock/library/allowed/tags/list?last=.bad"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .get(v2("dock/library/allowed/whatever"))
        .send()
        .await
        .unwrap();
    expect_error(r, 405, "UNSUPPORTED").await;
    assert_eq!(up.total_requests(), before);
    let r = c.head(proxy.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(proxy.url("/v2")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
}

#[tokio::test]
async fn mirror_mode_routes_by_docker_hub_and_ns() {
    if !tools(&["docker-registry", "skopeo", "umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), Auth::None);
    let layout = Layout::init(&tmp.path().join("oci"));
    let digest = layout.add_image("t1", "amd64", &small_layers(1, 91));
    reg.push(&layout, "t1", "library/test:t1");
    let upstream_manifest = reg.manifest("library/test:t1");

    let gh = TestUpstream::start();
    let gh_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(b"{}"), "size": 2},
        "layers": [],
    }))
    .unwrap();
    gh.put("v2/owner/app/manifests/v1", gh_manifest.clone());

    let remotes = [
        docker_remote("hub", &reg.url(), "    mirror_of: [docker.io]\n"),
        docker_remote("gh", &gh.url(), "    mirror_of: [ghcr.io]\n"),
    ]
    .concat();
    let proxy = Proxy::start(&remotes);
    let c = client();
    let host = proxy.addr.to_string();

    // `docker pull test:t1` with a registry mirror: one segment, so library/.
    let out = tmp.path().join("pull");
    pull(&host, "test:t1", &out, &[]).unwrap();
    check_pulled_image(&out, &upstream_manifest, &layout);
    assert!(
        proxy
            .stored("hub/images/library/test/_manifests/t1")
            .await
            .is_some()
    );
    for path in [
        "/v2/library/test/manifests/t1?ns=docker.io",
        "/v2/test/manifests/t1",
        "/v2/test/manifests/t1?ns=registry-1.docker.io",
        "/v2/hub/library/test/manifests/t1",
    ] {
        let r = c.get(proxy.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "docker-content-digest"), digest, "{path}");
        assert_eq!(r.bytes().await.unwrap(), upstream_manifest, "{path}");
    }

    // containerd's ?ns= picks the ghcr.io mirror; no library/ there.
    let r = c
        .get(proxy.url("/v2/owner/app/manifests/v1?ns=ghcr.io"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), gh_manifest);
    assert_eq!(gh.count("GET", "v2/owner/app/manifests/v1"), 1);
    assert!(
        proxy
            .stored("gh/images/owner/app/_manifests/v1")
            .await
            .is_some()
    );
    let r = c
        .get(proxy.url("/v2/app/manifests/v1?ns=ghcr.io"))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(gh.count("GET", "v2/app/manifests/v1"), 1);
    assert_eq!(gh.count("GET", "v2/library/app/manifests/v1"), 0);
    // Without ns the Docker Hub mirror answers, and it has no owner/app.
    let r = c
        .get(proxy.url("/v2/owner/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(gh.count("GET", "v2/owner/app/manifests/v1"), 1);
    // No remote mirrors quay.io.
    let r = c
        .get(proxy.url("/v2/owner/app/manifests/v1?ns=quay.io"))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn head_of_uncached_blob_asks_upstream_with_head_and_ranges_on_cached_blob() {
    let up = TestUpstream::start();
    let blob = test_bytes(100_000, 100);
    let digest = digest_of(&blob);
    let path = format!("v2/library/x/blobs/{digest}");
    up.put(&path, blob.clone());
    let proxy = Proxy::start(&docker_remote("fake", &up.url(), ""));
    let c = client();
    let url = proxy.url(&format!("/v2/fake/library/x/blobs/{digest}"));

    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), "100000");
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(up.count("HEAD", &path), 1);
    assert_eq!(
        up.count("GET", &path),
        0,
        "a HEAD must not download the blob"
    );
    assert!(proxy.stored_keys("fake/").await.is_empty());

    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(header(&r, "content-length"), "100000");
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert!(!header(&r, "content-type").is_empty());
    assert_eq!(r.bytes().await.unwrap(), blob);
    wait_for_hit(&c, &url).await;
    assert_eq!(
        up.count("HEAD", &path),
        1,
        "hits are answered from the cache"
    );
    assert_eq!(up.count("GET", &path), 1);

    let r = c
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-range"), "bytes 10-19/100000");
    assert_eq!(header(&r, "content-length"), "10");
    assert_eq!(header(&r, "x-cache"), "HIT");
    assert_eq!(r.bytes().await.unwrap(), blob.slice(10..20));
    let r = c
        .get(&url)
        .header("range", "bytes=99990-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), blob.slice(99_990..));
    let r = c
        .get(&url)
        .header("range", "bytes=200000-")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-range"), "bytes */100000");
    expect_error(r, 416, "RANGE_INVALID").await;
    assert_eq!(up.count("GET", &path), 1);
}

/// skopeo's own `inspect --raw` through the proxy returns the upstream bytes.
#[tokio::test]
async fn skopeo_inspect_through_proxy_matches_upstream() {
    if !tools(&["docker-registry", "skopeo", "umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), Auth::None);
    let layout = Layout::init(&tmp.path().join("oci"));
    layout.add_image("t1", "amd64", &small_layers(1, 111));
    reg.push(&layout, "t1", "library/test:t1");
    let proxy = Proxy::start(&docker_remote("hub", &reg.url(), ""));
    let out = common::registry::run(
        skopeo(tmp.path())
            .args(["inspect", "--raw", "--tls-verify=false", "--no-creds"])
            .arg(format!("docker://{}/hub/library/test:t1", proxy.addr)),
    );
    assert_eq!(out.stdout, reg.manifest("library/test:t1"));
    let tags = common::registry::run(
        skopeo(tmp.path())
            .args(["list-tags", "--tls-verify=false", "--no-creds"])
            .arg(format!("docker://{}/hub/library/test", proxy.addr)),
    );
    let tags: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["t1"]));
}

#[tokio::test]
async fn concurrent_blob_requests_coalesce_into_one_upstream_get() {
    let up = TestUpstream::start();
    let blob = test_bytes(2 * 1024 * 1024, 120);
    let digest = digest_of(&blob);
    let path = format!("v2/library/x/blobs/{digest}");
    up.put(&path, blob.clone());
    // 32 pieces, 20 ms apart: every request below arrives while the fill is running.
    up.set_mode(
        &path,
        Mode::Slow {
            chunk: 64 * 1024,
            delay: Duration::from_millis(20),
        },
    );
    let proxy = Proxy::start(&docker_remote("fake", &up.url(), ""));
    let c = client();
    let url = proxy.url(&format!("/v2/fake/library/x/blobs/{digest}"));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            let url = url.clone();
            let digest = digest.clone();
            tokio::spawn(async move {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                assert_eq!(header(&r, "docker-content-digest"), digest);
                assert_eq!(header(&r, "content-length"), (2 * 1024 * 1024).to_string());
                r.bytes().await.unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(digest_of(&t.await.unwrap()), digest);
    }
    assert_eq!(up.count("GET", &path), 1, "one upstream GET for 20 clients");
    let metrics = c
        .get(proxy.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("artifactapi_coalesced_waiters_total{repository=\"fake\"} 19"),
        "{metrics}"
    );
    let stored = format!("fake/blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    wait_for_hit(&c, &url).await;
    assert!(proxy.stored(&stored).await.unwrap() == blob);
}

#[tokio::test]
async fn expired_tag_manifest_when_upstream_fails_changes_or_deletes_it() {
    let mut up = TestUpstream::start();
    let path = "v2/library/app/manifests/v1";
    let manifest = |n: u64| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": digest_of(&test_bytes(10, n)), "size": 10},
            "layers": [],
        }))
        .unwrap()
    };
    let (m1, m2) = (manifest(1), manifest(2));
    up.put(path, m1.clone());
    let proxy = Proxy::start(&docker_remote(
        "fake",
        &up.url(),
        "    cache:\n      index_ttl: 1\n",
    ));
    let c = client();
    let url = proxy.url("/v2/fake/library/app/manifests/v1");
    let stored = "fake/images/library/app/_manifests/v1";
    let expire = || tokio::time::sleep(Duration::from_millis(1200));

    let r = c.get(&url).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(r.bytes().await.unwrap(), m1);
    wait_for_hit(&c, &url).await;

    // Upstream failing: the stale copy, for GET and HEAD.
    expire().await;
    up.set_mode(path, Mode::Status(503));
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "STALE");
    assert_eq!(header(&r, "docker-content-digest"), digest_of(&m1));
    assert_eq!(r.bytes().await.unwrap(), m1);
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "STALE");
    up.stop();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "STALE");
    up.restart();

    // Changed upstream (which announces no digest, so the HEAD cannot renew it): fetched anew.
    up.put(path, m2.clone());
    let heads = up.count("HEAD", path);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(r.bytes().await.unwrap(), m2);
    assert_eq!(up.count("HEAD", path), heads + 1);
    wait_for_hit(&c, &url).await;
    assert_eq!(proxy.stored(stored).await.unwrap(), m2);

    // Deleted upstream: 404, and the copy is dropped.
    expire().await;
    up.set_mode(path, Mode::Status(404));
    let r = c.get(&url).send().await.unwrap();
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
    assert!(proxy.stored(stored).await.is_none());
}

/// containerd (and so Kubernetes nodes, nerdctl, Docker's containerd image store) resolves a
/// tag with `HEAD /manifests/TAG`, then fetches `GET /manifests/DIGEST` and the blobs. After
/// such a pull the image must still be pullable the same way with the upstream down.
#[tokio::test]
async fn containerd_style_pull_head_tag_then_by_digest_works_with_upstream_stopped() {
    if !tools(&["docker-registry", "skopeo", "umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut reg = Registry::start(&tmp.path().join("reg"), Auth::None);
    let layout = Layout::init(&tmp.path().join("oci"));
    let digest = layout.add_image("t1", "amd64", &small_layers(2, 131));
    reg.push(&layout, "t1", "library/test:t1");
    let proxy = Proxy::start(&docker_remote("hub", &reg.url(), ""));
    let c = client();
    let url = |tail: &str| proxy.url(&format!("/v2/hub/library/test/{tail}"));

    let containerd_pull = || async {
        let r = c.head(url("manifests/t1")).send().await.unwrap();
        assert_eq!(r.status(), 200, "HEAD of the tag");
        assert_eq!(header(&r, "docker-content-digest"), digest);
        let r = c
            .get(url(&format!("manifests/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), layout.manifest("t1"));
        for d in layout.image_blobs("t1") {
            let r = c.get(url(&format!("blobs/{d}"))).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(digest_of(&r.bytes().await.unwrap()), d);
        }
    };
    containerd_pull().await;
    wait_for_hit(&c, &url(&format!("manifests/{digest}"))).await;
    for d in layout.image_blobs("t1") {
        wait_for_hit(&c, &url(&format!("blobs/{d}"))).await;
    }
    reg.stop();
    containerd_pull().await;
}

/// Blobs are stored at `{remote}/blobs/sha256/{hex}` and manifests at
/// `{remote}/{name}/manifests/{tag}`, in one namespace: a (legal) image named
/// `blobs/sha256/{hex}` turns the blob's path into a directory, after which that blob can never
/// be cached and every client gets an aborted body.
#[tokio::test]
async fn an_image_named_like_the_blob_store_does_not_break_blob_caching() {
    let up = TestUpstream::start();
    let blob = test_bytes(5000, 140);
    let digest = digest_of(&blob);
    let hex = digest.trim_start_matches("sha256:").to_string();
    let blob_path = format!("v2/library/x/blobs/{digest}");
    up.put(&blob_path, blob.clone());
    up.put(
        &format!("v2/blobs/sha256/{hex}/manifests/t1"),
        &b"{\"schemaVersion\":2,\"layers\":[]}"[..],
    );
    let proxy = Proxy::start(&docker_remote("fake", &up.url(), ""));
    let c = client();
    let r = c
        .get(proxy.url(&format!("/v2/fake/blobs/sha256/{hex}/manifests/t1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let url = proxy.url(&format!("/v2/fake/library/x/blobs/{digest}"));
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await;
    assert!(
        body.as_ref().is_ok_and(|b| *b == blob),
        "blob {digest}: {body:?}\n{}",
        proxy.log.lock().unwrap()
    );
    wait_for_hit(&c, &url).await;
    assert_eq!(up.count("GET", &blob_path), 1);
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
    use common::registry::base32;
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

/// SPEC §9.1/§9.4: manifests carry `Docker-Content-Digest`, and their `Content-Type` is the
/// document's `mediaType` when the upstream's is not a `application/vnd.…json` type. An
/// upstream that sends neither (this fake) gets both right once the manifest is stored, but
/// not on the first, streamed, `MISS` response.
#[tokio::test]
async fn manifest_miss_from_a_terse_upstream_has_digest_and_media_type() {
    let up = TestUpstream::start();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest_of(b"{}"), "size": 2},
        "layers": [],
    }))
    .unwrap();
    up.put("v2/library/app/manifests/v1", manifest.clone());
    let proxy = Proxy::start(&docker_remote("fake", &up.url(), ""));
    let c = client();
    let r = c
        .get(proxy.url("/v2/fake/library/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "MISS");
    let (digest, ct) = (
        header(&r, "docker-content-digest"),
        header(&r, "content-type"),
    );
    assert_eq!(r.bytes().await.unwrap(), manifest);
    assert_eq!(
        digest,
        digest_of(&manifest),
        "Docker-Content-Digest on a MISS"
    );
    assert_eq!(ct, OCI_MANIFEST, "Content-Type on a MISS");
}

/// SPEC §6.3: when a fill fails before any byte of the body was sent, the client gets an error
/// status (502 `UNAVAILABLE` here). A 1000-byte blob with the wrong digest is checked before any
/// of it is released, yet the proxy answers `200` as soon as the upstream's headers arrive: the
/// client sees a 200 whose body aborts with zero bytes.
#[tokio::test]
async fn failed_fill_before_any_byte_is_an_error_status_not_an_empty_200() {
    use futures::StreamExt;
    let up = TestUpstream::start();
    let path = format!(
        "v2/bad/img/blobs/sha256:{}",
        sha256_hex(&test_bytes(1000, 161))
    );
    up.put(&path, test_bytes(1000, 160));
    // Headers at once, the whole body 300 ms later: the fill fails with nothing written.
    up.set_mode(
        &path,
        Mode::Slow {
            chunk: 1000,
            delay: Duration::from_millis(300),
        },
    );
    let proxy = Proxy::start(&docker_remote("fake", &up.url(), ""));
    let c = client();
    let url = proxy.url(&format!("/{}", path.replacen("v2/", "v2/fake/", 1)));
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        let outcome = match c.get(&url).send().await {
            Err(e) => format!("no response: {e}"),
            Ok(r) if r.status() == 200 => {
                let mut body = r.bytes_stream();
                let mut n = 0;
                let mut end = "complete".to_string();
                while let Some(chunk) = body.next().await {
                    match chunk {
                        Ok(b) => n += b.len(),
                        Err(e) => {
                            end = format!("aborted: {e}");
                            break;
                        }
                    }
                }
                format!("200 with {n} body bytes, {end}")
            }
            Ok(r) => {
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                format!("{status} {}", body["errors"][0]["code"])
            }
        };
        outcomes.push(outcome);
    }
    assert!(
        outcomes.iter().all(|o| o == "502 \"UNAVAILABLE\""),
        "{outcomes:#?}"
    );
    assert_eq!(up.count("GET", &path), 5);
}

/// Under `/api/v1/remote/` a docker remote takes registry paths with the registry's keys and
/// digest checks, so the two routes share one cache and neither can plant unverified bytes
/// where the other looks for a blob.
#[tokio::test]
async fn docker_remote_under_the_remote_api_shares_the_registry_cache() {
    let up = TestUpstream::start();
    let blob = test_bytes(7000, 141);
    let digest = digest_of(&blob);
    let hex = digest.trim_start_matches("sha256:").to_string();
    up.put(&format!("v2/library/x/blobs/{digest}"), blob.clone());
    up.put(&format!("blobs/sha256/{hex}"), &b"not the blob"[..]);
    let proxy = Proxy::start(&docker_remote("fake", &up.url(), ""));
    let c = client();

    let r = c
        .get(proxy.url(&format!("/api/v1/remote/fake/blobs/sha256/{hex}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "not a registry path");
    assert_eq!(up.count("GET", &format!("blobs/sha256/{hex}")), 0);

    let api = proxy.url(&format!("/api/v1/remote/fake/library/x/blobs/{digest}"));
    let r = c.get(&api).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), blob);
    let v2 = proxy.url(&format!("/v2/fake/library/x/blobs/{digest}"));
    wait_for_hit(&c, &v2).await;
    let r = c.get(&v2).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), blob);
    assert_eq!(up.count("GET", &format!("v2/library/x/blobs/{digest}")), 1);
}
