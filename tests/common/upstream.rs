//! A controllable upstream HTTP server for tests: serves files put into it or read from a
//! directory, counts requests (and conditional ones), records the `Authorization` headers it
//! receives, and can be slow, cut bodies, answer any status with chosen headers (redirects,
//! challenges), listen on any loopback address, or stop and start again on the same address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;

use super::sha256_hex;

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
    /// The whole body, chunked, without Content-Length.
    Unsized,
    /// Answers `status` with these headers (`Location`, `WWW-Authenticate`, ...) and a short
    /// body.
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
    },
    /// A request without `Authorization` gets `401` with this `WWW-Authenticate`; one with it
    /// is answered as `then` says.
    Challenge {
        www_authenticate: String,
        then: Box<Mode>,
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
    authorizations: Mutex<Vec<(String, String)>>,
    /// Slow bodies being sent now, and the most there ever were at once.
    slow_active: std::sync::atomic::AtomicUsize,
    slow_max: std::sync::atomic::AtomicUsize,
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
        Self::start_at([127, 0, 0, 1])
    }

    /// Starts on a free port of `ip` (any `127.x.y.z` is a loopback address on Linux).
    pub fn start_at(ip: [u8; 4]) -> TestUpstream {
        Self::start_on(SocketAddr::from((ip, 0)), Arc::default())
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

    /// Serves `body` at `path` like [`put`](Self::put), in `chunk`-byte pieces `delay` apart.
    pub fn put_slow(&self, path: &str, body: impl Into<Bytes>, chunk: usize, delay: Duration) {
        self.put(path, body);
        self.set_mode(path, Mode::Slow { chunk, delay });
    }

    /// Answers every request for `path` with `status` and `headers`.
    pub fn put_reply(&self, path: &str, status: u16, headers: &[(&str, &str)]) {
        self.put_file(
            path,
            UpFile {
                body: Bytes::new(),
                etag: None,
                mode: Mode::Reply {
                    status,
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                },
            },
        );
    }

    /// Answers every request for `path` with `302 Found` to `location`.
    pub fn put_redirect(&self, path: &str, location: &str) {
        self.put_reply(path, 302, &[("location", location)]);
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

    /// Every `Authorization` header received, with its request as `METHOD /path`.
    pub fn authorizations(&self) -> Vec<(String, String)> {
        self.state.authorizations.lock().unwrap().clone()
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
    /// The most `Mode::Slow` bodies that were being sent at once.
    pub fn max_concurrent_slow(&self) -> usize {
        self.state
            .slow_max
            .load(std::sync::atomic::Ordering::SeqCst)
    }

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
    if let Some(a) = headers.get(header::AUTHORIZATION) {
        state.authorizations.lock().unwrap().push((
            format!("{method} /{path}"),
            String::from_utf8_lossy(a.as_bytes()).into_owned(),
        ));
    }
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
    let mut file = file;
    if let Mode::Challenge {
        www_authenticate,
        then,
    } = &file.mode
    {
        if !headers.contains_key(header::AUTHORIZATION) {
            let mut r = status(401);
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, www_authenticate.parse().unwrap());
            return r;
        }
        file.mode = (**then).clone();
    }
    if let Mode::Status(s) = file.mode {
        return status(s);
    }
    if let Mode::Reply { status: s, headers } = &file.mode {
        let mut r = status(*s);
        for (k, v) in headers {
            r.headers_mut().append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        return r;
    }
    if let (Some(etag), Some(inm)) = (&file.etag, headers.get(header::IF_NONE_MATCH))
        && inm.to_str().ok() == Some(etag.as_str())
    {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r.headers_mut().insert(header::ETAG, etag.parse().unwrap());
        return r;
    }
    // `Range: bytes=N-` is honoured for whole bodies (counted as method RANGE).
    let total = file.body.len();
    let from = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| {
            *n < total && matches!(file.mode, Mode::Normal | Mode::Slow { .. } | Mode::Unsized)
        });
    if let Some(n) = from {
        *state
            .counts
            .lock()
            .unwrap()
            .entry(format!("RANGE /{path}"))
            .or_default() += 1;
        file.body = file.body.slice(n..);
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
                use std::sync::atomic::Ordering::SeqCst;
                let data = file.body.clone();
                let st = state.clone();
                let p = path.clone();
                let now = state.slow_active.fetch_add(1, SeqCst) + 1;
                state.slow_max.fetch_max(now, SeqCst);
                Body::from_stream(async_stream(data, chunk, delay, None, move || {
                    st.slow_active.fetch_sub(1, SeqCst);
                    st.finished
                        .lock()
                        .unwrap()
                        .insert(p.clone(), Instant::now());
                }))
            }
            Mode::Unsized => Body::from_stream(async_stream(
                file.body.clone(),
                64 * 1024,
                Duration::from_millis(1),
                None,
                || {},
            )),
            Mode::Cut { after } | Mode::CutUnsized { after } => Body::from_stream(async_stream(
                file.body.clone(),
                64 * 1024,
                Duration::from_millis(1),
                Some(after),
                || {},
            )),
            Mode::Status(_) | Mode::Reply { .. } | Mode::Challenge { .. } => unreachable!(),
        }
    };
    let mut r = Response::new(body);
    if let Some(n) = from {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        r.headers_mut().insert(
            header::CONTENT_RANGE,
            format!("bytes {n}-{}/{total}", total - 1).parse().unwrap(),
        );
    }
    let h = r.headers_mut();
    if !matches!(file.mode, Mode::CutUnsized { .. } | Mode::Unsized) {
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
