//! What keeps a browser from being used against the proxy's origin: `nosniff` on every
//! response; active content (HTML, SVG, XML, JavaScript) sandboxed and sent as a download, so
//! an uploaded or upstream file never runs as the proxy; and changes (uploads, deletes, flush)
//! refused when a browser sends them from another site.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The middleware.
pub async fn guard(req: Request, next: Next) -> Response {
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let mut resp = if changes && cross_site(req.headers()) {
        let body = json!({
            "error": "cross_site_request",
            "message": "changes are not accepted from a page on another site",
        });
        (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let active = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_active);
    if active {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    resp
}

/// A browser request made by a page of another site: `Sec-Fetch-Site` says so, or `Origin`
/// names another host than the one asked (`Origin: null` included).
fn cross_site(h: &HeaderMap) -> bool {
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    let Some(origin) = h.get(header::ORIGIN) else {
        return false;
    };
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    !matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Media types a browser would render or run in the page's origin.
fn is_active(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/html"
            | "application/xhtml+xml"
            | "image/svg+xml"
            | "text/xml"
            | "application/xml"
            | "text/xsl"
            | "text/javascript"
            | "application/javascript"
            | "application/x-javascript"
            | "text/ecmascript"
            | "application/ecmascript"
            | "multipart/x-mixed-replace"
    ) || essence.ends_with("+xml")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cross_site_is_told_by_fetch_metadata_or_origin() {
        assert!(!cross_site(&headers(&[])));
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!cross_site(&headers(&[("sec-fetch-site", "none")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")])));
        let host = ("host", "cache.example:8080");
        assert!(!cross_site(&headers(&[
            host,
            ("origin", "http://cache.example:8080")
        ])));
        assert!(cross_site(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(cross_site(&headers(&[host, ("origin", "null")])));
    }

    #[test]
    fn active_types_include_xml_and_script_but_not_packages() {
        for t in [
            "text/html; charset=utf-8",
            "IMAGE/SVG+XML",
            "application/rss+xml",
            "text/javascript",
        ] {
            assert!(is_active(t), "{t}");
        }
        for t in [
            "application/octet-stream",
            "application/json",
            "application/gzip",
            "text/plain",
        ] {
            assert!(!is_active(t), "{t}");
        }
    }
}
