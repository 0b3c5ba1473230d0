//! Request paths: the tail of a URL after the repository name, decoded and checked once, so
//! that no later step can reach outside the repository's storage prefix or its upstream.

use std::fmt;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::error::{Error, Result};
use crate::storage::TEMP_PREFIX;

/// Longest accepted path, in bytes after decoding.
pub const MAX_PATH: usize = 4096;
/// Longest accepted segment, in bytes after decoding (a filename limit on most filesystems).
pub const MAX_SEGMENT: usize = 255;

/// Characters percent-encoded when a segment goes into an upstream URL.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'/');

/// Look-alikes that some systems fold into `.`, `/` or `\` (Unicode compatibility forms).
const CONFUSABLES: &[char] = &[
    '\u{2024}', '\u{FE52}', '\u{FF0E}', // dots
    '\u{2044}', '\u{2215}', '\u{FF0F}', '\u{29F8}', // slashes
    '\u{FE68}', '\u{FF3C}', '\u{29F5}', '\u{29F9}', // backslashes
];

/// A validated, decoded repository path: non-empty segments, none `.` or `..`, none holding
/// `/`, `\`, `%`, NUL or control characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RepoPath {
    joined: String,
}

impl RepoPath {
    /// Parses the raw (still percent-encoded) URL path tail. Empty segments (`a//b`) collapse;
    /// a trailing `/` is refused because only files are served.
    pub fn parse(raw: &str) -> Result<RepoPath> {
        if raw.len() > MAX_PATH * 3 {
            return Err(bad("path too long"));
        }
        if raw.ends_with('/') {
            return Err(bad("directory paths are not served; ask for a file"));
        }
        let mut segments: Vec<String> = Vec::new();
        for enc in raw.split('/').filter(|s| !s.is_empty()) {
            let bytes: Vec<u8> = percent_decode_str(enc).collect();
            let seg = String::from_utf8(bytes).map_err(|_| bad("path is not valid UTF-8"))?;
            check_segment(&seg)?;
            segments.push(seg);
        }
        if segments.is_empty() {
            return Err(bad("empty path"));
        }
        let joined = segments.join("/");
        if joined.len() > MAX_PATH {
            return Err(bad("path too long"));
        }
        Ok(RepoPath { joined })
    }

    /// The decoded path, segments joined by `/`.
    pub fn as_str(&self) -> &str {
        &self.joined
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.joined.split('/')
    }

    /// The path without its first `n` segments; `None` when nothing would be left.
    pub fn tail(&self, n: usize) -> Option<RepoPath> {
        let rest: Vec<&str> = self.segments().skip(n).collect();
        (!rest.is_empty()).then(|| RepoPath {
            joined: rest.join("/"),
        })
    }

    /// The path as it goes into an upstream URL, each segment percent-encoded.
    pub fn encoded(&self) -> String {
        self.segments()
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect::<Vec<_>>()
            .join("/")
    }
}

fn check_segment(seg: &str) -> Result<()> {
    if seg == "." || seg == ".." {
        return Err(bad("'.' and '..' segments are not allowed"));
    }
    if seg.len() > MAX_SEGMENT {
        return Err(bad("path segment too long"));
    }
    if seg.starts_with(TEMP_PREFIX) {
        return Err(bad("reserved name"));
    }
    // Servlet containers (Tomcat, Jetty: Artifactory and Nexus upstreams) drop a `;param`
    // from a segment, so `..;` is `..` to them; IIS trims trailing dots and spaces.
    if seg.contains(';') {
        return Err(bad("';' (a path parameter to some servers) is not allowed"));
    }
    if seg.chars().all(|c| c == '.' || c == ' ') {
        return Err(bad("segments of only dots and spaces are not allowed"));
    }
    for c in seg.chars() {
        if c == '/' || c == '\\' {
            return Err(bad("encoded '/' or '\\' in a segment is not allowed"));
        }
        if c == '%' {
            return Err(bad("'%' after decoding (double encoding) is not allowed"));
        }
        if c.is_control() {
            return Err(bad("control characters are not allowed"));
        }
        if is_format_char(c) {
            return Err(bad(
                "invisible formatting characters (such as U+202E) are not allowed",
            ));
        }
        if CONFUSABLES.contains(&c) {
            return Err(bad("look-alike dot or slash characters are not allowed"));
        }
    }
    Ok(())
}

/// Unicode format characters (general category Cf): bidirectional overrides and isolates,
/// zero-width characters, the BOM, invisible operators and tags. They make a listed or logged
/// name look like another.
fn is_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

fn bad(msg: &str) -> Error {
    Error::BadPath(msg.to_string())
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.joined)
    }
}

impl fmt::Debug for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoPath({:?})", self.joined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        let p = RepoPath::parse("releases/40/Everything/x86_64/os/repodata/repomd.xml").unwrap();
        assert_eq!(
            p.as_str(),
            "releases/40/Everything/x86_64/os/repodata/repomd.xml"
        );
        assert_eq!(RepoPath::parse("a//b").unwrap().as_str(), "a/b");
        let spaced = RepoPath::parse("dir/my%20file+1.tar.gz").unwrap();
        assert_eq!(spaced.as_str(), "dir/my file+1.tar.gz");
        assert_eq!(spaced.encoded(), "dir/my%20file+1.tar.gz");
        assert_eq!(
            RepoPath::parse("v1.0/tool_ünï.bin").unwrap().encoded(),
            "v1.0/tool_%C3%BCn%C3%AF.bin"
        );
    }

    #[test]
    fn rejects_path_parameters_dot_runs_and_format_characters() {
        for raw in [
            "pub/..;/private/secret.txt",
            "pub/.;/x",
            "..;x/y",
            "a/%2e%2e;/b",
            "a/..%3b/b",
            "a/..%3B/b",
            "a;b",
            "a/b;jsessionid=1",
            "a/%3B",
            ".../x",
            "a/..../b",
            "a/.. /b",
            "a/..%20/b",
            "a/. ./b",
            "a/%20/b",
            "evil%E2%80%AEgpj.exe",
            "a%E2%80%8Bb",
            "%EF%BB%BFa",
            "a%E2%81%A6b",
            "a%C2%ADb",
            "tag%F3%A0%80%81",
        ] {
            assert!(RepoPath::parse(raw).is_err(), "{raw} must be refused");
        }
        for raw in [
            "a/.hidden",
            "v1..2/x",
            "a/b..c",
            "a/.b.",
            "a/x y/z",
            "ünï/✓",
        ] {
            assert!(RepoPath::parse(raw).is_ok(), "{raw} must be accepted");
        }
    }

    #[test]
    fn rejects_hostile_paths() {
        for raw in [
            "..",
            "a/../b",
            "a/./b",
            "%2e%2e/x",
            "%2E%2E/x",
            "a/%2e%2e%2fetc/passwd",
            "a%2fb",
            "a%5c..%5cb",
            "a\\..\\b",
            "a/%00b",
            "a/b%0d%0aX-Injected:1",
            "%252e%252e/x",
            "a/%25",
            "a/\u{FF0E}\u{FF0E}/b",
            "a/%EF%BC%8E%EF%BC%8E/b",
            "dir/",
            "",
            "/",
            "%ff%fe",
            ".artifactapi-tmp-1-1",
        ] {
            assert!(RepoPath::parse(raw).is_err(), "accepted {raw:?}");
        }
        assert!(RepoPath::parse(&"a".repeat(256)).is_err());
        assert!(RepoPath::parse(&format!("{}x", "ab/".repeat(2000))).is_err());
    }
}
