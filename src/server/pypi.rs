//! PyPI routes: on a pypi remote `/api/v1/remote/{repo}/simple/…` and the `files/…` its pages
//! link to; on a pypi local repository `simple/…` generated from its files, and the legacy
//! upload API (`POST /api/v1/local/{repo}/`, multipart, as twine and `uv publish` send it).
//! On a pypi virtual repository, pages merged from the members and the member files they link
//! to. Pages come in the form the client's `Accept` (or `?format=`) asks for, with
//! `Vary: Accept`.
//! Other paths are plain files of the repository.

use std::sync::Arc;

use axum::extract::Multipart;
use axum::extract::multipart::{Field, MultipartRejection};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use futures::TryStreamExt;

use super::remote::read_fetch;
use super::respond::{Answer, read_op};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::package::pypi::{self, Form, Route};
use crate::repo::local::Uploaded;
use crate::repo::pypi::MEMBERS;
use crate::repo::pypi::Upload;
use crate::repo::virtual_repo::ReadOp;
use crate::repo::{Engine, LocalRepo, RemoteRepo, Repo, RepoPath};

/// The most bytes a text field of an upload may have; the file itself streams.
const MAX_FIELD: usize = 1024 * 1024;

/// Answers `tail` (raw, after the repository name) of the pypi remote `repo`. `query` is the
/// raw query string.
pub(super) async fn remote(
    repo: &Arc<RemoteRepo>,
    tail: &str,
    query: Option<&str>,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Answer> {
    let op = read_op(method, headers);
    let route = match pypi::route(tail) {
        Err(crate::error::Error::NotFound) => {
            let fetch = repo.path_fetch(&RepoPath::parse(tail)?)?;
            return Ok(Answer::Served(read_fetch(repo, fetch, op).await?, false));
        }
        r => r?,
    };
    let project = match route {
        Route::Redirect(to) => return Ok(Answer::Redirect(redirect(&to))),
        Route::File { sha256, path } => {
            let fetch = repo.pypi_file(sha256, &path)?;
            return Ok(Answer::Served(read_fetch(repo, fetch, op).await?, false));
        }
        Route::Index => None,
        Route::Project(p) => Some(p),
    };
    let form = form_of(query, headers);
    let mut s = repo.pypi_page(project.as_deref(), form).await?;
    if matches!(op, ReadOp::Head) {
        s.body = None;
    }
    Ok(Answer::Served(s, true))
}

/// A page of a pypi local repository, when `tail` is one: `simple/…`.
pub(super) async fn local_page(
    repo: &LocalRepo,
    tail: &str,
    query: Option<&str>,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Result<Answer>> {
    let project = match pypi::route(tail) {
        Ok(Route::Index) => None,
        Ok(Route::Project(p)) => Some(p),
        Ok(Route::Redirect(to)) => return Some(Ok(Answer::Redirect(redirect(&to)))),
        Err(e @ Error::BadPath(_)) if tail.starts_with("simple/") => return Some(Err(e)),
        _ => return None,
    };
    let form = form_of(query, headers);
    let page = match repo.pypi_read(project.as_deref()).await {
        Ok(p) => p.served(form).await,
        Err(e) => Err(e),
    };
    Some(page.map(|mut s| {
        if method == Method::HEAD {
            s.body = None;
        }
        Answer::Served(s, true)
    }))
}

/// What a pypi virtual repository answers for `tail`: a merged page, or a member's file
/// (`members/{member}/{path as the member's page gave it}`); `None` for other paths, which
/// are plain files of the members.
pub(super) async fn virtual_page(
    engine: &Engine,
    name: &str,
    tail: &str,
    (query, method, headers): (Option<&str>, &Method, &HeaderMap),
    may_read: &(dyn Fn(&str) -> bool + Sync),
) -> Option<Result<(Answer, Option<String>)>> {
    if let Some(link) = tail.strip_prefix(MEMBERS).and_then(|t| t.strip_prefix('/')) {
        return Some(member_file(engine, name, link, (query, method, headers), may_read).await);
    }
    let project = match pypi::route(tail) {
        Ok(Route::Index) => None,
        Ok(Route::Project(p)) => Some(p),
        Ok(Route::Redirect(to)) => return Some(Ok((Answer::Redirect(redirect(&to)), None))),
        Err(e @ Error::BadPath(_)) if tail.starts_with("simple/") => return Some(Err(e)),
        _ => return None,
    };
    let form = form_of(query, headers);
    let page = match engine
        .pypi_virtual_read(name, project.as_deref(), may_read)
        .await
    {
        Ok(p) => p.served(form).await,
        Err(e) => Err(e),
    };
    Some(page.map(|mut s| {
        if method == Method::HEAD {
            s.body = None;
        }
        (Answer::Served(s, true), None)
    }))
}

/// A file a merged page links to, read from the member the link names.
async fn member_file(
    engine: &Engine,
    name: &str,
    link: &str,
    (query, method, headers): (Option<&str>, &Method, &HeaderMap),
    may_read: &(dyn Fn(&str) -> bool + Sync),
) -> Result<(Answer, Option<String>)> {
    let (member, rest) = link.split_once('/').ok_or(Error::NotFound)?;
    let path = RepoPath::parse(rest)?;
    let answer = match engine.pypi_virtual_member(name, member, &path, may_read)? {
        Repo::Remote(remote) => remote_file(&remote, rest, query, method, headers).await?,
        Repo::Local(local) => Answer::Served(
            match read_op(method, headers) {
                ReadOp::Head => local.head(&path).await?,
                ReadOp::Get(range) => local.get(&path, range).await?,
            },
            false,
        ),
        Repo::Virtual(_) => return Err(Error::NotFound),
    };
    Ok((answer, Some(member.to_string())))
}

/// A file (not a page) of a pypi remote, for a virtual repository's link.
async fn remote_file(
    repo: &Arc<RemoteRepo>,
    tail: &str,
    query: Option<&str>,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Answer> {
    if matches!(pypi::route(tail), Ok(Route::Index | Route::Project(_))) {
        return Err(Error::NotFound);
    }
    remote(repo, tail, query, method, headers).await
}

/// The form a client asks for: `?format=`, else `Accept`.
fn form_of(query: Option<&str>, headers: &HeaderMap) -> Form {
    let format = query.and_then(|q| url_pairs(q).find(|(k, _)| k == "format").map(|(_, v)| v));
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    pypi::negotiate(accept, format.as_deref())
}

/// The legacy upload API: form fields first (`:action`, `name`, `version`, `sha256_digest`,
/// and metadata that is not kept), then the file in `content`.
pub(super) async fn upload(
    repo: &LocalRepo,
    multipart: std::result::Result<Multipart, MultipartRejection>,
) -> Result<(Upload, Uploaded)> {
    let mut multipart = multipart.map_err(|e| {
        Error::BadRequest(format!(
            "an upload is a multipart/form-data POST, as twine sends it: {}",
            e.body_text()
        ))
    })?;
    let mut upload = Upload::default();
    let mut action = None;
    while let Some(field) = multipart.next_field().await.map_err(form_error)? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "content" => {
                if action.as_deref() != Some("file_upload") {
                    return Err(Error::BadRequest(
                        "`:action` must be file_upload, and come before the file".into(),
                    ));
                }
                upload.filename = field.file_name().unwrap_or("").to_string();
                let body = field.map_err(std::io::Error::other);
                let up = repo.pypi_upload(&upload, body).await?;
                return Ok((upload, up));
            }
            ":action" => action = Some(text(field).await?),
            "name" => upload.name = text(field).await?,
            "version" => upload.version = text(field).await?,
            "sha256_digest" => {
                let hex = text(field).await?.trim().to_ascii_lowercase();
                if !hex.is_empty() {
                    upload.sha256 = Some(Sha256Digest::from_hex(&hex).map_err(|_| {
                        Error::BadRequest("sha256_digest must be 64 hexadecimal digits".into())
                    })?);
                }
            }
            _ => drain(field).await?,
        }
    }
    Err(Error::BadRequest(
        "the upload has no file (a `content` field)".into(),
    ))
}

fn form_error(e: axum::extract::multipart::MultipartError) -> Error {
    Error::BadRequest(format!("reading the upload form: {}", e.body_text()))
}

/// A text field, at most [`MAX_FIELD`] bytes.
async fn text(mut field: Field<'_>) -> Result<String> {
    let mut out = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(form_error)? {
        if out.len() + chunk.len() > MAX_FIELD {
            return Err(Error::BadRequest(format!(
                "form field {:?} is larger than {MAX_FIELD} bytes",
                field.name().unwrap_or("")
            )));
        }
        out.extend_from_slice(&chunk);
    }
    String::from_utf8(out).map_err(|_| Error::BadRequest("a form field is not UTF-8".into()))
}

/// Reads a field that is not kept, without holding it.
async fn drain(mut field: Field<'_>) -> Result<()> {
    while field.chunk().await.map_err(form_error)?.is_some() {}
    Ok(())
}

/// A permanent redirect to `to`, relative to the request's URL (RFC 9110 allows it).
fn redirect(to: &str) -> Response {
    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn url_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(k), decode(v))
    })
}
