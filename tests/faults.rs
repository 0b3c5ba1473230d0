//! Fault suite: upstream bodies cut at random offsets, `kill -9` of `serve` in the middle of
//! many fills, and a soak of mixed hits and misses on 256 connections. Each test checks that
//! no client is ever handed a wrong body as complete, that nothing partial is kept on disk, and
//! that the server recovers.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Mode, Proxy, TestUpstream, client, get_json, sha256_hex, test_bytes, walk};

fn generic(up: &TestUpstream) -> String {
    format!(
        "  gen:\n    type: remote\n    package: generic\n    base_url: {}/files\n",
        up.url()
    )
}

/// A small seeded generator (xorshift64*), so a failing run can be repeated from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The seed from `ARTIFACTAPI_FAULT_SEED`, or the clock; always printed.
fn seed() -> u64 {
    let seed = std::env::var("ARTIFACTAPI_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(artifactapi::now_ms);
    eprintln!("fault seed: {seed} (set ARTIFACTAPI_FAULT_SEED={seed} to repeat)");
    seed
}

/// What one client got.
#[derive(Debug)]
enum Outcome {
    /// A status other than 200.
    Status(u16),
    /// 200 and a body the client accepted as complete: its length and SHA-256.
    Complete(usize, String),
    /// The request or the body failed (connection closed early, chunked body not terminated);
    /// the reason is read in assertion messages.
    #[allow(dead_code)]
    Aborted(String),
}

async fn fetch(c: &reqwest::Client, url: &str) -> Outcome {
    let r = match c.get(url).send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Aborted(e.to_string()),
    };
    if r.status() != 200 {
        return Outcome::Status(r.status().as_u16());
    }
    match r.bytes().await {
        Ok(b) => Outcome::Complete(b.len(), sha256_hex(&b)),
        Err(e) => Outcome::Aborted(e.to_string()),
    }
}

/// Waits until the server reports no fill in flight.
async fn fills_settled(c: &reqwest::Client, proxy: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = get_json(c, &proxy.url("/health")).await;
        if health["fills_in_flight"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "fills still running: {health}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every object file (not temp file) under `objects/{remote}/`, by its path below that
/// directory, with its SHA-256.
fn stored_objects(proxy: &Proxy, remote: &str) -> HashMap<String, String> {
    let root = proxy.data_dir().join("objects").join(remote);
    let mut out = HashMap::new();
    walk(&root, &mut |p| {
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".artifactapi-tmp-")
        {
            return;
        }
        let rel = p
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        out.insert(rel, sha256_hex(&std::fs::read(p).unwrap()));
    });
    out
}

/// 100 objects from 1 byte to 64 MiB (mostly small): each first fill is cut at a random
/// offset, with or without Content-Length, while 1 to 3 clients follow it. No client may get a
/// complete 200 body from a cut fill, nothing may be kept, and the next fill must be whole. At
/// the end every stored object, served from the cache with the upstream stopped and read from
/// disk, matches the upstream's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_bodies_never_serve_or_keep_corrupt_objects() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let mut up = TestUpstream::start();
    let proxy = Proxy::start(&generic(&up));
    let c = client();
    let mut expected: HashMap<String, (usize, String)> = HashMap::new();

    for i in 0..100u64 {
        let size = match i {
            99 => 64 << 20,
            _ if i % 12 == 11 => (1 << 20) + rng.below(15 << 20) as usize,
            // Log-uniform from 1 byte to 1 MiB.
            _ => {
                let bits = rng.below(21);
                (1usize << bits) + rng.below(1 << bits) as usize
            }
        }
        .min(64 << 20);
        let path = format!("c/{i}/obj-{size}.bin");
        let body = test_bytes(size, seed ^ (i << 32));
        let sha = sha256_hex(&body);
        up.put(&format!("files/{path}"), body);
        let url = proxy.remote("gen", &path);

        // One or two cut fills, then a whole one.
        let cuts = 1 + rng.below(2);
        for _ in 0..cuts {
            let after = rng.below(size as u64) as usize;
            let mode = if rng.below(4) == 0 {
                Mode::CutUnsized { after }
            } else {
                Mode::Cut { after }
            };
            up.set_mode(&format!("files/{path}"), mode.clone());
            let clients = 1 + rng.below(3) as usize;
            let outcomes = futures::future::join_all((0..clients).map(|_| fetch(&c, &url))).await;
            for o in &outcomes {
                assert!(
                    !matches!(o, Outcome::Complete(..)),
                    "seed {seed}, {path} ({size} bytes) cut by {mode:?}: a client got a \
                     complete body: {outcomes:?}"
                );
                if let Outcome::Status(s) = o {
                    assert!(*s >= 500, "seed {seed}, {path}: unexpected status {s}");
                }
            }
            fills_settled(&c, &proxy).await;
            assert!(
                !proxy.data_dir().join("objects/gen").join(&path).exists(),
                "seed {seed}: {path} kept after a fill cut by {mode:?}"
            );
            assert!(proxy.temp_files().is_empty(), "{:?}", proxy.temp_files());
        }

        up.set_mode(&format!("files/{path}"), Mode::Normal);
        match fetch(&c, &url).await {
            Outcome::Complete(len, got) => {
                assert_eq!((len, &got), (size, &sha), "seed {seed}, {path}: wrong body");
            }
            o => panic!("seed {seed}, {path}: whole fill failed: {o:?}"),
        }
        expected.insert(path, (size, sha));
    }
    fills_settled(&c, &proxy).await;

    // From the cache alone: every object is a hit with the upstream's bytes.
    up.stop();
    for (path, (size, sha)) in &expected {
        let r = c.get(proxy.remote("gen", path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["x-cache"], "HIT", "{path}");
        let b = r.bytes().await.unwrap();
        assert_eq!((b.len(), &sha256_hex(&b)), (*size, sha), "{path}");
    }
    // On disk: exactly the expected objects, each whole, and no temp file.
    let stored = stored_objects(&proxy, "gen");
    assert_eq!(stored.len(), expected.len());
    for (path, sha) in &stored {
        assert_eq!(Some(sha), expected.get(path).map(|e| &e.1), "{path}");
    }
    assert!(proxy.temp_files().is_empty(), "{:?}", proxy.temp_files());
}

/// `kill -9` while 20 slow fills stream: after the restart no temp file and no partial object
/// is left, and every object is then served whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_20_fills_then_restart() {
    let mut up = TestUpstream::start();
    let mut proxy = Proxy::start(&generic(&up));
    let c = client();
    let size = 4 << 20;
    let paths: Vec<String> = (0..20).map(|i| format!("k/obj-{i}.bin")).collect();
    let bodies: Vec<Bytes> = (0..20).map(|i| test_bytes(size, 900 + i)).collect();
    for (p, b) in paths.iter().zip(&bodies) {
        up.put_slow(
            &format!("files/{p}"),
            b.clone(),
            64 * 1024,
            Duration::from_millis(100),
        );
    }
    let clients: Vec<_> = paths
        .iter()
        .map(|p| {
            let (c, url) = (c.clone(), proxy.remote("gen", p));
            tokio::spawn(async move { fetch(&c, &url).await })
        })
        .collect();

    // Every fill has started writing its temp file.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let written = proxy
            .temp_files()
            .iter()
            .filter(|t| std::fs::metadata(t).map(|m| m.len() > 0).unwrap_or(false))
            .count();
        if written >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {written} fills are writing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.kill();
    for (p, h) in paths.iter().zip(clients) {
        let o = tokio::time::timeout(Duration::from_secs(30), h)
            .await
            .expect("client finished after the kill")
            .unwrap();
        assert!(
            !matches!(o, Outcome::Complete(..)),
            "{p}: complete body from a killed fill: {o:?}"
        );
    }
    assert_eq!(proxy.temp_files().len(), 20, "the kill left the temp files");
    assert!(stored_objects(&proxy, "gen").is_empty());

    proxy.restart();
    assert!(
        proxy.temp_files().is_empty(),
        "temp files after start-up: {:?}",
        proxy.temp_files()
    );
    assert!(stored_objects(&proxy, "gen").is_empty());

    for p in &paths {
        up.set_mode(&format!("files/{p}"), Mode::Normal);
    }
    let got = futures::future::join_all(paths.iter().map(|p| {
        let url = proxy.remote("gen", p);
        let c = c.clone();
        async move { fetch(&c, &url).await }
    }))
    .await;
    for ((p, b), o) in paths.iter().zip(&bodies).zip(got) {
        match o {
            Outcome::Complete(len, sha) => assert_eq!((len, sha), (size, sha256_hex(b)), "{p}"),
            o => panic!("{p}: {o:?}"),
        }
    }
    fills_settled(&c, &proxy).await;
    up.stop();
    let stored = stored_objects(&proxy, "gen");
    assert_eq!(stored.len(), 20);
    for (p, b) in paths.iter().zip(&bodies) {
        assert_eq!(stored[p], sha256_hex(b), "{p}");
        match fetch(&c, &proxy.remote("gen", p)).await {
            Outcome::Complete(len, sha) => assert_eq!((len, sha), (size, sha256_hex(b)), "{p}"),
            o => panic!("{p} from the cache: {o:?}"),
        }
    }
    assert!(proxy.temp_files().is_empty());
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// 256 connections for `ARTIFACTAPI_SOAK_SECS` seconds (default 60): cached hits of several
/// sizes mixed with a steady stream of misses. Every response must be a 200 with the right
/// bytes, and the server's resident memory must stay flat after warm-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_256_connections_hits_and_misses() {
    const CONNECTIONS: usize = 256;
    const MISSES_PER_SEC: u64 = 200;
    let secs: u64 = std::env::var("ARTIFACTAPI_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let up = TestUpstream::start();
    let proxy = Proxy::start(&generic(&up));
    let pid = proxy.pid();

    // Hits: 64 objects of 1 KiB to 256 KiB. Misses: a fresh key each time, bodies from a pool.
    let hits: Arc<Vec<(String, Bytes)>> = Arc::new(
        (0..64u64)
            .map(|i| {
                let body = test_bytes(1024 << (i % 9), 5000 + i);
                up.put(&format!("files/h/{i}.bin"), body.clone());
                (proxy.remote("gen", &format!("h/{i}.bin")), body)
            })
            .collect(),
    );
    let pool: Arc<Vec<Bytes>> = Arc::new(
        (0..16)
            .map(|i| test_bytes(4096 + i * 512, 7000 + i as u64))
            .collect(),
    );
    let max_misses = MISSES_PER_SEC * (secs + 5);
    for n in 0..max_misses {
        up.put(
            &format!("files/m/{n}.bin"),
            pool[n as usize % pool.len()].clone(),
        );
    }
    let c = client();
    for (url, body) in hits.iter() {
        assert_eq!(
            c.get(url).send().await.unwrap().bytes().await.unwrap(),
            body
        );
    }

    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let misses = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sampler = std::thread::spawn(move || {
        let mut samples = Vec::new();
        while Instant::now() < deadline {
            samples.push((start.elapsed().as_secs_f64(), rss_kib(pid)));
            std::thread::sleep(Duration::from_millis(500));
        }
        samples
    });
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|t| {
            let (hits, pool, misses, requests, errors) = (
                hits.clone(),
                pool.clone(),
                misses.clone(),
                requests.clone(),
                errors.clone(),
            );
            let base = proxy.remote("gen", "");
            tokio::spawn(async move {
                // One client per task, so each task holds its own connection.
                let c = reqwest::Client::builder()
                    .no_proxy()
                    .pool_max_idle_per_host(1)
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut rng = Rng::new(t as u64 + 1);
                while Instant::now() < deadline {
                    let allowed = (start.elapsed().as_millis() as u64) * MISSES_PER_SEC / 1000;
                    let issued = misses.load(Ordering::Relaxed);
                    let (url, expect) = if issued < allowed.min(max_misses)
                        && misses
                            .compare_exchange(
                                issued,
                                issued + 1,
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            )
                            .is_ok()
                    {
                        (
                            format!("{base}m/{issued}.bin"),
                            pool[issued as usize % pool.len()].clone(),
                        )
                    } else {
                        hits[rng.below(hits.len() as u64) as usize].clone()
                    };
                    requests.fetch_add(1, Ordering::Relaxed);
                    let problem = match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => match r.bytes().await {
                            Ok(b) if b == expect => None,
                            Ok(b) => Some(format!("{url}: wrong body of {} bytes", b.len())),
                            Err(e) => Some(format!("{url}: body: {e}")),
                        },
                        Ok(r) => Some(format!("{url}: status {}", r.status())),
                        Err(e) => Some(format!("{url}: {e}")),
                    };
                    if let Some(p) = problem {
                        errors.lock().unwrap().push(p);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let samples = sampler.join().unwrap();
    let errors = errors.lock().unwrap();
    let total = requests.load(Ordering::Relaxed);
    let missed = misses.load(Ordering::Relaxed);
    eprintln!(
        "soak: {total} requests ({missed} misses) in {secs} s, {} errors; RSS KiB over time: {:?}",
        errors.len(),
        samples.iter().map(|s| s.1).collect::<Vec<_>>()
    );
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert!(
        missed > 0 && total as u64 > missed,
        "the load mixed hits and misses"
    );

    // Flat: the peak of the last third stays close to the peak of the second third (the
    // first third is warm-up: connection buffers and allocator pools fill).
    let third = secs as f64 / 3.0;
    let peak = |from: f64, to: f64| {
        samples
            .iter()
            .filter(|s| s.0 >= from && s.0 < to)
            .map(|s| s.1)
            .max()
            .unwrap_or(0)
    };
    let (middle, last) = (peak(third, 2.0 * third), peak(2.0 * third, f64::MAX));
    assert!(middle > 0 && last > 0, "no RSS samples: {samples:?}");
    assert!(
        last <= middle + middle / 4 + 16 * 1024,
        "RSS grew from {middle} KiB to {last} KiB during the soak"
    );
}
