//! The `storage:` and `metadata:` sections: the flat shape the file is written in, and the
//! typed backends it turns into, each holding only the settings that backend has.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ByteSize, EnvString, MinFree, Secret};

/// When the S3 client adds request checksums (CRC trailers). Many S3-compatible stores reject
/// or mishandle the checksums the AWS SDK sends by default, so the default is `when_required`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    /// Only for operations that require one.
    #[default]
    WhenRequired,
    /// On every operation that supports one (the AWS SDK default).
    WhenSupported,
}

/// Where objects are stored, as chosen by `storage.backend`.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageConfig {
    /// A directory on the local filesystem: objects live under `path/objects/`.
    Filesystem {
        /// The data directory; relative paths are taken from the working directory.
        path: PathBuf,
    },
    /// An S3 bucket (AWS S3, MinIO, Garage, Ceph): several replicas can share it.
    S3(S3Config),
}

/// The settings of the `s3` storage backend.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Config {
    /// The bucket; required (checked when the backend is opened).
    pub bucket: Option<EnvString>,
    /// Endpoint URL for non-AWS stores; default AWS.
    pub endpoint: Option<EnvString>,
    /// Region; default from the AWS environment, else `us-east-1`.
    pub region: Option<EnvString>,
    /// Access key; with `secret_access_key` omitted too, the standard AWS chain is used.
    pub access_key_id: Option<EnvString>,
    /// Secret key (hidden from `Debug`).
    pub secret_access_key: Option<Secret>,
    /// Key prefix inside the bucket, so a bucket can be shared.
    pub prefix: Option<EnvString>,
    /// Path-style URLs (`endpoint/bucket/key`).
    pub force_path_style: bool,
    /// When the client adds request checksums.
    pub request_checksum: ChecksumMode,
    /// Directory for the fill spool (default: the system temp directory).
    pub spool_dir: Option<PathBuf>,
}

/// Where per-object metadata and index TTLs are kept, as chosen by `metadata.backend`.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataConfig {
    /// JSON records on the local filesystem, under `path/meta/`.
    Embedded {
        /// The records' directory: `metadata.path`, else `storage.path`.
        path: PathBuf,
    },
    /// A Redis server shared by every replica.
    Redis(RedisConfig),
}

/// The settings of the `redis` metadata backend.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// The server URL (hidden from `Debug`); required (checked when the backend is opened).
    pub url: Option<Secret>,
    /// Prepended to every key (default `artifactapi:`).
    pub key_prefix: Option<EnvString>,
    /// With `rediss://`: the PEM file of the CA that signed the server's certificate, instead
    /// of the system's roots.
    pub ca_file: Option<PathBuf>,
}

/// Which storage backend holds objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StorageBackend {
    /// A directory on the local filesystem.
    #[default]
    Filesystem,
    /// An S3 bucket.
    S3,
}

/// `storage:` section as written: every backend's keys in one map.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StorageFile {
    /// The backend (`filesystem`).
    #[serde(default)]
    pub backend: StorageBackend,
    /// Data directory for `filesystem` (objects live under `PATH/objects/`), and the default
    /// directory of embedded metadata whatever the storage backend. Relative paths are taken
    /// from the working directory.
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
    /// Remote bodies larger than this are passed through to clients uncached.
    #[serde(default)]
    pub max_object_size: Option<ByteSize>,
    /// Bytes of cached remote content, at most; the objects worth least to keep go first.
    #[serde(default)]
    pub max_size: Option<ByteSize>,
    /// Space that stays free on the data directory's file system (default 5%).
    #[serde(default)]
    pub min_free: Option<MinFree>,
}

impl Default for StorageFile {
    fn default() -> Self {
        StorageFile {
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
            max_object_size: None,
            max_size: None,
            min_free: None,
        }
    }
}

fn default_data_path() -> PathBuf {
    PathBuf::from("./data")
}

/// Which metadata backend keeps object metadata and TTLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MetadataBackend {
    /// JSON records on the local filesystem, beside the data; no other service needed.
    #[default]
    Embedded,
    /// A Redis server shared by every replica.
    Redis,
}

/// `metadata:` section as written: every backend's keys in one map.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetadataFile {
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
    /// `redis` with `rediss://`: the CA certificate (PEM) to trust instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The typed backends of the two sections. Keys that do not belong to the chosen backend are
/// accepted and ignored, as they always were; `storage.path` stays the default directory of
/// embedded metadata even when objects live in S3.
pub(crate) fn typed_backends(
    storage: StorageFile,
    metadata: MetadataFile,
) -> (StorageConfig, MetadataConfig) {
    let metadata = match metadata.backend {
        MetadataBackend::Embedded => MetadataConfig::Embedded {
            path: metadata.path.unwrap_or_else(|| storage.path.clone()),
        },
        MetadataBackend::Redis => MetadataConfig::Redis(RedisConfig {
            url: metadata.url,
            key_prefix: metadata.key_prefix,
            ca_file: metadata.ca_file,
        }),
    };
    let storage = match storage.backend {
        StorageBackend::Filesystem => StorageConfig::Filesystem { path: storage.path },
        StorageBackend::S3 => StorageConfig::S3(S3Config {
            bucket: storage.bucket,
            endpoint: storage.endpoint,
            region: storage.region,
            access_key_id: storage.access_key_id,
            secret_access_key: storage.secret_access_key,
            prefix: storage.prefix,
            force_path_style: storage.force_path_style,
            request_checksum: storage.request_checksum,
            spool_dir: storage.spool_dir,
        }),
    };
    (storage, metadata)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::load_str;
    use super::*;

    #[test]
    fn max_object_size_is_read_from_storage_and_from_each_remote() {
        let config = load_str(
            "storage:\n  max_object_size: 2 GiB\nremotes:\n  r:\n    type: remote\n    package: generic\n    base_url: http://h\n    cache:\n      max_object_size: 100MB\n",
        )
        .unwrap();
        assert_eq!(config.limits.max_object_size, Some(2 << 30));
        let crate::config::RepoConfig::Remote(r) = &config.remotes["r"] else {
            panic!("r is a remote");
        };
        assert_eq!(r.cache.max_object_size.map(|b| b.0), Some(100_000_000));
        assert_eq!(r.max_concurrent_fills.get(), 32);
        let err = load_str("storage:\n  max_object_size: lots\n").unwrap_err();
        assert_eq!(err[0].line, 2, "{err:?}");
    }

    #[test]
    fn defaults_are_filesystem_and_embedded_in_data() {
        let config = load_str("").unwrap();
        assert!(
            matches!(&config.storage, StorageConfig::Filesystem { path } if path == Path::new("./data"))
        );
        assert!(
            matches!(&config.metadata, MetadataConfig::Embedded { path } if path == Path::new("./data"))
        );
    }

    #[test]
    fn s3_keeps_storage_path_for_embedded_metadata_and_hides_the_secret() {
        let config = load_str(
            "storage:\n  backend: s3\n  path: /srv/cache\n  bucket: b\n  secret_access_key: hush\n",
        )
        .unwrap();
        let StorageConfig::S3(s3) = &config.storage else {
            panic!("not s3: {:?}", config.storage);
        };
        assert_eq!(s3.bucket.as_ref().map(|b| b.0.as_str()), Some("b"));
        assert!(!format!("{config:?}").contains("hush"));
        assert!(
            matches!(&config.metadata, MetadataConfig::Embedded { path } if path == Path::new("/srv/cache"))
        );
    }

    #[test]
    fn keys_of_the_other_backend_are_still_accepted() {
        let config = load_str(
            "storage:\n  bucket: b\n  path: /d\nmetadata:\n  backend: redis\n  path: /m\n  url: redis://h\n",
        )
        .unwrap();
        assert!(
            matches!(&config.storage, StorageConfig::Filesystem { path } if path == Path::new("/d"))
        );
        let MetadataConfig::Redis(redis) = &config.metadata else {
            panic!("not redis");
        };
        assert!(redis.url.is_some() && redis.key_prefix.is_none());
    }
}
