//! End-to-end tests of API tokens and roles: the built binary with an `auth:` section, asked
//! by reqwest and curl, and a bare TCP upstream that records exactly what the proxy sends it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::{Proxy, TestUpstream, client, have_tool, header_all, status_and_code, tools};

const READER: &str = "reader-secret-0123456789";
const WRITER: &str = "writer-secret-0123456789";
const CI: &str = "ci-secret-0123456789";
const OPS: &str = "ops-secret-0123456789";
const OUTSIDER: &str = "outsider-secret-0123456789";

fn auth(anonymous_read: bool) -> String {
    format!(
        "auth:\n  anonymous_read: {anonymous_read}\n  tokens:\n    - name: reader\n      secret: {READER}\n      roles:\n        \"*\": [read]\n    - name: writer\n      secret: {WRITER}\n      roles:\n        \"*\": [write]\n    - name: ci\n      secret: {CI}\n      roles:\n        uploads: [read, write]\n        \"*\": [read]\n    - name: ops\n      secret: {OPS}\n      roles:\n        \"*\": [admin]\n"
    )
}

fn repos(up: &TestUpstream) -> String {
    format!(
        "  gen:\n    type: remote\n    package: generic\n    base_url: {}/files\n  uploads:\n    type: local\n    package: generic\n  other:\n    type: local\n    package: generic\n    allow_overwrite: true\n  both:\n    type: virtual\n    package: generic\n    members: [uploads, gen]\n  hub:\n    type: remote\n    package: docker\n    base_url: {}\n",
        up.url(),
        up.url()
    )
}

#[tokio::test]
async fn anonymous_reads_follow_the_config() {
    let up = TestUpstream::start();
    up.put("files/a.txt", "hello");
    let c = client();

    let open = Proxy::start_with(&repos(&up), &auth(true));
    let r = c.get(open.remote("gen", "a.txt")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(open.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Wrong credentials are refused even where anonymous reads are allowed.
    let r = c
        .get(open.remote("gen", "a.txt"))
        .bearer_auth("wrong-secret-xyz")
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (401, "unauthorized".into()));

    let closed = Proxy::start_with(&repos(&up), &auth(false));
    for path in [
        "/api/v1/remote/gen/a.txt",
        "/api/v1/local/uploads/a.txt",
        "/api/v1/local/uploads/",
        "/api/v1/virtual/both/a.txt",
        "/api/v1/remote/no-such-repo/a.txt",
    ] {
        let r = c.get(closed.url(path)).send().await.unwrap();
        let challenge = header_all(&r, "www-authenticate");
        assert!(
            challenge.contains("Basic realm=") && challenge.contains("Bearer realm="),
            "{path}: {challenge}"
        );
        assert_eq!(
            status_and_code(r).await,
            (401, "unauthorized".into()),
            "{path}"
        );
    }
    // Registry clients get the registry error format and a Basic challenge.
    for path in ["/v2/", "/v2/hub/library/x/manifests/latest"] {
        let r = c.get(closed.url(path)).send().await.unwrap();
        assert_eq!(
            header_all(&r, "www-authenticate"),
            "Basic realm=\"artifactapi\", charset=\"UTF-8\""
        );
        assert_eq!(
            status_and_code(r).await,
            (401, "UNAUTHORIZED".into()),
            "{path}"
        );
    }
    let r = c
        .get(closed.url("/v2/"))
        .basic_auth("reader", Some(READER))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(closed.remote("gen", "a.txt"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), "hello");
    let r = c
        .get(closed.url("/api/v1/virtual/both/a.txt"))
        .basic_auth("reader", Some(READER))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Basic needs the token's own name.
    let r = c
        .get(closed.remote("gen", "a.txt"))
        .basic_auth("ops", Some(READER))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Health and metrics stay open.
    assert_eq!(
        c.get(closed.url("/health")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn uploads_need_write_and_flush_needs_admin() {
    let up = TestUpstream::start();
    let proxy = Proxy::start_with(&repos(&up), &auth(true));
    let c = client();
    let url = proxy.url("/api/v1/local/uploads/dir/a.txt");

    let r = c.put(&url).body("a").send().await.unwrap();
    assert!(header_all(&r, "www-authenticate").contains("Basic realm="));
    assert_eq!(status_and_code(r).await, (401, "unauthorized".into()));
    let put_as = |url: String, secret: &'static str, body: &'static str| {
        c.put(url).bearer_auth(secret).body(body).send()
    };
    let r = put_as(url.clone(), READER, "a").await.unwrap();
    assert_eq!(status_and_code(r).await, (403, "access_denied".into()));
    let r = put_as(url.clone(), WRITER, "a").await.unwrap();
    assert_eq!(r.status(), 201);
    // A role on one repository only.
    let r = put_as(proxy.url("/api/v1/local/uploads/ci.txt"), CI, "ci")
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = put_as(proxy.url("/api/v1/local/other/ci.txt"), CI, "ci")
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (403, "access_denied".into()));

    // curl -u name:token, as people type it.
    if have_tool("curl") {
        let file = proxy.dir.path().join("upload.txt");
        std::fs::write(&file, "from curl").unwrap();
        // `curl -u USER:SECRET -T FILE URL`, and the status it got.
        let curl_upload = |user_secret: &str, url: &str| {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "--noproxy",
                    "*",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                ])
                .arg("-u")
                .arg(user_secret)
                .arg("-T")
                .arg(&file)
                .arg(url)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let to = |name: &str| proxy.url(&format!("/api/v1/local/uploads/{name}"));
        assert_eq!(
            curl_upload(&format!("writer:{WRITER}"), &to("curl.txt")),
            "201"
        );
        assert_eq!(
            curl_upload(&format!("writer:{READER}"), &to("curl2.txt")),
            "401"
        );
        let r = c
            .get(proxy.url("/api/v1/local/uploads/curl.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap(), "from curl");
    }

    let r = c.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.delete(&url).bearer_auth(READER).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // Without allow_overwrite a file is an immutable release: only an admin removes it.
    let r = c.delete(&url).bearer_auth(WRITER).send().await.unwrap();
    assert_eq!(status_and_code(r).await, (403, "access_denied".into()));
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    let r = c.delete(&url).bearer_auth(OPS).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 404);
    // Where overwrites are allowed, write is enough.
    let scratch = proxy.url("/api/v1/local/other/w.txt");
    let r = put_as(scratch.clone(), WRITER, "w").await.unwrap();
    assert_eq!(r.status(), 201);
    let r = c.delete(&scratch).bearer_auth(WRITER).send().await.unwrap();
    assert_eq!(r.status(), 204);

    let flush = proxy.url("/api/v1/cache/flush?remote=gen");
    let r = c.post(&flush).send().await.unwrap();
    assert_eq!(status_and_code(r).await, (401, "unauthorized".into()));
    let r = c.post(&flush).bearer_auth(WRITER).send().await.unwrap();
    assert_eq!(status_and_code(r).await, (403, "access_denied".into()));
    let r = c.post(&flush).bearer_auth(OPS).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(proxy.url("/api/v1/cache/flush"))
        .basic_auth("ops", Some(OPS))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn roles_hold_through_virtual_repositories_and_the_registry_api() {
    let up = TestUpstream::start();
    up.put("files/public.txt", "public");
    let outsider = format!(
        "    - name: outsider\n      secret: {OUTSIDER}\n      roles:\n        gen: [read]\n        both: [read]\n"
    );
    let proxy = Proxy::start_with(&repos(&up), &(auth(false) + &outsider));
    let c = client();
    let r = c
        .put(proxy.url("/api/v1/local/uploads/secret.txt"))
        .bearer_auth(WRITER)
        .body("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let get = |path: &str, secret: &str| c.get(proxy.url(path)).bearer_auth(secret).send();

    // `outsider` reads `gen` and the virtual `both`, not its member `uploads`.
    let r = get("/api/v1/local/uploads/secret.txt", OUTSIDER)
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (403, "access_denied".into()));
    let r = get("/api/v1/virtual/both/secret.txt", OUTSIDER)
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (404, "not_found".into()));
    let r = c
        .head(proxy.url("/api/v1/virtual/both/secret.txt"))
        .bearer_auth(OUTSIDER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = get("/api/v1/virtual/both/public.txt", OUTSIDER)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header_all(&r, "x-artifactapi-member"), "gen");
    assert_eq!(r.bytes().await.unwrap(), "public");
    // A token with read on every member gets the hosted file.
    let r = get("/api/v1/virtual/both/secret.txt", READER)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header_all(&r, "x-artifactapi-member"), "uploads");

    // Under /v2/, a token without a role cannot tell a generic repository, a docker one and
    // a name that does not exist apart.
    for repo in ["uploads", "hub", "no-such-repo"] {
        let path = format!("/v2/{repo}/library/x/manifests/latest");
        let r = get(&path, OUTSIDER).await.unwrap();
        assert_eq!(status_and_code(r).await, (403, "DENIED".into()), "{path}");
    }
    // With a role, the answers say what the name is.
    let r = get("/v2/uploads/library/x/manifests/latest", READER)
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (400, "UNSUPPORTED".into()));
    let r = get("/v2/no-such-repo/library/x/manifests/latest", READER)
        .await
        .unwrap();
    assert_eq!(status_and_code(r).await, (404, "NAME_UNKNOWN".into()));
}

/// A one-shot upstream that records the request head it receives and answers 200 "ok".
fn recording_upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let out = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut head = String::new();
            let mut reader = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            out.lock().unwrap().push(head);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (url, seen)
}

#[tokio::test]
async fn credentials_stay_between_client_and_proxy() {
    let (up, seen) = recording_upstream();
    let proxy = Proxy::start_with(
        &format!(
            "  gen:\n    type: remote\n    package: generic\n    base_url: {up}\n  uploads:\n    type: local\n    package: generic\n"
        ),
        &auth(false),
    );
    let c = client();
    let r = c
        .get(proxy.remote("gen", "x.bin"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(proxy.remote("gen", "y.bin"))
        .basic_auth("reader", Some(READER))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    for h in &heads {
        assert!(!h.to_ascii_lowercase().contains("authorization"), "{h}");
        assert!(!h.contains(READER), "{h}");
    }
    // Refused and accepted credentials alike stay out of the log.
    let _ = c
        .get(proxy.remote("gen", "z.bin"))
        .bearer_auth("wrong-secret-xyz")
        .send()
        .await
        .unwrap();
    let _ = c
        .put(proxy.url("/api/v1/local/none/x"))
        .bearer_auth(WRITER)
        .body("x")
        .send()
        .await
        .unwrap();
    let log = proxy.log.lock().unwrap().clone();
    for secret in [READER, WRITER, CI, OPS, "wrong-secret-xyz"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[tokio::test]
async fn skopeo_logs_in_with_a_token_when_anonymous_reads_are_off() {
    use common::layout::{Layout, pull, skopeo};
    use common::registry::{Auth, Registry};
    if !tools(&["docker-registry", "skopeo", "umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"), Auth::None);
    let layout = Layout::init(&tmp.path().join("oci"));
    layout.add_image(
        "t1",
        "amd64",
        &[vec![("etc/hello.txt".to_string(), b"hello\n".to_vec())]],
    );
    reg.push(&layout, "t1", "library/test:t1");
    let up = TestUpstream::start();
    let mut remotes = repos(&up);
    remotes.push_str(&format!(
        "  reg:\n    type: remote\n    package: docker\n    base_url: {}\n",
        reg.url()
    ));
    let proxy = Proxy::start_with(&remotes, &auth(false));
    let host = proxy.addr.to_string();
    let out = tmp.path().join("anon");
    let err = pull(&host, "reg/library/test:t1", &out, &[]).unwrap_err();
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );
    let out = tmp.path().join("with-token");
    std::fs::create_dir_all(&out).unwrap();
    let o = skopeo(tmp.path())
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("--src-creds=reader:{READER}"))
        .arg(format!("docker://{host}/reg/library/test:t1"))
        .arg(format!("dir:{}", out.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(out.join("manifest.json")).unwrap(),
        reg.manifest("library/test:t1")
    );
}
