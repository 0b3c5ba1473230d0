//! End-to-end tests of how `/v2/` requests are routed and refused: include patterns, registry
//! error codes for bad names, tags, digests and methods, mirror mode (`?ns=` and Docker Hub's
//! `library/`), and docker remotes under `/api/v1/remote/`.

mod common;

use common::docker::{OCI_MANIFEST, check_pulled_image, docker_remote, small_layers};
use common::layout::{Layout, digest_of, pull};
use common::registry::{Auth, Registry};
use common::{
    Mode, Proxy, TestUpstream, client, expect_registry_error, header, test_bytes, tools,
    wait_for_hit,
};

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
    expect_registry_error(r, 403, "DENIED").await;
    let r = c
        .get(v2(&format!("dock/library/other/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap();
    expect_registry_error(r, 403, "DENIED").await;
    let r = c
        .head(v2("dock/library/other/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Not a docker remote; not a remote at all (and no mirror configured).
    let r = c.get(v2("gen/x/manifests/latest")).send().await.unwrap();
    expect_registry_error(r, 400, "UNSUPPORTED").await;
    let r = c
        .get(v2("nosuch/img/manifests/latest"))
        .send()
        .await
        .unwrap();
    expect_registry_error(r, 404, "NAME_UNKNOWN").await;

    // Read-only.
    let r = c
        .put(v2("dock/library/allowed/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    expect_registry_error(r, 405, "UNSUPPORTED").await;
    let r = c
        .post(v2("dock/library/allowed/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    expect_registry_error(r, 405, "UNSUPPORTED").await;
    let r = c
        .delete(v2("dock/library/allowed/manifests/v1"))
        .send()
        .await
        .unwrap();
    expect_registry_error(r, 405, "UNSUPPORTED").await;

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
        expect_registry_error(r, 400, code).await;
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
    expect_registry_error(r, 404, "MANIFEST_UNKNOWN").await;
    let missing = format!("sha256:{}", "0".repeat(64));
    let r = c
        .get(v2(&format!("dock/library/allowed/blobs/{missing}")))
        .send()
        .await
        .unwrap();
    expect_registry_error(r, 404, "BLOB_UNKNOWN").await;
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
    expect_registry_error(r, 429, "TOOMANYREQUESTS").await;
    up.set_mode("v2/library/allowed/manifests/busy", Mode::Status(500));
    let r = c
        .get(v2("dock/library/allowed/manifests/busy"))
        .send()
        .await
        .unwrap();
    expect_registry_error(r, 502, "UNAVAILABLE").await;

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
    expect_registry_error(r, 405, "UNSUPPORTED").await;
    let r = c
        .get(v2("dock/library/allowed/tags/list?n=abc"))
        .send()
        .await
        .unwrap();
    expect_registry_error(r, 400, "NAME_INVALID").await;
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
    expect_registry_error(r, 405, "UNSUPPORTED").await;
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
    expect_registry_error(r, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(gh.count("GET", "v2/app/manifests/v1"), 1);
    assert_eq!(gh.count("GET", "v2/library/app/manifests/v1"), 0);
    // Without ns the Docker Hub mirror answers, and it has no owner/app.
    let r = c
        .get(proxy.url("/v2/owner/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    expect_registry_error(r, 404, "MANIFEST_UNKNOWN").await;
    assert_eq!(gh.count("GET", "v2/owner/app/manifests/v1"), 1);
    // No remote mirrors quay.io.
    let r = c
        .get(proxy.url("/v2/owner/app/manifests/v1?ns=quay.io"))
        .send()
        .await
        .unwrap();
    expect_registry_error(r, 404, "NAME_UNKNOWN").await;
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
