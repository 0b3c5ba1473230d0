//! Docker/OCI registry rules: parsing and validating `/v2/` request paths (image names, tags,
//! digests), the cache class of each endpoint, storage keys (blobs shared per remote), the
//! Accept headers sent upstream, and include_patterns matching on image names.

use std::fmt;

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::package::CacheClass;

/// `Accept` for manifests: Docker v2, OCI manifest, OCI index, Docker manifest list.
/// Docker's cache classes come from its routes, not from path rules: `repo/docker.rs` makes a
/// tag's manifest index class and everything named by digest file class.
pub struct Docker;

impl super::Format for Docker {}

pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// `Accept` for blobs.
pub const BLOB_ACCEPT: &str = "application/octet-stream";

/// Hosts that mean Docker Hub.
pub const DOCKER_HUB_HOSTS: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];

fn invalid(code: &'static str, message: String) -> Error {
    Error::InvalidReference { code, message }
}

/// A repository name as the distribution spec allows: lower-case components of
/// `[a-z0-9]+` joined by `.`, `_`, `__` or `-`s, separated by `/`, at most 255 characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageName(String);

impl ImageName {
    pub fn from_segments(segments: &[&str]) -> Result<ImageName> {
        if segments.is_empty() {
            return Err(invalid("NAME_INVALID", "empty repository name".into()));
        }
        for s in segments {
            if !valid_component(s) {
                return Err(invalid(
                    "NAME_INVALID",
                    format!("invalid repository name component {s:?}"),
                ));
            }
        }
        let name = segments.join("/");
        if name.len() > 255 {
            return Err(invalid("NAME_INVALID", "repository name too long".into()));
        }
        Ok(ImageName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first two components (`library/nginx`), which include_patterns match.
    pub fn image(&self) -> String {
        self.0.splitn(3, '/').take(2).collect::<Vec<_>>().join("/")
    }

    /// Docker Hub's official images live under `library/`.
    pub fn with_library_prefix(self) -> ImageName {
        if self.0.contains('/') {
            self
        } else {
            ImageName(format!("library/{}", self.0))
        }
    }
}

fn valid_component(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageName({:?})", self.0)
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Tag> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if ok {
            Ok(Tag(s.to_string()))
        } else {
            Err(invalid("TAG_INVALID", format!("invalid tag {s:?}")))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A `sha256:<64 hex>` content digest (the only algorithm this proxy verifies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest> {
        let Some((algo, hex)) = s.split_once(':') else {
            return Err(invalid("DIGEST_INVALID", format!("invalid digest {s:?}")));
        };
        if algo != "sha256" {
            let known = matches!(algo, "sha384" | "sha512");
            return Err(if known {
                Error::Unsupported(format!("digest algorithm {algo} is not supported"))
            } else {
                invalid("DIGEST_INVALID", format!("invalid digest {s:?}"))
            });
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(invalid("DIGEST_INVALID", format!("invalid digest {s:?}")));
        }
        Ok(Digest(s.to_string()))
    }
    /// `sha256:<hex>`
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }
    /// The digest as the core's content digest type.
    pub fn sha256(&self) -> Sha256Digest {
        Sha256Digest::from_hex(self.hex()).expect("checked by parse")
    }
}

/// A manifest reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference> {
        if s.contains(':') {
            Digest::parse(s).map(Reference::Digest)
        } else {
            Tag::parse(s).map(Reference::Tag)
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            Reference::Tag(t) => t.as_str(),
            Reference::Digest(d) => d.as_str(),
        }
    }
}

/// Which registry endpoint a `/v2/` path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Manifest(Reference),
    Blob(Digest),
    TagsList,
}

impl Endpoint {
    /// Manifests by tag and tag lists are mutable (index); by digest, content-addressed (file).
    pub fn class(&self) -> CacheClass {
        match self {
            Endpoint::Manifest(Reference::Tag(_)) | Endpoint::TagsList => CacheClass::Index,
            Endpoint::Manifest(Reference::Digest(_)) | Endpoint::Blob(_) => CacheClass::File,
        }
    }

    /// The registry error code for "not found" on this endpoint.
    pub fn unknown_code(&self) -> &'static str {
        match self {
            Endpoint::Manifest(_) => "MANIFEST_UNKNOWN",
            Endpoint::Blob(_) => "BLOB_UNKNOWN",
            Endpoint::TagsList => "NAME_UNKNOWN",
        }
    }

    /// The path below the image name: `manifests/<ref>`, `blobs/<digest>`, `tags/list`.
    pub fn tail(&self) -> String {
        match self {
            Endpoint::Manifest(r) => format!("manifests/{}", r.as_str()),
            Endpoint::Blob(d) => format!("blobs/{}", d.as_str()),
            Endpoint::TagsList => "tags/list".to_string(),
        }
    }
}

/// A parsed `/v2/{...}` path: the segments before the endpoint (a repository prefix and/or the
/// image name, resolved by the caller) and the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Path {
    pub segments: Vec<String>,
    pub endpoint: Endpoint,
}

/// Parses the part of the URL after `/v2/` (still percent-encoded; registry paths never need
/// encoding, so any `%` is refused).
pub fn parse_v2_path(rest: &str) -> Result<V2Path> {
    if rest.contains('%') || rest.contains('\\') {
        return Err(invalid(
            "NAME_INVALID",
            "encoded characters are not allowed".into(),
        ));
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let n = parts.len();
    let (name_end, endpoint) = if n >= 3 && parts[n - 2] == "tags" && parts[n - 1] == "list" {
        (n - 2, Endpoint::TagsList)
    } else if n >= 3 && parts[n - 2] == "manifests" {
        (n - 2, Endpoint::Manifest(Reference::parse(parts[n - 1])?))
    } else if n >= 3 && parts[n - 2] == "blobs" {
        if parts[n - 1] == "uploads" {
            return Err(Error::Unsupported("this registry is read-only".into()));
        }
        (n - 2, Endpoint::Blob(Digest::parse(parts[n - 1])?))
    } else if n >= 4 && parts[n - 3] == "blobs" && parts[n - 2] == "uploads" {
        return Err(Error::Unsupported("this registry is read-only".into()));
    } else {
        return Err(Error::Unsupported(format!(
            "unknown registry endpoint /v2/{rest}"
        )));
    };
    let segments: Vec<String> = parts[..name_end].iter().map(|s| s.to_string()).collect();
    if segments.is_empty() || segments.iter().any(|s| s.is_empty()) {
        return Err(invalid("NAME_INVALID", "empty repository name".into()));
    }
    Ok(V2Path { segments, endpoint })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn names() {
        for ok in [
            "alpine",
            "library/alpine",
            "a/b/c",
            "my-app",
            "my__app",
            "a.b",
            "a---b",
            "x9",
        ] {
            assert!(
                ImageName::from_segments(&ok.split('/').collect::<Vec<_>>()).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "Alpine", "-a", "a-", "a..b", "a___b", "a/", "", "a b", "..", "a/../b",
        ] {
            assert!(
                ImageName::from_segments(&bad.split('/').collect::<Vec<_>>()).is_err(),
                "{bad}"
            );
        }
        let n = ImageName::from_segments(&["alpine"])
            .unwrap()
            .with_library_prefix();
        assert_eq!(n.as_str(), "library/alpine");
        assert_eq!(
            ImageName::from_segments(&["a", "b", "c"]).unwrap().image(),
            "a/b"
        );
    }

    #[test]
    fn tags_and_digests() {
        assert!(Tag::parse("3.20").is_ok());
        assert!(Tag::parse("_x").is_ok());
        assert!(Tag::parse(".x").is_err());
        assert!(Tag::parse(&"a".repeat(129)).is_err());
        assert!(Digest::parse(D).is_ok());
        assert!(Digest::parse("sha256:ABC").is_err());
        assert!(matches!(
            Digest::parse("sha512:00"),
            Err(Error::Unsupported(_))
        ));
        assert_eq!(Digest::parse(D).unwrap().hex().len(), 64);
    }

    #[test]
    fn v2_paths() {
        let p = parse_v2_path("hub/library/alpine/manifests/3.20").unwrap();
        assert_eq!(p.segments, vec!["hub", "library", "alpine"]);
        assert_eq!(
            p.endpoint,
            Endpoint::Manifest(Reference::Tag(Tag("3.20".into())))
        );
        let p = parse_v2_path(&format!("hub/x/blobs/{D}")).unwrap();
        assert!(matches!(p.endpoint, Endpoint::Blob(_)));
        assert_eq!(p.endpoint.class(), CacheClass::File);
        let p = parse_v2_path("hub/x/tags/list").unwrap();
        assert_eq!(p.endpoint, Endpoint::TagsList);
        assert_eq!(p.endpoint.class(), CacheClass::Index);
        assert!(parse_v2_path("hub/x/blobs/uploads/").is_err());
        assert!(parse_v2_path("hub/x/manifests/..").is_err());
        assert!(parse_v2_path("hub/%2e%2e/manifests/latest").is_err());
        assert!(parse_v2_path("manifests/latest").is_err());
        assert!(parse_v2_path("hub//x/manifests/latest").is_err());
        assert!(parse_v2_path("hub/x/whatever").is_err());
    }
}

/// What a manifest points at: child manifests of an index (with their platform) and blobs of
/// an image manifest (config first, then layers).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ManifestRefs {
    pub children: Vec<(Digest, Option<String>)>,
    pub blobs: Vec<Digest>,
}

/// Reads the references out of a manifest or index document.
pub fn manifest_references(json: &[u8]) -> Result<ManifestRefs> {
    let v: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| Error::BadRequest(format!("manifest is not valid JSON: {e}")))?;
    let mut refs = ManifestRefs::default();
    let digest_of =
        |d: &serde_json::Value| d.get("digest").and_then(|x| x.as_str()).map(Digest::parse);
    if let Some(list) = v.get("manifests").and_then(|m| m.as_array()) {
        for m in list {
            let Some(d) = digest_of(m) else { continue };
            let platform = m.get("platform").map(|p| {
                let os = p.get("os").and_then(|x| x.as_str()).unwrap_or("");
                let arch = p.get("architecture").and_then(|x| x.as_str()).unwrap_or("");
                match p.get("variant").and_then(|x| x.as_str()) {
                    Some(var) => format!("{os}/{arch}/{var}"),
                    None => format!("{os}/{arch}"),
                }
            });
            refs.children.push((d?, platform));
        }
    }
    if let Some(c) = v.get("config").and_then(digest_of) {
        refs.blobs.push(c?);
    }
    if let Some(layers) = v.get("layers").and_then(|l| l.as_array()) {
        for l in layers {
            if let Some(d) = digest_of(l) {
                refs.blobs.push(d?);
            }
        }
    }
    Ok(refs)
}

/// `NAME:TAG` or `NAME@sha256:...` as given on the command line.
pub fn parse_image_reference(s: &str) -> Result<(ImageName, Reference)> {
    let (name, reference) = if let Some((n, d)) = s.split_once('@') {
        (n, Reference::Digest(Digest::parse(d)?))
    } else {
        match s.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Reference::Tag(Tag::parse(t)?)),
            _ => (s, Reference::Tag(Tag::parse("latest")?)),
        }
    };
    let segments: Vec<&str> = name.split('/').collect();
    Ok((ImageName::from_segments(&segments)?, reference))
}

#[cfg(test)]
mod refs_tests {
    use super::*;

    #[test]
    fn reads_index_and_manifest_references() {
        let d1 = format!("sha256:{}", "a".repeat(64));
        let d2 = format!("sha256:{}", "b".repeat(64));
        let index = format!(
            r#"{{"manifests":[{{"digest":"{d1}","platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},{{"digest":"{d2}"}}]}}"#
        );
        let r = manifest_references(index.as_bytes()).unwrap();
        assert_eq!(r.children.len(), 2);
        assert_eq!(r.children[0].1.as_deref(), Some("linux/arm64/v8"));
        assert_eq!(r.children[1].1, None);
        let manifest =
            format!(r#"{{"config":{{"digest":"{d1}"}},"layers":[{{"digest":"{d2}"}}]}}"#);
        let r = manifest_references(manifest.as_bytes()).unwrap();
        assert_eq!(r.blobs.len(), 2);
        assert!(manifest_references(b"not json").is_err());
    }

    #[test]
    fn image_references() {
        let (n, r) = parse_image_reference("library/alpine:3.20").unwrap();
        assert_eq!((n.as_str(), r.as_str()), ("library/alpine", "3.20"));
        let (n, r) = parse_image_reference("alpine").unwrap();
        assert_eq!((n.as_str(), r.as_str()), ("alpine", "latest"));
        let d = format!("sha256:{}", "c".repeat(64));
        let (_, r) = parse_image_reference(&format!("a/b@{d}")).unwrap();
        assert_eq!(r.as_str(), d);
        assert!(parse_image_reference("A:b").is_err());
    }
}
