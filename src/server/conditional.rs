//! Conditional requests from clients (RFC 9110 §13): a `GET` or `HEAD` whose `If-None-Match`
//! names the response's entity tag, or (without `If-None-Match`) whose `If-Modified-Since` is
//! not older than its `Last-Modified`, gets `304 Not Modified` with no body.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

/// The middleware: answers 304 in place of a 200 that the client already holds.
pub async fn not_modified(req: Request, next: Next) -> Response {
    let asks = matches!(*req.method(), Method::GET | Method::HEAD)
        && (req.headers().contains_key(header::IF_NONE_MATCH)
            || req.headers().contains_key(header::IF_MODIFIED_SINCE));
    if !asks {
        return next.run(req).await;
    }
    let inm = req.headers().get(header::IF_NONE_MATCH).cloned();
    let ims = req.headers().get(header::IF_MODIFIED_SINCE).cloned();
    let resp = next.run(req).await;
    if resp.status() != StatusCode::OK || !holds(inm.as_ref(), ims.as_ref(), resp.headers()) {
        return resp;
    }
    let mut out = Response::new(axum::body::Body::empty());
    *out.status_mut() = StatusCode::NOT_MODIFIED;
    // The headers a 304 must repeat, and what tells where the answer came from.
    for name in [
        header::ETAG,
        header::LAST_MODIFIED,
        header::CACHE_CONTROL,
        header::VARY,
    ] {
        if let Some(v) = resp.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    if let Some(v) = resp.headers().get("x-cache") {
        out.headers_mut().insert("x-cache", v.clone());
    }
    out
}

/// Whether the client's copy, described by its conditional headers, is the response's.
fn holds(inm: Option<&HeaderValue>, ims: Option<&HeaderValue>, resp: &HeaderMap) -> bool {
    if let Some(inm) = inm {
        let Some(etag) = resp.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        return inm
            .to_str()
            .ok()
            .is_some_and(|list| list_matches(list, etag));
    }
    let (Some(ims), Some(lm)) = (ims, resp.get(header::LAST_MODIFIED)) else {
        return false;
    };
    let parse = |v: &HeaderValue| httpdate::parse_http_date(v.to_str().ok()?).ok();
    matches!((parse(ims), parse(lm)), (Some(since), Some(modified)) if modified <= since)
}

/// Weak comparison of `etag` with each tag of an `If-None-Match` list, or `*`.
fn list_matches(list: &str, etag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let want = opaque(etag);
    list.split(',')
        .any(|t| t.trim() == "*" || opaque(t) == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(etag: Option<&str>, lm: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(e) = etag {
            h.insert(header::ETAG, HeaderValue::from_str(e).unwrap());
        }
        if let Some(l) = lm {
            h.insert(header::LAST_MODIFIED, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn v(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn entity_tags_compare_weakly_and_take_precedence() {
        let lm = "Wed, 21 Oct 2026 07:28:00 GMT";
        let resp = headers(Some("\"abc\""), Some(lm));
        assert!(holds(Some(&v("\"abc\"")), None, &resp));
        assert!(holds(Some(&v("W/\"abc\"")), None, &resp));
        assert!(holds(Some(&v("\"x\", \"abc\"")), None, &resp));
        assert!(holds(Some(&v("*")), None, &resp));
        assert!(!holds(Some(&v("\"other\"")), None, &resp));
        // A non-matching tag wins over a matching date.
        assert!(!holds(Some(&v("\"other\"")), Some(&v(lm)), &resp));
        assert!(!holds(Some(&v("\"abc\"")), None, &headers(None, Some(lm))));
    }

    #[test]
    fn dates_compare_as_times() {
        let resp = headers(None, Some("Wed, 21 Oct 2026 07:28:00 GMT"));
        assert!(holds(
            None,
            Some(&v("Wed, 21 Oct 2026 07:28:00 GMT")),
            &resp
        ));
        assert!(holds(
            None,
            Some(&v("Thu, 22 Oct 2026 00:00:00 GMT")),
            &resp
        ));
        assert!(!holds(
            None,
            Some(&v("Tue, 20 Oct 2026 00:00:00 GMT")),
            &resp
        ));
        assert!(!holds(None, Some(&v("not a date")), &resp));
        assert!(!holds(
            None,
            Some(&v("Wed, 21 Oct 2026 07:28:00 GMT")),
            &headers(None, None)
        ));
    }
}
