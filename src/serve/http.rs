//! What every request goes through, whatever its route: errors as
//! `{"error": "…"}` JSON (`json_errors` rewrites any other error body, so
//! an extractor's rejection, the router's 404 and 405 and a body limit's 413
//! all look alike), extractors that answer 400 with the reason, the
//! browser guard, header limits and CORS.
//!
//! The browser guard (`guard`) keeps web pages from using the API through
//! a visitor's browser, with or without a session: writes must be JSON (a
//! page can send `text/plain` or a form to any address without asking), a
//! write from an origin that is neither the API's own nor one `[cors]`
//! allows is refused, and on loopback the `Host` must be a loopback name or
//! an IP address (DNS rebinding).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::App;
use crate::error::{Error, Kind, Result};

/// An error answer: `{"error": "…"}` with a status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub fn new(code: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError(code, msg.into())
    }
    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"sluice\""));
        }
        r
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let code = match e.kind() {
            // A value from the request that the store or warehouse refused.
            Kind::User | Kind::Data => StatusCode::BAD_REQUEST,
            Kind::External => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.chain())
    }
}

pub type ApiResult = std::result::Result<Response, ApiError>;

/// Runs `f` on a blocking thread: the state store's and the warehouses'
/// calls block (they drive their drivers on a runtime of their own).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, ApiError> {
    // At most this many at once: more would only open more connections to
    // the store and queue on its locks; waiting here is cheaper.
    static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);
    let _slot = SLOTS
        .acquire()
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping".into()))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("a request handler failed: {e}")))?
        .map_err(ApiError::from)
}

/// A query string decoded into `T`; a bad one is a 400 with the reason.
pub struct Q<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Q(v)),
            Err(e) => {
                let text = e.body_text();
                let why = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
                Err(ApiError::bad_request(format!("invalid query string: {why}")))
            }
        }
    }
}

/// Path parameters decoded into `T`; a bad one is a 400 with the reason.
pub struct P<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(P(v)),
            Err(e) => Err(ApiError::bad_request(format!("invalid path: {}", lower_first(&e.body_text())))),
        }
    }
}

pub fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Who may reach the API at all, from where it listens.
#[derive(Debug, Clone)]
pub struct Access {
    /// The API listens on a loopback address: requests must be addressed to
    /// a loopback name or an IP address.
    pub loopback: bool,
}

impl Access {
    /// The rules for an API listening on `addr`.
    pub fn for_listen(addr: &SocketAddr) -> Access {
        Access { loopback: addr.ip().is_loopback() }
    }
}

/// Whether a `Host` header's host (no port) may reach a loopback API: an IP
/// address (which no DNS rebinding can produce) or `localhost`.
fn loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok()
}

/// Splits `host[:port]` (IPv6 in brackets) into the host and the port.
fn split_authority(a: &str) -> (&str, Option<&str>) {
    if let Some(rest) = a.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (a, None),
        };
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (a, None),
    }
}

/// Whether `origin` may call the API cross-origin (`[cors] origins`).
pub fn cors_allows(origins: &[String], origin: &str) -> bool {
    origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
}

/// Refuses what a web page could make a visitor's browser send: requests
/// addressed to a foreign host name on a loopback API (DNS rebinding),
/// writes from another origin, and writes whose body is not JSON.
pub fn check_access(access: &Access, cors: &[String], method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if access.loopback && !host.is_empty() && !loopback_host(split_authority(host).0) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "requests to this API must be addressed to localhost or an IP address, not \"{host}\" \
                 (it listens on loopback and refuses other host names against DNS rebinding)"
            ),
        ));
    }
    let unsafe_method = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !unsafe_method {
        return Ok(());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin.split_once("://").map(|(_, a)| a).unwrap_or("");
        let own = !authority.is_empty() && authority.eq_ignore_ascii_case(host);
        if origin == "null" || !(own || cors_allows(cors, origin)) {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "cross-origin request refused: a page from {origin} may not change anything here \
                     (only this API's own origin, http://{host}, origins listed in [cors], or clients that send no Origin)"
                ),
            ));
        }
    }
    let ctype = headers.get(header::CONTENT_TYPE).map(|c| c.to_str().unwrap_or("?"));
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).and_then(|l| l.to_str().ok()).is_some_and(|l| l.trim() != "0");
    let json =
        ctype.is_some_and(|c| c.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if (has_body || ctype.is_some()) && !json {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "send the request body as JSON with Content-Type: application/json (got {})",
                ctype.map(|c| format!("Content-Type: {c}")).unwrap_or_else(|| "no Content-Type".into())
            ),
        ));
    }
    Ok(())
}

/// The browser guard, header limits and the path checks, before routing.
pub async fn guard(AxState(app): AxState<App>, req: Request, next: Next) -> Response {
    let limits = app.limits.clone();
    let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > limits.headers {
        return ApiError(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request's headers are {header_bytes} bytes; the limit is {} ([limits] headers)",
                limits.headers
            ),
        )
        .into_response();
    }
    let cors = app.project.get().project.config.serve.cors.origins.clone();
    if let Err(e) = check_access(&app.access, &cors, req.method(), req.headers()) {
        return e.into_response();
    }
    // Percent-decoded, the path and the query must be UTF-8 without a NUL
    // (no store or warehouse can hold one).
    let uri = req.uri();
    for (what, raw) in [("path", uri.path()), ("query string", uri.query().unwrap_or(""))] {
        let bytes: Vec<u8> = percent_decode(raw);
        match std::str::from_utf8(&bytes) {
            Err(_) => {
                return ApiError::bad_request(format!("invalid {what}: it is not UTF-8 once decoded")).into_response();
            }
            Ok(t) if t.contains('\0') => {
                return ApiError::bad_request(format!("invalid {what}: it holds a NUL character (%00)"))
                    .into_response();
            }
            Ok(_) => {}
        }
    }
    next.run(req).await
}

/// Until the state store has answered once (a service that started before
/// it), every route but `/healthz`, `/readyz` and the dashboard's files
/// answers 503 with why.
pub async fn until_ready(AxState(app): AxState<App>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let open = matches!(path, "/healthz" | "/readyz" | "/" | "/ui" | "/ui/") || path.starts_with("/assets/");
    if app.state.is_ready() || open {
        return next.run(req).await;
    }
    let why = app.state.last_error().map(|e| format!(": {e}")).unwrap_or_default();
    ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("the state store {} is not ready yet{why}", app.state.describe()))
        .into_response()
}

/// `%XX` escapes decoded.
pub fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16);
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c)))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// CORS for the origins `[cors]` lists: answers preflights and marks
/// answers readable by them. Cookies are never allowed across origins (no
/// `Access-Control-Allow-Credentials`): other origins use bearer tokens.
pub async fn cors(AxState(app): AxState<App>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).map(str::to_string);
    let allowed = origin.filter(|o| cors_allows(&app.project.get().project.config.serve.cors.origins, o));
    let Some(origin) = allowed else { return next.run(req).await };
    let value = HeaderValue::from_str(&origin).unwrap_or(HeaderValue::from_static("null"));
    if req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, if-none-match, accept"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        return r;
    }
    let mut r = next.run(req).await;
    r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    r.headers_mut().insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("etag, retry-after"));
    r.headers_mut().append(header::VARY, HeaderValue::from_static("Origin"));
    r
}

/// Makes every error answer `{"error": "…"}` JSON: extractors' rejections,
/// the router's 405, a body limit's 413 — whatever wrote plain text or
/// nothing.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let msg = if status == StatusCode::METHOD_NOT_ALLOWED {
        match parts.headers.get(header::ALLOW).and_then(|a| a.to_str().ok()).filter(|a| !a.is_empty()) {
            Some(allow) => format!("method {method} is not allowed on {path} (allowed: {allow})"),
            None => format!("method {method} is not allowed on {path}"),
        }
    } else if status == StatusCode::PAYLOAD_TOO_LARGE {
        "the request body is too large ([limits] body)".to_string()
    } else if text.is_empty() {
        lower_first(status.canonical_reason().unwrap_or("error"))
    } else {
        lower_first(&text)
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, axum::body::Body::from(json!({ "error": msg }).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_and_loopback_names() {
        assert_eq!(split_authority("localhost:8080"), ("localhost", Some("8080")));
        assert_eq!(split_authority("[::1]:8080"), ("::1", Some("8080")));
        assert_eq!(split_authority("example.com"), ("example.com", None));
        assert!(loopback_host("localhost"));
        assert!(loopback_host("127.0.0.1"));
        assert!(loopback_host("::1"));
        assert!(loopback_host("10.1.2.3"));
        assert!(!loopback_host("evil.example"));
        assert!(!loopback_host("localhost.evil.example"));
        assert_eq!(percent_decode("a%20b%zz%4"), b"a b%zz%4");
    }
}
