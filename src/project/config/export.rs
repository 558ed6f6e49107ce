//! The `export` step's config: what to write (a table or a query), where, in which format.

use super::*;

#[derive(Debug, Clone)]
pub struct ExportStep {
    pub what: ExportWhat,
    /// The output: a file relative to the project folder, `file:///abs/path`
    /// or `s3://bucket/key`.
    pub path: Spanned<String>,
    pub format: ExportFormat,
    /// Delimited formats: a header row.
    pub header: bool,
    /// Delimited formats: how NULL is written (`None`: the quoting's default).
    pub null: Option<String>,
    /// TSV: how special characters are written.
    pub quoting: Quoting,
    /// Parquet: page compression.
    pub compression: ParquetCompression,
    /// Parquet: rows per row group.
    pub row_group_size: usize,
    pub connection: Option<Spanned<String>>,
}

#[derive(Debug, Clone)]
pub enum ExportWhat {
    Table(Spanned<String>),
    Query(Spanned<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Tsv,
    Csv,
    /// One JSON object a line.
    Ndjson,
    /// One JSON array of objects.
    Json,
    Parquet,
}

pub const EXPORT_FORMATS: &[(&str, ExportFormat)] = &[
    ("tsv", ExportFormat::Tsv),
    ("csv", ExportFormat::Csv),
    ("ndjson", ExportFormat::Ndjson),
    ("jsonl", ExportFormat::Ndjson),
    ("json", ExportFormat::Json),
    ("parquet", ExportFormat::Parquet),
];

impl ExportFormat {
    /// The format a file name implies: `.csv`, `.ndjson`/`.jsonl`, `.json`,
    /// `.parquet`; TSV otherwise.
    pub fn from_path(path: &str) -> ExportFormat {
        let l = path.split('?').next().unwrap_or(path).to_ascii_lowercase();
        if l.ends_with(".csv") {
            ExportFormat::Csv
        } else if l.ends_with(".ndjson") || l.ends_with(".jsonl") {
            ExportFormat::Ndjson
        } else if l.ends_with(".json") {
            ExportFormat::Json
        } else if l.ends_with(".parquet") || l.ends_with(".parq") {
            ExportFormat::Parquet
        } else {
            ExportFormat::Tsv
        }
    }

    /// TSV or CSV (a header, a NULL marker, quoting).
    pub fn is_delimited(self) -> bool {
        matches!(self, ExportFormat::Tsv | ExportFormat::Csv)
    }

    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Tsv => "tsv",
            ExportFormat::Csv => "csv",
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Json => "json",
            ExportFormat::Parquet => "parquet",
        }
    }
}

/// How a delimited export writes a field holding the delimiter, a quote or
/// a line break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quoting {
    /// RFC 4180: such a field goes between double quotes, `"` doubled; NULL
    /// is empty by default and an empty string is `""`. The default.
    #[default]
    Csv,
    /// PostgreSQL's text format (TSV only): no quotes; backslash, tab, line
    /// breaks are escaped as `\\`, `\t`, `\n`, `\r`; NULL is `\N` by default.
    /// What `COPY … FROM`, MySQL's `LOAD DATA` and `cut` read as is.
    Backslash,
}

pub const QUOTINGS: &[(&str, Quoting)] = &[("csv", Quoting::Csv), ("backslash", Quoting::Backslash)];

/// Compression of a Parquet file's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParquetCompression {
    None,
    Snappy,
    #[default]
    Zstd,
}

pub const PARQUET_COMPRESSIONS: &[(&str, ParquetCompression)] =
    &[("zstd", ParquetCompression::Zstd), ("snappy", ParquetCompression::Snappy), ("none", ParquetCompression::None)];

/// Rows per Parquet row group unless told otherwise.
pub const DEFAULT_ROW_GROUP_SIZE: usize = 100_000;

pub(super) fn decode_export(t: &mut Fields, cx: &mut Cx) -> Option<ExportStep> {
    let table: Option<Spanned<String>> = t.opt(cx, "table");
    let query: Option<Spanned<String>> = t.opt(cx, "query");
    let path: Option<Spanned<String>> = t.req(cx, "path");
    let format = match t.node("format") {
        Some(n) => one_of(n, cx, "format", EXPORT_FORMATS),
        None => path.as_ref().map(|p| ExportFormat::from_path(&p.v)),
    };
    // Options that belong to another format are mistakes, not no-ops.
    let fmt = format.unwrap_or(ExportFormat::Tsv);
    let only_for = |cx: &mut Cx, t: &Fields, key: &str, ok: bool, formats: &str| {
        if !ok && let Some(sp) = t.key_span(key) {
            cx.error(sp, format!("`{key}` applies only to {formats} exports, not {}", fmt.name())).help =
                Some(format!("remove `{key}`, or set `format` to {formats}"));
        }
    };
    only_for(cx, t, "header", fmt.is_delimited(), "tsv and csv");
    only_for(cx, t, "null", fmt.is_delimited(), "tsv and csv");
    only_for(cx, t, "quoting", fmt == ExportFormat::Tsv, "tsv");
    only_for(cx, t, "compression", fmt == ExportFormat::Parquet, "parquet");
    only_for(cx, t, "row_group_size", fmt == ExportFormat::Parquet, "parquet");
    let header = t.opt(cx, "header").unwrap_or(true);
    let null = t.opt(cx, "null");
    let quoting = t.node("quoting").and_then(|n| one_of(n, cx, "quoting", QUOTINGS)).unwrap_or_default();
    let compression =
        t.node("compression").and_then(|n| one_of(n, cx, "compression", PARQUET_COMPRESSIONS)).unwrap_or_default();
    let row_group_size = match t.node("row_group_size") {
        Some(n) => match &n.v {
            V::Int(i) if *i >= 1 && *i <= 100_000_000 => *i as usize,
            _ => {
                cx.error(n.span.clone(), "`row_group_size` is a number of rows from 1 to 100000000".to_string());
                DEFAULT_ROW_GROUP_SIZE
            }
        },
        None => DEFAULT_ROW_GROUP_SIZE,
    };
    let connection = t.opt(cx, "connection");
    let what = match (table, query) {
        (Some(t), None) => ExportWhat::Table(t),
        (None, Some(q)) => ExportWhat::Query(q),
        (Some(tb), Some(_)) => {
            cx.error(span(&tb.loc), "an export takes `table` or `query`, not both");
            return None;
        }
        (None, None) => {
            let s = t.span();
            let what = t.what.clone();
            cx.error(s.start..s.start, format!("{what} needs `table` or `query`")).help =
                Some("add `table = \"name\"` or `query = \"select …\"`".into());
            return None;
        }
    };
    Some(ExportStep {
        what,
        path: path?,
        format: format?,
        header,
        null,
        quoting,
        compression,
        row_group_size,
        connection,
    })
}
