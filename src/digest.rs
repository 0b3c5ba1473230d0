//! Content digests: the [`Sha256Digest`] value that storage, metadata, repositories and the
//! formats pass between them, and the [`ContentHasher`] that computes it while bytes stream.
//! A second algorithm (sha512, for npm's `integrity`) is one more digest type here and one more
//! field of the hasher's [`ContentDigests`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// The prefix of a digest written with its algorithm.
const SHA256_PREFIX: &str = "sha256:";

/// A SHA-256 content digest. Parsed from `sha256:<64 lower-case hex>` or the bare hex; shown
/// as `sha256:<hex>`. Serialised as the bare hex (the form metadata records and API listings
/// carry), and read back from either form.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest([u8; 32]);

/// Why a string is not a sha256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sha256 digest {0:?}: expected 64 lower-case hexadecimal digits")]
pub struct InvalidDigest(String);

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Sha256Digest {
        Sha256Digest(Sha256::digest(bytes).into())
    }

    /// `sha256:<hex>` or `<hex>`, the hex being 64 lower-case digits.
    pub fn parse(s: &str) -> Result<Sha256Digest, InvalidDigest> {
        match s.strip_prefix(SHA256_PREFIX) {
            Some(hex) => Sha256Digest::from_hex(hex).map_err(|_| InvalidDigest(s.to_string())),
            None => Sha256Digest::from_hex(s),
        }
    }

    /// The bare form only: 64 lower-case hex digits.
    pub fn from_hex(hex: &str) -> Result<Sha256Digest, InvalidDigest> {
        let lower = hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
        let mut out = [0u8; 32];
        if hex.len() != 64 || !lower || hex::decode_to_slice(hex, &mut out).is_err() {
            return Err(InvalidDigest(hex.to_string()));
        }
        Ok(Sha256Digest(out))
    }

    /// The 64 lower-case hex digits, without the algorithm.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<Sha256> for Sha256Digest {
    fn from(hasher: Sha256) -> Sha256Digest {
        Sha256Digest(hasher.finalize().into())
    }
}

impl FromStr for Sha256Digest {
    type Err = InvalidDigest;
    fn from_str(s: &str) -> Result<Sha256Digest, InvalidDigest> {
        Sha256Digest::parse(s)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHA256_PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Sha256Digest, D::Error> {
        let raw = String::deserialize(d)?;
        Sha256Digest::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Counts and hashes bytes as they pass.
#[derive(Clone, Default)]
pub struct ContentHasher {
    size: u64,
    sha256: Sha256,
}

/// What a [`ContentHasher`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentDigests {
    pub size: u64,
    pub sha256: Sha256Digest,
}

impl ContentHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        self.sha256.update(bytes);
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The size and digests of the bytes seen so far; the hasher may go on.
    pub fn digests(&self) -> ContentDigests {
        ContentDigests {
            size: self.size,
            sha256: self.sha256.clone().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn parses_both_forms_and_shows_the_prefixed_one() {
        let bare = Sha256Digest::parse(HELLO).unwrap();
        let prefixed: Sha256Digest = format!("sha256:{HELLO}").parse().unwrap();
        assert_eq!(bare, prefixed);
        assert_eq!(bare, Sha256Digest::of(b"hello"));
        assert_eq!(bare.to_string(), format!("sha256:{HELLO}"));
        assert_eq!(bare.hex(), HELLO);
        assert!(Sha256Digest::from_hex(&format!("sha256:{HELLO}")).is_err());
    }

    #[test]
    fn refuses_bad_input() {
        let upper = HELLO.to_uppercase();
        let short = &HELLO[..63];
        let long = format!("{HELLO}0");
        let other_algo = format!("sha512:{HELLO}");
        let not_hex = format!("{}g", &HELLO[..63]);
        let spaced = format!(" {HELLO}");
        let double = format!("sha256:sha256:{HELLO}");
        for bad in [
            "",
            "sha256:",
            upper.as_str(),
            short,
            &long,
            &other_algo,
            &not_hex,
            &spaced,
            &double,
        ] {
            assert!(Sha256Digest::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serde_uses_the_bare_hex_and_reads_either_form() {
        let d = Sha256Digest::of(b"hello");
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{HELLO}\""));
        let back: Sha256Digest = serde_json::from_str(&format!("\"sha256:{HELLO}\"")).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Sha256Digest>("\"ab\"").is_err());
    }

    #[test]
    fn hasher_counts_and_hashes_across_chunks() {
        let mut h = ContentHasher::default();
        h.update(b"hel");
        assert_eq!(h.size(), 3);
        h.update(b"lo");
        let got = h.digests();
        assert_eq!(got.size, 5);
        assert_eq!(got.sha256, Sha256Digest::of(b"hello"));
    }
}
