//! The `auth:` section: API tokens (a name, a secret, roles per repository) and whether
//! clients without credentials may read. The checks that need the rest of the file (roles on
//! configured repositories, unique names and secrets) report `file:line:col` like the others.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::load::{Diagnostic, Severity, locate};
use super::{Config, Secret};

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
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
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

impl<'de> Deserialize<'de> for TokenName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        TokenName::parse(&raw).map_err(de::Error::custom)
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
pub(super) fn check(config: &Config, text: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut error = |(line, column): (usize, usize), message: String| {
        out.push(Diagnostic {
            severity: Severity::Error,
            line,
            column,
            message,
            hint: None,
        });
    };
    let tokens = &config.auth.tokens;
    for (i, token) in tokens.iter().enumerate() {
        let name = token.name.as_str();
        let at = token_position(text, name);
        if tokens[..i].iter().any(|t| t.name == token.name) {
            error(at, format!("token name '{name}' is used twice"));
        }
        // An unset ${VAR} is already reported as a warning by validate-config.
        if token.secret.expose().is_empty() && !super::values::lenient_env() {
            error(at, format!("token '{name}' has an empty secret"));
        }
        if !token.secret.expose().is_empty()
            && let Some(other) = tokens[..i]
                .iter()
                .find(|t| t.secret.expose() == token.secret.expose())
        {
            error(
                at,
                format!(
                    "tokens '{}' and '{name}' have the same secret",
                    other.name.as_str()
                ),
            );
        }
        for repo in token.roles.keys() {
            if repo != "*" && !config.remotes.contains_key(repo.as_str()) {
                error(
                    role_position(text, at, repo),
                    format!("token '{name}' has roles on unknown repository '{repo}'"),
                );
            }
        }
    }
    out
}

/// The `name: NAME` line of a token, or the `tokens:` key.
fn token_position(text: &str, name: &str) -> (usize, usize) {
    let base = locate(text, &["auth", "tokens"]);
    for (i, line) in text.lines().enumerate().skip(base.0) {
        let bare = line.trim_start().trim_start_matches("- ").trim_start();
        let Some(value) = bare.strip_prefix("name:") else {
            continue;
        };
        if value.trim().trim_matches(['"', '\'']) == name {
            return (i + 1, line.len() - bare.len() + 1);
        }
    }
    base
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
