//! End-to-end tests of clients that try to exhaust the server: headers sent a byte at a time,
//! idle keep-alive connections, more connections than the cap, and hundreds of clients that
//! request a large hit and never read it. The built binary, raw TCP clients, and the server's
//! memory read from /proc.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Proxy, TestUpstream, client, rss_kib, test_bytes};

fn generic(up: &TestUpstream) -> String {
    format!(
        "  gen:\n    type: remote\n    package: generic\n    base_url: {}/files\n",
        up.url()
    )
}

/// `server:` keys, placed by the harness after its own `shutdown_grace`.
fn server(keys: &str) -> String {
    keys.lines().map(|l| format!("  {l}\n")).collect()
}

/// True once the server has closed `s` (EOF or reset), within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).unwrap()
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed() {
    let up = TestUpstream::start();
    up.put("files/a.txt", "hello");
    let proxy = Proxy::start_with(&generic(&up), &server("header_timeout: 2s"));

    // Slowloris: twenty clients that never finish their headers.
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(proxy.addr);
            s.write_all(b"GET /api/v1/remote/gen/a.txt HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    // One that trickles a header line every half second still runs out of time.
    let mut trickle = connect(proxy.addr);
    trickle.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    for i in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        if trickle
            .write_all(format!("X-{i}: y\r\n").as_bytes())
            .is_err()
        {
            break;
        }
    }
    assert!(closed_within(&mut trickle, Duration::from_secs(6)));
    assert!(started.elapsed() < Duration::from_secs(8));
    for s in &mut slow {
        assert!(
            closed_within(s, Duration::from_secs(6)),
            "a slow client stayed open"
        );
    }

    // An idle keep-alive connection is closed too, after answering its request.
    let mut idle = connect(proxy.addr);
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(closed_within(&mut idle, Duration::from_secs(6)));

    // A client that keeps up is not affected.
    let r = client()
        .get(proxy.remote("gen", "a.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), "hello");
}

#[tokio::test]
async fn connections_past_the_cap_get_a_503_and_the_server_recovers() {
    let up = TestUpstream::start();
    up.put("files/a.txt", "hello");
    let proxy = Proxy::start_with(
        &generic(&up),
        &server("max_connections: 20\nheader_timeout: 30s"),
    );
    // Twenty connections that say nothing hold every slot.
    let held: Vec<TcpStream> = (0..20).map(|_| connect(proxy.addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = connect(proxy.addr);
    extra
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(
        answer.contains(r#""error":"too_many_connections""#),
        "{answer}"
    );

    // Once they go, requests are served again.
    drop(held);
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match c.get(proxy.url("/health")).send().await {
            Ok(r) if r.status() == 200 => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("health did not recover: {other:?}"),
        }
    }
    let metrics = c
        .get(proxy.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("artifactapi_connections_refused_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn readers_that_stall_cost_little_memory_and_are_cut_off() {
    const SIZE: usize = 20 * 1024 * 1024;
    const READERS: usize = 300;
    let up = TestUpstream::start();
    let body = test_bytes(SIZE, 7);
    up.put("files/big.bin", body.clone());
    let proxy = Proxy::start_with(
        &generic(&up),
        &server("send_timeout: 4s\nmax_connections: 1000"),
    );
    let c = client();
    let r = c.get(proxy.remote("gen", "big.bin")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), SIZE);
    let r = c.get(proxy.remote("gen", "big.bin")).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(r.bytes().await.unwrap(), body);

    let before = rss_kib(proxy.pid());
    let mut stalled: Vec<TcpStream> = (0..READERS)
        .map(|_| {
            let mut s = connect(proxy.addr);
            s.write_all(b"GET /api/v1/remote/gen/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let during = rss_kib(proxy.pid());
    let grew_mib = during.saturating_sub(before) as f64 / 1024.0;
    println!(
        "{READERS} stalled readers of a {} MiB hit: RSS {before} KiB -> {during} KiB (+{grew_mib:.1} MiB)",
        SIZE >> 20
    );
    // What a stalled response may hold: one storage read and hyper's write buffer.
    assert!(
        grew_mib < 80.0,
        "{READERS} stalled readers grew RSS by {grew_mib:.1} MiB"
    );

    // Past send_timeout every one of them has been closed before it got the whole body: what
    // is left to read ends early.
    std::thread::sleep(Duration::from_secs(6));
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let ended = match s.read_to_end(&mut got) {
            Ok(_) => true,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        };
        assert!(ended, "a stalled reader stayed open");
        assert!(got.len() < SIZE, "a stalled reader got the whole body");
    }
    // And a reader that keeps up still gets every byte.
    let r = c.get(proxy.remote("gen", "big.bin")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), body);
}

#[tokio::test]
async fn two_hundred_thousand_distinct_404s_keep_memory_bounded_and_the_rate_steady() {
    use futures::StreamExt;
    const TOTAL: usize = 200_000;
    const WINDOW: usize = 20_000;
    let up = TestUpstream::start();
    let proxy = Proxy::start(&format!(
        "{}    cache:\n      negative_ttl: 1h\n",
        generic(&up)
    ));
    let c = client();
    let base = proxy.remote("gen", "missing");
    let before = rss_kib(proxy.pid());
    // Requests `range`, 64 at a time; the time they took.
    let run = |range: std::ops::Range<usize>| {
        let (c, base) = (c.clone(), base.clone());
        async move {
            let started = Instant::now();
            let statuses: Vec<u16> = futures::stream::iter(range)
                .map(|i| {
                    let req = c.get(format!("{base}/pkg-{i:07}/file-{i}.tar.gz"));
                    async move { req.send().await.unwrap().status().as_u16() }
                })
                .buffer_unordered(64)
                .collect()
                .await;
            assert!(statuses.iter().all(|s| *s == 404));
            started.elapsed()
        }
    };
    let first = run(0..WINDOW).await;
    run(WINDOW..TOTAL - WINDOW).await;
    let last = run(TOTAL - WINDOW..TOTAL).await;
    let after = rss_kib(proxy.pid());
    let grew_mib = after.saturating_sub(before) as f64 / 1024.0;
    println!(
        "{TOTAL} distinct 404s: first {WINDOW} in {first:?}, last {WINDOW} in {last:?}; RSS {before} KiB -> {after} KiB (+{grew_mib:.1} MiB)"
    );
    // The negative cache is bounded (32 MiB, SPEC §5.4), and inserting costs the same however
    // full it is.
    assert!(grew_mib < 64.0, "RSS grew by {grew_mib:.1} MiB");
    assert!(
        last.as_secs_f64() < first.as_secs_f64() * 2.0,
        "new 404s slowed down as the map filled: first {first:?}, last {last:?}"
    );
    // Recent 404s are still remembered: no upstream request for the last one again.
    let path = format!(
        "files/missing/pkg-{:07}/file-{}.tar.gz",
        TOTAL - 1,
        TOTAL - 1
    );
    assert_eq!(up.count("GET", &path), 1);
    let r = c
        .get(format!(
            "{base}/pkg-{:07}/file-{}.tar.gz",
            TOTAL - 1,
            TOTAL - 1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(up.count("GET", &path), 1);
}
