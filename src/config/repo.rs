//! Repositories under `remotes:`: the entry as written in the file (one flat shape, so that a
//! bad value is reported where it stands), and the typed repository it becomes once the
//! checks across fields have passed: `local`, `remote` or `virtual`, each with only its fields.

use std::num::NonZeroUsize;

use serde::Deserialize;

use super::values::{
    BaseUrl, ByteSize, EnvString, Pattern, RegistryHost, RepoName, Seconds, Secret, UpstreamHost,
};

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
    Pypi,
    Npm,
}

impl PackageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PackageKind::Docker => "docker",
            PackageKind::Rpm => "rpm",
            PackageKind::Alpine => "alpine",
            PackageKind::Generic => "generic",
            PackageKind::Pypi => "pypi",
            PackageKind::Npm => "npm",
        }
    }
}

/// One repository under `remotes:` as the file writes it. Which fields a kind may have is
/// checked by the loader (with the line of the offending key); [`RepoConfig`] is the result.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RepoEntry {
    /// `local`, `remote` or `virtual`.
    #[serde(rename = "type")]
    pub kind: RepoKind,
    /// `docker`, `rpm`, `alpine`, `generic` or `pypi`.
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
    /// `remote` repositories: fills that may ask the upstream at once; more wait their turn.
    #[serde(default = "default_max_concurrent_fills")]
    pub max_concurrent_fills: NonZeroUsize,
    /// Docker remotes: upstream registry hosts (e.g. `docker.io`) this remote mirrors. Kept as
    /// text here so that a bad host is reported with the others, at its key.
    #[serde(default)]
    pub mirror_of: Vec<String>,
    /// GitHub REST API base used by `warm --github-releases` (default https://api.github.com).
    #[serde(default)]
    pub api_url: Option<BaseUrl>,
    /// PyPI remotes: where the files the index pages link to live, when not under base_url
    /// (https://files.pythonhosted.org for https://pypi.org).
    #[serde(default)]
    pub files_url: Option<BaseUrl>,
    /// `remote` repositories: hosts other than base_url's that redirects may lead to although
    /// they are not public (loopback, private, link-local addresses).
    #[serde(default)]
    pub allowed_redirect_hosts: Vec<UpstreamHost>,
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

fn default_max_concurrent_fills() -> NonZeroUsize {
    NonZeroUsize::new(32).expect("non-zero")
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
    /// Larger bodies are passed through to clients uncached (with `storage.max_object_size`,
    /// the smaller of the two applies).
    #[serde(default)]
    pub max_object_size: Option<ByteSize>,
    /// Bytes this remote's cached content may take, at most (within `storage.max_size`).
    #[serde(default)]
    pub max_size: Option<ByteSize>,
    /// Objects not read for this long are evicted, whatever the limits.
    #[serde(default)]
    pub evict_unused_after: Option<Seconds>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            file_ttl: default_file_ttl(),
            index_ttl: default_index_ttl(),
            negative_ttl: default_negative_ttl(),
            max_object_size: None,
            max_size: None,
            evict_unused_after: None,
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

/// A configured repository, by kind.
#[derive(Debug, Clone)]
pub enum RepoConfig {
    Local(LocalConfig),
    Remote(Box<RemoteConfig>),
    Virtual(VirtualConfig),
}

/// A `local` repository: files uploaded to the API.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub package: PackageKind,
    /// When set, an uploaded or read file must match one of them (index files are exempt).
    pub include_patterns: Vec<Pattern>,
    /// Extra regexes that mark a path as an index file.
    pub index_patterns: Vec<Pattern>,
    /// Whether an upload may replace an existing file (otherwise 409).
    pub allow_overwrite: bool,
    pub description: Option<String>,
}

/// A `remote` repository: a caching proxy of `base_url`.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub package: PackageKind,
    /// Every upstream request is `base_url` + `/` + path.
    pub base_url: BaseUrl,
    /// When set, a file must match its path or its upstream URL (index files are exempt).
    pub include_patterns: Vec<Pattern>,
    /// Extra regexes that mark a path as an index file (short TTL, revalidated).
    pub index_patterns: Vec<Pattern>,
    pub cache: CacheConfig,
    pub username: Option<EnvString>,
    pub password: Option<Secret>,
    pub connect_timeout: Seconds,
    pub read_timeout: Seconds,
    /// Fills that may ask the upstream at once.
    pub max_concurrent_fills: NonZeroUsize,
    /// Docker: the registry hosts this remote mirrors (requests without a repository prefix).
    pub mirror_of: Vec<RegistryHost>,
    /// GitHub REST API base used by `warm --github-releases`.
    pub api_url: Option<BaseUrl>,
    /// PyPI: the base of the files index pages link to (default: base_url).
    pub files_url: Option<BaseUrl>,
    /// Hosts other than base_url's that redirects may lead to although they are not public.
    pub allowed_redirect_hosts: Vec<UpstreamHost>,
    pub description: Option<String>,
}

/// A `virtual` repository: other repositories asked in order.
#[derive(Debug, Clone)]
pub struct VirtualConfig {
    pub package: PackageKind,
    /// When set, a path (or image) must match one of them before any member is asked.
    pub include_patterns: Vec<Pattern>,
    /// Extra regexes that mark a path as an index file (exempt from include_patterns).
    pub index_patterns: Vec<Pattern>,
    /// Member repositories, in the order they are asked.
    pub members: Vec<RepoName>,
    pub description: Option<String>,
}

impl RepoConfig {
    pub fn kind(&self) -> RepoKind {
        match self {
            RepoConfig::Local(_) => RepoKind::Local,
            RepoConfig::Remote(_) => RepoKind::Remote,
            RepoConfig::Virtual(_) => RepoKind::Virtual,
        }
    }

    pub fn package(&self) -> PackageKind {
        match self {
            RepoConfig::Local(c) => c.package,
            RepoConfig::Remote(c) => c.package,
            RepoConfig::Virtual(c) => c.package,
        }
    }
}

impl TryFrom<RepoEntry> for RepoConfig {
    type Error = String;

    /// The typed repository; fields another kind would use are dropped (the loader has
    /// refused those that matter).
    fn try_from(e: RepoEntry) -> Result<Self, String> {
        Ok(match e.kind {
            RepoKind::Local => RepoConfig::Local(LocalConfig {
                package: e.package,
                include_patterns: e.include_patterns,
                index_patterns: e.index_patterns,
                allow_overwrite: e.allow_overwrite,
                description: e.description,
            }),
            RepoKind::Remote => RepoConfig::Remote(Box::new(RemoteConfig {
                package: e.package,
                base_url: e.base_url.ok_or("a remote repository needs a base_url")?,
                include_patterns: e.include_patterns,
                index_patterns: e.index_patterns,
                cache: e.cache,
                username: e.username,
                password: e.password,
                connect_timeout: e.connect_timeout,
                read_timeout: e.read_timeout,
                max_concurrent_fills: e.max_concurrent_fills,
                mirror_of: e
                    .mirror_of
                    .iter()
                    .map(|h| RegistryHost::parse(h))
                    .collect::<Result<_, _>>()?,
                api_url: e.api_url,
                files_url: e.files_url,
                allowed_redirect_hosts: e.allowed_redirect_hosts,
                description: e.description,
            })),
            RepoKind::Virtual => RepoConfig::Virtual(VirtualConfig {
                package: e.package,
                include_patterns: e.include_patterns,
                index_patterns: e.index_patterns,
                members: e.members,
                description: e.description,
            }),
        })
    }
}
