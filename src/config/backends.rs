//! Settings types used only by the shared (S3 and Redis) backends.

use serde::Deserialize;

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
