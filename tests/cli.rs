//! The offline commands driven as a user would: the built binary against real upstreams.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Proxy, TestUpstream, have_tool, test_bytes, tools};

struct Cli {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Cli {
    fn new(remotes_yaml: &str) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("remotes.yaml");
        std::fs::write(
            &config,
            format!(
                "storage:\n  path: {}\nremotes:\n{remotes_yaml}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        Cli { dir, config }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_artifactapi"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn keys(&self) -> Vec<String> {
        let json: serde_json::Value = serde_json::from_str(&self.ok(&["ls", "--json"])).unwrap();
        json.as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap().to_string())
            .collect()
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_artifactapi"))
}

#[test]
fn fetch_writes_files_and_stdout_through_the_cache() {
    let up = TestUpstream::start();
    let body = test_bytes(500_000, 11);
    up.put("g/tool.tar.gz", body.clone());
    let cli = Cli::new(&format!(
        "  gen:\n    type: remote\n    package: generic\n    base_url: {}/g\n",
        up.url()
    ));
    let out = cli.dir.path().join("tool.tar.gz");
    cli.ok(&["fetch", "gen", "tool.tar.gz", "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), body);
    let o = cli.run(&["fetch", "gen", "tool.tar.gz", "-o", "-"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, body);
    assert!(String::from_utf8_lossy(&o.stderr).contains("HIT"));
    assert_eq!(up.count("GET", "g/tool.tar.gz"), 1);
    let o = cli.run(&["fetch", "gen", "missing"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
}

#[test]
fn warm_from_paths_and_github_releases_then_ls_and_flush() {
    let up = TestUpstream::start();
    up.put(
        "gh/acme/tool/releases/download/v1.0/tool-linux-amd64.tar.gz",
        test_bytes(2000, 1),
    );
    up.put(
        "gh/acme/tool/releases/download/v1.0/tool-darwin-arm64.tar.gz",
        test_bytes(2000, 2),
    );
    up.put(
        "gh/acme/tool/releases/download/v0.9/tool-linux-amd64.tar.gz",
        test_bytes(2000, 3),
    );
    up.put("gh/latest.json", "{}");
    let base = format!("{}/gh", up.url());
    let releases = serde_json::json!([
        {"tag_name": "v1.0", "assets": [
            {"name": "tool-linux-amd64.tar.gz", "browser_download_url": format!("{base}/acme/tool/releases/download/v1.0/tool-linux-amd64.tar.gz")},
            {"name": "tool-darwin-arm64.tar.gz", "browser_download_url": format!("{base}/acme/tool/releases/download/v1.0/tool-darwin-arm64.tar.gz")}
        ]},
        {"tag_name": "v0.9", "assets": [
            {"name": "tool-linux-amd64.tar.gz", "browser_download_url": format!("{base}/acme/tool/releases/download/v0.9/tool-linux-amd64.tar.gz")}
        ]}
    ]);
    up.put("api/repos/acme/tool/releases", releases.to_string());
    let cli = Cli::new(&format!(
        "  gh:\n    type: remote\n    package: generic\n    base_url: {base}\n    api_url: {}/api\n    index_patterns: ['latest\\.json$']\n  other:\n    type: remote\n    package: generic\n    base_url: {}/gh\n",
        up.url(),
        up.url()
    ));
    cli.ok(&[
        "warm",
        "gh",
        "--github-releases",
        "acme/tool",
        "--pattern",
        "linux",
        "latest.json",
    ]);
    assert_eq!(
        cli.keys(),
        vec![
            "gh/acme/tool/releases/download/v0.9/tool-linux-amd64.tar.gz",
            "gh/acme/tool/releases/download/v1.0/tool-linux-amd64.tar.gz",
            "gh/latest.json",
        ]
    );
    // A second run is all hits.
    let out = cli.run(&[
        "warm",
        "gh",
        "--github-releases",
        "acme/tool",
        "--pattern",
        "linux",
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("│ 0       ┆ 2 "), "{err}");
    assert_eq!(
        up.count(
            "GET",
            "gh/acme/tool/releases/download/v1.0/tool-linux-amd64.tar.gz"
        ),
        1
    );

    // Failures make a non-zero exit.
    let out = cli.run(&["warm", "gh", "nope.bin"]);
    assert!(!out.status.success());

    // Flush of one remote's index files leaves its files and other remotes alone.
    cli.ok(&["warm", "other", "latest.json"]);
    let out = cli.ok(&["flush", "--remote", "gh", "--type", "index"]);
    assert!(out.contains("flushed 1 objects"), "{out}");
    let keys = cli.keys();
    assert!(!keys.contains(&"gh/latest.json".to_string()));
    assert!(keys.contains(&"other/latest.json".to_string()));
    assert_eq!(keys.len(), 3);
    // ls filters and table output.
    let table = cli.ok(&["ls", "gh", "--prefix", "acme/tool/releases/download/v1.0"]);
    assert!(
        table.contains("tool-linux-amd64.tar.gz") && !table.contains("v0.9"),
        "{table}"
    );
    assert!(table.contains("1 objects"), "{table}");
    cli.ok(&["flush", "--yes"]);
    assert!(cli.keys().is_empty());
}

fn build_apkindex(dir: &Path, packages: &[(&str, &str)]) {
    let work = dir.join("apkwork");
    std::fs::create_dir_all(&work).unwrap();
    let mut text = String::new();
    for (name, version) in packages {
        text.push_str(&format!(
            "C:Q1fake=\nP:{name}\nV:{version}\nA:x86_64\nS:100\n\n"
        ));
    }
    std::fs::write(work.join("APKINDEX"), text).unwrap();
    std::fs::write(work.join("DESCRIPTION"), "test").unwrap();
    let status = Command::new("tar")
        .arg("-czf")
        .arg(dir.join("APKINDEX.tar.gz"))
        .arg("-C")
        .arg(&work)
        .args(["DESCRIPTION", "APKINDEX"])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn warm_from_apkindex_respects_include_patterns() {
    let up = TestUpstream::start();
    let www = tempfile::tempdir().unwrap();
    let repo = www.path().join("alpine/v3.20/main/x86_64");
    std::fs::create_dir_all(&repo).unwrap();
    build_apkindex(
        &repo,
        &[
            ("busybox", "1.36.1-r29"),
            ("musl", "1.2.5-r0"),
            ("zlib", "1.3.1-r1"),
        ],
    );
    for f in [
        "busybox-1.36.1-r29.apk",
        "musl-1.2.5-r0.apk",
        "zlib-1.3.1-r1.apk",
    ] {
        std::fs::write(repo.join(f), f).unwrap();
    }
    up.serve_dir(www.path());
    let cli = Cli::new(&format!(
        "  alpine:\n    type: remote\n    package: alpine\n    base_url: {}/alpine\n    include_patterns: ['/(busybox|musl)-']\n",
        up.url()
    ));
    cli.ok(&[
        "warm",
        "alpine",
        "--apkindex",
        "v3.20/main/x86_64",
        "-j",
        "2",
    ]);
    assert_eq!(
        cli.keys(),
        vec![
            "alpine/v3.20/main/x86_64/APKINDEX.tar.gz",
            "alpine/v3.20/main/x86_64/busybox-1.36.1-r29.apk",
            "alpine/v3.20/main/x86_64/musl-1.2.5-r0.apk",
        ]
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli.ok(&["ls", "--json", "--class", "index"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["class"], "index");
}

#[test]
fn warm_from_rpm_repodata() {
    if !(have_tool("rpmbuild") && have_tool("createrepo_c")) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let top = work.path().join("rpmbuild");
    std::fs::create_dir_all(&top).unwrap();
    let repo = work.path().join("www/el/9/x86_64");
    std::fs::create_dir_all(repo.join("Packages")).unwrap();
    for name in ["warm-one", "warm-two"] {
        let spec = top.join(format!("{name}.spec"));
        std::fs::write(
            &spec,
            format!(
                "Name: {name}\nVersion: 2.0\nRelease: 1\nSummary: t\nLicense: MIT\nBuildArch: noarch\n%description\nt\n%files\n"
            ),
        )
        .unwrap();
        let st = Command::new("rpmbuild")
            .args(["-bb", "--define"])
            .arg(format!("_topdir {}", top.display()))
            .arg(&spec)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let rpm = format!("{name}-2.0-1.noarch.rpm");
        std::fs::copy(
            top.join("RPMS/noarch").join(&rpm),
            repo.join("Packages").join(&rpm),
        )
        .unwrap();
    }
    // One copy of the repository per compression of its metadata; warm reads each.
    let compressions = ["gz", "xz", "bz2"];
    for c in compressions {
        let copy = work.path().join(format!("www/el/{c}/x86_64"));
        std::fs::create_dir_all(copy.join("Packages")).unwrap();
        for entry in std::fs::read_dir(repo.join("Packages")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.join("Packages").join(entry.file_name())).unwrap();
        }
        let st = Command::new("createrepo_c")
            .arg(format!("--general-compress-type={c}"))
            .arg(&copy)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    let up = TestUpstream::start();
    up.serve_dir(&work.path().join("www"));
    let cli = Cli::new(&format!(
        "  el:\n    type: remote\n    package: rpm\n    base_url: {}/el\n",
        up.url()
    ));
    for c in compressions {
        cli.ok(&["warm", "el", "--repodata", &format!("{c}/x86_64")]);
        let keys = cli.keys();
        for rpm in ["warm-one-2.0-1.noarch.rpm", "warm-two-2.0-1.noarch.rpm"] {
            assert!(
                keys.contains(&format!("el/{c}/x86_64/Packages/{rpm}")),
                "{c}: {keys:?}"
            );
        }
        assert!(keys.contains(&format!("el/{c}/x86_64/repodata/repomd.xml")));

        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("el/{c}/"))
                    && k.ends_with(&format!("primary.xml.{c}"))),
            "{c}: {keys:?}"
        );
    }
}

#[test]
fn http_flush_endpoint_reports_counts() {
    let up = TestUpstream::start();
    up.put("g/a", "a");
    up.put("g/b.json", "b");
    let proxy = Proxy::start_with(
        &format!(
            "  gen:\n    type: remote\n    package: generic\n    base_url: {}/g\n    index_patterns: ['\\.json$']\n",
            up.url()
        ),
        "auth:\n  tokens:\n    - name: ops\n      secret: ops-secret-0123456789\n      roles:\n        \"*\": [admin]\n",
    );
    let (code, _) = common::raw_get(proxy.addr, "/api/v1/remote/gen/a");
    assert_eq!(code, 200);
    let (code, _) = common::raw_get(proxy.addr, "/api/v1/remote/gen/b.json");
    assert_eq!(code, 200);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let c = reqwest::Client::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body: serde_json::Value = rt.block_on(async {
        c.post(proxy.url("/api/v1/cache/flush?remote=gen&type=index"))
            .bearer_auth("ops-secret-0123456789")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(body["flushed"]["objects"], 1, "{body}");
    assert_eq!(body["flushed"]["metadata"], 1, "{body}");
    assert_eq!(body["type"], "index");
    let status = rt.block_on(async {
        c.post(proxy.url("/api/v1/cache/flush?remote=nope"))
            .bearer_auth("ops-secret-0123456789")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 404);
}

#[test]
fn validate_config_reports_every_error_at_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("remotes.yaml");
    std::fs::write(
        &bad,
        "remotes:\n  a:\n    type: remote\n    package: rpm\n    base_url: ftp://x\n  b:\n    type: remot\n    package: generic\n  c:\n    type: remote\n    package: generic\n    base_url: http://h\n    include_patterns:\n      - ok\n      - '('\n    cach: {}\n  d:\n    type: virtual\n    package: generic\n    members: [zzz]\n  e:\n    type: remote\n    package: generic\n",
    )
    .unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "remotes:\n  x:\n    type: remote\n    package: generic\n    base_url: https://example.org\n    password: ${ARTIFACTAPI_TEST_SURELY_UNSET}\n",
    )
    .unwrap();
    let out = bin()
        .args(["validate-config"])
        .arg(&bad)
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let b = bad.display().to_string();
    let g = good.display().to_string();
    for expected in [
        format!("{b}:5:15: error: remotes.a: base_url must be http or https"),
        format!("{b}:7:11: error: remotes.b.type: unknown variant `remot`"),
        format!("{b}:15:10: error: remotes.c.include_patterns: invalid regex"),
        format!("{b}:20:5: error: virtual repository 'd' lists unknown member 'zzz'"),
        format!("{b}:21:3: error: remote repository 'e' has no base_url"),
        format!("{g}:6:15: warning: environment variable ARTIFACTAPI_TEST_SURELY_UNSET is not set"),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&expected)),
            "missing {expected:?} in\n{text}"
        );
    }
    let out = bin().args(["validate-config"]).arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "warnings alone are valid");
    let out = bin().args(["validate-config", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Serve refuses the same broken file with a located error and no panic.
    let out = bin()
        .arg("--config")
        .arg(&bad)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{b}:5:15:")), "{err}");
}

#[test]
fn committed_completions_and_man_pages_match_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let st = bin()
        .arg("generate-assets")
        .arg("--completions")
        .arg(dir.path().join("completions"))
        .arg("--man")
        .arg(dir.path().join("man"))
        .status()
        .unwrap();
    assert!(st.success());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["completions", "man"] {
        let mut generated: Vec<_> = std::fs::read_dir(dir.path().join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        generated.sort();
        assert!(!generated.is_empty());
        for name in generated {
            let fresh = std::fs::read(dir.path().join(sub).join(&name)).unwrap();
            let committed = std::fs::read(root.join(sub).join(&name)).unwrap_or_default();
            assert!(
                fresh == committed,
                "{sub}/{} is out of date: run `cargo run -- generate-assets`",
                name.to_string_lossy()
            );
        }
    }
}

#[test]
fn every_example_config_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let out = bin().arg("validate-config").args(&files).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // No example may rely on a variable being unset.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("error"));
}

/// `warm --image` and `fetch NAME@DIGEST` against a real registry, while `serve` runs on the same
/// data: afterwards skopeo pulls the warmed platform through the server with the registry
/// stopped, and a second warm is all hits.
#[test]
fn warm_and_fetch_docker_images_then_pull_with_the_registry_stopped() {
    use common::layout::{Layout, digest_of, pull};
    use common::registry::{Auth, Registry};
    if !tools(&["docker-registry", "skopeo", "umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut reg = Registry::start(&tmp.path().join("reg"), Auth::None);
    let layout = Layout::init(&tmp.path().join("oci"));
    let layer = |seed: u64| {
        vec![vec![(
            format!("data/f{seed}.bin"),
            test_bytes(30_000, seed).to_vec(),
        )]]
    };
    let amd = layout.add_image("amd", "amd64", &layer(61));
    let arm = layout.add_image("arm", "arm64", &layer(62));
    layout.add_index("multi", &[("amd", "amd64"), ("arm", "arm64")]);
    reg.push(&layout, "multi", "library/multi:v1");

    let proxy = Proxy::start(&format!(
        "  hub:\n    type: remote\n    package: docker\n    base_url: {}\n",
        reg.url()
    ));
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_artifactapi"))
            .arg("--config")
            .arg(&proxy.config)
            .args(args)
            .output()
            .unwrap()
    };
    let o = cli(&[
        "warm",
        "hub",
        "--image",
        "library/multi:v1",
        "--platform",
        "linux/amd64",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cli(&["fetch", "hub", &format!("library/multi@{arm}")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let blobs = |tag: &str| layout.image_blobs(tag);
    let stored = |d: &str| {
        proxy
            .data_dir()
            .join("objects/hub/blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    for d in blobs("amd").iter().chain(blobs("arm").iter()) {
        assert_eq!(digest_of(&std::fs::read(stored(d)).unwrap()), *d);
    }

    reg.stop();
    let host = proxy.addr.to_string();
    let out = tmp.path().join("amd");
    pull(
        &host,
        "hub/library/multi:v1",
        &out,
        &["--override-arch=amd64", "--override-os=linux"],
    )
    .unwrap();
    assert_eq!(
        std::fs::read(out.join("manifest.json")).unwrap(),
        layout.manifest("amd")
    );
    let out = tmp.path().join("arm");
    pull(&host, &format!("hub/library/multi@{arm}"), &out, &[]).unwrap();
    assert_eq!(
        std::fs::read(out.join("manifest.json")).unwrap(),
        layout.manifest("arm")
    );
    assert_ne!(amd, arm);

    // Everything is cached: a second warm succeeds with the registry down.
    let o = cli(&[
        "warm",
        "hub",
        "--image",
        "library/multi:v1",
        "--platform",
        "linux/amd64",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn ls_shows_last_reads_and_flush_unused_for_removes_only_the_unread() {
    let up = TestUpstream::start();
    up.put("files/old.bin", test_bytes(3000, 7));
    up.put("files/new.bin", test_bytes(1000, 8));
    let cli = Cli::new(&format!(
        "  gen:\n    type: remote\n    package: generic\n    base_url: {}/files\n    cache:\n      max_size: 1 MiB\n",
        up.url()
    ));
    cli.ok(&["warm", "gen", "old.bin", "new.bin"]);
    // old.bin was last read 40 days ago, as its file's access time says.
    let old = cli.dir.path().join("data/objects/gen/old.bin");
    let st = Command::new("touch")
        .args(["-a", "-d", "40 days ago"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(st.success());

    let rows: serde_json::Value =
        serde_json::from_str(&cli.ok(&["ls", "--json", "--sort", "read"])).unwrap();
    let keys: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["gen/old.bin", "gen/new.bin"],
        "least recently read first"
    );
    let day = 86_400_000u64;
    let read_at = rows[0]["read_at_ms"].as_u64().unwrap();
    let now = rows[1]["read_at_ms"].as_u64().unwrap();
    assert!(now - read_at > 39 * day, "{rows}");
    let table = cli.ok(&["ls", "--sort", "read"]);
    assert!(table.contains("last read"), "{table}");

    let summary: serde_json::Value =
        serde_json::from_str(&cli.ok(&["ls", "--summary", "--json"])).unwrap();
    let repo = &summary["repositories"][0];
    assert_eq!(repo["repository"], "gen");
    assert_eq!(repo["objects"], 2);
    assert_eq!(repo["bytes"], 4000);
    assert_eq!(repo["limit"], 1 << 20);

    let out = cli.ok(&["flush", "--remote", "gen", "--unused-for", "30d"]);
    assert!(out.contains("flushed 1 objects"), "{out}");
    assert_eq!(cli.keys(), ["gen/new.bin"]);
    assert!(!old.exists());
    let bad = cli.run(&["flush", "--remote", "gen", "--unused-for", "soon"]);
    assert!(!bad.status.success());
}
