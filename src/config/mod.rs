//! The `remotes.yaml` configuration: its types (strict, every field documented), loading with
//! `${VAR}` expansion, and validation that reports `file:line:col` for every problem.

mod auth;
mod backends;
mod load;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

pub use auth::{AuthConfig, Role, TokenConfig, TokenName};
pub use backends::ChecksumMode;
pub use load::{ConfigError, Diagnostic, Severity, load_file, load_str, validate_str};
pub use values::{BaseUrl, EnvString, Pattern, RepoName, Seconds, Secret, expand_env};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP server settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where cached and uploaded objects are stored.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Where per-object metadata and index TTLs are kept.
    #[serde(default)]
    pub metadata: MetadataConfig,
    /// Repositories by name. The name is the first path segment after `/api/v1/remote/`.
    #[serde(default)]
    pub remotes: BTreeMap<RepoName, RepoConfig>,
    /// API tokens and what anonymous clients may do.
    #[serde(default)]
    pub auth: AuthConfig,
}

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8000))
}

fn default_shutdown_grace() -> Seconds {
    Seconds::secs(30)
}

/// Which storage backend holds objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// A directory on the local filesystem.
    #[default]
    Filesystem,
    /// An S3 bucket (AWS S3, MinIO, Garage, Ceph): several replicas can share it.
    S3,
}

/// `storage:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The backend (`filesystem`).
    #[serde(default)]
    pub backend: StorageBackend,
    /// Data directory for `filesystem` (objects live under `PATH/objects/`). Relative paths are
    /// taken from the working directory.
    #[serde(default = "default_data_path")]
    pub path: PathBuf,
    /// `s3`: the bucket.
    #[serde(default)]
    pub bucket: Option<EnvString>,
    /// `s3`: endpoint URL for non-AWS stores (`http://127.0.0.1:3900`); default AWS.
    #[serde(default)]
    pub endpoint: Option<EnvString>,
    /// `s3`: region (`garage` for Garage); default from the AWS environment, else `us-east-1`.
    #[serde(default)]
    pub region: Option<EnvString>,
    /// `s3`: access key; with `secret_access_key` omitted too, the standard AWS chain is used.
    #[serde(default)]
    pub access_key_id: Option<EnvString>,
    /// `s3`: secret key; use `${VAR}` to keep it out of the file.
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// `s3`: key prefix inside the bucket (`cache/`), so a bucket can be shared.
    #[serde(default)]
    pub prefix: Option<EnvString>,
    /// `s3`: path-style URLs (`endpoint/bucket/key`), needed by most non-AWS stores.
    #[serde(default)]
    pub force_path_style: bool,
    /// `s3`: request checksums: `when_required` (default; works with non-AWS stores) or
    /// `when_supported` (the AWS SDK default).
    #[serde(default)]
    pub request_checksum: ChecksumMode,
    /// `s3`: directory for the local spool that clients read while a fill uploads (default:
    /// the system temp directory). Spool files are unlinked at once and never outlive a fill.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::default(),
            path: default_data_path(),
            bucket: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            prefix: None,
            force_path_style: false,
            request_checksum: ChecksumMode::default(),
            spool_dir: None,
        }
    }
}

fn default_data_path() -> PathBuf {
    PathBuf::from("./data")
}

/// Which metadata backend keeps object metadata and TTLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MetadataBackend {
    /// JSON records on the local filesystem, beside the data; no other service needed.
    #[default]
    Embedded,
    /// A Redis server shared by every replica.
    Redis,
}

/// `metadata:` section.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// The backend (`embedded`).
    #[serde(default)]
    pub backend: MetadataBackend,
    /// Directory for `embedded` records (under `PATH/meta/`); defaults to `storage.path`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `redis`: the server URL (`redis://[:PASSWORD@]HOST:PORT/DB`); use `${VAR}` for a password.
    #[serde(default)]
    pub url: Option<Secret>,
    /// `redis`: prepended to every key, so several caches can share one server.
    #[serde(default)]
    pub key_prefix: Option<EnvString>,
}

/// How a repository is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoKind {
    /// Files uploaded to the API; no upstream.
    Local,
    /// A caching proxy of `base_url`.
    Remote,
    /// An ordered list of other repositories served as one.
    Virtual,
}

impl RepoKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RepoKind::Local => "local",
            RepoKind::Remote => "remote",
            RepoKind::Virtual => "virtual",
        }
    }
}

/// Which format rules apply to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    Docker,
    Rpm,
    Alpine,
    Generic,
}

impl PackageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PackageKind::Docker => "docker",
            PackageKind::Rpm => "rpm",
            PackageKind::Alpine => "alpine",
            PackageKind::Generic => "generic",
        }
    }
}

/// One repository under `remotes:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// `local`, `remote` or `virtual`.
    #[serde(rename = "type")]
    pub kind: RepoKind,
    /// `docker`, `rpm`, `alpine` or `generic`.
    pub package: PackageKind,
    /// Upstream URL of a `remote`; every upstream request is `base_url` + `/` + path.
    #[serde(default)]
    pub base_url: Option<BaseUrl>,
    /// Regexes (searched, not anchored); when any are set a path must match one of them.
    #[serde(default)]
    pub include_patterns: Vec<Pattern>,
    /// Extra regexes that mark a path as an index file (short TTL, revalidated).
    #[serde(default)]
    pub index_patterns: Vec<Pattern>,
    /// Cache lifetimes.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Upstream user name (Basic auth, or docker token requests).
    #[serde(default)]
    pub username: Option<EnvString>,
    /// Upstream password or token; use `${VAR}` to keep it out of the file.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Time allowed to open a connection to the upstream.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Seconds,
    /// Time allowed between two reads from the upstream (headers or body).
    #[serde(default = "default_read_timeout")]
    pub read_timeout: Seconds,
    /// Docker remotes: upstream registry hosts (e.g. `docker.io`) this remote mirrors. Requests
    /// without a repository prefix (`/v2/library/alpine/...`, as sent by Docker's
    /// `registry-mirrors` and containerd's `hosts.toml`) go to it; `?ns=HOST` picks by host.
    #[serde(default)]
    pub mirror_of: Vec<String>,
    /// GitHub REST API base used by `warm --github-releases` (default https://api.github.com).
    #[serde(default)]
    pub api_url: Option<BaseUrl>,
    /// Member repositories of a `virtual` repository, in the order they are asked.
    #[serde(default)]
    pub members: Vec<RepoName>,
    /// `local` repositories: whether an upload may replace an existing file (otherwise 409).
    #[serde(default)]
    pub allow_overwrite: bool,
    /// Free text for people reading the file.
    #[serde(default)]
    pub description: Option<String>,
}

fn default_connect_timeout() -> Seconds {
    Seconds::secs(10)
}

fn default_read_timeout() -> Seconds {
    Seconds::secs(60)
}

/// `cache:` of a repository.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Lifetime of file-class objects; `0` keeps them forever.
    #[serde(default = "default_file_ttl")]
    pub file_ttl: Seconds,
    /// How long an index file is served without asking upstream.
    #[serde(default = "default_index_ttl")]
    pub index_ttl: Seconds,
    /// How long an upstream 404 is remembered.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: Seconds,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            file_ttl: default_file_ttl(),
            index_ttl: default_index_ttl(),
            negative_ttl: default_negative_ttl(),
        }
    }
}

fn default_file_ttl() -> Seconds {
    Seconds::secs(0)
}

fn default_index_ttl() -> Seconds {
    Seconds::secs(300)
}

fn default_negative_ttl() -> Seconds {
    Seconds::secs(60)
}

impl Config {
    /// The directory that holds embedded metadata records.
    pub fn metadata_root(&self) -> PathBuf {
        self.metadata
            .path
            .clone()
            .unwrap_or_else(|| self.storage.path.clone())
    }
}
