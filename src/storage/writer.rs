//! Writing one object: bytes go to the backend's temp object (or upload) and are counted and
//! hashed on the way; [`StorageWriter::commit_verified`] checks them against what the caller
//! expects before the object becomes visible. A writer dropped or refused leaves nothing.

use std::io;

use bytes::Bytes;

use super::fs::FsWriter;
use super::s3::S3Writer;
use crate::digest::{ContentDigests, ContentHasher, Sha256Digest};
use crate::error::{Error, Result};

/// What the bytes of an object must be. Built with [`Expect::size`] and [`Expect::sha256`],
/// so that a further digest can be added without touching callers.
#[derive(Debug, Default, Clone, Copy)]
pub struct Expect<'a> {
    size: Option<u64>,
    sha256: Option<&'a Sha256Digest>,
}

impl<'a> Expect<'a> {
    /// Exactly this many bytes, when known (an upstream's `Content-Length`).
    pub fn size(self, size: Option<u64>) -> Expect<'a> {
        Expect { size, ..self }
    }

    /// Bytes with this sha256, when known.
    pub fn sha256(self, sha256: Option<&'a Sha256Digest>) -> Expect<'a> {
        Expect { sha256, ..self }
    }

    /// Whether `received` bytes so far can still end as expected: for refusing an overlong
    /// body while it streams, before it is written.
    pub fn check_partial(&self, received: u64) -> Result<(), Mismatch> {
        match self.size {
            Some(expected) if received > expected => Err(Mismatch::Longer { expected }),
            _ => Ok(()),
        }
    }

    /// Whether a whole body matches: its length first, then its digest.
    pub fn check(&self, got: &ContentDigests) -> Result<(), Mismatch> {
        self.check_partial(got.size)?;
        if let Some(expected) = self.size
            && got.size < expected
        {
            return Err(Mismatch::Shorter {
                expected,
                actual: got.size,
            });
        }
        if let Some(expected) = self.sha256
            && *expected != got.sha256
        {
            return Err(Mismatch::Sha256 {
                expected: *expected,
                actual: got.sha256,
            });
        }
        Ok(())
    }
}

/// How written bytes differ from what was expected. The messages are those of an upstream body
/// (the only writes with an expected size); as an [`Error`] a mismatch is `Error::Integrity`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("upstream sent more than its Content-Length of {expected}")]
    Longer { expected: u64 },
    #[error("upstream body ended after {actual} of {expected} bytes")]
    Shorter { expected: u64, actual: u64 },
    #[error("content digest is {actual}, expected {expected}")]
    Sha256 {
        expected: Sha256Digest,
        actual: Sha256Digest,
    },
}

impl From<Mismatch> for Error {
    fn from(m: Mismatch) -> Error {
        Error::Integrity(m.to_string())
    }
}

/// Why a verified commit did not happen: the bytes were refused (and discarded), or storage
/// failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
    #[error(transparent)]
    Storage(#[from] Error),
}

impl From<CommitError> for Error {
    fn from(e: CommitError) -> Error {
        match e {
            CommitError::Mismatch(m) => m.into(),
            CommitError::Storage(e) => e,
        }
    }
}

pub(super) enum BackendWriter {
    Fs(FsWriter),
    S3(S3Writer),
}

/// An object being written. Dropping it without a commit discards what was written.
pub struct StorageWriter {
    backend: BackendWriter,
    hasher: ContentHasher,
}

impl StorageWriter {
    pub(super) fn new(backend: BackendWriter) -> StorageWriter {
        StorageWriter {
            backend,
            hasher: ContentHasher::default(),
        }
    }

    /// Appends bytes, counting and hashing them.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.hasher.update(&chunk);
        match &mut self.backend {
            BackendWriter::Fs(w) => w.write(chunk).await,
            BackendWriter::S3(w) => w.write(chunk).await,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.hasher.size()
    }

    /// Size and digests of the bytes written so far (for a check of the caller's own before
    /// the commit).
    pub fn digests(&self) -> ContentDigests {
        self.hasher.digests()
    }

    /// Checks the bytes against `expect` and, when they match, makes the object visible under
    /// its key, atomically replacing any previous one. Returns the size and digests committed.
    /// On a mismatch nothing becomes visible and the temp object is removed.
    pub async fn commit_verified(self, expect: Expect<'_>) -> Result<ContentDigests, CommitError> {
        let got = self.hasher.digests();
        // On a mismatch `self` is dropped here, which discards the temp object.
        expect.check(&got)?;
        match self.backend {
            BackendWriter::Fs(w) => w.commit().await?,
            BackendWriter::S3(w) => w.commit().await?,
        }
        Ok(got)
    }

    /// Makes the object visible without checking it against anything.
    pub async fn commit(self) -> Result<ContentDigests> {
        Ok(self.commit_verified(Expect::default()).await?)
    }

    /// A read handle on the bytes written so far, for clients that follow a fill while it runs.
    pub fn spool_reader(&self) -> io::Result<std::fs::File> {
        match &self.backend {
            BackendWriter::Fs(w) => w.spool_reader(),
            BackendWriter::S3(w) => w.spool_reader(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FsStorage, Storage, TEMP_DIR};

    async fn written(dir: &std::path::Path, key: &str, chunks: &[&'static [u8]]) -> StorageWriter {
        let storage = Storage::Fs(FsStorage::open(dir).await.unwrap());
        let mut w = storage.writer(key).await.unwrap();
        for c in chunks {
            w.write(Bytes::from_static(c)).await.unwrap();
        }
        w
    }

    fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        crate::storage::walk(dir, &mut |p, _| out.push(p.to_path_buf())).unwrap();
        out
    }

    #[tokio::test]
    async fn a_matching_body_is_committed_with_its_size_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let want = Sha256Digest::of(b"hello world");
        let w = written(dir.path(), "r/a", &[b"hello ", b"world"]).await;
        assert_eq!(w.written(), 11);
        let got = w
            .commit_verified(Expect::default().size(Some(11)).sha256(Some(&want)))
            .await
            .unwrap();
        assert_eq!((got.size, got.sha256), (11, want));
        assert_eq!(files_under(&dir.path().join("objects")).len(), 1);
        assert!(files_under(&dir.path().join(TEMP_DIR)).is_empty());
    }

    #[tokio::test]
    async fn a_mismatch_is_refused_and_leaves_no_object_or_temp_file() {
        let other = Sha256Digest::of(b"something else");
        let cases: [(Expect<'_>, &str); 3] = [
            (
                Expect::default().sha256(Some(&other)),
                "content digest is sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9, expected sha256:",
            ),
            (
                Expect::default().size(Some(12)),
                "upstream body ended after 11 of 12 bytes",
            ),
            (
                Expect::default().size(Some(10)),
                "upstream sent more than its Content-Length of 10",
            ),
        ];
        for (expect, message) in cases {
            let dir = tempfile::tempdir().unwrap();
            let w = written(dir.path(), "r/a", &[b"hello ", b"world"]).await;
            let err = w.commit_verified(expect).await.unwrap_err();
            assert!(matches!(err, CommitError::Mismatch(_)), "{err:?}");
            let err = Error::from(err);
            assert!(
                matches!(&err, Error::Integrity(m) if m.starts_with(message)),
                "{err}"
            );
            assert!(files_under(dir.path()).is_empty(), "{expect:?}");
        }
    }

    #[test]
    fn a_body_longer_than_expected_is_refused_while_it_streams() {
        let expect = Expect::default().size(Some(3));
        assert!(expect.check_partial(3).is_ok());
        assert_eq!(
            expect.check_partial(4),
            Err(Mismatch::Longer { expected: 3 })
        );
        assert!(Expect::default().check_partial(u64::MAX).is_ok());
    }
}
