//! Several replicas as one cache: `serve` processes on one Garage bucket and one Redis, started
//! by the harness. Coalescing across replicas, flushes seen by every replica, Redis and S3
//! outages and recovery (also mid-load), interrupted multipart uploads, and flushes larger than
//! one S3 page.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backends::{BUCKET, Backends, unique_name};
use common::{Mode, Proxy, TestUpstream, client, header, sha256_hex, test_bytes, wait_for_get_hit};
use futures::StreamExt;
use sha2::{Digest, Sha256};

fn generic(up: &TestUpstream, extra: &str) -> String {
    format!(
        "  gen:\n    type: remote\n    package: generic\n    base_url: {}/files\n    index_patterns: ['\\.idx$']\n{extra}",
        up.url()
    )
}

/// An admin token: the HTTP flush needs one.
const ADMIN: &str = "auth:\n  tokens:\n    - name: ops\n      secret: ops-secret-0123456789\n      roles:\n        \"*\": [admin]\n";
const ADMIN_SECRET: &str = "ops-secret-0123456789";

/// Streams a body through SHA-256, never holding it whole.
async fn body_sha(r: reqwest::Response) -> (u64, String) {
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        let c = c.expect("body chunk");
        n += c.len() as u64;
        h.update(&c);
    }
    (n, hex::encode(h.finalize()))
}

/// Flushes everything of `gen` through `p` as the admin; asserts a 200 and returns its body.
async fn flush_all(c: &reqwest::Client, p: &Proxy) -> serde_json::Value {
    let r = c
        .post(p.url("/api/v1/cache/flush?remote=gen&type=all"))
        .bearer_auth(ADMIN_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Polls `/health` every 100 ms, at most `tries` times, until it answers 200.
async fn becomes_healthy(c: &reqwest::Client, p: &Proxy, tries: usize) -> bool {
    for _ in 0..tries {
        if c.get(p.url("/health")).send().await.unwrap().status() == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn start() -> Option<Arc<Backends>> {
    Backends::start().map(Arc::new)
}

#[tokio::test]
async fn twenty_cold_requests_over_two_replicas_make_one_upstream_get() {
    let Some(b) = start() else { return };
    let up = TestUpstream::start();
    let body = test_bytes(64 * 1024 * 1024, 41);
    let want = sha256_hex(&body);
    up.put_slow(
        "files/big.bin",
        body,
        1024 * 1024,
        Duration::from_millis(15),
    );
    let name = unique_name();
    let r1 = Proxy::start_on(Some(b.clone()), &name, &generic(&up, ""), ADMIN);
    let r2 = Proxy::start_on(Some(b.clone()), &name, &generic(&up, ""), ADMIN);
    let urls = [r1.remote("gen", "big.bin"), r2.remote("gen", "big.bin")];
    let c = client();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            let url = urls[i % 2].clone();
            tokio::spawn(async move {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                body_sha(r).await
            })
        })
        .collect();
    for t in tasks {
        let (n, sha) = t.await.unwrap();
        assert_eq!(n, 64 * 1024 * 1024);
        assert_eq!(sha, want);
    }
    assert_eq!(
        up.count("GET", "files/big.bin"),
        1,
        "one upstream GET in all"
    );
    // Both replicas now serve it as a hit from the shared bucket.
    wait_for_get_hit(&c, &urls[0]).await;
    wait_for_get_hit(&c, &urls[1]).await;
    assert_eq!(up.count("GET", "files/big.bin"), 1);
    assert_eq!(
        sha256_hex(&r1.stored("gen/big.bin").await.unwrap()),
        want,
        "the stored object is whole"
    );
}

#[tokio::test]
async fn a_flush_through_one_replica_is_seen_by_the_other() {
    let Some(b) = start() else { return };
    let up = TestUpstream::start();
    up.put("files/a.bin", test_bytes(100_000, 42));
    let name = unique_name();
    let r1 = Proxy::start_on(Some(b.clone()), &name, &generic(&up, ""), ADMIN);
    let r2 = Proxy::start_on(Some(b.clone()), &name, &generic(&up, ""), ADMIN);
    let c = client();
    let r = c.get(r1.remote("gen", "a.bin")).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "MISS");
    r.bytes().await.unwrap();
    wait_for_get_hit(&c, &r2.remote("gen", "a.bin")).await;
    assert_eq!(up.count("GET", "files/a.bin"), 1, "r2 hit what r1 stored");

    let v = flush_all(&c, &r1).await;
    assert_eq!(v["flushed"]["objects"], 1, "{v}");

    let r = c.get(r2.remote("gen", "a.bin")).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "MISS", "r2 sees the flush");
    r.bytes().await.unwrap();
    assert_eq!(up.count("GET", "files/a.bin"), 2);
}

#[tokio::test]
async fn a_flush_deletes_ten_thousand_objects() {
    let Some(b) = start() else { return };
    let up = TestUpstream::start();
    let name = unique_name();
    let proxy = Proxy::start_on(Some(b.clone()), &name, &generic(&up, ""), ADMIN);
    let s3 = b.garage.client();
    let puts = futures::stream::iter(0..10_000).map(|i| {
        let s3 = s3.clone();
        let key = format!("{name}/gen/many/{i:05}.bin");
        async move {
            // Garage's SQLite metadata can answer "database is locked" under load: retry.
            for attempt in 0.. {
                let put = s3
                    .put_object()
                    .bucket(BUCKET)
                    .key(&key)
                    .body(bytes::Bytes::from_static(b"x").into())
                    .send()
                    .await;
                match put {
                    Ok(_) => break,
                    Err(e) if attempt < 20 => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("put {key}: {e:?}"),
                }
            }
        }
    });
    puts.buffer_unordered(16).collect::<Vec<_>>().await;
    assert_eq!(proxy.stored_keys("gen/").await.len(), 10_000);

    let v = flush_all(&client(), &proxy).await;
    assert_eq!(v["flushed"]["objects"], 10_000, "{v}");
    assert!(proxy.stored_keys("gen/").await.is_empty());
}

#[tokio::test]
async fn redis_outage_keeps_hits_working_and_ttls_return_with_it() {
    let Some(b) = start() else { return };
    let up = TestUpstream::start();
    let file = test_bytes(300_000, 43);
    let index = test_bytes(2_000, 44);
    up.put("files/tool.bin", file.clone());
    up.put("files/repo.idx", index.clone());
    up.put("files/cold.bin", test_bytes(5_000, 45));
    let remotes = generic(&up, "    cache:\n      index_ttl: 1\n");
    let p = Proxy::start_on(Some(b.clone()), &unique_name(), &remotes, "");
    let c = client();
    let file_url = p.remote("gen", "tool.bin");
    let index_url = p.remote("gen", "repo.idx");
    for url in [&file_url, &index_url] {
        c.get(url).send().await.unwrap().bytes().await.unwrap();
        wait_for_get_hit(&c, url).await;
    }

    b.redis.stop();
    let started = Instant::now();
    let r = c.get(&file_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "HIT");
    assert_eq!(r.bytes().await.unwrap(), file);
    let r = c.get(&index_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "STALE");
    assert_eq!(r.bytes().await.unwrap(), index);
    // Not cached at all: fetched from upstream, still served.
    let r = c.get(p.remote("gen", "cold.bin")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 5_000);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "requests must not hang: {:?}",
        started.elapsed()
    );
    let r = c.get(p.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "degraded");
    assert_eq!(v["backends"]["metadata"]["reachable"], false);
    assert_eq!(v["backends"]["storage"]["reachable"], true);

    // Redis back (empty): records are written again and index TTLs expire and revalidate.
    b.redis.restart();
    assert!(
        becomes_healthy(&c, &p, 50).await,
        "health recovers without a restart"
    );
    let r = c.get(&index_url).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "MISS");
    r.bytes().await.unwrap();
    wait_for_get_hit(&c, &index_url).await;
    assert!(
        b.redis
            .cli(&["--scan", "--pattern", "*fresh:*"])
            .contains("repo.idx")
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = up.conditional_count("files/repo.idx");
    let r = c.get(&index_url).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "REVALIDATED");
    assert_eq!(r.bytes().await.unwrap(), index);
    assert_eq!(up.conditional_count("files/repo.idx"), before + 1);
}

#[tokio::test]
async fn s3_outage_is_503_with_retry_after_and_recovers() {
    let Some(b) = start() else { return };
    let up = TestUpstream::start();
    // Larger than the objects kept in memory, so its hits need S3.
    let body = test_bytes(400_000, 46);
    up.put("files/a.bin", body.clone());
    up.put("files/b.bin", test_bytes(1000, 47));
    let small = test_bytes(10_000, 49);
    up.put("files/small.bin", small.clone());
    let p = Proxy::start_on(Some(b.clone()), &unique_name(), &generic(&up, ""), "");
    let c = client();
    let url = p.remote("gen", "a.bin");
    c.get(&url).send().await.unwrap().bytes().await.unwrap();
    wait_for_get_hit(&c, &url).await;
    let small_url = p.remote("gen", "small.bin");
    c.get(&small_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    wait_for_get_hit(&c, &small_url).await;

    b.garage.stop();
    // A small object already read from S3 is served from memory meanwhile.
    let r = c.get(&small_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "HIT");
    assert_eq!(r.bytes().await.unwrap(), small);
    let started = Instant::now();
    for u in [url.clone(), p.remote("gen", "b.bin")] {
        let r = c.get(&u).send().await.unwrap();
        assert_eq!(r.status(), 503, "{u}");
        assert_eq!(header(&r, "retry-after"), "5");
        assert!(header(&r, "content-type").starts_with("application/json"));
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"], "storage_unavailable", "{v}");
        assert!(!v.to_string().contains(common::backends::SECRET));
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    let log = p.log.lock().unwrap().clone();
    assert!(!log.contains(common::backends::SECRET), "secret in the log");

    b.garage.restart();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "HIT");
    assert_eq!(r.bytes().await.unwrap(), body);
    let r = c.get(p.remote("gen", "b.bin")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 1000);
}

#[tokio::test]
async fn killing_a_replica_mid_multipart_upload_leaves_no_object() {
    let Some(b) = start() else { return };
    let up = TestUpstream::start();
    let body = test_bytes(40 * 1024 * 1024, 48);
    up.put_slow(
        "files/k.bin",
        body.clone(),
        1024 * 1024,
        Duration::from_millis(30),
    );
    let name = unique_name();
    let mut p = Proxy::start_on(Some(b.clone()), &name, &generic(&up, ""), "");
    let c = client();
    let r = c.get(p.remote("gen", "k.bin")).send().await.unwrap();
    let mut s = r.bytes_stream();
    let mut got = 0;
    while got < 20 * 1024 * 1024 {
        got += s.next().await.unwrap().unwrap().len();
    }
    // At least two 8 MiB parts are up: a multipart upload is in progress.
    assert!(
        b.garage.uploads(&name).await >= 1,
        "multipart upload started"
    );
    p.kill();
    drop(s);
    assert!(p.stored("gen/k.bin").await.is_none(), "no partial object");
    assert!(p.stored_keys("gen/").await.is_empty());

    // A replica that died holding the lease does not block the next one for long.
    up.set_mode("files/k.bin", Mode::Normal);
    let p2 = Proxy::start_on(Some(b.clone()), &name, &generic(&up, ""), "");
    let started = Instant::now();
    let r = c.get(p2.remote("gen", "k.bin")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (n, sha) = body_sha(r).await;
    assert_eq!(n, body.len() as u64);
    assert_eq!(sha, sha256_hex(&body));
    assert!(started.elapsed() < Duration::from_secs(30));
    wait_for_get_hit(&c, &p2.remote("gen", "k.bin")).await;
    assert_eq!(
        sha256_hex(&p2.stored("gen/k.bin").await.unwrap()),
        sha256_hex(&body)
    );
}

/// What one request of the load saw.
struct Outcome {
    name: String,
    /// The phase when the request ended (it is filed under the one it started in).
    ended_in: &'static str,
    status: Option<u16>,
    took: Duration,
    /// A 200 whose body was not the upstream's bytes.
    corrupt: bool,
}

/// Load runs while Redis, then Garage, are stopped and started again. No request hangs: each
/// ends, with its body or an error status, well within the backend timeouts. No 200 ever
/// carries wrong bytes. Once both are back, every kind of request succeeds again without a
/// restart of `serve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_and_garage_restarted_under_load() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let Some(b) = start() else { return };
    let up = TestUpstream::start();
    // Small objects (served from memory once read), larger ones (every hit reads S3), an index
    // file that expires every second, and a supply of names never asked for before (misses).
    let mut files: Vec<(String, bytes::Bytes)> = Vec::new();
    for i in 0..8 {
        files.push((format!("s{i}.bin"), test_bytes(8_000, 500 + i)));
    }
    for i in 0..4 {
        files.push((format!("l{i}.bin"), test_bytes(600_000, 520 + i)));
    }
    files.push(("repo.idx".into(), test_bytes(3_000, 530)));
    for (name, body) in &files {
        up.put(&format!("files/{name}"), body.clone());
    }
    const MISSES: usize = 4_000;
    let miss_body = |i: usize| test_bytes(2_000 + i % 7, 1_000 + i as u64);
    for i in 0..MISSES {
        up.put(&format!("files/m{i}.bin"), miss_body(i));
    }
    let remotes = generic(&up, "    cache:\n      index_ttl: 1\n");
    let p = Arc::new(Proxy::start_on(
        Some(b.clone()),
        &unique_name(),
        &remotes,
        "",
    ));
    let c = client();
    for (name, _) in &files {
        let url = p.remote("gen", name);
        c.get(&url).send().await.unwrap().bytes().await.unwrap();
        wait_for_get_hit(&c, &url).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let next_miss = Arc::new(AtomicUsize::new(0));
    let outcomes: Arc<Mutex<Vec<(&'static str, Outcome)>>> = Arc::default();
    let phase: Arc<Mutex<&'static str>> = Arc::new(Mutex::new("before"));
    let files = Arc::new(files);
    let mut workers = Vec::new();
    for w in 0..8usize {
        let (p, c, stop, next_miss, outcomes, phase, files) = (
            p.clone(),
            c.clone(),
            stop.clone(),
            next_miss.clone(),
            outcomes.clone(),
            phase.clone(),
            files.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut n = w;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (name, expected) = if n % 4 == 0 {
                    let i = next_miss.fetch_add(1, Ordering::Relaxed) % MISSES;
                    (format!("m{i}.bin"), miss_body(i))
                } else {
                    files[n % files.len()].clone()
                };
                let in_phase = *phase.lock().unwrap();
                let started = Instant::now();
                let got = tokio::time::timeout(Duration::from_secs(60), async {
                    let r = c.get(p.remote("gen", &name)).send().await?;
                    let status = r.status().as_u16();
                    let body = r.bytes().await?;
                    Ok::<_, reqwest::Error>((status, body))
                })
                .await;
                let outcome = match got {
                    Ok(Ok((status, body))) => Outcome {
                        name: name.clone(),
                        ended_in: *phase.lock().unwrap(),
                        status: Some(status),
                        took: started.elapsed(),
                        corrupt: status == 200 && body != expected,
                    },
                    // A body cut short by a failing backend is an error the client sees.
                    Ok(Err(_)) => Outcome {
                        name: name.clone(),
                        ended_in: *phase.lock().unwrap(),
                        status: None,
                        took: started.elapsed(),
                        corrupt: false,
                    },
                    Err(_) => Outcome {
                        name: name.clone(),
                        ended_in: *phase.lock().unwrap(),
                        status: None,
                        took: Duration::MAX,
                        corrupt: false,
                    },
                };
                outcomes.lock().unwrap().push((in_phase, outcome));
            }
        }));
    }
    let set_phase = |name: &'static str| *phase.lock().unwrap() = name;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Runs `step` on the backends off the runtime (stops and restarts block), then lets the
    // load run for 3 s.
    let backend_step = |step: fn(&Backends)| {
        let bb = b.clone();
        async move {
            tokio::task::spawn_blocking(move || step(&bb))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    };
    set_phase("redis");
    backend_step(|b| b.redis.stop()).await;
    backend_step(|b| b.redis.restart()).await;

    set_phase("garage");
    backend_step(|b| b.garage.stop()).await;
    backend_step(|b| b.garage.restart()).await;
    set_phase("after");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let count = |ph: &str| outcomes.iter().filter(|(p, _)| *p == ph).count();
    // Failures of requests that started and ended in the phase.
    let failed = |ph: &str| {
        outcomes
            .iter()
            .filter(|(p, o)| *p == ph && o.ended_in == ph && o.status != Some(200))
            .count()
    };
    for ph in ["before", "redis", "garage", "after"] {
        eprintln!("{ph}: {} requests, {} not 200", count(ph), failed(ph));
        assert!(count(ph) > 0, "no request ran during {ph}");
        for (_, o) in outcomes
            .iter()
            .filter(|(p, o)| *p == ph && o.status != Some(200))
            .take(5)
        {
            eprintln!(
                "  {ph}: {} -> {:?} after {:?}, ended in {}",
                o.name, o.status, o.took, o.ended_in
            );
        }
    }
    let slowest = outcomes.iter().map(|(_, o)| o.took).max().unwrap();
    assert!(
        slowest < Duration::from_secs(20),
        "a request hung for {slowest:?} (backend timeouts are 2 s for Redis, 3 s to connect to S3)"
    );
    assert!(
        !outcomes.iter().any(|(_, o)| o.corrupt),
        "a 200 carried bytes that were not the upstream's"
    );
    for (_, o) in outcomes.iter() {
        if let Some(s) = o.status {
            assert!(
                s == 200 || s == 502 || s == 503 || s == 504,
                "unexpected status {s}"
            );
        }
    }
    assert_eq!(failed("before"), 0, "errors before any restart");
    // While Redis is away, objects are served from S3 and fetched from upstream.
    assert_eq!(failed("redis"), 0, "a Redis outage must not fail requests");

    // Recovered: health, hits of every kind, and new misses, all correct, with no restart.
    assert!(becomes_healthy(&c, &p, 100).await, "health recovers");
    for (name, body) in files.iter() {
        let r = c.get(p.remote("gen", name)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(r.bytes().await.unwrap(), body, "{name}");
    }
    let i = next_miss.fetch_add(1, Ordering::Relaxed) % MISSES;
    let r = c
        .get(p.remote("gen", &format!("m{i}.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), miss_body(i));
    assert_eq!(failed("after"), 0, "errors after both restarts");
}

/// The value of the sample `series` (name and labels, as the exposition prints them) in the
/// metrics `p` serves, 0 when it is absent.
async fn metric(c: &reqwest::Client, p: &Proxy, series: &str) -> f64 {
    let text = common::get_text(c, &p.url("/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// GETs `url`; asserts a whole, correct body and returns `X-Cache`.
async fn get_whole(c: &reqwest::Client, url: &str, want: &str, len: u64) -> String {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let cache = header(&r, "x-cache");
    let (n, sha) = body_sha(r).await;
    assert_eq!((n, sha.as_str()), (len, want), "{url} arrives whole");
    cache
}

#[tokio::test]
async fn two_replicas_keep_the_shared_total_under_max_size() {
    let Some(b) = start() else { return };
    let up = TestUpstream::start();
    const SIZE: usize = 512 * 1024;
    const MAX: u64 = 4 * 1024 * 1024;
    let files: Vec<(String, String)> = (0..24u64)
        .map(|i| {
            let body = test_bytes(SIZE, 300 + i);
            let sha = sha256_hex(&body);
            up.put(&format!("files/f{i:02}.bin"), body);
            (format!("f{i:02}.bin"), sha)
        })
        .collect();
    let name = unique_name();
    let limit = "  max_size: 4 MiB\n";
    let r1 = Proxy::start_on_with(Some(b.clone()), &name, limit, &generic(&up, ""));
    let r2 = Proxy::start_on_with(Some(b.clone()), &name, limit, &generic(&up, ""));
    let replicas = [&r1, &r2];
    let c = client();
    // Two popular files, read through both replicas before the rest arrive; reads reach Redis
    // once a second.
    for (f, sha) in &files[..2] {
        for r in replicas {
            for _ in 0..3 {
                get_whole(&c, &r.remote("gen", f), sha, SIZE as u64).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Three times the limit in distinct files, alternating replicas, the popular ones read
    // again every few files.
    for (i, (f, sha)) in files[2..].iter().enumerate() {
        let r = replicas[i % 2];
        get_whole(&c, &r.remote("gen", f), sha, SIZE as u64).await;
        if i % 4 == 3 {
            for (hot, hot_sha) in &files[..2] {
                get_whole(
                    &c,
                    &replicas[(i / 4) % 2].remote("gen", hot),
                    hot_sha,
                    SIZE as u64,
                )
                .await;
            }
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let stored = b.garage.bytes_under(&format!("{name}/")).await;
        assert!(
            stored <= MAX + SIZE as u64,
            "after {f}: {stored} bytes in the bucket, over the limit by more than one object"
        );
    }
    // Reads reach Redis within a second, the gauges follow the shared totals every two.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stored = b.garage.bytes_under(&format!("{name}/")).await;
    assert!(stored <= MAX, "settled: {stored} bytes stored, limit {MAX}");
    assert!(
        stored >= MAX / 2,
        "eviction removed only what it had to: {stored} bytes kept"
    );
    let series = r#"artifactapi_evictions_total{reason="max_size",repository="gen"}"#;
    let evicted = metric(&c, &r1, series).await + metric(&c, &r2, series).await;
    assert!(
        evicted >= 14.0,
        "{evicted} evictions for 24 files of which 8 fit"
    );
    // Both replicas report the shared total, not their own share of it.
    for r in replicas {
        let gauge = metric(&c, r, r#"artifactapi_cache_bytes{repository="gen"}"#).await;
        assert_eq!(gauge as u64, stored, "the size gauge is the shared total");
    }
    // The popular files were kept.
    for (hot, hot_sha) in &files[..2] {
        for r in replicas {
            let cache = get_whole(&c, &r.remote("gen", hot), hot_sha, SIZE as u64).await;
            assert_eq!(cache, "HIT", "{hot} through {}", r.url(""));
        }
    }
    assert_eq!(up.count("GET", "files/f00.bin"), 1);
    assert_eq!(up.count("GET", "files/f01.bin"), 1);
}

#[tokio::test]
async fn records_from_before_usage_was_kept_are_counted_once() {
    let Some(b) = start() else { return };
    let up = TestUpstream::start();
    let name = unique_name();
    let mut r1 = Proxy::start_on(Some(b.clone()), &name, &generic(&up, ""), "");
    let c = client();
    let mut total = 0u64;
    for i in 0..6u64 {
        let len = 100_000 + i as usize * 1000;
        let body = test_bytes(len, 400 + i);
        let sha = sha256_hex(&body);
        up.put(&format!("files/old{i}.bin"), body);
        get_whole(
            &c,
            &r1.remote("gen", &format!("old{i}.bin")),
            &sha,
            len as u64,
        )
        .await;
        total += len as u64;
    }
    // As a version that kept no usage would have left Redis: records, and nothing else.
    let usage_keys: Vec<String> = [
        "size",
        "bytes",
        "objects",
        "hits",
        "worth:gen",
        "read:gen",
        "seeded",
    ]
    .iter()
    .map(|k| format!("{name}:usage:{k}"))
    .collect();
    let mut del = vec!["DEL"];
    del.extend(usage_keys.iter().map(String::as_str));
    b.redis.cli(&del);
    let gauge = r#"artifactapi_cache_bytes{repository="gen"}"#;
    let objects = r#"artifactapi_cache_objects{repository="gen"}"#;
    for _ in 0..2 {
        r1.restart();
        // A new client: the old one's pooled connection went with the old process.
        let c = client();
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(&c, &r1, gauge).await as u64 != total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            metric(&c, &r1, gauge).await as u64,
            total,
            "every old record is counted"
        );
        assert_eq!(metric(&c, &r1, objects).await, 6.0, "and counted once");
    }
    // A second replica starting on the same cache counts nothing again.
    let r2 = Proxy::start_on(Some(b.clone()), &name, &generic(&up, ""), "");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(metric(&c, &r2, gauge).await as u64, total);
    assert_eq!(metric(&c, &r2, objects).await, 6.0);
}

#[tokio::test]
async fn redis_over_tls_with_a_password_and_a_private_ca() {
    let password = "tls-pass-0123456789";
    let Some(redis) = common::backends::Redis::start_tls(password) else {
        return;
    };
    let up = TestUpstream::start();
    let body = test_bytes(50_000, 77);
    up.put("files/t.bin", body.clone());
    let metadata = |ca: &std::path::Path| {
        format!(
            "metadata:\n  backend: redis\n  url: rediss://:{password}@127.0.0.1:{}\n  \
             ca_file: {}\n  key_prefix: \"tls:\"\n",
            redis.port,
            ca.display()
        )
    };
    let data = tempfile::tempdir().unwrap();
    let p = Proxy::start_in_with_extra(
        data.path(),
        "",
        &generic(&up, ""),
        &metadata(&redis.ca_file()),
    );
    let c = client();
    let health = c.get(p.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "{}", health.text().await.unwrap());
    let url = p.remote("gen", "t.bin");
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "MISS");
    assert_eq!(r.bytes().await.unwrap(), body);
    wait_for_get_hit(&c, &url).await;
    // The record went to Redis, over TLS.
    let keys = redis.cli(&["--scan", "--pattern", "tls:meta:*"]);
    assert_eq!(keys.trim(), "tls:meta:gen/t.bin");

    // A CA that did not sign the server's certificate: Redis is unreachable, and the error
    // says so without the password.
    let other = tempfile::tempdir().unwrap();
    let wrong = common::backends::make_ca(other.path(), "other");
    let data2 = tempfile::tempdir().unwrap();
    let p2 = Proxy::start_in_with_extra(data2.path(), "", &generic(&up, ""), &metadata(&wrong));
    let health = c.get(p2.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(
        health["backends"]["metadata"]["reachable"], false,
        "{health}"
    );
    // Objects are still served, from upstream, uncoordinated.
    let r = c.get(p2.remote("gen", "t.bin")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), body);
    assert!(p2.log_shows("metadata"), "the failure is logged");
    assert!(
        !p.log_shows(password) && !p2.log_shows(password),
        "the password never reaches the log"
    );
}
