//! The configuration of an HTTP API source: an ingest step whose `source` is an
//! `http://` or `https://` URL, with its options in the step's `http` table
//! (headers, auth, paging, the records' JSON path, incremental cursor, retries,
//! rate limit, timeouts). Inert data decoded with every problem reported;
//! `sources::http` runs it. Secrets (header values, API keys, tokens) are kept
//! as written and resolved only when a request is sent.

use std::time::Duration;

use super::tree::{Cx, Dur, Fields, Node, Spanned, V, Written, one_of};
use crate::secret::{check_refs, redact_url};

/// The keys of the `http` table.
pub const HTTP_KEYS: &[&str] = &[
    "headers",
    "auth",
    "paging",
    "records",
    "flatten",
    "incremental",
    "max_pages",
    "max_retries",
    "retry_delay",
    "max_retry_wait",
    "rate_limit",
    "connect_timeout",
    "read_timeout",
];
pub const AUTH_KEYS: &[&str] = &["kind", "header", "query", "value", "token"];
pub const PAGING_KEYS: &[&str] = &["kind", "param", "start", "size_param", "size", "limit_param", "limit", "next"];
pub const INCREMENTAL_KEYS: &[&str] = &["param", "field", "initial"];

/// An HTTP API source.
#[derive(Debug, Clone)]
pub struct HttpSource {
    /// The first page's URL as written (`${env:…}` references resolved when used).
    pub url: Spanned<String>,
    /// Extra request headers: name and value as written (values may be secrets).
    pub headers: Vec<(String, Written)>,
    pub auth: Option<HttpAuth>,
    pub paging: Paging,
    /// The JSON path of the records in a page (`data`, `result.items`);
    /// `None`: the body itself (an array of records, or one record).
    pub records: Option<String>,
    /// What joins the keys of nested objects in column names (`a.b` → `a_b`).
    pub flatten: String,
    pub incremental: Option<Incremental>,
    /// The most pages one run requests (a safety limit).
    pub max_pages: u64,
    /// Retries of a request that failed with 429, 5xx, a timeout or a dropped connection.
    pub max_retries: u32,
    /// The first retry's delay when the server gives no `Retry-After` (then 2×, 4×, … with jitter).
    pub retry_delay: Duration,
    /// The longest wait before a retry, whatever `Retry-After` says.
    pub max_retry_wait: Duration,
    /// Requests per second at most.
    pub rate_limit: Option<f64>,
    pub connect_timeout: Duration,
    /// The longest wait for the next bytes of a response.
    pub read_timeout: Duration,
}

impl HttpSource {
    /// The URL as it may be shown: references as written, passwords masked,
    /// and the API key's query parameter (if written in the URL) masked.
    pub fn shown(&self) -> String {
        let mut s = redact_url(&self.url.v);
        if let Some(HttpAuth::ApiKey { query: Some(q), .. }) = &self.auth {
            s = mask_param(&s, q);
        }
        s
    }
}

/// Masks the value of query parameter `name` in a URL.
pub fn mask_param(url: &str, name: &str) -> String {
    let Some(q) = url.find('?') else { return url.to_string() };
    let (base, query) = url.split_at(q + 1);
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k == name => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{base}{}", parts.join("&"))
}

/// How requests authenticate. Values are kept as written (`${env:…}`, `${file:…}`).
#[derive(Debug, Clone)]
pub enum HttpAuth {
    /// An API key in a header or a query parameter.
    ApiKey { header: Option<String>, query: Option<String>, value: Written },
    /// `Authorization: Bearer TOKEN`.
    Bearer { token: Written },
}

/// How the next page is asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Paging {
    /// One request.
    None,
    /// `?page=1`, `?page=2`, … until a page has no records (or fewer than `size`).
    Page { param: String, start: u64, size_param: Option<String>, size: Option<u64> },
    /// `?offset=0&limit=100`, `?offset=100&limit=100`, … until a page has fewer than `limit` records.
    Offset { param: String, limit_param: String, limit: u64 },
    /// `?cursor=X` with X read from each page at the JSON path `next`, until it is missing or empty.
    Cursor { param: String, next: String },
    /// The `Link: <…>; rel="next"` header of each response, until there is none.
    Link,
}

pub const PAGING_KINDS: &[(&str, &str)] =
    &[("none", "none"), ("page", "page"), ("offset", "offset"), ("cursor", "cursor"), ("link", "link")];

/// Incremental ingestion: the highest `field` seen is kept in the landing's
/// cursor and sent as query parameter `param` next run.
#[derive(Debug, Clone, PartialEq)]
pub struct Incremental {
    pub param: String,
    /// A JSON path inside each record (`updated_at`, `meta.modified`).
    pub field: String,
    /// Sent on the first run (nothing is sent without it).
    pub initial: Option<String>,
}

/// Whether a `source` names an HTTP API.
pub fn is_http(source: &str) -> bool {
    let l = source.trim_start().to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

fn refs_ok(cx: &mut Cx, node: &Node, w: &Written) {
    if let Err(e) = check_refs(&w.0) {
        cx.error(node.span.clone(), e);
    }
}

/// Decodes an HTTP source: its URL (`source`) and the step's `http` table.
/// Problems are reported into `cx`; the source is returned all the same (with
/// defaults where a value was wrong), so the step stays known to the rest.
pub fn decode_http(url: Spanned<String>, node: Option<&Node>, cx: &mut Cx) -> HttpSource {
    if let Err(e) = check_refs(&url.v) {
        cx.error(url.loc.start as usize..url.loc.end as usize, e);
    }
    let mut out = HttpSource {
        url,
        headers: Vec::new(),
        auth: None,
        paging: Paging::None,
        records: None,
        flatten: "_".into(),
        incremental: None,
        max_pages: 1000,
        max_retries: 5,
        retry_delay: Duration::from_secs(1),
        max_retry_wait: Duration::from_secs(300),
        rate_limit: None,
        connect_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(60),
    };
    let Some(node) = node else { return out };
    let Some(mut t) = Fields::new(node, cx, "the `http` table") else { return out };
    if let Some(h) = t.node("headers") {
        match &h.v {
            V::Table(entries) => {
                for (k, v) in entries {
                    if let Some(w) = Written::decode_in(v, cx, &k.name) {
                        refs_ok(cx, v, &w);
                        out.headers.push((k.name.clone(), w));
                    }
                }
            }
            _ => {
                cx.error(
                    h.span.clone(),
                    format!("wrong type for `headers`: expected a table, found {}", h.type_name()),
                );
            }
        }
    }
    if let Some(a) = t.node("auth") {
        out.auth = decode_auth(a, cx);
    }
    if let Some(p) = t.node("paging").and_then(|p| decode_paging(p, cx)) {
        out.paging = p;
    }
    out.records = t.opt(cx, "records");
    if let Some(f) = t.opt::<String>(cx, "flatten") {
        out.flatten = f;
    }
    if let Some(i) = t.node("incremental") {
        out.incremental = decode_incremental(i, cx);
    }
    if let Some(n) = t.opt::<u64>(cx, "max_pages") {
        if n == 0 {
            cx.error(t.key_span("max_pages").unwrap_or(t.span()), "`max_pages` must be at least 1");
        }
        out.max_pages = n;
    }
    if let Some(n) = t.opt(cx, "max_retries") {
        out.max_retries = n;
    }
    for (key, slot) in [
        ("retry_delay", &mut out.retry_delay),
        ("max_retry_wait", &mut out.max_retry_wait),
        ("connect_timeout", &mut out.connect_timeout),
        ("read_timeout", &mut out.read_timeout),
    ] {
        if let Some(Dur(d)) = t.opt(cx, key) {
            *slot = d;
        }
    }
    if let Some(n) = t.node("rate_limit") {
        match f64::decode_in(n, cx, "rate_limit") {
            Some(r) if r > 0.0 && r.is_finite() => out.rate_limit = Some(r),
            Some(_) => {
                cx.error(n.span.clone(), "`rate_limit` must be a positive number of requests per second");
            }
            None => {}
        }
    }
    t.finish(cx, |_| None);
    out
}

/// `Decode` under a key name, for values read outside `Fields`.
trait DecodeIn: Sized {
    fn decode_in(node: &Node, cx: &mut Cx, key: &str) -> Option<Self>;
}

impl<T: super::tree::Decode> DecodeIn for T {
    fn decode_in(node: &Node, cx: &mut Cx, key: &str) -> Option<Self> {
        T::decode(node, cx, Some(key))
    }
}

fn decode_auth(node: &Node, cx: &mut Cx) -> Option<HttpAuth> {
    let mut t = Fields::new(node, cx, "`http.auth`")?;
    let kind = match t.node("kind") {
        Some(n) => one_of(n, cx, "kind", &[("api_key", "api_key"), ("bearer", "bearer")]),
        None => {
            cx.error(t.span(), "missing key `kind` in `http.auth`").help =
                Some("add `kind = \"api_key\"` (with `header` or `query`, and `value`) or `kind = \"bearer\"` (with `token`)".into());
            None
        }
    };
    let header: Option<String> = t.opt(cx, "header");
    let query: Option<String> = t.opt(cx, "query");
    let value_node = t.node("value");
    let value: Option<Written> = t.opt(cx, "value");
    let token_node = t.node("token");
    let token: Option<Written> = t.opt(cx, "token");
    if let (Some(n), Some(w)) = (value_node, &value) {
        refs_ok(cx, n, w);
    }
    if let (Some(n), Some(w)) = (token_node, &token) {
        refs_ok(cx, n, w);
    }
    let span = t.span();
    t.finish(cx, |_| None);
    match kind? {
        "api_key" => {
            if header.is_some() == query.is_some() {
                cx.error(span, "an `api_key` auth takes `header` or `query` (one of them): where the key is sent")
                    .help = Some("e.g. `header = \"X-API-Key\"` or `query = \"api_key\"`".into());
                return None;
            }
            let Some(value) = value else {
                cx.error(span, "an `api_key` auth needs `value`").help =
                    Some("e.g. `value = \"${env:API_KEY}\"` (a secret: never write the key itself here)".into());
                return None;
            };
            Some(HttpAuth::ApiKey { header, query, value })
        }
        _ => {
            let Some(token) = token else {
                cx.error(span, "a `bearer` auth needs `token`").help =
                    Some("e.g. `token = \"${env:API_TOKEN}\"`".into());
                return None;
            };
            Some(HttpAuth::Bearer { token })
        }
    }
}

fn decode_paging(node: &Node, cx: &mut Cx) -> Option<Paging> {
    let mut t = Fields::new(node, cx, "`http.paging`")?;
    let kind = match t.node("kind") {
        Some(n) => one_of(n, cx, "kind", PAGING_KINDS),
        None => {
            cx.error(t.span(), "missing key `kind` in `http.paging`").help =
                Some("add `kind = \"…\"`: one of none, page, offset, cursor, link".into());
            None
        }
    };
    let param: Option<String> = t.opt(cx, "param");
    let start: Option<u64> = t.opt(cx, "start");
    let size_param: Option<String> = t.opt(cx, "size_param");
    let size: Option<u64> = t.opt(cx, "size");
    let limit_param: Option<String> = t.opt(cx, "limit_param");
    let limit: Option<u64> = t.opt(cx, "limit");
    let next: Option<String> = t.opt(cx, "next");
    let span = t.span();
    // Keys that do not apply to the kind are refused, naming the kind.
    let applies: &[&str] = match kind {
        Some("page") => &["param", "start", "size_param", "size"],
        Some("offset") => &["param", "limit_param", "limit"],
        Some("cursor") => &["param", "next"],
        _ => &[],
    };
    if let Some(k) = kind {
        for key in ["param", "start", "size_param", "size", "limit_param", "limit", "next"] {
            if !applies.contains(&key)
                && let Some(sp) = t.key_span(key)
            {
                cx.error(sp, format!("`{key}` does not apply to paging kind \"{k}\""));
            }
        }
    }
    t.finish(cx, |_| None);
    match kind? {
        "none" => Some(Paging::None),
        "link" => Some(Paging::Link),
        "page" => {
            if size.is_some() != size_param.is_some() && size_param.is_some() {
                cx.error(span.clone(), "`size_param` needs `size`: the page size to ask for");
                return None;
            }
            Some(Paging::Page {
                param: param.unwrap_or_else(|| "page".into()),
                start: start.unwrap_or(1),
                size_param,
                size,
            })
        }
        "offset" => {
            let Some(limit) = limit else {
                cx.error(span, "offset paging needs `limit`: how many records a page holds").help =
                    Some("e.g. `limit = 100`".into());
                return None;
            };
            if limit == 0 {
                cx.error(span, "`limit` must be at least 1");
                return None;
            }
            Some(Paging::Offset {
                param: param.unwrap_or_else(|| "offset".into()),
                limit_param: limit_param.unwrap_or_else(|| "limit".into()),
                limit,
            })
        }
        _ => {
            let Some(next) = next else {
                cx.error(span, "cursor paging needs `next`: the JSON path of the next page's cursor in a page").help =
                    Some("e.g. `next = \"meta.next_cursor\"`".into());
                return None;
            };
            Some(Paging::Cursor { param: param.unwrap_or_else(|| "cursor".into()), next })
        }
    }
}

fn decode_incremental(node: &Node, cx: &mut Cx) -> Option<Incremental> {
    let mut t = Fields::new(node, cx, "`http.incremental`")?;
    let param: Option<String> = t.req(cx, "param");
    let field: Option<String> = t.req(cx, "field");
    let initial: Option<String> = t.opt(cx, "initial");
    t.finish(cx, |_| None);
    Some(Incremental { param: param?, field: field?, initial })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::tree::{FileId, SourceFile, parse};

    fn decode(text: &str) -> (Option<HttpSource>, Vec<String>) {
        let f = SourceFile::new("p.toml".into(), "p.toml".into(), text.into());
        let root = parse(&f).unwrap();
        let mut cx = Cx::new(FileId(0), &f);
        let url = Spanned { v: "https://api.example/v1/orders".to_string(), loc: cx.loc(&(0..0)) };
        let got = decode_http(url, root.get("http"), &mut cx);
        let errs: Vec<String> = cx.diags.iter().map(|d| d.headline()).collect();
        (errs.is_empty().then_some(got), errs)
    }

    #[test]
    fn parses_every_option() {
        let (s, errs) = decode(
            r#"
[http]
headers = { Accept = "application/json", X-Tenant = "${env:TENANT}" }
auth = { kind = "api_key", query = "api_key", value = "${env:API_KEY}" }
paging = { kind = "offset", limit = 50 }
records = "data.items"
flatten = "__"
incremental = { param = "since", field = "updated_at", initial = "2024-01-01" }
max_pages = 10
max_retries = 2
retry_delay = "100ms"
max_retry_wait = "30s"
rate_limit = 2.5
connect_timeout = "3s"
read_timeout = "20s"
"#,
        );
        assert_eq!(errs, Vec::<String>::new());
        let s = s.unwrap();
        assert_eq!(s.headers.len(), 2);
        assert_eq!(s.headers[1].1.0, "${env:TENANT}");
        assert!(matches!(&s.auth, Some(HttpAuth::ApiKey { query: Some(q), .. }) if q == "api_key"));
        assert_eq!(s.paging, Paging::Offset { param: "offset".into(), limit_param: "limit".into(), limit: 50 });
        assert_eq!(s.records.as_deref(), Some("data.items"));
        assert_eq!(s.flatten, "__");
        assert_eq!(s.incremental.as_ref().unwrap().initial.as_deref(), Some("2024-01-01"));
        assert_eq!((s.max_pages, s.max_retries), (10, 2));
        assert_eq!(s.retry_delay, Duration::from_millis(100));
        assert_eq!(s.rate_limit, Some(2.5));
        assert_eq!(s.read_timeout, Duration::from_secs(20));
    }

    #[test]
    fn bad_fields_are_reported_with_positions() {
        let (s, errs) = decode(
            r#"
[http]
paging = { kind = "cursor", param = "c", limit = 3 }
auth = { kind = "api_key", value = "${env:K}" }
rate_limit = 0
pages = 3
"#,
        );
        assert!(s.is_none());
        assert_eq!(
            errs,
            vec![
                "p.toml:4:8: an `api_key` auth takes `header` or `query` (one of them): where the key is sent",
                "p.toml:3:42: `limit` does not apply to paging kind \"cursor\"",
                "p.toml:3:10: cursor paging needs `next`: the JSON path of the next page's cursor in a page",
                "p.toml:5:14: `rate_limit` must be a positive number of requests per second",
                "p.toml:6:1: unknown key `pages` in the `http` table",
            ]
        );
    }

    #[test]
    fn shown_urls_hide_keys() {
        assert_eq!(mask_param("https://h/x?a=1&api_key=SECRET&b=2", "api_key"), "https://h/x?a=1&api_key=***&b=2");
        assert!(is_http("HTTPS://x") && is_http("http://x") && !is_http("data/*.json"));
    }
}
