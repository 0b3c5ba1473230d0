//! Real shared backends for tests: a private redis-server and a single-node Garage cluster
//! (S3), each in its own temp dir on free ports, stopped by PID on drop. Missing binaries skip
//! the test locally and fail it under CI / ARTIFACTAPI_REQUIRE_TOOLS (see `have_tool`).

use std::fs::{File, OpenOptions};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{READY_BOUND, free_port, have_tool, log_tail, wait_ready};

pub const BUCKET: &str = "artifacts";
pub const KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A name no other proxy in this run uses (S3 prefix, Redis key prefix).
pub fn unique_name() -> String {
    format!(
        "t{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

/// True when the suites should run against S3 + Redis (`ARTIFACTAPI_TEST_BACKEND=s3`).
pub fn shared_backend_requested() -> bool {
    std::env::var("ARTIFACTAPI_TEST_BACKEND").is_ok_and(|v| v == "s3")
}

/// Appends to the log file at `path` (a restarted server keeps the earlier lines).
fn log_file(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// Waits until `child` listens on `port`; when it exits first or never does, panics with its
/// log (the file at `log`).
fn wait_port(child: &Mutex<Option<Child>>, port: u16, what: &str, log: &Path) {
    let log = || log_tail(log);
    wait_ready(
        &format!("{what} on port {port}"),
        Duration::from_millis(50),
        &log,
        || {
            if let Some(c) = child.lock().unwrap().as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "{what} exited ({status}) before listening on {port}; its log:\n{}",
                    log()
                );
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        },
    );
}

fn kill(child: &Mutex<Option<Child>>) {
    if let Some(mut c) = child.lock().unwrap().take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A private redis-server.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
    /// With TLS (only, on `port`) and this password: see [`Redis::start_tls`].
    tls_password: Option<String>,
}

/// Runs openssl with `args` in `dir`, panicking with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA (`NAME.crt`, `NAME.key`) in `dir`.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    dir.join(crt)
}

impl Redis {
    /// `None` (test skipped) when redis-server is missing and not required.
    pub fn start() -> Option<Redis> {
        if !have_tool("redis-server") {
            return None;
        }
        let r = Redis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: Mutex::new(None),
            tls_password: None,
        };
        r.spawn();
        Some(r)
    }

    /// A redis-server that speaks only TLS, with a certificate for 127.0.0.1 signed by a test
    /// CA (its PEM at [`Redis::ca_file`]), and requires `password`.
    pub fn start_tls(password: &str) -> Option<Redis> {
        if !have_tool("redis-server") || !have_tool("openssl") {
            return None;
        }
        let r = Redis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: Mutex::new(None),
            tls_password: Some(password.to_string()),
        };
        let d = r.dir.path();
        make_ca(d, "ca");
        std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        );
        r.spawn();
        Some(r)
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn spawn(&self) {
        let log = self.dir.path().join("redis.log");
        let out = log_file(&log);
        let mut cmd = Command::new("redis-server");
        match &self.tls_password {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some(password) => {
                let d = self.dir.path();
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .args(["--tls-auth-clients", "no", "--requirepass", password])
                    .arg("--tls-cert-file")
                    .arg(d.join("server.crt"))
                    .arg("--tls-key-file")
                    .arg(d.join("server.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(d.join("ca.crt"))
            }
        };
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn redis-server");
        *self.child.lock().unwrap() = Some(child);
        wait_port(&self.child, self.port, "redis-server", &log);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&self) {
        kill(&self.child);
    }

    /// Starts again on the same port, empty.
    pub fn restart(&self) {
        self.stop();
        self.spawn();
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if let Some(password) = &self.tls_password {
            cmd.args(["--tls", "--cacert"]).arg(self.ca_file()).args([
                "--no-auth-warning",
                "-a",
                password,
            ]);
        }
        let out = cmd.args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A single-node Garage cluster with bucket [`BUCKET`] and key [`KEY_ID`].
pub struct Garage {
    pub s3_port: u16,
    rpc_port: u16,
    dir: tempfile::TempDir,
    config: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Garage {
    pub fn start() -> Option<Garage> {
        if !have_tool("garage") {
            return None;
        }
        // A port found free can be taken by another test's server before Garage binds it:
        // Garage then panics in its RPC listener and never becomes ready. Start again on new
        // ports when that happens.
        let mut attempt = 0;
        let g = loop {
            attempt += 1;
            let g = Garage::configure();
            g.spawn();
            if g.rpc_listening() {
                break g;
            }
            g.stop();
            assert!(
                attempt < 3,
                "garage could not bind its ports three times; its log:\n{}",
                log_tail(&g.log_path())
            );
        };
        let node = g.cli_retry(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap().to_string();
        g.cli_retry(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        g.cli_retry(&["layout", "apply", "--version", "1"]);
        g.cli_retry(&["key", "import", "--yes", KEY_ID, SECRET, "-n", "test"]);
        g.cli_retry(&["bucket", "create", BUCKET]);
        g.cli_retry(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "test",
        ]);
        g.wait_ready();
        Some(g)
    }

    /// A data directory and config on ports free right now.
    fn configure() -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let s3_port = free_port();
        let rpc_port = free_port();
        let config = dir.path().join("garage.toml");
        let text = format!(
            "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
             replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_secret = \"{secret}\"\n[s3_api]\ns3_region = \"garage\"\n\
             api_bind_addr = \"127.0.0.1:{s3_port}\"\n[admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n\
             admin_token = \"test-admin\"\n",
            d = dir.path().display(),
            admin = free_port(),
            secret = SECRET,
        );
        std::fs::write(&config, text).unwrap();
        Garage {
            s3_port,
            rpc_port,
            dir,
            config,
            child: Mutex::new(None),
        }
    }

    /// True once Garage's own RPC port answers, false when its log shows it could not bind
    /// one of its ports (or after 10 s).
    fn rpc_listening(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if log_tail(&self.log_path()).contains("AddrInUse") {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.rpc_port)).is_ok() {
                // The port may be another process's: Garage logs its failure to bind at once.
                std::thread::sleep(Duration::from_millis(300));
                return !log_tail(&self.log_path()).contains("AddrInUse");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn spawn(&self) {
        let child = Command::new("garage")
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log_file(&self.log_path()))
            .spawn()
            .expect("spawn garage");
        *self.child.lock().unwrap() = Some(child);
        wait_port(&self.child, self.s3_port, "garage", &self.log_path());
    }

    /// The server's log (its stderr).
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("garage.log")
    }

    /// Waits until the S3 API answers for the bucket (not just accepts connections).
    fn wait_ready(&self) {
        let url = format!("{}/{BUCKET}", self.endpoint());
        let log = || log_tail(&self.log_path());
        wait_ready("garage S3 API", Duration::from_millis(100), &log, || {
            reqwest::blocking_head(&url).is_some_and(|s| s != 503 && s < 500)
        });
    }

    fn cli_retry(&self, args: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let out = Command::new("garage")
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .env("RUST_LOG", "error")
                .output()
                .expect("garage cli");
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                start.elapsed() < READY_BOUND,
                "garage {args:?} failed for {READY_BOUND:?}: {}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                log_tail(&self.log_path())
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// An S3 client for this cluster, to look at the bucket from outside the proxy.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(KEY_ID, SECRET, None, None, "test");
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("garage"))
            .endpoint_url(self.endpoint())
            .credentials_provider(creds)
            .force_path_style(true)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// The bytes of bucket key `key`, if it exists.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let out = self
            .client()
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .ok()?;
        Some(out.body.collect().await.ok()?.into_bytes().to_vec())
    }

    /// Bytes of every bucket object under `prefix`, added up.
    pub async fn bytes_under(&self, prefix: &str) -> u64 {
        let mut pages = self
            .client()
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut total = 0;
        while let Some(page) = pages.next().await {
            for o in page.unwrap().contents() {
                total += o.size().unwrap_or(0) as u64;
            }
        }
        total
    }

    /// Every bucket key under `prefix`.
    pub async fn list(&self, prefix: &str) -> Vec<String> {
        let mut pages = self
            .client()
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            for o in page.unwrap().contents() {
                out.push(o.key().unwrap().to_string());
            }
        }
        out.sort();
        out
    }

    /// Multipart uploads in progress under `prefix`.
    pub async fn uploads(&self, prefix: &str) -> usize {
        let out = self
            .client()
            .list_multipart_uploads()
            .bucket(BUCKET)
            .prefix(prefix)
            .send()
            .await
            .unwrap();
        out.uploads().len()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    pub fn stop(&self) {
        kill(&self.child);
    }

    /// Starts again on the same ports and data.
    pub fn restart(&self) {
        self.stop();
        self.spawn();
        self.wait_ready();
    }

    /// The `storage:` section for a proxy using this cluster under `prefix`.
    pub fn storage_yaml(&self, prefix: &str, spool: &std::path::Path) -> String {
        format!(
            "storage:\n  backend: s3\n  bucket: {BUCKET}\n  endpoint: {}\n  region: garage\n  \
             access_key_id: {KEY_ID}\n  secret_access_key: {SECRET}\n  prefix: {prefix}\n  \
             force_path_style: true\n  spool_dir: {}\n",
            self.endpoint(),
            spool.display()
        )
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Garage and Redis together, as one HA deployment's backends.
pub struct Backends {
    pub garage: Garage,
    pub redis: Redis,
}

impl Backends {
    pub fn start() -> Option<Backends> {
        let redis = Redis::start()?;
        let garage = Garage::start()?;
        Some(Backends { garage, redis })
    }

    /// `storage:` and `metadata:` sections for a proxy; proxies given the same `name` share
    /// one cache. `storage_keys` are more `storage:` keys (`"  max_size: 20 MiB\n"`).
    pub fn yaml(&self, name: &str, spool: &std::path::Path, storage_keys: &str) -> String {
        format!(
            "{}{storage_keys}metadata:\n  backend: redis\n  url: {}\n  key_prefix: \"{name}:\"\n",
            self.garage.storage_yaml(name, spool),
            self.redis.url()
        )
    }
}

/// A tiny blocking HEAD, so the harness needs no runtime of its own.
mod reqwest {
    use std::io::{Read, Write};

    pub fn blocking_head(url: &str) -> Option<u16> {
        let rest = url.strip_prefix("http://")?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut s = std::net::TcpStream::connect(host).ok()?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .ok()?;
        write!(
            s,
            "HEAD /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}
