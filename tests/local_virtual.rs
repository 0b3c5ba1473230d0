//! End-to-end tests of local and virtual repositories: the built binary, uploads streamed over
//! real HTTP (1 GiB, with the server's memory watched from /proc), downloads with curl, a
//! virtual repository over a local repository and real upstreams (one of them down), and a
//! docker virtual repository pulled with skopeo from a real registry.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::layout::{Layout, blobs_of, digest_of, pull};
use common::registry::{Auth, Registry};
use common::{
    Mode, Proxy, TestUpstream, client, error_code, free_port, get_json, have_tool, header, raw_get,
    raw_request, rss_kib, sha256_hex, test_bytes, tools,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};

const WRITER: &str = "writer-secret-0123456789";
const OPS: &str = "ops-secret-0123456789";

/// A writer for every repository and an admin; anonymous reads stay allowed.
const AUTH: &str = "auth:\n  tokens:\n    - name: writer\n      secret: writer-secret-0123456789\n      roles:\n        \"*\": [write]\n    - name: ops\n      secret: ops-secret-0123456789\n      roles:\n        \"*\": [admin]\n";

const LOCALS: &str = "  uploads:\n    type: local\n    package: generic\n  scratch:\n    type: local\n    package: generic\n    allow_overwrite: true\n";

fn local_url(proxy: &Proxy, repo: &str, path: &str) -> String {
    proxy.url(&format!("/api/v1/local/{repo}/{path}"))
}

fn virtual_url(proxy: &Proxy, repo: &str, path: &str) -> String {
    proxy.url(&format!("/api/v1/virtual/{repo}/{path}"))
}

async fn upload(
    c: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
    checksum: Option<&str>,
) -> reqwest::Response {
    let mut req = c.put(url).bearer_auth(WRITER).body(body);
    if let Some(sum) = checksum {
        req = req.header("x-checksum-sha256", sum);
    }
    req.send().await.unwrap()
}

fn sha256_file(path: &std::path::Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// A raw `PUT raw_path` as the writer, for paths that URL libraries would normalise; returns
/// the status.
fn raw_put(addr: SocketAddr, raw_path: &str, body: &[u8]) -> u16 {
    let mut request = format!(
        "PUT {raw_path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {WRITER}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    raw_request(addr, &request).0
}

/// 1 GiB: 1024 blocks of 1 MiB, each a random block with its index written into it.
fn gib_chunk(block: &Bytes, i: u64) -> Bytes {
    let mut b = block.to_vec();
    b[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_in_flat_memory_and_downloads_intact() {
    if !have_tool("curl") {
        return;
    }
    const CHUNKS: u64 = 1024;
    let block = test_bytes(1 << 20, 41);
    let mut h = Sha256::new();
    for i in 0..CHUNKS {
        h.update(gib_chunk(&block, i));
    }
    let expected = hex::encode(h.finalize());

    let proxy = Proxy::start_with(LOCALS, AUTH);
    let c = client();
    // Warm the server up (first request, allocator pools) before the baseline is taken.
    let r = upload(&c, &local_url(&proxy, "uploads", "warm.txt"), "x", None).await;
    assert_eq!(r.status(), 201);
    let pid = proxy.pid();
    let base = rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(base));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let body = futures::stream::iter(0..CHUNKS)
        .map(move |i| Ok::<_, std::io::Error>(gib_chunk(&block, i)));
    let url = local_url(&proxy, "uploads", "big/disk.img");
    let started = Instant::now();
    let r = upload(&c, &url, reqwest::Body::wrap_stream(body), Some(&expected)).await;
    let upload_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["size"], CHUNKS << 20);
    assert_eq!(v["sha256"], expected.as_str());
    let growth = peak.load(Ordering::Relaxed).saturating_sub(base);
    eprintln!(
        "1 GiB upload: {upload_time:?}, server RSS {base} KiB before, peak growth {growth} KiB"
    );
    assert!(
        growth < 64 * 1024,
        "server RSS grew by {growth} KiB during the upload"
    );
    assert!(proxy.temp_files().is_empty(), "{:?}", proxy.temp_files());

    let out = proxy.dir.path().join("download.bin");
    let started = Instant::now();
    let st = Command::new("curl")
        .args(["-sSf", "--noproxy", "*", "-o"])
        .arg(&out)
        .arg(&url)
        .status()
        .unwrap();
    assert!(st.success());
    eprintln!("1 GiB download with curl: {:?}", started.elapsed());
    assert_eq!(std::fs::metadata(&out).unwrap().len(), CHUNKS << 20);
    assert_eq!(sha256_file(&out), expected);
}

#[tokio::test]
async fn uploads_checksums_conflicts_deletes_and_listings() {
    let proxy = Proxy::start_with(LOCALS, AUTH);
    let c = client();
    let a = local_url(&proxy, "uploads", "dir/a.txt");

    let r = c
        .put(&a)
        .bearer_auth(WRITER)
        .header("content-type", "text/plain")
        .header("x-checksum-sha256", sha256_hex(b"hello"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["sha256"], sha256_hex(b"hello"));
    assert_eq!(v["created"], true);

    let r = c.get(&a).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/plain");
    assert_eq!(header(&r, "x-checksum-sha256"), sha256_hex(b"hello"));
    assert_eq!(header(&r, "etag"), format!("\"{}\"", sha256_hex(b"hello")));
    assert!(!header(&r, "last-modified").is_empty());
    assert_eq!(r.bytes().await.unwrap(), "hello");
    let r = c.get(&a).header("range", "bytes=1-3").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-range"), "bytes 1-3/5");
    assert_eq!(r.bytes().await.unwrap(), "ell");
    let r = c.head(&a).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), "5");

    // An existing path is not replaced...
    let r = upload(&c, &a, "other", None).await;
    assert_eq!(r.status(), 409);
    assert_eq!(error_code(r).await, "conflict");
    assert_eq!(
        c.get(&a).send().await.unwrap().bytes().await.unwrap(),
        "hello"
    );
    // ...unless the repository allows it.
    let s = local_url(&proxy, "scratch", "f.bin");
    assert_eq!(upload(&c, &s, "one", None).await.status(), 201);
    let r = upload(&c, &s, "two", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["created"],
        false
    );
    assert_eq!(
        c.get(&s).send().await.unwrap().bytes().await.unwrap(),
        "two"
    );

    // A checksum mismatch stores nothing.
    let b = local_url(&proxy, "uploads", "dir/b.bin");
    let big = test_bytes(3 << 20, 5);
    let r = upload(&c, &b, big.clone(), Some(&sha256_hex(b"not it"))).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "checksum_mismatch");
    assert_eq!(c.get(&b).send().await.unwrap().status(), 404);
    assert!(proxy.temp_files().is_empty());
    let r = upload(&c, &b, "x", Some("abc")).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "bad_request");
    let r = upload(&c, &b, big.clone(), Some(&sha256_hex(&big).to_uppercase())).await;
    assert_eq!(r.status(), 201);
    assert_eq!(c.get(&b).send().await.unwrap().bytes().await.unwrap(), big);

    // Listings.
    let c_txt = local_url(&proxy, "uploads", "dir/sub/c.txt");
    assert_eq!(upload(&c, &c_txt, "see", None).await.status(), 201);
    let root = get_json(&c, &local_url(&proxy, "uploads", "")).await;
    assert_eq!(
        root["entries"],
        serde_json::json!([{"name": "dir", "type": "directory"}])
    );
    for url in [
        local_url(&proxy, "uploads", "dir/"),
        local_url(&proxy, "uploads", "dir?list"),
    ] {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["path"], "dir/", "{url}");
        let e = v["entries"].as_array().unwrap();
        let names: Vec<&str> = e.iter().map(|x| x["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a.txt", "b.bin", "sub"], "{v}");
        assert_eq!(e[0]["type"], "file");
        assert_eq!(e[0]["size"], 5);
        assert_eq!(e[0]["sha256"], sha256_hex(b"hello"));
        assert_eq!(e[2]["type"], "directory");
    }
    let r = c
        .get(local_url(&proxy, "uploads", "nope/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A file cannot also be a directory.
    let r = upload(&c, &local_url(&proxy, "uploads", "dir/a.txt/x"), "x", None).await;
    assert_eq!(r.status(), 409);
    let r = upload(&c, &local_url(&proxy, "uploads", "dir/sub"), "x", None).await;
    assert_eq!(r.status(), 409);

    // Path rules as for remotes.
    for raw in [
        "/api/v1/local/uploads/%2e%2e/escape",
        "/api/v1/local/uploads/a/../../escape",
        "/api/v1/local/uploads/a%2f..%2fb",
        "/api/v1/local/uploads/.artifactapi-tmp-1-1",
    ] {
        assert_eq!(raw_put(proxy.addr, raw, b"x"), 400, "{raw}");
        assert_eq!(raw_get(proxy.addr, raw).0, 400, "{raw}");
    }
    assert!(!proxy.dir.path().join("escape").exists());
    assert!(!proxy.data_dir().join("objects/escape").exists());

    // Flush never touches local repositories.
    let r = c
        .post(proxy.url("/api/v1/cache/flush"))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(proxy.url("/api/v1/cache/flush?remote=uploads"))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(c.get(&c_txt).send().await.unwrap().status(), 200);

    // Delete (an admin's act where overwrites are off).
    let r = c.delete(&a).bearer_auth(OPS).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(c.get(&a).send().await.unwrap().status(), 404);
    let r = c.delete(&a).bearer_auth(OPS).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(!proxy.data_dir().join("objects/uploads/dir/a.txt").exists());
    assert!(
        !proxy
            .data_dir()
            .join("meta/uploads/dir/a.txt;meta.json")
            .exists()
    );

    // Uploads survive a restart.
    let mut proxy = proxy;
    proxy.restart();
    let r = client()
        .get(local_url(&proxy, "uploads", "dir/sub/c.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), "see");
}

#[tokio::test]
async fn virtual_repository_asks_members_in_order_and_survives_a_down_member() {
    let up = TestUpstream::start();
    up.put("one/a.txt", "a from remote");
    up.put("one/b.txt", "b from remote");
    up.put("one/err.bin", "x");
    up.set_mode("one/err.bin", Mode::Status(500));
    let dead = format!("http://127.0.0.1:{}", free_port());
    let remotes = format!(
        "{LOCALS}  down:\n    type: remote\n    package: generic\n    base_url: {dead}\n    connect_timeout: 2\n  one:\n    type: remote\n    package: generic\n    base_url: {}/one\n  all:\n    type: virtual\n    package: generic\n    members: [uploads, down, one]\n    include_patterns: ['\\.txt$', '\\.bin$']\n  outer:\n    type: virtual\n    package: generic\n    members: [all]\n  broken:\n    type: virtual\n    package: generic\n    members: [down, one]\n",
        up.url()
    );
    let proxy = Proxy::start_with(&remotes, AUTH);
    let c = client();
    let r = upload(
        &c,
        &local_url(&proxy, "uploads", "a.txt"),
        "a from local",
        None,
    )
    .await;
    assert_eq!(r.status(), 201);

    // The first member that has the path answers.
    let r = c
        .get(virtual_url(&proxy, "all", "a.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-artifactapi-member"), "uploads");
    assert_eq!(r.bytes().await.unwrap(), "a from local");
    assert_eq!(up.count("GET", "one/a.txt"), 0);

    // Past the local miss and the down member.
    let r = c
        .get(virtual_url(&proxy, "all", "b.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-artifactapi-member"), "one");
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(r.bytes().await.unwrap(), "b from remote");
    let r = c
        .head(virtual_url(&proxy, "outer", "b.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-artifactapi-member"), "one");
    assert_eq!(header(&r, "content-length"), "13");
    let r = c
        .get(virtual_url(&proxy, "outer", "b.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), "b from remote");

    // Nobody has it: 404, even with a member down.
    let r = c
        .get(virtual_url(&proxy, "all", "missing.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Refused by the virtual repository's own include_patterns: no member is asked.
    let before = up.total_requests();
    let r = c
        .get(virtual_url(&proxy, "all", "x.zip"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(up.total_requests(), before);
    // Every member failed: 502 naming them.
    let r = c
        .get(virtual_url(&proxy, "broken", "err.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "members_failed");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("down:") && msg.contains("one:"), "{msg}");
    // The down member's address and the OS error stay in the log.
    assert!(
        msg.contains("down: the upstream could not be reached"),
        "{msg}"
    );
    for leak in ["127.0.0.1", "os error", "refused"] {
        assert!(!msg.contains(leak), "{leak} in {msg}");
    }
    // A virtual repository is not a local or remote one, and cannot be written.
    let r = c.get(proxy.remote("all", "a.txt")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .put(virtual_url(&proxy, "all", "new.txt"))
        .bearer_auth(WRITER)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = c
        .get(virtual_url(&proxy, "uploads", "a.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "wrong_repository_type");
}

#[tokio::test]
async fn docker_virtual_repository_serves_a_skopeo_pull() {
    if !tools(&["docker-registry", "skopeo", "umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), Auth::None);
    let layout = Layout::init(&tmp.path().join("oci"));
    layout.add_image(
        "t1",
        "amd64",
        &[vec![(
            "opt/data.bin".to_string(),
            test_bytes(2 << 20, 77).to_vec(),
        )]],
    );
    reg.push(&layout, "t1", "library/test:t1");
    let manifest = reg.manifest("library/test:t1");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = Proxy::start_with(
        &format!(
            "  dead:\n    type: remote\n    package: docker\n    base_url: {dead}\n  reg:\n    type: remote\n    package: docker\n    base_url: {}\n  dv:\n    type: virtual\n    package: docker\n    members: [dead, reg]\n",
            reg.url()
        ),
        AUTH,
    );
    let out = tmp.path().join("pull");
    pull(&proxy.addr.to_string(), "dv/library/test:t1", &out, &[]).unwrap();
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), manifest);
    for d in blobs_of(&manifest) {
        let got = std::fs::read(out.join(d.trim_start_matches("sha256:"))).unwrap();
        assert_eq!(digest_of(&got), d);
    }
    let c = client();
    let r = c
        .get(proxy.url("/v2/dv/library/test/manifests/t1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-artifactapi-member"), "reg");
    assert_eq!(header(&r, "docker-content-digest"), digest_of(&manifest));
    // Blobs come from the member that served the manifest.
    for d in blobs_of(&manifest) {
        let r = c
            .head(proxy.url(&format!("/v2/dv/library/test/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-artifactapi-member"), "reg");
    }
    let r = c
        .get(proxy.url("/v2/dv/library/nope/manifests/t1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn an_interrupted_upload_leaves_nothing() {
    let proxy = Proxy::start_with(LOCALS, AUTH);
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    write!(
        s,
        "PUT /api/v1/local/uploads/cut.bin HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {WRITER}\r\nContent-Length: 10000000\r\n\r\n"
    )
    .unwrap();
    s.write_all(&test_bytes(3_000_000, 9)).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(s);
    let c = client();
    let url = local_url(&proxy, "uploads", "cut.bin");
    for _ in 0..50 {
        if proxy.temp_files().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(proxy.temp_files().is_empty(), "{:?}", proxy.temp_files());
    assert_eq!(c.get(&url).send().await.unwrap().status(), 404);
    // The path is free again.
    assert_eq!(upload(&c, &url, "whole", None).await.status(), 201);
}

#[tokio::test]
async fn records_never_collide_with_object_paths_and_a_failed_record_keeps_nothing() {
    let proxy = Proxy::start_with(LOCALS, AUTH);
    let c = client();
    // A file and a directory whose name is the file's plus ".json", in both orders.
    for (first, second) in [("a", "a.json/b"), ("c.json/d", "c")] {
        for path in [first, second] {
            let url = local_url(&proxy, "uploads", path);
            assert_eq!(
                upload(&c, &url, path.to_string(), None).await.status(),
                201,
                "{path}"
            );
        }
        for path in [first, second] {
            let r = c
                .get(local_url(&proxy, "uploads", path))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.bytes().await.unwrap(), path, "{path}");
        }
    }
    let listed = get_json(&c, &local_url(&proxy, "uploads", "")).await;
    let text = listed.to_string();
    for name in ["\"a\"", "\"c\"", "a.json", "c.json"] {
        assert!(text.contains(name), "{name} in {text}");
    }

    // A record that cannot be written (its directory's name is taken by a stray file) fails
    // the upload with 503 and keeps no object.
    std::fs::write(
        proxy.data_dir().join("meta/uploads/blocked"),
        "not a directory",
    )
    .unwrap();
    let url = local_url(&proxy, "uploads", "blocked/x.bin");
    let r = upload(&c, &url, "orphan", None).await;
    assert_eq!(r.status(), 503);
    assert!(
        !proxy
            .data_dir()
            .join("objects/uploads/blocked/x.bin")
            .exists()
    );
    assert_eq!(c.get(&url).send().await.unwrap().status(), 404);
    assert!(proxy.temp_files().is_empty(), "{:?}", proxy.temp_files());
    // Once the stray file is gone the same upload goes in.
    std::fs::remove_file(proxy.data_dir().join("meta/uploads/blocked")).unwrap();
    assert_eq!(upload(&c, &url, "kept", None).await.status(), 201);
    assert_eq!(
        c.get(&url).send().await.unwrap().bytes().await.unwrap(),
        "kept"
    );
}

#[tokio::test]
async fn records_in_the_earlier_naming_are_still_read() {
    let mut proxy = Proxy::start_with(LOCALS, AUTH);
    let c = client();
    let url = local_url(&proxy, "uploads", "old/tool.tar.gz");
    assert_eq!(upload(&c, &url, "old body", None).await.status(), 201);
    // Rename the record as an earlier version wrote it: `{path}.json`.
    let meta = proxy.data_dir().join("meta/uploads/old");
    std::fs::rename(
        meta.join("tool.tar.gz;meta.json"),
        meta.join("tool.tar.gz.json"),
    )
    .unwrap();
    proxy.restart();
    let c = client();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-checksum-sha256"), sha256_hex(b"old body"));
    assert_eq!(r.bytes().await.unwrap(), "old body");
    let listed = get_json(&c, &local_url(&proxy, "uploads", "old/")).await;
    assert_eq!(listed["entries"][0]["name"], "tool.tar.gz", "{listed}");
    assert_eq!(
        listed["entries"][0]["sha256"],
        sha256_hex(b"old body"),
        "the listing read the old-style record"
    );
    // Deleting removes the old-style record too.
    let r = c.delete(&url).bearer_auth(OPS).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(!meta.join("tool.tar.gz.json").exists());
    assert_eq!(c.get(&url).send().await.unwrap().status(), 404);
}
