//! What an upstream said, in the core's terms: a body with its head, "not modified", "not
//! found", "denied" or another status. The reqwest response stops here.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{
    CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, HeaderMap, HeaderName, LAST_MODIFIED,
};
use reqwest::{Response, StatusCode};

use super::{Validators, transport_error};
use crate::error::Result;

/// The registry header carrying a content digest.
pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// The body of an answer, streamed as it arrives; a failure mid-body is a core error.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Response details that describe a body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub content_length: Option<u64>,
    /// The content digest upstream announced (`Docker-Content-Digest`); a fill of a known
    /// digest puts the one it asked for here.
    pub digest: Option<String>,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Where the body starts in the object: set for a 206 answer to a `Range` request.
    pub range_start: Option<u64>,
}

/// An upstream's answer to one request.
pub enum Answer {
    /// 200: the object (an empty stream for a `HEAD`); or 206, the object from
    /// `head.range_start` on, in answer to `RequestOptions::range_from`.
    Body { head: Head, stream: BodyStream },
    /// 304: the cached copy is current; these are its new validators, if upstream sent any.
    NotModified { validators: Validators },
    /// 404 or 410.
    NotFound,
    /// 401 or 403 after any challenge was answered.
    Denied { status: u16 },
    /// Any other status.
    Failed { status: u16 },
}

impl Answer {
    pub(super) fn from_response(resp: Response) -> Answer {
        let status = resp.status();
        match status {
            // A 206 is a body only with the offset it starts at.
            StatusCode::PARTIAL_CONTENT if range_start(resp.headers()).is_none() => {
                Answer::Failed {
                    status: status.as_u16(),
                }
            }
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => Answer::Body {
                head: Head {
                    range_start: (status == StatusCode::PARTIAL_CONTENT)
                        .then(|| range_start(resp.headers()))
                        .flatten(),
                    ..head_of(resp.headers())
                },
                stream: resp
                    .bytes_stream()
                    .map(|c| c.map_err(transport_error))
                    .boxed(),
            },
            StatusCode::NOT_MODIFIED => Answer::NotModified {
                validators: Validators {
                    etag: header(resp.headers(), &ETAG),
                    last_modified: header(resp.headers(), &LAST_MODIFIED),
                },
            },
            StatusCode::NOT_FOUND | StatusCode::GONE => Answer::NotFound,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Answer::Denied {
                status: status.as_u16(),
            },
            s => Answer::Failed { status: s.as_u16() },
        }
    }
}

fn head_of(headers: &HeaderMap) -> Head {
    Head {
        content_length: header(headers, &CONTENT_LENGTH).and_then(|v| v.trim().parse().ok()),
        digest: header(headers, &DOCKER_CONTENT_DIGEST),
        content_type: header(headers, &CONTENT_TYPE),
        etag: header(headers, &ETAG),
        last_modified: header(headers, &LAST_MODIFIED),
        range_start: None,
    }
}

/// The first byte of a `Content-Range: bytes A-B/N` header.
fn range_start(headers: &HeaderMap) -> Option<u64> {
    let v = header(headers, &CONTENT_RANGE)?;
    let (a, _) = v.trim().strip_prefix("bytes ")?.split_once('-')?;
    a.parse().ok()
}

fn header(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
