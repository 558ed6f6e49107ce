//! The dashboard: a small hand-written HTML/CSS/JS app embedded in the
//! binary (no build step, no CDN), and Chart.js vendored beside it
//! (`assets/vendor/chartjs`, MIT). The app calls the same API as everyone
//! else, with the session cookie `/login` sets.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::http::ApiError;

/// (path under /assets/, content type, bytes)
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("assets/app.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("assets/app.css")),
    ("favicon.svg", "image/svg+xml", include_bytes!("assets/favicon.svg")),
    (
        "vendor/chartjs/chart.umd.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/vendor/chartjs/chart.umd.min.js"),
    ),
    ("vendor/chartjs/LICENSE.md", "text/markdown; charset=utf-8", include_bytes!("assets/vendor/chartjs/LICENSE.md")),
];

const INDEX: &str = include_str!("assets/index.html");

/// A version of the assets, for cache validation: they change only with the binary.
fn etag() -> &'static str {
    static E: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    E.get_or_init(|| {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(INDEX.as_bytes());
        for (_, _, b) in ASSETS {
            h.update(b);
        }
        format!("\"{}\"", h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect::<String>())
    })
}

fn security_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn cached(headers: &HeaderMap, ctype: &'static str, body: &'static [u8]) -> Response {
    let tag = etag();
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(tag) {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mut r = ([(header::CONTENT_TYPE, ctype)], body).into_response();
    r.headers_mut().insert(header::ETAG, HeaderValue::from_static(tag));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(&mut r);
    r
}

pub async fn root() -> Redirect {
    Redirect::to("/ui/")
}

pub async fn index(headers: HeaderMap) -> Response {
    cached(&headers, "text/html; charset=utf-8", INDEX.as_bytes())
}

pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|(p, _, _)| *p == file) {
        Some((_, ctype, body)) => cached(&headers, ctype, body),
        None => ApiError::not_found(format!("no asset `{file}`")).into_response(),
    }
}
