//! PyPI in local and virtual repositories: the legacy upload API that twine and `uv publish`
//! use (files kept under `packages/{project}/{filename}`, checked against the sha256 the
//! client sends), Simple API pages generated from what is stored, and a virtual repository's
//! pages merged from its members. Also the answer every pypi page is sent as.

use bytes::Bytes;
use futures::Stream;

use super::local::Uploaded;
use super::virtual_repo::{Misses, path_allowed};
use super::{CacheStatus, Engine, LocalRepo, Repo, RepoPath, Served};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::package::pypi::{self, DistFile, Form, Page, ProjectPage};
use crate::storage::ByteStream;

/// Where uploaded files live in a local pypi repository.
const PACKAGES: &str = "packages";

/// Directory entries read per storage listing while a page is generated.
const LIST_BATCH: usize = 1000;

/// What an upload's form fields say about the file that follows them.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    pub name: String,
    pub version: String,
    pub filename: String,
    pub sha256: Option<Sha256Digest>,
}

impl Upload {
    /// The path the file is stored at, once its fields are checked: the file name must be a
    /// distribution of `name` (wheel or sdist) and `version`.
    pub fn path(&self) -> Result<RepoPath> {
        let bad = |m: String| Err(Error::BadRequest(m));
        if !pypi::is_valid_name(&self.name) {
            return bad(format!("{:?} is not a valid project name", self.name));
        }
        if self.version.is_empty() {
            return bad("the upload has no version".into());
        }
        let f = self.filename.as_str();
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '!');
        if f.is_empty() || f.len() > 255 || !f.chars().all(allowed) || f.starts_with('.') {
            return bad(format!("{f:?} is not a distribution file name"));
        }
        let project_part = if let Some(stem) = f.strip_suffix(".whl") {
            stem.split('-').next().unwrap_or("")
        } else if let Some(stem) = [".tar.gz", ".zip", ".tar.bz2"]
            .iter()
            .find_map(|ext| f.strip_suffix(ext))
        {
            stem.rsplit_once('-').map_or("", |(name, _)| name)
        } else {
            return bad(format!(
                "{f:?} is neither a wheel (.whl) nor an sdist (.tar.gz, .zip)"
            ));
        };
        let project = pypi::normalize(&self.name);
        if pypi::normalize(project_part) != project {
            return bad(format!("{f:?} is not a file of project {:?}", self.name));
        }
        RepoPath::parse(&format!("{PACKAGES}/{project}/{f}"))
    }
}

impl LocalRepo {
    /// Stores an uploaded distribution file; visible only once whole and, when the client
    /// sent one, matching its sha256.
    pub async fn pypi_upload<S>(&self, upload: &Upload, body: S) -> Result<Uploaded>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send,
    {
        let path = upload.path()?;
        self.put(&path, body, None, upload.sha256.as_ref(), None)
            .await
    }

    /// The project list (`project: None`) or one project's page, generated from the stored
    /// files; `NotFound` for a project with none.
    pub async fn pypi_read(&self, project: Option<&str>) -> Result<PypiPage> {
        let page = match project {
            None => Page::Index(
                self.list_all(PACKAGES)
                    .await?
                    .into_iter()
                    .filter(|e| e.kind == "directory")
                    .map(|e| e.name)
                    .collect(),
            ),
            Some(p) => {
                let files = self
                    .list_all(&format!("{PACKAGES}/{p}"))
                    .await?
                    .into_iter()
                    .filter(|e| e.kind == "file")
                    .map(|e| DistFile {
                        url: format!("../../{PACKAGES}/{p}/{}", e.name),
                        hashes: e
                            .sha256
                            .map(|d| [("sha256".to_string(), d.hex())].into())
                            .unwrap_or_default(),
                        filename: e.name,
                        requires_python: None,
                        yanked: None,
                        core_metadata: None,
                        extra: Default::default(),
                    })
                    .collect::<Vec<_>>();
                if files.is_empty() {
                    return Err(Error::NotFound);
                }
                Page::Project(ProjectPage {
                    name: p.to_string(),
                    files,
                    extra: Default::default(),
                    api_version: "1.0".into(),
                })
            }
        };
        Ok(PypiPage {
            page,
            cache: CacheStatus::Hit,
            last_modified: None,
        })
    }

    /// Every entry of directory `dir`, read a batch at a time; none when it does not exist.
    async fn list_all(&self, dir: &str) -> Result<Vec<super::local::ListEntry>> {
        let dir = RepoPath::parse(dir)?;
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = match self.list(Some(&dir), after.as_deref(), LIST_BATCH).await {
                Ok(p) => p,
                Err(Error::NotFound) => return Ok(out),
                Err(e) => return Err(e),
            };
            out.extend(page.entries);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }
}

/// Where a pypi virtual repository's pages link a member's files: `members/{member}/`, then
/// the path the member's own page used.
pub const MEMBERS: &str = "members";

impl Engine {
    /// The project list or one project's page of pypi virtual repository `name`, merged
    /// across the members the caller may read (`may_read`), in order; for a file name, the
    /// first member that lists it wins. A project that any local member holds is taken from
    /// local members only, so a public project of the same name never reaches the page (a
    /// local member that fails is an error, not a reason to ask the remotes).
    pub async fn pypi_virtual_read(
        &self,
        name: &str,
        project: Option<&str>,
        may_read: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<PypiPage> {
        let repo = self.virtual_repo(name)?;
        let members: Vec<Repo> = repo
            .members(&|_| true)
            .into_iter()
            .filter(|m| may_read(m.name()))
            .collect();
        let mut misses = Misses::default();
        let mut found: Vec<(String, PypiPage)> = Vec::new();
        for m in &members {
            if let Repo::Local(local) = m {
                match local.pypi_read(project).await {
                    Ok(p) => found.push((local.name().to_string(), p)),
                    Err(Error::NotFound) => misses.missing += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        if project.is_none() || found.is_empty() {
            for m in &members {
                if let Repo::Remote(remote) = m {
                    match remote.pypi_read(project).await {
                        Ok(p) => found.push((remote.name().to_string(), p)),
                        Err(e) => misses.record(name, remote.name(), e)?,
                    }
                }
            }
            // Keep the members' order for the merge.
            found.sort_by_key(|(m, _)| members.iter().position(|r| r.name() == m));
        }
        if found.is_empty() {
            return Err(misses.into_error());
        }
        let cache = found
            .iter()
            .map(|(_, p)| p.cache)
            .max_by_key(|c| freshness_rank(*c))
            .unwrap_or(CacheStatus::Hit);
        let page = match project {
            None => Page::Index(pypi::merge_indexes(
                found
                    .into_iter()
                    .filter_map(|(_, p)| match p.page {
                        Page::Index(names) => Some(names),
                        Page::Project(_) => None,
                    })
                    .collect(),
            )),
            Some(project) => {
                let pages = found
                    .into_iter()
                    .filter_map(|(member, p)| match p.page {
                        Page::Project(mut page) => {
                            for f in &mut page.files {
                                if let Some(rest) = f.url.strip_prefix("../../") {
                                    f.url = format!("../../{MEMBERS}/{member}/{rest}");
                                }
                            }
                            Some(page)
                        }
                        Page::Index(_) => None,
                    })
                    .collect();
                Page::Project(pypi::merge_projects(project, pages))
            }
        };
        Ok(PypiPage {
            page,
            cache,
            last_modified: None,
        })
    }

    /// The member of pypi virtual repository `name` that a page's `members/{member}/` link
    /// names, when the caller may read it and `rest` passes the virtual's patterns.
    pub fn pypi_virtual_member(
        &self,
        name: &str,
        member: &str,
        rest: &RepoPath,
        may_read: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Repo> {
        let repo = self.virtual_repo(name)?;
        if !path_allowed(repo.config(), rest) {
            return Err(Error::Forbidden);
        }
        repo.members(&|c| path_allowed(c, rest))
            .into_iter()
            .find(|m| m.name() == member && may_read(member))
            .ok_or(Error::NotFound)
    }
}

/// Orders cache states from freshest to least fresh: a merged page is as fresh as its least
/// fresh part.
fn freshness_rank(c: CacheStatus) -> u8 {
    match c {
        CacheStatus::Hit => 0,
        CacheStatus::Revalidated => 1,
        CacheStatus::Miss => 2,
        CacheStatus::Bypass => 3,
        CacheStatus::Stale => 4,
    }
}

/// A Simple API page a repository gave, and how fresh it was.
pub struct PypiPage {
    pub page: Page,
    pub cache: CacheStatus,
    pub last_modified: Option<String>,
}

impl PypiPage {
    /// The page written in `form`, as an answer (off the runtime: the project list of a
    /// large index is tens of megabytes).
    pub async fn served(self, form: Form) -> Result<Served> {
        let PypiPage {
            page,
            cache,
            last_modified,
        } = self;
        let out = tokio::task::spawn_blocking(move || page.render(form))
            .await
            .map_err(|e| Error::storage("writing a page")(std::io::Error::other(e)))?;
        Ok(page_served(out, form, cache, last_modified))
    }
}

/// A written Simple API page as an answer: its own entity tag, its form's media type.
pub(crate) fn page_served(
    out: Vec<u8>,
    form: Form,
    cache: CacheStatus,
    last_modified: Option<String>,
) -> Served {
    let etag = format!("\"{}\"", &Sha256Digest::of(&out).hex()[..32]);
    let len = out.len() as u64;
    let body: ByteStream = Box::pin(futures::stream::once(async move { Ok(Bytes::from(out)) }));
    Served {
        cache,
        content_length: Some(len),
        range: None,
        content_type: Some(form.content_type().to_string()),
        etag: Some(etag),
        last_modified,
        digest: None,
        body: Some(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(name: &str, filename: &str) -> Upload {
        Upload {
            name: name.into(),
            version: "1.0".into(),
            filename: filename.into(),
            sha256: None,
        }
    }

    #[test]
    fn uploads_are_kept_under_the_normalised_project() {
        let ok = [
            (
                "Demo_Pkg",
                "demo_pkg-1.0-py3-none-any.whl",
                "packages/demo-pkg/demo_pkg-1.0-py3-none-any.whl",
            ),
            (
                "demo-pkg",
                "demo-pkg-1.0.tar.gz",
                "packages/demo-pkg/demo-pkg-1.0.tar.gz",
            ),
            (
                "zope.interface",
                "zope.interface-1.0.zip",
                "packages/zope-interface/zope.interface-1.0.zip",
            ),
        ];
        for (name, file, path) in ok {
            assert_eq!(upload(name, file).path().unwrap().as_str(), path);
        }
        for (name, file) in [
            ("demo", "other-1.0.tar.gz"),
            ("demo", "demo-1.0.exe"),
            ("demo", "../demo-1.0.tar.gz"),
            ("demo", "demo%2F-1.0.tar.gz"),
            ("demo", ".demo-1.0.tar.gz"),
            ("-bad", "-bad-1.0.tar.gz"),
        ] {
            assert!(
                matches!(upload(name, file).path(), Err(Error::BadRequest(_))),
                "{name} {file}"
            );
        }
        let mut u = upload("demo", "demo-1.0.tar.gz");
        u.version.clear();
        assert!(u.path().is_err());
    }
}
