//! Turning an engine answer into an HTTP response (with the registry headers on `/v2/`),
//! counting it, and reading the `Range` header.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use futures::{FutureExt, StreamExt};
use prometheus::IntCounter;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::repo::virtual_repo::ReadOp;
use crate::repo::{CacheStatus, Served};
use crate::storage::ByteRange;

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// The registry API version, sent on every `/v2/` response.
pub const DOCKER_API_VERSION: HeaderName =
    HeaderName::from_static("docker-distribution-api-version");
/// The content digest of a registry manifest or blob.
pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// Adds the registry headers: the API version, and the content digest when known.
pub fn registry_headers(headers: &mut HeaderMap, digest: Option<&str>) {
    headers.insert(DOCKER_API_VERSION, HeaderValue::from_static("registry/2.0"));
    if let Some(d) = digest.and_then(|d| HeaderValue::from_str(d).ok()) {
        headers.insert(DOCKER_CONTENT_DIGEST, d);
    }
}

/// Counts one request to `repo` by its outcome: the cache status, or what went wrong.
pub fn record_request(
    metrics: &Metrics,
    repo: &str,
    package: &str,
    outcome: Result<CacheStatus, &Error>,
) {
    let label = match outcome {
        Ok(status) => status.as_str(),
        Err(Error::NotFound) => "NOT_FOUND",
        Err(Error::Forbidden) => "DENIED",
        Err(_) => "ERROR",
    };
    metrics
        .requests
        .with_label_values(&[repo, package, label])
        .inc();
}

/// A HEAD, or a GET with the request's range.
pub fn read_op(method: &Method, headers: &HeaderMap) -> ReadOp {
    if method == Method::HEAD {
        ReadOp::Head
    } else {
        ReadOp::Get(parse_range(headers))
    }
}

/// Bodies up to this size that are ready at once are sent as one full body.
const WHOLE_BODY_MAX: u64 = 256 * 1024;

/// The single range of a `Range: bytes=...` header. Several ranges, other units or bad syntax
/// give `None`, and the whole object is served (as RFC 9110 allows).
pub fn parse_range(headers: &HeaderMap) -> Option<ByteRange> {
    let value = headers.get(header::RANGE)?.to_str().ok()?.trim();
    let spec = value.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    match (a.is_empty(), b.is_empty()) {
        (true, false) => b.parse().ok().map(ByteRange::Suffix),
        (false, true) => a.parse().ok().map(ByteRange::From),
        (false, false) => Some(ByteRange::FromTo(a.parse().ok()?, b.parse().ok()?)),
        (true, true) => None,
    }
}

/// Builds the response; body bytes are counted into `bytes_served` as they go out.
pub fn served(s: Served, bytes_served: IntCounter) -> Response {
    let status = if s.range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let body = match s.body {
        Some(mut stream) => {
            // A body that is already whole in memory (a small cached file) goes out as a full
            // body, so headers and bytes leave in one write.
            let first = match s.content_length {
                Some(len) if len <= WHOLE_BODY_MAX => stream.next().now_or_never(),
                _ => None,
            };
            match first {
                Some(Some(Ok(chunk))) if Some(chunk.len() as u64) == s.content_length => {
                    bytes_served.inc_by(chunk.len() as u64);
                    Body::from(chunk)
                }
                Some(None) => Body::empty(),
                first => {
                    let first = futures::stream::iter(first.flatten());
                    Body::from_stream(first.chain(stream).inspect(move |chunk| {
                        if let Ok(c) = chunk {
                            bytes_served.inc_by(c.len() as u64);
                        }
                    }))
                }
            }
        }
        None => Body::empty(),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Some(len) = s.content_length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let ct = s
        .content_type
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ct);
    if let Some(v) = s
        .etag
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(header::ETAG, v);
    }
    if let Some(v) = s
        .last_modified
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(header::LAST_MODIFIED, v);
    }
    if let Some((a, b, total)) = s.range
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{total}"))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(X_CACHE, HeaderValue::from_static(s.cache.as_str()));
    resp
}

/// What a format's route answers: a response ready to send (a redirect), or an engine
/// answer, with whether it is a document that varies by `Accept` (an index page, a packument).
pub enum Answer {
    Redirect(Response),
    Served(Served, bool),
}

/// The response to an answer.
pub fn answer(a: Answer, bytes: IntCounter) -> Response {
    match a {
        Answer::Redirect(resp) => resp,
        Answer::Served(s, varies) => {
            let mut resp = served(s, bytes);
            if varies {
                resp.headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("Accept"));
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str) -> Option<ByteRange> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
        parse_range(&h)
    }

    #[test]
    fn parses_single_ranges() {
        assert_eq!(range("bytes=0-99"), Some(ByteRange::FromTo(0, 99)));
        assert_eq!(range("bytes=100-"), Some(ByteRange::From(100)));
        assert_eq!(range("bytes=-5"), Some(ByteRange::Suffix(5)));
        assert_eq!(range("bytes=0-1,5-6"), None);
        assert_eq!(range("items=0-1"), None);
        assert_eq!(range("bytes=x-1"), None);
        assert_eq!(range("bytes=-"), None);
    }
}
