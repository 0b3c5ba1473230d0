//! Reading a config file: YAML parsing with exact error locations, then the checks that span
//! several fields (a remote needs a base_url, virtual members must exist, ...), each reported at
//! the line and column of the key it concerns.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{Config, ConfigFile, RepoKind};

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    pub message: String,
    /// What to do about it, when we can say.
    pub hint: Option<String>,
}

/// A config file that could not be loaded, with every problem found in it.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                d.line,
                d.column,
                d.message
            )?;
            if let Some(h) = &d.hint {
                write!(f, " (hint: {h})")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the config at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        diagnostics: vec![Diagnostic {
            severity: Severity::Error,
            line: 1,
            column: 1,
            message: format!("cannot read config: {e}"),
            hint: Some("pass --config PATH or set ARTIFACTAPI_CONFIG".into()),
        }],
    })?;
    load_str(&text).map_err(|diagnostics| ConfigError {
        file: path.to_path_buf(),
        diagnostics,
    })
}

/// Parses and validates config text.
pub fn load_str(text: &str) -> Result<Config, Vec<Diagnostic>> {
    let source = if text.trim().is_empty() { "{}" } else { text };
    // Deserialising into a map keeps the last of duplicate keys; a YAML value refuses them.
    serde_yaml::from_str::<serde_yaml::Value>(source)
        .map_err(|e| vec![yaml_diagnostic(&e, text)])?;
    let file: ConfigFile =
        serde_yaml::from_str(source).map_err(|e| vec![yaml_diagnostic(&e, text)])?;
    let problems = check(&file, text);
    if problems.is_empty() {
        file.into_config(text)
    } else {
        Err(problems)
    }
}

fn yaml_diagnostic(e: &serde_yaml::Error, text: &str) -> Diagnostic {
    let (mut line, mut column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let full = e.to_string();
    // serde_yaml appends " at line N column M"; the location is reported separately.
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    // Inside a sequence the parser points at the previous item; a value quoted in the message
    // (`invalid regex "..."`) finds the right line.
    if let Some(value) = quoted_value(&message)
        && let Some(found) = find_from(text, line, &value)
    {
        (line, column) = found;
        // A duplicate key is reported at its map; point at the second occurrence instead.
        if message.contains("duplicate entry")
            && let Some(second) = find_key_after(text, found, &value)
        {
            (line, column) = second;
        }
    }
    let hint = if message.contains("unknown field") {
        Some("see SPEC.md for the fields each section accepts".to_string())
    } else if message.contains("unknown variant") {
        Some("check the spelling of the value".to_string())
    } else {
        None
    };
    Diagnostic {
        severity: Severity::Error,
        line,
        column,
        message,
        hint,
    }
}

/// Every problem in config text, errors and warnings, in line order. Unlike [`load_str`] it
/// does not stop at the first bad value: each top-level section and each repository is
/// checked on its own, then the checks across repositories run on what parsed. Unset `${VAR}`
/// references are warnings.
pub fn validate_str(text: &str) -> Vec<Diagnostic> {
    let (mut out, unset) = super::values::with_lenient_env(|| match load_str(text) {
        Ok(_) => Vec::new(),
        // The block-wise checks may miss what only the whole file shows (an inline
        // `remotes: [..]`); loading's own error then stands, so both always agree.
        Err(whole) => match validate_blocks(text) {
            Some(d) if d.iter().any(|d| d.severity == Severity::Error) => d,
            _ => whole,
        },
    });
    for name in unset {
        let needle = format!("${{{name}");
        let (line, column) = find_from(text, 1, &needle).unwrap_or((1, 1));
        out.push(Diagnostic {
            severity: Severity::Warning,
            line,
            column,
            message: format!("environment variable {name} is not set"),
            hint: Some("it will expand to an error at start-up unless it is set".into()),
        });
    }
    out.sort_by_key(|d| (d.line, d.column));
    out.dedup();
    out
}

/// Parses each top-level section and each repository separately, so that one bad value does
/// not hide the others. `None` when the text is not block-style YAML we can split.
fn validate_blocks(text: &str) -> Option<Vec<Diagnostic>> {
    if let Err(e) = serde_yaml::from_str::<serde_yaml::Value>(text) {
        return Some(vec![yaml_diagnostic(&e, text)]);
    }
    let lines: Vec<&str> = text.lines().collect();
    let top = blocks(&lines, 0, lines.len(), 0);
    if top.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut remotes = std::collections::BTreeMap::new();
    let mut auth = super::AuthConfig::default();
    for (key, start, end) in top {
        if key != "remotes" {
            let snippet = lines[start..end].join("\n");
            match serde_yaml::from_str::<ConfigFile>(&snippet) {
                Ok(c) if key == "auth" => auth = c.auth,
                Ok(_) => {}
                Err(e) => out.push(shift(yaml_diagnostic(&e, &snippet), start)),
            }
            continue;
        }
        let Some(indent) = lines[start + 1..end]
            .iter()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|l| l.len() - l.trim_start().len())
        else {
            continue;
        };
        for (_, rs, re) in blocks(&lines, start + 1, end, indent) {
            let snippet = format!("remotes:\n{}", lines[rs..re].join("\n"));
            match serde_yaml::from_str::<ConfigFile>(&snippet) {
                Ok(c) => remotes.extend(c.remotes),
                Err(e) => out.push(shift(yaml_diagnostic(&e, &snippet), rs - 1)),
            }
        }
    }
    let partial = ConfigFile {
        server: Default::default(),
        storage: Default::default(),
        metadata: Default::default(),
        remotes,
        auth,
    };
    out.extend(check(&partial, text));
    Some(out)
}

/// `(key, first line, end line)` of each `key:` at exactly `indent` within `[from, to)`.
fn blocks(lines: &[&str], from: usize, to: usize, indent: usize) -> Vec<(String, usize, usize)> {
    let mut starts = Vec::new();
    for (i, line) in lines.iter().enumerate().take(to).skip(from) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        if line.len() - trimmed.len() == indent
            && let Some((key, _)) = trimmed.split_once(':')
        {
            starts.push((key.trim().trim_matches(['"', '\'']).to_string(), i));
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, (k, s))| {
            let end = starts.get(n + 1).map(|x| x.1).unwrap_or(to);
            (k.clone(), *s, end)
        })
        .collect()
}

fn shift(mut d: Diagnostic, lines: usize) -> Diagnostic {
    d.line += lines;
    d
}

/// The first `"..."` in a message, unescaped as Rust's `{:?}` escaped it.
fn quoted_value(message: &str) -> Option<String> {
    let start = message.find('"')? + 1;
    let mut out = String::new();
    let mut chars = message[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return (!out.is_empty()).then_some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// The 1-based position of `needle` at or after 1-based `line`.
fn find_from(text: &str, line: usize, needle: &str) -> Option<(usize, usize)> {
    text.lines()
        .enumerate()
        .skip(line.saturating_sub(1))
        .find_map(|(i, l)| l.find(needle).map(|c| (i + 1, c + 1)))
}

/// The next line after `first` holding the map key `key` at the same column.
fn find_key_after(text: &str, first: (usize, usize), key: &str) -> Option<(usize, usize)> {
    let (line, column) = first;
    text.lines().enumerate().skip(line).find_map(|(i, l)| {
        let rest = l.get(column - 1..)?;
        let indent_ok = l[..column - 1].bytes().all(|b| b == b' ');
        let is_key = [
            format!("{key}:"),
            format!("\"{key}\":"),
            format!("'{key}':"),
        ]
        .iter()
        .any(|k| rest.starts_with(k.as_str()));
        (indent_ok && is_key).then_some((i + 1, column))
    })
}

/// Checks that span several fields.
fn check(config: &ConfigFile, text: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut at = |keys: &[&str], message: String, hint: Option<&str>| {
        let (line, column) = locate(text, keys);
        out.push(Diagnostic {
            severity: Severity::Error,
            line,
            column,
            message,
            hint: hint.map(str::to_string),
        });
    };
    let server = &config.server;
    for (key, value) in [
        ("header_timeout", server.header_timeout),
        ("send_timeout", server.send_timeout),
    ] {
        if value.is_zero() {
            at(
                &["server", key],
                format!("server.{key} must be more than 0"),
                Some("a connection needs some time to send or receive; the default is fine"),
            );
        }
    }
    let mut mirrored: std::collections::HashMap<&str, &str> = Default::default();
    for (name, repo) in &config.remotes {
        let n = name.as_str();
        if !repo.mirror_of.is_empty() && repo.package != super::PackageKind::Docker {
            at(
                &["remotes", n, "mirror_of"],
                format!(
                    "mirror_of is only valid for docker repositories ('{n}' is {})",
                    repo.package.as_str()
                ),
                None,
            );
        }
        for host in &repo.mirror_of {
            if let Err(message) = super::RegistryHost::parse(host) {
                at(
                    &["remotes", n, "mirror_of"],
                    message,
                    Some("use a host such as docker.io or ghcr.io"),
                );
            }
            if let Some(other) = mirrored.insert(host.as_str(), n) {
                at(
                    &["remotes", n, "mirror_of"],
                    format!("{host} is mirrored by both '{other}' and '{n}'"),
                    None,
                );
            }
        }
        if repo.files_url.is_some()
            && (repo.package != super::PackageKind::Pypi || repo.kind != RepoKind::Remote)
        {
            at(
                &["remotes", n, "files_url"],
                format!(
                    "files_url is only valid for pypi remotes ('{n}' is a {} {})",
                    repo.package.as_str(),
                    repo.kind.as_str()
                ),
                None,
            );
        }
        if !repo.allowed_redirect_hosts.is_empty() && repo.kind != RepoKind::Remote {
            at(
                &["remotes", n, "allowed_redirect_hosts"],
                format!(
                    "allowed_redirect_hosts is only valid for remote repositories ('{n}' is {})",
                    repo.kind.as_str()
                ),
                None,
            );
        }
        if repo.allow_overwrite && repo.kind != RepoKind::Local {
            at(
                &["remotes", n, "allow_overwrite"],
                format!(
                    "allow_overwrite is only valid for local repositories ('{n}' is {})",
                    repo.kind.as_str()
                ),
                None,
            );
        }
        match repo.kind {
            RepoKind::Remote => {
                if repo.base_url.is_none() {
                    at(
                        &["remotes", n],
                        format!("remote repository '{n}' has no base_url"),
                        Some("add base_url: https://upstream.example/path"),
                    );
                }
                if !repo.members.is_empty() {
                    at(
                        &["remotes", n, "members"],
                        format!("members is only valid for virtual repositories ('{n}' is remote)"),
                        None,
                    );
                }
            }
            RepoKind::Local => {
                if repo.base_url.is_some() {
                    at(
                        &["remotes", n, "base_url"],
                        format!("local repository '{n}' has no upstream; remove base_url"),
                        None,
                    );
                }
                if !repo.members.is_empty() {
                    at(
                        &["remotes", n, "members"],
                        format!("members is only valid for virtual repositories ('{n}' is local)"),
                        None,
                    );
                }
            }
            RepoKind::Virtual => {
                if repo.base_url.is_some() {
                    at(
                        &["remotes", n, "base_url"],
                        format!(
                            "virtual repository '{n}' is served by its members; remove base_url"
                        ),
                        None,
                    );
                }
                for (i, m) in repo.members.iter().enumerate() {
                    if repo.members[..i].contains(m) {
                        at(
                            &["remotes", n, "members"],
                            format!("virtual repository '{n}' lists member '{m}' twice"),
                            None,
                        );
                    }
                }
                if repo.members.is_empty() {
                    at(
                        &["remotes", n],
                        format!("virtual repository '{n}' has no members"),
                        Some("add members: [repo-a, repo-b]"),
                    );
                }
                for m in &repo.members {
                    match config.remotes.get(m) {
                        None => at(
                            &["remotes", n, "members"],
                            format!("virtual repository '{n}' lists unknown member '{m}'"),
                            None,
                        ),
                        Some(member) if member.package != repo.package => at(
                            &["remotes", n, "members"],
                            format!(
                                "member '{m}' has package {}, but '{n}' has package {}",
                                member.package.as_str(),
                                repo.package.as_str()
                            ),
                            None,
                        ),
                        Some(_) => {}
                    }
                }
                if let Some(cycle) = find_cycle(config, n) {
                    at(
                        &["remotes", n, "members"],
                        format!("virtual repositories form a cycle: {}", cycle.join(" -> ")),
                        None,
                    );
                }
            }
        }
    }
    out.extend(super::auth::check(config, text));
    out
}

fn find_cycle(config: &ConfigFile, start: &str) -> Option<Vec<String>> {
    fn walk(config: &ConfigFile, node: &str, stack: &mut Vec<String>) -> bool {
        if stack.iter().any(|s| s == node) {
            stack.push(node.to_string());
            return true;
        }
        let Some(repo) = config.remotes.get(node) else {
            return false;
        };
        stack.push(node.to_string());
        for m in &repo.members {
            if walk(config, m.as_str(), stack) {
                return true;
            }
        }
        stack.pop();
        false
    }
    let mut stack = Vec::new();
    if walk(config, start, &mut stack) && stack.first().map(String::as_str) == Some(start) {
        Some(stack)
    } else {
        None
    }
}

/// Best-effort position of a key path in block-style YAML: each key is looked for on a later
/// line, indented deeper than its parent. Falls back to the deepest key found.
pub(crate) fn locate(text: &str, keys: &[&str]) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let mut pos = (1, 1);
    let mut from = 0;
    let mut parent_indent: Option<usize> = None;
    for key in keys {
        let mut found = false;
        for (i, line) in lines.iter().enumerate().skip(from) {
            let indent = line.len() - line.trim_start().len();
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some(p) = parent_indent
                && indent <= p
            {
                break;
            }
            let bare = trimmed.trim_start_matches("- ");
            let matches = [
                format!("{key}:"),
                format!("\"{key}\":"),
                format!("'{key}':"),
            ]
            .iter()
            .any(|k| bare.starts_with(k.as_str()));
            if matches {
                pos = (i + 1, indent + 1 + (trimmed.len() - bare.len()));
                from = i + 1;
                parent_indent = Some(indent);
                found = true;
                break;
            }
        }
        if !found {
            break;
        }
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predecessor_style_config_loads() {
        let text = "remotes:\n  fedora:\n    type: remote\n    package: rpm\n    base_url: https://dl.example.org/fedora\n    include_patterns:\n      - '.*\\.rpm$'\n    cache:\n      index_ttl: 300\n";
        let c = load_str(text).unwrap();
        let super::super::RepoConfig::Remote(r) = &c.remotes["fedora"] else {
            panic!("fedora is a remote: {c:?}");
        };
        assert_eq!(r.cache.index_ttl.as_secs(), 300);
        assert_eq!(r.cache.file_ttl.as_secs(), 0);
        assert_eq!(r.include_patterns.len(), 1);
    }

    #[test]
    fn unknown_key_has_location() {
        let text =
            "remotes:\n  fedora:\n    type: remote\n    package: rpm\n    bse_url: https://x\n";
        let d = load_str(text).unwrap_err();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].line, 5, "{d:?}");
        assert!(d[0].message.contains("unknown field `bse_url`"), "{d:?}");
    }

    #[test]
    fn duplicate_key_reported_at_the_second_one() {
        let text = "remotes:\n  a:\n    type: remote\n    package: generic\n    base_url: http://x\n  a:\n    type: remote\n    package: rpm\n    base_url: http://y\n";
        let d = load_str(text).unwrap_err();
        assert_eq!((d[0].line, d[0].column), (6, 3), "{d:?}");
        assert!(d[0].message.contains("duplicate entry"), "{d:?}");
        let v = validate_str(text);
        assert_eq!((v[0].line, v[0].column), (6, 3), "{v:?}");
    }

    #[test]
    fn validation_fails_whenever_loading_fails() {
        for text in ["remotes: [1]\n", "remotes: 5\n", "server: []\n"] {
            assert!(load_str(text).is_err(), "{text:?}");
            let v = validate_str(text);
            assert!(
                v.iter().any(|d| d.severity == Severity::Error),
                "{text:?}: {v:?}"
            );
        }
    }

    #[test]
    fn connection_limits_must_be_positive() {
        let text = "server:\n  max_connections: 10\n  header_timeout: 0\n  send_timeout: 5s\n";
        let d = load_str(text).unwrap_err();
        assert_eq!((d[0].line, d[0].column), (3, 3), "{d:?}");
        assert!(
            d[0].message.contains("header_timeout must be more than 0"),
            "{d:?}"
        );
        let d = load_str("server:\n  max_connections: 0\n").unwrap_err();
        assert_eq!(d[0].line, 2, "{d:?}");
        let c = load_str("server:\n  max_connections: 10\n  send_timeout: 5s\n").unwrap();
        assert_eq!(c.server.max_connections.get(), 10);
        assert_eq!(c.server.send_timeout.as_secs(), 5);
        assert_eq!(c.server.header_timeout.as_secs(), 30);
    }

    #[test]
    fn bad_regex_has_location() {
        let text = "remotes:\n  a:\n    type: remote\n    package: generic\n    base_url: http://h\n    include_patterns:\n      - 'ok'\n      - '(?<=x)y'\n";
        let d = load_str(text).unwrap_err();
        assert_eq!(d[0].line, 8, "{d:?}");
        assert!(d[0].message.contains("invalid regex"), "{d:?}");
    }

    #[test]
    fn missing_base_url_reported_at_repo() {
        let text = "remotes:\n  ok:\n    type: remote\n    package: generic\n    base_url: http://h\n  broken:\n    type: remote\n    package: generic\n";
        let d = load_str(text).unwrap_err();
        assert_eq!((d[0].line, d[0].column), (6, 3), "{d:?}");
    }

    #[test]
    fn virtual_cycles_and_unknown_members() {
        let text = "remotes:\n  a:\n    type: virtual\n    package: generic\n    members: [b]\n  b:\n    type: virtual\n    package: generic\n    members: [a, nope]\n";
        let d = load_str(text).unwrap_err();
        let msgs: Vec<_> = d.iter().map(|d| d.message.as_str()).collect();
        assert!(msgs.iter().any(|m| m.contains("cycle")), "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.contains("unknown member 'nope'")),
            "{msgs:?}"
        );
    }

    #[test]
    fn virtual_and_local_field_rules() {
        let text = "remotes:\n  l:\n    type: local\n    package: generic\n    members: [v]\n  v:\n    type: virtual\n    package: generic\n    base_url: http://h\n    members: [l, l, v]\n  d:\n    type: remote\n    package: docker\n    base_url: http://h\n  w:\n    type: virtual\n    package: generic\n    members: [d]\n";
        let d = load_str(text).unwrap_err();
        let found: Vec<(usize, &str)> = d.iter().map(|d| (d.line, d.message.as_str())).collect();
        for (line, needle) in [
            (
                5,
                "members is only valid for virtual repositories ('l' is local)",
            ),
            (9, "remove base_url"),
            (10, "lists member 'l' twice"),
            (10, "form a cycle"),
            (
                18,
                "member 'd' has package docker, but 'w' has package generic",
            ),
        ] {
            assert!(
                found.iter().any(|(l, m)| *l == line && m.contains(needle)),
                "{needle}: {found:?}"
            );
        }
    }

    #[test]
    fn allowed_redirect_hosts_are_checked() {
        let text = "remotes:\n  a:\n    type: remote\n    package: generic\n    base_url: http://h\n    allowed_redirect_hosts:\n      - nexus.internal\n      - 10.0.0.5\n";
        let c = load_str(text).unwrap();
        let super::super::RepoConfig::Remote(r) = &c.remotes["a"] else {
            panic!("a is a remote: {c:?}");
        };
        assert_eq!(
            format!("{:?}", r.allowed_redirect_hosts),
            "[nexus.internal, 10.0.0.5]"
        );

        let text = "remotes:\n  a:\n    type: remote\n    package: generic\n    base_url: http://h\n    allowed_redirect_hosts:\n      - nexus.internal\n      - 'http://10.0.0.5:8081'\n";
        let d = load_str(text).unwrap_err();
        assert_eq!((d[0].line, d[0].column), (8, 10), "{d:?}");
        assert!(
            d[0].message.contains(
                "allowed_redirect_hosts entry \"http://10.0.0.5:8081\" is not a host name or IP address"
            ),
            "{d:?}"
        );

        let text = "remotes:\n  l:\n    type: local\n    package: generic\n    allowed_redirect_hosts: [x.internal]\n";
        let d = load_str(text).unwrap_err();
        assert_eq!((d[0].line, d[0].column), (5, 5), "{d:?}");
        assert!(
            d[0].message.contains(
                "allowed_redirect_hosts is only valid for remote repositories ('l' is local)"
            ),
            "{d:?}"
        );
        let v = validate_str(text);
        assert_eq!(v.len(), 1, "{v:?}");
    }

    #[test]
    fn files_url_belongs_to_pypi_remotes() {
        let text = "remotes:\n  p:\n    type: remote\n    package: pypi\n    base_url: https://pypi.org\n    files_url: https://files.pythonhosted.org\n";
        let config = load_str(text).unwrap();
        let crate::config::RepoConfig::Remote(r) = &config.remotes["p"] else {
            panic!("p is a remote");
        };
        assert_eq!(
            r.files_url.as_ref().unwrap().as_prefix(),
            "https://files.pythonhosted.org"
        );
        let text = "remotes:\n  g:\n    type: remote\n    package: generic\n    base_url: http://h\n    files_url: http://f\n";
        let d = load_str(text).unwrap_err();
        assert_eq!((d[0].line, d[0].column), (6, 5), "{d:?}");
        assert!(
            d[0].message
                .contains("files_url is only valid for pypi remotes ('g' is a generic remote)"),
            "{d:?}"
        );
    }

    #[test]
    fn empty_file_is_an_empty_config() {
        assert!(load_str("").unwrap().remotes.is_empty());
    }
}
