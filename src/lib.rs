//! artifactapi: a caching artifact proxy. The library holds the whole core (config, storage,
//! metadata, upstream access, format rules and the cache engine) plus the HTTP server and the
//! CLI commands that sit on top of it.
//!
//! Layering: `server` and `commands` call `repo`; `repo` calls `storage`, `meta`, `upstream` and
//! `package`; nothing below `repo` knows about HTTP serving or the CLI, and `repo` itself
//! imports no HTTP types (`upstream` answers it with a typed `Answer`). `path`, `digest`,
//! `config` and `error` hold the validated types every layer shares. README.md's
//! "Architecture" section has the file list.

#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod digest;
pub mod error;
pub mod meta;
pub mod metrics;
pub mod package;
pub mod path;
pub mod repo;
pub mod server;
pub mod storage;
pub mod upstream;

/// The version string reported by `/health` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Milliseconds since the Unix epoch, the time unit of all persisted metadata.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Lets an event through at most once per interval, across threads: for warnings that a busy
/// server could otherwise log thousands of times a second.
pub struct Throttle {
    every_ms: u64,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Throttle {
    pub const fn every(interval: std::time::Duration) -> Throttle {
        Throttle {
            every_ms: interval.as_millis() as u64,
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// True for the first call of each interval.
    pub fn ready(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = now_ms();
        let last = self.last_ms.load(Relaxed);
        now.saturating_sub(last) >= self.every_ms
            && self
                .last_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }
}

/// An error and all its causes, joined by ": ", for logs and CLI output.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
