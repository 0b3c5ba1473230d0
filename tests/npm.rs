//! npm remotes with real clients: `npm install` through an npm remote whose upstream is
//! verdaccio (packages the test publishes to it, one scoped), again with the upstream stopped;
//! full and abbreviated packuments with their tarball links pointing back here; tarballs that
//! do not match the packument's `integrity` or `shasum` refused and never stored.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::http::header;
use common::{Proxy, TestUpstream, free_port, tools, wait_ready};
use sha2::Digest as _;

/// verdaccio on a free loopback port, with no uplinks and its storage in `dir`; stopped (by
/// PID) when dropped.
struct Verdaccio {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Verdaccio {
    fn start(dir: &Path) -> Verdaccio {
        let port = free_port();
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "storage: {storage}\nauth:\n  htpasswd:\n    file: {htpasswd}\n    max_users: 100\nuplinks: {{}}\npackages:\n  '@*/*':\n    access: $all\n    publish: $authenticated\n  '**':\n    access: $all\n    publish: $authenticated\nlisten: 127.0.0.1:{port}\nweb:\n  enable: false\nlog:\n  type: stdout\n  format: pretty\n  level: warn\n",
                storage = dir.join("storage").display(),
                htpasswd = dir.join("htpasswd").display(),
            ),
        )
        .unwrap();
        let log = dir.join("verdaccio.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("verdaccio")
            .arg("--config")
            .arg(&config)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("start verdaccio");
        let server = Verdaccio {
            child: Some(child),
            port,
            log,
        };
        wait_ready(
            "verdaccio",
            Duration::from_millis(100),
            &|| common::log_tail(&server.log),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Adds a user and returns its token, as `npm adduser` would.
    async fn add_user(&self, name: &str) -> String {
        let r = common::http::client()
            .put(format!("{}/-/user/org.couchdb.user:{name}", self.url()))
            .json(&serde_json::json!({
                "name": name,
                "password": "publish-pass-1",
                "type": "user",
                "roles": [],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", common::log_tail(&self.log));
        let body: serde_json::Value = r.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Verdaccio {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An `.npmrc` for `registry` with `token` for its host, and an npm cache of its own.
fn npmrc(dir: &Path, registry: &str, token: Option<&str>) -> PathBuf {
    let host = registry.trim_start_matches("http://").trim_end_matches('/');
    let mut text = format!("registry={registry}\n");
    if let Some(t) = token {
        text.push_str(&format!("//{host}/:_authToken={t}\n"));
    }
    let path = dir.join(".npmrc-test");
    std::fs::write(&path, text).unwrap();
    path
}

fn npm(dir: &Path, userconfig: &Path, args: &[&str]) -> std::process::Output {
    Command::new("npm")
        .args(args)
        .args(["--no-audit", "--no-fund", "--no-update-notifier"])
        .arg("--userconfig")
        .arg(userconfig)
        .arg("--cache")
        .arg(dir.join(".npm-cache"))
        .current_dir(dir)
        .env_remove("NPM_CONFIG_REGISTRY")
        .env_remove("npm_config_registry")
        .output()
        .expect("run npm")
}

/// Writes a package (package.json and index.js) into `dir`.
fn package(dir: &Path, name: &str, version: &str, deps: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    let deps: serde_json::Map<String, serde_json::Value> = deps
        .iter()
        .map(|(n, v)| (n.to_string(), serde_json::json!(v)))
        .collect();
    std::fs::write(
        dir.join("package.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "name": name,
            "version": version,
            "main": "index.js",
            "license": "MIT",
            "dependencies": deps,
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("index.js"),
        format!("module.exports = {version:?};\n"),
    )
    .unwrap();
}

/// A package to publish: name, version, dependencies.
type Spec<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// Publishes the packages the install tests use to `registry`: left-pad-lite 1.0.0 and
/// @team/util 1.0.0 and 1.1.0 (which need left-pad-lite).
fn publish_fixtures(work: &Path, registry: &str, token: &str) {
    let rc = npmrc(work, &format!("{registry}/"), Some(token));
    let specs: [Spec; 3] = [
        ("left-pad-lite", "1.0.0", &[]),
        ("@team/util", "1.0.0", &[("left-pad-lite", "^1.0.0")]),
        ("@team/util", "1.1.0", &[("left-pad-lite", "^1.0.0")]),
    ];
    for (i, (name, version, deps)) in specs.iter().enumerate() {
        let dir = work.join(format!("pkg-{i}"));
        package(&dir, name, version, deps);
        let out = npm(&dir, &rc, &["publish", "--access", "public"]);
        assert!(
            out.status.success(),
            "npm publish {name}@{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn installed_version(project: &Path, name: &str) -> String {
    let p = project.join("node_modules").join(name).join("package.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["version"].as_str().unwrap().to_string()
}

/// A project that needs @team/util ^1.0.0, installed from `registry` into a fresh directory.
fn install_app(dir: &Path, registry: &str) -> String {
    package(dir, "app", "0.0.1", &[("@team/util", "^1.0.0")]);
    let rc = npmrc(dir, registry, None);
    let out = npm(dir, &rc, &["install"]);
    assert!(
        out.status.success(),
        "npm install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.join("package-lock.json")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn npm_installs_through_an_npm_remote_and_again_with_upstream_stopped() {
    if !tools(&["verdaccio", "npm", "node"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut upstream = Verdaccio::start(&work.path().join("verdaccio"));
    let token = upstream.add_user("ci").await;
    publish_fixtures(work.path(), &upstream.url(), &token);
    let proxy = Proxy::start(&format!(
        "  npm:\n    type: remote\n    package: npm\n    base_url: {}\n    cache:\n      index_ttl: 1s\n",
        upstream.url()
    ));
    let registry = format!("{}/", proxy.url("/api/v1/remote/npm"));

    let app = work.path().join("app1");
    let lock = install_app(&app, &registry);
    assert_eq!(installed_version(&app, "@team/util"), "1.1.0");
    assert_eq!(installed_version(&app, "left-pad-lite"), "1.0.0");
    // The lockfile records the proxy as where each tarball came from.
    assert!(
        lock.contains(&format!(
            "\"resolved\": \"{registry}@team/util/-/util-1.1.0.tgz\""
        )),
        "{lock}"
    );
    assert!(
        lock.contains(&format!(
            "\"resolved\": \"{registry}left-pad-lite/-/left-pad-lite-1.0.0.tgz\""
        )),
        "{lock}"
    );
    let mut keys = proxy.stored_keys("npm/").await;
    keys.retain(|k| k.contains("/-/"));
    keys.sort();
    assert_eq!(
        keys,
        [
            "npm/@team/util/-/util-1.1.0.tgz",
            "npm/left-pad-lite/-/left-pad-lite-1.0.0.tgz"
        ]
    );

    // Both packuments, by both spellings of a scoped name, their links pointing here.
    let c = common::http::client();
    for path in ["@team%2futil", "@team/util"] {
        let r = c
            .get(proxy.remote("npm", path))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type"), "application/json");
        assert_eq!(header(&r, "vary"), "Accept");
        let doc: serde_json::Value = r.json().await.unwrap();
        assert_eq!(doc["dist-tags"]["latest"], "1.1.0");
        assert_eq!(
            doc["versions"]["1.0.0"]["dist"]["tarball"],
            format!("{registry}@team/util/-/util-1.0.0.tgz")
        );
        // The full document has what the abbreviated one leaves out.
        assert!(doc["versions"]["1.0.0"]["main"].is_string(), "{doc}");
    }
    let r = c
        .get(proxy.remote("npm", "@team%2futil"))
        .header(
            "accept",
            "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "content-type"),
        "application/vnd.npm.install-v1+json"
    );
    let etag = header(&r, "etag");
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(doc["versions"]["1.0.0"]["main"].is_null(), "{doc}");
    assert!(
        doc["versions"]["1.0.0"]["dist"]["integrity"]
            .as_str()
            .unwrap()
            .starts_with("sha512-")
    );
    let r = c
        .get(proxy.remote("npm", "@team%2futil"))
        .header("accept", "application/vnd.npm.install-v1+json")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = c
        .get(proxy.remote("npm", "left-pad-lite/-/left-pad-lite-1.0.0.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-cache"), "HIT");
    let r = c
        .get(proxy.remote("npm", "left-pad-lite/-/left-pad-lite-9.9.9.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(proxy.remote("npm", "no-such-package"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Upstream down and the packuments expired: a clean install still works, from stale
    // packuments and the stored tarballs.
    upstream.stop();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = c
        .get(proxy.remote("npm", "@team%2futil"))
        .header("accept", "application/vnd.npm.install-v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "STALE");
    let app2 = work.path().join("app2");
    install_app(&app2, &registry);
    assert_eq!(installed_version(&app2, "@team/util"), "1.1.0");
    assert_eq!(installed_version(&app2, "left-pad-lite"), "1.0.0");
}

fn sha512_sri(bytes: &[u8]) -> String {
    let d = sha2::Sha512::digest(bytes);
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(d)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tarballs_that_do_not_match_the_packument_are_refused_and_never_stored() {
    let upstream = TestUpstream::start();
    let good = common::test_bytes(3000, 5).to_vec();
    let other = common::test_bytes(3000, 6).to_vec();
    let sha1_hex = {
        use sha1::Digest as _;
        hex::encode(sha1::Sha1::digest(&good))
    };
    let tarball = |v: &str| format!("{}/demo/-/demo-{v}.tgz", upstream.url());
    let doc = serde_json::json!({
        "name": "demo",
        "dist-tags": {"latest": "1.2.0"},
        "versions": {
            // sha512 says `good`, upstream serves `other`.
            "1.0.0": {"dist": {"tarball": tarball("1.0.0"), "integrity": sha512_sri(&good), "shasum": sha1_hex}},
            // Only a sha1 shasum, and the bytes match it.
            "1.1.0": {"dist": {"tarball": tarball("1.1.0"), "shasum": sha1_hex}},
            // Only a sha1 shasum, which the bytes do not match.
            "1.2.0": {"dist": {"tarball": tarball("1.2.0"), "shasum": "0".repeat(40)}},
        }
    });
    upstream.put("demo", serde_json::to_vec(&doc).unwrap());
    upstream.put("demo/-/demo-1.0.0.tgz", other.clone());
    upstream.put("demo/-/demo-1.1.0.tgz", good.clone());
    upstream.put("demo/-/demo-1.2.0.tgz", good.clone());
    let proxy = Proxy::start(&format!(
        "  npm:\n    type: remote\n    package: npm\n    base_url: {}\n",
        upstream.url()
    ));
    let c = common::http::client();
    for v in ["1.0.0", "1.2.0"] {
        for _ in 0..2 {
            let r = c
                .get(proxy.remote("npm", &format!("demo/-/demo-{v}.tgz")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 502, "{v}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(
                body["message"].as_str().unwrap().contains("expected"),
                "{body}"
            );
        }
        assert_eq!(upstream.count("GET", &format!("demo/-/demo-{v}.tgz")), 2);
    }
    let r = c
        .get(proxy.remote("npm", "demo/-/demo-1.1.0.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), good);
    let mut keys = proxy.stored_keys("npm/demo/-/").await;
    keys.sort();
    assert_eq!(keys, ["npm/demo/-/demo-1.1.0.tgz"]);
}
