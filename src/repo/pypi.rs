//! PyPI in local repositories: the legacy upload API that twine and `uv publish` use (files
//! kept under `packages/{project}/{filename}`, checked against the sha256 the client sends) and
//! Simple API pages generated from what is stored. Also the answer every pypi page is sent as.

use bytes::Bytes;
use futures::Stream;

use super::local::Uploaded;
use super::{CacheStatus, LocalRepo, RepoPath, Served};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::package::pypi::{self, DistFile, Form, ProjectPage};
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
    /// files, in `form`.
    pub async fn pypi_page(&self, project: Option<&str>, form: Form) -> Result<Served> {
        let out = match project {
            None => {
                let names: Vec<String> = self
                    .list_all(PACKAGES)
                    .await?
                    .into_iter()
                    .filter(|e| e.kind == "directory")
                    .map(|e| e.name)
                    .collect();
                pypi::render_index(&names, form)
            }
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
                let page = ProjectPage {
                    name: p.to_string(),
                    files,
                    extra: Default::default(),
                    api_version: "1.0".into(),
                };
                pypi::render_project(&page, form)
            }
        };
        Ok(page_served(out, form, CacheStatus::Hit, None))
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
