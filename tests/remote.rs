//! End-to-end tests of remote repositories: the built binary against a real upstream server
//! that the tests control.

mod common;

use std::time::{Duration, Instant};

use common::{
    Mode, Proxy, TestUpstream, client, error_code, free_port, get_json, get_text, header, raw_get,
    sha256_hex, test_bytes, wait_for_hit,
};
use futures::StreamExt;

fn generic(up: &TestUpstream, extra: &str) -> String {
    format!(
        "  gen:\n    type: remote\n    package: generic\n    base_url: {}/files\n{extra}",
        up.url()
    )
}

#[tokio::test]
async fn miss_then_hit_served_with_upstream_stopped() {
    let mut up = TestUpstream::start();
    let body = test_bytes(300_000, 1);
    up.put("files/dir/tool-1.0.tar.gz", body.clone());
    let proxy = Proxy::start(&generic(&up, ""));
    let c = client();
    let url = proxy.remote("gen", "dir/tool-1.0.tar.gz");

    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(header(&r, "content-length"), "300000");
    assert_eq!(header(&r, "content-type"), "application/x-test");
    assert!(header(&r, "etag").starts_with('"'));
    assert_eq!(r.bytes().await.unwrap(), body);

    up.stop();
    // The fill commits after the last byte; give it a moment before asserting a hit.
    let mut last = String::new();
    for _ in 0..50 {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        last = header(&r, "x-cache");
        let got = r.bytes().await.unwrap();
        assert_eq!(got, body);
        if last == "HIT" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, "HIT");
    assert_eq!(up.count("GET", "files/dir/tool-1.0.tar.gz"), 1);

    // The cached object and its record are readable, in the documented layout.
    assert_eq!(proxy.stored("gen/dir/tool-1.0.tar.gz").await.unwrap(), body);
    if !proxy.on_filesystem() {
        return;
    }
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            proxy
                .data_dir()
                .join("meta/gen/dir/tool-1.0.tar.gz;meta.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(rec["sha256"], sha256_hex(&body));
    assert_eq!(rec["size"], 300_000);
    assert_eq!(rec["class"], "file");
}

#[tokio::test]
async fn hit_survives_restart() {
    let mut up = TestUpstream::start();
    up.put("files/a.bin", test_bytes(1000, 2));
    let mut proxy = Proxy::start(&generic(&up, ""));
    let c = client();
    let url = proxy.remote("gen", "a.bin");
    assert_eq!(
        c.get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len(),
        1000
    );
    wait_for_hit(&c, &url).await;
    up.stop();
    proxy.restart();
    let url = proxy.remote("gen", "a.bin");
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "HIT");
    assert_eq!(r.bytes().await.unwrap(), test_bytes(1000, 2));
}

#[tokio::test]
async fn concurrent_cold_requests_make_one_upstream_get_and_stream_early() {
    let up = TestUpstream::start();
    let size = 64 * 1024 * 1024;
    let body = test_bytes(size, 3);
    let expected = sha256_hex(&body);
    // 64 MiB in 1 MiB pieces, 30 ms apart: about two seconds of upstream transfer.
    up.put_slow(
        "files/big.iso",
        body,
        1024 * 1024,
        Duration::from_millis(30),
    );
    let proxy = Proxy::start(&generic(&up, ""));
    let c = client();
    let url = proxy.remote("gen", "big.iso");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let c = c.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let mut stream = r.bytes_stream();
            let mut hasher = sha2::Sha256::default();
            let mut first: Option<Instant> = None;
            let mut n = 0usize;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.unwrap();
                if first.is_none() && !chunk.is_empty() {
                    first = Some(Instant::now());
                }
                n += chunk.len();
                sha2::Digest::update(&mut hasher, &chunk);
            }
            (
                n,
                hex::encode(sha2::Digest::finalize(hasher)),
                first.unwrap(),
            )
        }));
    }
    let mut firsts = Vec::new();
    for t in tasks {
        let (n, digest, first) = t.await.unwrap();
        assert_eq!(n, size);
        assert_eq!(digest, expected);
        firsts.push(first);
    }
    assert_eq!(
        up.count("GET", "files/big.iso"),
        1,
        "exactly one upstream GET"
    );
    let finished = up
        .finished_at("files/big.iso")
        .expect("upstream finished sending");
    let early = firsts.iter().filter(|f| **f < finished).count();
    assert_eq!(early, 50, "every client got bytes before upstream finished");
    let metrics = get_text(&c, &proxy.url("/metrics")).await;
    assert!(
        metrics.contains("artifactapi_coalesced_waiters_total{repository=\"gen\"} 49"),
        "{metrics}"
    );
}

#[tokio::test]
async fn cut_body_is_an_error_and_is_not_cached() {
    let up = TestUpstream::start();
    let body = test_bytes(2 * 1024 * 1024, 4);
    up.put("files/cut.bin", body.clone());
    up.set_mode("files/cut.bin", Mode::Cut { after: 1024 * 1024 });
    let proxy = Proxy::start(&generic(&up, ""));
    let c = client();
    let url = proxy.remote("gen", "cut.bin");

    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "headers were sent before the cut");
    assert!(r.bytes().await.is_err(), "client must see the body fail");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(proxy.stored("gen/cut.bin").await.is_none());
    assert!(!proxy.data_dir().join("meta/gen/cut.bin;meta.json").exists());
    assert!(proxy.temp_files().is_empty(), "{:?}", proxy.temp_files());

    up.set_mode("files/cut.bin", Mode::Normal);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(r.bytes().await.unwrap(), body);
    assert_eq!(up.count("GET", "files/cut.bin"), 2);
    wait_for_hit(&c, &url).await;
}

#[tokio::test]
async fn index_files_revalidate_replace_and_go_stale() {
    let mut up = TestUpstream::start();
    up.put("repo/repodata/repomd.xml", "<repomd v1/>");
    let proxy = Proxy::start(&format!(
        "  fedora:\n    type: remote\n    package: rpm\n    base_url: {}/repo\n    cache:\n      index_ttl: 1\n",
        up.url()
    ));
    let c = client();
    let url = proxy.remote("fedora", "repodata/repomd.xml");
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(r.text().await.unwrap(), "<repomd v1/>");
    wait_for_hit(&c, &url).await;

    // Expired, unchanged upstream: a conditional request, answered 304, renews it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "REVALIDATED");
    assert_eq!(r.text().await.unwrap(), "<repomd v1/>");
    assert_eq!(up.conditional_count("repo/repodata/repomd.xml"), 1);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "HIT");
    assert_eq!(up.count("GET", "repo/repodata/repomd.xml"), 2);

    // Expired, changed upstream: the new content replaces the old.
    up.put("repo/repodata/repomd.xml", "<repomd v2/>");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(r.text().await.unwrap(), "<repomd v2/>");
    wait_for_hit(&c, &url).await;
    assert_eq!(
        c.get(&url).send().await.unwrap().text().await.unwrap(),
        "<repomd v2/>"
    );

    // Expired, upstream down: the stale copy is served.
    up.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "STALE");
    assert_eq!(r.text().await.unwrap(), "<repomd v2/>");
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "STALE");
}

#[tokio::test]
async fn stale_served_when_upstream_errors() {
    let up = TestUpstream::start();
    up.put("a/APKINDEX.tar.gz", "index-1");
    let proxy = Proxy::start(&format!(
        "  alpine:\n    type: remote\n    package: alpine\n    base_url: {}/a\n    cache:\n      index_ttl: 1\n",
        up.url()
    ));
    let c = client();
    let url = proxy.remote("alpine", "APKINDEX.tar.gz");
    assert_eq!(
        c.get(&url).send().await.unwrap().text().await.unwrap(),
        "index-1"
    );
    wait_for_hit(&c, &url).await;
    up.set_mode("a/APKINDEX.tar.gz", Mode::Status(503));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "STALE");
    assert_eq!(r.text().await.unwrap(), "index-1");
}

#[tokio::test]
async fn include_patterns_block_files_but_not_index_files() {
    let up = TestUpstream::start();
    up.put("r/Packages/a.rpm", "rpm");
    up.put("r/Packages/a.txt", "txt");
    up.put("r/repodata/repomd.xml", "<repomd/>");
    let proxy = Proxy::start(&format!(
        "  el:\n    type: remote\n    package: rpm\n    base_url: {}/r\n    include_patterns:\n      - '\\.rpm$'\n",
        up.url()
    ));
    let c = client();
    let r = c
        .get(proxy.remote("el", "Packages/a.rpm"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(proxy.remote("el", "Packages/a.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    assert_eq!(body["remote"], "el");
    assert_eq!(body["path"], "Packages/a.txt");
    assert_eq!(
        up.count("GET", "r/Packages/a.txt"),
        0,
        "blocked before upstream"
    );
    let r = c
        .get(proxy.remote("el", "repodata/repomd.xml"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "index files are exempt");
}

#[tokio::test]
async fn hostile_paths_are_400_and_never_reach_upstream() {
    let up = TestUpstream::start();
    up.put("files/ok", "ok");
    let proxy = Proxy::start(&generic(&up, ""));
    for raw in [
        "/api/v1/remote/gen/../../etc/passwd",
        "/api/v1/remote/gen/a/../b",
        "/api/v1/remote/gen/%2e%2e/%2e%2e/etc/passwd",
        "/api/v1/remote/gen/%2E%2E%2Fetc%2Fpasswd",
        "/api/v1/remote/gen/a%2fb",
        "/api/v1/remote/gen/a%5C..%5Cb",
        "/api/v1/remote/gen/a\\..\\b",
        "/api/v1/remote/gen/a%00b",
        "/api/v1/remote/gen/a%0d%0aSet-Cookie:x",
        "/api/v1/remote/gen/%252e%252e/x",
        "/api/v1/remote/gen/%EF%BC%8E%EF%BC%8E/x",
        "/api/v1/remote/gen/dir/",
        "/api/v1/remote/gen/",
        "/api/v1/remote/gen/./x",
    ] {
        let (code, body) = raw_get(proxy.addr, raw);
        assert_eq!(code, 400, "{raw} -> {code} {body}");
        assert!(body.contains("\"error\":\"bad_path\""), "{raw}: {body}");
    }
    assert_eq!(up.total_requests(), 0);
    let (code, _) = raw_get(proxy.addr, "/api/v1/remote/gen//ok");
    assert_eq!(code, 200, "empty segments collapse");
}

#[tokio::test]
async fn ranges_and_head() {
    let up = TestUpstream::start();
    let body = test_bytes(200_000, 5);
    up.put("files/r.bin", body.clone());
    up.put("files/other.bin", test_bytes(1234, 6));
    let proxy = Proxy::start(&generic(&up, ""));
    let c = client();

    // HEAD on a miss asks upstream with HEAD and downloads nothing.
    let r = c
        .head(proxy.remote("gen", "other.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), "1234");
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(up.count("HEAD", "files/other.bin"), 1);
    assert_eq!(up.count("GET", "files/other.bin"), 0);

    let url = proxy.remote("gen", "r.bin");
    c.get(&url).send().await.unwrap().bytes().await.unwrap();
    wait_for_hit(&c, &url).await;
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(header(&r, "content-length"), "200000");
    assert_eq!(header(&r, "x-cache"), "HIT");

    let r = c
        .get(&url)
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-range"), "bytes 100-199/200000");
    assert_eq!(r.bytes().await.unwrap(), body.slice(100..200));
    let r = c
        .get(&url)
        .header("Range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), body.slice(199_990..));
    let r = c
        .get(&url)
        .header("Range", "bytes=150000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), body.slice(150_000..));
    let r = c
        .get(&url)
        .header("Range", "bytes=300000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "content-range"), "bytes */200000");
    assert_eq!(up.count("GET", "files/r.bin"), 1);
}

#[tokio::test]
async fn upstream_404_is_remembered_for_negative_ttl() {
    let up = TestUpstream::start();
    let proxy = Proxy::start(&generic(&up, "    cache:\n      negative_ttl: 60\n"));
    let c = client();
    let url = proxy.remote("gen", "missing.bin");
    for _ in 0..3 {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(error_code(r).await, "not_found");
    }
    assert_eq!(up.count("GET", "files/missing.bin"), 1);
}

#[tokio::test]
async fn upstream_errors_map_to_502_and_504() {
    let up = TestUpstream::start();
    up.put("files/boom", "x");
    up.set_mode("files/boom", Mode::Status(500));
    // A port nothing listens on.
    let dead_port = free_port();
    let proxy = Proxy::start(&format!(
        "{}  dead:\n    type: remote\n    package: generic\n    base_url: http://127.0.0.1:{dead_port}\n    connect_timeout: 2\n",
        generic(&up, "")
    ));
    let c = client();
    let r = c.get(proxy.remote("gen", "boom")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(error_code(r).await, "upstream_error");
    let r = c.get(proxy.remote("dead", "x")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "upstream_unreachable");
    assert_eq!(body["remote"], "dead");
    // The client learns neither the upstream's address nor the transport error; the log does.
    let text = body.to_string();
    for leak in [
        "127.0.0.1",
        &dead_port.to_string(),
        "error sending",
        "os error",
        "Connection refused",
    ] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    assert!(proxy.log_shows(&dead_port.to_string()));
}

#[tokio::test]
async fn unknown_and_non_remote_repositories() {
    let up = TestUpstream::start();
    let proxy = Proxy::start(&format!(
        "{}  uploads:\n    type: local\n    package: generic\n",
        generic(&up, "")
    ));
    let c = client();
    let r = c.get(proxy.remote("nope", "x")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "repository_not_found");
    assert_eq!(body["remote"], "nope");
    let r = c.get(proxy.remote("uploads", "x")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "wrong_repository_type");
    let r = c.get(proxy.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"].is_string());
}

#[tokio::test]
async fn health_and_metrics() {
    let up = TestUpstream::start();
    up.put("files/m", "metric");
    let proxy = Proxy::start(&generic(&up, ""));
    let c = client();
    let h = get_json(&c, &proxy.url("/health")).await;
    assert_eq!(h["status"], "ok");
    assert_eq!(h["backends"]["storage"]["reachable"], true);
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    c.get(proxy.remote("gen", "m"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let m = get_text(&c, &proxy.url("/metrics")).await;
    for needle in [
        "artifactapi_requests_total{cache=\"MISS\",package=\"generic\",repository=\"gen\"} 1",
        "artifactapi_upstream_requests_total{repository=\"gen\",status=\"200\"} 1",
        "artifactapi_upstream_bytes_total{repository=\"gen\"} 6",
        "artifactapi_bytes_served_total{repository=\"gen\"} 6",
        "artifactapi_upstream_latency_seconds_count{repository=\"gen\"} 1",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
}

#[tokio::test]
async fn sigterm_lets_responses_finish_and_leaves_no_temp_files() {
    let up = TestUpstream::start();
    let body = test_bytes(4 * 1024 * 1024, 7);
    up.put_slow(
        "files/slow.bin",
        body.clone(),
        256 * 1024,
        Duration::from_millis(60),
    );
    let mut proxy = Proxy::start(&generic(&up, ""));
    let c = client();
    let r = c.get(proxy.remote("gen", "slow.bin")).send().await.unwrap();
    let mut stream = r.bytes_stream();
    let mut got = Vec::new();
    got.extend_from_slice(&stream.next().await.unwrap().unwrap());
    let status = tokio::task::spawn_blocking({
        let pid = proxy.pid();
        move || {
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(status.success());
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got.len(), body.len());
    assert_eq!(sha256_hex(&got), sha256_hex(&body));
    let exit = tokio::task::spawn_blocking(move || {
        let s = proxy.terminate();
        (s, proxy)
    })
    .await
    .unwrap();
    assert!(exit.0.success(), "{:?}", exit.0);
    assert!(exit.1.temp_files().is_empty());
}

#[tokio::test]
async fn sigterm_with_a_drain_delay_reports_draining_and_serves_until_it_ends() {
    let up = TestUpstream::start();
    let body = test_bytes(8 * 1024 * 1024, 9);
    up.put_slow(
        "files/slow.bin",
        body.clone(),
        256 * 1024,
        Duration::from_millis(100),
    );
    up.put("files/small.bin", test_bytes(10_000, 10));
    // Under `server:`, after the harness's shutdown_grace.
    let mut proxy = Proxy::start_on(
        None,
        &common::backends::unique_name(),
        &generic(&up, ""),
        "  drain_delay: 2\n",
    );
    let small = proxy.remote("gen", "small.bin");
    let c = client();
    c.get(&small).send().await.unwrap().bytes().await.unwrap();
    wait_for_hit(&c, &small).await;
    let r = c.get(proxy.remote("gen", "slow.bin")).send().await.unwrap();
    let mut stream = r.bytes_stream();
    let mut got = stream.next().await.unwrap().unwrap().to_vec();
    let pid = proxy.pid();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let signalled = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Draining: /health tells the load balancer, and requests are still served.
    let health = client().get(proxy.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "draining");
    let r = client().get(&small).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), header(&r, "x-cache")),
        (200, "HIT".to_string())
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "still within the delay"
    );
    // After the delay: no new connections; the transfer in flight finishes whole.
    tokio::time::sleep(
        Duration::from_secs(2).saturating_sub(signalled.elapsed()) + Duration::from_millis(500),
    )
    .await;
    assert!(
        client().get(proxy.url("/health")).send().await.is_err(),
        "no new connections once the delay is over"
    );
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(sha256_hex(&got), sha256_hex(&body));
    let exit = tokio::task::spawn_blocking(move || proxy.terminate())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn killed_mid_fill_leaves_no_partial_object_after_restart() {
    let up = TestUpstream::start();
    let body = test_bytes(8 * 1024 * 1024, 8);
    up.put_slow(
        "files/k.bin",
        body.clone(),
        256 * 1024,
        Duration::from_millis(50),
    );
    let mut proxy = Proxy::start(&generic(&up, ""));
    let c = client();
    let r = c.get(proxy.remote("gen", "k.bin")).send().await.unwrap();
    let mut stream = r.bytes_stream();
    stream.next().await.unwrap().unwrap();
    proxy.kill();
    assert!(
        !proxy.on_filesystem() || !proxy.temp_files().is_empty(),
        "a temp file was being written"
    );
    proxy.restart();
    assert!(
        proxy.temp_files().is_empty(),
        "start-up sweeps dead temp files"
    );
    assert!(proxy.stored("gen/k.bin").await.is_none());
    up.set_mode("files/k.bin", Mode::Normal);
    let r = c.get(proxy.remote("gen", "k.bin")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), body);
}

#[tokio::test]
async fn a_client_that_disconnects_does_not_abort_the_fill() {
    let up = TestUpstream::start();
    let body = test_bytes(6 * 1024 * 1024, 9);
    up.put_slow(
        "files/d.bin",
        body.clone(),
        256 * 1024,
        Duration::from_millis(20),
    );
    let proxy = Proxy::start(&generic(&up, ""));
    let url = proxy.remote("gen", "d.bin");
    // The first client reads a little and goes away.
    let first = client().get(&url).send().await.unwrap();
    let mut stream = first.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    // A second client joins the same fill and gets everything.
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), body);
    wait_for_hit(&client(), &url).await;
    assert_eq!(up.count("GET", "files/d.bin"), 1);
    assert_eq!(proxy.stored("gen/d.bin").await.unwrap(), body);
}

#[tokio::test]
async fn clients_holding_the_current_copy_get_304() {
    let up = TestUpstream::start();
    let body = test_bytes(100_000, 9);
    up.put("files/pkg.tgz", body.clone());
    let proxy = Proxy::start(&generic(&up, ""));
    let c = client();
    let url = proxy.remote("gen", "pkg.tgz");
    let r = c.get(&url).send().await.unwrap();
    let (etag, lm) = (header(&r, "etag"), header(&r, "last-modified"));
    assert_eq!(r.bytes().await.unwrap(), body);
    wait_for_hit(&c, &url).await;

    for (name, value) in [
        ("if-none-match", etag.clone()),
        ("if-none-match", format!("W/{etag}")),
        ("if-modified-since", lm.clone()),
    ] {
        for head in [false, true] {
            let req = if head { c.head(&url) } else { c.get(&url) };
            let r = req.header(name, &value).send().await.unwrap();
            assert_eq!(r.status(), 304, "{name}: {value}");
            assert_eq!(header(&r, "etag"), etag);
            assert_eq!(header(&r, "x-cache"), "HIT");
            assert!(r.bytes().await.unwrap().is_empty());
        }
    }
    // Another copy, or an older date, gets the body.
    let r = c
        .get(&url)
        .header("if-none-match", "\"something-else\"")
        .header("if-modified-since", &lm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), body);
    let r = c
        .get(&url)
        .header("if-modified-since", "Mon, 01 Jan 2024 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Upstream was asked once: the 304s came from the cache.
    assert_eq!(up.count("GET", "files/pkg.tgz"), 1);
}

#[tokio::test]
async fn bodies_over_max_object_size_pass_through_uncached() {
    let up = TestUpstream::start();
    let big = test_bytes(3 * 1024 * 1024, 21);
    let unsized_big = test_bytes(2 * 1024 * 1024 + 5, 22);
    let small = test_bytes(100_000, 23);
    up.put("files/big.bin", big.clone());
    up.put("files/unsized.bin", unsized_big.clone());
    up.set_mode("files/unsized.bin", Mode::Unsized);
    up.put("files/small.bin", small.clone());
    let proxy = Proxy::start(&generic(&up, "    cache:\n      max_object_size: 1 MiB\n"));
    let c = client();
    for name in ["big.bin", "unsized.bin"] {
        let want = if name == "big.bin" {
            &big
        } else {
            &unsized_big
        };
        for round in 0..2 {
            // Two clients at once, twice: each gets the whole body. A body of known length is
            // marked BYPASS; one of unknown length was announced as a MISS before it outgrew
            // the limit, and its clients took the rest from upstream.
            let get = || c.get(proxy.remote("gen", name)).send();
            let (a, b) = tokio::join!(get(), get());
            for r in [a.unwrap(), b.unwrap()] {
                assert_eq!(r.status(), 200, "{name} round {round}");
                let expected = if name == "big.bin" { "BYPASS" } else { "MISS" };
                assert_eq!(header(&r, "x-cache"), expected, "{name} round {round}");
                let got = r.bytes().await.unwrap();
                assert_eq!(sha256_hex(&got), sha256_hex(want), "{name} round {round}");
            }
        }
        assert!(
            proxy.stored(&format!("gen/{name}")).await.is_none(),
            "{name} kept"
        );
    }
    assert!(up.count("RANGE", "files/unsized.bin") >= 2);
    assert!(proxy.temp_files().is_empty(), "{:?}", proxy.temp_files());
    // Smaller bodies are cached as ever.
    let r = c
        .get(proxy.remote("gen", "small.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(r.bytes().await.unwrap(), small);
    wait_for_hit(&c, &proxy.remote("gen", "small.bin")).await;
    let metrics = get_text(&c, &proxy.url("/metrics")).await;
    assert!(
        metrics.contains(r#"artifactapi_bypass_total{reason="too_large",repository="gen"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn fills_past_max_concurrent_fills_wait_their_turn() {
    let up = TestUpstream::start();
    let bodies: Vec<_> = (0..6).map(|i| test_bytes(64 * 1024, 40 + i)).collect();
    for (i, b) in bodies.iter().enumerate() {
        up.put_slow(
            &format!("files/f{i}.bin"),
            b.clone(),
            8 * 1024,
            Duration::from_millis(40),
        );
    }
    let proxy = Proxy::start(&generic(&up, "    max_concurrent_fills: 2\n"));
    let c = client();
    let results = futures::future::join_all((0..6).map(|i| {
        let c = c.clone();
        let url = proxy.remote("gen", &format!("f{i}.bin"));
        async move { c.get(url).send().await.unwrap().bytes().await.unwrap() }
    }))
    .await;
    for (got, want) in results.iter().zip(&bodies) {
        assert_eq!(got, want, "every queued fill is served, none fails");
    }
    assert_eq!(
        up.max_concurrent_slow(),
        2,
        "at most two fills asked the upstream at once"
    );
    for i in 0..6 {
        assert_eq!(up.count("GET", &format!("files/f{i}.bin")), 1);
    }
}

#[tokio::test]
async fn objects_unread_for_evict_unused_after_are_removed() {
    let up = TestUpstream::start();
    up.put("files/once.bin", test_bytes(50_000, 61));
    up.put("files/often.bin", test_bytes(50_000, 62));
    let proxy = Proxy::start(&generic(&up, "    cache:\n      evict_unused_after: 2s\n"));
    let c = client();
    for name in ["once.bin", "often.bin"] {
        let r = c.get(proxy.remote("gen", name)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        wait_for_hit(&c, &proxy.remote("gen", name)).await;
    }
    // often.bin is read every 300 ms for 5 s; once.bin is left alone.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let r = c
            .get(proxy.remote("gen", "often.bin"))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "x-cache"), "HIT");
        r.bytes().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        proxy.stored("gen/once.bin").await.is_none(),
        "once.bin was kept"
    );
    assert!(proxy.stored("gen/often.bin").await.is_some());
    let r = c.get(proxy.remote("gen", "once.bin")).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "MISS");
    let metrics = get_text(&c, &proxy.url("/metrics")).await;
    assert!(
        metrics.contains(r#"artifactapi_evictions_total{reason="unused",repository="gen"}"#),
        "{metrics}"
    );
}
