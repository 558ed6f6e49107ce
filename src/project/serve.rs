//! What `sluice.toml` says about serving: who may call the API (`[auth]`),
//! which other origins may call it from a browser (`[cors]`), request limits
//! (`[limits]`), extra routes that serve a published model or start a
//! pipeline (`[[routes]]`), and the dashboard's charts (`[[charts]]`). Inert
//! data, decoded with every problem at its place; references to models and
//! pipelines are checked in `plan::validate`.

use super::tree::{Cx, Decode, Dur, Fields, Node, Spanned, V, one_of};

/// The permissions of a token (and of anonymous callers, when allowed).
/// Each includes the ones before it: `trigger` may read, `admin` may do all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read pipelines, runs, logs, published data, metrics.
    Read,
    /// Also start and cancel runs.
    Trigger,
    /// Also manage tokens.
    Admin,
}

pub const SCOPES: &[(&str, Scope)] = &[("read", Scope::Read), ("trigger", Scope::Trigger), ("admin", Scope::Admin)];

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Trigger => "trigger",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        SCOPES.iter().find(|(n, _)| *n == s).map(|(_, v)| *v)
    }
}

/// `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// What callers without a token may do: nothing (the default), read, or
    /// read and trigger.
    pub anonymous: Option<Scope>,
    /// How long a dashboard login lasts.
    pub session: std::time::Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { anonymous: None, session: std::time::Duration::from_secs(12 * 3600) }
    }
}

/// A duration answers may be reused for (default 1 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheFor(pub std::time::Duration);

impl Default for CacheFor {
    fn default() -> Self {
        CacheFor(std::time::Duration::from_secs(1))
    }
}

/// `[cors]`.
#[derive(Debug, Clone, Default)]
pub struct CorsConfig {
    /// Origins (`https://app.example.com`) whose pages may call the API with a
    /// bearer token; `*` allows any.
    pub origins: Vec<String>,
}

/// `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest request body, in bytes.
    pub body: usize,
    /// The most bytes of request headers.
    pub headers: usize,
    /// Requests per second per token (or per client address without one); 0: no limit.
    pub rate: f64,
    /// How many requests may come at once above the rate.
    pub burst: f64,
    /// The most rows one page of a data endpoint returns.
    pub page: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { body: 1 << 20, headers: 16 << 10, rate: 100.0, burst: 200.0, page: 10_000 }
    }
}

/// One `[[routes]]` entry: an extra path for a published model (GET) or a
/// pipeline (POST starts a run).
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub path: Spanned<String>,
    pub target: RouteTarget,
}

#[derive(Debug, Clone)]
pub enum RouteTarget {
    Model(Spanned<String>),
    Pipeline(Spanned<String>),
}

impl RouteConfig {
    pub fn method(&self) -> &'static str {
        match self.target {
            RouteTarget::Model(_) => "GET",
            RouteTarget::Pipeline(_) => "POST",
        }
    }
}

/// How a chart draws its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    Bar,
    Line,
    Table,
}

pub const CHART_KINDS: &[(&str, ChartKind)] =
    &[("bar", ChartKind::Bar), ("line", ChartKind::Line), ("table", ChartKind::Table)];

impl ChartKind {
    pub fn name(self) -> &'static str {
        match self {
            ChartKind::Bar => "bar",
            ChartKind::Line => "line",
            ChartKind::Table => "table",
        }
    }
}

/// One `[[charts]]` entry: a published model drawn on the dashboard.
#[derive(Debug, Clone)]
pub struct ChartConfig {
    pub title: Option<String>,
    pub model: Spanned<String>,
    pub kind: ChartKind,
    /// The column along the x axis (a table shows every column when absent).
    pub x: Option<Spanned<String>>,
    /// The value columns (one series each).
    pub y: Vec<Spanned<String>>,
    /// A column whose values split `y` into one series each.
    pub group: Option<Spanned<String>>,
    /// The order of the rows drawn: a column, `-column` for descending.
    pub sort: Option<Spanned<String>>,
    /// The most rows drawn.
    pub limit: u64,
}

/// Everything about serving.
#[derive(Debug, Clone, Default)]
pub struct ServeConfig {
    /// `[cache] data`: how long a page of a published model may be answered
    /// from memory (the same request within this time); zero: never.
    pub cache_data: CacheFor,
    pub auth: AuthConfig,
    pub cors: CorsConfig,
    pub limits: Limits,
    pub routes: Vec<RouteConfig>,
    pub charts: Vec<ChartConfig>,
}

pub const AUTH_KEYS: &[&str] = &["anonymous", "session"];
pub const CACHE_KEYS: &[&str] = &["data"];
pub const CORS_KEYS: &[&str] = &["origins"];
pub const LIMITS_KEYS: &[&str] = &["body", "headers", "rate", "burst", "page"];
pub const ROUTE_KEYS: &[&str] = &["path", "model", "pipeline"];
pub const CHART_KEYS: &[&str] = &["title", "model", "type", "x", "y", "group", "sort", "limit"];

/// Paths the API owns; a route may not take them.
pub const RESERVED_PATHS: &[&str] =
    &["/api", "/healthz", "/readyz", "/metrics", "/ui", "/login", "/logout", "/assets", "/docs"];

/// Decodes the serving keys of `sluice.toml` (`t` is its top table).
pub fn decode_serve(t: &mut Fields, cx: &mut Cx) -> ServeConfig {
    let mut cfg = ServeConfig::default();
    if let Some(node) = t.node("cache")
        && let Some(mut f) = Fields::new(node, cx, "[cache]")
    {
        if let Some(d) = f.opt::<Dur>(cx, "data") {
            cfg.cache_data = CacheFor(d.0);
        }
        f.finish(cx, |_| None);
    }
    if let Some(node) = t.node("auth")
        && let Some(mut f) = Fields::new(node, cx, "[auth]")
    {
        if let Some(n) = f.node("anonymous") {
            let choices: &[(&str, Option<Scope>)] =
                &[("none", None), ("read", Some(Scope::Read)), ("trigger", Some(Scope::Trigger))];
            if let Some(a) = one_of(n, cx, "anonymous", choices) {
                cfg.auth.anonymous = a;
            }
        }
        if let Some(d) = f.opt::<Spanned<Dur>>(cx, "session") {
            if d.v.0.as_secs() < 60 {
                cx.error(d.loc.start as usize..d.loc.end as usize, "`session` must be at least a minute");
            } else {
                cfg.auth.session = d.v.0;
            }
        }
        f.finish(cx, |_| None);
    }
    if let Some(node) = t.node("cors")
        && let Some(mut f) = Fields::new(node, cx, "[cors]")
    {
        if let Some(origins) = f.opt::<Vec<Spanned<String>>>(cx, "origins") {
            for o in origins {
                if o.v != "*" && !valid_origin(&o.v) {
                    let sp = o.loc.start as usize..o.loc.end as usize;
                    cx.error(sp, format!("invalid origin \"{}\"", o.v)).help =
                        Some("an origin is scheme://host[:port], e.g. \"https://app.example.com\", or \"*\"".into());
                } else {
                    cfg.cors.origins.push(o.v);
                }
            }
        }
        f.finish(cx, |_| None);
    }
    if let Some(node) = t.node("limits")
        && let Some(mut f) = Fields::new(node, cx, "[limits]")
    {
        let l = &mut cfg.limits;
        let positive = |f: &mut Fields, cx: &mut Cx, key: &'static str, min: u64| -> Option<u64> {
            let v: u64 = f.opt(cx, key)?;
            if v < min {
                let sp = f.key_span(key).unwrap_or(f.span());
                cx.error(sp, format!("`{key}` must be at least {min}"));
                return None;
            }
            Some(v)
        };
        if let Some(v) = positive(&mut f, cx, "body", 1) {
            l.body = v as usize;
        }
        if let Some(v) = positive(&mut f, cx, "headers", 1024) {
            l.headers = v as usize;
        }
        if let Some(v) = positive(&mut f, cx, "page", 1) {
            l.page = v;
        }
        let rate: Option<f64> = f.opt(cx, "rate");
        let burst: Option<f64> = f.opt(cx, "burst");
        if let Some(r) = rate {
            if r < 0.0 || !r.is_finite() {
                let sp = f.key_span("rate").unwrap_or(f.span());
                cx.error(sp, "`rate` must be 0 (no limit) or more");
            } else {
                l.rate = r;
                l.burst = (2.0 * r).max(1.0);
            }
        }
        if let Some(b) = burst {
            if b < 1.0 || !b.is_finite() {
                let sp = f.key_span("burst").unwrap_or(f.span());
                cx.error(sp, "`burst` must be at least 1");
            } else {
                l.burst = b;
            }
        }
        f.finish(cx, |_| None);
    }
    if let Some(node) = t.node("routes") {
        for it in tables(node, cx, "routes") {
            let Some(mut f) = Fields::new(it, cx, "route") else { continue };
            let path: Option<Spanned<String>> = f.req(cx, "path");
            let model: Option<Spanned<String>> = f.opt(cx, "model");
            let pipeline: Option<Spanned<String>> = f.opt(cx, "pipeline");
            let sp = f.span();
            f.finish(cx, |_| None);
            let Some(path) = path else { continue };
            if let Some(why) = bad_route_path(&path.v) {
                cx.error(
                    path.loc.start as usize..path.loc.end as usize,
                    format!("invalid route path \"{}\": {why}", path.v),
                );
                continue;
            }
            let target = match (model, pipeline) {
                (Some(m), None) => RouteTarget::Model(m),
                (None, Some(p)) => RouteTarget::Pipeline(p),
                (m, _) => {
                    let msg = if m.is_some() {
                        "a route serves a `model` or starts a `pipeline`, not both"
                    } else {
                        "a route needs `model` (GET: a published model's rows) or `pipeline` (POST: start a run)"
                    };
                    cx.error(sp.start..sp.start, msg);
                    continue;
                }
            };
            cfg.routes.push(RouteConfig { path, target });
        }
    }
    if let Some(node) = t.node("charts") {
        for it in tables(node, cx, "charts") {
            let Some(mut f) = Fields::new(it, cx, "chart") else { continue };
            let title = f.opt(cx, "title");
            let model: Option<Spanned<String>> = f.req(cx, "model");
            let kind = match f.node("type") {
                Some(n) => one_of(n, cx, "type", CHART_KINDS),
                None => Some(ChartKind::Bar),
            };
            let x: Option<Spanned<String>> = f.opt(cx, "x");
            let y: Vec<Spanned<String>> = match f.node("y") {
                Some(n) => match &n.v {
                    V::Str(_) => Spanned::<String>::decode(n, cx, Some("y")).into_iter().collect(),
                    _ => Vec::<Spanned<String>>::decode(n, cx, Some("y")).unwrap_or_default(),
                },
                None => Vec::new(),
            };
            let group = f.opt(cx, "group");
            let sort = f.opt(cx, "sort");
            let limit = f.opt(cx, "limit").unwrap_or(1000);
            let sp = f.span();
            f.finish(cx, |_| None);
            let (Some(model), Some(kind)) = (model, kind) else { continue };
            if kind != ChartKind::Table && (x.is_none() || y.is_empty()) {
                cx.error(sp.start..sp.start, format!("a {} chart needs `x` and `y`", kind.name())).help =
                    Some("x = \"product_name\", y = [\"revenue\"] (columns declared for the model)".into());
                continue;
            }
            if limit == 0 {
                cx.error(sp.start..sp.start, "a chart's `limit` must be at least 1");
                continue;
            }
            cfg.charts.push(ChartConfig { title, model, kind, x, y, group, sort, limit });
        }
    }
    cfg
}

/// The tables of an array of tables (`[[routes]]`).
fn tables<'n>(node: &'n Node, cx: &mut Cx, key: &str) -> Vec<&'n Node> {
    match &node.v {
        V::Array(items) => items.iter().collect(),
        _ => {
            cx.error(
                node.span.clone(),
                format!("wrong type for `{key}`: expected an array of tables ([[{key}]]), found {}", node.type_name()),
            );
            Vec::new()
        }
    }
}

/// Why a route path cannot be used, if it cannot.
pub fn bad_route_path(p: &str) -> Option<String> {
    if !p.starts_with('/') || p.len() < 2 {
        return Some("it must start with `/` and name something, e.g. \"/sales\"".into());
    }
    if !p[1..]
        .split('/')
        .all(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        || p.contains("..")
    {
        return Some("use segments of letters, digits, `-`, `_` and `.`, separated by single `/`".into());
    }
    if let Some(r) = RESERVED_PATHS.iter().find(|r| p == **r || p.starts_with(&format!("{r}/"))) {
        return Some(format!("`{r}` belongs to the API (reserved: {})", RESERVED_PATHS.join(", ")));
    }
    None
}

/// `scheme://host[:port]` with nothing after it.
fn valid_origin(o: &str) -> bool {
    let Some((scheme, rest)) = o.split_once("://") else { return false };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains('/')
        && rest.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

#[cfg(test)]
mod tests {
    use super::super::tree::{FileId, SourceFile, parse};
    use super::*;

    fn decode(text: &str) -> (ServeConfig, Vec<String>) {
        let f = SourceFile::new("sluice.toml".into(), "x".into(), text.into());
        let root = parse(&f).unwrap();
        let mut cx = Cx::new(FileId(0), &f);
        let mut t = Fields::new(&root, &mut cx, "sluice.toml").unwrap();
        let cfg = decode_serve(&mut t, &mut cx);
        t.finish(&mut cx, |_| None);
        let msgs = cx
            .diags
            .iter()
            .map(|d| format!("{}{}", d.headline(), d.help.as_ref().map(|h| format!(" [{h}]")).unwrap_or_default()))
            .collect();
        (cfg, msgs)
    }

    #[test]
    fn serving_keys_decode() {
        let (c, msgs) = decode(
            r#"
[auth]
anonymous = "read"
session = "2h"

[cors]
origins = ["https://app.example.com", "http://localhost:3000"]

[limits]
body = 65536
rate = 10
page = 500

[[routes]]
path = "/sales"
model = "sales_by_product"

[[routes]]
path = "/run-etl"
pipeline = "retail"

[[charts]]
title = "Sales by product"
model = "sales_by_product"
x = "product_name"
y = "revenue"

[[charts]]
model = "sales_by_product"
type = "table"
"#,
        );
        assert_eq!(msgs, Vec::<String>::new());
        assert_eq!(c.auth.anonymous, Some(Scope::Read));
        assert_eq!(c.auth.session.as_secs(), 7200);
        assert_eq!(c.cors.origins.len(), 2);
        assert_eq!((c.limits.body, c.limits.rate, c.limits.burst, c.limits.page), (65536, 10.0, 20.0, 500));
        assert_eq!(c.routes.len(), 2);
        assert_eq!((c.routes[0].method(), c.routes[1].method()), ("GET", "POST"));
        assert_eq!(c.charts[0].kind, ChartKind::Bar);
        assert_eq!(c.charts[0].y[0].v, "revenue");
        assert_eq!(c.charts[1].kind, ChartKind::Table);
    }

    #[test]
    fn serving_mistakes_are_reported() {
        let (_, msgs) = decode(
            r#"
[auth]
anonymous = "admin"

[cors]
origins = ["app.example.com"]

[limits]
rate = -1
bdy = 3

[[routes]]
path = "/api/sales"
model = "m"

[[routes]]
path = "/x"

[[charts]]
model = "m"
type = "pie"

[[charts]]
model = "m"
"#,
        );
        assert_eq!(
            msgs,
            vec![
                "sluice.toml:3:13: invalid value \"admin\" for `anonymous` [valid choices: `none`, `read`, `trigger`]",
                "sluice.toml:6:12: invalid origin \"app.example.com\" [an origin is scheme://host[:port], e.g. \"https://app.example.com\", or \"*\"]",
                "sluice.toml:9:1: `rate` must be 0 (no limit) or more",
                "sluice.toml:10:1: unknown key `bdy` in [limits] [did you mean `body`?]",
                "sluice.toml:13:8: invalid route path \"/api/sales\": `/api` belongs to the API (reserved: /api, /healthz, /readyz, /metrics, /ui, /login, /logout, /assets, /docs)",
                "sluice.toml:16:1: a route needs `model` (GET: a published model's rows) or `pipeline` (POST: start a run)",
                "sluice.toml:21:8: invalid value \"pie\" for `type` [did you mean `line`? (valid choices: bar, line, table)]",
                "sluice.toml:23:1: a bar chart needs `x` and `y` [x = \"product_name\", y = [\"revenue\"] (columns declared for the model)]",
            ]
        );
    }

    #[test]
    fn route_paths() {
        assert_eq!(bad_route_path("/sales"), None);
        assert_eq!(bad_route_path("/v1/sales.json"), None);
        assert!(bad_route_path("sales").is_some());
        assert!(bad_route_path("/").is_some());
        assert!(bad_route_path("/a//b").is_some());
        assert!(bad_route_path("/a/../b").is_some());
        assert!(bad_route_path("/metrics").is_some());
        assert!(bad_route_path("/ui/x").is_some());
        assert!(bad_route_path("/apis").is_none());
    }
}
