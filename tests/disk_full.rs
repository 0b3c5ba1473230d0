//! A cache whose file system is full: every client of a fill still gets the whole body from
//! upstream (`X-Cache: BYPASS` once the fill gave up storing), nothing partial is kept, and
//! caching resumes once there is room. The data directory is a small tmpfs the test mounts
//! (CI runs as root).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Proxy, TestUpstream, client, get_text, header, sha256_hex, test_bytes, wait_for_hit};

/// A tmpfs of `mib` MiB, unmounted on drop.
struct SmallFs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallFs {
    fn mount(mib: u64) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a {mib} MiB tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs { _dir: dir, path }
    }

    fn data(&self) -> PathBuf {
        self.path.join("data")
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn generic(up: &TestUpstream) -> String {
    format!(
        "  gen:\n    type: remote\n    package: generic\n    base_url: {}/files\n",
        up.url()
    )
}

/// Fires `n` concurrent GETs of `url` and returns each one's `X-Cache` and body digest.
async fn concurrent_gets(url: &str, n: usize) -> Vec<(String, String)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let url = url.to_string();
            tokio::spawn(async move {
                // Stagger the clients so that some join while the fill is underway.
                tokio::time::sleep(Duration::from_millis(40 * i as u64)).await;
                let r = client().get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let cache = header(&r, "x-cache");
                let body = r.bytes().await.expect("a whole body");
                (cache, sha256_hex(&body))
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn used_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    common::walk(dir, &mut |p| {
        total += std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    });
    total
}

async fn bypass_count(proxy: &Proxy) -> u64 {
    let text = get_text(&client(), &proxy.url("/metrics")).await;
    text.lines()
        .filter(|l| l.starts_with("artifactapi_bypass_total{") && l.contains("no_space"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn fills_that_run_out_of_space_mid_way_still_give_every_client_the_whole_body() {
    // Two 30 MiB fills at once on 40 MiB. The first reserves its room, so the second is
    // passed through from the start; and while the first writes, another program fills the
    // disk, so it runs out of space part-way.
    let fs = SmallFs::mount(40);
    let up = TestUpstream::start();
    let names = ["first.bin", "second.bin"];
    let bodies: Vec<_> = (0..2).map(|i| test_bytes(30 << 20, i + 1)).collect();
    for (name, body) in names.iter().zip(&bodies) {
        up.put_slow(
            &format!("files/{name}"),
            body.clone(),
            256 * 1024,
            Duration::from_millis(3),
        );
    }
    let proxy = Proxy::start_in(&fs.data(), &generic(&up));
    let urls: Vec<_> = names.iter().map(|n| proxy.remote("gen", n)).collect();
    let filler = fs.path.join("filler");
    let data = fs.data();
    let fill_disk = async {
        // Once the first fill has written a few MiB (it has reserved its room by then), take
        // as much of the disk as it gives; the write fails once the disk is full.
        for _ in 0..500 {
            if used_bytes(&data) > 4 << 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = std::fs::write(&filler, vec![0u8; 20 << 20]);
    };
    let (a, b, ()) = tokio::join!(
        concurrent_gets(&urls[0], 3),
        concurrent_gets(&urls[1], 3),
        fill_disk
    );
    std::fs::remove_file(&filler).unwrap();
    for (got, body) in [(a, &bodies[0]), (b, &bodies[1])] {
        let want = sha256_hex(body);
        for (cache, digest) in got {
            assert_eq!(
                digest, want,
                "X-Cache {cache}: a client got a wrong or short body"
            );
        }
    }
    assert!(bypass_count(&proxy).await >= 1);
    // Clients that had part of the body from the spool got the rest with a range request.
    let ranged: usize = names
        .iter()
        .map(|n| up.count("RANGE", &format!("files/{n}")))
        .sum();
    assert!(ranged >= 1, "{:?}", up.requests());

    // Nothing partial is kept: each object is either whole or absent, and not both fit.
    let mut kept = 0;
    for (name, body) in names.iter().zip(&bodies) {
        if let Some(stored) = proxy.stored(&format!("gen/{name}")).await {
            assert_eq!(&stored[..], &body[..], "{name} is kept whole");
            kept += 1;
        }
    }
    assert!(kept <= 1);
    assert!(proxy.temp_files().is_empty(), "{:?}", proxy.temp_files());
    assert!(used_bytes(&fs.data()) < (31 << 20));
    assert!(
        proxy.log_shows("passing a body through uncached"),
        "the operator is told"
    );
}

#[tokio::test]
async fn a_disk_filled_by_something_else_bypasses_until_space_is_freed() {
    let fs = SmallFs::mount(24);
    let up = TestUpstream::start();
    let body = test_bytes(6 << 20, 3);
    up.put_slow(
        "files/tool.tgz",
        body.clone(),
        128 * 1024,
        Duration::from_millis(2),
    );
    let proxy = Proxy::start_in(&fs.data(), &generic(&up));
    let c = client();
    // Something else takes all but about 2 MiB of the file system.
    let filler = fs.path.join("filler");
    let free = free_bytes(&fs.path);
    std::fs::write(&filler, vec![7u8; (free - (2 << 20)) as usize]).unwrap();

    let url = proxy.remote("gen", "tool.tgz");
    let want = sha256_hex(&body);
    // A body of known length that cannot fit is passed through from the start.
    for (cache, digest) in concurrent_gets(&url, 3).await {
        assert_eq!(cache, "BYPASS");
        assert_eq!(digest, want);
    }
    assert!(bypass_count(&proxy).await >= 1);
    assert!(proxy.stored("gen/tool.tgz").await.is_none());
    assert!(proxy.temp_files().is_empty(), "{:?}", proxy.temp_files());

    // Room again: the next request caches as usual.
    std::fs::remove_file(&filler).unwrap();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(sha256_hex(&r.bytes().await.unwrap()), want);
    wait_for_hit(&c, &url).await;
    assert_eq!(proxy.stored("gen/tool.tgz").await.unwrap(), body);
}

/// Free bytes of the file system at `path` (from df, to stay free of unsafe statvfs).
fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes")
}

#[tokio::test]
async fn max_size_evicts_what_is_worth_least_and_keeps_every_response_whole() {
    // 40 files of 2 MiB (80 MiB) through a cache of 20 MiB on a 64 MiB tmpfs; two of them
    // are read again and again.
    const FILE: usize = 2 << 20;
    let fs = SmallFs::mount(64);
    let up = TestUpstream::start();
    let bodies: Vec<_> = (0..40).map(|i| test_bytes(FILE, 100 + i)).collect();
    for (i, b) in bodies.iter().enumerate() {
        up.put(&format!("files/f{i:02}.bin"), b.clone());
    }
    let proxy = Proxy::start_in_with(&fs.data(), "  max_size: 20 MiB\n", &generic(&up));
    assert!(proxy.log_shows("cache usage ready"), "eviction is on");
    let c = client();
    let get = |i: usize| {
        let (c, url) = (c.clone(), proxy.remote("gen", &format!("f{i:02}.bin")));
        async move {
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let cache = header(&r, "x-cache");
            (cache, r.bytes().await.expect("a whole body"))
        }
    };
    let limit = 20u64 << 20;
    let mut peak = 0;
    for i in 0..40 {
        let (_, body) = get(i).await;
        assert_eq!(sha256_hex(&body), sha256_hex(&bodies[i]), "f{i:02}");
        // The two favourites are read after every new file.
        for fav in [0, 1] {
            let (cache, body) = get(fav).await;
            assert_eq!(sha256_hex(&body), sha256_hex(&bodies[fav]));
            if i > 2 {
                assert_eq!(cache, "HIT", "f{fav:02} after f{i:02}");
            }
        }
        peak = peak.max(used_bytes(&fs.data().join("objects")));
    }
    // Never more than the limit plus the object being stored.
    assert!(peak <= limit + FILE as u64, "peak {peak}");
    assert!(used_bytes(&fs.data().join("objects")) <= limit);
    assert!(proxy.temp_files().is_empty(), "{:?}", proxy.temp_files());
    // Files read once and long ago were evicted and come back from upstream.
    let (cache, body) = get(5).await;
    assert_eq!(cache, "MISS");
    assert_eq!(body, bodies[5]);
    // A file larger than the whole limit is passed through, and evicts nothing for it.
    let huge = test_bytes(25 << 20, 150);
    up.put("files/huge.bin", huge.clone());
    let r = c.get(proxy.remote("gen", "huge.bin")).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "BYPASS");
    assert_eq!(sha256_hex(&r.bytes().await.unwrap()), sha256_hex(&huge));
    for fav in [0, 1] {
        assert_eq!(get(fav).await.0, "HIT", "f{fav:02} after the huge file");
    }
    let metrics = get_text(&c, &proxy.url("/metrics")).await;
    assert!(
        metrics.contains(r#"artifactapi_evictions_total{reason="max_size",repository="gen"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("artifactapi_cache_limit_bytes 20971520"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_reader_in_the_middle_of_an_evicted_object_still_gets_every_byte() {
    let fs = SmallFs::mount(64);
    let up = TestUpstream::start();
    // Small objects are worth more to keep than a large one read as often (SPEC §6.8); big.bin
    // is read more, but as evictions raise the worth of what arrives, a stream of small objects
    // twice the limit pushes it out.
    let big = test_bytes(12 << 20, 200);
    let others: Vec<_> = (0..160).map(|i| test_bytes(256 << 10, 201 + i)).collect();
    up.put("files/big.bin", big.clone());
    for (i, b) in others.iter().enumerate() {
        up.put(&format!("files/o{i}.bin"), b.clone());
    }
    let proxy = Proxy::start_in_with(&fs.data(), "  max_size: 20 MiB\n", &generic(&up));
    assert!(proxy.log_shows("cache usage ready"), "eviction is on");
    let c = client();
    let r = c.get(proxy.remote("gen", "big.bin")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), big);
    wait_for_hit(&c, &proxy.remote("gen", "big.bin")).await;
    // A hit that reads a little, then waits while the others push big.bin out.
    let mut reader = c.get(proxy.remote("gen", "big.bin")).send().await.unwrap();
    assert_eq!(header(&reader, "x-cache"), "HIT");
    let mut got = reader.chunk().await.unwrap().unwrap().to_vec();
    for (i, b) in others.iter().enumerate() {
        let r = c
            .get(proxy.remote("gen", &format!("o{i}.bin")))
            .send()
            .await
            .unwrap();
        assert_eq!(&r.bytes().await.unwrap(), b);
    }
    assert!(
        proxy.stored("gen/big.bin").await.is_none(),
        "big.bin was evicted"
    );
    while let Some(chunk) = reader.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(sha256_hex(&got), sha256_hex(&big));
}

const WRITER: &str = "writer-secret-0123456789";

/// Uploads `body` to local repository `loc` at `path`; `chunked` sends no Content-Length.
async fn upload(p: &Proxy, path: &str, body: bytes::Bytes, chunked: bool) -> reqwest::Response {
    let req = client()
        .put(p.url(&format!("/api/v1/local/loc/{path}")))
        .bearer_auth(WRITER);
    let req = if chunked {
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
            .chunks(64 * 1024)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        req.body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
    } else {
        req.body(body)
    };
    req.send().await.unwrap()
}

#[tokio::test]
async fn uploads_keep_min_free_evicting_cached_objects_first_and_are_refused_with_507() {
    let fs = SmallFs::mount(40);
    let up = TestUpstream::start();
    const MIB: usize = 1024 * 1024;
    for i in 0..3 {
        up.put(&format!("files/c{i}.bin"), test_bytes(6 * MIB, 700 + i));
    }
    let auth = "auth:\n  tokens:\n    - name: writer\n      secret: writer-secret-0123456789\n      roles:\n        \"*\": [write]\n";
    let remotes = format!(
        "{}  loc:\n    type: local\n    package: generic\n",
        generic(&up)
    );
    let p = Proxy::start_in_with_extra(&fs.data(), "  min_free: 10 MiB\n", &remotes, auth);
    assert!(p.log_shows("cache usage ready"), "eviction is on");
    let c = client();
    for i in 0..3 {
        let url = p.remote("gen", &format!("c{i}.bin"));
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().len(), 6 * MIB);
        wait_for_hit(&c, &url).await;
    }
    // 22 MiB free: a 25 MiB upload needs the cached objects' room, and takes it.
    let big = test_bytes(25 * MIB, 710);
    let r = upload(&p, "big.bin", big.clone(), false).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let got = c
        .get(p.url("/api/v1/local/loc/big.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(sha256_hex(&got.bytes().await.unwrap()), sha256_hex(&big));
    let metrics = get_text(&c, &p.url("/metrics")).await;
    assert!(
        metrics.contains(r#"artifactapi_evictions_total{reason="min_free",repository="gen"}"#),
        "cached objects made way for hosted content:\n{metrics}"
    );
    // 15 MiB free and nothing left to evict: 10 MiB would pass min_free, announced or not.
    for (name, chunked) in [("announced.bin", false), ("chunked.bin", true)] {
        let r = upload(&p, name, test_bytes(10 * MIB, 711), chunked).await;
        assert_eq!(r.status(), 507, "{name}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "insufficient_storage", "{name}: {body}");
        let gone = c
            .get(p.url(&format!("/api/v1/local/loc/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            gone.status(),
            404,
            "{name}: nothing of a refused upload is kept"
        );
    }
    let mut temps = Vec::new();
    common::walk(&fs.data().join("tmp"), &mut |p| temps.push(p.to_path_buf()));
    assert!(temps.is_empty(), "no temp files remain: {temps:?}");
    assert!(free_bytes(&fs.path) >= 10 * MIB as u64, "min_free held");
    // What fits is taken.
    let small = test_bytes(4 * MIB, 712);
    let r = upload(&p, "small.bin", small, true).await;
    assert_eq!(r.status(), 201);
}
