//! Test harness shared by the integration tests: a controllable upstream ([`upstream`]), the
//! built `artifactapi` binary run as a real process ([`proxy`]), HTTP helpers and assertions
//! ([`http`]), real backends and registries (`backends`, `registry`, `layout`, `token`),
//! docker fixtures (`docker`), and the tool checks and readiness waits they all use.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

pub mod backends;
pub mod docker;
pub mod http;
pub mod layout;
pub mod proxy;
pub mod registry;
pub mod token;
pub mod upstream;

#[allow(unused_imports)]
pub use http::{
    client, error_code, expect_registry_error, get_json, get_text, header, header_all, raw_get,
    raw_request, status_and_code, wait_for_get_hit, wait_for_hit,
};
#[allow(unused_imports)]
pub use proxy::{Proxy, walk};
#[allow(unused_imports)]
pub use upstream::{Mode, TestUpstream, UpFile};

/// Resident memory of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// How long a server the harness starts may take to get ready. Generous, so that a loaded
/// 2-core machine does not fail a test on a slow start; the waits poll often, so a fast start
/// is not slowed down.
pub const READY_BOUND: Duration = Duration::from_secs(120);

/// Polls `ready` every `every` until it holds. After [`READY_BOUND`] it panics naming `what`,
/// with the server's own log (from `log`) in the message.
pub fn wait_ready(
    what: &str,
    every: Duration,
    log: &dyn Fn() -> String,
    mut ready: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < READY_BOUND,
            "{what} not ready after {READY_BOUND:?}; its log:\n{}",
            log()
        );
        std::thread::sleep(every);
    }
}

/// The last 200 lines of the log file at `path`, for failure messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(200)..].join("\n")
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
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic pseudo-random bytes.
pub fn test_bytes(len: usize, seed: u64) -> Bytes {
    let mut out = Vec::with_capacity(len);
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// True when `tool` is on PATH. When it is not: fails the test if ARTIFACTAPI_REQUIRE_TOOLS or
/// CI is set (CI must never skip), otherwise prints why the test is skipped.
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        let required = std::env::var_os("ARTIFACTAPI_REQUIRE_TOOLS").is_some()
            || std::env::var_os("CI").is_some();
        assert!(
            !required,
            "required tool {tool} is not installed (run scripts/install-test-deps)"
        );
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

/// Checks every tool in `list` (so CI reports all missing ones) and says whether the test can
/// run.
pub fn tools(list: &[&str]) -> bool {
    let mut ok = true;
    for t in list {
        ok &= have_tool(t);
    }
    ok
}
