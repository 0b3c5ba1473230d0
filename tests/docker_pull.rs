//! End-to-end pulls through the Docker/OCI registry: the built binary in front of a real
//! distribution registry, images built with umoci and pulled with skopeo (cold, warm, multi-arch,
//! concurrent, containerd style), then served again with the registry stopped.

mod common;

use std::path::Path;

use common::docker::{
    OCI_INDEX, OCI_MANIFEST, check_pulled_image, docker_remote, file, small_layers,
};
use common::layout::{Layout, digest_of, pull, skopeo};
use common::registry::{Auth, Registry};
use common::{Proxy, client, get_text, header, test_bytes, tools, wait_for_hit};

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
    let metrics = get_text(&client(), &proxy.url("/metrics")).await;
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
    let out = common::run(
        skopeo(tmp.path())
            .args(["inspect", "--raw", "--tls-verify=false", "--no-creds"])
            .arg(format!("docker://{}/hub/library/test:t1", proxy.addr)),
    );
    assert_eq!(out.stdout, reg.manifest("library/test:t1"));
    let tags = common::run(
        skopeo(tmp.path())
            .args(["list-tags", "--tls-verify=false", "--no-creds"])
            .arg(format!("docker://{}/hub/library/test", proxy.addr)),
    );
    let tags: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["t1"]));
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
