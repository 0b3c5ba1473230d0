//! Storage keys: the one check every backend (and the embedded metadata store, whose record
//! files mirror the keys) applies before a key becomes a path or an object name.

use std::fmt;

use crate::error::{Error, Result};

/// A key that is safe as a relative path: `/`-separated segments, none of them empty, `.`, `..`
/// or holding a `\` or `;`. So it has no leading or trailing `/` and cannot leave its root, and
/// the embedded metadata can name records with a `;` suffix that no key has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageKey<'a>(&'a str);

impl<'a> StorageKey<'a> {
    pub fn parse(key: &'a str) -> Result<StorageKey<'a>> {
        let safe = !key.is_empty()
            && key
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains(['\\', ';']));
        if safe {
            Ok(StorageKey(key))
        } else {
            Err(Error::BadPath(format!("unsafe storage key {key:?}")))
        }
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

impl fmt::Display for StorageKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::StorageKey;

    #[test]
    fn accepts_relative_keys_and_refuses_escapes() {
        for ok in [
            "r/a/b.bin",
            "r",
            "r/v2/x/manifests/sha256:ab",
            "r/.hidden/a..b",
        ] {
            assert_eq!(StorageKey::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "/",
            "/etc/passwd",
            "r/",
            "r//x",
            ".",
            "..",
            "../x",
            "r/../../x",
            "r/./x",
            "r\\..\\x",
            "r/a\\b",
            "r/a;meta.json",
        ] {
            assert!(StorageKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
