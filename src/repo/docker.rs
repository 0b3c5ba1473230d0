//! Docker/OCI remotes: which remote and image a `/v2/` request means (prefix or mirror mode),
//! and the fetch of each registry endpoint (keys, classes, digests, token scopes).

use super::remote::{Fetch, ManifestRules, Origin};
use super::{RemoteRepo, RepoPath};
use crate::error::{Error, Result};
use crate::package::docker::{
    BLOB_ACCEPT, DOCKER_HUB_HOSTS, Endpoint, ImageName, MANIFEST_ACCEPT, Reference, Tag,
    parse_v2_path,
};

/// `n` and `last` of a tag list request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagPage {
    pub n: Option<u32>,
    pub last: Option<Tag>,
}

impl TagPage {
    fn is_empty(&self) -> bool {
        self.n.is_none() && self.last.is_none()
    }
}

impl RemoteRepo {
    /// True when the upstream is Docker Hub (one-segment names get `library/`).
    pub fn is_docker_hub(&self) -> bool {
        let cfg = self.config();
        cfg.mirror_of
            .iter()
            .any(|h| DOCKER_HUB_HOSTS.contains(&h.as_str()))
            || cfg
                .base_url
                .url()
                .host_str()
                .is_some_and(|h| DOCKER_HUB_HOSTS.contains(&h))
    }

    /// include_patterns on registries match the image (`library/nginx`) or the full path
    /// (`library/nginx/manifests/latest`); there is no index exemption.
    fn check_image_allowed(&self, name: &ImageName, endpoint: &Endpoint) -> Result<()> {
        let patterns = &self.config().include_patterns;
        if patterns.is_empty() {
            return Ok(());
        }
        let image = name.image();
        let full = format!("{name}/{}", endpoint.tail());
        if patterns
            .iter()
            .any(|p| p.is_match(&image) || p.is_match(&full))
        {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }

    /// A registry path asked for under `/api/v1/remote/{remote}/` (`{name}/manifests/{ref}`,
    /// `{name}/blobs/{digest}`, `{name}/tags/list`): the same fetch as under `/v2/`, so both
    /// routes share keys, classes and digest checks.
    pub fn docker_path_fetch(&self, raw: &str) -> Result<Fetch> {
        let v2 = parse_v2_path(raw).map_err(|e| match e {
            Error::Unsupported(m) => Error::BadRequest(format!("not a registry path: {m}")),
            e => e,
        })?;
        let segs: Vec<&str> = v2.segments.iter().map(String::as_str).collect();
        let mut name = ImageName::from_segments(&segs)?;
        if self.is_docker_hub() {
            name = name.with_library_prefix();
        }
        self.docker_fetch(&name, &v2.endpoint, &TagPage::default())
    }

    /// The fetch of one registry endpoint of image `name`.
    pub fn docker_fetch(
        &self,
        name: &ImageName,
        endpoint: &Endpoint,
        page: &TagPage,
    ) -> Result<Fetch> {
        self.check_image_allowed(name, endpoint)?;
        let repo = self.name();
        let upstream_path = RepoPath::parse(&format!("v2/{name}/{}", endpoint.tail()))?;
        let scope = Some(format!("repository:{name}:pull"));
        let fetch = match endpoint {
            Endpoint::Manifest(Reference::Tag(tag)) => Fetch {
                key: format!("{repo}/images/{name}/_manifests/{}", tag.as_str()),
                upstream_path,
                origin: Origin::Base,
                query: None,
                class: endpoint.class(),
                accept: Some(MANIFEST_ACCEPT),
                scope,
                expected_digest: None,
                integrity: None,
                manifest: Some(ManifestRules {
                    digest_alias_prefix: Some(format!("{repo}/images/{name}/_manifests/")),
                }),
            },
            Endpoint::Manifest(Reference::Digest(d)) => Fetch {
                key: format!("{repo}/images/{name}/_manifests/{}", d.as_str()),
                upstream_path,
                origin: Origin::Base,
                query: None,
                class: endpoint.class(),
                accept: Some(MANIFEST_ACCEPT),
                scope,
                expected_digest: Some(d.sha256()),
                integrity: None,
                manifest: Some(ManifestRules {
                    digest_alias_prefix: None,
                }),
            },
            Endpoint::Blob(d) => Fetch {
                // Blobs are shared by every image of the remote.
                key: format!("{repo}/blobs/sha256/{}", d.hex()),
                upstream_path,
                origin: Origin::Base,
                query: None,
                class: endpoint.class(),
                accept: Some(BLOB_ACCEPT),
                scope,
                expected_digest: Some(d.sha256()),
                integrity: None,
                manifest: None,
            },
            Endpoint::TagsList => {
                let mut query = Vec::new();
                let mut suffix = String::new();
                if let Some(n) = page.n {
                    query.push(format!("n={n}"));
                    suffix.push_str(&format!(".n={n}"));
                }
                if let Some(last) = &page.last {
                    query.push(format!("last={}", last.as_str()));
                    suffix.push_str(&format!(".last={}", last.as_str()));
                }
                Fetch {
                    key: format!("{repo}/images/{name}/_tags/list{suffix}"),
                    upstream_path,
                    origin: Origin::Base,
                    query: (!page.is_empty()).then(|| query.join("&")),
                    class: endpoint.class(),
                    accept: Some("application/json"),
                    scope,
                    expected_digest: None,
                    integrity: None,
                    manifest: None,
                }
            }
        };
        Ok(fetch)
    }
}
