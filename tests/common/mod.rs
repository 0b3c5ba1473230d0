//! Test harness: a controllable upstream HTTP server (counts requests, can be slow, cut bodies,
//! answer any status, or stop), the built `artifactapi` binary run as a real process, a raw
//! HTTP client for paths that normal clients would normalise, and tool checks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// How the upstream answers for one path.
#[derive(Clone, Debug)]
pub enum Mode {
    Normal,
    /// Sends the body in `chunk`-byte pieces with `delay` between them.
    Slow {
        chunk: usize,
        delay: Duration,
    },
    /// Announces the full Content-Length, sends `after` bytes, then drops the connection.
    Cut {
        after: usize,
    },
    /// Answers this status with a short body.
    Status(u16),
    /// Like `Cut`, but without Content-Length (a chunked body that is never terminated).
    CutUnsized {
        after: usize,
    },
}

#[derive(Clone)]
pub struct UpFile {
    pub body: Bytes,
    pub etag: Option<String>,
    pub mode: Mode,
}

#[derive(Default)]
struct UpState {
    files: Mutex<HashMap<String, UpFile>>,
    counts: Mutex<HashMap<String, usize>>,
    conditional: Mutex<HashMap<String, usize>>,
    finished: Mutex<HashMap<String, Instant>>,
    dir: Mutex<Option<PathBuf>>,
}

/// An upstream server on its own thread and runtime, so stopping it really closes every
/// connection.
pub struct TestUpstream {
    pub addr: SocketAddr,
    state: Arc<UpState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestUpstream {
    pub fn start() -> TestUpstream {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), Arc::default())
    }

    fn start_on(addr: SocketAddr, state: Arc<UpState>) -> TestUpstream {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = bind_retry(addr).await;
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new().fallback(handle).with_state(st);
                tokio::select! {
                    _ = axum::serve(listener, app) => {},
                    _ = stop_rx => {},
                }
            });
            rt.shutdown_background();
        });
        let addr = addr_rx.recv().unwrap();
        TestUpstream {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `body` at `path` (no leading `/`), with a strong ETag derived from its content.
    pub fn put(&self, path: &str, body: impl Into<Bytes>) {
        let body = body.into();
        let etag = format!("\"{}\"", &sha256_hex(&body)[..16]);
        self.put_file(
            path,
            UpFile {
                body,
                etag: Some(etag),
                mode: Mode::Normal,
            },
        );
    }

    pub fn put_file(&self, path: &str, file: UpFile) {
        self.state
            .files
            .lock()
            .unwrap()
            .insert(path.to_string(), file);
    }

    pub fn set_mode(&self, path: &str, mode: Mode) {
        if let Some(f) = self.state.files.lock().unwrap().get_mut(path) {
            f.mode = mode;
        }
    }

    /// Also serves files from `dir` for paths not put explicitly.
    pub fn serve_dir(&self, dir: &Path) {
        *self.state.dir.lock().unwrap() = Some(dir.to_path_buf());
    }

    /// How many `method` requests reached `path`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        let key = format!("{method} /{path}");
        *self.state.counts.lock().unwrap().get(&key).unwrap_or(&0)
    }

    /// All requests seen, by method and path.
    pub fn total_requests(&self) -> usize {
        self.state.counts.lock().unwrap().values().sum()
    }

    /// Every request seen, as `METHOD /path` with the path as sent (still percent-encoded).
    pub fn requests(&self) -> Vec<String> {
        self.state.counts.lock().unwrap().keys().cloned().collect()
    }

    /// How many requests for `path` carried If-None-Match or If-Modified-Since.
    pub fn conditional_count(&self, path: &str) -> usize {
        *self
            .state
            .conditional
            .lock()
            .unwrap()
            .get(path)
            .unwrap_or(&0)
    }

    /// When the last body for `path` was completely sent.
    pub fn finished_at(&self, path: &str) -> Option<Instant> {
        self.state.finished.lock().unwrap().get(path).copied()
    }

    /// Stops the server: the port is closed and open connections are dropped.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Starts again on the same address, keeping files and counts.
    pub fn restart(&mut self) {
        self.stop();
        let fresh = Self::start_on(self.addr, self.state.clone());
        *self = fresh;
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn bind_retry(addr: SocketAddr) -> tokio::net::TcpListener {
    for _ in 0..100 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr}");
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Arc<UpState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().trim_start_matches('/').to_string();
    *state
        .counts
        .lock()
        .unwrap()
        .entry(format!("{method} /{path}"))
        .or_default() += 1;
    let conditional = headers.contains_key(header::IF_NONE_MATCH)
        || headers.contains_key(header::IF_MODIFIED_SINCE);
    if conditional {
        *state
            .conditional
            .lock()
            .unwrap()
            .entry(path.clone())
            .or_default() += 1;
    }
    let file = state.files.lock().unwrap().get(&path).cloned();
    let file = match file {
        Some(f) => f,
        None => {
            let dir = state.dir.lock().unwrap().clone();
            let from_disk = match dir {
                Some(d) if !path.split('/').any(|s| s == "..") => {
                    tokio::fs::read(d.join(&path)).await.ok()
                }
                _ => None,
            };
            match from_disk {
                Some(b) => UpFile {
                    body: Bytes::from(b),
                    etag: None,
                    mode: Mode::Normal,
                },
                None => return status(404),
            }
        }
    };
    if let Mode::Status(s) = file.mode {
        return status(s);
    }
    if let (Some(etag), Some(inm)) = (&file.etag, headers.get(header::IF_NONE_MATCH))
        && inm.to_str().ok() == Some(etag.as_str())
    {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r.headers_mut().insert(header::ETAG, etag.parse().unwrap());
        return r;
    }
    let len = file.body.len();
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        match file.mode.clone() {
            Mode::Normal => {
                state
                    .finished
                    .lock()
                    .unwrap()
                    .insert(path.clone(), Instant::now());
                Body::from(file.body.clone())
            }
            Mode::Slow { chunk, delay } => {
                let data = file.body.clone();
                let st = state.clone();
                let p = path.clone();
                Body::from_stream(async_stream(data, chunk, delay, None, move || {
                    st.finished
                        .lock()
                        .unwrap()
                        .insert(p.clone(), Instant::now());
                }))
            }
            Mode::Cut { after } | Mode::CutUnsized { after } => Body::from_stream(async_stream(
                file.body.clone(),
                64 * 1024,
                Duration::from_millis(1),
                Some(after),
                || {},
            )),
            Mode::Status(_) => unreachable!(),
        }
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    if !matches!(file.mode, Mode::CutUnsized { .. }) {
        h.insert(header::CONTENT_LENGTH, len.into());
    }
    h.insert(header::CONTENT_TYPE, "application/x-test".parse().unwrap());
    h.insert(
        header::LAST_MODIFIED,
        "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap(),
    );
    if let Some(e) = &file.etag {
        h.insert(header::ETAG, e.parse().unwrap());
    }
    r
}

fn async_stream(
    data: Bytes,
    chunk: usize,
    delay: Duration,
    cut_after: Option<usize>,
    on_done: impl FnOnce() + Send + 'static,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let mut on_done = Some(on_done);
    futures::stream::unfold(0usize, move |offset| {
        let data = data.clone();
        let mut end = (offset + chunk).min(data.len());
        if let Some(cut) = cut_after {
            end = end.min(cut.max(offset + 1));
        }
        // hyper stops polling once Content-Length bytes are out, so "done" is the last chunk.
        let done = if end >= data.len() && offset < data.len() {
            on_done.take()
        } else {
            None
        };
        async move {
            if offset >= data.len() {
                return None;
            }
            if let Some(cut) = cut_after
                && offset >= cut
            {
                return Some((Err(std::io::Error::other("cut on purpose")), usize::MAX));
            }
            tokio::time::sleep(delay).await;
            if let Some(f) = done {
                f();
            }
            Some((Ok(data.slice(offset..end)), end))
        }
    })
}

fn status(code: u16) -> Response {
    let mut r = Response::new(Body::from(format!("status {code}")));
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r
}

/// The `artifactapi serve` process under test, on its own data directory.
pub struct Proxy {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: Arc<Mutex<String>>,
    /// S3 + Redis when the proxy runs on shared backends; `cache` names its prefix there.
    pub backends: Option<Arc<backends::Backends>>,
    pub cache: String,
}

impl Proxy {
    /// Starts the binary with `remotes_yaml` (the body of `remotes:`, indented two spaces) and
    /// any extra top-level YAML.
    pub fn start(remotes_yaml: &str) -> Proxy {
        Self::start_with(remotes_yaml, "")
    }

    pub fn start_with(remotes_yaml: &str, extra: &str) -> Proxy {
        // ARTIFACTAPI_TEST_BACKEND=s3 runs the same tests on a private Garage and Redis.
        let shared = backends::shared_backend_requested()
            .then(backends::Backends::start)
            .flatten()
            .map(Arc::new);
        Self::start_on(shared, &backends::unique_name(), remotes_yaml, extra)
    }

    /// Starts a proxy on `shared` backends (or the filesystem when `None`); proxies given the
    /// same backends and `cache` name are replicas of one cache.
    pub fn start_on(
        shared: Option<Arc<backends::Backends>>,
        cache: &str,
        remotes_yaml: &str,
        extra: &str,
    ) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("remotes.yaml");
        let storage = match &shared {
            Some(b) => b.yaml(cache, &dir.path().join("spool")),
            None => format!("storage:\n  path: {}\n", dir.path().join("data").display()),
        };
        let text =
            format!("{storage}server:\n  shutdown_grace: 10s\n{extra}remotes:\n{remotes_yaml}");
        std::fs::write(&config, text).unwrap();
        let mut p = Proxy {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            config,
            log: Arc::default(),
            backends: shared,
            cache: cache.to_string(),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_artifactapi"))
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .arg("--listen")
            .arg(if self.addr.port() == 0 {
                "127.0.0.1:0".to_string()
            } else {
                self.addr.to_string()
            })
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn artifactapi");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let rest = &line[i + "listening on http://".len()..];
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    if let Some(t) = tx.take() {
                        let _ = t.send(addr);
                    }
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("artifactapi did not start:\n{}", self.log.lock().unwrap()));
        self.addr = addr.parse().unwrap();
        self.child = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// URL of `path` in remote `remote`.
    pub fn remote(&self, remote: &str, path: &str) -> String {
        self.url(&format!("/api/v1/remote/{remote}/{path}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap()
    }

    /// Kills the process (SIGKILL) without any clean-up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the process again on the same address and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The stored bytes of object `key` (`{repository}/{path}`), on whichever backend.
    pub async fn stored(&self, key: &str) -> Option<Vec<u8>> {
        match &self.backends {
            None => std::fs::read(self.data_dir().join("objects").join(key)).ok(),
            Some(b) => b.garage.get(&format!("{}/{key}", self.cache)).await,
        }
    }

    /// Keys of the stored objects under `prefix` (`"hub/"`), on whichever backend.
    pub async fn stored_keys(&self, prefix: &str) -> Vec<String> {
        match &self.backends {
            None => {
                let root = self.data_dir().join("objects");
                let mut out = Vec::new();
                walk(&root.join(prefix), &mut |p| {
                    let rel = p
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    if !rel.contains(".artifactapi-tmp-") {
                        out.push(rel);
                    }
                });
                out.sort();
                out
            }
            Some(b) => {
                let mine = format!("{}/", self.cache);
                b.garage
                    .list(&format!("{mine}{prefix}"))
                    .await
                    .into_iter()
                    .map(|k| k[mine.len()..].to_string())
                    .collect()
            }
        }
    }

    /// True when objects and records live in the documented filesystem layout.
    pub fn on_filesystem(&self) -> bool {
        self.backends.is_none()
    }

    /// Every file under the data directory whose name marks it as a temp file.
    pub fn temp_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.data_dir(), &mut |p| {
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".artifactapi-tmp-")
            {
                out.push(p.to_path_buf());
            }
        });
        out
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

/// A raw HTTP/1.1 request, for paths that URL libraries would normalise. Returns the status
/// code and the body.
pub fn raw_get(addr: SocketAddr, raw_path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {raw_path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic pseudo-random bytes.
pub fn test_bytes(len: usize, seed: u64) -> Bytes {
    let mut out = Vec::with_capacity(len);
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// True when `tool` is on PATH. When it is not: fails the test if ARTIFACTAPI_REQUIRE_TOOLS or
/// CI is set (CI must never skip), otherwise prints why the test is skipped.
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        let required = std::env::var_os("ARTIFACTAPI_REQUIRE_TOOLS").is_some()
            || std::env::var_os("CI").is_some();
        assert!(
            !required,
            "required tool {tool} is not installed (run scripts/install-test-deps)"
        );
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

pub mod backends;
pub mod registry;
