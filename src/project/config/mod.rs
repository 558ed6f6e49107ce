//! The project's configuration as typed data: `sluice.toml` and
//! `pipelines/*.toml`, decoded from the spanned tree with every problem
//! reported at its file:line:col. The structs are inert data: nothing here
//! connects, reads data files or resolves secrets; cross-references between
//! files are checked in `validate`.
//!
//! Layout: this file holds `sluice.toml` (project, connections, storage,
//! state) and the helpers decoders share; `pipelines` pipelines and triggers;
//! `steps` the keys every step has, `StepKind` and the small kinds; one file
//! per larger step kind (`ingest`, `load`, `export`, `clean`) with its config
//! and decoder; `kinds` the registry of step kinds.

use std::str::FromStr;

use super::tree::{Cx, Decode, Dur, Fields, FileId, Loc, Node, Spanned, V, Written, one_of};
use crate::types::{Column, ColumnType, Schema};

mod clean;
mod export;
mod ingest;
mod kinds;
mod load;
mod pipelines;
mod steps;
pub use clean::*;
pub use export::*;
pub use ingest::*;
pub use kinds::{KINDS, StepKindDef, step_kind, step_kind_names};
pub use load::*;
pub use pipelines::*;
pub use steps::*;

/// The file name of a project's main configuration.
pub const PROJECT_FILE: &str = "sluice.toml";

/// The connection used when a project declares none.
pub const DEFAULT_CONNECTION: &str = "warehouse";
/// Its URL, relative to the project folder.
pub const DEFAULT_WAREHOUSE_URL: &str = "sqlite://.sluice/warehouse.db";
/// The object store used when `[storage]` gives no URL.
pub const DEFAULT_STORAGE_URL: &str = "file://.sluice/lake";
/// Where runs are recorded unless `[state] url` says otherwise.
pub const DEFAULT_STATE_URL: &str = "sqlite://.sluice/state.db";

/// `sluice.toml`.
#[derive(Debug, Clone)]
pub struct ProjectConfig {
    pub file: FileId,
    /// The project's name, shown in logs and the API.
    pub name: Option<Spanned<String>>,
    pub description: Option<String>,
    /// Named database connections; the first is the default unless `defaults.connection` says otherwise.
    pub connections: Vec<ConnectionConfig>,
    pub storage: StorageConfig,
    pub defaults: Defaults,
    /// Values for `var('name')` in models.
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub models: ModelsConfig,
    pub state: StateConfig,
    /// `[auth]`, `[cors]`, `[limits]`, `[[routes]]`, `[[charts]]`.
    pub serve: super::serve::ServeConfig,
}

#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub name: Spanned<String>,
    /// The URL as written (it may hold `${env:…}` references).
    pub url: Spanned<String>,
}

#[derive(Debug, Clone, Default)]
pub struct StorageConfig {
    /// `file://DIR` (relative to the project) or `s3://bucket/prefix`.
    pub url: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// The connection steps use when they name none.
    pub connection: Option<Spanned<String>>,
    /// IANA time zone for schedules and logical dates.
    pub timezone: Option<Spanned<String>>,
    /// Retries of a failed step.
    pub retries: Option<u32>,
    /// The first retry's delay.
    pub retry_delay: Option<Dur>,
}

#[derive(Debug, Clone)]
pub struct ModelsConfig {
    /// Folders that hold `*.sql` models, relative to the project.
    pub paths: Vec<Spanned<String>>,
    /// How models are built unless they say otherwise.
    pub materialized: Materialized,
    /// How many models are built at once (independent ones, on their own connections).
    pub threads: Option<usize>,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig { paths: Vec::new(), materialized: Materialized::Table, threads: None }
    }
}

#[derive(Debug, Clone, Default)]
pub struct StateConfig {
    /// Where runs are recorded: `sqlite://…` (default `.sluice/state.db`) or
    /// `postgres://…`; kept as written (it may hold secrets).
    pub url: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Materialized {
    /// Rebuilt whole each run, under a temporary name, then swapped in.
    Table,
    View,
    /// Built once, then only new or changed rows are added (merged on `unique_key`).
    Incremental,
    /// Not built: inlined as a CTE into the models that use it.
    Ephemeral,
}

impl Materialized {
    pub fn name(self) -> &'static str {
        match self {
            Materialized::Table => "table",
            Materialized::View => "view",
            Materialized::Incremental => "incremental",
            Materialized::Ephemeral => "ephemeral",
        }
    }
}

pub const MATERIALIZED: &[(&str, Materialized)] = &[
    ("table", Materialized::Table),
    ("view", Materialized::View),
    ("incremental", Materialized::Incremental),
    ("ephemeral", Materialized::Ephemeral),
];

pub const PROJECT_KEYS: &[&str] = &[
    "name",
    "description",
    "connections",
    "storage",
    "defaults",
    "vars",
    "models",
    "state",
    "auth",
    "cors",
    "limits",
    "cache",
    "routes",
    "charts",
];
/// Decodes `sluice.toml`.
pub fn decode_project(root: &Node, cx: &mut Cx) -> ProjectConfig {
    let mut cfg = ProjectConfig {
        file: cx.file,
        name: None,
        description: None,
        connections: Vec::new(),
        storage: StorageConfig::default(),
        defaults: Defaults::default(),
        vars: serde_json::Map::new(),
        models: ModelsConfig::default(),
        state: StateConfig::default(),
        serve: Default::default(),
    };
    let Some(mut t) = Fields::new(root, cx, "sluice.toml") else { return cfg };
    cfg.name = t.req(cx, "name");
    if let Some(n) = &cfg.name
        && !valid_name(n)
    {
        cx.error(span(&n.loc), format!("invalid project name \"{}\"", n.v)).help = Some(NAME_RULE.into());
    }
    cfg.description = t.opt(cx, "description");
    if let Some(node) = t.node("connections") {
        let entries: &[_] = match &node.v {
            V::Table(entries) => entries,
            _ => {
                cx.error(
                    node.span.clone(),
                    format!("wrong type for `connections`: expected a table, found {}", node.type_name()),
                )
                .help = Some("write one [connections.NAME] table per connection, with `url = \"…\"`".into());
                &[]
            }
        };
        for (key, value) in entries {
            let what = format!("connection `{}`", key.name);
            let Some(mut f) = Fields::new(value, cx, what) else { continue };
            let url: Option<Spanned<Written>> = f.req(cx, "url");
            let url = url.map(|u| Spanned { v: u.v.0, loc: u.loc });
            f.finish(cx, |_| None);
            if !valid_name(&key.name) {
                cx.error(key.span.clone(), format!("invalid connection name \"{}\"", key.name)).help =
                    Some(NAME_RULE.into());
            }
            if let Some(url) = url {
                check_refs(cx, &url);
                check_url_scheme(cx, &url, &["sqlite", "postgres", "postgresql", "mysql", "mariadb", "oracle"]);
                cfg.connections
                    .push(ConnectionConfig { name: Spanned { v: key.name.clone(), loc: cx.loc(&key.span) }, url });
            }
        }
    }
    if let Some(node) = t.node("storage")
        && let Some(mut f) = Fields::new(node, cx, "[storage]")
    {
        cfg.storage.url = f.opt(cx, "url");
        if let Some(u) = &cfg.storage.url {
            check_url_scheme(cx, u, &["file", "s3"]);
        }
        f.finish(cx, |_| None);
    }
    if let Some(node) = t.node("defaults")
        && let Some(mut f) = Fields::new(node, cx, "[defaults]")
    {
        cfg.defaults.connection = f.opt(cx, "connection");
        cfg.defaults.timezone = f.opt(cx, "timezone");
        if let Some(tz) = &cfg.defaults.timezone {
            check_timezone(cx, tz);
        }
        cfg.defaults.retries = f.opt(cx, "retries");
        cfg.defaults.retry_delay = f.opt(cx, "retry_delay");
        f.finish(cx, |_| None);
    }
    if let Some(node) = t.node("vars") {
        match resolve_json(node.to_json(), node, cx) {
            serde_json::Value::Object(m) => cfg.vars = m,
            _ => {
                cx.error(
                    node.span.clone(),
                    format!("wrong type for `vars`: expected a table, found {}", node.type_name()),
                );
            }
        }
    }
    if let Some(node) = t.node("models")
        && let Some(mut f) = Fields::new(node, cx, "[models]")
    {
        if let Some(p) = f.opt(cx, "paths") {
            cfg.models.paths = p;
        }
        if let Some(n) = f.node("materialized")
            && let Some(m) = one_of(n, cx, "materialized", MATERIALIZED)
        {
            cfg.models.materialized = m;
        }
        cfg.models.threads = f.opt(cx, "threads");
        if cfg.models.threads == Some(0) {
            let sp = f.key_span("threads").unwrap_or(f.span());
            cx.error(sp, "`threads` must be at least 1");
        }
        f.finish(cx, |_| None);
    }
    if let Some(node) = t.node("state")
        && let Some(mut f) = Fields::new(node, cx, "[state]")
    {
        let url: Option<Spanned<Written>> = f.opt(cx, "url");
        cfg.state.url = url.map(|u| Spanned { v: u.v.0, loc: u.loc });
        if let Some(u) = &cfg.state.url {
            check_refs(cx, u);
            check_url_scheme(cx, u, &["sqlite", "postgres", "postgresql"]);
        }
        f.finish(cx, |_| None);
    }
    cfg.serve = super::serve::decode_serve(&mut t, cx);
    t.finish(cx, |k| match k {
        "pipelines" | "steps" => Some("pipelines are files of their own: pipelines/NAME.toml".into()),
        "serve" | "api" | "dashboard" => {
            Some("serving is configured with [auth], [cors], [limits], [cache], [[routes]] and [[charts]]".into())
        }
        _ => None,
    });
    cfg
}

/// Resolves `${env:…}` references in the strings of a JSON value.
fn resolve_json(v: serde_json::Value, node: &Node, cx: &mut Cx) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        J::String(s) if crate::secret::has_refs(&s) => match cx.env.map(|e| e.resolve(&s)) {
            Some(Ok(r)) => J::String(r),
            Some(Err(e)) => {
                cx.error(node.span.clone(), format!("in `vars`: {e}"));
                J::String(s)
            }
            None => J::String(s),
        },
        J::Array(a) => J::Array(a.into_iter().map(|x| resolve_json(x, node, cx)).collect()),
        J::Object(m) => J::Object(m.into_iter().map(|(k, x)| (k, resolve_json(x, node, cx))).collect()),
        other => other,
    }
}

pub const NAME_RULE: &str = "names start with a letter or `_` and hold only letters, digits, `_` and `-`";

/// Whether a name is usable for projects, pipelines, steps and connections.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn span(loc: &Loc) -> std::ops::Range<usize> {
    loc.start as usize..loc.end as usize
}

fn check_url_scheme(cx: &mut Cx, url: &Spanned<String>, schemes: &[&str]) {
    if url.v.starts_with("${") {
        return;
    }
    let scheme = url.v.split_once("://").map(|(s, _)| s).or_else(|| url.v.split_once(':').map(|(s, _)| s));
    match scheme {
        Some(s) if schemes.contains(&s) => {}
        _ => {
            let list = schemes.iter().map(|s| format!("{s}://")).collect::<Vec<_>>().join(", ");
            cx.error(span(&url.loc), format!("unsupported URL \"{}\"", crate::secret::redact_url(&url.v))).help =
                Some(format!("use one of: {list}"));
        }
    }
}

fn check_timezone(cx: &mut Cx, tz: &Spanned<String>) {
    if chrono_tz::Tz::from_str(&tz.v).is_err() {
        let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect();
        let d = cx.error(span(&tz.loc), format!("unknown time zone \"{}\"", tz.v));
        d.help = crate::error::nearest(&tz.v, names.iter().copied())
            .map(|n| format!("did you mean `{n}`? (an IANA name such as Europe/Helsinki or UTC)"))
            .or_else(|| Some("use an IANA name such as Europe/Helsinki, America/New_York or UTC".into()));
    }
}

/// A string or an array of strings, as a list.
pub fn string_or_list(n: &Node, cx: &mut Cx, key: &str) -> Option<Vec<String>> {
    match &n.v {
        V::Str(_) => String::decode(n, cx, Some(key)).map(|s| vec![s]),
        _ => Vec::<String>::decode(n, cx, Some(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::{SourceFile, parse};
    use super::*;

    fn pipeline(text: &str) -> (Option<PipelineConfig>, Vec<String>) {
        let f = SourceFile::new("pipelines/p.toml".into(), "p.toml".into(), text.into());
        let root = parse(&f).unwrap();
        let mut cx = Cx::new(FileId(0), &f);
        let p = decode_pipeline(&root, &mut cx, "p");
        let msgs = cx
            .diags
            .iter()
            .map(|d| format!("{}{}", d.headline(), d.help.as_ref().map(|h| format!(" [{h}]")).unwrap_or_default()))
            .collect();
        (p, msgs)
    }

    #[test]
    fn export_options_belong_to_their_format() {
        let (p, msgs) = pipeline(
            r#"
[[steps]]
name = "a"
kind = "export"
table = "t"
path = "out/t.parquet"
compression = "snappy"
row_group_size = 5000

[[steps]]
name = "b"
kind = "export"
table = "t"
path = "out/t.csv"
quoting = "backslash"
compression = "zstd"

[[steps]]
name = "c"
kind = "export"
table = "t"
path = "out/t.tsv"
quoting = "backslash"
row_group_size = 0
"#,
        );
        assert_eq!(
            msgs,
            vec![
                "pipelines/p.toml:15:1: `quoting` applies only to tsv exports, not csv [remove `quoting`, or set `format` to tsv]",
                "pipelines/p.toml:16:1: `compression` applies only to parquet exports, not csv [remove `compression`, or set `format` to parquet]",
                "pipelines/p.toml:24:1: `row_group_size` applies only to parquet exports, not tsv [remove `row_group_size`, or set `format` to parquet]",
                "pipelines/p.toml:24:18: `row_group_size` is a number of rows from 1 to 100000000",
            ]
        );
        let _ = p;
        let (p, msgs) = pipeline(
            "[[steps]]\nname = \"a\"\nkind = \"export\"\ntable = \"t\"\npath = \"s3://b/x.parquet\"\ncompression = \"snappy\"\nrow_group_size = 5000\n",
        );
        assert_eq!(msgs, Vec::<String>::new());
        let StepKind::Export(e) = &p.unwrap().steps[0].kind else { panic!() };
        assert_eq!(
            (e.format, e.compression, e.row_group_size, e.quoting),
            (ExportFormat::Parquet, ParquetCompression::Snappy, 5000, Quoting::Csv)
        );
    }

    #[test]
    fn a_full_pipeline_decodes() {
        let (p, msgs) = pipeline(
            r#"
[[triggers]]
cron = "0 0 * * *"
timezone = "Europe/Helsinki"

[[steps]]
name = "ingest"
kind = "ingest"
source = "data/*.csv"

[[steps]]
name = "load"
kind = "load"
from = "ingest"
table = "sales"
mode = "replace"
delimiter = ";"
[steps.columns]
id = "bigint not null"
day = { type = "date", format = "%d.%m.%Y" }

[[steps]]
name = "out"
kind = "export"
depends_on = ["load"]
table = "sales"
path = "out/sales.csv"
"#,
        );
        assert_eq!(msgs, Vec::<String>::new());
        let p = p.unwrap();
        assert_eq!(p.name.v, "p");
        assert_eq!(p.steps.len(), 3);
        let StepKind::Load(l) = &p.steps[1].kind else { panic!() };
        assert_eq!(l.mode, LoadMode::Replace);
        assert_eq!(l.read.delimiter, Some(b';'));
        let SchemaSource::Inline(s) = &l.schema else { panic!() };
        assert_eq!(s.v.names(), vec!["id", "day"]);
        assert!(!s.v.columns[0].nullable);
        let StepKind::Export(e) = &p.steps[2].kind else { panic!() };
        assert_eq!(e.format, ExportFormat::Csv);
    }

    #[test]
    fn a_database_source_is_decoded() {
        let (p, msgs) = pipeline(
            r#"
[[steps]]
name = "pull"
kind = "ingest"
connection = "shop"
table = "orders"
cursor = "id"
"#,
        );
        assert_eq!(msgs, Vec::<String>::new());
        let p = p.unwrap();
        let StepKind::Ingest(i) = &p.steps[0].kind else { panic!() };
        let SourceSpec::Database(d) = &i.source else { panic!() };
        assert_eq!(d.connection.v, "shop");
        assert!(matches!(&d.what, ExportWhat::Table(t) if t.v == "orders"));
        assert_eq!(d.cursor.as_ref().unwrap().v, "id");
        assert_eq!(i.source.shown(), "shop.orders");
    }

    #[test]
    fn a_database_source_reports_misplaced_keys() {
        let (_, msgs) = pipeline(
            r#"
[[steps]]
name = "a"
kind = "ingest"
source = "x.csv"
cursor = "id"

[[steps]]
name = "b"
kind = "ingest"
connection = "shop"
table = "t"
query = "select 1"

[[steps]]
name = "c"
kind = "ingest"
connection = "shop"
take = "new"
source = "x.csv"
"#,
        );
        assert_eq!(
            msgs,
            vec![
                "pipelines/p.toml:6:10: `cursor` needs `connection`: it names what a database source reads [add `connection = \"NAME\"` (a [connections.NAME] of sluice.toml)]",
                "pipelines/p.toml:12:9: a database source reads `table` or `query`, not both",
                "pipelines/p.toml:20:1: an ingest step reads `source` (files) or `connection` (a database), not both",
                "pipelines/p.toml:19:1: `take` is for file sources [a database source lands only new rows when it has a `cursor` column, else the whole result]",
                "pipelines/p.toml:18:14: step `c` needs `table` or `query` with `connection` [add `table = \"name\"` or `query = \"select …\"`]",
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let (_, msgs) = pipeline(
            r#"
[[triggers]]
cron = "61 * * * *"

[[steps]]
name = "a"
kind = "ingest"
source = "x.csv"
mode = "t"

[[steps]]
name = "b"
kind = "lod"

[[steps]]
name = "c"
kind = "export"
path = 3
tabel = "x"
"#,
        );
        assert_eq!(
            msgs,
            vec![
                "pipelines/p.toml:3:8: invalid cron expression \"61 * * * *\": minute 61 is out of range (0-59) [five fields: minute hour day-of-month month day-of-week, e.g. \"0 0 * * *\" for every night at 00:00]",
                "pipelines/p.toml:9:1: unknown key `mode` in step `a` [`mode` is a key of load steps, not of ingest steps]",
                "pipelines/p.toml:13:8: invalid value \"lod\" for `kind` [did you mean `load`? (valid choices: ingest, load, sql, export, seed, snapshot, test, clean, command, empty)]",
                "pipelines/p.toml:18:8: wrong type for `path`: expected a string, found an integer",
                "pipelines/p.toml:15:1: step `c` needs `table` or `query` [add `table = \"name\"` or `query = \"select …\"`]",
                "pipelines/p.toml:19:1: unknown key `tabel` in step `c` [did you mean `table`?]",
            ]
        );
    }

    /// Each registered step kind conforms: its keys are documented, are the
    /// keys its decoder reads, an empty table decodes without panicking, and
    /// its example decodes cleanly into that kind. (`sluice dag` drawing each
    /// example is `run::every_step_kind_describes_itself`.)
    #[test]
    fn every_step_kind_conforms() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).unwrap();
        let mut names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len(), "a step kind is registered twice");
        for kind in KINDS {
            assert!(!kind.about.is_empty(), "step kind {} has no description", kind.name);
            assert!(
                doc.contains(&format!("`{}`", kind.name)),
                "docs/configuration.md does not name kind `{}`",
                kind.name
            );
            for k in kind.keys {
                assert!(
                    doc.contains(&format!("| `{k}` |")),
                    "docs/configuration.md does not describe `{k}` ({})",
                    kind.name
                );
            }
            // An empty table: problems reported, no panic; the keys read are the declared ones.
            let f = SourceFile::new("x".into(), "x".into(), String::new());
            let root = parse(&f).unwrap();
            let mut cx = Cx::new(FileId(0), &f);
            let mut t = Fields::new(&root, &mut cx, "step").unwrap();
            let _ = (kind.decode)(&mut t, &mut cx);
            let mut read: Vec<&str> = t.known().to_vec();
            let mut listed: Vec<&str> = kind.keys.to_vec();
            read.sort();
            listed.sort();
            assert_eq!(read, listed, "keys of {} steps", kind.name);
            // The minimal example: decodes into this kind, with no problem.
            let f = SourceFile::new("x".into(), "x".into(), kind.example.to_string());
            let root = parse(&f).unwrap();
            let mut cx = Cx::new(FileId(0), &f);
            let mut t = Fields::new(&root, &mut cx, "step").unwrap();
            let decoded = (kind.decode)(&mut t, &mut cx);
            t.finish(&mut cx, |_| None);
            let msgs: Vec<String> = cx.diags.iter().map(|d| d.message.clone()).collect();
            assert!(msgs.is_empty(), "example of {} steps: {msgs:?}", kind.name);
            assert_eq!(decoded.map(|k| k.name()), Some(kind.name), "example of {} steps", kind.name);
        }
    }

    #[test]
    fn docs_cover_every_key() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).unwrap();
        let mut keys: Vec<&str> = Vec::new();
        keys.extend(PROJECT_KEYS);
        keys.extend(PIPELINE_KEYS);
        keys.extend(TRIGGER_KEYS);
        keys.extend(STEP_COMMON_KEYS);
        for k in KINDS {
            keys.extend(k.keys.iter());
        }
        keys.extend(["url", "connection", "timezone", "retries", "retry_delay", "paths", "materialized"]);
        use super::super::serve::{AUTH_KEYS, CACHE_KEYS, CHART_KEYS, CORS_KEYS, LIMITS_KEYS, ROUTE_KEYS};
        for k in [AUTH_KEYS, CACHE_KEYS, CORS_KEYS, LIMITS_KEYS, ROUTE_KEYS, CHART_KEYS] {
            keys.extend(k.iter());
        }
        // The models file's other keys are described in transform.md.
        keys.push("publish");
        for k in keys {
            assert!(doc.contains(&format!("| `{k}` |")), "docs/configuration.md does not describe `{k}`");
        }
    }
}
