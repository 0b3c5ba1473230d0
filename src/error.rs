//! The core's error type. It knows nothing of HTTP responses: `server::error` maps each kind to
//! a status code and a JSON body, and the CLI prints the message and its causes.

use std::sync::Arc;

/// A shareable, type-erased cause (storage and metadata backends report through it).
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Everything the cache core can fail with. Cloneable so that one failed fill can be reported
/// to every client that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("repository '{0}' is not configured")]
    UnknownRepository(String),
    #[error("repository '{name}' is of type {actual}, this endpoint serves type {expected}")]
    WrongRepositoryType {
        name: String,
        actual: &'static str,
        expected: &'static str,
    },
    #[error("repository '{name}' has package {actual}, this endpoint serves package {expected}")]
    WrongPackage {
        name: String,
        actual: &'static str,
        expected: &'static str,
    },
    #[error("invalid path: {0}")]
    BadPath(String),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("{message}")]
    InvalidReference {
        /// The registry error code (NAME_INVALID, TAG_INVALID, DIGEST_INVALID).
        code: &'static str,
        message: String,
    },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("the path is not allowed by the repository's include_patterns")]
    Forbidden,
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    Conflict(String),
    /// An upload does not fit: storage is full, or would pass `storage.min_free`.
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("the body's sha256 is {actual}, X-Checksum-Sha256 says {expected}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("every member failed: {0}")]
    MembersFailed(String),
    #[error("not found upstream")]
    NotFound,
    #[error("upstream answered HTTP {0}")]
    UpstreamStatus(u16),
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream timed out: {0}")]
    UpstreamTimeout(String),
    /// The upstream redirected to an address the remote may not reach (an internal address
    /// not in `allowed_redirect_hosts`, or plain HTTP from HTTPS).
    #[error("upstream redirect refused: {0}")]
    RedirectRefused(String),
    #[error("upstream body failed verification: {0}")]
    Integrity(String),
    /// A fill's body is larger than `max_object_size`: it is passed through, not cached. The
    /// fill turns this into a bypass; it reaches no client.
    #[error("the body is larger than max_object_size ({limit} bytes)")]
    TooLargeToCache { limit: u64 },
    #[error("range not satisfiable (object size {size})")]
    RangeNotSatisfiable { size: u64 },
    #[error("storage backend error: {context}")]
    Storage {
        context: String,
        #[source]
        cause: Cause,
    },
    #[error("metadata backend error: {context}")]
    Metadata {
        context: String,
        #[source]
        cause: Cause,
    },
}

impl Error {
    /// A storage failure with what we were doing when it happened.
    pub fn storage(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |e| Error::Storage {
            context,
            cause: Arc::new(e),
        }
    }

    /// A metadata failure with what we were doing when it happened.
    pub fn metadata<E: std::error::Error + Send + Sync + 'static>(
        context: impl Into<String>,
    ) -> impl FnOnce(E) -> Error {
        let context = context.into();
        move |e| Error::Metadata {
            context,
            cause: Arc::new(e),
        }
    }

    /// The message a client sees. Backend and transport details (internal URLs, addresses,
    /// errno) stay in the log, which gets the whole cause of every 5xx.
    pub fn client_message(&self) -> String {
        match self {
            Error::Storage { .. } | Error::Metadata { .. } => {
                "the cache backend is unavailable; retry later".to_string()
            }
            Error::UpstreamUnreachable(_) => "the upstream could not be reached".to_string(),
            Error::UpstreamTimeout(_) => "the upstream did not answer in time".to_string(),
            Error::RedirectRefused(_) => {
                "the upstream redirected to an address this remote may not reach".to_string()
            }
            e => e.to_string(),
        }
    }

    /// Whether this is storage refusing a write for lack of space or quota (ENOSPC, EDQUOT).
    pub fn is_no_space(&self) -> bool {
        let Error::Storage { cause, .. } = self else {
            return false;
        };
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(cause.as_ref());
        while let Some(err) = source {
            if let Some(io) = err.downcast_ref::<std::io::Error>()
                && (matches!(
                    io.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) || matches!(io.raw_os_error(), Some(28 | 122)))
            {
                return true;
            }
            source = err.source();
        }
        false
    }

    /// True for failures that mean "upstream could not give us a good answer right now",
    /// which is when a stale cached copy may be served instead.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            Error::UpstreamStatus(_)
                | Error::UpstreamUnreachable(_)
                | Error::UpstreamTimeout(_)
                | Error::RedirectRefused(_)
                | Error::Integrity(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
