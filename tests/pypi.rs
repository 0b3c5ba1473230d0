//! PyPI remotes with real clients: pip and uv install through a pypi remote whose upstream is
//! pypiserver, again with the upstream stopped; the Simple API in both forms with every
//! attribute kept and links rewritten; a separate file host; tampered files refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::http::header;
use common::{Proxy, TestUpstream, free_port, run, sha256_hex, tools, wait_ready};

/// Writes wheels (zip files with METADATA, WHEEL and RECORD) that pip and uv install.
const MAKE_WHEELS: &str = r#"
import base64, hashlib, os, sys, zipfile
def wheel(out, name, version, requires=()):
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{dist}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": meta,
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for k, v in files.items():
        d = base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{k},sha256={d},{len(v.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(os.path.join(out, f"{dist}-{version}-py3-none-any.whl"), "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
out = sys.argv[1]
for spec in sys.argv[2:]:
    name, version, requires = spec.split(":")
    wheel(out, name, version, [r for r in requires.split(",") if r])
"#;

/// Writes the wheels `specs` (`name:version:requirement,...`) into `dir`.
fn wheels(dir: &Path, specs: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("python3")
        .arg("-c")
        .arg(MAKE_WHEELS)
        .arg(dir)
        .args(specs));
}

/// demo-pkg 1.0 and 2.0, which need helper-lib, and helper-lib 0.3.
fn make_wheels(dir: &Path) {
    wheels(
        dir,
        &[
            "demo-pkg:1.0:helper-lib>=0.1",
            "demo-pkg:2.0:helper-lib>=0.1",
            "helper-lib:0.3:",
        ],
    );
}

/// pypiserver serving `dir` on a free loopback port; stopped (by PID) when dropped.
struct PypiServer {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl PypiServer {
    fn start(dir: &Path, log: PathBuf) -> PypiServer {
        let port = free_port();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("pypi-server")
            .args([
                "run",
                "-p",
                &port.to_string(),
                "-i",
                "127.0.0.1",
                "-a",
                ".",
                "-P",
                ".",
            ])
            .arg(dir)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("start pypi-server");
        let server = PypiServer {
            child: Some(child),
            port,
            log,
        };
        wait_ready(
            "pypi-server",
            Duration::from_millis(100),
            &|| common::log_tail(&server.log),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PypiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pip_install(index: &str, target: &Path, spec: &str) -> String {
    let out = run(Command::new("pip")
        .args([
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
            "--index-url",
            index,
            "--target",
        ])
        .arg(target)
        .arg(spec));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn uv_install(index: &str, target: &Path, spec: &str, cache: &Path) {
    run(Command::new("uv")
        .args([
            "pip",
            "install",
            "--no-cache",
            "--index-url",
            index,
            "--target",
        ])
        .arg(target)
        .arg(spec)
        .env("UV_CACHE_DIR", cache));
}

fn installed_version(target: &Path, module: &str) -> String {
    std::fs::read_to_string(target.join(module).join("__init__.py")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pip_and_uv_install_through_a_pypi_remote_and_again_with_upstream_stopped() {
    if !tools(&["pypi-server", "pip", "uv", "python3"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    make_wheels(&work.path().join("packages"));
    let mut upstream =
        PypiServer::start(&work.path().join("packages"), work.path().join("pypi.log"));
    let proxy = Proxy::start(&format!(
        "  pypi:\n    type: remote\n    package: pypi\n    base_url: {}\n    cache:\n      index_ttl: 1s\n",
        upstream.url()
    ));
    let index = proxy.remote("pypi", "simple/");

    let t1 = work.path().join("t1");
    let out = pip_install(&index, &t1, "demo-pkg");
    assert!(out.contains("Successfully installed"), "{out}");
    assert_eq!(installed_version(&t1, "demo_pkg"), "VERSION = '2.0'\n");
    assert_eq!(installed_version(&t1, "helper_lib"), "VERSION = '0.3'\n");

    let t2 = work.path().join("t2");
    uv_install(&index, &t2, "demo-pkg==1.0", &work.path().join("uv-cache"));
    assert_eq!(installed_version(&t2, "demo_pkg"), "VERSION = '1.0'\n");

    // Every file is stored once, under the file host's path, whichever page linked it.
    let mut keys = proxy.stored_keys("pypi/files/").await;
    keys.sort();
    assert_eq!(
        keys,
        [
            "pypi/files/packages/demo_pkg-1.0-py3-none-any.whl",
            "pypi/files/packages/demo_pkg-2.0-py3-none-any.whl",
            "pypi/files/packages/helper_lib-0.3-py3-none-any.whl",
        ]
    );
    let wheel = std::fs::read(work.path().join("packages/demo_pkg-2.0-py3-none-any.whl")).unwrap();
    assert_eq!(
        proxy
            .stored("pypi/files/packages/demo_pkg-2.0-py3-none-any.whl")
            .await
            .unwrap(),
        wheel
    );

    // Upstream down and the pages expired: both clients still install, from stale pages.
    upstream.stop();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let c = common::http::client();
    let r = c
        .get(proxy.remote("pypi", "simple/demo-pkg/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-cache"), "STALE");
    let t3 = work.path().join("t3");
    let out = pip_install(&index, &t3, "demo-pkg");
    assert!(out.contains("Successfully installed"), "{out}");
    assert_eq!(installed_version(&t3, "demo_pkg"), "VERSION = '2.0'\n");
    let t4 = work.path().join("t4");
    uv_install(
        &index,
        &t4,
        "demo-pkg==1.0",
        &work.path().join("uv-cache-2"),
    );
    assert_eq!(installed_version(&t4, "helper_lib"), "VERSION = '0.3'\n");
}

const HASH_A: &str = "a";

/// A Simple API upstream of static pages, its files on a second host (as pypi.org and
/// files.pythonhosted.org are).
fn static_index(files: &TestUpstream, index: &TestUpstream, wheel: &[u8], metadata: &[u8]) {
    let sha = sha256_hex(wheel);
    let meta_sha = sha256_hex(metadata);
    files.put(
        "packages/ab/cd/demo_pkg-1.0-py3-none-any.whl",
        wheel.to_vec(),
    );
    files.put(
        "packages/ab/cd/demo_pkg-1.0-py3-none-any.whl.metadata",
        metadata.to_vec(),
    );
    files.put(
        "packages/ab/cd/demo-pkg-0.9.tar.gz",
        b"tampered bytes".to_vec(),
    );
    let page = format!(
        "<!DOCTYPE html><html><body>\n\
         <a href=\"{f}/packages/ab/cd/demo_pkg-1.0-py3-none-any.whl#sha256={sha}\" data-requires-python=\"&gt;=3.8\" data-core-metadata=\"sha256={meta_sha}\">demo_pkg-1.0-py3-none-any.whl</a>\n\
         <a href=\"{f}/packages/ab/cd/demo-pkg-0.9.tar.gz#sha256={bad}\" data-yanked=\"broken build\">demo-pkg-0.9.tar.gz</a>\n\
         <a href=\"https://elsewhere.invalid/demo-pkg-0.1.zip\">demo-pkg-0.1.zip</a>\n\
         </body></html>\n",
        f = files.url(),
        bad = HASH_A.repeat(64),
    );
    index.put("simple/demo-pkg/", page.into_bytes());
    index.put(
        "simple/",
        b"<html><body><a href=\"/simple/demo-pkg/\">Demo_Pkg</a></body></html>".to_vec(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn simple_pages_come_in_both_forms_with_their_attributes_and_links_back_here() {
    let files = TestUpstream::start();
    let index = TestUpstream::start();
    let wheel = common::test_bytes(3000, 7).to_vec();
    let metadata = b"Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n".to_vec();
    static_index(&files, &index, &wheel, &metadata);
    let proxy = Proxy::start(&format!(
        "  pypi:\n    type: remote\n    package: pypi\n    base_url: {}\n    files_url: {}\n",
        index.url(),
        files.url()
    ));
    let c = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page_url = proxy.remote("pypi", "simple/demo-pkg/");
    let sha = sha256_hex(&wheel);

    // PEP 691 JSON, as pip asks for it.
    let r = c
        .get(&page_url)
        .header(
            "accept",
            "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-type"),
        "application/vnd.pypi.simple.v1+json"
    );
    assert_eq!(header(&r, "vary"), "Accept");
    let etag = header(&r, "etag");
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["meta"]["api-version"], "1.0");
    assert_eq!(doc["name"], "demo-pkg");
    let f = &doc["files"][0];
    assert_eq!(f["filename"], "demo_pkg-1.0-py3-none-any.whl");
    assert_eq!(
        f["url"],
        format!("../../files/{sha}/packages/ab/cd/demo_pkg-1.0-py3-none-any.whl")
    );
    assert_eq!(f["hashes"]["sha256"], sha.as_str());
    assert_eq!(f["requires-python"], ">=3.8");
    assert_eq!(f["core-metadata"]["sha256"], sha256_hex(&metadata));
    assert_eq!(f["dist-info-metadata"], f["core-metadata"]);
    assert_eq!(f["yanked"], false);
    assert_eq!(doc["files"][1]["yanked"], "broken build");
    // A file on a host that is neither base_url nor files_url keeps its URL.
    assert_eq!(
        doc["files"][2]["url"],
        "https://elsewhere.invalid/demo-pkg-0.1.zip"
    );
    // The client's cached copy is confirmed with a 304.
    let r = c
        .get(&page_url)
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // PEP 503 HTML, by default and by `?format=`.
    let r = c.get(&page_url).send().await.unwrap();
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    assert_ne!(header(&r, "etag"), etag, "each form has its own entity tag");
    let html = r.text().await.unwrap();
    assert!(
        html.contains(&format!(
            "<a href=\"../../files/{sha}/packages/ab/cd/demo_pkg-1.0-py3-none-any.whl#sha256={sha}\" data-requires-python=\"&gt;=3.8\""
        )),
        "{html}"
    );
    assert!(html.contains("data-yanked=\"broken build\""), "{html}");
    let r = c
        .get(format!(
            "{page_url}?format=application/vnd.pypi.simple.v1%2Bhtml"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "content-type"),
        "application/vnd.pypi.simple.v1+html"
    );

    // Names are normalised by redirect, as pypi.org does.
    let r = c
        .get(proxy.remote("pypi", "simple/Demo_Pkg/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(header(&r, "location"), "../demo-pkg/");
    let r = c
        .get(proxy.remote("pypi", "simple/demo-pkg"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "location"), "demo-pkg/");
    let r = c
        .get(proxy.remote("pypi", "simple/no%20such/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The project list links normalised names.
    let r = c
        .get(proxy.remote("pypi", "simple/"))
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .unwrap();
    let list: serde_json::Value = r.json().await.unwrap();
    assert_eq!(list["projects"][0]["name"], "Demo_Pkg");
    let html = c
        .get(proxy.remote("pypi", "simple/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<a href=\"demo-pkg/\">Demo_Pkg</a>"),
        "{html}"
    );

    // The linked files come from files_url, checked against the page's hash; the PEP 658
    // metadata file beside it too.
    let file_url = proxy.remote(
        "pypi",
        &format!("files/{sha}/packages/ab/cd/demo_pkg-1.0-py3-none-any.whl"),
    );
    let r = c.get(&file_url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), wheel);
    let r = c.get(format!("{file_url}.metadata")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), metadata);
    assert_eq!(
        files.count("GET", "packages/ab/cd/demo_pkg-1.0-py3-none-any.whl"),
        1
    );
    let r = c.get(&file_url).send().await.unwrap();
    assert_eq!(header(&r, "x-cache"), "HIT");
    assert_eq!(
        files.count("GET", "packages/ab/cd/demo_pkg-1.0-py3-none-any.whl"),
        1
    );
    assert_eq!(
        index.count("GET", "packages/ab/cd/demo_pkg-1.0-py3-none-any.whl"),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn files_that_do_not_match_the_page_hash_are_refused_and_never_stored() {
    let files = TestUpstream::start();
    let index = TestUpstream::start();
    let wheel = common::test_bytes(2000, 3).to_vec();
    static_index(&files, &index, &wheel, b"Name: demo-pkg\n");
    let proxy = Proxy::start(&format!(
        "  pypi:\n    type: remote\n    package: pypi\n    base_url: {}\n    files_url: {}\n",
        index.url(),
        files.url()
    ));
    let c = common::http::client();
    let bad = proxy.remote(
        "pypi",
        &format!(
            "files/{}/packages/ab/cd/demo-pkg-0.9.tar.gz",
            HASH_A.repeat(64)
        ),
    );
    for _ in 0..2 {
        let r = c.get(&bad).send().await.unwrap();
        assert_eq!(r.status(), 502);
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("sha256"),
            "{body}"
        );
    }
    assert_eq!(files.count("GET", "packages/ab/cd/demo-pkg-0.9.tar.gz"), 2);
    assert!(proxy.stored_keys("pypi/files/").await.is_empty());
    // A link with a wrong hash for a file already cached under the right one is fetched
    // again and refused: a cached object answers only the digest it has.
    let good_path = "packages/ab/cd/demo_pkg-1.0-py3-none-any.whl";
    let r = c
        .get(proxy.remote("pypi", &format!("files/{}/{good_path}", sha256_hex(&wheel))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(proxy.remote("pypi", &format!("files/{}/{good_path}", HASH_A.repeat(64))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let r = c
        .get(proxy.remote("pypi", &format!("files/-/{good_path}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), wheel);
}

const CI_TOKEN: &str = "ci-secret-9f2c";

fn twine_upload(
    url: &str,
    user: &str,
    password: &str,
    files: &[&Path],
    extra: &[&str],
) -> std::process::Output {
    Command::new("twine")
        .args([
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
            "--repository-url",
            url,
            "-u",
            user,
            "-p",
            password,
        ])
        .args(extra)
        .args(files)
        .env("TWINE_CERT", "")
        .env_remove("TWINE_USERNAME")
        .env_remove("TWINE_PASSWORD")
        .output()
        .expect("run twine")
}

#[tokio::test(flavor = "multi_thread")]
async fn twine_uploads_to_a_local_repository_and_pip_installs_from_it() {
    if !tools(&["pypi-server", "pip", "twine", "python3"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let upstream_dir = work.path().join("upstream");
    wheels(&upstream_dir, &["helper-lib:0.3:"]);
    let upstream = PypiServer::start(&upstream_dir, work.path().join("pypi.log"));
    let ours = work.path().join("ours");
    wheels(
        &ours,
        &[
            "team-tool:1.0:helper-lib>=0.1",
            "team-tool:1.1:helper-lib>=0.1",
        ],
    );
    let proxy = Proxy::start_with(
        &format!(
            "  pypi:\n    type: remote\n    package: pypi\n    base_url: {}\n  team:\n    type: local\n    package: pypi\n",
            upstream.url()
        ),
        &format!(
            "auth:\n  tokens:\n    - name: ci\n      secret: {CI_TOKEN}\n      roles:\n        team: [write]\n"
        ),
    );
    let upload_url = proxy.url("/api/v1/local/team/");
    let v10 = ours.join("team_tool-1.0-py3-none-any.whl");
    let v11 = ours.join("team_tool-1.1-py3-none-any.whl");

    // Without the token's secret, nothing is stored.
    let out = twine_upload(&upload_url, "ci", "wrong", &[&v10], &[]);
    assert!(!out.status.success(), "{out:?}");
    assert!(proxy.stored_keys("team/").await.is_empty());

    let out = twine_upload(&upload_url, "ci", CI_TOKEN, &[&v10, &v11], &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = proxy
        .stored("team/packages/team-tool/team_tool-1.0-py3-none-any.whl")
        .await
        .unwrap();
    assert_eq!(stored, std::fs::read(&v10).unwrap());
    // A release is immutable: the same file again is refused with 409.
    let out = twine_upload(&upload_url, "ci", CI_TOKEN, &[&v10], &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("409")
            || String::from_utf8_lossy(&out.stdout).contains("409"),
        "{out:?}"
    );
    // The local repository's own Simple API, then pip from it with the remote for the rest.
    let c = common::http::client();
    let page: serde_json::Value = c
        .get(proxy.url("/api/v1/local/team/simple/team-tool/"))
        .header("accept", pypi_json())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = page["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "team_tool-1.0-py3-none-any.whl",
            "team_tool-1.1-py3-none-any.whl"
        ]
    );
    assert_eq!(
        page["files"][0]["hashes"]["sha256"],
        sha256_hex(&std::fs::read(&v10).unwrap())
    );
    let list = c
        .get(proxy.url("/api/v1/local/team/simple/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        list.contains("<a href=\"team-tool/\">team-tool</a>"),
        "{list}"
    );
    let r = c
        .get(proxy.url("/api/v1/local/team/simple/nothing-here/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let target = work.path().join("t");
    let out = run(Command::new("pip")
        .args([
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
            "--index-url",
        ])
        .arg(proxy.url("/api/v1/local/team/simple/"))
        .arg("--extra-index-url")
        .arg(proxy.remote("pypi", "simple/"))
        .arg("--target")
        .arg(&target)
        .arg("team-tool"));
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("Successfully installed"), "{out}");
    assert_eq!(installed_version(&target, "team_tool"), "VERSION = '1.1'\n");
    assert_eq!(
        installed_version(&target, "helper_lib"),
        "VERSION = '0.3'\n"
    );
}

fn pypi_json() -> &'static str {
    "application/vnd.pypi.simple.v1+json"
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_with_a_wrong_digest_or_a_foreign_file_name_are_refused() {
    let proxy = Proxy::start_with(
        "  team:\n    type: local\n    package: pypi\n  plain:\n    type: local\n    package: generic\n",
        &format!(
            "auth:\n  tokens:\n    - name: ci\n      secret: {CI_TOKEN}\n      roles:\n        \"*\": [write]\n"
        ),
    );
    let c = common::http::client();
    let body = common::test_bytes(5000, 11).to_vec();
    let form = |name: &str, file: &str, sha: &str| {
        reqwest::multipart::Form::new()
            .text(":action", "file_upload")
            .text("protocol_version", "1")
            .text("name", name.to_string())
            .text("version", "1.0")
            .text("sha256_digest", sha.to_string())
            .part(
                "content",
                reqwest::multipart::Part::bytes(body.clone()).file_name(file.to_string()),
            )
    };
    let post = |url: String, form: reqwest::multipart::Form| {
        c.post(url)
            .basic_auth("ci", Some(CI_TOKEN))
            .multipart(form)
            .send()
    };
    let url = proxy.url("/api/v1/local/team/");
    let r = post(
        url.clone(),
        form("demo", "demo-1.0.tar.gz", &"0".repeat(64)),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"], "checksum_mismatch", "{e}");
    let r = post(url.clone(), form("demo", "other-1.0.tar.gz", ""))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = post(url.clone(), form("demo", "../demo-1.0.tar.gz", ""))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(proxy.stored_keys("team/").await.is_empty());
    let r = post(
        url.clone(),
        form("demo", "demo-1.0.tar.gz", &sha256_hex(&body)),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let up: serde_json::Value = r.json().await.unwrap();
    assert_eq!(up["sha256"], sha256_hex(&body));
    assert_eq!(up["project"], "demo");
    // Not a form, or not a pypi repository: refused with a JSON error.
    let r = c
        .post(url.clone())
        .basic_auth("ci", Some(CI_TOKEN))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.json::<serde_json::Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("multipart")
    );
    let r = post(
        proxy.url("/api/v1/local/plain/"),
        form("demo", "demo-1.0.tar.gz", ""),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 405);
    let r = c
        .post(url)
        .multipart(form("demo", "demo-1.1.tar.gz", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_virtual_repository_merges_pages_and_keeps_local_projects_from_remotes() {
    if !tools(&["pypi-server", "pip", "uv", "python3"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // The public index has helper-lib, and a higher team-tool that is not the team's.
    let upstream_dir = work.path().join("upstream");
    wheels(
        &upstream_dir,
        &["helper-lib:0.3:", "team-tool:9.9:", "public-only:1.0:"],
    );
    let upstream = PypiServer::start(&upstream_dir, work.path().join("pypi.log"));
    let ours = work.path().join("ours");
    wheels(
        &ours,
        &[
            "team-tool:1.1:helper-lib>=0.1,public-only",
            "helper-lib:0.2:",
        ],
    );
    // The remote comes first: the rule for local projects does not depend on the order.
    let proxy = Proxy::start_with(
        &format!(
            "  pypi:\n    type: remote\n    package: pypi\n    base_url: {}\n  team:\n    type: local\n    package: pypi\n  all:\n    type: virtual\n    package: pypi\n    members: [pypi, team]\n",
            upstream.url()
        ),
        &format!(
            "auth:\n  anonymous_read: true\n  tokens:\n    - name: ci\n      secret: {CI_TOKEN}\n      roles:\n        team: [write]\n"
        ),
    );
    let publish = run(Command::new("uv")
        .args(["publish", "--trusted-publishing", "never", "--publish-url"])
        .arg(proxy.url("/api/v1/local/team/"))
        .args(["-u", "ci", "-p", CI_TOKEN])
        .arg(ours.join("team_tool-1.1-py3-none-any.whl"))
        .arg(ours.join("helper_lib-0.2-py3-none-any.whl"))
        .env("UV_CACHE_DIR", work.path().join("uv-cache")));
    assert!(publish.status.success());

    let c = common::http::client();
    let page = |project: &str| {
        let c = c.clone();
        let url = proxy.url(&format!("/api/v1/virtual/all/simple/{project}/"));
        async move {
            let r = c
                .get(url)
                .header("accept", pypi_json())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(header(&r, "vary"), "Accept");
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let files = |page: &serde_json::Value| -> Vec<(String, String)> {
        page["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["filename"].as_str().unwrap().to_string(),
                    f["url"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    // team-tool is held locally: the public 9.9 is never offered.
    let team = files(&page("Team_Tool").await);
    assert_eq!(
        team,
        [(
            "team_tool-1.1-py3-none-any.whl".to_string(),
            "../../members/team/packages/team-tool/team_tool-1.1-py3-none-any.whl".to_string()
        )]
    );
    // helper-lib is held locally too (0.2 only): the remote's 0.3 is not merged in.
    let helper = files(&page("helper-lib").await);
    assert_eq!(helper.len(), 1, "{helper:?}");
    assert_eq!(helper[0].0, "helper_lib-0.2-py3-none-any.whl");

    // A project only the remote has comes from it, its links through the member.
    let public = files(&page("public-only").await);
    assert_eq!(
        public,
        [(
            "public_only-1.0-py3-none-any.whl".to_string(),
            format!(
                "../../members/pypi/files/{}/packages/public_only-1.0-py3-none-any.whl",
                sha256_hex(
                    &std::fs::read(upstream_dir.join("public_only-1.0-py3-none-any.whl")).unwrap()
                )
            )
        )]
    );
    let r = c
        .get(proxy.url(
            "/api/v1/virtual/all/members/pypi/files/-/packages/public_only-1.0-py3-none-any.whl",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-artifactapi-member"), "pypi");
    // A link naming a repository that is not a member is not followed.
    let r = c
        .get(proxy.url("/api/v1/virtual/all/members/elsewhere/packages/x.whl"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The project list: every member's projects, each once.
    let list = c
        .get(proxy.url("/api/v1/virtual/all/simple/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(list.matches("<a href=\"team-tool/\">").count(), 1, "{list}");
    assert!(list.contains("<a href=\"public-only/\">"), "{list}");

    // pip and uv through the one index: the team's tool, the public dependency.
    let index = proxy.url("/api/v1/virtual/all/simple/");
    let t1 = work.path().join("t1");
    let out = pip_install(&index, &t1, "team-tool");
    assert!(out.contains("Successfully installed"), "{out}");
    assert_eq!(installed_version(&t1, "team_tool"), "VERSION = '1.1'\n");
    assert_eq!(installed_version(&t1, "helper_lib"), "VERSION = '0.2'\n");
    assert_eq!(installed_version(&t1, "public_only"), "VERSION = '1.0'\n");
    let t2 = work.path().join("t2");
    uv_install(&index, &t2, "team-tool", &work.path().join("uv-cache-2"));
    assert_eq!(installed_version(&t2, "team_tool"), "VERSION = '1.1'\n");
    assert_eq!(installed_version(&t2, "helper_lib"), "VERSION = '0.2'\n");
    assert_eq!(installed_version(&t2, "public_only"), "VERSION = '1.0'\n");
}
