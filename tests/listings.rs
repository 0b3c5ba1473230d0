//! End-to-end tests of directory listings of local repositories: one directory level per
//! request, in pages that a client follows with `after`, on the filesystem and (with
//! ARTIFACTAPI_TEST_BACKEND=s3) on S3 with Redis.

mod common;

use std::collections::BTreeSet;

use common::{Proxy, client, status_and_code};
use futures::StreamExt;

const WRITER: &str = "writer-secret-0123456789";
const AUTH: &str = "auth:\n  tokens:\n    - name: writer\n      secret: writer-secret-0123456789\n      roles:\n        \"*\": [write]\n";
const LOCALS: &str = "  uploads:\n    type: local\n    package: generic\n";

#[tokio::test]
async fn listings_read_one_level_in_pages() {
    const FILES: usize = 1_200;
    let proxy = Proxy::start_with(LOCALS, AUTH);
    let c = client();
    let url = |path: &str| proxy.url(&format!("/api/v1/local/uploads/{path}"));
    // 1,200 files in big/, two subdirectories (one deep), and a neighbour the listing of big/
    // must not show.
    let mut paths: Vec<String> = (0..FILES).map(|i| format!("big/f-{i:05}.bin")).collect();
    paths.extend([
        "big/sub/x.bin".to_string(),
        "big/sub-deep/a/b/c/d.bin".to_string(),
        "other/y.bin".to_string(),
    ]);
    let statuses: Vec<u16> = futures::stream::iter(paths.iter())
        .map(|p| {
            let req = c.put(url(p)).bearer_auth(WRITER).body(p.clone());
            async move { req.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");

    // Follow the pages.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut page_url = format!("{}?limit=500", url("big/"));
        if let Some(after) = &next {
            page_url.push_str(&format!("&after={}", after.replace('/', "%2F")));
        }
        let page: serde_json::Value = c.get(page_url).send().await.unwrap().json().await.unwrap();
        pages += 1;
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 500);
        for e in entries {
            let name = e["name"].as_str().unwrap().to_string();
            if e["type"] == "file" {
                assert_eq!(e["size"], format!("big/{name}").len(), "{e}");
                assert_eq!(e["sha256"].as_str().unwrap().len(), 64, "{e}");
                seen.push(name);
            } else {
                assert_eq!(e["type"], "directory", "{e}");
                assert!(e.get("size").is_none(), "{e}");
                seen.push(format!("{name}/"));
            }
        }
        match page.get("next").and_then(|n| n.as_str()) {
            Some(n) => next = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an entry was listed twice");
    assert_eq!(seen.len(), FILES + 2);
    // In cursor order: bytewise, with a '/' after a directory's name.
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert!(seen.contains(&"sub/".to_string()) && seen.contains(&"sub-deep/".to_string()));
    assert!(
        !seen
            .iter()
            .any(|n| n.contains("x.bin") || n.contains("y.bin"))
    );

    // The root: two directories, nothing from below them.
    let root: serde_json::Value = c.get(url("")).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = root["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["big", "other"]);
    assert!(root.get("next").is_none());

    // Bad page parameters are 400; an unknown directory is 404.
    for q in ["limit=0", "limit=10001", "limit=x", "after=a/b", "after="] {
        let r = c.get(format!("{}?{q}", url("big/"))).send().await.unwrap();
        assert_eq!(status_and_code(r).await, (400, "bad_request".into()), "{q}");
    }
    let r = c.get(url("nope/")).send().await.unwrap();
    assert_eq!(status_and_code(r).await, (404, "not_found".into()));
}
