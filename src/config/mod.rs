//! The `remotes.yaml` configuration: its types (strict, every field documented), loading with
//! `${VAR}` expansion, and validation that reports `file:line:col` for every problem.

mod auth;
mod backends;
mod load;
mod repo;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;

use serde::Deserialize;

pub use auth::{AuthConfig, Role, TokenConfig, TokenName};
pub use backends::{ChecksumMode, MetadataConfig, RedisConfig, S3Config, StorageConfig};
pub(crate) use backends::{MetadataFile, StorageFile};
use load::locate;
pub use load::{ConfigError, Diagnostic, Severity, load_file, load_str, validate_str};
pub(crate) use repo::RepoEntry;
pub use repo::{
    CacheConfig, LocalConfig, PackageKind, RemoteConfig, RepoConfig, RepoKind, VirtualConfig,
};
pub use values::{
    BaseUrl, ByteSize, EnvString, MinFree, Pattern, RegistryHost, RepoName, Seconds, Secret,
    UpstreamHost, expand_env, parse_duration,
};

/// The loaded configuration: every repository typed by kind.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP server settings.
    pub server: ServerConfig,
    /// Where cached and uploaded objects are stored.
    pub storage: StorageConfig,
    /// Where per-object metadata and index TTLs are kept.
    pub metadata: MetadataConfig,
    /// Limits on what the cache keeps, whatever the storage backend.
    pub limits: CacheLimits,
    /// Repositories by name. The name is the first path segment after `/api/v1/remote/`.
    pub remotes: BTreeMap<RepoName, RepoConfig>,
    /// API tokens and what anonymous clients may do.
    pub auth: AuthConfig,
}

/// The configuration file as written, before the checks across fields turn its repositories
/// into [`RepoConfig`]s.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// HTTP server settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where cached and uploaded objects are stored.
    #[serde(default)]
    pub storage: StorageFile,
    /// Where per-object metadata and index TTLs are kept.
    #[serde(default)]
    pub metadata: MetadataFile,
    /// Repositories by name. The name is the first path segment after `/api/v1/remote/`.
    #[serde(default)]
    pub remotes: BTreeMap<RepoName, RepoEntry>,
    /// API tokens and what anonymous clients may do.
    #[serde(default)]
    pub auth: AuthConfig,
}

/// Limits on the remote content the cache keeps (`storage.max_object_size`, `max_size`,
/// `min_free`).
#[derive(Debug, Clone)]
pub struct CacheLimits {
    /// Larger bodies are passed through uncached; `None`: no limit.
    pub max_object_size: Option<u64>,
    /// Bytes of cached remote content, at most; `None`: no limit.
    pub max_size: Option<u64>,
    /// Space kept free on the file system of the data directory (or S3 spool).
    pub min_free: MinFree,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_object_size: None,
            max_size: None,
            min_free: DEFAULT_MIN_FREE,
        }
    }
}

/// Unless configured, 5% of the file system stays free: the cache never fills its disk.
pub const DEFAULT_MIN_FREE: MinFree = MinFree::Percent(5.0);

/// `server:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; `--listen` overrides it.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// How long a shutdown waits for responses in flight before closing them.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Seconds,
    /// After SIGINT/SIGTERM, how long requests are still accepted while `/health` answers 503
    /// `draining`, so that a load balancer takes the replica out before it stops accepting.
    #[serde(default = "default_drain_delay")]
    pub drain_delay: Seconds,
    /// Open client connections, at most (also held under the open-file limit).
    #[serde(default = "default_max_connections")]
    pub max_connections: NonZeroUsize,
    /// From when a connection is ready for a request until its headers are complete: closes
    /// idle keep-alive connections and clients that send headers slowly.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Seconds,
    /// How long a response may wait for a client that does not read before it is closed.
    #[serde(default = "default_send_timeout")]
    pub send_timeout: Seconds,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            shutdown_grace: default_shutdown_grace(),
            drain_delay: default_drain_delay(),
            max_connections: default_max_connections(),
            header_timeout: default_header_timeout(),
            send_timeout: default_send_timeout(),
        }
    }
}

fn default_max_connections() -> NonZeroUsize {
    NonZeroUsize::new(4096).expect("non-zero")
}

fn default_header_timeout() -> Seconds {
    Seconds::secs(30)
}

fn default_send_timeout() -> Seconds {
    Seconds::secs(60)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8000))
}

fn default_drain_delay() -> Seconds {
    Seconds::secs(0)
}

fn default_shutdown_grace() -> Seconds {
    Seconds::secs(30)
}

impl ConfigFile {
    /// The checked file as a [`Config`], each repository typed by its kind.
    pub(crate) fn into_config(self, text: &str) -> Result<Config, Vec<Diagnostic>> {
        let mut remotes = std::collections::BTreeMap::new();
        let mut problems = Vec::new();
        for (name, entry) in self.remotes {
            match RepoConfig::try_from(entry) {
                Ok(repo) => {
                    remotes.insert(name, repo);
                }
                Err(message) => {
                    let (line, column) = locate(text, &["remotes", name.as_str()]);
                    problems.push(Diagnostic {
                        severity: Severity::Error,
                        line,
                        column,
                        message: format!("repository '{name}': {message}"),
                        hint: None,
                    });
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let limits = CacheLimits {
            max_object_size: self.storage.max_object_size.map(|b| b.0),
            max_size: self.storage.max_size.map(|b| b.0),
            min_free: self.storage.min_free.unwrap_or(DEFAULT_MIN_FREE),
        };
        let (storage, metadata) = backends::typed_backends(self.storage, self.metadata);
        Ok(Config {
            server: self.server,
            storage,
            metadata,
            limits,
            remotes,
            auth: self.auth,
        })
    }
}
