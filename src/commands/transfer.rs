//! Pulling objects through the cache from the CLI: one object to a sink with optional progress,
//! and walking a docker image (manifests, platforms, blobs). Shared by `fetch` and `warm`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use indicatif::ProgressBar;
use tokio::io::AsyncWriteExt;

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::package::docker::{self, Digest, Endpoint, ImageName, Reference};
use crate::repo::docker::TagPage;
use crate::repo::remote::Fetch;
use crate::repo::{CacheStatus, RemoteRepo};

/// Largest manifest held in memory while walking an image.
const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// Where pulled bytes go.
pub enum Sink {
    /// Only into the cache.
    Discard,
    /// Into memory (manifests), refused past `MAX_MANIFEST`.
    Memory,
    /// Into a file, written under a temp name and renamed when complete.
    File(PathBuf),
    /// To standard output.
    Stdout,
}

/// The result of pulling one object.
pub struct Pulled {
    /// Whether it came from the cache or from upstream.
    pub cache: CacheStatus,
    pub bytes: u64,
    /// The body, for `Sink::Memory`.
    pub data: Vec<u8>,
}

/// Pulls one object through the cache into `sink`, advancing `bar` by the bytes received.
pub async fn pull(
    repo: &Arc<RemoteRepo>,
    fetch: Fetch,
    sink: Sink,
    bar: Option<&ProgressBar>,
) -> Result<Pulled> {
    let served = repo.get_fetch(fetch, None).await?;
    if let (Some(b), Some(len)) = (bar, served.content_length) {
        b.set_length(len);
    }
    let mut body = served
        .body
        .ok_or_else(|| Error::BadRequest("no body".into()))?;
    let mut bytes = 0u64;
    let mut data = Vec::new();
    let io = |what: &str| Error::storage(what.to_string());
    let (mut file, tmp) = match &sink {
        Sink::File(path) => {
            let (f, tmp) = temp_beside(path)
                .map_err(io("creating output"))?
                .into_parts();
            (Some(tokio::fs::File::from_std(f)), Some(tmp))
        }
        _ => (None, None),
    };
    let mut stdout = matches!(sink, Sink::Stdout).then(tokio::io::stdout);
    let result: Result<()> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::UpstreamUnreachable(e.to_string()))?;
            bytes += chunk.len() as u64;
            if let Some(b) = bar {
                b.inc(chunk.len() as u64);
            }
            match &sink {
                Sink::Discard => {}
                Sink::Memory => {
                    if data.len() + chunk.len() > MAX_MANIFEST {
                        return Err(Error::BadRequest("manifest too large".into()));
                    }
                    data.extend_from_slice(&chunk);
                }
                Sink::File(_) => {
                    let f = file.as_mut().expect("file sink has a file");
                    f.write_all(&chunk).await.map_err(io("writing output"))?;
                }
                Sink::Stdout => {
                    let out = stdout.as_mut().expect("stdout sink");
                    out.write_all(&chunk).await.map_err(io("writing stdout"))?;
                }
            }
        }
        if let Some(f) = file.as_mut() {
            f.flush().await.map_err(io("writing output"))?;
        }
        if let Some(out) = stdout.as_mut() {
            out.flush().await.map_err(io("writing stdout"))?;
        }
        Ok(())
    }
    .await;
    drop(file);
    // A failed pull drops `tmp`, which removes the partial file.
    if let (Sink::File(path), Some(tmp), Ok(())) = (&sink, tmp, &result) {
        tmp.persist(path)
            .map_err(|e| e.error)
            .map_err(io("renaming output"))?;
    }
    result?;
    Ok(Pulled {
        cache: served.cache,
        bytes,
        data,
    })
}

/// A hidden temp file in `path`'s directory (so the final rename stays on one filesystem),
/// removed when dropped unless persisted.
fn temp_beside(path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".part")
        .tempfile_in(dir)
}

/// The docker image named on the command line, in `repo`'s naming (Docker Hub gets `library/`).
pub fn image_in(repo: &RemoteRepo, spec: &str) -> Result<(ImageName, Reference)> {
    let (mut name, reference) = docker::parse_image_reference(spec)?;
    if repo.is_docker_hub() {
        name = name.with_library_prefix();
    }
    Ok((name, reference))
}

/// A manifest pulled while walking an image.
pub struct WalkedManifest {
    pub digest: Sha256Digest,
    pub data: Vec<u8>,
}

/// Pulls an image's manifest (and, for an index, each child manifest matching `platform`), and
/// returns the manifests and the fetches of every blob they reference.
pub async fn walk_image(
    repo: &Arc<RemoteRepo>,
    name: &ImageName,
    reference: Reference,
    platform: Option<&str>,
) -> Result<(Vec<WalkedManifest>, Vec<(Digest, Fetch)>)> {
    let mut manifests = Vec::new();
    let mut blobs: Vec<(Digest, Fetch)> = Vec::new();
    let mut queue = vec![reference];
    while let Some(r) = queue.pop() {
        let fetch = repo.docker_fetch(name, &Endpoint::Manifest(r), &TagPage::default())?;
        let pulled = pull(repo, fetch, Sink::Memory, None).await?;
        let digest = Sha256Digest::of(&pulled.data);
        let refs = docker::manifest_references(&pulled.data)?;
        for (child, child_platform) in refs.children {
            let wanted = match (platform, child_platform.as_deref()) {
                (None, _) => true,
                (Some(want), Some(have)) => have == want || have.starts_with(&format!("{want}/")),
                (Some(_), None) => false,
            };
            if wanted {
                queue.push(Reference::Digest(child));
            }
        }
        for b in refs.blobs {
            if !blobs.iter().any(|(d, _)| *d == b) {
                let f = repo.docker_fetch(name, &Endpoint::Blob(b.clone()), &TagPage::default())?;
                blobs.push((b, f));
            }
        }
        manifests.push(WalkedManifest {
            digest,
            data: pulled.data,
        });
    }
    Ok((manifests, blobs))
}
