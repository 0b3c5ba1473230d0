//! The one place where core errors become HTTP responses: status code, JSON body
//! `{"error", "message", "remote", "path"}`, and a single log line for server-side failures.
//! Internal causes (file paths, backend messages) are logged, never sent to clients.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;

/// A core error with the request context it is reported with.
pub struct ApiError {
    pub error: Error,
    pub remote: Option<String>,
    pub path: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
}

impl ApiError {
    pub fn new(error: Error) -> Self {
        ApiError {
            error,
            remote: None,
            path: None,
        }
    }

    pub fn at(error: Error, remote: &str, path: Option<&str>) -> Self {
        ApiError {
            error,
            remote: Some(remote.to_string()),
            path: path.map(str::to_string),
        }
    }

    /// Status and stable error code of each kind.
    pub fn status_and_code(error: &Error) -> (StatusCode, &'static str) {
        match error {
            Error::UnknownRepository(_) => (StatusCode::NOT_FOUND, "repository_not_found"),
            Error::WrongRepositoryType { .. } => (StatusCode::BAD_REQUEST, "wrong_repository_type"),
            Error::WrongPackage { .. } => (StatusCode::BAD_REQUEST, "wrong_package"),
            Error::BadPath(_) => (StatusCode::BAD_REQUEST, "bad_path"),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Error::InvalidReference { .. } => (StatusCode::BAD_REQUEST, "bad_reference"),
            Error::Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, "unsupported"),
            Error::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::AccessDenied(_) => (StatusCode::FORBIDDEN, "access_denied"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            Error::ChecksumMismatch { .. } => (StatusCode::BAD_REQUEST, "checksum_mismatch"),
            Error::MembersFailed(_) => (StatusCode::BAD_GATEWAY, "members_failed"),
            Error::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Error::UpstreamStatus(_) => (StatusCode::BAD_GATEWAY, "upstream_error"),
            Error::Integrity(_) => (StatusCode::BAD_GATEWAY, "upstream_integrity"),
            // A fill bypasses instead; this answer is a fallback that should not be seen.
            Error::TooLargeToCache { .. } => (StatusCode::BAD_GATEWAY, "upstream_error"),
            Error::UpstreamUnreachable(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream_unreachable"),
            Error::UpstreamTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            Error::RedirectRefused(_) => (StatusCode::BAD_GATEWAY, "redirect_refused"),
            Error::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable")
            }
            Error::Storage { .. } => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
            Error::Metadata { .. } => (StatusCode::SERVICE_UNAVAILABLE, "metadata_unavailable"),
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError::new(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = ApiError::status_and_code(&self.error);
        let message = self.error.client_message();
        if status.is_server_error() {
            tracing::error!(
                remote = self.remote.as_deref(),
                path = self.path.as_deref(),
                error = %crate::error_chain(&self.error),
                "request failed"
            );
        }
        let body = Body {
            error: code,
            message,
            remote: self.remote.as_deref(),
            path: self.path.as_deref(),
        };
        let mut resp = (status, Json(body)).into_response();
        match &self.error {
            Error::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            Error::Storage { .. } | Error::Metadata { .. } => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Error::Unauthenticated(_) => {
                let h = resp.headers_mut();
                h.append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(BASIC_CHALLENGE),
                );
                h.append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(BEARER_CHALLENGE),
                );
            }
            _ => {}
        }
        resp
    }
}

/// Challenges sent with a 401: Basic (so `curl -u` and registry clients send `name:token`) and
/// Bearer (an API token as is).
const BASIC_CHALLENGE: &str = "Basic realm=\"artifactapi\", charset=\"UTF-8\"";
const BEARER_CHALLENGE: &str = "Bearer realm=\"artifactapi\"";

/// A core error on a `/v2/` endpoint, rendered in the registry format
/// `{"errors":[{"code","message","detail"}]}` with the distribution spec's codes.
pub struct RegistryError {
    pub error: Error,
    /// What was asked for, to choose MANIFEST_UNKNOWN / BLOB_UNKNOWN / NAME_UNKNOWN.
    pub unknown_code: &'static str,
}

impl RegistryError {
    /// Wraps core errors of a request for `unknown_code`'s kind of object.
    pub fn with(unknown_code: &'static str) -> impl Fn(Error) -> RegistryError {
        move |error| RegistryError {
            error,
            unknown_code,
        }
    }

    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match &self.error {
            Error::UnknownRepository(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            Error::WrongPackage { .. } | Error::WrongRepositoryType { .. } => {
                (StatusCode::BAD_REQUEST, "UNSUPPORTED")
            }
            Error::InvalidReference { code, .. } => (StatusCode::BAD_REQUEST, code),
            Error::BadPath(_) | Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            Error::Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            Error::Forbidden | Error::AccessDenied(_) => (StatusCode::FORBIDDEN, "DENIED"),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            Error::NotFound => (StatusCode::NOT_FOUND, self.unknown_code),
            Error::UpstreamStatus(429) => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
            Error::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID")
            }
            other => (ApiError::status_and_code(other).0, "UNAVAILABLE"),
        }
    }
}

#[derive(Serialize)]
struct RegistryBody<'a> {
    errors: [RegistryEntry<'a>; 1],
}

#[derive(Serialize)]
struct RegistryEntry<'a> {
    code: &'a str,
    message: String,
    detail: serde_json::Value,
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // Reuse the JSON API's logging, hiding and extra headers, then swap in the body.
        let api = ApiError::new(self.error.clone()).into_response();
        let message = self.error.client_message();
        // The registry codes are a fixed set; the detail names a refused redirect as the JSON
        // API does.
        let detail = match &self.error {
            Error::RedirectRefused(_) => serde_json::json!({"error": "redirect_refused"}),
            _ => serde_json::Value::Null,
        };
        let body = RegistryBody {
            errors: [RegistryEntry {
                code,
                message,
                detail,
            }],
        };
        let mut resp = (status, Json(body)).into_response();
        for name in [header::CONTENT_RANGE, header::RETRY_AFTER] {
            if let Some(v) = api.headers().get(&name) {
                resp.headers_mut().insert(name, v.clone());
            }
        }
        super::respond::registry_headers(resp.headers_mut(), None);
        if matches!(self.error, Error::Unauthenticated(_)) {
            // Registry clients answer a Bearer challenge by asking its realm for a token, so
            // only Basic is offered here.
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(BASIC_CHALLENGE),
            );
        }
        resp
    }
}
