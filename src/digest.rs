//! Content digests: the [`Sha256Digest`] value that storage, metadata, repositories and the
//! formats pass between them, and the [`ContentHasher`] that computes it while bytes stream.
//! npm's tarball digests (an `integrity` of sha512, or a sha1 `shasum`) are [`Integrity`],
//! computed by an [`IntegrityHasher`] only for the bodies that carry one.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256, Sha512};

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

/// A digest a package index gives for a file besides sha256: npm's `dist.integrity`
/// (Subresource Integrity, `sha512-<base64>`) or `dist.shasum` (sha1, hex).
#[derive(Clone, PartialEq, Eq)]
pub struct Integrity {
    alg: IntegrityAlg,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntegrityAlg {
    Sha512,
    Sha1,
}

impl Integrity {
    /// The strongest digest of a `dist`: sha512 from `integrity`, else sha1 from
    /// `integrity` or `shasum`; `None` when neither gives a readable one.
    pub fn from_dist(integrity: Option<&str>, shasum: Option<&str>) -> Option<Integrity> {
        let mut sri: Vec<Integrity> = integrity
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|item| {
                let (alg, rest) = item.split_once('-')?;
                let b64 = rest.split('?').next()?;
                let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
                let alg = match (alg, bytes.len()) {
                    ("sha512", 64) => IntegrityAlg::Sha512,
                    ("sha1", 20) => IntegrityAlg::Sha1,
                    _ => return None,
                };
                Some(Integrity { alg, bytes })
            })
            .collect();
        sri.sort_by_key(|i| i.alg != IntegrityAlg::Sha512);
        sri.into_iter().next().or_else(|| {
            let bytes = hex::decode(shasum?.trim()).ok()?;
            (bytes.len() == 20).then_some(Integrity {
                alg: IntegrityAlg::Sha1,
                bytes,
            })
        })
    }

    /// A hasher of this digest's algorithm.
    pub fn hasher(&self) -> IntegrityHasher {
        match self.alg {
            IntegrityAlg::Sha512 => IntegrityHasher::Sha512(Box::default()),
            IntegrityAlg::Sha1 => IntegrityHasher::Sha1(Box::default()),
        }
    }
}

/// Written as Subresource Integrity: `sha512-<base64>`, `sha1-<base64>`.
impl fmt::Display for Integrity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let alg = match self.alg {
            IntegrityAlg::Sha512 => "sha512",
            IntegrityAlg::Sha1 => "sha1",
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.bytes);
        write!(f, "{alg}-{b64}")
    }
}

impl fmt::Debug for Integrity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Computes an [`Integrity`] while bytes stream.
#[derive(Clone)]
pub enum IntegrityHasher {
    Sha512(Box<Sha512>),
    Sha1(Box<sha1::Sha1>),
}

impl IntegrityHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            IntegrityHasher::Sha512(h) => h.update(bytes),
            IntegrityHasher::Sha1(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Integrity {
        match self {
            IntegrityHasher::Sha512(h) => Integrity {
                alg: IntegrityAlg::Sha512,
                bytes: h.finalize().to_vec(),
            },
            IntegrityHasher::Sha1(h) => Integrity {
                alg: IntegrityAlg::Sha1,
                bytes: h.finalize().to_vec(),
            },
        }
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
    fn integrity_prefers_sha512_and_checks_what_it_reads() {
        let body = b"hello";
        let mut h512 = Integrity::from_dist(Some("sha512-AAAA"), None);
        assert!(h512.is_none(), "a digest of the wrong length is not one");
        let sha512 = {
            let mut h = IntegrityHasher::Sha512(Box::default());
            h.update(body);
            h.finish()
        };
        let sha1_hex = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
        h512 = Integrity::from_dist(
            Some(&format!("sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00= {sha512}")),
            Some(sha1_hex),
        );
        assert_eq!(h512.as_ref(), Some(&sha512));
        let mut h = h512.unwrap().hasher();
        h.update(body);
        assert_eq!(h.finish(), sha512);
        let sha1 = Integrity::from_dist(None, Some(sha1_hex)).unwrap();
        assert_eq!(sha1.to_string(), "sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00=");
        let mut h = sha1.hasher();
        h.update(body);
        assert_eq!(h.finish(), sha1);
        assert!(Integrity::from_dist(None, Some("xyz")).is_none());
    }

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
