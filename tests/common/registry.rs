//! A real OCI registry for end-to-end tests: distribution's `docker-registry serve` on a free
//! loopback port (anonymous, htpasswd, or token auth with a token server run in this process
//! that signs RS256 JWTs with `openssl`), its access log parsed, OCI image layouts built with
//! umoci, and skopeo to push into the registry and to pull through the proxy.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine;
use sha2::{Digest, Sha256};

/// The token service name and issuer written into the registry config and every JWT.
pub const TOKEN_SERVICE: &str = "test-registry";
pub const TOKEN_ISSUER: &str = "test-issuer";

/// How the registry authenticates clients.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    /// `auth: htpasswd` with one bcrypt user.
    Htpasswd {
        user: String,
        pass: String,
    },
    /// `auth: token` with a [`TokenServer`] that knows one user; tokens live `expires_in` s.
    Token {
        user: String,
        pass: String,
        expires_in: u64,
    },
}

impl Auth {
    pub fn htpasswd(user: &str, pass: &str) -> Auth {
        Auth::Htpasswd {
            user: user.into(),
            pass: pass.into(),
        }
    }

    pub fn token(user: &str, pass: &str) -> Auth {
        Auth::Token {
            user: user.into(),
            pass: pass.into(),
            expires_in: 300,
        }
    }
}

/// Runs `cmd`, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A port that was free a moment ago (bind to port 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status code of a plain `GET path` to `addr`, or None when nothing answers.
fn probe(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One line of the registry's access log (Apache combined format on stdout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLine {
    pub method: String,
    /// The request URI as sent (path and query).
    pub uri: String,
    pub status: u16,
    pub user_agent: String,
}

impl AccessLine {
    /// `127.0.0.1 - user [date] "GET /v2/ HTTP/1.1" 200 2 "" "skopeo/1.9.3"`
    pub fn parse(line: &str) -> Option<AccessLine> {
        let open = line.find('"')?;
        let rest = &line[open + 1..];
        let close = rest.find('"')?;
        let mut request = rest[..close].split(' ');
        let method = request.next()?.to_string();
        let uri = request.next()?.to_string();
        let after = &rest[close + 1..];
        let status = after.split_whitespace().next()?.parse().ok()?;
        let ua = after.trim_end().strip_suffix('"')?;
        let user_agent = ua[ua.rfind('"')? + 1..].to_string();
        Some(AccessLine {
            method,
            uri,
            status,
            user_agent,
        })
    }

    /// True for requests the proxy under test made (its User-Agent is `artifactapi/...`).
    pub fn by_proxy(&self) -> bool {
        self.user_agent.starts_with("artifactapi/")
    }
}

/// A distribution registry process, killed on drop.
pub struct Registry {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// user and password, when the registry needs them.
    pub creds: Option<(String, String)>,
    pub token: Option<TokenServer>,
    access: Arc<Mutex<Vec<String>>>,
    log: Arc<Mutex<String>>,
}

impl Registry {
    /// Starts `docker-registry serve` with its storage, config (and auth files) under `dir`.
    pub fn start(dir: &Path, auth: Auth) -> Registry {
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        let mut creds = None;
        let mut token = None;
        let auth_yaml = match &auth {
            Auth::None => String::new(),
            Auth::Htpasswd { user, pass } => {
                let out = run(Command::new("htpasswd").args(["-Bbn", user, pass]));
                let file = dir.join("htpasswd");
                std::fs::write(&file, out.stdout).unwrap();
                creds = Some((user.clone(), pass.clone()));
                format!(
                    "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                    file.display()
                )
            }
            Auth::Token {
                user,
                pass,
                expires_in,
            } => {
                let t = TokenServer::start(&dir.join("token"), user, pass, *expires_in);
                let yaml = format!(
                    "auth:\n  token:\n    realm: {}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    t.url(),
                    t.cert.display()
                );
                creds = Some((user.clone(), pass.clone()));
                token = Some(t);
                yaml
            }
        };
        let mut reg = Registry {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir: dir.to_path_buf(),
            creds,
            token,
            access: Arc::default(),
            log: Arc::default(),
        };
        // A port picked by binding :0 can be taken by someone else before the registry binds
        // it; try a few.
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let config = dir.join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: {addr}\n  secret: artifactapi-test-secret\n{auth_yaml}",
                    dir.join("storage").display()
                ),
            )
            .unwrap();
            if reg.spawn(&config, addr) {
                return reg;
            }
        }
        panic!(
            "docker-registry did not start:\n{}",
            reg.log.lock().unwrap()
        );
    }

    fn spawn(&mut self, config: &Path, addr: SocketAddr) -> bool {
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn docker-registry");
        let out = child.stdout.take().unwrap();
        let access = self.access.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                access.lock().unwrap().push(line);
            }
        });
        let err = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if matches!(probe(addr, "/v2/"), Some(200 | 401)) {
                self.addr = addr;
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// `127.0.0.1:PORT`, as image references name the registry.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the registry: its port is closed.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The registry's own log (stderr), for failure messages.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Every access-log line so far, after waiting until no new line came for 300 ms (the
    /// registry writes a line just before it finishes the response, so a client can be a
    /// little ahead of the log).
    pub fn access_log(&self) -> Vec<AccessLine> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut n = self.access.lock().unwrap().len();
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.access.lock().unwrap().len();
            if now == n || Instant::now() > deadline {
                break;
            }
            n = now;
        }
        self.access
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| AccessLine::parse(l))
            .collect()
    }

    /// Requests the proxy made with `method` for exactly `uri`, answered with `status` (any
    /// status when None).
    pub fn proxy_count(&self, method: &str, uri: &str, status: Option<u16>) -> usize {
        self.access_log()
            .iter()
            .filter(|l| {
                l.by_proxy()
                    && l.method == method
                    && l.uri == uri
                    && status.is_none_or(|s| s == l.status)
            })
            .count()
    }

    /// Pushes `layout`'s image (or index, with `--all`) `tag` to `dest` (`NAME:TAG`).
    pub fn push(&self, layout: &Layout, tag: &str, dest: &str) {
        let mut cmd = skopeo(&layout.dir);
        cmd.args(["copy", "--all", "--dest-tls-verify=false"]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.arg(format!("oci:{}:{tag}", layout.dir.display()))
            .arg(format!("docker://{}/{dest}", self.host()));
        run(&mut cmd);
    }

    /// The manifest bytes of `name:tag` (or `name@digest`) as the registry serves them.
    pub fn manifest(&self, reference: &str) -> Vec<u8> {
        let mut cmd = skopeo(&self.dir);
        cmd.args(["inspect", "--raw", "--tls-verify=false"]);
        match &self.creds {
            Some((u, p)) => cmd.arg(format!("--creds={u}:{p}")),
            None => cmd.arg("--no-creds"),
        };
        cmd.arg(format!("docker://{}/{reference}", self.host()));
        run(&mut cmd).stdout
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A skopeo command that ignores the host's signature policy and keeps its state out of the
/// user's home (`HOME` is set to `scratch`).
pub fn skopeo(scratch: &Path) -> Command {
    let home = scratch.join(".skopeo-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new("skopeo");
    cmd.env("HOME", home)
        .env_remove("REGISTRY_AUTH_FILE")
        .arg("--insecure-policy");
    cmd
}

/// Pulls `docker://{host}/{reference}` (through the proxy) into `dir:OUT`, anonymously and
/// over plain HTTP. `extra` goes before `copy` when it starts with `--override` (global flags,
/// written `--override-arch=arm64`), after it otherwise (e.g. `--all`). Returns skopeo's
/// stderr on failure.
pub fn pull(host: &str, reference: &str, out: &Path, extra: &[&str]) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).unwrap();
    let mut cmd = skopeo(out.parent().unwrap());
    let (global, local): (Vec<&str>, Vec<&str>) =
        extra.iter().partition(|a| a.starts_with("--override"));
    cmd.args(global)
        .args(["copy", "--src-tls-verify=false", "--src-no-creds"])
        .args(local)
        .arg(format!("docker://{host}/{reference}"))
        .arg(format!("dir:{}", out.display()));
    let o = cmd.output().expect("run skopeo");
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// A file of a layer: path inside the tar and its bytes.
pub type LayerFile = (String, Vec<u8>);

/// An OCI image layout built with umoci.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// `umoci init --layout DIR`.
    pub fn init(dir: &Path) -> Layout {
        run(Command::new("umoci").arg("init").arg("--layout").arg(dir));
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.dir.display())
    }

    /// Builds image `tag` for linux/`arch` with one layer per entry of `layers` and returns
    /// its manifest digest.
    pub fn add_image(&self, tag: &str, arch: &str, layers: &[Vec<LayerFile>]) -> String {
        run(Command::new("umoci")
            .args(["new", "--image"])
            .arg(self.image(tag)));
        for (i, files) in layers.iter().enumerate() {
            let tar = self.dir.with_file_name(format!("layer-{tag}-{i}.tar"));
            write_tar(&tar, files);
            run(Command::new("umoci")
                .args(["raw", "add-layer", "--image"])
                .arg(self.image(tag))
                .arg(&tar));
            std::fs::remove_file(&tar).unwrap();
        }
        run(Command::new("umoci")
            .args(["config", "--image"])
            .arg(self.image(tag))
            .args([
                "--config.cmd",
                "/bin/sh",
                "--os",
                "linux",
                "--architecture",
                arch,
            ]));
        self.manifest_digest(tag)
    }

    /// Writes an OCI image index over the images `children` (tag, architecture) as a blob and
    /// names it `tag` in index.json; returns its digest.
    pub fn add_index(&self, tag: &str, children: &[(&str, &str)]) -> String {
        let manifests: Vec<serde_json::Value> = children
            .iter()
            .map(|(child, arch)| {
                let bytes = self.manifest(child);
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": self.manifest_digest(child),
                    "size": bytes.len(),
                    "platform": {"architecture": arch, "os": "linux"},
                })
            })
            .collect();
        let doc = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap();
        let hex = hex::encode(Sha256::digest(&doc));
        std::fs::write(self.dir.join("blobs/sha256").join(&hex), &doc).unwrap();
        let mut index = self.index_json();
        index["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{hex}"),
                "size": doc.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }));
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
        format!("sha256:{hex}")
    }

    fn index_json(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("index.json")).unwrap()).unwrap()
    }

    /// The digest `tag` names in index.json.
    pub fn manifest_digest(&self, tag: &str) -> String {
        let index = self.index_json();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("no {tag} in {}", self.dir.display()))["digest"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        std::fs::read(self.blob_path(digest)).unwrap()
    }

    /// The manifest (or index) bytes of `tag`.
    pub fn manifest(&self, tag: &str) -> Vec<u8> {
        self.blob(&self.manifest_digest(tag))
    }

    /// Config and layer digests of image `tag`.
    pub fn image_blobs(&self, tag: &str) -> Vec<String> {
        blobs_of(&self.manifest(tag))
    }
}

/// Config and layer digests named by an image manifest.
pub fn blobs_of(manifest: &[u8]) -> Vec<String> {
    let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let mut out = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    for l in m["layers"].as_array().unwrap() {
        out.push(l["digest"].as_str().unwrap().to_string());
    }
    out
}

/// `sha256:<hex>` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A tar of regular files with fixed metadata (so equal content gives equal bytes).
pub fn write_tar(path: &Path, files: &[LayerFile]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().sync_all().unwrap();
}

/// RFC 4648 base32 without padding.
pub fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buf: u32 = 0;
    let mut bits = 0;
    for &b in data {
        buf = (buf << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The libtrust key ID of a DER public key: SHA-256, first 30 bytes, base32, groups of 4
/// joined by `:`.
pub fn libtrust_kid(public_key_der: &[u8]) -> String {
    let b32 = base32(&Sha256::digest(public_key_der)[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

/// One request the token server answered.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The Basic user, when credentials were sent.
    pub user: Option<String>,
    pub user_agent: String,
    pub scopes: Vec<String>,
    pub status: u16,
}

impl TokenRequest {
    pub fn by_proxy(&self) -> bool {
        self.user_agent.starts_with("artifactapi/")
    }
}

struct TokenState {
    key: PathBuf,
    kid: String,
    user: String,
    pass: String,
    expires_in: u64,
    requests: Mutex<Vec<TokenRequest>>,
    serial: AtomicU64,
}

/// A Docker token server (`GET /token?service=&scope=`) on its own thread: checks Basic
/// credentials when sent (wrong ones get 401), grants the requested actions to its user and
/// nothing to anonymous clients, and signs RS256 JWTs with `openssl dgst -sha256 -sign`.
pub struct TokenServer {
    pub addr: SocketAddr,
    /// The self-signed certificate the registry trusts (`rootcertbundle`).
    pub cert: PathBuf,
    state: Arc<TokenState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    pub fn start(dir: &Path, user: &str, pass: &str, expires_in: u64) -> TokenServer {
        std::fs::create_dir_all(dir).unwrap();
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-days", "30", "-subj", "/CN=test-issuer"]));
        let pubkey = run(Command::new("openssl")
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(&cert))
        .stdout;
        let der = pipe(
            Command::new("openssl").args(["pkey", "-pubin", "-outform", "DER"]),
            &pubkey,
        );
        let state = Arc::new(TokenState {
            key,
            kid: libtrust_kid(&der),
            user: user.to_string(),
            pass: pass.to_string(),
            expires_in,
            requests: Mutex::default(),
            serial: AtomicU64::new(0),
        });
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
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new()
                    .route("/token", axum::routing::get(token_handler))
                    .with_state(st);
                tokio::select! {
                    _ = axum::serve(listener, app) => {},
                    _ = stop_rx => {},
                }
            });
            rt.shutdown_background();
        });
        TokenServer {
            addr: addr_rx.recv().unwrap(),
            cert,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kid(&self) -> &str {
        &self.state.kid
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Token requests the proxy made (by User-Agent).
    pub fn proxy_requests(&self) -> Vec<TokenRequest> {
        self.requests()
            .into_iter()
            .filter(TokenRequest::by_proxy)
            .collect()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `cmd` with `input` on stdin and returns its stdout.
fn pipe(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    writer.join().unwrap().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{cmd:?} failed: {err}");
    out
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn query_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

async fn token_handler(
    axum::extract::State(st): axum::extract::State<Arc<TokenState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let pairs = query_pairs(uri.query().unwrap_or(""));
    let scopes: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|raw| String::from_utf8_lossy(&raw).into_owned());
    let (user, authorized) = match &basic {
        Some(pair) => {
            let (u, p) = pair.split_once(':').unwrap_or((pair, ""));
            (Some(u.to_string()), u == st.user && p == st.pass)
        }
        None => (None, false),
    };
    let record = |status: u16| {
        st.requests.lock().unwrap().push(TokenRequest {
            user: user.clone(),
            user_agent: user_agent.clone(),
            scopes: scopes.clone(),
            status,
        })
    };
    if basic.is_some() && !authorized {
        record(401);
        let mut r = Response::new(Body::from("bad credentials"));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    }
    // The user gets what it asks for; anonymous clients get a valid token that grants nothing.
    let access: Vec<serde_json::Value> = if authorized {
        scopes
            .iter()
            .filter_map(|s| {
                let (kind, rest) = s.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                Some(serde_json::json!({
                    "type": kind,
                    "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>(),
                }))
            })
            .collect()
    } else {
        Vec::new()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header_json = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": st.kid});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER,
        "sub": user.clone().unwrap_or_default(),
        "aud": TOKEN_SERVICE,
        "exp": now + st.expires_in,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("jti-{now}-{}", st.serial.fetch_add(1, Ordering::Relaxed)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(&serde_json::to_vec(&header_json).unwrap()),
        b64url(&serde_json::to_vec(&claims).unwrap())
    );
    let key = st.key.clone();
    let input = signing_input.clone();
    let signature = tokio::task::spawn_blocking(move || {
        pipe(
            Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(&key),
            input.as_bytes(),
        )
    })
    .await
    .unwrap();
    let jwt = format!("{signing_input}.{}", b64url(&signature));
    record(200);
    let body = serde_json::json!({
        "token": jwt,
        "access_token": jwt,
        "expires_in": st.expires_in,
    });
    let mut r = Response::new(Body::from(serde_json::to_vec(&body).unwrap()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    r
}
