//! HTTP helpers for the tests: the client, header reads, waits for a cache hit, raw requests
//! for paths that URL libraries would normalise, and the error-body reads and assertions.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long a just-filled object may take to commit and be answered as a hit.
const HIT_BOUND: Duration = Duration::from_secs(10);

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// The first value of header `name`, or "" when it is absent.
pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Every value of header `name`, joined with ", ".
pub fn header_all(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Polls HEAD `url` until the proxy answers it from its cache.
pub async fn wait_for_hit(c: &reqwest::Client, url: &str) {
    wait_for(c, url, reqwest::Method::HEAD).await
}

/// Polls GET `url` (reading each body) until the proxy answers it from its cache.
pub async fn wait_for_get_hit(c: &reqwest::Client, url: &str) {
    wait_for(c, url, reqwest::Method::GET).await
}

async fn wait_for(c: &reqwest::Client, url: &str, method: reqwest::Method) {
    let start = Instant::now();
    while start.elapsed() < HIT_BOUND {
        let r = c.request(method.clone(), url).send().await.unwrap();
        if header(&r, "x-cache") == "HIT" {
            return;
        }
        let _ = r.bytes().await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{url} never became a hit");
}

/// GET `url` and its body as JSON.
pub async fn get_json(c: &reqwest::Client, url: &str) -> serde_json::Value {
    c.get(url).send().await.unwrap().json().await.unwrap()
}

/// GET `url` and its body as text (e.g. `/metrics`).
pub async fn get_text(c: &reqwest::Client, url: &str) -> String {
    c.get(url).send().await.unwrap().text().await.unwrap()
}

/// The `error` code of a JSON error body (`{"error": "..."}`).
pub async fn error_code(r: reqwest::Response) -> String {
    let v: serde_json::Value = r.json().await.unwrap();
    v["error"].as_str().unwrap_or_default().to_string()
}

/// The status and the error code of either error shape: `{"error"}` or, on `/v2/`,
/// `{"errors":[{"code"}]}` ("" when the body is neither).
pub async fn status_and_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    let code = v["error"]
        .as_str()
        .or(v["errors"][0]["code"].as_str())
        .unwrap_or_default()
        .to_string();
    (status, code)
}

/// Asserts a registry error: `status`, the registry API version header, and a body
/// `{"errors":[{"code","message","detail"}]}` with `code`.
pub async fn expect_registry_error(r: reqwest::Response, status: u16, code: &str) {
    let url = r.url().to_string();
    assert_eq!(r.status(), status, "{url}");
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0",
        "{url}"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    let e = &body["errors"][0];
    assert_eq!(e["code"], code, "{url}: {body}");
    assert!(e["message"].is_string(), "{url}: {body}");
    assert!(e.get("detail").is_some(), "{url}: {body}");
}

/// Sends `request` as raw bytes and returns the status (0 if there was no HTTP answer) and
/// the body.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The server may answer and close before reading an oversized request to its end.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

/// A raw `GET raw_path`, for paths that URL libraries would normalise. Returns the status code
/// and the body.
pub fn raw_get(addr: SocketAddr, raw_path: &str) -> (u16, String) {
    raw_request(
        addr,
        format!("GET {raw_path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
}
