//! The npm registry API: the proxy's URL layout under an npm repository (packuments at
//! `/{name}`, `/@scope%2fname` or `/@scope/name`, tarballs at `/{name}/-/{file}.tgz`), package
//! names, full and abbreviated packuments (`Accept`), and a scanner that finds each version's
//! `dist` fields (`tarball`, `integrity`, `shasum`) in a packument's bytes without building the
//! document, so that a packument of tens of megabytes is rewritten as it is sent.

use std::ops::Range;

use bytes::Bytes;

use super::Format;
use crate::error::{Error, Result};
use crate::path::RepoPath;

pub struct Npm;

impl Format for Npm {
    /// Packuments (every path without a `/-/` segment) change; tarballs do not.
    fn is_index(&self, path: &str) -> bool {
        !path.split('/').any(|s| s == "-")
    }
}

/// The abbreviated ("corgi") packument npm asks for when it installs.
pub const ABBREVIATED: &str = "application/vnd.npm.install-v1+json";
/// The full packument.
pub const FULL: &str = "application/json";

/// Which packument a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Full,
    Abbreviated,
}

impl Kind {
    /// The abbreviated document when the client's `Accept` names it (as npm, pnpm and yarn
    /// do on install), else the full one.
    pub fn of_accept(accept: Option<&str>) -> Kind {
        let wants = accept.is_some_and(|a| {
            a.split(',').any(|part| {
                let mut params = part.split(';');
                let media = params.next().unwrap_or("").trim();
                let q0 = params.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
                media.eq_ignore_ascii_case(ABBREVIATED) && !q0
            })
        });
        if wants { Kind::Abbreviated } else { Kind::Full }
    }

    /// What the proxy asks an upstream for.
    pub fn accept(self) -> &'static str {
        match self {
            Kind::Full => "application/json",
            Kind::Abbreviated => {
                "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8"
            }
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Full => "application/json",
            Kind::Abbreviated => ABBREVIATED,
        }
    }

    /// The name of the stored copy under the package's key.
    pub fn key_suffix(self) -> &'static str {
        match self {
            Kind::Full => "_packument",
            Kind::Abbreviated => "_packument.abbreviated",
        }
    }
}

/// A package name, `name` or `@scope/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub scope: Option<String>,
    pub name: String,
}

impl Name {
    /// `name` or `@scope/name`, checked: at most 214 characters, each part of URL-safe
    /// characters (letters, digits, `-`, `.`, `_`, `~`), not starting with `.` or `_`.
    pub fn parse(full: &str) -> Result<Name> {
        let bad = || Error::BadPath(format!("{full:?} is not an npm package name"));
        if full.is_empty() || full.len() > 214 {
            return Err(bad());
        }
        let (scope, name) = match full.strip_prefix('@') {
            Some(rest) => {
                let (s, n) = rest.split_once('/').ok_or_else(bad)?;
                (Some(s), n)
            }
            None => (None, full),
        };
        let part_ok = |p: &str| {
            !p.is_empty()
                && !p.starts_with('.')
                && !p.starts_with('_')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
        };
        if !part_ok(name) || scope.is_some_and(|s| !part_ok(s)) {
            return Err(bad());
        }
        Ok(Name {
            scope: scope.map(str::to_string),
            name: name.to_string(),
        })
    }

    /// The path of the package: `name` or `@scope/name`, as upstream URLs and cache keys use.
    pub fn path(&self) -> RepoPath {
        RepoPath::parse(&self.to_string()).expect("a checked package name is a valid path")
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.scope {
            Some(s) => write!(f, "@{s}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Where a request under an npm repository goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A packument.
    Packument(Name),
    /// `{name}/-/{file}`: one of the package's tarballs.
    Tarball { name: Name, file: String },
}

/// The route of `tail` (the raw request path after the repository name); `NotFound` for the
/// registry's other endpoints (`-/…`, `{name}/{version}`), which are plain paths.
pub fn route(tail: &str) -> Result<Route> {
    let tail = tail.trim_start_matches('/');
    // `@scope%2fname` is how npm writes a scoped name in one segment.
    let decoded = percent_encoding::percent_decode_str(tail)
        .decode_utf8()
        .map_err(|_| Error::BadPath("the path is not UTF-8".into()))?;
    let parts: Vec<&str> = decoded.split('/').collect();
    let (name, rest) = match parts.as_slice() {
        [s, ..] if s.starts_with('-') || s.is_empty() => return Err(Error::NotFound),
        [s, n, rest @ ..] if s.starts_with('@') => (format!("{s}/{n}"), rest),
        [n, rest @ ..] => (n.to_string(), rest),
        [] => return Err(Error::NotFound),
    };
    match rest {
        [] | [""] => Ok(Route::Packument(Name::parse(&name)?)),
        ["-", file] if file.ends_with(".tgz") && !file.starts_with('.') => {
            let name = Name::parse(&name)?;
            RepoPath::parse(file)?;
            Ok(Route::Tarball {
                name,
                file: file.to_string(),
            })
        }
        _ => Err(Error::NotFound),
    }
}

/// The file name of a tarball URL (its last path segment), when it is one.
pub fn tarball_file(url: &str) -> Option<&str> {
    let path = url.split(['?', '#']).next()?;
    let file = path.rsplit('/').next()?;
    (file.ends_with(".tgz") && !file.starts_with('.')).then_some(file)
}

/// One `versions.*.dist.{field}` string of a packument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistString {
    /// The version's key, unescaped.
    pub version: String,
    pub field: DistField,
    /// Where the quoted string is in the document.
    pub span: Range<usize>,
    /// The string, unescaped.
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistField {
    Tarball,
    Integrity,
    Shasum,
}

/// Nesting deeper than this is refused: packuments are a few levels deep.
const MAX_DEPTH: usize = 128;

/// Every `versions.*.dist.{tarball,integrity,shasum}` string of `doc`, in document order.
/// The rest of the document is checked to be JSON but not kept.
pub fn dist_strings(doc: &[u8]) -> Result<Vec<DistString>> {
    let mut s = Scanner {
        b: doc,
        i: 0,
        keys: Vec::new(),
        out: Vec::new(),
    };
    s.ws();
    s.value(0)?;
    s.ws();
    if s.i != doc.len() {
        return Err(s.error("text after the document"));
    }
    Ok(s.out)
}

/// Where each version's tarball can be fetched and how to check it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dist {
    pub tarball: Option<String>,
    pub integrity: Option<String>,
    pub shasum: Option<String>,
}

/// The `dist` of the version whose tarball's file name is `file`.
pub fn dist_of(doc: &[u8], file: &str) -> Result<Option<Dist>> {
    let strings = dist_strings(doc)?;
    let Some(version) = strings
        .iter()
        .find(|d| d.field == DistField::Tarball && tarball_file(&d.value) == Some(file))
        .map(|d| d.version.clone())
    else {
        return Ok(None);
    };
    let mut dist = Dist::default();
    for d in strings.into_iter().filter(|d| d.version == version) {
        match d.field {
            DistField::Tarball => dist.tarball = Some(d.value),
            DistField::Integrity => dist.integrity = Some(d.value),
            DistField::Shasum => dist.shasum = Some(d.value),
        }
    }
    Ok(Some(dist))
}

/// `doc` with each version's `dist.tarball` replaced by `link(old URL)` (left as it is when
/// that gives `None`), as pieces to send in turn: slices of `doc` and the new strings.
pub fn rewrite_tarballs(doc: &Bytes, link: impl Fn(&str) -> Option<String>) -> Result<Vec<Bytes>> {
    let mut pieces = Vec::new();
    let mut at = 0;
    for d in dist_strings(doc)? {
        if d.field != DistField::Tarball {
            continue;
        }
        let Some(new) = link(&d.value) else {
            continue;
        };
        pieces.push(doc.slice(at..d.span.start));
        let quoted = serde_json::to_string(&new).expect("a string serialises");
        pieces.push(Bytes::from(quoted));
        at = d.span.end;
    }
    pieces.push(doc.slice(at..));
    Ok(pieces)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// The keys of the objects the scanner is in (`None` for an array element).
    keys: Vec<Option<Range<usize>>>,
    out: Vec<DistString>,
}

impl Scanner<'_> {
    fn error(&self, what: &str) -> Error {
        Error::UpstreamUnreachable(format!(
            "the packument is not JSON: {what} at byte {}",
            self.i
        ))
    }

    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// A quoted string starting here; its range, quotes included.
    fn string(&mut self) -> Result<Range<usize>> {
        let start = self.i;
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a string"));
        }
        self.i += 1;
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(start..self.i);
                }
                Some(b'\\') => self.i += 2,
                Some(c) if c < 0x20 => return Err(self.error("control character in a string")),
                Some(_) => self.i += 1,
            }
        }
    }

    fn unescape(&self, r: &Range<usize>) -> Result<String> {
        let raw = &self.b[r.clone()];
        if !raw.contains(&b'\\') {
            return std::str::from_utf8(&raw[1..raw.len() - 1])
                .map(str::to_string)
                .map_err(|_| self.error("a string is not UTF-8"));
        }
        serde_json::from_slice(raw).map_err(|_| self.error("a bad escape"))
    }

    fn key_is(&self, depth: usize, want: &str) -> bool {
        match self.keys.get(depth) {
            Some(Some(r)) => {
                let raw = &self.b[r.clone()];
                raw.len() == want.len() + 2 && &raw[1..raw.len() - 1] == want.as_bytes()
            }
            _ => false,
        }
    }

    /// The `dist` field a string value at the current key path is, if it is one.
    fn dist_field(&self) -> Option<DistField> {
        if self.keys.len() != 4 || !self.key_is(0, "versions") || !self.key_is(2, "dist") {
            return None;
        }
        [
            ("tarball", DistField::Tarball),
            ("integrity", DistField::Integrity),
            ("shasum", DistField::Shasum),
        ]
        .into_iter()
        .find(|(k, _)| self.key_is(3, k))
        .map(|(_, f)| f)
    }

    fn value(&mut self, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.ws();
                    if self.peek() != Some(b':') {
                        return Err(self.error("expected ':'"));
                    }
                    self.i += 1;
                    self.ws();
                    self.keys.push(Some(key));
                    self.value(depth + 1)?;
                    self.keys.pop();
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(self.error("expected ',' or '}'")),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.keys.push(None);
                    self.value(depth + 1)?;
                    self.keys.pop();
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(self.error("expected ',' or ']'")),
                    }
                }
            }
            Some(b'"') => {
                let span = self.string()?;
                if let Some(field) = self.dist_field() {
                    let version = self.keys[1].clone().expect("an object key");
                    let version = self.unescape(&version)?;
                    let value = self.unescape(&span)?;
                    self.out.push(DistString {
                        version,
                        field,
                        span,
                        value,
                    });
                }
                Ok(())
            }
            Some(c) if c == b'-' || c.is_ascii_digit() || matches!(c, b't' | b'f' | b'n') => {
                let start = self.i;
                while self.i < self.b.len()
                    && !matches!(
                        self.b[self.i],
                        b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                    )
                {
                    self.i += 1;
                }
                let word = &self.b[start..self.i];
                let ok = matches!(word, b"true" | b"false" | b"null")
                    || std::str::from_utf8(word).is_ok_and(|w| w.parse::<f64>().is_ok());
                if ok {
                    Ok(())
                } else {
                    Err(self.error("a bad literal"))
                }
            }
            _ => Err(self.error("expected a value")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"name":"@team/lib","dist-tags":{"latest":"1.1.0"},
      "versions":{
        "1.0.0":{"name":"@team/lib","dist":{"shasum":"aa","tarball":"http://up.example/@team/lib/-/lib-1.0.0.tgz","integrity":"sha512-AAAA"},"deps":[1,2.5e3,true,null]},
        "1.1.0":{"dist":{"tarball":"http://up.example/@team/lib/-/lib-1.1.0.tgz?x=1","shasum":"bb"},"description":"a \"quoted\" \\ dist"}
      },
      "dist":{"tarball":"not a version's"}}"#;

    #[test]
    fn finds_each_versions_dist_and_nothing_else() {
        let strings = dist_strings(DOC.as_bytes()).unwrap();
        let got: Vec<(&str, DistField, &str)> = strings
            .iter()
            .map(|d| (d.version.as_str(), d.field, d.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("1.0.0", DistField::Shasum, "aa"),
                (
                    "1.0.0",
                    DistField::Tarball,
                    "http://up.example/@team/lib/-/lib-1.0.0.tgz"
                ),
                ("1.0.0", DistField::Integrity, "sha512-AAAA"),
                (
                    "1.1.0",
                    DistField::Tarball,
                    "http://up.example/@team/lib/-/lib-1.1.0.tgz?x=1"
                ),
                ("1.1.0", DistField::Shasum, "bb"),
            ]
        );
        let dist = dist_of(DOC.as_bytes(), "lib-1.1.0.tgz").unwrap().unwrap();
        assert_eq!(dist.shasum.as_deref(), Some("bb"));
        assert_eq!(dist.integrity, None);
        assert_eq!(dist_of(DOC.as_bytes(), "lib-9.tgz").unwrap(), None);
    }

    #[test]
    fn rewritten_documents_are_the_same_json_with_new_links() {
        let doc = Bytes::from_static(DOC.as_bytes());
        let pieces = rewrite_tarballs(&doc, |url| {
            Some(format!("http://proxy/x/{}", tarball_file(url)?))
        })
        .unwrap();
        let out: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let mut want: serde_json::Value = serde_json::from_str(DOC).unwrap();
        want["versions"]["1.0.0"]["dist"]["tarball"] = "http://proxy/x/lib-1.0.0.tgz".into();
        want["versions"]["1.1.0"]["dist"]["tarball"] = "http://proxy/x/lib-1.1.0.tgz".into();
        assert_eq!(v, want);
    }

    #[test]
    fn broken_documents_are_refused() {
        for bad in [
            "{\"versions\":{\"1\":{\"dist\":{\"tarball\":\"x}}}}",
            "{\"a\":tru}",
            "{\"a\":1} x",
            "{\"a\" 1}",
            &"[".repeat(500),
        ] {
            assert!(dist_strings(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn routes_and_names() {
        let scoped = Name::parse("@team/lib").unwrap();
        for tail in ["@team%2flib", "@team%2Flib", "@team/lib", "@team/lib/"] {
            assert_eq!(
                route(tail).unwrap(),
                Route::Packument(scoped.clone()),
                "{tail}"
            );
        }
        assert_eq!(
            route("@team/lib/-/lib-1.0.0.tgz").unwrap(),
            Route::Tarball {
                name: scoped.clone(),
                file: "lib-1.0.0.tgz".into()
            }
        );
        assert_eq!(
            route("lodash/-/lodash-4.17.21.tgz").unwrap(),
            Route::Tarball {
                name: Name::parse("lodash").unwrap(),
                file: "lodash-4.17.21.tgz".into()
            }
        );
        assert_eq!(scoped.to_string(), "@team/lib");
        assert_eq!(scoped.path().as_str(), "@team/lib");
        for other in ["-/v1/search", "lodash/4.17.21", "-/ping"] {
            assert!(matches!(route(other), Err(Error::NotFound)), "{other}");
        }
        for bad in ["..", "_private", "a b", "@/x", "@team", ".hidden"] {
            assert!(matches!(route(bad), Err(Error::BadPath(_))), "{bad}");
        }
        assert_eq!(
            Kind::of_accept(Some(
                "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
            )),
            Kind::Abbreviated
        );
        assert_eq!(Kind::of_accept(Some("application/json")), Kind::Full);
        assert_eq!(Kind::of_accept(None), Kind::Full);
        assert!(Npm.is_index("@team/lib/_packument"));
        assert!(!Npm.is_index("@team/lib/-/lib-1.0.0.tgz"));
    }
}
