//! Virtual repositories: an ordered list of members (local, remote or other virtual
//! repositories) served as one. A path is asked of each member in turn and the first that has
//! it answers. A member's 404 or 403 moves on to the next; so does a failure, which is
//! reported (502) only when every member failed. Index metadata is never merged: rpm and
//! alpine virtual repositories are failover mirror sets. On `/v2/`, manifests resolve the same
//! way, and blobs are asked first of the member that served the image's last manifest.
//! A member the caller may not read is skipped, as if it had answered 404.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::docker::TagPage;
use super::{Engine, Repo, RepoPath, Served};
use crate::config::{Config, PackageKind, RepoConfig, VirtualConfig};
use crate::error::{Error, Result};
use crate::package::docker::{Endpoint, ImageName};
use crate::package::{CacheClass, classify};
use crate::storage::ByteRange;

/// Images whose manifest source is remembered, at most; the least recently used go first.
const MAX_REMEMBERED_IMAGES: u64 = 10_000;

/// What is asked of each member.
#[derive(Debug, Clone, Copy)]
pub enum ReadOp {
    Get(Option<ByteRange>),
    Head,
}

/// An answer from one member.
pub struct VirtualServed {
    pub served: Served,
    /// The (local or remote) repository that answered.
    pub member: String,
}

/// A virtual repository with its members opened, in the order they are asked.
pub struct VirtualRepo {
    name: String,
    config: VirtualConfig,
    members: Vec<Repo>,
}

impl VirtualRepo {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn package(&self) -> PackageKind {
        self.config.package
    }

    pub fn config(&self) -> &VirtualConfig {
        &self.config
    }

    /// The local and remote repositories behind this one, in the order they are asked:
    /// nested virtual repositories are expanded in place (when `allowed` lets them through),
    /// and a repository reached twice is asked once.
    pub(super) fn members(&self, allowed: &dyn Fn(&VirtualConfig) -> bool) -> Vec<Repo> {
        fn walk(v: &VirtualRepo, allowed: &dyn Fn(&VirtualConfig) -> bool, out: &mut Vec<Repo>) {
            for m in &v.members {
                match m {
                    Repo::Virtual(nested) if allowed(&nested.config) => walk(nested, allowed, out),
                    Repo::Virtual(_) => {}
                    m if out.iter().any(|o| o.name() == m.name()) => {}
                    m => out.push(m.clone()),
                }
            }
        }
        let mut out = Vec::new();
        walk(self, allowed, &mut out);
        out
    }
}

/// Opens virtual repository `name` of `config` into `repos`, its members first (local and
/// remote ones are there already). `stack` holds the names being opened: cycles are refused
/// when the config is loaded, and a member that would close one is left out.
pub(super) fn resolve(
    name: &str,
    config: &Config,
    repos: &mut BTreeMap<String, Repo>,
    stack: &mut Vec<String>,
) -> Option<Repo> {
    if let Some(done) = repos.get(name) {
        return Some(done.clone());
    }
    let Some(RepoConfig::Virtual(cfg)) = config.remotes.get(name) else {
        return None;
    };
    if stack.iter().any(|s| s == name) {
        return None;
    }
    stack.push(name.to_string());
    let members = cfg
        .members
        .iter()
        .filter_map(|m| resolve(m.as_str(), config, repos, stack))
        .collect();
    stack.pop();
    let repo = Repo::Virtual(Arc::new(VirtualRepo {
        name: name.to_string(),
        config: cfg.clone(),
        members,
    }));
    repos.insert(name.to_string(), repo.clone());
    Some(repo)
}

/// State of the virtual repositories: which member served each image's last manifest.
pub struct Virtuals {
    manifest_source: moka::sync::Cache<(String, String), String>,
}

impl Default for Virtuals {
    fn default() -> Self {
        Virtuals {
            manifest_source: moka::sync::Cache::new(MAX_REMEMBERED_IMAGES),
        }
    }
}

/// What each member said, for the final error.
#[derive(Default)]
pub(super) struct Misses {
    pub(super) missing: usize,
    failed: Vec<(String, Error)>,
}

impl Misses {
    pub(super) fn record(&mut self, virtual_name: &str, member: &str, error: Error) -> Result<()> {
        match error {
            Error::NotFound | Error::Forbidden => self.missing += 1,
            // The member has it: a bad range is the answer.
            e @ Error::RangeNotSatisfiable { .. } => return Err(e),
            e => {
                tracing::warn!(
                    repository = virtual_name,
                    member,
                    error = %crate::error_chain(&e),
                    "member failed; asking the next"
                );
                self.failed.push((member.to_string(), e));
            }
        }
        Ok(())
    }

    /// 404 when some member does not have the path, 502 naming them when every member failed.
    pub(super) fn into_error(self) -> Error {
        if self.failed.is_empty() || self.missing > 0 {
            return Error::NotFound;
        }
        let list: Vec<String> = self
            .failed
            .iter()
            .map(|(m, e)| format!("{m}: {}", e.client_message()))
            .collect();
        Error::MembersFailed(list.join("; "))
    }
}

impl Engine {
    /// GET or HEAD of `path` in virtual repository `name`, asking only the members for which
    /// `may_read` holds.
    pub async fn virtual_read(
        &self,
        name: &str,
        path: &RepoPath,
        op: ReadOp,
        may_read: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<VirtualServed> {
        let repo = self.virtual_repo(name)?;
        if !path_allowed(&repo.config, path) {
            return Err(Error::Forbidden);
        }
        let mut misses = Misses::default();
        for member in repo.members(&|c| path_allowed(c, path)) {
            if !may_read(member.name()) {
                misses.missing += 1;
                continue;
            }
            let result = match (&member, op) {
                (Repo::Local(local), ReadOp::Get(range)) => local.get(path, range).await,
                (Repo::Local(local), ReadOp::Head) => local.head(path).await,
                (Repo::Remote(remote), ReadOp::Get(range)) => remote.get(path, range).await,
                (Repo::Remote(remote), ReadOp::Head) => remote.head(path).await,
                (Repo::Virtual(_), _) => continue,
            };
            let member = member.name().to_string();
            match result {
                Ok(served) => return Ok(VirtualServed { served, member }),
                Err(e) => misses.record(name, &member, e)?,
            }
        }
        Err(misses.into_error())
    }

    /// A registry request (`/v2/{name}/{image}/...`) to docker virtual repository `name`.
    /// `image` is the name as sent; each remote member adds `library/` for Docker Hub itself.
    pub async fn docker_virtual_read(
        &self,
        name: &str,
        image: &[String],
        endpoint: &Endpoint,
        page: &TagPage,
        op: ReadOp,
        may_read: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<VirtualServed> {
        let repo = self.virtual_repo(name)?;
        let segments: Vec<&str> = image.iter().map(String::as_str).collect();
        let requested = ImageName::from_segments(&segments)?;
        if !image_allowed(&repo.config, &requested, endpoint) {
            return Err(Error::Forbidden);
        }
        let mut members = repo.members(&|c| image_allowed(c, &requested, endpoint));
        let memory_key = (name.to_string(), requested.to_string());
        if matches!(endpoint, Endpoint::Blob(_)) {
            let source = self.virtuals.manifest_source.get(&memory_key);
            if let Some(pos) = source.and_then(|s| members.iter().position(|m| m.name() == s)) {
                let first = members.remove(pos);
                members.insert(0, first);
            }
        }
        let mut misses = Misses::default();
        for member in members {
            // Pushing into local docker repositories is not supported: they hold no images.
            let Repo::Remote(remote) = member else {
                misses.missing += 1;
                continue;
            };
            if !may_read(remote.name()) {
                misses.missing += 1;
                continue;
            }
            let member = remote.name().to_string();
            let mut image = requested.clone();
            if remote.is_docker_hub() {
                image = image.with_library_prefix();
            }
            let result = match remote.docker_fetch(&image, endpoint, page) {
                Ok(fetch) => match op {
                    ReadOp::Get(range) => remote.get_fetch(fetch, range).await,
                    ReadOp::Head => remote.head_fetch(&fetch).await,
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(served) => {
                    if matches!(endpoint, Endpoint::Manifest(_)) {
                        self.virtuals
                            .manifest_source
                            .insert(memory_key, member.clone());
                    }
                    return Ok(VirtualServed { served, member });
                }
                Err(e) => misses.record(name, &member, e)?,
            }
        }
        Err(misses.into_error())
    }
}

/// include_patterns of a plain repository: a file must match its path; index files are exempt.
pub(super) fn path_allowed(cfg: &VirtualConfig, path: &RepoPath) -> bool {
    let patterns = &cfg.include_patterns;
    patterns.is_empty()
        || classify(cfg.package, path.as_str(), &cfg.index_patterns) == CacheClass::Index
        || patterns.iter().any(|p| p.is_match(path.as_str()))
}

/// include_patterns on registries: the image (`library/nginx`) or the full path must match.
fn image_allowed(cfg: &VirtualConfig, name: &ImageName, endpoint: &Endpoint) -> bool {
    let patterns = &cfg.include_patterns;
    if patterns.is_empty() {
        return true;
    }
    let image = name.image();
    let full = format!("{name}/{}", endpoint.tail());
    patterns
        .iter()
        .any(|p| p.is_match(&image) || p.is_match(&full))
}
