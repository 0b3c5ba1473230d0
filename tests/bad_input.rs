//! Bad-input suite: hostile request paths sent raw over TCP, hostile registry names, tags and
//! digests, oversized headers, and broken config files. Each must get a 4xx (or, for configs, a
//! `file:line:col` error and a non-zero exit), never a 5xx; no file outside the remote's
//! storage is read or created; and no upstream but the remote's own is ever asked, and that one
//! only for paths inside the remote.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proxy, TestUpstream, raw_request, walk};

const CANARY: &str = "CANARY-7f3a91";

fn get(addr: SocketAddr, target: &[u8], extra_headers: &str) -> (u16, String) {
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(
        format!(" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra_headers}\r\n")
            .as_bytes(),
    );
    raw_request(addr, &req)
}

/// The proxy under attack, its remote's upstream ("home") and an upstream nobody may reach
/// ("foreign"), plus canary files around the data directory.
struct Target {
    home: TestUpstream,
    foreign: TestUpstream,
    proxy: Proxy,
    outside: tempfile::TempDir,
    before: Vec<(PathBuf, Vec<u8>)>,
}

impl Target {
    fn start() -> Target {
        let home = TestUpstream::start();
        let foreign = TestUpstream::start();
        home.put("files/real.bin", "real bytes");
        // Paths of the home upstream outside the remote's base path: never to be asked for.
        home.put("secret.txt", CANARY);
        home.put("files-private/x", CANARY);
        foreign.put("x", CANARY);
        foreign.put("files/x", CANARY);
        let remotes = format!(
            "  gen:\n    type: remote\n    package: generic\n    base_url: {home}/files\n  \
             reg:\n    type: remote\n    package: docker\n    base_url: {home}/reg\n    \
             mirror_of: [docker.io]\n",
            home = home.url()
        );
        let proxy = Proxy::start(&remotes);
        let outside = tempfile::tempdir().unwrap();
        let data = proxy.data_dir();
        for dir in [
            proxy.dir.path().to_path_buf(),
            data.clone(),
            data.join("objects"),
            data.join("objects/other"),
            data.join("meta"),
            outside.path().to_path_buf(),
        ] {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("canary.txt"), CANARY).unwrap();
            std::fs::write(dir.join("passwd"), CANARY).unwrap();
        }
        let mut t = Target {
            home,
            foreign,
            proxy,
            outside,
            before: Vec::new(),
        };
        t.before = t.outside_files();
        t
    }

    /// Every file outside `data/objects/{gen,reg}` and `data/meta/{gen,reg}`, with contents.
    fn outside_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let data = self.proxy.data_dir();
        let inside = [
            data.join("objects/gen"),
            data.join("objects/reg"),
            data.join("meta/gen"),
            data.join("meta/reg"),
        ];
        let mut out = Vec::new();
        for root in [self.proxy.dir.path(), self.outside.path()] {
            walk(root, &mut |p: &Path| {
                if !inside.iter().any(|i| p.starts_with(i)) {
                    out.push((p.to_path_buf(), std::fs::read(p).unwrap_or_default()));
                }
            });
        }
        out.sort();
        out
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.addr
    }

    /// Checks one answer: a 4xx, and no canary in the body.
    fn check(&self, what: &str, (code, body): (u16, String)) {
        assert!(
            (400..500).contains(&code),
            "{what}: status {code}, body {body:?}"
        );
        assert!(!body.contains(CANARY), "{what}: canary served: {body:?}");
    }

    /// After the attack: no file outside the remotes' storage changed or appeared, the foreign
    /// upstream saw nothing, and the home upstream was asked only for paths inside a remote.
    fn check_contained(&self) {
        assert_eq!(
            self.outside_files(),
            self.before,
            "files outside the storage root changed"
        );
        assert_eq!(
            self.foreign.requests(),
            Vec::<String>::new(),
            "the foreign upstream was asked"
        );
        for r in self.home.requests() {
            let path = r.split_once(' ').unwrap().1;
            assert!(
                path.starts_with("/files/") || path.starts_with("/reg/v2/"),
                "home upstream asked outside the remote: {r}"
            );
            for seg in path.split('/').skip(1) {
                let decoded = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
                assert!(
                    decoded != ".." && decoded != "." && !decoded.contains(['/', '\\', '\0']),
                    "home upstream asked {r}"
                );
            }
        }
        assert!(self.home.count("GET", "secret.txt") == 0);
    }
}

/// Hostile path tails, each to be put after `/api/v1/remote/gen/`.
fn hostile_tails(foreign: SocketAddr) -> Vec<Vec<u8>> {
    let f = foreign.to_string();
    let cores: Vec<String> = vec![
        "..".into(),
        ".".into(),
        "../..".into(),
        "../../..".into(),
        "../../../..".into(),
        "a/../..".into(),
        "a/../../b".into(),
        "%2e%2e".into(),
        "%2E%2E".into(),
        "%2e.".into(),
        ".%2e".into(),
        "%2e".into(),
        "%2e%2e%2f%2e%2e".into(),
        "..%2f..".into(),
        "..%2F..%2F..".into(),
        "a%2f..%2f..".into(),
        "%2f".into(),
        "%2Fetc%2Fpasswd".into(),
        "..%5c..".into(),
        "%5c".into(),
        "a%5cb".into(),
        "%252e%252e".into(),
        "%252e%252e%252f".into(),
        "%25252e%25252e".into(),
        "%25".into(),
        "%%32%65%%32%65".into(),
        "%u002e%u002e".into(),
        "%c0%ae%c0%ae".into(),
        "%c0%af".into(),
        "%e0%80%ae%e0%80%ae".into(),
        "%c1%9c".into(),
        "%ff%fe".into(),
        "%00".into(),
        "a%00.bin".into(),
        "%0d%0aX-Injected:%201".into(),
        "%0a".into(),
        "%7f".into(),
        "%EF%BC%8E%EF%BC%8E".into(),
        "%E2%80%A4%E2%80%A4".into(),
        "%EF%B9%92%EF%B9%92".into(),
        "%E2%88%95".into(),
        "%EF%BC%8F".into(),
        "%E2%81%84".into(),
        "%EF%BC%BC".into(),
        "%EF%B9%A8".into(),
        "%E2%A7%B5".into(),
        ".artifactapi-tmp-1-1".into(),
        "%2eartifactapi-tmp-99-m1".into(),
        "a".repeat(256),
        "%61".repeat(256),
        "b".repeat(5000),
        format!("@{f}"),
        format!("@{f}/x"),
        format!("user:pass@{f}"),
        format!("%40{f}"),
        format!("/{f}"),
        format!("//{f}"),
        format!("http:%2f%2f{f}"),
        format!("http://{f}"),
        format!("%2f%2f{f}"),
        format!("..%2f..%2f..%2f{f}"),
        format!("x?u=http://{f}/x"),
        format!("x#@{f}"),
        "real.bin/..;".into(),
        "..;".into(),
        "..;/canary.txt".into(),
        ".;".into(),
        "%2e%2e;".into(),
        "..%3b".into(),
        "..%3B".into(),
        "%2e%2e%3b".into(),
        "real.bin;x=1".into(),
        "...".into(),
        "....".into(),
        ".. ".into(),
        "..%20".into(),
        ". .".into(),
        "%20".into(),
        "a%E2%80%AEb".into(),
        "%E2%80%8B".into(),
        "%EF%BB%BFreal.bin".into(),
        "%E2%81%A6x".into(),
        "real.bin/".into(),
        "real.bin/..".into(),
        "real.bin%00".into(),
        "real.bin%2f".into(),
    ];
    let mut out = Vec::new();
    for core in &cores {
        for (prefix, suffix) in [("", ""), ("a/", "/canary.txt"), ("", "/../../canary.txt")] {
            out.push(format!("{prefix}{core}{suffix}").into_bytes());
        }
    }
    // Raw bytes no URL library would send.
    for raw in [
        &b"..\\..\\canary.txt"[..],
        b"a\\..\\..\\..\\canary.txt",
        b"\\\\host\\share",
        b"a\0b",
        b"..\0/canary.txt",
        b"a\r\nX-Injected: 1",
        b"a b",
        b"\xc0\xae\xc0\xae/canary.txt",
        b"\xef\xbc\x8e\xef\xbc\x8e/canary.txt",
        b"\xff",
        b"a\tb",
    ] {
        out.push(raw.to_vec());
    }
    // Long paths: 16 KiB in one segment, in many segments, and just over the decoded limit.
    out.push("x".repeat(16 * 1024).into_bytes());
    out.push("ab/".repeat(16 * 1024 / 3).into_bytes());
    out.push(format!("{}x", "abcd/".repeat(1000)).into_bytes());
    out.push("%2e%2e/".repeat(16 * 1024 / 7).into_bytes());
    out
}

#[test]
fn hostile_request_paths_get_4xx_and_stay_inside_the_remote() {
    let t = Target::start();
    let tails = hostile_tails(t.foreign.addr);
    let mut sent = 0;
    for tail in &tails {
        let mut target = b"/api/v1/remote/gen/".to_vec();
        target.extend_from_slice(tail);
        let what = String::from_utf8_lossy(&target).into_owned();
        let what = &what[..what.len().min(200)];
        t.check(what, get(t.addr(), &target, ""));
        sent += 1;
    }
    // Hostile repository names and request targets that are not paths at all.
    let f = t.foreign.addr;
    let targets: Vec<Vec<u8>> = [
        "/api/v1/remote/../gen/real.bin".to_string(),
        "/api/v1/remote/%2e%2e/gen/real.bin".into(),
        "/api/v1/remote/..%2fgen/real.bin".into(),
        "/api/v1/remote/gen%2f..%2f/real.bin".into(),
        "/api/v1/remote/%67en%2f/real.bin".into(),
        "/api/v1/remote/other/canary.txt".into(),
        "/api/v1/remote//gen/real.bin".into(),
        "/api/v1/remote/gen".into(),
        "/api/v1/remote/gen/".into(),
        "/api/v1/remote/".into(),
        "/api/v1/remote/reg/".into(),
        "/api/v1/remote/GEN/real.bin".into(),
        format!("/api/v1/remote/{f}/x"),
        format!("/api/v1/remote/@{f}/x"),
        format!("http://{f}/x"),
        format!("http://{f}/api/v1/remote/gen/%2e%2e/x"),
        format!("//{f}/x"),
        "/../../canary.txt".into(),
        "/%2e%2e/%2e%2e/canary.txt".into(),
        "/objects/gen/real.bin".into(),
        "/data/canary.txt".into(),
        "*".into(),
        "canary.txt".into(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    for target in &targets {
        let what = String::from_utf8_lossy(target).into_owned();
        t.check(&what, get(t.addr(), target, ""));
        sent += 1;
    }
    // CONNECT to the foreign host, and an absolute-form Host trick.
    let connect = format!("CONNECT {f} HTTP/1.1\r\nHost: {f}\r\nConnection: close\r\n\r\n");
    t.check("CONNECT", raw_request(t.addr(), connect.as_bytes()));
    t.check(
        "Host: foreign",
        get(
            t.addr(),
            b"/api/v1/remote/gen/%2e%2e/x",
            &format!("X-Forwarded-Host: {f}\r\nForwarded: host={f}\r\n"),
        ),
    );
    sent += 2;
    assert!(sent >= 200, "only {sent} hostile requests");
    eprintln!("{sent} hostile requests answered 4xx");

    // The remote still works for a good path, and it came from the home upstream.
    let (code, body) = get(t.addr(), b"/api/v1/remote/gen/real.bin", "");
    assert_eq!((code, body.as_str()), (200, "real bytes"));
    t.check_contained();
}

#[test]
fn hostile_registry_names_tags_and_digests_get_4xx() {
    let t = Target::start();
    let f = t.foreign.addr;
    let d = format!("sha256:{}", "a".repeat(64));
    let names: Vec<String> = vec![
        "..".into(),
        "../x".into(),
        "a/../b".into(),
        ".".into(),
        "%2e%2e".into(),
        "a%2fb".into(),
        "a\\b".into(),
        "A".into(),
        "Library/Alpine".into(),
        "a..b".into(),
        "-a".into(),
        "a-".into(),
        "a___b".into(),
        "a_".into(),
        "_a".into(),
        "a//b".into(),
        "a/".into(),
        "a".repeat(256),
        format!("{}/x", "ab/".repeat(90)),
        f.to_string(),
        format!("{f}/x"),
        format!("@{f}"),
        "127.0.0.1:1/x".into(),
        "a%00".into(),
        "%EF%BC%8E%EF%BC%8E".into(),
        "é".into(),
        "blobs".into(),
    ];
    let mut targets = Vec::new();
    for n in &names {
        for prefix in ["reg/", ""] {
            targets.push(format!("/v2/{prefix}{n}/manifests/latest"));
            targets.push(format!("/v2/{prefix}{n}/blobs/{d}"));
            targets.push(format!("/v2/{prefix}{n}/tags/list"));
        }
    }
    let tags: Vec<String> = vec![
        "..".into(),
        ".".into(),
        ".x".into(),
        "-x".into(),
        "a".repeat(129),
        "%2e%2e".into(),
        "a%2fb".into(),
        "a\\b".into(),
        "a%00".into(),
        "a@b".into(),
        "a~b".into(),
        "".into(),
        "latest%20".into(),
        "ｌａｔｅｓｔ".into(),
    ];
    for tag in &tags {
        targets.push(format!("/v2/reg/library/x/manifests/{tag}"));
        targets.push(format!("/v2/reg/library/x/tags/list?last={tag}"));
    }
    let digests: Vec<String> = vec![
        "sha256:".into(),
        format!("sha256:{}", "a".repeat(63)),
        format!("sha256:{}", "a".repeat(65)),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}", "g".repeat(64)),
        format!("sha512:{}", "a".repeat(128)),
        format!("sha384:{}", "a".repeat(96)),
        format!("md5:{}", "a".repeat(32)),
        format!("SHA256:{}", "a".repeat(64)),
        "sha256:../../../canary.txt".into(),
        "sha256:%2e%2e".into(),
        format!("sha256:{}%00", "a".repeat(64)),
        format!("sha256:{}/..", "a".repeat(64)),
        ":".into(),
        "sha256".into(),
    ];
    for dg in &digests {
        targets.push(format!("/v2/reg/library/x/blobs/{dg}"));
        targets.push(format!("/v2/reg/library/x/manifests/{dg}"));
    }
    for q in [
        "n=-1",
        "n=abc",
        "n=99999999999999999999",
        "n=1%00",
        "last=..",
        "last=%2e%2e%2f",
        "ns=evil.example",
        &format!("ns={f}"),
        &format!("ns=%2f%2f{f}"),
    ] {
        targets.push(format!("/v2/library/x/tags/list?{q}"));
        targets.push(format!("/v2/reg/library/x/tags/list?{q}"));
    }
    targets.extend(
        [
            "/v2/reg/library/x/blobs/uploads/",
            "/v2/reg/library/x/blobs/uploads/1",
            "/v2/reg/library/x/manifests/",
            "/v2/reg/library/x/blobs/",
            "/v2/reg/library/x/whatever",
            "/v2/reg/manifests/latest",
            "/v2/reg",
            "/v2/_catalog",
            "/v2/../api/v1/remote/gen/real.bin",
            "/v2/%2e%2e/api/v1/remote/gen/real.bin",
        ]
        .map(String::from),
    );
    for target in &targets {
        t.check(target, get(t.addr(), target.as_bytes(), ""));
    }
    // Writes are refused.
    for method in ["PUT", "POST", "DELETE", "PATCH"] {
        let req = format!(
            "{method} /v2/reg/library/x/manifests/latest HTTP/1.1\r\nHost: localhost\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        t.check(method, raw_request(t.addr(), req.as_bytes()));
    }
    eprintln!(
        "{} hostile registry requests answered 4xx",
        targets.len() + 4
    );
    t.check_contained();
}

#[test]
fn oversized_and_malformed_headers_get_4xx() {
    let t = Target::start();
    let path = b"/api/v1/remote/gen/real.bin";
    let cases: Vec<(&str, String)> = vec![
        (
            "one 1 MiB header",
            format!("X-Big: {}\r\n", "a".repeat(1 << 20)),
        ),
        (
            "500 headers",
            (0..500).map(|i| format!("X-H{i}: v\r\n")).collect(),
        ),
        (
            "2000 headers of 200 bytes",
            (0..2000)
                .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(200)))
                .collect(),
        ),
        ("header with NUL", "X-Bad: a\0b\r\n".into()),
        ("header name with space", "X Bad: v\r\n".into()),
        ("header without colon", "NoColon\r\n".into()),
        ("obs-fold header", "X-Fold: a\r\n b\r\n".into()),
        (
            "two Content-Length",
            "Content-Length: 1\r\nContent-Length: 2\r\n".into(),
        ),
        ("bad Content-Length", "Content-Length: -1\r\n".into()),
        (
            "bad Transfer-Encoding",
            "Transfer-Encoding: gzip\r\n".into(),
        ),
    ];
    for (what, headers) in &cases {
        t.check(what, get(t.addr(), path, headers));
    }
    // Malformed request lines.
    for (what, req) in [
        (
            "no version",
            b"GET /api/v1/remote/gen/real.bin\r\n\r\n".to_vec(),
        ),
        (
            "HTTP/9.9",
            b"GET / HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
        ),
        (
            "lowercase method",
            b"get / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "64 KiB URI",
            format!(
                "GET /api/v1/remote/gen/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                "a/".repeat(32 * 1024)
            )
            .into_bytes(),
        ),
    ] {
        t.check(what, raw_request(t.addr(), &req));
    }
    // The server is still healthy afterwards.
    let (code, body) = get(t.addr(), path, "");
    assert_eq!((code, body.as_str()), (200, "real bytes"));
    t.check_contained();
}

/// Runs the binary with `args` on config `text` and returns its exit status and output; fails
/// if it does not exit within 30 s.
fn run_with_config(
    text: &[u8],
    args: &[&str],
) -> (Option<i32>, String, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("remotes.yaml");
    std::fs::write(&file, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_artifactapi"))
        .arg("--config")
        .arg(&file)
        .args(args)
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{args:?} did not exit within 30 s on {:?}",
                String::from_utf8_lossy(text)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status.code(), out, file, dir)
}

#[test]
fn broken_configs_fail_with_file_line_col() {
    let r = "remotes:\n  a:\n    type: remote\n    package: generic\n";
    let deep = format!("remotes: {}{}", "[".repeat(20_000), "]".repeat(20_000));
    let laughs = {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            s.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        s.push_str("remotes: *a11\n");
        s
    };
    // (text, line the error must be on, when it is known)
    let cases: Vec<(Vec<u8>, Option<usize>)> = vec![
        (b"remotes:\n  a:\n\ttype: remote\n".to_vec(), Some(3)),
        (format!("{r}    base_url: http://x\n    bogus: 1\n").into_bytes(), Some(6)),
        (b"remotes:\n  a:\n    type: remoat\n    package: generic\n".to_vec(), Some(3)),
        (r.as_bytes().to_vec(), Some(2)),
        (format!("{r}    base_url: http://x\n    include_patterns: [\"(?=x)\"]\n").into_bytes(), Some(6)),
        (format!("{r}    base_url: http://x\n    include_patterns:\n      - \"(\"\n").into_bytes(), Some(7)),
        (format!("{r}    base_url: http://x\n    cache:\n      file_ttl: -5\n").into_bytes(), Some(7)),
        (format!("{r}    base_url: http://x\n    cache:\n      file_ttl: 1e400\n").into_bytes(), Some(7)),
        (format!("{r}    base_url: http://x\n    cache:\n      index_ttl: 99999999999999999999999\n").into_bytes(), Some(7)),
        (format!("{r}    base_url: ftp://x\n").into_bytes(), Some(5)),
        (format!("{r}    base_url: not a url\n").into_bytes(), Some(5)),
        (format!("{r}    base_url: http://\n").into_bytes(), Some(5)),
        (b"remotes:\n  v:\n    type: virtual\n    package: generic\n    members: [nope]\n".to_vec(), Some(5)),
        (b"server:\n  listen: localhost:80\n".to_vec(), Some(2)),
        (b"server:\n  listen: 127.0.0.1:99999\n".to_vec(), Some(2)),
        (b"server:\n  listen: 999.1.1.1:80\n".to_vec(), Some(2)),
        (b"remotes:\n  \"../x\":\n    type: remote\n    package: generic\n    base_url: http://x\n".to_vec(), Some(2)),
        (b"remotes:\n  \"a/b\":\n    type: remote\n    package: generic\n    base_url: http://x\n".to_vec(), Some(2)),
        (b"remotes:\n  \"\":\n    type: remote\n    package: generic\n    base_url: http://x\n".to_vec(), None),
        (format!("{r}    base_url: http://x\n  a:\n    type: remote\n    package: rpm\n    base_url: http://y\n").into_bytes(), Some(6)),
        (b"remotes: [1]\n".to_vec(), Some(1)),
        (b"remotes:\n  a:\n".to_vec(), None),
        (b"remotes:\n  a: [1, 2\n".to_vec(), None),
        (b"remotes: {a: \"unterminated\n".to_vec(), None),
        (b"\xff\xfe\x00r\x00e\x00m\x00".to_vec(), Some(1)),
        (b"remotes:\n  a:\n    type: remote\0\n".to_vec(), None),
        (b"- just\n- a list\n".to_vec(), Some(1)),
        (b"storage:\n  path: [1]\n".to_vec(), Some(2)),
        (deep.into_bytes(), Some(1)),
        (laughs.into_bytes(), None),
    ];
    let location = regex::Regex::new(r"remotes\.yaml:(\d+):(\d+): ").unwrap();
    for (text, line) in &cases {
        let shown = String::from_utf8_lossy(&text[..text.len().min(120)]).into_owned();
        for args in [
            &["validate-config"][..],
            &["serve", "--listen", "127.0.0.1:0"][..],
        ] {
            let (code, out, _file, _dir) = run_with_config(text, args);
            assert!(
                code.is_some_and(|c| c != 0),
                "{args:?} on {shown:?}: exit {code:?}, output {out}"
            );
            let found = location
                .captures(&out)
                .unwrap_or_else(|| panic!("{args:?} on {shown:?}: no file:line:col in {out}"));
            if let Some(line) = line {
                assert_eq!(
                    found[1].parse::<usize>().unwrap(),
                    *line,
                    "{args:?} on {shown:?}: {out}"
                );
            }
            assert!(!out.contains("panicked"), "{args:?} on {shown:?}: {out}");
        }
    }
}
