//! Format rules: which paths of a repository are index files (mutable metadata with a short TTL)
//! and which are file-class objects (immutable, kept until `file_ttl`), and how `warm` finds a
//! directory's packages. One file per format:
//!
//! - `docker.rs`: `/v2/` path parsing, image names, references and digests
//! - `rpm.rs`: `repodata/` is index; repomd.xml → primary.xml → `.rpm` locations for warm
//! - `alpine.rs`: `APKINDEX.tar.gz` is index; its records → `.apk` names for warm
//! - `generic.rs`: nothing is index by format (only `index_patterns`)
//!
//! Formats are listed in `classify` below.

pub mod alpine;
pub mod docker;
mod generic;
pub mod rpm;

use serde::{Deserialize, Serialize};

use crate::config::{PackageKind, Pattern};

/// How long an object is trusted without asking upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheClass {
    /// Mutable metadata (repomd.xml, APKINDEX.tar.gz, tag manifests): fresh for `index_ttl`,
    /// then revalidated.
    Index,
    /// Immutable content: kept forever, or for `file_ttl` when set.
    File,
}

impl CacheClass {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheClass::Index => "index",
            CacheClass::File => "file",
        }
    }
}

/// The class of `path` (a normalised repository path, no leading `/`) in a repository of
/// `package` with the given extra `index_patterns`.
pub fn classify(package: PackageKind, path: &str, index_patterns: &[Pattern]) -> CacheClass {
    let by_format = match package {
        PackageKind::Rpm => rpm::is_index(path),
        PackageKind::Alpine => alpine::is_index(path),
        PackageKind::Generic | PackageKind::Docker => generic::is_index(path),
    };
    if by_format || index_patterns.iter().any(|p| p.is_match(path)) {
        CacheClass::Index
    } else {
        CacheClass::File
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_patterns_extend_any_format() {
        let pats = vec![Pattern::new(r"latest\.json$").unwrap()];
        assert_eq!(
            classify(PackageKind::Generic, "v1/latest.json", &pats),
            CacheClass::Index
        );
        assert_eq!(
            classify(PackageKind::Generic, "v1/tool.tar.gz", &pats),
            CacheClass::File
        );
        assert_eq!(
            classify(PackageKind::Rpm, "x/latest.json", &pats),
            CacheClass::Index
        );
    }
}
