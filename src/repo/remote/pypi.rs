//! PyPI remotes: Simple API pages are cached as the upstream wrote them (index class: fresh
//! for `index_ttl`, revalidated, served stale when upstream is down) and written out on each
//! request in the form the client asks for, every file link pointing back at this remote's
//! `files/{sha256}/` route; the files are file class, checked against that sha256 before they
//! are committed.

use std::sync::Arc;

use futures::StreamExt;

use super::{Fetch, Origin, RemoteRepo};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::package::CacheClass;
use crate::package::pypi::{self, Form, Page};
use crate::path::RepoPath;
use crate::repo::Served;
use crate::repo::pypi::PypiPage;
use crate::storage::ByteStream;

/// Upstream pages larger than this are refused. PyPI's list of every project, the largest
/// page there is, is about 30 MB.
const MAX_PAGE: usize = 128 * 1024 * 1024;

impl RemoteRepo {
    /// The project list (`project: None`) or one project's page (its name normalised), in
    /// `form`.
    pub async fn pypi_page(self: &Arc<Self>, project: Option<&str>, form: Form) -> Result<Served> {
        self.pypi_read(project).await?.served(form).await
    }

    /// The project list or one project's page, its file links rewritten. The upstream page
    /// is read whole (once) to be parsed; it is an index, not an artifact.
    pub async fn pypi_read(self: &Arc<Self>, project: Option<&str>) -> Result<PypiPage> {
        let dir = match project {
            Some(p) => format!("simple/{p}"),
            None => "simple".to_string(),
        };
        let upstream_path = RepoPath::parse(&dir)?;
        let fetch = Fetch {
            key: format!("{}/{dir}/_index", self.name),
            upstream_path: upstream_path.clone(),
            origin: Origin::BaseDirectory,
            query: None,
            class: CacheClass::Index,
            accept: Some(pypi::UPSTREAM_ACCEPT),
            scope: None,
            expected_digest: None,
            integrity: None,
            manifest: None,
        };
        let served = self.get_fetch(fetch, None).await?;
        let body = read_page(served.body).await?;
        let upstream_form = Form::of_page(served.content_type.as_deref(), &body);
        let page_url = reqwest::Url::parse(&format!("{}/", self.upstream.url(&upstream_path)))
            .map_err(|e| Error::UpstreamUnreachable(format!("page URL: {e}")))?;
        let files_prefix = format!(
            "{}/",
            self.files
                .as_ref()
                .unwrap_or(&self.upstream)
                .base()
                .as_prefix()
        );
        let name = project.map(str::to_string);
        let page = tokio::task::spawn_blocking(move || -> Result<Page> {
            let Some(name) = name else {
                return Ok(Page::Index(pypi::read_index(&body, upstream_form)?));
            };
            let mut page = pypi::read_project(&body, upstream_form, &name, &page_url)?;
            for f in &mut page.files {
                let sha256 = f.hashes.get("sha256").map(String::as_str);
                if let Some(link) = file_link(&f.url, sha256, &files_prefix) {
                    f.url = link;
                }
            }
            Ok(Page::Project(page))
        })
        .await
        .map_err(|e| Error::UpstreamUnreachable(format!("reading the page: {e}")))??;
        Ok(PypiPage {
            page,
            cache: served.cache,
            last_modified: served.last_modified,
        })
    }

    /// The fetch of a file a page linked to: `path` under `files_url`, stored once however
    /// many pages link to it, and checked against `sha256` (a `.metadata` file's own hash is
    /// on the page, not in its link: clients check that one).
    pub fn pypi_file(&self, sha256: Option<Sha256Digest>, path: &RepoPath) -> Result<Fetch> {
        self.check_allowed(path, CacheClass::File)?;
        Ok(Fetch {
            key: format!("{}/files/{path}", self.name),
            upstream_path: path.clone(),
            origin: Origin::Files,
            query: None,
            class: CacheClass::File,
            accept: None,
            scope: None,
            expected_digest: sha256.filter(|_| !path.as_str().ends_with(".metadata")),
            integrity: None,
            manifest: None,
        })
    }
}

/// The link, relative to a project page of this remote, that replaces `url` (absolute, as the
/// upstream page gave it): `../../files/{sha256 or -}/{path under files_url}`. URLs elsewhere
/// are left as they are.
fn file_link(url: &str, sha256: Option<&str>, files_prefix: &str) -> Option<String> {
    let url = url.split('#').next().unwrap_or(url);
    let rest = url.strip_prefix(files_prefix)?;
    let rest = rest.split('?').next().unwrap_or(rest);
    if rest.is_empty() {
        return None;
    }
    let hash = sha256
        .filter(|h| Sha256Digest::from_hex(h).is_ok())
        .unwrap_or("-");
    Some(format!("../../files/{hash}/{rest}"))
}

/// A page's body, whole, refused past [`MAX_PAGE`].
async fn read_page(body: Option<ByteStream>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let Some(mut body) = body else {
        return Ok(out);
    };
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| Error::UpstreamUnreachable(format!("reading the page: {e}")))?;
        if out.len() + chunk.len() > MAX_PAGE {
            return Err(Error::UpstreamUnreachable(format!(
                "index page larger than {MAX_PAGE} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_under_files_url_come_back_here_with_their_hash() {
        let hex = "0f".repeat(32);
        let prefix = "https://files.example/";
        assert_eq!(
            file_link(
                "https://files.example/packages/ab/demo-1.0.whl#sha256=x",
                Some(&hex),
                prefix
            )
            .unwrap(),
            format!("../../files/{hex}/packages/ab/demo-1.0.whl")
        );
        assert_eq!(
            file_link(
                "https://files.example/demo.tar.gz?sig=1",
                Some("short"),
                prefix
            )
            .unwrap(),
            "../../files/-/demo.tar.gz"
        );
        assert_eq!(
            file_link("https://elsewhere.example/demo.whl", None, prefix),
            None
        );
        assert_eq!(
            file_link("https://files.example.evil/demo.whl", None, prefix),
            None
        );
    }
}
