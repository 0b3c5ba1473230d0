//! Object storage: a streaming get/put/head/delete/list interface over the configured backend.
//! Objects are addressed by readable keys `{repository}/{path}` (checked by [`StorageKey`]); a
//! write is counted and hashed as it goes, invisible until it is committed whole and matches
//! what the caller expects, and a writer dropped before commit leaves nothing behind.

mod files;
mod fs;
mod key;
mod s3;
mod writer;

use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

use crate::config::{Config, StorageConfig};
use crate::error::Result;

pub use files::{TEMP_DIR, TEMP_PREFIX};
pub(crate) use files::{is_absent, read_cached, sweep_dir, walk};
pub use fs::{FsStorage, FsWriter};
pub use key::StorageKey;
pub use s3::{S3Storage, S3Writer};
use writer::BackendWriter;
pub use writer::{CommitError, Expect, Mismatch, StorageWriter};

/// A stream of object bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A byte range as a client asked for it (one range of an HTTP `Range` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-`
    From(u64),
    /// `bytes=a-b` (inclusive)
    FromTo(u64, u64),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The inclusive `(first, last)` byte positions within an object of `size` bytes, or `None`
    /// when the range cannot be satisfied.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        if size == 0 {
            return None;
        }
        match self {
            ByteRange::From(a) if a < size => Some((a, size - 1)),
            ByteRange::FromTo(a, b) if a <= b && a < size => Some((a, b.min(size - 1))),
            ByteRange::Suffix(n) if n > 0 => Some((size.saturating_sub(n), size - 1)),
            _ => None,
        }
    }
}

/// An object opened for reading.
pub struct ObjectRead {
    /// Size of the whole object.
    pub size: u64,
    /// The inclusive range served, when one was asked for.
    pub range: Option<(u64, u64)>,
    /// The bytes (the range, or the whole object).
    pub body: ByteStream,
}

/// One stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    pub key: String,
    pub size: u64,
}

/// One entry of a directory listing: a file with its size, or a subdirectory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    /// `None` for a subdirectory.
    pub size: Option<u64>,
}

impl DirEntry {
    /// Where a listing that stops after this entry goes on: the name, with a `/` for a
    /// subdirectory. Listings are in this order (bytewise), as S3 lists keys.
    pub fn cursor(&self) -> String {
        match self.size {
            Some(_) => self.name.clone(),
            None => format!("{}/", self.name),
        }
    }
}

/// A page of a directory listing, and the cursor of the next one.
#[derive(Debug, Default)]
pub struct DirPage {
    pub entries: Vec<DirEntry>,
    pub next: Option<String>,
}

impl DirPage {
    /// The page of `limit` entries after `after` out of `all` (in any order).
    fn of(mut all: Vec<DirEntry>, after: Option<&str>, limit: usize) -> DirPage {
        let mut keyed: Vec<(String, DirEntry)> = all.drain(..).map(|e| (e.cursor(), e)).collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let mut entries: Vec<DirEntry> = keyed
            .into_iter()
            .filter(|(c, _)| after.is_none_or(|a| c.as_str() > a))
            .take(limit + 1)
            .map(|(_, e)| e)
            .collect();
        let next = (entries.len() > limit).then(|| {
            entries.truncate(limit);
            entries.last().map(DirEntry::cursor).unwrap_or_default()
        });
        DirPage { entries, next }
    }
}

/// The configured storage backend.
pub enum Storage {
    Fs(FsStorage),
    S3(S3Storage),
}

impl Storage {
    /// Opens the backend the config names, creating what it needs.
    pub async fn from_config(config: &Config) -> Result<Storage> {
        match &config.storage {
            StorageConfig::Filesystem { path } => Ok(Storage::Fs(FsStorage::open(path).await?)),
            StorageConfig::S3(s3) => Ok(Storage::S3(S3Storage::open(s3).await?)),
        }
    }

    /// Opens `key` for reading; `Ok(None)` when absent. A range that cannot be satisfied is
    /// `Error::RangeNotSatisfiable`.
    pub async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<ObjectRead>> {
        match self {
            Storage::Fs(s) => s.get(key, range).await,
            Storage::S3(s) => s.get(key, range).await,
        }
    }

    /// Size of `key`, or `None` when absent.
    pub async fn head(&self, key: &str) -> Result<Option<u64>> {
        match self {
            Storage::Fs(s) => s.head(key).await,
            Storage::S3(s) => s.head(key).await,
        }
    }

    /// Whether the local file system that a write spools to (the data directory, or the S3
    /// spool directory) has `len` bytes free; true when it cannot tell.
    pub fn has_room_for(&self, len: u64) -> bool {
        let dir = match self {
            Storage::Fs(s) => s.temp_dir(),
            Storage::S3(s) => s.spool_dir(),
        };
        files::free_bytes(dir).is_none_or(|free| free >= len)
    }

    /// The directory whose files are the objects, for the filesystem backend.
    pub fn objects_dir(&self) -> Option<&std::path::Path> {
        match self {
            Storage::Fs(s) => Some(s.objects_dir()),
            Storage::S3(_) => None,
        }
    }

    /// When the object at `key` was last read, from its file's access time (filesystem
    /// backend; with `relatime` at most a day late). `None` on S3 or when unknown.
    pub fn accessed_ms(&self, key: &str) -> Option<u64> {
        let dir = self.objects_dir()?;
        StorageKey::parse(key).ok()?;
        let t = std::fs::metadata(dir.join(key)).ok()?.accessed().ok()?;
        Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64)
    }

    /// `(free, total)` bytes of the file system that holds the objects, for the filesystem
    /// backend; `None` for S3 (its spool is checked by [`Storage::has_room_for`]).
    pub fn object_space(&self) -> Option<(u64, u64)> {
        match self {
            Storage::Fs(s) => files::space(s.temp_dir()),
            Storage::S3(_) => None,
        }
    }

    /// Starts writing `key`. Nothing is visible until [`StorageWriter::commit_verified`].
    pub async fn writer(&self, key: &str) -> Result<StorageWriter> {
        Ok(match self {
            Storage::Fs(s) => StorageWriter::new(BackendWriter::Fs(s.writer(key).await?)),
            Storage::S3(s) => StorageWriter::new(BackendWriter::S3(s.writer(key).await?)),
        })
    }

    /// Removes `key`; true when it existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        match self {
            Storage::Fs(s) => s.delete(key).await,
            Storage::S3(s) => s.delete(key).await,
        }
    }

    /// Removes every key in `keys` (batched where the backend can); returns how many calls
    /// succeeded. Absent keys count as removed.
    pub async fn delete_many(&self, keys: &[String]) -> Result<u64> {
        match self {
            Storage::Fs(s) => {
                let mut n = 0;
                for k in keys {
                    s.delete(k).await?;
                    n += 1;
                }
                Ok(n)
            }
            Storage::S3(s) => s.delete_many(keys).await,
        }
    }

    /// Every object whose key starts with the directory `prefix` (`"fedora/"`), or all.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectEntry>> {
        match self {
            Storage::Fs(s) => s.list(prefix).await,
            Storage::S3(s) => s.list(prefix).await,
        }
    }

    /// One level of the directory `prefix` (`"uploads/dir/"`): at most `limit` files and
    /// subdirectories after cursor `after`, in cursor order. Nothing below that level is read.
    pub async fn list_dir(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DirPage> {
        match self {
            Storage::Fs(s) => s.list_dir(prefix, after, limit).await,
            Storage::S3(s) => s.list_dir(prefix, after, limit).await,
        }
    }

    /// Removes temp files left by processes that died mid-write. Returns how many.
    pub async fn sweep_temp_files(&self) -> Result<u64> {
        match self {
            Storage::Fs(s) => s.sweep_temp_files().await,
            Storage::S3(s) => s.sweep_temp_files().await,
        }
    }

    /// Whether the backend answers.
    pub async fn check(&self) -> Result<()> {
        match self {
            Storage::Fs(s) => s.check().await,
            Storage::S3(s) => s.check().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ByteRange;

    #[test]
    fn ranges_resolve() {
        assert_eq!(ByteRange::From(0).resolve(10), Some((0, 9)));
        assert_eq!(ByteRange::From(10).resolve(10), None);
        assert_eq!(ByteRange::FromTo(2, 4).resolve(10), Some((2, 4)));
        assert_eq!(ByteRange::FromTo(2, 400).resolve(10), Some((2, 9)));
        assert_eq!(ByteRange::FromTo(5, 4).resolve(10), None);
        assert_eq!(ByteRange::Suffix(3).resolve(10), Some((7, 9)));
        assert_eq!(ByteRange::Suffix(30).resolve(10), Some((0, 9)));
        assert_eq!(ByteRange::Suffix(0).resolve(10), None);
        assert_eq!(ByteRange::From(0).resolve(0), None);
    }
}
