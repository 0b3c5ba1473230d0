//! A real OCI registry for end-to-end tests: distribution's `docker-registry serve` on a free
//! loopback port (anonymous, htpasswd, or token auth with a [`TokenServer`]), its access log
//! parsed, and images pushed into it from a [`Layout`] with skopeo.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::layout::{Layout, skopeo};
use super::token::{TOKEN_ISSUER, TOKEN_SERVICE, TokenServer};
use super::{READY_BOUND, free_port, run};

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
        let start = Instant::now();
        loop {
            // Exited at once: most likely the port was taken meanwhile; the caller tries another.
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if matches!(probe(addr, "/v2/"), Some(200 | 401)) {
                self.addr = addr;
                self.child = Some(child);
                return true;
            }
            if start.elapsed() > READY_BOUND {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "docker-registry did not answer on {addr} within {READY_BOUND:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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
