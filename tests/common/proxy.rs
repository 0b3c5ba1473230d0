//! The `artifactapi serve` process under test: the built binary on its own data directory and
//! config (filesystem storage, or the shared S3 + Redis backends), its log captured, and views
//! of what it stored on whichever backend.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::{READY_BOUND, backends};

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
    /// The data directory, on the filesystem backend.
    data: PathBuf,
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
        Self::launch(shared, cache, None, "", remotes_yaml, extra)
    }

    /// Like [`Proxy::start_on`], with more `storage:` keys (`"  max_size: 20 MiB\n"`).
    pub fn start_on_with(
        shared: Option<Arc<backends::Backends>>,
        cache: &str,
        storage_keys: &str,
        remotes_yaml: &str,
    ) -> Proxy {
        Self::launch(shared, cache, None, storage_keys, remotes_yaml, "")
    }

    /// Starts a proxy on the filesystem with its data directory at `data` (e.g. a small
    /// file system the test mounted).
    pub fn start_in(data: &Path, remotes_yaml: &str) -> Proxy {
        Self::start_in_with(data, "", remotes_yaml)
    }

    /// Like [`Proxy::start_in`], with more `storage:` keys (`"  max_size: 20 MiB\n"`).
    pub fn start_in_with(data: &Path, storage_keys: &str, remotes_yaml: &str) -> Proxy {
        let cache = backends::unique_name();
        Self::launch(None, &cache, Some(data), storage_keys, remotes_yaml, "")
    }

    /// Like [`Proxy::start_in_with`], with more top-level sections (`auth:`) in `extra`.
    pub fn start_in_with_extra(
        data: &Path,
        storage_keys: &str,
        remotes_yaml: &str,
        extra: &str,
    ) -> Proxy {
        let cache = backends::unique_name();
        Self::launch(None, &cache, Some(data), storage_keys, remotes_yaml, extra)
    }

    fn launch(
        shared: Option<Arc<backends::Backends>>,
        cache: &str,
        data: Option<&Path>,
        storage_keys: &str,
        remotes_yaml: &str,
        extra: &str,
    ) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("remotes.yaml");
        let data = data.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
        let storage = match &shared {
            Some(b) => b.yaml(cache, &dir.path().join("spool"), storage_keys),
            None => format!("storage:\n  path: {}\n{storage_keys}", data.display()),
        };
        let text =
            format!("{storage}server:\n  shutdown_grace: 10s\n{extra}remotes:\n{remotes_yaml}");
        std::fs::write(&config, text).unwrap();
        let mut p = Proxy {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            config,
            data,
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
        let addr = rx.recv_timeout(READY_BOUND).unwrap_or_else(|_| {
            panic!(
                "artifactapi did not start within {READY_BOUND:?}:\n{}",
                self.log.lock().unwrap()
            )
        });
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

    /// The configuration file the process was started with.
    pub fn config_file(&self) -> &Path {
        &self.config
    }

    /// Sends signal `name` (`HUP`, `TERM`) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// How many times the server's log holds `needle` now.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log.lock().unwrap().matches(needle).count()
    }

    /// True once the server's log holds `needle`, within 5 s: the log is read from the
    /// process's output by another thread, so a line may arrive after the response it was
    /// written for.
    pub fn log_shows(&self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if self.log.lock().unwrap().contains(needle) {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.clone()
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

/// Calls `f` with every file below `dir` (depth first; a missing `dir` has none).
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
