//! An HTTP API: each page of a JSON endpoint is one object, landed exactly as
//! it came (`page-00001.json`, …). Paging by page number, offset/limit, a
//! cursor read from each page, or `Link: <…>; rel="next"` headers; a page with
//! no records at the `records` path ends the paging. Requests carry the
//! configured headers and API key or bearer token, resolved from their secret
//! references here and nowhere else: no URL, message or manifest shows them.
//! 429 and 5xx answers, timeouts and dropped connections are retried,
//! honouring `Retry-After` (seconds or an HTTP date), else with exponential
//! backoff and jitter; requests keep to the rate limit. With `incremental`,
//! the highest value of a record field is the cursor kept in the landing's
//! manifest and sent as a query parameter next run, and each landing lists
//! only what is new (`complete = false`).

use std::time::{Duration, Instant, SystemTime};

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use tracing::{info, warn};

use super::{Object, Source};
use crate::error::{Error, Result};
use crate::formats::pages;
use crate::project::{HttpAuth, HttpSource as Config, Paging};
use crate::secret::redact_url;
use crate::steps::{Cancel, RunCtx};
use crate::storage::raw::{Manifest, RowCount};

/// The largest response body read (a page is landed and parsed whole).
const MAX_BODY: usize = pages::MAX_PAGE as usize;

pub struct HttpSource {
    cfg: Config,
    client: reqwest::Client,
    rt: tokio::runtime::Handle,
    headers: HeaderMap,
    /// The API key's query parameter and value, added to each request only.
    key_param: Option<(String, String)>,
    /// Every resolved secret value, scrubbed from any message.
    secrets: Vec<String>,
    /// The next request, `None` once paging ended.
    next: Option<Url>,
    /// Pages requested so far.
    pages: u64,
    /// The page-number paging's next number, or offset paging's next offset.
    counter: u64,
    /// The previous page's body hash (an API that ignores the paging parameter
    /// answers the same page again).
    last_hash: Option<u64>,
    /// Incremental: the cursor this run started from and the highest value seen.
    started_from: Option<serde_json::Value>,
    highest: Option<serde_json::Value>,
    cancel: Cancel,
    last_request: Option<Instant>,
}

impl HttpSource {
    pub fn open(ctx: &RunCtx, cfg: &Config, previous: Option<&Manifest>) -> Result<Self> {
        let env = &ctx.project.env;
        let mut secrets = Vec::new();
        let mut resolve = |what: &str, w: &str, secret: bool| -> Result<String> {
            let v = env.resolve(w).map_err(|e| Error::user(format!("{what}: {e}")))?;
            if secret && !v.is_empty() {
                secrets.push(v.clone());
            }
            Ok(v)
        };
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::ACCEPT, HeaderValue::from_static("application/json"));
        let mut key_param = None;
        for (name, value) in &cfg.headers {
            // Header values may be secrets (a tenant token): treated as such.
            let secret = crate::secret::has_refs(&value.0);
            let v = resolve(&format!("header `{name}`"), &value.0, secret)?;
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::user(format!("`{name}` is not a valid HTTP header name")))?;
            let mut hv = HeaderValue::from_str(&v)
                .map_err(|_| Error::user(format!("the value of header `{name}` is not valid in an HTTP header")))?;
            hv.set_sensitive(secret);
            headers.insert(n, hv);
        }
        match &cfg.auth {
            Some(HttpAuth::ApiKey { header, query, value }) => {
                let key = resolve("the API key (`http.auth.value`)", &value.0, true)?;
                if let Some(h) = header {
                    let n = HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| Error::user(format!("`{h}` is not a valid HTTP header name")))?;
                    let mut hv = HeaderValue::from_str(&key)
                        .map_err(|_| Error::user("the API key holds characters an HTTP header cannot carry"))?;
                    hv.set_sensitive(true);
                    headers.insert(n, hv);
                }
                if let Some(q) = query {
                    key_param = Some((q.clone(), key));
                }
            }
            Some(HttpAuth::Bearer { token }) => {
                let t = resolve("the bearer token (`http.auth.token`)", &token.0, true)?;
                let mut hv = HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| Error::user("the bearer token holds characters an HTTP header cannot carry"))?;
                hv.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, hv);
            }
            None => {}
        }
        let written = &cfg.url.v;
        let url_text = env.resolve_url(written).map_err(|e| Error::user(format!("source {}: {e}", cfg.shown())))?;
        let mut url = Url::parse(&url_text)
            .map_err(|e| Error::user(format!("source {} is not a valid URL: {e}", cfg.shown())))?;
        if let Some(pw) = url.password() {
            secrets.push(pw.to_string());
        }
        // The key is added to each request; a key written in the URL is moved there.
        if let Some((q, _)) = &key_param {
            set_param(&mut url, q, None);
        }
        let started_from = match &cfg.incremental {
            Some(inc) => {
                let kept = previous
                    .and_then(|m| m.cursor.as_ref())
                    .and_then(|c| c.get("incremental"))
                    .filter(|c| c.get("field").and_then(|f| f.as_str()) == Some(inc.field.as_str()))
                    .and_then(|c| c.get("value"))
                    .filter(|v| !v.is_null())
                    .cloned();
                let from = kept.or_else(|| inc.initial.clone().map(serde_json::Value::String));
                if let Some(v) = &from {
                    set_param(&mut url, &inc.param, Some(&value_text(v)));
                }
                from
            }
            None => None,
        };
        let mut counter = 0;
        match &cfg.paging {
            Paging::Page { param, start, size_param, size } => {
                counter = *start;
                set_param(&mut url, param, Some(&start.to_string()));
                if let (Some(p), Some(n)) = (size_param, size) {
                    set_param(&mut url, p, Some(&n.to_string()));
                }
            }
            Paging::Offset { param, limit_param, limit } => {
                set_param(&mut url, param, Some("0"));
                set_param(&mut url, limit_param, Some(&limit.to_string()));
            }
            Paging::None | Paging::Cursor { .. } | Paging::Link => {}
        }
        let rt = crate::runtime::handle();
        let client = {
            let _guard = rt.enter();
            reqwest::Client::builder()
                .connect_timeout(cfg.connect_timeout)
                .read_timeout(cfg.read_timeout)
                .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| Error::internal(format!("cannot build the HTTP client: {e}")))?
        };
        Ok(HttpSource {
            cfg: cfg.clone(),
            client,
            rt,
            headers,
            key_param,
            secrets,
            next: Some(url),
            pages: 0,
            counter,
            last_hash: None,
            highest: started_from.clone(),
            started_from,
            cancel: ctx.cancel.clone(),
            last_request: None,
        })
    }

    /// A URL as it may be shown: no API key, no password.
    fn shown(&self, url: &Url) -> String {
        self.scrub(redact_url(url.as_str()))
    }

    /// Replaces every secret value in a message by `***`.
    fn scrub(&self, mut s: String) -> String {
        for v in &self.secrets {
            if s.contains(v.as_str()) {
                s = s.replace(v.as_str(), "***");
            }
        }
        s
    }

    /// Waits `d`, or less if the step is asked to stop.
    fn pause(&self, d: Duration) -> Result<()> {
        let until = Instant::now() + d;
        loop {
            self.cancel.check()?;
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep((until - now).min(Duration::from_millis(100)));
        }
    }

    /// One GET, retried as configured. Returns the response's headers and body.
    fn fetch(&mut self, url: &Url) -> Result<(HeaderMap, Vec<u8>)> {
        let shown = self.shown(url);
        let page = self.pages;
        let mut request_url = url.clone();
        if let Some((q, v)) = &self.key_param {
            set_param(&mut request_url, q, Some(v));
        }
        let mut attempt = 0u32;
        loop {
            if let Some(rate) = self.cfg.rate_limit
                && let Some(last) = self.last_request
            {
                let gap = Duration::from_secs_f64(1.0 / rate);
                let since = last.elapsed();
                if since < gap {
                    self.pause(gap - since)?;
                }
            }
            self.cancel.check()?;
            self.last_request = Some(Instant::now());
            let req = self.client.get(request_url.clone()).headers(self.headers.clone());
            let outcome = self.rt.block_on(async move {
                let resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => return Outcome::Retry(describe(&e), None),
                };
                let status = resp.status();
                let headers = resp.headers().clone();
                let mut resp = resp;
                let mut body = Vec::new();
                loop {
                    match resp.chunk().await {
                        Ok(Some(c)) => {
                            if body.len() + c.len() > MAX_BODY {
                                return Outcome::Fail(
                                    format!("the response is larger than {} MiB", MAX_BODY >> 20),
                                    false,
                                );
                            }
                            body.extend_from_slice(&c);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            return Outcome::Retry(format!("the response broke off: {}", describe(&e)), None);
                        }
                    }
                }
                if status.is_success() {
                    Outcome::Done(headers, body)
                } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                    let wait = retry_after(&headers, SystemTime::now());
                    Outcome::Retry(format!("HTTP {status}{}", snippet(&body)), wait)
                } else {
                    let hint = match status.as_u16() {
                        401 | 403 => "; check the API key or token (`http.auth`)",
                        404 => "; check the URL",
                        _ => "",
                    };
                    Outcome::Fail(format!("HTTP {status}{}{hint}", snippet(&body)), false)
                }
            });
            match outcome {
                Outcome::Done(h, b) => return Ok((h, b)),
                Outcome::Fail(why, retryable) => {
                    return Err(Error::external(self.scrub(format!("GET {shown} (page {page}): {why}")), retryable));
                }
                Outcome::Retry(why, wait) => {
                    if attempt >= self.cfg.max_retries {
                        let tries = if attempt == 0 { String::new() } else { format!(" (after {attempt} retries)") };
                        return Err(Error::external(
                            self.scrub(format!(
                                "GET {shown} (page {page}) failed{tries}: {why}; nothing was published"
                            )),
                            true,
                        ));
                    }
                    let wait =
                        wait.unwrap_or_else(|| backoff(self.cfg.retry_delay, attempt)).min(self.cfg.max_retry_wait);
                    attempt += 1;
                    let why = self.scrub(why);
                    warn!(url = %shown, page, attempt, wait_ms = wait.as_millis() as u64, reason = %why, "retrying an HTTP request");
                    self.pause(wait)?;
                }
            }
        }
    }
}

enum Outcome {
    Done(HeaderMap, Vec<u8>),
    /// Worth trying again (after the server's `Retry-After`, if it gave one).
    Retry(String, Option<Duration>),
    Fail(String, bool),
}

/// A reqwest error without its URL (which may carry the key), with its causes.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut s = kind.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s
}

/// The start of an error body, for the message.
fn snippet(body: &[u8]) -> String {
    let t = String::from_utf8_lossy(&body[..body.len().min(300)]);
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.is_empty() { String::new() } else { format!(": {t}") }
}

/// `Retry-After` as a wait: seconds, or an HTTP date (`Wed, 21 Oct 2026 07:28:00 GMT`).
pub fn retry_after(h: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(at.timestamp().max(0) as u64);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `base` × 2^attempt, times a random factor in [0.5, 1.5).
fn backoff(base: Duration, attempt: u32) -> Duration {
    let mut b = [0u8; 8];
    let r = if getrandom::fill(&mut b).is_ok() { u64::from_le_bytes(b) } else { 0 };
    let jitter = 0.5 + (r >> 11) as f64 / (1u64 << 53) as f64;
    base.mul_f64(2f64.powi(attempt.min(20) as i32) * jitter)
}

/// Sets (or with `None` removes) one query parameter, in its place, keeping the others.
fn set_param(url: &mut Url, name: &str, value: Option<&str>) {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut placed = false;
    for (k, v) in url.query_pairs() {
        if k != name {
            pairs.push((k.into_owned(), v.into_owned()));
        } else if let (Some(new), false) = (value, placed) {
            pairs.push((k.into_owned(), new.to_string()));
            placed = true;
        }
    }
    if let (Some(v), false) = (value, placed) {
        pairs.push((name.to_string(), v.to_string()));
    }
    url.set_query(None);
    if pairs.is_empty() {
        return;
    }
    let mut q = url.query_pairs_mut();
    for (k, v) in &pairs {
        q.append_pair(k, v);
    }
}

/// A cursor value as a query parameter.
fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `a` is above `b`: numerically when both are numbers, else as text.
fn above(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x > y,
        _ => value_text(a) > value_text(b),
    }
}

/// The `rel="next"` target of a `Link` header, resolved against `base`.
pub fn link_next(h: &HeaderMap, base: &Url) -> Option<Url> {
    for v in h.get_all(reqwest::header::LINK) {
        let v = v.to_str().ok()?;
        for part in v.split(',') {
            let (target, params) = part.split_once(';').unwrap_or((part, ""));
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            let is_next = params.split(';').any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=")
                    .map(|r| r.trim_matches('"').split_whitespace().any(|x| x.eq_ignore_ascii_case("next")))
                    .unwrap_or(false)
            });
            if is_next {
                return base.join(target).ok();
            }
        }
    }
    None
}

impl Source for HttpSource {
    fn next(&mut self) -> Result<Option<Object>> {
        let Some(url) = self.next.take() else { return Ok(None) };
        if self.pages >= self.cfg.max_pages {
            return Err(Error::external(
                format!(
                    "{}: the API has more than max_pages = {} pages; nothing was published (raise `http.max_pages` if that many are expected)",
                    self.shown(&url),
                    self.cfg.max_pages
                ),
                false,
            ));
        }
        self.pages += 1;
        let page = self.pages;
        let shown = self.shown(&url);
        let (headers, body) = self.fetch(&url)?;
        let doc = pages::parse(&body).map_err(|e| Error::DataMsg(format!("GET {shown} (page {page}): {e}")))?;
        let records = pages::records(doc, self.cfg.records.as_deref())
            .map_err(|e| Error::DataMsg(format!("GET {shown} (page {page}): {e}")))?;
        let n = records.len() as u64;
        info!(url = %shown, page, records = n, bytes = body.len(), "fetched a page");
        if n == 0 {
            // An empty page ends the paging and is not landed.
            return Ok(None);
        }
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            body.hash(&mut h);
            h.finish()
        };
        if self.last_hash == Some(hash) && self.cfg.paging != Paging::None {
            return Err(Error::external(
                format!(
                    "GET {shown} (page {page}) answered the same as page {}: the API seems to ignore the paging parameter; check `http.paging`",
                    page - 1
                ),
                false,
            ));
        }
        self.last_hash = Some(hash);
        if let Some(inc) = &self.cfg.incremental {
            for r in &records {
                let Some(v) = pages::at(r, &inc.field) else { continue };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(v.get()) else { continue };
                if v.is_null() || v.is_object() || v.is_array() {
                    continue;
                }
                if self.highest.as_ref().is_none_or(|h| above(&v, h)) {
                    self.highest = Some(v);
                }
            }
        }
        self.next = match &self.cfg.paging {
            Paging::None => None,
            Paging::Page { param, size, .. } => {
                if size.is_some_and(|s| n < s) {
                    None
                } else {
                    self.counter += 1;
                    let mut u = url.clone();
                    set_param(&mut u, param, Some(&self.counter.to_string()));
                    Some(u)
                }
            }
            Paging::Offset { param, limit, .. } => {
                if n < *limit {
                    None
                } else {
                    self.counter += n;
                    let mut u = url.clone();
                    set_param(&mut u, param, Some(&self.counter.to_string()));
                    Some(u)
                }
            }
            Paging::Cursor { param, next } => match pages::at(doc, next).and_then(pages::scalar) {
                Some(c) if !c.is_empty() => {
                    let mut u = url.clone();
                    set_param(&mut u, param, Some(&c));
                    Some(u)
                }
                _ => None,
            },
            Paging::Link => link_next(&headers, &url).map(|mut u| {
                if let Some((q, _)) = &self.key_param {
                    set_param(&mut u, q, None);
                }
                u
            }),
        };
        let size = body.len() as u64;
        Ok(Some(Object {
            name: format!("page-{page:05}.json"),
            shown,
            size: Some(size),
            count: RowCount::Given(n),
            reader: Box::new(std::io::Cursor::new(body)),
        }))
    }

    fn complete(&self) -> bool {
        self.cfg.incremental.is_none()
    }

    fn cursor(&self) -> Option<serde_json::Value> {
        let inc = self.cfg.incremental.as_ref()?;
        Some(json!({ "incremental": {
            "param": inc.param,
            "field": inc.field,
            "value": self.highest,
            "started_from": self.started_from,
        }}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, SystemTime::now()), Some(Duration::from_secs(7)));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_478); // Wed, 21 Oct 2015 07:27:58 GMT
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(2)));
        // A date in the past: at once.
        assert_eq!(retry_after(&h, now + Duration::from_secs(60)), Some(Duration::ZERO));
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        for attempt in 0..5 {
            let d = backoff(Duration::from_millis(100), attempt);
            let base = 100.0 * 2f64.powi(attempt as i32);
            let ms = d.as_secs_f64() * 1000.0;
            assert!(ms >= base * 0.5 && ms < base * 1.5, "attempt {attempt}: {ms} ms");
        }
    }

    #[test]
    fn link_headers_and_params() {
        let base = Url::parse("https://api.example/v1/items?page=1").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            HeaderValue::from_static(
                r#"<https://api.example/v1/items?page=1>; rel="prev", </v1/items?page=3>; rel="next""#,
            ),
        );
        assert_eq!(link_next(&h, &base).unwrap().as_str(), "https://api.example/v1/items?page=3");
        h.insert(reqwest::header::LINK, HeaderValue::from_static(r#"<x>; rel="last""#));
        assert!(link_next(&h, &base).is_none());
        let mut u = Url::parse("http://h/p?a=1&api_key=S&b=two%20words").unwrap();
        set_param(&mut u, "api_key", None);
        set_param(&mut u, "page", Some("2"));
        assert_eq!(u.as_str(), "http://h/p?a=1&b=two+words&page=2");
        set_param(&mut u, "a", Some("3"));
        assert_eq!(u.as_str(), "http://h/p?a=3&b=two+words&page=2");
        assert!(above(&json!(10), &json!(9)) && !above(&json!("2024-01-01"), &json!("2024-02-01")));
    }
}
