//! Validated value types used by the config: each one checks itself while it is deserialised,
//! so the YAML parser can report the exact line and column of a bad value.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

thread_local! {
    /// When set, unset variables expand to "" and are recorded here instead of failing
    /// (`validate-config` reports them as warnings).
    static LENIENT_UNSET: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with unset variables tolerated; returns its result and the unset names.
pub fn with_lenient_env<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    LENIENT_UNSET.with(|l| *l.borrow_mut() = Some(Vec::new()));
    let out = f();
    let unset = LENIENT_UNSET.with(|l| l.borrow_mut().take().unwrap_or_default());
    (out, unset)
}

/// True inside [`with_lenient_env`], where unset variables expand to "".
pub(crate) fn lenient_env() -> bool {
    LENIENT_UNSET.with(|l| l.borrow().is_some())
}

/// Expands `${VAR}` (and `${VAR:-default}`) from the environment. `$$` stands for a literal `$`.
pub fn expand_env(input: &str) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated '${{' in {input:?}"))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            match (std::env::var(name), default) {
                (Ok(v), _) => out.push_str(&v),
                (Err(_), Some(d)) => out.push_str(d),
                (Err(_), None) => {
                    let tolerated = LENIENT_UNSET.with(|l| match l.borrow_mut().as_mut() {
                        Some(v) => {
                            v.push(name.to_string());
                            true
                        }
                        None => false,
                    });
                    if !tolerated {
                        return Err(format!("environment variable {name} is not set"));
                    }
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A string with `${VAR}` references expanded at load time.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EnvString(pub String);

impl<'de> Deserialize<'de> for EnvString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        expand_env(&raw).map(EnvString).map_err(de::Error::custom)
    }
}

impl fmt::Debug for EnvString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::ops::Deref for EnvString {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A secret (password, token, key). Expanded like [`EnvString`]; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EnvString::deserialize(d).map(|s| Secret(s.0))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A compiled regular expression from `include_patterns` / `index_patterns`. Python's `re`
/// syntax is accepted where the `regex` crate supports it (no look-around, no backreferences);
/// anything else is rejected at load time. Matching is unanchored, like Python's `re.search`.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Pattern(regex::Regex);

impl Pattern {
    pub fn new(source: &str) -> Result<Self, String> {
        regex::Regex::new(source)
            .map(Pattern)
            .map_err(|e| format!("invalid regex {source:?}: {}", first_line(&e.to_string())))
    }
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .filter(|l| l.starts_with("error:"))
        .map(|l| l.trim_start_matches("error:").trim().to_string())
        .next()
        .unwrap_or_else(|| s.lines().last().unwrap_or(s).trim().to_string())
}

impl TryFrom<String> for Pattern {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Pattern::new(&raw)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.0.as_str())
    }
}

/// An upstream base URL: absolute http(s), with a host, no query or fragment, no trailing `/`.
/// `${VAR}` references are expanded first.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "EnvString")]
pub struct BaseUrl(reqwest::Url);

impl BaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(raw).map_err(|e| format!("invalid URL {raw:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("base_url must be http or https, got {raw:?}"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("base_url has no host: {raw:?}"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "base_url must not have a query or fragment: {raw:?}"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("base_url must not embed credentials; use username and password".into());
        }
        Ok(BaseUrl(url))
    }
    pub fn url(&self) -> &reqwest::Url {
        &self.0
    }
    /// The base without a trailing slash, ready for `/{path}` to be appended.
    pub fn as_prefix(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }
}

impl TryFrom<EnvString> for BaseUrl {
    type Error = String;
    fn try_from(raw: EnvString) -> Result<Self, String> {
        BaseUrl::parse(&raw)
    }
}

impl fmt::Debug for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

/// A duration given as whole seconds (`300`) or in human form (`5m`, `1h 30m`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Seconds(pub Duration);

impl Seconds {
    pub const fn secs(n: u64) -> Self {
        Seconds(Duration::from_secs(n))
    }
    pub fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

/// A duration written as whole seconds (`300`) or in human form (`30d`, `1h 30m`), as on the
/// command line and in query parameters.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds or a duration such as \"5m\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds::secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(Seconds::secs)
                    .map_err(|_| E::custom(format!("a duration cannot be negative: {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                if v.is_finite() && v >= 0.0 {
                    Ok(Seconds(Duration::from_secs_f64(v)))
                } else {
                    Err(E::custom(format!("invalid duration: {v}")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                if let Ok(n) = v.trim().parse::<u64>() {
                    return Ok(Seconds::secs(n));
                }
                humantime::parse_duration(v)
                    .map(Seconds)
                    .map_err(|e| E::custom(format!("invalid duration {v:?}: {e}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes, given as a number of bytes (`1048576`) or with a unit (`512 MiB`, `10GB`,
/// `2g`). `KiB`, `MiB`, `GiB`, `TiB` and the bare `K`, `M`, `G`, `T` are powers of 1024;
/// `KB`, `MB`, `GB`, `TB` are powers of 1000.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = (t[..split].trim(), t[split..].trim());
        let bad = || format!("invalid size {text:?}: use bytes or a unit such as \"512 MiB\"");
        let n: f64 = number.parse().map_err(|_| bad())?;
        let scale: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(bad()),
        };
        let bytes = n * scale as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a size such as \"512 MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative: {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Space that must stay free on a file system: bytes, or a percentage of its size (`5%`).
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum MinFree {
    Bytes(u64),
    Percent(f64),
}

impl MinFree {
    /// The bytes to keep free on a file system of `total` bytes.
    pub fn of(&self, total: u64) -> u64 {
        match *self {
            MinFree::Bytes(b) => b,
            MinFree::Percent(p) => (total as f64 * p / 100.0) as u64,
        }
    }
}

impl<'de> Deserialize<'de> for MinFree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MinFree;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"2 GiB\" or a percentage such as \"5%\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MinFree, E> {
                Ok(MinFree::Bytes(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MinFree, E> {
                match v.trim().strip_suffix('%') {
                    Some(p) => match p.trim().parse::<f64>() {
                        Ok(p) if (0.0..100.0).contains(&p) => Ok(MinFree::Percent(p)),
                        _ => Err(E::custom(format!(
                            "invalid percentage {v:?}: use a number from 0 to under 100, then %"
                        ))),
                    },
                    None => ByteSize::parse(v)
                        .map(|b| MinFree::Bytes(b.0))
                        .map_err(E::custom),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A repository name: letters, digits, `.`, `_`, `-`, starting with a letter or digit, at most
/// 64 characters. Names appear in URLs and storage keys, so nothing else is allowed.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw.starts_with(|c: char| c.is_ascii_alphanumeric())
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(RepoName(raw.to_string()))
        } else {
            Err(format!(
                "invalid repository name {raw:?}: use letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit)"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RepoName {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        RepoName::parse(&raw)
    }
}

impl From<RepoName> for String {
    fn from(name: RepoName) -> String {
        name.0
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for RepoName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A registry host a docker remote mirrors (`docker.io`, `ghcr.io`, `registry:5000`): letters,
/// digits, `.`, `-` and `:`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RegistryHost(String);

impl RegistryHost {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid = !raw.is_empty()
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        if valid {
            Ok(RegistryHost(raw.to_string()))
        } else {
            Err(format!(
                "mirror_of entry {raw:?} is not a registry host name"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for RegistryHost {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl fmt::Debug for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A host an upstream request may reach whatever its address (`allowed_redirect_hosts`, and the
/// hosts a remote names itself): a lower-case host name, or an IP address.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum UpstreamHost {
    Name(String),
    Ip(std::net::IpAddr),
}

impl UpstreamHost {
    /// A host as the config writes it: a host name (`nexus.internal`), an IPv4 address, or an
    /// IPv6 address with or without brackets. No scheme, port, path or user.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let inner = raw
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(raw);
        if let Ok(ip) = inner.parse::<std::net::Ipv6Addr>() {
            return Ok(UpstreamHost::Ip(ip.into()));
        }
        let name_like = !raw.is_empty()
            && raw.len() <= 253
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            && raw
                .split('.')
                .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
        // Parsing as a URL host also turns IPv4 forms such as `127.1` into `127.0.0.1`.
        let host = name_like
            .then(|| reqwest::Url::parse(&format!("http://{raw}/")).ok())
            .flatten()
            .and_then(|u| UpstreamHost::of_url(&u));
        host.ok_or_else(|| {
            format!(
                "allowed_redirect_hosts entry {raw:?} is not a host name or IP address (write the host alone, without scheme, port or path)"
            )
        })
    }

    /// The host of `url`, if it has one.
    pub fn of_url(url: &reqwest::Url) -> Option<Self> {
        url.host_str().map(UpstreamHost::of_host_str)
    }

    /// A host as URLs and resolvers write it (`[::1]`, `127.0.0.1`, `Example.org.`): IP
    /// literals become addresses, names are lower-cased without a trailing `.`.
    pub fn of_host_str(host: &str) -> Self {
        let inner = host
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(host);
        match inner.parse::<std::net::IpAddr>() {
            Ok(ip) => UpstreamHost::Ip(ip),
            Err(_) => UpstreamHost::Name(host.trim_end_matches('.').to_ascii_lowercase()),
        }
    }
}

impl TryFrom<String> for UpstreamHost {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        UpstreamHost::parse(&raw)
    }
}

impl fmt::Debug for UpstreamHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for UpstreamHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamHost::Name(n) => f.write_str(n),
            UpstreamHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        for (text, bytes) in [
            ("1048576", 1 << 20),
            ("512 MiB", 512 << 20),
            ("2g", 2 << 30),
            ("10GB", 10_000_000_000),
            ("1.5 KiB", 1536),
            ("0", 0),
        ] {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(bytes)), "{text}");
        }
        for bad in ["", "MiB", "-1", "5 parsecs", "1e9", "1.2.3 G"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expands_env_references() {
        let path = std::env::var("PATH").expect("PATH is set");
        assert_eq!(expand_env("a-${PATH}-b").unwrap(), format!("a-{path}-b"));
        assert_eq!(expand_env("$$HOME").unwrap(), "$HOME");
        assert_eq!(
            expand_env("${ARTIFACTAPI_TEST_UNSET_X:-dflt}").unwrap(),
            "dflt"
        );
        assert!(
            expand_env("${ARTIFACTAPI_TEST_UNSET_X}")
                .unwrap_err()
                .contains("not set")
        );
        assert!(expand_env("${bad name}").is_err());
        assert!(expand_env("${OPEN").is_err());
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn base_url_rules() {
        assert!(BaseUrl::parse("https://example.org/pub/").is_ok());
        assert_eq!(
            BaseUrl::parse("https://example.org/pub/")
                .unwrap()
                .as_prefix(),
            "https://example.org/pub"
        );
        assert!(BaseUrl::parse("ftp://example.org").is_err());
        assert!(BaseUrl::parse("https://u:p@example.org").is_err());
        assert!(BaseUrl::parse("https://example.org/?a=b").is_err());
        assert!(BaseUrl::parse("not a url").is_err());
    }

    #[test]
    fn upstream_hosts() {
        use std::net::IpAddr;
        let ip = |s: &str| UpstreamHost::Ip(s.parse::<IpAddr>().unwrap());
        let name = |s: &str| UpstreamHost::Name(s.to_string());
        for (raw, host) in [
            ("nexus.internal", name("nexus.internal")),
            ("Nexus.Internal", name("nexus.internal")),
            ("localhost", name("localhost")),
            ("10.0.0.5", ip("10.0.0.5")),
            ("127.1", ip("127.0.0.1")),
            ("::1", ip("::1")),
            ("[fd00::1]", ip("fd00::1")),
        ] {
            assert_eq!(UpstreamHost::parse(raw), Ok(host), "{raw}");
        }
        for raw in [
            "",
            "http://nexus.internal",
            "nexus.internal:8081",
            "nexus.internal/path",
            "user@nexus.internal",
            "a b",
            "-bad.example",
            "bad..example",
            "ex%61mple.org",
            "nexus.internal.",
            "[nexus.internal]",
            "10.0.0.5:80",
            "héllo.example",
        ] {
            let e = UpstreamHost::parse(raw).unwrap_err();
            assert!(e.contains("not a host name or IP address"), "{raw}: {e}");
        }
        assert_eq!(
            UpstreamHost::of_host_str("[::ffff:127.0.0.1]"),
            ip("::ffff:127.0.0.1")
        );
        assert_eq!(
            UpstreamHost::of_host_str("Example.ORG."),
            name("example.org")
        );
    }

    #[test]
    fn repo_names() {
        assert!(RepoName::parse("fedora-40_x.y").is_ok());
        assert!(RepoName::parse("").is_err());
        assert!(RepoName::parse("-x").is_err());
        assert!(RepoName::parse("a/b").is_err());
        assert!(RepoName::parse("..").is_err());
    }
}
