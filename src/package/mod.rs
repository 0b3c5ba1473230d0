//! Package formats: everything format-specific about a repository's paths lives behind the
//! [`Format`] trait — which paths are index files (mutable metadata with a short TTL) and which
//! are file-class objects (immutable, kept until `file_ttl`), and how `warm` discovers the
//! packages a directory's index lists. One file per format:
//!
//! - `docker.rs`: `/v2/` path parsing, image names, references, digests and the `Accept`
//!   headers of manifests and blobs (docker's routes are its own, see `repo/docker.rs`)
//! - `rpm.rs`: `repodata/` is index; repomd.xml → primary.xml → `.rpm` locations for warm
//! - `alpine.rs`: `APKINDEX.tar.gz` is index; its records → `.apk` names for warm
//! - `generic.rs`: nothing is index by format (only `index_patterns`)
//! - `pypi.rs`: the Simple API (`simple/`) is index; its pages read and written in both forms
//!   (PEP 503 HTML, PEP 691 JSON), routes and project names (its serving is `repo/pypi.rs`)
//! - `npm.rs`: packuments are index, tarballs (`/-/`) files; names, routes, and the scanner
//!   that finds and rewrites each version's `dist` in a packument (serving: `repo/npm.rs`)
//!
//! A new format is a new file implementing [`Format`], a `PackageKind` variant, and its line in
//! [`format`].

pub mod alpine;
pub mod docker;
mod generic;
pub mod npm;
pub mod pypi;
pub mod rpm;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{PackageKind, Pattern};
use crate::error::Result;

/// The format-specific rules of one package kind. Every method has the behaviour of a plain
/// file tree as its default, so a format states only what it adds.
pub trait Format: Send + Sync {
    /// Whether `path` (normalised, no leading `/`) is an index file by the format's own rules;
    /// a repository's `index_patterns` add to these.
    fn is_index(&self, _path: &str) -> bool {
        false
    }

    /// The index files `warm` pulls first for a directory of packages, relative to it. Empty
    /// when the format has no index that lists its packages.
    fn warm_roots(&self) -> &'static [&'static str] {
        &[]
    }

    /// What the pulled index file `rel` (relative to the warmed directory, its body in `file`)
    /// lists: further index files to pull and read, and packages to pull. Called off the async
    /// threads.
    fn discover(&self, _rel: &str, _file: &Path) -> Result<Vec<Found>> {
        Ok(Vec::new())
    }
}

/// One thing an index file lists, relative to the warmed directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Another index file, to pull and pass to [`Format::discover`].
    Index(String),
    /// A package (file class), to pull.
    Package(String),
}

/// The rules of `package`.
pub fn format(package: PackageKind) -> &'static dyn Format {
    match package {
        PackageKind::Rpm => &rpm::Rpm,
        PackageKind::Alpine => &alpine::Alpine,
        PackageKind::Docker => &docker::Docker,
        PackageKind::Generic => &generic::Generic,
        PackageKind::Pypi => &pypi::Pypi,
        PackageKind::Npm => &npm::Npm,
    }
}

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
    if format(package).is_index(path) || index_patterns.iter().any(|p| p.is_match(path)) {
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
