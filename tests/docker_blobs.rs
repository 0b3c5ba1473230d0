//! End-to-end tests of registry blobs against a `TestUpstream` posing as a registry: HEAD and
//! ranges, coalesced fills, digest checks that never serve or store wrong bytes, failed fills,
//! and blob keys that no image name can disturb.

mod common;

use std::time::Duration;

use common::docker::docker_remote;
use common::layout::digest_of;
use common::{
    Mode, Proxy, TestUpstream, client, expect_registry_error, get_text, header, sha256_hex,
    test_bytes, wait_for_hit,
};

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
    expect_registry_error(r, 416, "RANGE_INVALID").await;
    assert_eq!(up.count("GET", &path), 1);
}

#[tokio::test]
async fn concurrent_blob_requests_coalesce_into_one_upstream_get() {
    let up = TestUpstream::start();
    let blob = test_bytes(2 * 1024 * 1024, 120);
    let digest = digest_of(&blob);
    let path = format!("v2/library/x/blobs/{digest}");
    // 32 pieces, 20 ms apart: every request below arrives while the fill is running.
    up.put_slow(&path, blob.clone(), 64 * 1024, Duration::from_millis(20));
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
    let metrics = get_text(&c, &proxy.url("/metrics")).await;
    assert!(
        metrics.contains("artifactapi_coalesced_waiters_total{repository=\"fake\"} 19"),
        "{metrics}"
    );
    let stored = format!("fake/blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    wait_for_hit(&c, &url).await;
    assert!(proxy.stored(&stored).await.unwrap() == blob);
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
    up.put_slow(&big_path, big.clone(), 128 * 1024, Duration::from_millis(5));
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
                Ok(r) => expect_registry_error(r, 502, "UNAVAILABLE").await,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(up.count("GET", path), attempt, "{path}: nothing cached");
        }
    }
    let stored = proxy.stored_keys("fake/").await;
    assert!(stored.is_empty(), "{stored:?}");
    assert!(proxy.temp_files().is_empty(), "{:?}", proxy.temp_files());
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
    // Headers at once, the whole body 300 ms later: the fill fails with nothing written.
    up.put_slow(
        &path,
        test_bytes(1000, 160),
        1000,
        Duration::from_millis(300),
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
