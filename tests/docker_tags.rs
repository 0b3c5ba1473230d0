//! End-to-end tests of tag manifests over time: served within `index_ttl`, revalidated with a
//! HEAD after it, replaced when the tag moves, stale when the upstream fails, dropped when it is
//! deleted, and the digest and media type of a manifest from a terse upstream.

mod common;

use std::time::{Duration, Instant};

use common::docker::{OCI_MANIFEST, check_pulled_image, docker_remote, small_layers};
use common::layout::{Layout, digest_of, pull};
use common::registry::{Auth, Registry};
use common::{
    Mode, Proxy, TestUpstream, client, expect_registry_error, header, test_bytes, tools,
    wait_for_hit,
};

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
    expect_registry_error(r, 404, "MANIFEST_UNKNOWN").await;
    assert!(proxy.stored(stored).await.is_none());
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
