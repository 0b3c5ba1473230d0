//! Finding repositories: the opened repository of a name (one lookup, one typed error for an
//! unknown name or the wrong kind), and the target of a `/v2/` request: a docker virtual
//! repository, a remote named by the first segment, or a mirror chosen by upstream host.

use std::sync::Arc;

use super::{Engine, LocalRepo, RemoteRepo, VirtualRepo};
use crate::config::{PackageKind, RepoKind};
use crate::error::{Error, Result};
use crate::package::docker::{DOCKER_HUB_HOSTS, ImageName, V2Path};

/// An opened repository.
#[derive(Clone)]
pub enum Repo {
    Local(Arc<LocalRepo>),
    Remote(Arc<RemoteRepo>),
    Virtual(Arc<VirtualRepo>),
}

impl Repo {
    pub fn name(&self) -> &str {
        match self {
            Repo::Local(r) => r.name(),
            Repo::Remote(r) => r.name(),
            Repo::Virtual(r) => r.name(),
        }
    }

    pub fn kind(&self) -> RepoKind {
        match self {
            Repo::Local(_) => RepoKind::Local,
            Repo::Remote(_) => RepoKind::Remote,
            Repo::Virtual(_) => RepoKind::Virtual,
        }
    }

    pub fn package(&self) -> PackageKind {
        match self {
            Repo::Local(r) => r.package(),
            Repo::Remote(r) => r.package(),
            Repo::Virtual(r) => r.package(),
        }
    }

    /// The error for asking this repository to be of `expected` kind.
    fn not_a(&self, expected: RepoKind) -> Error {
        Error::WrongRepositoryType {
            name: self.name().to_string(),
            actual: self.kind().as_str(),
            expected: expected.as_str(),
        }
    }
}

/// What a `/v2/` request is for.
pub enum V2Target {
    /// A docker virtual repository, named by the first segment; the image is the rest.
    Virtual(Arc<VirtualRepo>),
    /// A docker remote (named, or a mirror) and the image as that remote's upstream names it.
    Remote(Arc<RemoteRepo>, ImageName),
}

impl Engine {
    /// The repository `name`, of whatever kind.
    pub fn repo(&self, name: &str) -> Result<&Repo> {
        self.repos
            .get(name)
            .ok_or_else(|| Error::UnknownRepository(name.to_string()))
    }

    /// The remote repository `name`: unknown names and other repository types are errors.
    pub fn remote(&self, name: &str) -> Result<&Arc<RemoteRepo>> {
        match self.repo(name)? {
            Repo::Remote(r) => Ok(r),
            other => Err(other.not_a(RepoKind::Remote)),
        }
    }

    /// The local repository `name`: unknown names and other repository types are errors.
    pub fn local(&self, name: &str) -> Result<&Arc<LocalRepo>> {
        match self.repo(name)? {
            Repo::Local(r) => Ok(r),
            other => Err(other.not_a(RepoKind::Local)),
        }
    }

    /// The virtual repository `name`: unknown names and other repository types are errors.
    pub fn virtual_repo(&self, name: &str) -> Result<&Arc<VirtualRepo>> {
        match self.repo(name)? {
            Repo::Virtual(r) => Ok(r),
            other => Err(other.not_a(RepoKind::Virtual)),
        }
    }

    /// Every remote repository, by name.
    pub fn remotes(&self) -> impl Iterator<Item = &Arc<RemoteRepo>> {
        self.repos.values().filter_map(|r| match r {
            Repo::Remote(r) => Some(r),
            _ => None,
        })
    }

    /// What a `/v2/` path names. The first segment is a repository name when one is configured
    /// by that name (a docker virtual or remote repository); otherwise the request is for a
    /// mirror, chosen by containerd's `ns` host, else the Docker Hub mirror, else the only
    /// mirror.
    ///
    /// `authorize` is asked about the repository before anything else is said of it, so that a
    /// caller without a role learns nothing of which repositories exist. A name that is neither
    /// a repository nor served by a mirror is authorized as if it were one.
    pub fn docker_target(
        &self,
        v2: &V2Path,
        ns: Option<&str>,
        authorize: &(dyn Fn(&str) -> Result<()> + Sync),
    ) -> Result<V2Target> {
        let first = v2.segments[0].as_str();
        let found = self.repos.get(first);
        if found.is_some() {
            authorize(first)?;
        }
        let (repo, rest) = match found {
            Some(found) if found.package() != PackageKind::Docker => {
                return Err(Error::WrongPackage {
                    name: first.to_string(),
                    actual: found.package().as_str(),
                    expected: "docker",
                });
            }
            Some(Repo::Virtual(v)) => return Ok(V2Target::Virtual(v.clone())),
            Some(Repo::Remote(r)) => (r.clone(), &v2.segments[1..]),
            Some(other) => return Err(other.not_a(RepoKind::Remote)),
            None => {
                let Some(mirror) = self.mirror_for(ns) else {
                    authorize(first)?;
                    return Err(Error::UnknownRepository(first.to_string()));
                };
                authorize(mirror.name())?;
                (mirror, &v2.segments[..])
            }
        };
        let segs: Vec<&str> = rest.iter().map(String::as_str).collect();
        let mut name = ImageName::from_segments(&segs)?;
        if repo.is_docker_hub() {
            name = name.with_library_prefix();
        }
        Ok(V2Target::Remote(repo, name))
    }

    fn mirror_for(&self, ns: Option<&str>) -> Option<Arc<RemoteRepo>> {
        let mirrors: Vec<&Arc<RemoteRepo>> = self
            .remotes()
            .filter(|r| !r.config().mirror_of.is_empty())
            .collect();
        let by_host = |host: &str| {
            mirrors
                .iter()
                .find(|r| r.config().mirror_of.iter().any(|h| h == host))
                .map(|r| (*r).clone())
        };
        match ns {
            Some(host) if DOCKER_HUB_HOSTS.contains(&host) => {
                DOCKER_HUB_HOSTS.iter().find_map(|h| by_host(h))
            }
            Some(host) => by_host(host),
            None => DOCKER_HUB_HOSTS
                .iter()
                .find_map(|h| by_host(h))
                .or_else(|| (mirrors.len() == 1).then(|| mirrors[0].clone())),
        }
    }
}
