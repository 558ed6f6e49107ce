//! Published models, served read-only: `GET /api/data/{model}` (and the
//! `[[routes]]` that name a model) with paging, column selection, filters
//! and sorting on the columns the model declares, as JSON or CSV, with an
//! `ETag`. Nothing from the request becomes SQL text: column names are
//! checked against the declared ones and written by the dialect, filter
//! values are checked against the column's type and bound as parameters,
//! limits are integers we parsed. Queries run on blocking threads over a
//! small pool of connections per warehouse.
//!
//! Also the clean steps' quality over time (`GET /api/quality`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use axum::Json;
use axum::extract::State as AxState;
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::IntoResponse;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::App;
use super::auth::Read;
use super::http::{ApiError, ApiResult, P, blocking, percent_decode};
use crate::error::Result;
use crate::orchestrate::schedule::rfc3339;
use crate::project::{ChartKind, Project, RouteTarget, StepKind};
use crate::types::{Column, ColumnType, Val};
use crate::warehouse::{Param, RowSink, Warehouse};

/// Open warehouse connections, by URL, ready for the next query; answers
/// built lately (`[cache] data`), and one lock per request being built so
/// identical concurrent requests share one query.
pub struct Data {
    pools: Mutex<HashMap<String, Vec<Box<dyn Warehouse>>>>,
    /// Queries running at once (each holds a connection).
    running: tokio::sync::Semaphore,
    answers: Mutex<HashMap<String, Answer>>,
    building: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for Data {
    fn default() -> Self {
        Data {
            pools: Mutex::default(),
            running: tokio::sync::Semaphore::new(POOL),
            answers: Mutex::default(),
            building: Mutex::default(),
        }
    }
}

/// A page built: its body, content type and ETag.
#[derive(Clone)]
struct Answer {
    at: std::time::Instant,
    body: bytes::Bytes,
    csv: bool,
    etag: String,
}

/// Connections kept (and queries run at once) per process.
const POOL: usize = 8;

impl Data {
    /// Runs `f` on a pooled connection to `connection` (the default when `None`).
    fn with_conn<T>(
        &self,
        project: &Project,
        connection: Option<&str>,
        f: impl FnOnce(&mut dyn Warehouse) -> Result<T>,
    ) -> Result<T> {
        let url = project.connection_url(connection)?;
        let key = url.expose().to_string();
        let popped = self.pools.lock().expect("pool").get_mut(&key).and_then(Vec::pop);
        let mut wh = match popped {
            Some(w) => w,
            None => crate::warehouse::connect(&url, &project.dir)?,
        };
        let res = f(wh.as_mut());
        // A connection that failed on the server's side is not reused.
        if !matches!(&res, Err(e) if e.kind() == crate::error::Kind::External) {
            let mut pools = self.pools.lock().expect("pool");
            let v = pools.entry(key).or_default();
            if v.len() < POOL {
                v.push(wh);
            }
        }
        res
    }
}

/// A published model as the endpoint serves it.
struct Published {
    name: String,
    columns: Vec<Column>,
    /// The default order (stable paging): the unique key, else the first column.
    order: Vec<String>,
    connection: Option<String>,
}

/// The published model `name`, or a 404 naming the published ones.
fn published(project: &Project, plan: &crate::plan::Plan, name: &str) -> std::result::Result<Published, ApiError> {
    let names: Vec<&str> = project.meta.models.iter().filter(|m| m.publish).map(|m| m.name.v.as_str()).collect();
    let Some(meta) = project.meta.models.iter().find(|m| m.publish && m.name.v == name) else {
        let list = if names.is_empty() { "none; mark one with `publish = true`".into() } else { names.join(", ") };
        return Err(ApiError::not_found(format!("no published model `{name}` (published: {list})")));
    };
    let columns: Vec<Column> = meta
        .columns
        .iter()
        .map(|c| c.column.clone().unwrap_or_else(|| Column::new(&c.name.v, ColumnType::Text)))
        .collect();
    if columns.is_empty() {
        return Err(ApiError::bad_request(format!(
            "model `{name}` is published but declares no columns: list them under [models.{name}.columns]"
        )));
    }
    let order = meta
        .unique_key
        .clone()
        .filter(|k| k.iter().all(|c| columns.iter().any(|x| &x.name == c)))
        .unwrap_or_else(|| vec![columns[0].name.clone()]);
    Ok(Published { name: name.to_string(), columns, order, connection: connection_of(project, plan, name) })
}

/// The connection of the `sql` step that builds `model` (the default one
/// when no step names a connection).
fn connection_of(project: &Project, plan: &crate::plan::Plan, model: &str) -> Option<String> {
    let idx = plan.models.nodes.iter().position(|n| n.name == model)?;
    for pl in &project.pipelines {
        for s in &pl.steps {
            if let StepKind::Sql(q) = &s.kind
                && let Some(c) = &q.connection
            {
                let builds = match &q.models {
                    Some(ms) => ms.iter().any(|m| m.v == model),
                    None => {
                        crate::plan::select(&plan.models, &q.select, &q.exclude).is_ok_and(|set| set.contains(&idx))
                    }
                };
                if builds {
                    return Some(c.v.clone());
                }
            }
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    Is,
}

const OPS: &[(&str, Op)] = &[
    ("eq", Op::Eq),
    ("ne", Op::Ne),
    ("gt", Op::Gt),
    ("gte", Op::Gte),
    ("lt", Op::Lt),
    ("lte", Op::Lte),
    ("like", Op::Like),
    ("is", Op::Is),
];

/// A request for a page of a model, checked.
#[derive(Debug)]
struct PageQuery {
    columns: Vec<usize>,
    filters: Vec<(usize, Op, String)>,
    sort: Vec<(usize, bool)>,
    limit: u64,
    offset: u64,
    csv: Option<bool>,
}

/// The most rows a page may skip.
const MAX_OFFSET: u64 = 1_000_000_000;

fn parse_page(m: &Published, raw_query: &str, page_limit: u64) -> std::result::Result<PageQuery, String> {
    let declared: Vec<&str> = m.columns.iter().map(|c| c.name.as_str()).collect();
    let col = |name: &str| -> std::result::Result<usize, String> {
        declared.iter().position(|c| *c == name).ok_or_else(|| {
            let hint = crate::error::suggest(name, &declared).map(|h| format!("; {h}")).unwrap_or_default();
            format!("model `{}` has no declared column `{name}` (columns: {}){hint}", m.name, declared.join(", "))
        })
    };
    let mut q = PageQuery {
        columns: (0..m.columns.len()).collect(),
        filters: Vec::new(),
        sort: Vec::new(),
        limit: 100.min(page_limit),
        offset: 0,
        csv: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| -> std::result::Result<String, String> {
            String::from_utf8(percent_decode(&s.replace('+', " "))).map_err(|_| "the query string is not UTF-8".into())
        };
        let (k, v) = (dec(k)?, dec(v)?);
        let once = ["limit", "offset", "columns", "sort", "format"];
        if once.contains(&k.as_str()) {
            if seen.contains(&k) {
                return Err(format!("`{k}` is given twice"));
            }
            seen.push(k.clone());
        }
        let number = |what: &str, v: &str| -> std::result::Result<u64, String> {
            v.parse::<u64>().map_err(|_| format!("invalid {what} \"{v}\": expected a whole number"))
        };
        match k.as_str() {
            "limit" => {
                let n = number("limit", &v)?;
                if n == 0 || n > page_limit {
                    return Err(format!("invalid limit {n}: from 1 to {page_limit} rows a page ([limits] page)"));
                }
                q.limit = n;
            }
            "offset" => {
                let n = number("offset", &v)?;
                if n > MAX_OFFSET {
                    return Err(format!("invalid offset {n}: at most {MAX_OFFSET}"));
                }
                q.offset = n;
            }
            "columns" => {
                q.columns = v.split(',').map(|c| col(c.trim())).collect::<std::result::Result<_, _>>()?;
                if q.columns.is_empty() {
                    return Err("`columns` names no column".into());
                }
            }
            "sort" => {
                for s in v.split(',') {
                    let s = s.trim();
                    let (name, desc) = match s.strip_prefix('-') {
                        Some(n) => (n, true),
                        None => (s, false),
                    };
                    q.sort.push((col(name)?, desc));
                }
            }
            "format" => {
                q.csv = match v.as_str() {
                    "csv" => Some(true),
                    "json" => Some(false),
                    other => return Err(format!("invalid format \"{other}\": json or csv")),
                }
            }
            _ => {
                let (name, op) = match k.rsplit_once('.') {
                    Some((n, o)) if declared.contains(&n) => {
                        let op = OPS.iter().find(|(x, _)| *x == o).map(|(_, op)| *op).ok_or_else(|| {
                            format!(
                                "unknown operator `{o}` in `{k}`: one of {}",
                                OPS.iter().map(|(x, _)| *x).collect::<Vec<_>>().join(", ")
                            )
                        })?;
                        (n, op)
                    }
                    _ if declared.contains(&k.as_str()) => (k.as_str(), Op::Eq),
                    _ => {
                        let hint = crate::error::suggest(k.split('.').next().unwrap_or(&k), &declared)
                            .map(|h| format!("; {h}"))
                            .unwrap_or_default();
                        return Err(format!(
                            "unknown parameter `{k}`: use limit, offset, columns, sort, format, or a declared column \
                             ({}) with an optional .{}{hint}",
                            declared.join(", "),
                            OPS.iter().map(|(x, _)| *x).collect::<Vec<_>>().join("/.")
                        ));
                    }
                };
                let i = col(name)?;
                let c = &m.columns[i];
                if op == Op::Is {
                    if v != "null" && v != "notnull" {
                        return Err(format!("invalid `{k}` \"{v}\": null or notnull"));
                    }
                } else if op == Op::Like {
                    if !c.ty.is_text() {
                        return Err(format!("`{k}`: like works on text columns; `{name}` is {}", c.ty));
                    }
                } else {
                    // The value must be of the column's type (it is bound, and
                    // compared as that type).
                    let typed = Column { nullable: true, format: None, ..c.clone() };
                    crate::types::parse_value(&typed, v.as_bytes(), true, &Default::default())
                        .map_err(|e| format!("invalid `{k}`: \"{}\" {e}", v.escape_debug()))?;
                }
                if q.filters.len() >= 32 {
                    return Err("too many filters (at most 32)".into());
                }
                q.filters.push((i, op, v));
            }
        }
    }
    if q.sort.is_empty() {
        for o in &m.order {
            if let Some(i) = declared.iter().position(|c| c == o) {
                q.sort.push((i, false));
            }
        }
    }
    Ok(q)
}

/// The SELECT of a page, with its bound values.
fn page_sql(m: &Published, q: &PageQuery, wh: &dyn Warehouse) -> (String, Vec<Param>) {
    let d = wh.dialect();
    let cols: Vec<String> = q
        .columns
        .iter()
        .map(|&i| {
            let n = d.quote(&m.columns[i].name);
            format!("{} AS {n}", d.as_text(&format!("sluice_t.{n}")))
        })
        .collect();
    // Conditions and the order name the table's columns (`sluice_t.x`), not
    // the selected ones (which PostgreSQL selects as text).
    let mut sql = format!("SELECT {} FROM {} sluice_t", cols.join(", "), wh.relation(&m.name));
    let mut params = Vec::new();
    for (n, (i, op, v)) in q.filters.iter().enumerate() {
        let c = &m.columns[*i];
        let name = format!("sluice_t.{}", d.quote(&c.name));
        sql.push_str(if n == 0 { " WHERE " } else { " AND " });
        if *op == Op::Is {
            let _ = write!(sql, "{name} IS {}", if v == "null" { "NULL" } else { "NOT NULL" });
            continue;
        }
        params.push(Param { text: v.clone(), ty: c.ty });
        let p = d.param(params.len(), c.ty);
        let sym = match op {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Gt => ">",
            Op::Gte => ">=",
            Op::Lt => "<",
            Op::Lte => "<=",
            Op::Like => "LIKE",
            Op::Is => unreachable!("handled above"),
        };
        let _ = write!(sql, "{name} {sym} {p}");
    }
    if !q.sort.is_empty() {
        let keys: Vec<String> = q
            .sort
            .iter()
            .map(|(i, desc)| format!("sluice_t.{}{}", d.quote(&m.columns[*i].name), if *desc { " DESC" } else { "" }))
            .collect();
        let _ = write!(sql, " ORDER BY {}", keys.join(", "));
    }
    // One row more than the page tells whether there is a next one.
    (d.limit_offset(&sql, q.limit + 1, q.offset), params)
}

/// Collects a page's rows as JSON or CSV, typed by the declared columns.
struct PageSink<'a> {
    cols: Vec<&'a Column>,
    csv: bool,
    out: Vec<u8>,
    rows: u64,
    limit: u64,
    more: bool,
    text: Vec<u8>,
}

impl RowSink for PageSink<'_> {
    fn columns(&mut self, _: &[String]) -> Result<()> {
        if self.csv {
            let names: Vec<&str> = self.cols.iter().map(|c| c.name.as_str()).collect();
            for (i, n) in names.iter().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                csv_field(&mut self.out, n);
            }
            self.out.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    fn row(&mut self, vals: &[Val]) -> Result<()> {
        if self.rows == self.limit {
            self.more = true;
            return Ok(());
        }
        if !self.csv && self.rows > 0 {
            self.out.push(b',');
        }
        self.rows += 1;
        if !self.csv {
            self.out.push(b'{');
        }
        for (i, (v, c)) in vals.iter().zip(&self.cols).enumerate() {
            self.text.clear();
            crate::warehouse::format_val(&mut self.text, v);
            let text = std::str::from_utf8(&self.text).unwrap_or("");
            if self.csv {
                if i > 0 {
                    self.out.push(b',');
                }
                if !matches!(v, Val::Null) {
                    let t = typed_text(v, text, c.ty);
                    csv_field(&mut self.out, &t);
                }
            } else {
                if i > 0 {
                    self.out.push(b',');
                }
                json_str(&mut self.out, &c.name);
                self.out.push(b':');
                json_value(&mut self.out, v, text, c.ty);
            }
        }
        if self.csv {
            self.out.extend_from_slice(b"\r\n");
        } else {
            self.out.push(b'}');
        }
        Ok(())
    }
}

/// A value's text as its declared type shows it (a decimal with its scale).
fn typed_text(v: &Val, text: &str, ty: ColumnType) -> String {
    match (v, ty) {
        (Val::Float(f), ColumnType::Decimal(Some((_, s)))) => crate::warehouse::format_scaled(*f, s),
        (Val::Int(i), ColumnType::Decimal(Some((_, s)))) if s > 0 => format!("{i}.{}", "0".repeat(s as usize)),
        (Val::Bool(b), _) => b.to_string(),
        (_, ColumnType::Boolean) => matches!(text, "t" | "true" | "1").to_string(),
        _ => text.to_string(),
    }
}

fn json_value(out: &mut Vec<u8>, v: &Val, text: &str, ty: ColumnType) {
    if matches!(v, Val::Null) {
        out.extend_from_slice(b"null");
        return;
    }
    let t = typed_text(v, text, ty);
    let numeric = matches!(
        ty,
        ColumnType::SmallInt | ColumnType::Integer | ColumnType::BigInt | ColumnType::Float | ColumnType::Decimal(_)
    );
    let literal = (numeric && json_number(&t))
        || (ty == ColumnType::Boolean && (t == "true" || t == "false"))
        || (ty == ColumnType::Json && serde_json::from_str::<serde::de::IgnoredAny>(&t).is_ok());
    if literal {
        out.extend_from_slice(t.as_bytes());
    } else {
        json_str(out, &t);
    }
}

/// Whether `s` is a JSON number literal.
fn json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_len = i - int_start;
    if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let f = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == f {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let e = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == e {
            return false;
        }
    }
    i == b.len()
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

fn csv_field(out: &mut Vec<u8>, s: &str) {
    if s.is_empty() {
        out.extend_from_slice(b"\"\"");
    } else if s.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// Serves a page of a published model (for `/api/data/{model}` and routes).
pub async fn serve_model(app: &App, model: &str, parts: &Parts) -> ApiResult {
    let loaded = app.project.get();
    let m = published(&loaded.project, &loaded.plan, model)?;
    let q = parse_page(&m, parts.uri.query().unwrap_or(""), app.limits.page).map_err(ApiError::bad_request)?;
    let accept = parts.headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).unwrap_or("");
    let csv = q.csv.unwrap_or_else(|| wants_csv(accept));
    let path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let keep = loaded.project.config.serve.cache_data.0;
    let key = format!("{model}\n{csv}\n{path}?{raw_query}");
    let fresh = |data: &Data| -> Option<Answer> {
        let answers = data.answers.lock().expect("answers");
        answers.get(&key).filter(|a| a.at.elapsed() < keep).cloned()
    };
    let answer = match fresh(&app.data) {
        Some(a) => a,
        None => {
            // One query per distinct request at a time; the others wait for it.
            let lock = {
                let mut b = app.data.building.lock().expect("building");
                if b.len() > 1000 {
                    b.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
                }
                b.entry(key.clone()).or_default().clone()
            };
            let _building = lock.lock().await;
            match fresh(&app.data) {
                Some(a) => a,
                None => {
                    let _slot = app
                        .data
                        .running
                        .acquire()
                        .await
                        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
                    let body =
                        build_page(app, loaded.clone(), m, q, csv, path.clone(), raw_query.clone(), model).await?;
                    let etag = format!(
                        "\"{}\"",
                        Sha256::digest(&body).iter().take(12).map(|b| format!("{b:02x}")).collect::<String>()
                    );
                    let a = Answer { at: std::time::Instant::now(), body: body.into(), csv, etag };
                    if !keep.is_zero() {
                        let mut answers = app.data.answers.lock().expect("answers");
                        if answers.len() > 1000 {
                            answers.retain(|_, x| x.at.elapsed() < keep);
                        }
                        answers.insert(key.clone(), a.clone());
                    }
                    a
                }
            }
        }
    };
    let (body, csv, etag) = (answer.body, answer.csv, answer.etag);
    let matches = parts
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/") == etag || t.trim() == "*"));
    let ctype = if csv { "text/csv; charset=utf-8" } else { "application/json" };
    let mut r = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, ctype)], body).into_response()
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    Ok(r)
}

/// Queries a page and writes it as JSON or CSV.
#[allow(clippy::too_many_arguments)]
async fn build_page(
    app: &App,
    loaded: std::sync::Arc<crate::orchestrate::runs::Loaded>,
    m: Published,
    q: PageQuery,
    csv: bool,
    path: String,
    raw_query: String,
    model: &str,
) -> std::result::Result<Vec<u8>, ApiError> {
    let a = app.clone();
    blocking(move || {
        a.data.with_conn(&loaded.project, m.connection.as_deref(), |wh| {
            let (sql, params) = page_sql(&m, &q, wh);
            let cols: Vec<&Column> = q.columns.iter().map(|&i| &m.columns[i]).collect();
            let mut sink = PageSink {
                cols,
                csv,
                out: Vec::with_capacity(8192),
                rows: 0,
                limit: q.limit,
                more: false,
                text: Vec::new(),
            };
            wh.query_bound(&sql, &params, &mut sink)?;
            if csv {
                return Ok(sink.out);
            }
            let mut out = Vec::with_capacity(sink.out.len() + 512);
            out.extend_from_slice(b"{\"model\":");
            json_str(&mut out, &m.name);
            out.extend_from_slice(b",\"columns\":[");
            for (n, &i) in q.columns.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                let c = &m.columns[i];
                out.extend_from_slice(b"{\"name\":");
                json_str(&mut out, &c.name);
                out.extend_from_slice(b",\"type\":");
                json_str(&mut out, &c.ty.to_string());
                out.push(b'}');
            }
            let _ = write!(
                Bytes(&mut out),
                "],\"limit\":{},\"offset\":{},\"count\":{},\"next\":",
                q.limit,
                q.offset,
                sink.rows
            );
            if sink.more {
                json_str(&mut out, &next_link(&path, &raw_query, q.offset + q.limit));
            } else {
                out.extend_from_slice(b"null");
            }
            out.extend_from_slice(b",\"rows\":[");
            out.extend_from_slice(&sink.out);
            out.extend_from_slice(b"]}");
            Ok(out)
        })
    })
    .await
    .map_err(|e| {
        let missing = ["does not exist", "no such table", "doesn't exist"].iter().any(|m| e.1.contains(m));
        if e.0 == StatusCode::BAD_REQUEST && missing {
            ApiError::not_found(format!(
                "model `{model}` has not been built yet: run the pipeline that builds it ({})",
                e.1
            ))
        } else {
            e
        }
    })
}

/// A `fmt::Write` over bytes.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn wants_csv(accept: &str) -> bool {
    // The first of JSON and CSV the client lists (JSON when it lists neither).
    let pos = |m: &str| accept.find(m);
    match (pos("text/csv"), pos("application/json")) {
        (Some(c), Some(j)) => c < j,
        (Some(_), None) => true,
        _ => false,
    }
}

/// The query string with `offset` replaced.
fn next_link(path: &str, raw: &str, offset: u64) -> String {
    let mut parts: Vec<String> =
        raw.split('&').filter(|p| !p.is_empty() && !p.starts_with("offset=")).map(str::to_string).collect();
    parts.push(format!("offset={offset}"));
    format!("{path}?{}", parts.join("&"))
}

/// A page of a published model's rows.
///
/// Query parameters: `limit` (1 to `[limits] page`, default 100), `offset`,
/// `columns=a,b`, `sort=a,-b`, `format=json|csv` (else by `Accept`), and
/// filters on declared columns: `col=v` (equal), `col.ne`, `col.gt`,
/// `col.gte`, `col.lt`, `col.lte`, `col.like` (text), `col.is=null|notnull`.
/// Values must be of the column's type and are bound, never put in SQL.
#[utoipa::path(get, path = "/api/data/{model}", tag = "data", security(("bearer" = []), ("session" = [])),
    params(
        ("model" = String, Path, description = "a published model"),
        ("limit" = Option<u64>, Query, description = "rows a page (1 to [limits] page; default 100)", minimum = 1),
        ("offset" = Option<u64>, Query, description = "rows to skip", maximum = 1000000000),
        ("columns" = Option<String>, Query, description = "comma-separated declared columns"),
        ("sort" = Option<String>, Query, description = "comma-separated declared columns, `-` for descending"),
        ("format" = Option<String>, Query, description = "json or csv (else by Accept)")),
    responses(
        (status = 200, description = "a page: model, columns, limit, offset, count, next (a link or null), rows", content_type = "application/json", body = Object),
        (status = 304, description = "not modified (If-None-Match)"),
        (status = 400, body = super::api::ErrorBody), (status = 401, body = super::api::ErrorBody),
        (status = 404, description = "no such published model", body = super::api::ErrorBody)))]
pub async fn data(AxState(app): AxState<App>, _: Read, P(model): P<String>, req: axum::extract::Request) -> ApiResult {
    let (parts, _) = req.into_parts();
    serve_model(&app, &model, &parts).await
}

#[derive(Serialize, ToSchema)]
pub struct ColumnOut {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelOut {
    pub name: String,
    pub description: Option<String>,
    pub path: String,
    /// Other paths that serve it (`[[routes]]`).
    pub routes: Vec<String>,
    pub columns: Vec<ColumnOut>,
}

#[derive(Serialize, ToSchema)]
pub struct ChartOut {
    pub title: String,
    pub model: String,
    /// `bar`, `line` or `table`.
    #[serde(rename = "type")]
    pub kind: String,
    pub x: Option<String>,
    pub y: Vec<String>,
    pub group: Option<String>,
    /// A column, `-column` for descending.
    pub sort: Option<String>,
    pub limit: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelOut>,
    pub charts: Vec<ChartOut>,
    /// Extra paths that start a pipeline's run.
    pub pipeline_routes: Vec<(String, String)>,
}

/// The published models, their columns, and the dashboard's charts.
#[utoipa::path(get, path = "/api/data", tag = "data", security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = ModelList), (status = 401, body = super::api::ErrorBody)))]
pub async fn models(AxState(app): AxState<App>, _: Read) -> Json<ModelList> {
    let loaded = app.project.get();
    let p = &loaded.project;
    let routes = &p.config.serve.routes;
    let models = p
        .meta
        .models
        .iter()
        .filter(|m| m.publish)
        .map(|m| ModelOut {
            name: m.name.v.clone(),
            description: m.description.clone(),
            path: format!("/api/data/{}", m.name.v),
            routes: routes
                .iter()
                .filter(|r| matches!(&r.target, RouteTarget::Model(x) if x.v == m.name.v))
                .map(|r| r.path.v.clone())
                .collect(),
            columns: m
                .columns
                .iter()
                .map(|c| ColumnOut {
                    name: c.name.v.clone(),
                    ty: c.column.as_ref().map(|x| x.ty.to_string()).unwrap_or_else(|| "text".into()),
                    description: c.description.clone(),
                })
                .collect(),
        })
        .collect();
    let charts = p
        .config
        .serve
        .charts
        .iter()
        .map(|c| ChartOut {
            title: c.title.clone().unwrap_or_else(|| c.model.v.clone()),
            model: c.model.v.clone(),
            kind: c.kind.name().to_string(),
            x: c.x.as_ref().map(|x| x.v.clone()),
            y: c.y.iter().map(|y| y.v.clone()).collect(),
            group: c.group.as_ref().map(|g| g.v.clone()),
            sort: c.sort.as_ref().map(|g| g.v.clone()),
            limit: if c.kind == ChartKind::Table { c.limit.min(100) } else { c.limit },
        })
        .collect();
    let pipeline_routes = routes
        .iter()
        .filter_map(|r| match &r.target {
            RouteTarget::Pipeline(pl) => Some((r.path.v.clone(), pl.v.clone())),
            _ => None,
        })
        .collect();
    Json(ModelList { models, charts, pipeline_routes })
}

#[derive(Serialize, ToSchema)]
pub struct QualityPoint {
    pub at: String,
    /// 0 to 100; completeness, validity and uniqueness are fractions (0 to 1).
    pub run_id: String,
    pub pipeline: String,
    pub step: String,
    pub score: f64,
    pub completeness: f64,
    pub validity: f64,
    pub uniqueness: f64,
    pub rows_in: u64,
    pub rows_out: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub outliers: u64,
}

#[derive(Serialize, ToSchema)]
pub struct QualitySeries {
    pub table: String,
    pub points: Vec<QualityPoint>,
}

#[derive(Serialize, ToSchema)]
pub struct QualityList {
    pub tables: Vec<QualitySeries>,
}

/// Each cleaned table's quality score over time (the clean steps' runs).
#[utoipa::path(get, path = "/api/quality", tag = "data", security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = QualityList), (status = 401, body = super::api::ErrorBody)))]
pub async fn quality(AxState(app): AxState<App>, _: Read) -> ApiResult {
    let state = app.state.clone();
    let outs = blocking(move || state.task_outputs("clean", 2000)).await?;
    let mut tables: Vec<QualitySeries> = Vec::new();
    for o in outs {
        let q = &o.output["quality"];
        let r = &o.output["report"];
        let Some(table) = q["table"].as_str() else { continue };
        let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
        let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        let point = QualityPoint {
            at: rfc3339(o.finished_at),
            run_id: o.run_id,
            pipeline: o.pipeline,
            step: o.step,
            score: f(&q["score"]),
            completeness: f(&q["completeness"]),
            validity: f(&q["validity"]),
            uniqueness: f(&q["uniqueness"]),
            rows_in: u(&r["rows_in"]),
            rows_out: u(&r["rows_out"]),
            duplicates: u(&r["removed"]["duplicates"]),
            rejected: u(&r["removed"]["invalid_type"]),
            outliers: r["removed"]["outliers"]
                .as_array()
                .map(|a| a.iter().map(|x| x["rows"].as_u64().unwrap_or(0)).sum())
                .unwrap_or(0),
        };
        match tables.iter_mut().find(|t| t.table == table) {
            Some(t) => t.points.push(point),
            None => tables.push(QualitySeries { table: table.to_string(), points: vec![point] }),
        }
    }
    Ok(Json(QualityList { tables }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Published {
        Published {
            name: "sales".into(),
            columns: vec![
                Column::new("product", ColumnType::Text),
                Column::new("qty", ColumnType::Integer),
                Column::new("revenue", ColumnType::Decimal(Some((12, 2)))),
                Column::new("day", ColumnType::Date),
            ],
            order: vec!["product".into()],
            connection: None,
        }
    }

    #[test]
    fn pages_parse_declared_columns_only() {
        let m = model();
        let q = parse_page(&m, "limit=5&offset=10&columns=product,qty&sort=-qty&qty.gt=3&product=a%20b", 100).unwrap();
        assert_eq!((q.limit, q.offset, q.columns.clone()), (5, 10, vec![0, 1]));
        assert_eq!(q.sort, vec![(1, true)]);
        assert_eq!(q.filters, vec![(1, Op::Gt, "3".into()), (0, Op::Eq, "a b".into())]);
        let err = |s: &str| parse_page(&m, s, 100).unwrap_err();
        assert_eq!(err("limit=101"), "invalid limit 101: from 1 to 100 rows a page ([limits] page)");
        assert_eq!(err("limit=0"), "invalid limit 0: from 1 to 100 rows a page ([limits] page)");
        assert_eq!(err("limit=x"), "invalid limit \"x\": expected a whole number");
        assert!(err("sort=qty;drop table x").starts_with("model `sales` has no declared column `qty;drop table x`"));
        assert!(err("product%22%20or%201=1").starts_with("unknown parameter `product\" or 1`"));
        assert_eq!(err("qty=1%20or%201=1"), "invalid `qty`: \"1 or 1=1\" is not an integer");
        assert!(err("qty.between=1").starts_with("unknown operator `between` in `qty.between`"));
        assert!(err("revenue.like=1%25").starts_with("`revenue.like`: like works on text columns"));
        assert_eq!(err("limit=1&limit=2"), "`limit` is given twice");
        assert!(err("day=2026-13-01").starts_with("invalid `day`: "));
        // Sorted by the model's order when not asked.
        assert_eq!(parse_page(&m, "", 100).unwrap().sort, vec![(0, false)]);
    }

    #[test]
    fn json_numbers_and_csv_fields() {
        for ok in ["0", "-1", "12.50", "1e5", "-0.5E-3"] {
            assert!(json_number(ok), "{ok}");
        }
        for bad in ["", "+1", "01", "1.", ".5", "1e", "NaN", "1,5"] {
            assert!(!json_number(bad), "{bad}");
        }
        let mut out = Vec::new();
        csv_field(&mut out, "a,\"b\"");
        assert_eq!(out, b"\"a,\"\"b\"\"\"");
        assert!(wants_csv("text/csv"));
        assert!(!wants_csv("application/json, text/csv"));
        assert!(!wants_csv("*/*"));
        assert_eq!(next_link("/sales", "limit=2&offset=0&qty.gt=1", 2), "/sales?limit=2&qty.gt=1&offset=2");
    }
}
