//! A Docker token server for tests (`GET /token?service=&scope=`) on its own thread: it
//! checks Basic credentials, grants its one user what it asks for, and signs RS256 JWTs with
//! `openssl`, whose key ID is the libtrust one the registry expects.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::run;

/// The token service name and issuer written into the registry config and every JWT.
pub const TOKEN_SERVICE: &str = "test-registry";
pub const TOKEN_ISSUER: &str = "test-issuer";

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
