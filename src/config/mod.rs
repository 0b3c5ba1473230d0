//! The `remotes.yaml` configuration: its types (strict, every field documented), loading with
//! `${VAR}` expansion, and validation that reports `file:line:col` for every problem.

mod auth;
mod backends;
mod load;
mod repo;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

pub use auth::{AuthConfig, Role, TokenConfig, TokenName};
pub use backends::ChecksumMode;
use load::locate;
pub use load::{ConfigError, Diagnostic, Severity, load_file, load_str, validate_str};
pub(crate) use repo::RepoEntry;
pub use repo::{
    CacheConfig, LocalConfig, PackageKind, RemoteConfig, RepoConfig, RepoKind, VirtualConfig,
};
pub use values::{
    BaseUrl, EnvString, Pattern, RegistryHost, RepoName, Seconds, Secret, expand_env,
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
    pub storage: StorageConfig,
    /// Where per-object metadata and index TTLs are kept.
    #[serde(default)]
    pub metadata: MetadataConfig,
    /// Repositories by name. The name is the first path segment after `/api/v1/remote/`.
    #[serde(default)]
    pub remotes: BTreeMap<RepoName, RepoEntry>,
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
        Ok(Config {
            server: self.server,
            storage: self.storage,
            metadata: self.metadata,
            remotes,
            auth: self.auth,
        })
    }
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
