//! Reloading the configuration without a restart: SIGHUP and `POST /api/v1/admin/reload`
//! change tokens, patterns and repositories for new requests while hits go on; a bad file is
//! refused with its file:line:col report and the configuration in force stays.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Proxy, TestUpstream, client, test_bytes, wait_for_hit};

const OLD: &str = "old-secret-0123456789";
const NEW: &str = "new-secret-0123456789";
const ADMIN: &str = "ops-secret-0123456789";

fn auth(writer: &str) -> String {
    format!(
        "auth:\n  tokens:\n    - name: writer\n      secret: {writer}\n      roles:\n        \"*\": [write]\n    \
         - name: ops\n      secret: {ADMIN}\n      roles:\n        \"*\": [admin]\n"
    )
}

fn remotes(up: &TestUpstream, patterns: &str, more: &str) -> String {
    format!(
        "  gen:\n    type: remote\n    package: generic\n    base_url: {}/files\n    include_patterns: [{patterns}]\n  \
         uploads:\n    type: local\n    package: generic\n{more}",
        up.url()
    )
}

/// Replaces the `auth:` and `remotes:` sections of the proxy's configuration file.
fn rewrite(p: &Proxy, auth: &str, remotes: &str) {
    let text = std::fs::read_to_string(p.config_file()).unwrap();
    let head = &text[..text.find("auth:").unwrap()];
    std::fs::write(p.config_file(), format!("{head}{auth}remotes:\n{remotes}")).unwrap();
}

/// Waits until the log holds `needle` more than `before` times.
fn wait_log(p: &Proxy, needle: &str, before: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.log_count(needle) <= before {
        assert!(Instant::now() < deadline, "the log never showed {needle:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn status(r: reqwest::RequestBuilder) -> u16 {
    r.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_the_admin_endpoint_reload_under_load_and_a_bad_file_changes_nothing() {
    let up = TestUpstream::start();
    up.put("files/a.bin", test_bytes(20_000, 1));
    up.put("files/b.txt", "text");
    let p = Proxy::start_on(
        None,
        &common::backends::unique_name(),
        &remotes(&up, "'\\.bin$'", ""),
        &auth(OLD),
    );
    let c = client();
    let hit = p.remote("gen", "a.bin");
    c.get(&hit).send().await.unwrap().bytes().await.unwrap();
    wait_for_hit(&c, &hit).await;
    assert_eq!(status(c.get(p.remote("gen", "b.txt"))).await, 403);
    let put = |secret: &str, name: &str| {
        c.put(p.url(&format!("/api/v1/local/uploads/{name}")))
            .bearer_auth(secret)
            .body("uploaded")
    };
    assert_eq!(status(put(OLD, "one.txt")).await, 201);

    // Hits go on through every reload below.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (c, url) = (client(), hit.clone());
            let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let ok = match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            r.bytes().await.is_ok_and(|b| b.len() == 20_000)
                        }
                        _ => false,
                    };
                    let counter = if ok { &served } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // SIGHUP: a new token, a wider pattern and a new remote.
    let extra = format!(
        "  more:\n    type: remote\n    package: generic\n    base_url: {}/files\n",
        up.url()
    );
    rewrite(
        &p,
        &auth(NEW),
        &remotes(&up, "'\\.bin$', '\\.txt$'", &extra),
    );
    let before = p.log_count("configuration reloaded");
    p.signal("HUP");
    wait_log(&p, "configuration reloaded", before);
    assert_eq!(
        status(put(OLD, "two.txt")).await,
        401,
        "the old token is gone"
    );
    assert_eq!(status(put(NEW, "two.txt")).await, 201, "the new one works");
    assert_eq!(
        status(c.get(p.remote("gen", "b.txt"))).await,
        200,
        "the new pattern applies"
    );
    assert_eq!(
        status(c.get(p.remote("more", "a.bin"))).await,
        200,
        "the new remote serves"
    );

    // A bad file: refused with its location, and the configuration in force stays.
    let good = std::fs::read_to_string(p.config_file()).unwrap();
    std::fs::write(
        p.config_file(),
        good.replace(
            "package: generic\n    base_url",
            "package: nonsense\n    base_url",
        ),
    )
    .unwrap();
    let before = p.log_count("configuration not reloaded");
    p.signal("HUP");
    wait_log(&p, "configuration not reloaded", before);
    let file = p.config_file().display().to_string();
    assert!(
        p.log_shows(&format!("{file}:")),
        "the report names the file"
    );
    assert_eq!(
        status(put(NEW, "three.txt")).await,
        201,
        "still the new token"
    );
    assert_eq!(status(c.get(p.remote("more", "a.bin"))).await, 200);

    // The admin endpoint: a bad file is 400 with the same report; a good one is put in force.
    let reload = || c.post(p.url("/api/v1/admin/reload"));
    assert_eq!(status(reload().bearer_auth(NEW)).await, 403, "admin only");
    let r = reload().bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_config");
    let message = body["message"].as_str().unwrap();
    let located = regex::Regex::new(&format!("{}:[0-9]+:[0-9]+: ", regex::escape(&file))).unwrap();
    assert!(located.is_match(message), "file:line:col in {message}");
    rewrite(&p, &auth(OLD), &remotes(&up, "'\\.bin$'", ""));
    let r = reload().bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["repositories"], 2, "{body}");
    assert_eq!(
        status(c.get(p.remote("more", "a.bin"))).await,
        404,
        "the removed remote is gone"
    );
    assert_eq!(status(put(OLD, "four.txt")).await, 201);

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert!(served.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed across the reloads"
    );
}
