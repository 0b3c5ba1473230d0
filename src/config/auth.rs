//! The `auth:` section: API tokens (a name, a secret, roles per repository) and whether
//! clients without credentials may read. The checks that need the rest of the file (roles on
//! configured repositories, unique names and secrets) report `file:line:col` like the others.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::load::{Diagnostic, Severity, locate};
use super::{ConfigFile, Secret};

/// `auth:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether clients without credentials may read (GET/HEAD) every repository.
    #[serde(default = "default_anonymous_read")]
    pub anonymous_read: bool,
    /// API tokens, accepted as `Authorization: Bearer SECRET` or Basic `NAME:SECRET`.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            anonymous_read: default_anonymous_read(),
            tokens: Vec::new(),
        }
    }
}

fn default_anonymous_read() -> bool {
    true
}

/// One API token under `auth.tokens`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it; the user name of Basic auth, and the name logged for its requests.
    pub name: TokenName,
    /// The token itself; use `${VAR}` to keep it out of the file. Never logged or printed.
    pub secret: Secret,
    /// Roles by repository name, or `"*"` for every repository.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<Role>>,
}

/// What a token may do on a repository. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// GET and HEAD.
    Read,
    /// Uploads and deletes (and read).
    Write,
    /// Flush and other administrative endpoints (and write and read).
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// A token name: 1 to 64 letters, digits, `.`, `_`, `-` or `@`. No `:`, so that Basic
/// `name:secret` splits unambiguously.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct TokenName(String);

impl TokenName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
        if ok {
            Ok(TokenName(raw.to_string()))
        } else {
            Err(format!(
                "invalid token name {raw:?}: use 1 to 64 letters, digits, '.', '_', '-' or '@'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TokenName {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        TokenName::parse(&raw)
    }
}

impl From<TokenName> for String {
    fn from(name: TokenName) -> String {
        name.0
    }
}

impl fmt::Debug for TokenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for TokenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks of `auth:` that involve other fields: unique token names and secrets, non-empty
/// secrets, and roles only on `*` or configured repositories.
pub(super) fn check(config: &ConfigFile, text: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut report = |severity, (line, column): (usize, usize), message: String| {
        out.push(Diagnostic {
            severity,
            line,
            column,
            message,
            hint: None,
        });
    };
    let tokens = &config.auth.tokens;
    for (i, token) in tokens.iter().enumerate() {
        let name = token.name.as_str();
        let nth = tokens[..i].iter().filter(|t| t.name == token.name).count();
        let at = token_position(text, name, nth);
        if tokens[..i].iter().any(|t| t.name == token.name) {
            report(
                Severity::Error,
                at,
                format!("token name '{name}' is used twice"),
            );
        }
        if token.secret.expose().is_empty() {
            // validate-config (lenient) warns: the variable may be set where it runs.
            let severity = if super::values::lenient_env() {
                Severity::Warning
            } else {
                Severity::Error
            };
            report(
                severity,
                at,
                format!(
                    "token '{name}' has an empty secret; serve refuses to start until it is set"
                ),
            );
        }
        if !token.secret.expose().is_empty()
            && let Some(other) = tokens[..i]
                .iter()
                .find(|t| t.secret.expose() == token.secret.expose())
        {
            report(
                Severity::Error,
                at,
                format!(
                    "tokens '{}' and '{name}' have the same secret",
                    other.name.as_str()
                ),
            );
        }
        for repo in token.roles.keys() {
            if repo != "*" && !config.remotes.contains_key(repo.as_str()) {
                report(
                    Severity::Error,
                    role_position(text, at, repo),
                    format!("token '{name}' has roles on unknown repository '{repo}'"),
                );
            }
        }
    }
    out
}

/// The `nth` (0-based) `name: NAME` line of the tokens, or the `tokens:` key.
fn token_position(text: &str, name: &str, nth: usize) -> (usize, usize) {
    let base = locate(text, &["auth", "tokens"]);
    text.lines()
        .enumerate()
        .skip(base.0)
        .filter_map(|(i, line)| {
            let bare = line.trim_start().trim_start_matches("- ").trim_start();
            let value = bare.strip_prefix("name:")?;
            (value.trim().trim_matches(['"', '\'']) == name)
                .then(|| (i + 1, line.len() - bare.len() + 1))
        })
        .nth(nth)
        .unwrap_or(base)
}

/// The `REPO:` key of a token's roles, searched from the token's line.
fn role_position(text: &str, token: (usize, usize), repo: &str) -> (usize, usize) {
    let keys = [
        format!("{repo}:"),
        format!("\"{repo}\":"),
        format!("'{repo}':"),
    ];
    for (i, line) in text.lines().enumerate().skip(token.0) {
        let bare = line.trim_start().trim_start_matches("- ").trim_start();
        if keys.iter().any(|k| bare.starts_with(k.as_str())) {
            return (i + 1, line.len() - bare.len() + 1);
        }
        if bare.starts_with("name:") {
            break;
        }
    }
    token
}

#[cfg(test)]
mod tests {
    use super::super::{load_str, validate_str};

    const REPOS: &str = "remotes:\n  uploads:\n    type: local\n    package: generic\n";

    #[test]
    fn roles_and_anonymous_read_load() {
        let text = format!(
            "auth:\n  tokens:\n    - name: ci\n      secret: s1\n      roles:\n        uploads: [read, write]\n        \"*\": [read]\n{REPOS}"
        );
        let c = load_str(&text).unwrap();
        assert!(c.auth.anonymous_read);
        assert_eq!(c.auth.tokens[0].roles["uploads"].len(), 2);
        assert!(!format!("{c:?}").contains("s1\""));
    }

    #[test]
    fn bad_tokens_are_reported_at_their_line() {
        let text = format!(
            "auth:\n  tokens:\n    - name: ci\n      secret: same\n      roles:\n        nope: [read]\n    - name: ci\n      secret: same\n    - name: e\n      secret: ''\n{REPOS}  r:\n    type: remote\n    package: generic\n    base_url: http://h\n    allow_overwrite: true\n"
        );
        let d = load_str(&text).unwrap_err();
        let found: Vec<(usize, &str)> = d.iter().map(|d| (d.line, d.message.as_str())).collect();
        let has =
            |line: usize, needle: &str| found.iter().any(|(l, m)| *l == line && m.contains(needle));
        assert!(has(6, "unknown repository 'nope'"), "{found:?}");
        assert!(has(7, "used twice"), "{found:?}");
        assert!(has(7, "same secret"), "{found:?}");
        assert!(has(9, "empty secret"), "{found:?}");
        assert!(has(19, "allow_overwrite is only valid"), "{found:?}");
    }

    #[test]
    fn bad_values_have_locations() {
        let text = format!(
            "auth:\n  tokens:\n    - name: ci\n      secret: s\n      roles:\n        \"*\": [sudo]\n{REPOS}"
        );
        let d = load_str(&text).unwrap_err();
        assert_eq!(d[0].line, 6, "{d:?}");
        assert!(d[0].message.contains("unknown variant `sudo`"), "{d:?}");
        let d = load_str("auth:\n  tokens:\n    - name: 'a:b'\n      secret: s\n").unwrap_err();
        assert!(d[0].message.contains("invalid token name"), "{d:?}");
    }

    #[test]
    fn unset_secret_is_only_a_warning_in_validate_config() {
        let text = format!(
            "auth:\n  tokens:\n    - name: ci\n      secret: ${{ARTIFACTAPI_TEST_UNSET_TOKEN}}\n{REPOS}"
        );
        let d = validate_str(&text);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().all(|d| d.severity == super::Severity::Warning));
        assert!(load_str(&text).is_err());
    }
}
