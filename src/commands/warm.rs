//! `artifactapi warm`: pre-seed a remote's cache from paths, docker images, rpm repodata,
//! an APKINDEX or GitHub releases, with parallel downloads, progress and a summary.

use std::process::ExitCode;
use std::sync::Arc;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::output::{human_size, show_progress};
use super::transfer::{Sink, image_in, pull, walk_image};
use super::{CommandError, open_engine};
use crate::cli::{GlobalArgs, WarmArgs};
use crate::config::{PackageKind, Pattern};
use crate::error::{Error, Result};
use crate::package::{Format, Found, format};
use crate::repo::remote::Fetch;
use crate::repo::{CacheStatus, RemoteRepo, RepoPath};

#[derive(Default)]
struct Summary {
    fetched: u64,
    cached: u64,
    failed: u64,
    skipped: u64,
    bytes: u64,
}

pub async fn run(global: &GlobalArgs, args: &WarmArgs) -> Result<ExitCode, CommandError> {
    let engine = open_engine(global).await?;
    let repo = engine.remote(&args.remote)?.clone();
    let mut summary = Summary::default();
    let mut items: Vec<(String, Fetch)> = Vec::new();

    let mut paths = args.paths.clone();
    if let Some(f) = &args.from_file {
        let text =
            std::fs::read_to_string(f).map_err(|e| format!("reading {}: {e}", f.display()))?;
        paths.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    for p in &paths {
        let fetch = RepoPath::parse(p).and_then(|path| repo.plain_fetch(&path));
        match fetch {
            Ok(f) => items.push((p.clone(), f)),
            Err(e) => {
                eprintln!("{p}: {e}");
                summary.failed += 1;
            }
        }
    }
    for image in &args.image {
        let (name, reference) = image_in(&repo, image)?;
        let (manifests, blobs) =
            walk_image(&repo, &name, reference, args.platform.as_deref()).await?;
        summary.fetched += manifests.len() as u64;
        summary.bytes += manifests.iter().map(|m| m.data.len() as u64).sum::<u64>();
        items.extend(
            blobs
                .into_iter()
                .map(|(d, f)| (format!("{name}@{}", d.as_str()), f)),
        );
    }
    let listed = args.repodata.iter().map(|d| (PackageKind::Rpm, d));
    let listed = listed.chain(args.apkindex.iter().map(|d| (PackageKind::Alpine, d)));
    for (package, dir) in listed {
        let found = packages_listed(&repo, format(package), dir).await?;
        add_discovered(&repo, found, &mut items, &mut summary);
    }
    for gh in &args.github_releases {
        let pattern = args
            .pattern
            .as_deref()
            .map(Pattern::new)
            .transpose()
            .map_err(Error::BadRequest)?;
        let found = github_assets(&repo, gh, pattern.as_ref()).await?;
        add_discovered(&repo, found, &mut items, &mut summary);
    }

    let progress = show_progress(global).then(MultiProgress::new);
    let overall = progress.as_ref().map(|mp| {
        let b = mp.add(ProgressBar::new(items.len() as u64));
        b.set_style(
            ProgressStyle::with_template("{pos}/{len} files {bar:40} {msg}")
                .expect("valid template"),
        );
        b
    });
    let jobs = args.jobs.max(1);
    let mut results = futures::stream::iter(items.into_iter().map(|(label, fetch)| {
        let repo = repo.clone();
        let bar = progress.as_ref().map(|mp| {
            let b = mp.add(ProgressBar::new(0));
            b.set_style(
                ProgressStyle::with_template(
                    "  {msg:40!} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}",
                )
                .expect("valid template"),
            );
            b.set_message(label.clone());
            b
        });
        async move {
            let r = pull(&repo, fetch, Sink::Discard, bar.as_ref()).await;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            (label, r)
        }
    }))
    .buffer_unordered(jobs);
    while let Some((label, r)) = results.next().await {
        match r {
            Ok(p) => {
                summary.bytes += p.bytes;
                if p.cache == CacheStatus::Hit {
                    summary.cached += 1;
                } else {
                    summary.fetched += 1;
                }
            }
            Err(e) => {
                summary.failed += 1;
                match &progress {
                    Some(mp) => mp.suspend(|| eprintln!("failed: {label}: {e}")),
                    None => eprintln!("failed: {label}: {e}"),
                }
            }
        }
        if let Some(b) = &overall {
            b.inc(1);
            b.set_message(human_size(summary.bytes));
        }
    }
    if let Some(b) = overall {
        b.finish_and_clear();
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "fetched",
        "already cached",
        "skipped",
        "failed",
        "bytes",
    ]);
    table.add_row(vec![
        summary.fetched.to_string(),
        summary.cached.to_string(),
        summary.skipped.to_string(),
        summary.failed.to_string(),
        human_size(summary.bytes),
    ]);
    if !global.quiet {
        eprintln!("{table}");
    }
    Ok(if summary.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Queues discovered paths; those include_patterns refuse are counted as skipped.
fn add_discovered(
    repo: &RemoteRepo,
    paths: Vec<String>,
    items: &mut Vec<(String, Fetch)>,
    summary: &mut Summary,
) {
    for p in paths {
        match RepoPath::parse(&p).and_then(|path| repo.plain_fetch(&path)) {
            Ok(f) => items.push((p, f)),
            Err(Error::Forbidden) => summary.skipped += 1,
            Err(e) => {
                eprintln!("{p}: {e}");
                summary.failed += 1;
            }
        }
    }
}

fn join_dir(dir: &str, rel: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() {
        rel.trim_start_matches('/').to_string()
    } else {
        format!("{dir}/{}", rel.trim_start_matches('/'))
    }
}

/// Pulls `rel` under `dir` through the cache into a temp file and returns its path.
async fn pull_to_temp(repo: &Arc<RemoteRepo>, rel: &str) -> Result<tempfile::TempPath> {
    let path = RepoPath::parse(rel)?;
    let fetch = repo.plain_fetch(&path)?;
    let tmp = tempfile::NamedTempFile::new()
        .map_err(Error::storage("creating a temp file"))?
        .into_temp_path();
    pull(repo, fetch, Sink::File(tmp.to_path_buf()), None).await?;
    Ok(tmp)
}

/// Every package that `dir`'s index files list, read as `format` says: its roots first, then
/// each index file they name.
async fn packages_listed(
    repo: &Arc<RemoteRepo>,
    format: &'static dyn Format,
    dir: &str,
) -> Result<Vec<String>> {
    let mut indexes: Vec<String> = format.warm_roots().iter().map(|r| r.to_string()).collect();
    let mut packages = Vec::new();
    let mut read = 0;
    while let Some(rel) = indexes.pop() {
        read += 1;
        if read > MAX_INDEX_FILES {
            return Err(Error::BadRequest(format!(
                "{dir}: more than {MAX_INDEX_FILES} index files"
            )));
        }
        let file = pull_to_temp(repo, &join_dir(dir, &rel)).await?;
        let found = blocking(move || format.discover(&rel, &file)).await?;
        for f in found {
            match f {
                Found::Index(rel) => indexes.push(rel),
                Found::Package(rel) => packages.push(join_dir(dir, &rel)),
            }
        }
    }
    Ok(packages)
}

/// How many index files one directory's discovery reads at most (a loop guard).
const MAX_INDEX_FILES: usize = 64;

/// Runs file parsing off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::BadRequest(e.to_string()))?
}

/// A GitHub owner or repository name: ASCII letters, digits, `.`, `-` and `_`.
fn github_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// The most one page of the releases API may hold (100 releases with their assets).
const MAX_RELEASES_PAGE: usize = 32 << 20;

/// Release assets of OWNER/REPO, as paths under the remote's base_url.
async fn github_assets(
    repo: &Arc<RemoteRepo>,
    owner_repo: &str,
    pattern: Option<&Pattern>,
) -> Result<Vec<String>> {
    let (owner, name) = owner_repo
        .split_once('/')
        .filter(|(o, n)| github_name(o) && github_name(n))
        .ok_or_else(|| Error::BadRequest(format!("expected OWNER/REPO, got {owner_repo:?}")))?;
    let base = format!("{}/", repo.config().base_url.as_prefix());
    let mut out = Vec::new();
    for page in 1..=20 {
        let query = format!("repos/{owner}/{name}/releases?per_page=100&page={page}");
        let releases: Vec<serde_json::Value> = repo.api_json(&query, MAX_RELEASES_PAGE).await?;
        if releases.is_empty() {
            break;
        }
        for rel in &releases {
            let assets = rel.get("assets").and_then(|a| a.as_array());
            for asset in assets.into_iter().flatten() {
                let (Some(asset_name), Some(url)) = (
                    asset.get("name").and_then(|v| v.as_str()),
                    asset.get("browser_download_url").and_then(|v| v.as_str()),
                ) else {
                    continue;
                };
                if pattern.is_some_and(|p| !p.is_match(asset_name)) {
                    continue;
                }
                match url.strip_prefix(&base) {
                    Some(rel_path) => out.push(rel_path.to_string()),
                    None => {
                        tracing::warn!(url, "asset is not under the remote's base_url; skipped")
                    }
                }
            }
        }
        if releases.len() < 100 {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_dirs() {
        assert_eq!(join_dir("", "repodata/repomd.xml"), "repodata/repomd.xml");
        assert_eq!(join_dir("/a/b/", "/c"), "a/b/c");
    }
}
