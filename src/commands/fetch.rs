//! `artifactapi fetch`: one file (or a docker image) through the cache, optionally written out.

use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

use super::output::{human_size, show_progress};
use super::transfer::{Sink, image_in, pull, walk_image};
use super::{CommandError, open_engine};
use crate::cli::{FetchArgs, GlobalArgs};
use crate::config::PackageKind;
use crate::repo::RepoPath;

pub fn bar(global: &GlobalArgs, label: &str) -> Option<ProgressBar> {
    if !show_progress(global) {
        return None;
    }
    let b = ProgressBar::new(0);
    b.set_style(
        ProgressStyle::with_template(
            "{msg:30!} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta}",
        )
        .expect("valid template"),
    );
    b.set_message(label.to_string());
    Some(b)
}

pub async fn run(global: &GlobalArgs, args: &FetchArgs) -> Result<ExitCode, CommandError> {
    let engine = open_engine(global).await?;
    let repo = engine.remote(&args.remote)?.clone();
    if repo.package() == PackageKind::Docker {
        let (name, reference) = image_in(&repo, &args.path)?;
        let (manifests, blobs) =
            walk_image(&repo, &name, reference, args.platform.as_deref()).await?;
        if let Some(dir) = &args.output {
            std::fs::create_dir_all(dir)?;
            for (i, m) in manifests.iter().enumerate() {
                if i == 0 {
                    std::fs::write(dir.join("manifest.json"), &m.data)?;
                }
                std::fs::write(dir.join(m.digest.hex()), &m.data)?;
            }
        }
        let mut total = 0u64;
        for (digest, fetch) in blobs.iter().cloned() {
            let sink = match &args.output {
                Some(dir) => Sink::File(dir.join(digest.hex())),
                None => Sink::Discard,
            };
            let b = bar(global, &digest.as_str()[..19]);
            let pulled = pull(&repo, fetch, sink, b.as_ref()).await?;
            if let Some(b) = b {
                b.finish_and_clear();
            }
            total += pulled.bytes;
        }
        eprintln!(
            "{name}: {} manifests, {} blobs, {}",
            manifests.len(),
            blobs.len(),
            human_size(total)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let path = RepoPath::parse(&args.path)?;
    let fetch = repo.plain_fetch(&path)?;
    let sink = match &args.output {
        None => Sink::Discard,
        Some(p) if p.as_os_str() == "-" => Sink::Stdout,
        Some(p) => Sink::File(PathBuf::from(p)),
    };
    let b = bar(global, path.as_str());
    let pulled = pull(&repo, fetch, sink, b.as_ref()).await?;
    if let Some(b) = b {
        b.finish_and_clear();
    }
    if !global.quiet {
        eprintln!(
            "{}/{}: {} ({})",
            args.remote,
            path,
            human_size(pulled.bytes),
            pulled.cache.as_str()
        );
    }
    Ok(ExitCode::SUCCESS)
}
