//! The `sluice docs` site under `/docs/`: the files `sluice docs generate`
//! wrote into the project's `target/docs`, read from disk at each request.
//! A request never generates the site (that renders every model's SQL and
//! reads the state store: the command's work, not a GET's), so the pages are
//! as fresh as the last `sluice docs generate`.
//!
//! The site shows every model's SQL and lineage, so it needs the `read`
//! scope, as the API's reads do (the dashboard's session cookie counts).
//! Only plain names are served: each part of the path letters, digits, `.`,
//! `-` and `_`, not starting with a dot (no `..`, no hidden files, no
//! backslashes), resolved without leaving the folder through a symlink, and
//! only the file types the site is made of, each with its content type.
//! The pages run no script: the content security policy allows none.

use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use std::path::{Path as FsPath, PathBuf};

use super::App;
use super::auth::Read;
use super::http::{ApiError, ApiResult, P};

/// The site's folder under the project, as `sluice docs generate` writes it.
pub fn site_dir(project_dir: &FsPath) -> PathBuf {
    project_dir.join("target").join("docs")
}

/// The file types served, by extension.
const TYPES: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("json", "application/json"),
    ("txt", "text/plain; charset=utf-8"),
];

/// The content type of a file served from the site, or `None` when its
/// type is not one the site is made of.
pub fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1;
    TYPES.iter().find(|(e, _)| e.eq_ignore_ascii_case(ext)).map(|(_, t)| *t)
}

/// Whether `rel` (already percent-decoded) is a path the site may serve:
/// parts separated by `/`, each non-empty, of letters, digits, `.`, `-`
/// and `_`, not starting with a dot.
pub fn safe_path(rel: &str) -> bool {
    !rel.is_empty()
        && rel.len() <= 512
        && rel.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        })
}

fn not_found(rel: &str) -> ApiError {
    ApiError::not_found(format!("the docs site has no page `{rel}`"))
}

/// Reads `rel` from the site in `dir`.
async fn read(dir: PathBuf, rel: &str) -> Result<(Vec<u8>, &'static str, String), ApiError> {
    if !safe_path(rel) {
        return Err(ApiError::not_found(format!(
            "no docs page `{rel}`: page names are letters, digits, `.`, `-` and `_` in folders, without `..`"
        )));
    }
    let ctype = content_type(rel).ok_or_else(|| not_found(rel))?;
    let Ok(root) = tokio::fs::canonicalize(&dir).await else {
        return Err(ApiError::not_found(
            "no docs site yet: run `sluice docs generate` in the project (it writes target/docs), then reload",
        ));
    };
    // A symlink inside the folder must not lead out of it.
    let path = tokio::fs::canonicalize(root.join(rel)).await.map_err(|_| not_found(rel))?;
    if !path.starts_with(&root) {
        return Err(not_found(rel));
    }
    let meta = tokio::fs::metadata(&path).await.map_err(|_| not_found(rel))?;
    if !meta.is_file() {
        return Err(not_found(rel));
    }
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let tag = format!("\"{:x}-{:x}\"", meta.len(), modified.map(|d| d.as_nanos()).unwrap_or(0));
    let bytes = tokio::fs::read(&path).await.map_err(|_| not_found(rel))?;
    Ok((bytes, ctype, tag))
}

fn answer(headers: &HeaderMap, (bytes, ctype, tag): (Vec<u8>, &'static str, String)) -> Response {
    let mut r = if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(tag.as_str()) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, ctype)], bytes).into_response()
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    // The pages style themselves inline and run nothing.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// `/docs`: to the site's index, where its relative links work.
pub async fn redirect(_: Read) -> Redirect {
    Redirect::to("/docs/")
}

/// `/docs/`: the site's index page.
pub async fn index(AxState(app): AxState<App>, _: Read, headers: HeaderMap) -> ApiResult {
    Ok(answer(&headers, read(site_dir(&app.project.dir), "index.html").await?))
}

/// `/docs/{path}`: a page of the site.
pub async fn page(AxState(app): AxState<App>, _: Read, P(rel): P<String>, headers: HeaderMap) -> ApiResult {
    let rel = if rel.is_empty() || rel.ends_with('/') { format!("{rel}index.html") } else { rel };
    Ok(answer(&headers, read(site_dir(&app.project.dir), &rel).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_inside_the_site() {
        for ok in ["index.html", "nodes/model.shop.orders.html", "a-b_c.1.css"] {
            assert!(safe_path(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../sluice.toml",
            "nodes/../../x.html",
            ".hidden.html",
            "nodes/.x.html",
            "/etc/passwd",
            "nodes//x.html",
            "nodes\\..\\x.html",
            "a b.html",
            "x.html\0",
            "%2e%2e/x.html",
        ] {
            assert!(!safe_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn content_types_from_a_short_list() {
        assert_eq!(content_type("index.html"), Some("text/html; charset=utf-8"));
        assert_eq!(content_type("nodes/a.SVG"), Some("image/svg+xml"));
        assert_eq!(content_type("run.js"), None);
        assert_eq!(content_type("state.db"), None);
        assert_eq!(content_type("noext"), None);
    }
}
