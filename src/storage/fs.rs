//! The filesystem backend: objects under `ROOT/objects/{key}`. Writes go to a temp file in
//! `ROOT/tmp/` (same filesystem), are fsynced and renamed into place; a guard deletes the temp
//! file on every early exit, and a start-up sweep of that one directory removes those of
//! processes that died.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;

use super::files::{TEMP_DIR, TEMP_PREFIX, is_absent, read_cached, sweep_dir, walk};
use super::{ByteRange, ObjectEntry, ObjectRead, StorageKey};
use crate::error::{Error, Result};

/// Objects at most this large are read in one go on a hit.
const SMALL_OBJECT: u64 = 128 * 1024;
/// Read size for streaming larger objects.
const READ_CHUNK: u64 = 128 * 1024;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub struct FsStorage {
    objects: PathBuf,
    tmp: PathBuf,
}

impl FsStorage {
    /// Where writes go before their rename.
    /// Where the objects live (`ROOT/objects`).
    pub fn objects_dir(&self) -> &Path {
        &self.objects
    }

    pub fn temp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Opens (creating if needed) a data directory.
    pub async fn open(root: &Path) -> Result<FsStorage> {
        let objects = root.join("objects");
        let tmp = root.join(TEMP_DIR);
        for dir in [&objects, &tmp] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(Error::storage(format!("creating {}", dir.display())))?;
        }
        Ok(FsStorage { objects, tmp })
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        Ok(self.objects.join(StorageKey::parse(key)?.as_str()))
    }

    pub async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<ObjectRead>> {
        let path = self.path_of(key)?;
        // One trip to the blocking pool: open, stat, seek and, for small objects, the read.
        let opened = tokio::task::spawn_blocking(move || open_object(&path, range))
            .await
            .map_err(join_error)?;
        let (file, size, served, small) = match opened {
            Ok(Some(o)) => o,
            Ok(None) => return Ok(None),
            Err(OpenError::Range(size)) => return Err(Error::RangeNotSatisfiable { size }),
            Err(OpenError::Io(e)) => return Err(Error::storage(format!("reading {key}"))(e)),
        };
        let body: super::ByteStream = match small {
            Some(buf) => futures::stream::once(async move { Ok(Bytes::from(buf)) }).boxed(),
            None => {
                let (start, end) = match served {
                    Some((a, b)) => (a, b + 1),
                    None => (0, size),
                };
                read_ahead(file, start, end, false)
            }
        };
        Ok(Some(ObjectRead {
            size,
            range: served,
            body,
        }))
    }

    pub async fn head(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(Error::storage(format!("stat {key}"))(e)),
        }
    }

    pub async fn writer(&self, key: &str) -> Result<FsWriter> {
        let dest = self.path_of(key)?;
        let dir = dest
            .parent()
            .ok_or_else(|| Error::BadPath(key.to_string()))?
            .to_path_buf();
        let ctx = format!("creating temp file for {key}");
        let tmp_dir = self.tmp.clone();
        tokio::task::spawn_blocking(move || -> io::Result<FsWriter> {
            std::fs::create_dir_all(&dir)?;
            let tmp = tmp_dir.join(format!(
                "{TEMP_PREFIX}{}-{}",
                std::process::id(),
                TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            Ok(FsWriter {
                file: Some(file),
                tmp: TempGuard(Some(tmp)),
                dest,
                dir,
            })
        })
        .await
        .map_err(join_error)?
        .map_err(Error::storage(ctx))
    }

    /// Deletes an object, then the directories it leaves empty (so that a later object may
    /// take a removed directory's name).
    pub async fn delete(&self, key: &str) -> Result<bool> {
        let path = self.path_of(key)?;
        let root = self.objects.clone();
        tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => {
                let mut dir = path.parent();
                while let Some(d) = dir.filter(|d| *d != root && d.starts_with(&root)) {
                    // Fails, harmlessly, on a directory that is not empty.
                    if std::fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
                Ok(true)
            }
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(e),
        })
        .await
        .map_err(join_error)?
        .map_err(Error::storage(format!("deleting {key}")))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectEntry>> {
        let root = self.objects.clone();
        let prefix = prefix.trim_end_matches('/').to_string();
        tokio::task::spawn_blocking(move || {
            let start = if prefix.is_empty() {
                root.clone()
            } else {
                root.join(&prefix)
            };
            let mut out = Vec::new();
            walk(&start, &mut |path, meta| {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with(TEMP_PREFIX) {
                    return;
                }
                if let Ok(rel) = path.strip_prefix(&root)
                    && let Some(key) = rel.to_str()
                {
                    out.push(ObjectEntry {
                        key: key.to_string(),
                        size: meta.len(),
                    });
                }
            })?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(join_error)?
        .map_err(Error::storage("listing objects"))
    }

    pub async fn list_dir(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<super::DirPage> {
        let dir = self.objects.join(prefix.trim_end_matches('/'));
        let after = after.map(str::to_string);
        tokio::task::spawn_blocking(move || -> io::Result<super::DirPage> {
            let read = match std::fs::read_dir(&dir) {
                Ok(r) => r,
                Err(e) if is_absent(&e) || e.kind() == io::ErrorKind::NotADirectory => {
                    return Ok(super::DirPage::default());
                }
                Err(e) => return Err(e),
            };
            // Names and kinds first (no stat per file): sizes only for the page shown.
            let mut all = Vec::new();
            for entry in read {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name.starts_with(TEMP_PREFIX) {
                    continue;
                }
                let is_dir = entry.file_type()?.is_dir();
                all.push(super::DirEntry {
                    name,
                    size: (!is_dir).then_some(0),
                });
            }
            let mut page = super::DirPage::of(all, after.as_deref(), limit);
            for e in &mut page.entries {
                if e.size.is_some() {
                    e.size = Some(std::fs::metadata(dir.join(&e.name))?.len());
                }
            }
            Ok(page)
        })
        .await
        .map_err(join_error)?
        .map_err(Error::storage("listing a directory"))
    }

    pub async fn sweep_temp_files(&self) -> Result<u64> {
        let root = self.tmp.clone();
        tokio::task::spawn_blocking(move || sweep_dir(&root))
            .await
            .map_err(join_error)?
            .map_err(Error::storage("sweeping temp files"))
    }

    pub async fn check(&self) -> Result<()> {
        tokio::fs::metadata(&self.objects)
            .await
            .map(|_| ())
            .map_err(Error::storage("data directory"))
    }
}

enum OpenError {
    Range(u64),
    Io(io::Error),
}

type Opened = (std::fs::File, u64, Option<(u64, u64)>, Option<Vec<u8>>);

/// Opens an object positioned at the start of `range`; small bodies are read at once.
fn open_object(path: &Path, range: Option<ByteRange>) -> Result<Option<Opened>, OpenError> {
    use std::io::{Read, Seek};
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(OpenError::Io(e)),
    };
    let size = file.metadata().map_err(OpenError::Io)?.len();
    let (start, len, served) = match range {
        None => (0, size, None),
        Some(r) => {
            let (a, b) = r.resolve(size).ok_or(OpenError::Range(size))?;
            (a, b - a + 1, Some((a, b)))
        }
    };
    if start > 0 {
        file.seek(io::SeekFrom::Start(start))
            .map_err(OpenError::Io)?;
    }
    // (Larger bodies are read with positioned reads from `start`; the seek serves small ones.)
    let small = if len <= SMALL_OBJECT {
        let mut buf = Vec::with_capacity(len as usize);
        (&mut file)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(OpenError::Io)?;
        if buf.len() as u64 != len {
            return Err(OpenError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "object shorter than its size",
            )));
        }
        Some(buf)
    } else {
        None
    };
    Ok(Some((file, size, served, small)))
}

/// Streams `start..end` of `file` in `READ_CHUNK` pieces. A piece already in the page cache
/// is read on the spot (`preadv2` with `RWF_NOWAIT`, which never waits for the disk), the way
/// a hit on a warm file usually goes: no thread hand-off, one copy into the socket. Once a
/// piece must come from the disk, the rest of the file is read on the blocking pool, the next
/// piece while the previous one is being sent, so that disk reads and socket writes overlap. A
/// blocking thread is used only while a read runs, never while a slow client drains its piece.
/// `from_disk` skips the page-cache attempt (tests use it to cover both ways).
fn read_ahead(file: std::fs::File, start: u64, end: u64, from_disk: bool) -> super::ByteStream {
    use std::os::unix::fs::FileExt;
    use tokio::task::JoinHandle;

    struct State {
        file: std::sync::Arc<std::fs::File>,
        next: u64,
        end: u64,
        /// The next piece, being read on the blocking pool.
        pending: Option<JoinHandle<io::Result<Vec<u8>>>>,
        /// A piece had to come from the disk: stay on the blocking pool.
        from_disk: bool,
    }
    impl State {
        fn piece(&self) -> usize {
            (self.end - self.next).min(READ_CHUNK) as usize
        }

        fn read_cached(&mut self) -> Option<Vec<u8>> {
            let buf = read_cached(&self.file, self.next, self.piece())?;
            self.next += buf.len() as u64;
            Some(buf)
        }

        fn start_read(&mut self) {
            if self.next >= self.end {
                return;
            }
            let n = self.piece();
            let (file, offset) = (self.file.clone(), self.next);
            self.next += n as u64;
            self.pending = Some(tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, offset).map(|_| buf)
            }));
        }
    }
    let state = State {
        file: std::sync::Arc::new(file),
        next: start,
        end,
        pending: None,
        from_disk,
    };
    futures::stream::unfold(state, |mut state| async move {
        if state.pending.is_none() {
            if state.next >= state.end {
                return None;
            }
            if !state.from_disk
                && let Some(buf) = state.read_cached()
            {
                return Some((Ok(Bytes::from(buf)), state));
            }
            state.from_disk = true;
            state.start_read();
        }
        let read = state.pending.take()?;
        let buf = match read.await {
            Ok(Ok(buf)) => buf,
            Ok(Err(e)) => {
                state.next = state.end; // the stream ends after its error
                return Some((Err(e), state));
            }
            Err(e) => {
                state.next = state.end;
                return Some((Err(io::Error::other(e.to_string())), state));
            }
        };
        state.start_read();
        Some((Ok(Bytes::from(buf)), state))
    })
    .boxed()
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::storage("background task")(io::Error::other(e.to_string()))
}

/// Deletes its path when dropped, unless disarmed.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// An object being written to a temp file in `ROOT/tmp/`.
pub struct FsWriter {
    file: Option<std::fs::File>,
    tmp: TempGuard,
    dest: PathBuf,
    dir: PathBuf,
}

impl FsWriter {
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| Error::storage("writing")(io::Error::other("writer already failed")))?;
        let (file, result) = tokio::task::spawn_blocking(move || {
            let r = file.write_all(&chunk);
            (file, r)
        })
        .await
        .map_err(join_error)?;
        result.map_err(Error::storage("writing object"))?;
        self.file = Some(file);
        Ok(())
    }

    pub async fn commit(mut self) -> Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::storage("commit")(io::Error::other("writer already failed")))?;
        let tmp = self.tmp.0.clone().expect("temp path present until commit");
        let dest = self.dest.clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            file.sync_all()?;
            drop(file);
            if let Err(e) = std::fs::rename(&tmp, &dest) {
                // A delete may have removed the (then empty) directory meanwhile.
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(e);
                }
                std::fs::create_dir_all(&dir)?;
                std::fs::rename(&tmp, &dest)?;
            }
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(join_error)?
        .map_err(Error::storage(format!(
            "committing {}",
            self.dest.display()
        )))?;
        self.tmp.0 = None;
        Ok(())
    }

    pub fn spool_reader(&self) -> io::Result<std::fs::File> {
        match &self.tmp.0 {
            Some(p) => std::fs::File::open(p),
            None => Err(io::Error::other("writer already committed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(read: ObjectRead) -> Vec<u8> {
        let mut out = Vec::new();
        let mut body = read.body;
        while let Some(c) = body.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn write_commit_read_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::open(dir.path()).await.unwrap();
        let mut w = s.writer("r/a/b.bin").await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        assert!(
            s.get("r/a/b.bin", None).await.unwrap().is_none(),
            "visible before commit"
        );
        w.commit().await.unwrap();
        let got = s.get("r/a/b.bin", None).await.unwrap().unwrap();
        assert_eq!(got.size, 11);
        assert_eq!(read_all(got).await, b"hello world");
        let part = s
            .get("r/a/b.bin", Some(ByteRange::FromTo(6, 8)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(part.range, Some((6, 8)));
        assert_eq!(read_all(part).await, b"wor");
        assert!(matches!(
            s.get("r/a/b.bin", Some(ByteRange::From(11))).await,
            Err(Error::RangeNotSatisfiable { size: 11 })
        ));
        assert_eq!(s.list("r/").await.unwrap().len(), 1);
        assert!(s.delete("r/a/b.bin").await.unwrap());
        assert!(!s.delete("r/a/b.bin").await.unwrap());
    }

    #[tokio::test]
    async fn large_reads_from_the_page_cache_and_from_the_blocking_pool_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(3 * READ_CHUNK + 12_345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        for from_disk in [false, true] {
            for (a, b) in [
                (0, data.len() as u64),
                (7, READ_CHUNK + 3),
                (READ_CHUNK, 2 * READ_CHUNK),
            ] {
                let file = std::fs::File::open(&path).unwrap();
                let mut body = read_ahead(file, a, b, from_disk);
                let mut got = Vec::new();
                while let Some(c) = body.next().await {
                    let c = c.unwrap();
                    assert!(!c.is_empty() && c.len() as u64 <= READ_CHUNK);
                    got.extend_from_slice(&c);
                }
                assert!(
                    got == data[a as usize..b as usize],
                    "{a}..{b}, from_disk {from_disk}"
                );
            }
        }
        // A file shorter than the range asked for ends the stream with an error.
        for from_disk in [false, true] {
            let file = std::fs::File::open(&path).unwrap();
            let mut body = read_ahead(file, 0, data.len() as u64 + 1, from_disk);
            let mut failed = false;
            while let Some(c) = body.next().await {
                failed |= c.is_err();
            }
            assert!(
                failed,
                "a short file must not end cleanly (from_disk {from_disk})"
            );
        }
    }

    #[tokio::test]
    async fn dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::open(dir.path()).await.unwrap();
        let mut w = s.writer("r/x").await.unwrap();
        w.write(Bytes::from_static(b"partial")).await.unwrap();
        drop(w);
        let mut names = Vec::new();
        walk(&dir.path().join("objects"), &mut |p, _| {
            names.push(p.to_path_buf())
        })
        .unwrap();
        assert!(names.is_empty(), "{names:?}");
    }

    #[tokio::test]
    async fn sweep_removes_dead_writers_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::open(dir.path()).await.unwrap();
        let d = dir.path().join(TEMP_DIR);
        // pid 0 never names a live process in /proc.
        std::fs::write(d.join(format!("{TEMP_PREFIX}0-1")), b"x").unwrap();
        let live = d.join(format!("{TEMP_PREFIX}{}-9", std::process::id()));
        std::fs::write(&live, b"x").unwrap();
        assert_eq!(s.sweep_temp_files().await.unwrap(), 1);
        assert!(live.exists());
    }

    #[tokio::test]
    async fn delete_removes_emptied_directories_so_the_name_can_be_reused() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::open(dir.path()).await.unwrap();
        for key in ["r/a/b/c.txt", "r/a/keep.txt"] {
            let mut w = s.writer(key).await.unwrap();
            w.write(Bytes::from_static(b"x")).await.unwrap();
            w.commit().await.unwrap();
        }
        assert!(s.delete("r/a/b/c.txt").await.unwrap());
        assert!(!dir.path().join("objects/r/a/b").exists());
        assert!(dir.path().join("objects/r/a/keep.txt").exists());
        let mut w = s.writer("r/a/b").await.unwrap();
        w.write(Bytes::from_static(b"now a file")).await.unwrap();
        w.commit().await.unwrap();
        assert_eq!(s.head("r/a/b").await.unwrap(), Some(10));
        assert!(dir.path().join("objects").exists());
    }

    #[tokio::test]
    async fn rejects_unsafe_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::open(dir.path()).await.unwrap();
        for k in ["../x", "r/../../x", "/etc/passwd", "r//x", "r\\..\\x", ""] {
            assert!(s.get(k, None).await.is_err(), "{k}");
        }
    }
}
