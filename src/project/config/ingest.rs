//! The `ingest` step's config: its source (files, S3, an HTTP API, a database) and what to take.

use super::*;

#[derive(Debug, Clone)]
pub struct IngestStep {
    pub source: SourceSpec,
    /// The name under `raw/` (default: the step's name).
    pub dataset: Option<Spanned<String>>,
    /// Land everything the source holds each run, or only what is new.
    pub take: Take,
}

/// Where an ingest step reads (one variant per module of `sources`).
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// A file or glob, relative to the project folder.
    Files(Spanned<String>),
    /// An HTTP API (`source = "https://…"`, options in `http`).
    Http(Box<super::super::http::HttpSource>),
    /// A table or a query of a named connection (`sources::database`).
    Database(DatabaseSource),
    /// Objects of an S3 bucket: `s3://bucket/folder/GLOB?endpoint=…` (`sources::s3`).
    S3(Spanned<String>),
}

/// An ingest step's database source: `connection` with `table` or `query`,
/// and optionally a `cursor` column that makes it incremental.
#[derive(Debug, Clone)]
pub struct DatabaseSource {
    pub connection: Spanned<String>,
    /// What is read: a table (`schema.name` allowed) or a SELECT.
    pub what: ExportWhat,
    /// The column whose high-water mark is kept between runs: each run lands
    /// only rows whose value is above the last landed maximum.
    pub cursor: Option<Spanned<String>>,
}

impl SourceSpec {
    /// The source as written in the project (for `dag`, messages).
    pub fn shown(&self) -> String {
        match self {
            SourceSpec::Files(p) => p.v.clone(),
            SourceSpec::Http(h) => h.shown(),
            SourceSpec::Database(d) => match &d.what {
                ExportWhat::Table(t) => format!("{}.{}", d.connection.v, t.v),
                ExportWhat::Query(_) => format!("a query of {}", d.connection.v),
            },
            SourceSpec::S3(u) => crate::secret::redact_url(&u.v),
        }
    }
}

/// What an ingest step lands each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Everything the source holds: each landing lists the whole source.
    All,
    /// Only objects not taken before: each landing lists what is new.
    New,
}

pub const TAKES: &[(&str, Take)] = &[("all", Take::All), ("new", Take::New)];

pub(super) fn decode_ingest(t: &mut Fields, cx: &mut Cx) -> Option<IngestStep> {
    let dataset: Option<Spanned<String>> = t.opt(cx, "dataset");
    if let Some(d) = &dataset
        && !valid_name(d)
    {
        cx.error(span(&d.loc), format!("invalid dataset name \"{}\"", d.v)).help = Some(NAME_RULE.into());
    }
    let take_node = t.node("take");
    let take = take_node.and_then(|n| one_of(n, cx, "take", TAKES)).unwrap_or(Take::All);
    let http = t.node("http");
    let connection: Option<Spanned<String>> = t.opt(cx, "connection");
    let table: Option<Spanned<String>> = t.opt(cx, "table");
    let query: Option<Spanned<String>> = t.opt(cx, "query");
    let cursor: Option<Spanned<String>> = t.opt(cx, "cursor");
    let Some(connection) = connection else {
        for (k, v) in [("table", &table), ("query", &query), ("cursor", &cursor)] {
            if let Some(v) = v {
                cx.error(span(&v.loc), format!("`{k}` needs `connection`: it names what a database source reads"))
                    .help = Some("add `connection = \"NAME\"` (a [connections.NAME] of sluice.toml)".into());
            }
        }
        let source: Spanned<String> = t.req(cx, "source")?;
        if let Some(h) = http.filter(|_| !super::super::http::is_http(&source.v)) {
            cx.error(h.span.clone(), "`http` applies only to a source that is an http:// or https:// URL");
        }
        let source = if super::super::http::is_http(&source.v) {
            if let (Some(n), Take::New) = (take_node, take) {
                cx.error(n.span.clone(), "`take` does not apply to an HTTP source").help = Some(
                    "to take only new records, use `http.incremental` (a cursor parameter kept between runs)".into(),
                );
            }
            // Kept as written: references (a key in the URL) are resolved when used.
            let written = match t.node("source").map(|n| &n.v) {
                Some(V::Str(w)) => Spanned { v: w.clone(), loc: source.loc.clone() },
                _ => source,
            };
            SourceSpec::Http(Box::new(super::super::http::decode_http(written, http, cx)))
        } else if source.v.starts_with("s3://") {
            if let Err(e) = crate::sources::s3::parse(&source.v) {
                cx.error(span(&source.loc), e.to_string());
            }
            SourceSpec::S3(source)
        } else {
            SourceSpec::Files(source)
        };
        return Some(IngestStep { source, dataset, take });
    };
    t.allow(&["source"]);
    if let Some(s) = t.key_span("http") {
        cx.error(s, "`http` is for HTTP API sources, not database ones");
    }
    if let Some(s) = t.key_span("source") {
        cx.error(s, "an ingest step reads `source` (files) or `connection` (a database), not both");
    }
    if let Some(s) = t.key_span("take") {
        cx.error(s, "`take` is for file sources").help =
            Some("a database source lands only new rows when it has a `cursor` column, else the whole result".into());
    }
    let what = match (table, query) {
        (Some(tb), None) => ExportWhat::Table(tb),
        (None, Some(q)) => ExportWhat::Query(q),
        (Some(tb), Some(_)) => {
            cx.error(span(&tb.loc), "a database source reads `table` or `query`, not both");
            return None;
        }
        (None, None) => {
            cx.error(span(&connection.loc), format!("{} needs `table` or `query` with `connection`", t.what)).help =
                Some("add `table = \"name\"` or `query = \"select …\"`".into());
            return None;
        }
    };
    Some(IngestStep { source: SourceSpec::Database(DatabaseSource { connection, what, cursor }), dataset, take })
}
