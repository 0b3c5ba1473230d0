//! Who may do what: the API tokens of `auth:`, recognised in constant time, and the role each
//! one holds on a repository (`admin` ⊃ `write` ⊃ `read`). It knows nothing of HTTP:
//! `server::auth` turns the `Authorization` header into [`Credentials`] and the core errors
//! returned here into 401 and 403 responses.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::config::Role;
use crate::config::{AuthConfig, TokenConfig};
use crate::error::{Error, Result};

/// Credentials a client presented.
pub enum Credentials {
    /// `Authorization: Bearer SECRET`.
    Bearer(String),
    /// `Authorization: Basic base64(NAME:SECRET)`.
    Basic { name: String, secret: String },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Bearer(_) => f.write_str("Bearer(***)"),
            Credentials::Basic { name, .. } => write!(f, "Basic({name}:***)"),
        }
    }
}

/// A client that presented a valid token.
#[derive(Debug, Clone)]
pub struct Principal {
    name: String,
    /// The highest role per repository name (or `*`).
    roles: BTreeMap<String, Role>,
}

impl Principal {
    /// The token's name (safe to log).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The highest role held on `repo` (its own and `*`), or on `*` alone when `repo` is
    /// `None` (actions on every repository).
    pub fn role_on(&self, repo: Option<&str>) -> Option<Role> {
        let own = repo.and_then(|r| self.roles.get(r).copied());
        own.max(self.roles.get("*").copied())
    }
}

struct Token {
    /// SHA-256 of the secret: the secret itself is not kept, and every comparison is between
    /// two 32-byte values, so neither its length nor its bytes show in the timing.
    digest: [u8; 32],
    principal: Arc<Principal>,
}

/// The access policy of one configuration.
pub struct Policy {
    anonymous_read: bool,
    tokens: Vec<Token>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("anonymous_read", &self.anonymous_read)
            .field(
                "tokens",
                &self
                    .tokens
                    .iter()
                    .map(|t| t.principal.name())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Policy {
    pub fn from_config(config: &AuthConfig) -> Policy {
        Policy {
            anonymous_read: config.anonymous_read,
            tokens: config.tokens.iter().map(token).collect(),
        }
    }

    /// True when tokens are configured. Without any, credentials are not looked at.
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    pub fn anonymous_read(&self) -> bool {
        self.anonymous_read
    }

    /// The token the credentials name. Wrong credentials are an error, never anonymous.
    pub fn authenticate(&self, credentials: &Credentials) -> Result<Arc<Principal>> {
        let (name, secret) = match credentials {
            Credentials::Bearer(s) => (None, s.as_str()),
            Credentials::Basic { name, secret } => (Some(name.as_str()), secret.as_str()),
        };
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        // Every token is compared, whichever matches.
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.digest.ct_eq(&presented)) {
                found = Some(&t.principal);
            }
        }
        match found {
            Some(p) if name.is_none_or(|n| n == p.name()) => Ok(p.clone()),
            _ => Err(Error::Unauthenticated("invalid credentials".into())),
        }
    }

    /// Whether `who` (`None`: anonymous) may act with `need` on `repo` (`None`: on every
    /// repository, as a flush without `remote` does).
    pub fn authorize(&self, who: Option<&Principal>, repo: Option<&str>, need: Role) -> Result<()> {
        let Some(p) = who else {
            if need == Role::Read && self.anonymous_read {
                return Ok(());
            }
            return Err(Error::Unauthenticated(match need {
                Role::Read => "authentication required: anonymous reads are disabled".into(),
                _ => format!("authentication required: {} needs a token", action(need)),
            }));
        };
        if p.role_on(repo) >= Some(need) {
            return Ok(());
        }
        let on = match repo {
            Some(r) => format!("'{r}'"),
            None => "every repository".to_string(),
        };
        Err(Error::AccessDenied(format!(
            "token '{}' has no {} role on {on}",
            p.name(),
            need.as_str()
        )))
    }

    /// For requests whose repository is not known yet: anonymous clients are refused at once
    /// when anonymous reads are disabled.
    pub fn require_identity(&self, who: Option<&Principal>) -> Result<()> {
        if who.is_none() && !self.anonymous_read {
            return self.authorize(None, None, Role::Read);
        }
        Ok(())
    }
}

fn action(role: Role) -> &'static str {
    match role {
        Role::Read => "reading",
        Role::Write => "uploading or deleting",
        Role::Admin => "this administrative action",
    }
}

fn token(t: &TokenConfig) -> Token {
    let mut roles = BTreeMap::new();
    for (repo, list) in &t.roles {
        if let Some(top) = list.iter().copied().max() {
            roles.insert(repo.clone(), top);
        }
    }
    Token {
        digest: Sha256::digest(t.secret.expose().as_bytes()).into(),
        principal: Arc::new(Principal {
            name: t.name.as_str().to_string(),
            roles,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(anonymous_read: bool) -> Policy {
        let text = format!(
            "auth:\n  anonymous_read: {anonymous_read}\n  tokens:\n    - name: ci\n      secret: s3cret-ci\n      roles:\n        uploads: [write]\n        \"*\": [read]\n    - name: ops\n      secret: s3cret-ops\n      roles:\n        \"*\": [admin]\nremotes:\n  uploads:\n    type: local\n    package: generic\n"
        );
        Policy::from_config(&crate::config::load_str(&text).unwrap().auth)
    }

    #[test]
    fn roles_imply_lower_roles() {
        let p = policy(true);
        let ci = p
            .authenticate(&Credentials::Bearer("s3cret-ci".into()))
            .unwrap();
        assert!(p.authorize(Some(&ci), Some("uploads"), Role::Write).is_ok());
        assert!(p.authorize(Some(&ci), Some("uploads"), Role::Read).is_ok());
        assert!(p.authorize(Some(&ci), Some("other"), Role::Read).is_ok());
        assert!(matches!(
            p.authorize(Some(&ci), Some("other"), Role::Write),
            Err(Error::AccessDenied(_))
        ));
        assert!(p.authorize(Some(&ci), None, Role::Admin).is_err());
        let ops = p
            .authenticate(&Credentials::Basic {
                name: "ops".into(),
                secret: "s3cret-ops".into(),
            })
            .unwrap();
        assert!(p.authorize(Some(&ops), None, Role::Admin).is_ok());
        assert!(
            p.authorize(Some(&ops), Some("uploads"), Role::Write)
                .is_ok()
        );
    }

    #[test]
    fn wrong_credentials_and_anonymous_access() {
        let p = policy(false);
        for bad in [
            Credentials::Bearer("nope".into()),
            Credentials::Bearer("".into()),
            Credentials::Basic {
                name: "ci".into(),
                secret: "s3cret-ops".into(),
            },
        ] {
            assert!(matches!(
                p.authenticate(&bad),
                Err(Error::Unauthenticated(_))
            ));
        }
        assert!(matches!(
            p.authorize(None, Some("uploads"), Role::Read),
            Err(Error::Unauthenticated(_))
        ));
        let open = policy(true);
        assert!(open.authorize(None, Some("uploads"), Role::Read).is_ok());
        assert!(open.authorize(None, Some("uploads"), Role::Write).is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let p = policy(true);
        let text = format!(
            "{p:?} {:?}",
            Credentials::Basic {
                name: "ci".into(),
                secret: "s3cret-ci".into()
            }
        );
        assert!(!text.contains("s3cret"), "{text}");
    }
}
