//! File helpers shared by the filesystem backend, the embedded metadata store and fill
//! followers: the temp-file naming both stores use in `ROOT/tmp/`, the sweep of temp files
//! left by dead processes, a walk over regular files, a read that never waits for the disk,
//! and the free space of a file system.

use std::io;
use std::path::Path;

/// Temp files start with this; request paths may not (see `repo::path`).
pub const TEMP_PREFIX: &str = ".artifactapi-tmp-";
/// The directory, under a data root, that holds temp files.
pub const TEMP_DIR: &str = "tmp";

/// Up to `len` bytes of `file` at `offset`, if the page cache holds (the start of) them:
/// `preadv2` with `RWF_NOWAIT` never waits for the disk, so this may run on an async worker.
/// `None` when the bytes would have to come from the disk, at the end of the file, or when the
/// file system cannot tell; the caller then reads on the blocking pool.
pub(crate) fn read_cached(file: &std::fs::File, offset: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let got = rustix::io::preadv2(
        file,
        &mut [io::IoSliceMut::new(&mut buf)],
        offset,
        rustix::io::ReadWriteFlags::NOWAIT,
    );
    match got {
        Ok(n) if n > 0 => {
            buf.truncate(n);
            Some(buf)
        }
        _ => None,
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `path`; `None` when
/// the file system cannot tell.
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    space(path).map(|(free, _)| free)
}

/// `(free, total)` bytes of the file system holding `path`, free meaning what an unprivileged
/// writer may still use.
pub(crate) fn space(path: &Path) -> Option<(u64, u64)> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some((
        st.f_bavail.saturating_mul(st.f_frsize),
        st.f_blocks.saturating_mul(st.f_frsize),
    ))
}

/// Removes temp files whose writing process is gone. Used for objects and metadata records.
pub(crate) fn sweep_dir(root: &Path) -> io::Result<u64> {
    let mut removed = 0;
    walk(root, &mut |path, _| {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
            return;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive && std::fs::remove_file(path).is_ok() {
            removed += 1;
        }
    })?;
    Ok(removed)
}

/// Depth-first walk over the regular files below `dir`. Symbolic links below `dir` are neither
/// followed nor reported; a missing start directory, a start that is a file, and a directory
/// removed while it is walked all count as empty.
pub(crate) fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &std::fs::Metadata)) -> io::Result<()> {
    for entry in walkdir::WalkDir::new(dir).min_depth(1) {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.io_error().is_some_and(is_absent) => continue,
            Err(e) => return Err(e.into()),
        };
        if entry.file_type().is_file()
            && let Ok(meta) = entry.metadata()
        {
            f(entry.path(), &meta);
        }
    }
    Ok(())
}

/// True for errors that mean "not there" (a missing file, or a file where a directory was
/// expected).
pub(crate) fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walked(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        walk(dir, &mut |p, m| {
            let rel = p.strip_prefix(dir).unwrap().to_str().unwrap();
            out.push(format!("{rel}:{}", m.len()));
        })
        .unwrap();
        out.sort();
        out
    }

    #[test]
    fn walk_reports_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/c"), b"abc").unwrap();
        std::fs::write(root.join("top"), b"x").unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("linked-dir")).unwrap();
        std::os::unix::fs::symlink(root.join("top"), root.join("linked-file")).unwrap();
        assert_eq!(walked(root), vec!["a/b/c:3", "top:1"]);
        // Started at a file or at nothing, the walk is empty.
        assert!(walked(&root.join("top")).is_empty());
        assert!(walked(&root.join("missing")).is_empty());
        // A symbolic link given as the start is followed.
        let linked = root.join("link-to-a");
        std::os::unix::fs::symlink(root.join("a"), &linked).unwrap();
        assert_eq!(walked(&linked), vec!["b/c:3"]);
    }
}
