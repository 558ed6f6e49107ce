//! The `load` step's config: target table, schema (inline, a file or the
//! table's), mode, how to read the landed files, what to do with bad rows.

use super::*;

#[derive(Debug, Clone)]
pub struct LoadStep {
    /// The ingest step whose dataset this step loads.
    pub from: Spanned<String>,
    pub table: Spanned<String>,
    pub connection: Option<Spanned<String>>,
    pub schema: SchemaSource,
    pub mode: LoadMode,
    /// The key columns of `mode = "merge"`.
    pub key: Vec<String>,
    pub read: ReadOptions,
    pub on_error: OnError,
    pub max_errors: Option<u64>,
    /// Where `quarantine` writes rejected rows (default `.sluice/rejects/<table>/<run>.tsv`).
    pub rejects: Option<Spanned<String>>,
    pub schema_change: SchemaChange,
}

/// Where a load's column types come from.
#[derive(Debug, Clone)]
pub enum SchemaSource {
    /// Declared in the step (`[steps.columns]`).
    Inline(Spanned<Schema>),
    /// A schema file (`sluice infer` writes these).
    File(Spanned<String>),
    /// The existing table's own columns.
    Table,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Add the rows to the table.
    Append,
    /// The table becomes the loaded rows.
    Replace,
    /// Rows replace the table's rows with the same key; others are added.
    Merge,
}

pub const LOAD_MODES: &[(&str, LoadMode)] =
    &[("append", LoadMode::Append), ("replace", LoadMode::Replace), ("merge", LoadMode::Merge)];

impl LoadMode {
    pub fn name(self) -> &'static str {
        match self {
            LoadMode::Append => "append",
            LoadMode::Replace => "replace",
            LoadMode::Merge => "merge",
        }
    }
}

/// What a load does with rows that do not fit their types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Publish nothing; report the first bad rows and the count.
    Fail,
    /// Load the good rows (up to `max_errors` bad ones).
    Skip,
    /// Like skip, and write the bad rows to a rejects file and `_sluice_rejects`.
    Quarantine,
}

pub const ON_ERROR: &[(&str, OnError)] =
    &[("fail", OnError::Fail), ("skip", OnError::Skip), ("quarantine", OnError::Quarantine)];

/// What a load does when the source's columns differ from the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaChange {
    /// Stop, listing every difference.
    Fail,
    /// Add new columns, widen narrower ones, fill missing ones with NULL.
    AddColumns,
    /// Load only the table's columns: drop new ones, fill missing ones with NULL.
    IgnoreExtra,
}

pub const SCHEMA_CHANGES: &[(&str, SchemaChange)] = &[
    ("fail", SchemaChange::Fail),
    ("add_columns", SchemaChange::AddColumns),
    ("ignore_extra", SchemaChange::IgnoreExtra),
];

/// The format of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Delimited text (CSV, TSV).
    Csv,
    /// NDJSON or one JSON array of objects.
    Json,
    /// An Apache Parquet file.
    Parquet,
}

pub const FILE_FORMATS: &[(&str, FileFormat)] = &[
    ("csv", FileFormat::Csv),
    ("tsv", FileFormat::Csv),
    ("json", FileFormat::Json),
    ("ndjson", FileFormat::Json),
    ("parquet", FileFormat::Parquet),
];

/// A text encoding of input files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Latin1,
    Windows1252,
}

pub const ENCODINGS: &[(&str, Encoding)] = &[
    ("utf-8", Encoding::Utf8),
    ("latin1", Encoding::Latin1),
    ("iso-8859-1", Encoding::Latin1),
    ("windows-1252", Encoding::Windows1252),
    ("cp1252", Encoding::Windows1252),
];

/// How an input file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    /// `None`: from the file name (`.json`, `.ndjson`, `.jsonl` are JSON,
    /// `.parquet`/`.parq` Parquet; the rest CSV).
    pub format: Option<FileFormat>,
    /// `None`: tab for `.tsv`/`.tab` files, comma otherwise.
    pub delimiter: Option<u8>,
    pub quote: u8,
    pub header: bool,
    /// A marker that means NULL, besides the empty unquoted field.
    pub null: Option<String>,
    pub encoding: Encoding,
    /// Each input is a JSON document (an API page) whose records are read at
    /// a JSON path and flattened; set by loads from an HTTP source.
    pub pages: Option<crate::formats::pages::JsonPages>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            format: None,
            delimiter: None,
            quote: b'"',
            header: true,
            null: None,
            encoding: Encoding::Utf8,
            pages: None,
        }
    }
}

impl ReadOptions {
    /// The format of a file with this name.
    pub fn format_of(&self, name: &str) -> FileFormat {
        if self.pages.is_some() {
            return FileFormat::Json;
        }
        self.format.unwrap_or_else(|| {
            let l = name.to_ascii_lowercase();
            if l.ends_with(".json") || l.ends_with(".ndjson") || l.ends_with(".jsonl") {
                FileFormat::Json
            } else if l.ends_with(".parquet") || l.ends_with(".parq") {
                FileFormat::Parquet
            } else {
                FileFormat::Csv
            }
        })
    }

    /// The delimiter of a file with this name.
    pub fn delimiter_of(&self, name: &str) -> u8 {
        self.delimiter.unwrap_or_else(|| {
            let l = name.to_ascii_lowercase();
            if l.ends_with(".tsv") || l.ends_with(".tab") { b'\t' } else { b',' }
        })
    }
}

pub(super) fn decode_load(t: &mut Fields, cx: &mut Cx) -> Option<LoadStep> {
    let from = t.req(cx, "from");
    let table: Option<Spanned<String>> = t.req(cx, "table");
    if let Some(tb) = &table
        && tb.v.trim().is_empty()
    {
        cx.error(span(&tb.loc), "`table` is empty: name the table to load into");
    }
    let connection = t.opt(cx, "connection");
    let file: Option<Spanned<String>> = t.opt(cx, "schema");
    let inline = t.node("columns").and_then(|n| decode_columns(n, cx));
    let schema = match (inline, file) {
        (Some(_), Some(f)) => {
            cx.error(span(&f.loc), "a load takes `columns` or `schema`, not both");
            return None;
        }
        (Some(s), None) => SchemaSource::Inline(s),
        (None, Some(f)) => SchemaSource::File(f),
        (None, None) => SchemaSource::Table,
    };
    let mode = t.node("mode").and_then(|n| one_of(n, cx, "mode", LOAD_MODES)).unwrap_or(LoadMode::Append);
    let key_node = t.node("key");
    let key: Vec<String> = match key_node {
        Some(n) => match &n.v {
            V::Str(_) => String::decode(n, cx, Some("key")).map(|k| vec![k]).unwrap_or_default(),
            _ => Vec::<String>::decode(n, cx, Some("key")).unwrap_or_default(),
        },
        None => Vec::new(),
    };
    match (mode, key_node) {
        (LoadMode::Merge, None) => {
            let sp = t.key_span("mode").unwrap_or(t.span());
            cx.error(sp, "mode = \"merge\" needs `key`: the column(s) that identify a row").help =
                Some("add `key = \"id\"` or `key = [\"a\", \"b\"]`".into());
        }
        (LoadMode::Append | LoadMode::Replace, Some(n)) => {
            cx.error(n.span.clone(), "`key` applies only to mode = \"merge\"");
        }
        _ => {}
    }
    if let (SchemaSource::Inline(s), Some(n)) = (&schema, key_node) {
        for k in &key {
            if s.v.index_of(k).is_none() {
                cx.error(n.span.clone(), format!("key column `{k}` is not among the declared columns"));
            }
        }
    }
    let read = decode_read_options(t, cx);
    let on_error = t.node("on_error").and_then(|n| one_of(n, cx, "on_error", ON_ERROR)).unwrap_or(OnError::Fail);
    let max_errors = t.opt(cx, "max_errors");
    let rejects: Option<Spanned<String>> = t.opt(cx, "rejects");
    if let Some(r) = &rejects
        && on_error != OnError::Quarantine
    {
        cx.error(span(&r.loc), "`rejects` applies only to on_error = \"quarantine\"");
    }
    let schema_change = t
        .node("schema_change")
        .and_then(|n| one_of(n, cx, "schema_change", SCHEMA_CHANGES))
        .unwrap_or(SchemaChange::Fail);
    Some(LoadStep {
        from: from?,
        table: table?,
        connection,
        schema,
        mode,
        key,
        read,
        on_error,
        max_errors,
        rejects,
        schema_change,
    })
}

/// Reads `format`, `delimiter`, `quote`, `header`, `null` and `encoding`.
pub fn decode_read_options(t: &mut Fields, cx: &mut Cx) -> ReadOptions {
    let mut o = ReadOptions::default();
    if let Some(n) = t.node("format") {
        o.format = one_of(n, cx, "format", FILE_FORMATS);
        if let (Some(FileFormat::Csv), V::Str(f)) = (o.format, &n.v)
            && f == "tsv"
        {
            o.delimiter = Some(b'\t');
        }
    }
    for key in ["delimiter", "quote"] {
        if let Some(n) = t.node(key)
            && let Some(s) = String::decode(n, cx, Some(key))
        {
            let s = if s == "\\t" { "\t".to_string() } else { s };
            if s.len() == 1 && s.is_ascii() && s != "\n" && s != "\r" {
                if key == "delimiter" {
                    o.delimiter = Some(s.as_bytes()[0]);
                } else {
                    o.quote = s.as_bytes()[0];
                }
            } else {
                cx.error(n.span.clone(), format!("`{key}` must be one ASCII character, found \"{s}\"")).help =
                    Some("for a tab write \"\\t\"".into());
            }
        }
    }
    if let Some(h) = t.opt(cx, "header") {
        o.header = h;
    }
    o.null = t.opt(cx, "null");
    if let Some(n) = t.node("encoding") {
        o.encoding = one_of(n, cx, "encoding", ENCODINGS).unwrap_or(Encoding::Utf8);
    }
    o
}

/// Decodes a `[columns]` table: `name = "type"` or `name = { type, nullable, format }`.
pub fn decode_columns(node: &Node, cx: &mut Cx) -> Option<Spanned<Schema>> {
    let V::Table(entries) = &node.v else {
        cx.error(
            node.span.clone(),
            format!("wrong type for `columns`: expected a table of name = \"type\", found {}", node.type_name()),
        );
        return None;
    };
    let mut cols = Vec::new();
    let mut ok = true;
    for (key, value) in entries {
        match &value.v {
            V::Str(spec) => match Column::parse_short(&key.name, spec) {
                Ok(c) => cols.push(c),
                Err(e) => {
                    cx.error(value.span.clone(), format!("column `{}`: {e}", key.name));
                    ok = false;
                }
            },
            V::Table(_) => {
                let Some(mut f) = Fields::new(value, cx, format!("column `{}`", key.name)) else { continue };
                let ty: Option<Spanned<String>> = f.req(cx, "type");
                let nullable: Option<bool> = f.opt(cx, "nullable");
                let format: Option<String> = f.opt(cx, "format");
                f.finish(cx, |_| None);
                let Some(ty) = ty else {
                    ok = false;
                    continue;
                };
                match ColumnType::parse(&ty.v) {
                    Ok(t) => {
                        if format.is_some()
                            && !matches!(t, ColumnType::Date | ColumnType::Timestamp | ColumnType::TimestampTz)
                        {
                            cx.error(
                                value.span.clone(),
                                format!("column `{}`: `format` applies only to date and timestamp columns", key.name),
                            );
                            ok = false;
                        }
                        let mut c = Column::new(&key.name, t);
                        c.nullable = nullable.unwrap_or(true);
                        c.format = format;
                        cols.push(c);
                    }
                    Err(e) => {
                        cx.error(span(&ty.loc), format!("column `{}`: {e}", key.name));
                        ok = false;
                    }
                }
            }
            _ => {
                cx.error(
                    value.span.clone(),
                    format!(
                        "wrong type for column `{}`: expected a type name such as \"integer\", found {}",
                        key.name,
                        value.type_name()
                    ),
                );
                ok = false;
            }
        }
    }
    if cols.is_empty() && ok {
        cx.error(node.span.clone(), "`columns` is empty");
        return None;
    }
    ok.then(|| Spanned { v: Schema::new(cols), loc: cx.loc(&node.span) })
}

/// Decodes a schema file (`[columns]`).
pub fn decode_schema_file(root: &Node, cx: &mut Cx) -> Option<Schema> {
    let mut t = Fields::new(root, cx, "schema file")?;
    let cols = match t.node("columns") {
        Some(n) => decode_columns(n, cx),
        None => {
            cx.error(0..0, "missing `[columns]` in the schema file").help = Some(
                "write one `name = \"type\"` line per column under [columns]; `sluice infer FILE` prints one".into(),
            );
            None
        }
    };
    t.finish(cx, |_| None);
    cols.map(|s| s.v)
}
