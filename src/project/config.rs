//! The project's configuration as typed data: `sluice.toml` and
//! `pipelines/*.toml`, decoded from the spanned tree with every problem
//! reported at its file:line:col. The structs are inert data: nothing here
//! connects, reads data files or resolves secrets; cross-references between
//! files are checked in `validate`.

use std::str::FromStr;

use super::tree::{Cx, Decode, Dur, Fields, FileId, Loc, Node, Spanned, V, Written, one_of};
use crate::types::{Column, ColumnType, Schema};

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

/// One `pipelines/*.toml`.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub file: FileId,
    pub name: Spanned<String>,
    pub description: Option<String>,
    pub triggers: Vec<Trigger>,
    pub max_active_runs: Option<u32>,
    /// How many of the pipeline's tasks may run at once, over all workers.
    pub concurrency: Option<u32>,
    /// The worker pool of its steps that name none (`default` otherwise).
    pub pool: Option<Spanned<String>>,
    pub steps: Vec<StepConfig>,
}

#[derive(Debug, Clone)]
pub struct Trigger {
    pub loc: Loc,
    pub kind: TriggerKind,
    pub catchup: Option<Catchup>,
    /// How often an `on_new_objects` trigger on an `s3://` prefix lists it.
    pub poll: Option<Spanned<Dur>>,
}

#[derive(Debug, Clone)]
pub enum TriggerKind {
    Cron { expr: Spanned<String>, timezone: Option<Spanned<String>> },
    Every(Spanned<Dur>),
    OnDataset(Spanned<String>),
    OnNewObjects(Spanned<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catchup {
    None,
    Latest,
    All,
}

#[derive(Debug, Clone)]
pub struct StepConfig {
    pub loc: Loc,
    pub name: Spanned<String>,
    pub depends_on: Vec<Spanned<String>>,
    pub retries: Option<u32>,
    /// The first retry's delay; each next one doubles (with jitter).
    pub retry_delay: Option<Dur>,
    pub retry_on: Option<RetryOn>,
    pub timeout: Option<Dur>,
    /// The worker pool that runs it: only `sluice worker --pool NAME` claims
    /// it (the pipeline's `pool`, else `default`).
    pub pool: Option<Spanned<String>>,
    pub kind: StepKind,
}

/// Which failures a step's retries are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// Failures that may pass: a server unreachable or gone, a dropped
    /// connection, a timeout, a worker that stopped.
    Transient,
    /// Every failure, bad data and SQL errors included.
    Any,
}

impl RetryOn {
    pub fn name(self) -> &'static str {
        match self {
            RetryOn::Transient => "transient",
            RetryOn::Any => "any",
        }
    }
}

/// The `command` step: a program run with the run's facts in its environment.
/// Its arguments and environment values are kept as written: `${env:…}` and
/// `${file:…}` references are resolved when the step runs (and never shown).
#[derive(Debug, Clone)]
pub struct CommandStep {
    /// The program and its arguments; a single string runs through `sh -c`.
    pub argv: Vec<Spanned<String>>,
    /// Whether the command was one string, run through `sh -c` as written
    /// (the shell expands its own `$VARIABLES`; nothing is resolved in it).
    pub shell: bool,
    pub env: Vec<(String, Spanned<String>)>,
}

impl CommandStep {
    /// The program and its arguments as written.
    pub fn written(&self) -> Vec<String> {
        self.argv.iter().map(|a| a.v.clone()).collect()
    }
}

#[derive(Debug, Clone)]
pub enum StepKind {
    Ingest(IngestStep),
    Load(LoadStep),
    Sql(SqlStep),
    Export(ExportStep),
    /// Loads `seeds/*.csv`.
    Seed(NodeStep),
    /// Takes `snapshots/*.sql`.
    Snapshot(NodeStep),
    /// Runs data tests.
    Test(NodeStep),
    /// Cleans a table: types, trimming, nulls, duplicates, outliers, quality.
    Clean(CleanStep),
    /// Runs a program.
    Command(CommandStep),
    /// Does nothing: a join point in the DAG.
    Empty,
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Ingest(_) => "ingest",
            StepKind::Load(_) => "load",
            StepKind::Sql(_) => "sql",
            StepKind::Export(_) => "export",
            StepKind::Seed(_) => "seed",
            StepKind::Snapshot(_) => "snapshot",
            StepKind::Test(_) => "test",
            StepKind::Clean(_) => "clean",
            StepKind::Command(_) => "command",
            StepKind::Empty => "empty",
        }
    }
}

/// The `clean` step: a cleaned copy of a table, with what was removed kept
/// apart and a quality score.
#[derive(Debug, Clone)]
pub struct CleanStep {
    /// The table to clean.
    pub table: Spanned<String>,
    /// The cleaned table (replaced each run); `<output>_rejects` and
    /// `<output>_outliers` hold what was taken out.
    pub output: Spanned<String>,
    pub connection: Option<Spanned<String>>,
    /// Values that mean "missing" (after trimming): become NULL.
    pub null_markers: Vec<String>,
    /// Trim spaces around text values.
    pub trim: bool,
    pub dedup: Option<Dedup>,
    /// Per-column rules, in output order (other columns are copied as they are).
    pub columns: Vec<CleanColumn>,
    /// A folder for raw_data.csv, cleaned_data.csv, summary_report.json, quality_metrics.json.
    pub export: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dedup {
    pub key: Vec<String>,
    /// Keep the first or the last row of each key.
    pub keep: Keep,
    /// The column that orders rows of one key (input order when absent).
    pub order_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    First,
    Last,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CleanColumn {
    pub name: String,
    /// The type values are fixed to (the input's type when absent).
    pub ty: Option<crate::types::ColumnType>,
    pub format: Option<String>,
    /// What to do with a value that is not of the type.
    pub on_invalid: OnInvalid,
    pub case: Option<Case>,
    pub outliers: Option<OutlierRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalid {
    /// The value becomes NULL.
    Null,
    /// The row goes to `<output>_rejects` with the reason.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Lower,
    Upper,
}

/// How a numeric column's outliers are found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutlierRule {
    /// Outside [Q1 − k·IQR, Q3 + k·IQR].
    Iqr { k: f64 },
    /// More than `threshold` standard deviations from the mean.
    Zscore { threshold: f64 },
    /// Outside fixed bounds.
    Bounds { min: Option<f64>, max: Option<f64> },
}

/// A step over selected seeds, snapshots or tests.
#[derive(Debug, Clone)]
pub struct NodeStep {
    pub select: Vec<String>,
    pub exclude: Vec<String>,
    pub connection: Option<Spanned<String>>,
}

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
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { format: None, delimiter: None, quote: b'"', header: true, null: None, encoding: Encoding::Utf8 }
    }
}

impl ReadOptions {
    /// The format of a file with this name.
    pub fn format_of(&self, name: &str) -> FileFormat {
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

#[derive(Debug, Clone)]
pub struct SqlStep {
    /// Models to build by name (all when neither this nor `select` is given).
    pub models: Option<Vec<Spanned<String>>>,
    /// dbt-style selectors: `name`, `name+`, `+name`, `tag:x`, `path:models/marts`.
    pub select: Vec<String>,
    pub exclude: Vec<String>,
    pub connection: Option<Spanned<String>>,
    /// Models built at once (default: `[models] threads`, else 4).
    pub threads: Option<usize>,
}

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

/// The keys every step has, whatever its kind.
pub const STEP_COMMON_KEYS: &[&str] =
    &["name", "kind", "depends_on", "retries", "retry_delay", "retry_on", "timeout", "pool"];

/// The step kinds and their own keys; the single registry of step kinds.
pub const STEP_KINDS: &[(&str, &[&str])] = &[
    ("ingest", &["source", "dataset", "take", "connection", "table", "query", "cursor"]),
    (
        "load",
        &[
            "from",
            "table",
            "connection",
            "columns",
            "schema",
            "mode",
            "key",
            "format",
            "delimiter",
            "quote",
            "header",
            "null",
            "encoding",
            "on_error",
            "max_errors",
            "rejects",
            "schema_change",
        ],
    ),
    ("sql", &["models", "select", "exclude", "connection", "threads"]),
    (
        "export",
        &[
            "table",
            "query",
            "path",
            "format",
            "header",
            "null",
            "quoting",
            "compression",
            "row_group_size",
            "connection",
        ],
    ),
    ("seed", &["select", "exclude", "connection"]),
    ("snapshot", &["select", "exclude", "connection"]),
    ("test", &["select", "exclude", "connection"]),
    ("clean", &["table", "output", "connection", "null_markers", "trim", "dedup", "columns", "export"]),
    ("command", &["command", "env"]),
    ("empty", &[]),
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
pub const PIPELINE_KEYS: &[&str] =
    &["name", "description", "triggers", "max_active_runs", "concurrency", "pool", "steps"];
pub const TRIGGER_KEYS: &[&str] = &["cron", "timezone", "every", "on_dataset", "on_new_objects", "catchup", "poll"];

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

/// Decodes one pipeline file. `stem` is the file name without `.toml`.
pub fn decode_pipeline(root: &Node, cx: &mut Cx, stem: &str) -> Option<PipelineConfig> {
    let mut t = Fields::new(root, cx, format!("pipeline `{stem}`"))?;
    let name = t.opt::<Spanned<String>>(cx, "name").unwrap_or(Spanned { v: stem.to_string(), loc: cx.loc(&(0..0)) });
    if !valid_name(&name) {
        cx.error(span(&name.loc), format!("invalid pipeline name \"{}\"", name.v)).help = Some(NAME_RULE.into());
    }
    t.what = format!("pipeline `{}`", name.v);
    let description = t.opt(cx, "description");
    let max_active_runs = t.opt(cx, "max_active_runs");
    let concurrency: Option<u32> = t.opt(cx, "concurrency");
    if concurrency == Some(0)
        && let Some(n) = t.node("concurrency")
    {
        cx.error(n.span.clone(), "`concurrency` must be at least 1");
    }
    let pool = decode_pool(&mut t, cx);
    let mut triggers = Vec::new();
    if let Some(node) = t.node("triggers") {
        match &node.v {
            V::Array(items) => {
                for it in items {
                    if let Some(tr) = decode_trigger(it, cx) {
                        triggers.push(tr);
                    }
                }
            }
            _ => {
                cx.error(
                    node.span.clone(),
                    format!(
                        "wrong type for `triggers`: expected an array of tables ([[triggers]]), found {}",
                        node.type_name()
                    ),
                );
            }
        }
    }
    let mut steps = Vec::new();
    match t.node("steps") {
        Some(node) => match &node.v {
            V::Array(items) => {
                for (i, it) in items.iter().enumerate() {
                    if let Some(s) = decode_step(it, cx, i) {
                        steps.push(s);
                    }
                }
            }
            _ => {
                cx.error(
                    node.span.clone(),
                    format!(
                        "wrong type for `steps`: expected an array of tables ([[steps]]), found {}",
                        node.type_name()
                    ),
                );
            }
        },
        None => {
            cx.error(0..0, format!("pipeline `{}` has no steps", name.v)).help = Some(
                "add a step: [[steps]] with `name` and `kind` (ingest, load, sql, export, seed, snapshot, test, clean, command, empty)"
                    .into(),
            );
        }
    }
    t.finish(cx, |k| match k {
        "step" => Some("steps are written as [[steps]]".into()),
        "trigger" | "schedule" | "cron" => {
            Some("schedules are written as [[triggers]] with `cron = \"0 0 * * *\"`".into())
        }
        _ => None,
    });
    Some(PipelineConfig { file: cx.file, name, description, triggers, max_active_runs, concurrency, pool, steps })
}

/// A `pool` key: a name as steps and pipelines have.
fn decode_pool(t: &mut Fields, cx: &mut Cx) -> Option<Spanned<String>> {
    let pool: Option<Spanned<String>> = t.opt(cx, "pool");
    if let Some(p) = &pool
        && !valid_name(p)
    {
        cx.error(span(&p.loc), format!("invalid pool name \"{}\"", p.v)).help = Some(NAME_RULE.into());
    }
    pool
}

fn decode_trigger(node: &Node, cx: &mut Cx) -> Option<Trigger> {
    let mut t = Fields::new(node, cx, "trigger")?;
    let cron: Option<Spanned<String>> = t.opt(cx, "cron");
    let timezone: Option<Spanned<String>> = t.opt(cx, "timezone");
    let every: Option<Spanned<Dur>> = t.opt(cx, "every");
    let on_dataset: Option<Spanned<String>> = t.opt(cx, "on_dataset");
    let on_new: Option<Spanned<String>> = t.opt(cx, "on_new_objects");
    let poll: Option<Spanned<Dur>> = t.opt(cx, "poll");
    let catchup = t.node("catchup").and_then(|n| {
        one_of(n, cx, "catchup", &[("none", Catchup::None), ("latest", Catchup::Latest), ("all", Catchup::All)])
    });
    let present = ["cron", "every", "on_dataset", "on_new_objects"]
        .iter()
        .filter(|k| t.key_span(k).is_some())
        .copied()
        .collect::<Vec<_>>();
    let tspan = t.span();
    t.finish(cx, |_| None);
    if present.len() != 1 {
        let msg = if present.is_empty() {
            "a trigger needs one of `cron`, `every`, `on_dataset` or `on_new_objects`".to_string()
        } else {
            format!(
                "a trigger takes one of `cron`, `every`, `on_dataset`, `on_new_objects`; this one has {}",
                present.join(" and ")
            )
        };
        cx.error(tspan.start..tspan.start, msg).help = Some("write one [[triggers]] table per trigger".into());
        return None;
    }
    if let Some(tz) = &timezone {
        check_timezone(cx, tz);
        if cron.is_none() {
            cx.error(span(&tz.loc), "`timezone` applies only to `cron` triggers");
        }
    }
    let kind = if let Some(expr) = cron {
        if let Err(e) = croner::Cron::from_str(&expr.v) {
            let why = explain_cron_error(&expr.v).unwrap_or_else(|| e.to_string());
            cx.error(span(&expr.loc), format!("invalid cron expression \"{}\": {why}", expr.v)).help = Some(
                "five fields: minute hour day-of-month month day-of-week, e.g. \"0 0 * * *\" for every night at 00:00"
                    .into(),
            );
            return None;
        }
        TriggerKind::Cron { expr, timezone }
    } else if let Some(e) = every {
        if e.v.0.is_zero() {
            cx.error(span(&e.loc), "`every` must be longer than zero");
            return None;
        }
        TriggerKind::Every(e)
    } else if let Some(d) = on_dataset {
        TriggerKind::OnDataset(d)
    } else {
        let on_new = on_new.expect("one trigger key is present");
        if on_new.v.starts_with("s3://")
            && let Err(e) = crate::sources::s3::parse(&on_new.v)
        {
            cx.error(span(&on_new.loc), e.to_string());
        }
        TriggerKind::OnNewObjects(on_new)
    };
    if let Some(p) = &poll {
        if !matches!(&kind, TriggerKind::OnNewObjects(o) if o.v.starts_with("s3://")) {
            cx.error(span(&p.loc), "`poll` applies only to `on_new_objects` triggers on an s3:// prefix");
        } else if p.v.0.is_zero() {
            cx.error(span(&p.loc), "`poll` must be longer than zero");
        }
    }
    Some(Trigger { loc: cx.loc(&tspan), kind, catchup, poll })
}

/// Says which field of a cron expression is wrong, where croner's message does not.
pub fn explain_cron_error(expr: &str) -> Option<String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if expr.trim_start().starts_with('@') {
        return None;
    }
    let (names, ranges): (&[&str], &[(u32, u32)]) = match fields.len() {
        5 => {
            (&["minute", "hour", "day-of-month", "month", "day-of-week"], &[(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)])
        }
        6 => (
            &["second", "minute", "hour", "day-of-month", "month", "day-of-week"],
            &[(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7)],
        ),
        n => return Some(format!("expected 5 fields (minute hour day-of-month month day-of-week), found {n}")),
    };
    for ((field, name), (lo, hi)) in fields.iter().zip(names).zip(ranges) {
        // Numbers that are values, not step sizes (`*/15`) or `#` ordinals.
        for part in field.split(',') {
            let value_part = part.split('/').next().unwrap_or("");
            let value_part = value_part.split('#').next().unwrap_or("");
            for n in value_part.split('-') {
                if let Ok(v) = n.parse::<u32>()
                    && (v < *lo || v > *hi)
                {
                    return Some(format!("{name} {v} is out of range ({lo}-{hi})"));
                }
            }
        }
    }
    None
}

fn decode_step(node: &Node, cx: &mut Cx, index: usize) -> Option<StepConfig> {
    let mut t = Fields::new(node, cx, format!("step #{}", index + 1))?;
    let name: Option<Spanned<String>> = t.req(cx, "name");
    if let Some(n) = &name {
        t.what = format!("step `{}`", n.v);
        if !valid_name(n) {
            cx.error(span(&n.loc), format!("invalid step name \"{}\"", n.v)).help = Some(NAME_RULE.into());
        }
    }
    let kinds: Vec<(&'static str, &'static str)> = STEP_KINDS.iter().map(|(k, _)| (*k, *k)).collect();
    let kind = match t.node("kind") {
        Some(n) => one_of(n, cx, "kind", &kinds),
        None => {
            let what = t.what.clone();
            cx.error(t.span().start..t.span().start, format!("missing key `kind` in {what}")).help = Some(
                "add `kind = \"…\"`: one of ingest, load, sql, export, seed, snapshot, test, clean, command, empty"
                    .into(),
            );
            None
        }
    };
    let depends_on: Vec<Spanned<String>> = t.opt(cx, "depends_on").unwrap_or_default();
    let retries = t.opt(cx, "retries");
    let retry_delay = t.opt(cx, "retry_delay");
    let retry_on = t
        .node("retry_on")
        .and_then(|n| one_of(n, cx, "retry_on", &[("transient", RetryOn::Transient), ("any", RetryOn::Any)]));
    let timeout = t.opt(cx, "timeout");
    let pool = decode_pool(&mut t, cx);
    let step_kind = match kind {
        Some("ingest") => decode_ingest(&mut t, cx).map(StepKind::Ingest),
        Some("load") => decode_load(&mut t, cx).map(StepKind::Load),
        Some("sql") => decode_sql(&mut t, cx).map(StepKind::Sql),
        Some("seed") => Some(StepKind::Seed(decode_node_step(&mut t, cx))),
        Some("snapshot") => Some(StepKind::Snapshot(decode_node_step(&mut t, cx))),
        Some("test") => Some(StepKind::Test(decode_node_step(&mut t, cx))),
        Some("clean") => decode_clean(&mut t, cx).map(StepKind::Clean),
        Some("export") => decode_export(&mut t, cx).map(StepKind::Export),
        Some("command") => decode_command(&mut t, cx).map(StepKind::Command),
        Some("empty") => Some(StepKind::Empty),
        _ => {
            // Without a kind, every kind's keys are accepted so only the kind is reported.
            for (_, keys) in STEP_KINDS {
                t.allow(keys);
            }
            None
        }
    };
    let this_kind = kind.unwrap_or("");
    t.finish(cx, |k| {
        let owners: Vec<&str> = STEP_KINDS.iter().filter(|(_, keys)| keys.contains(&k)).map(|(n, _)| *n).collect();
        if owners.is_empty() {
            None
        } else {
            let list = match owners.split_last() {
                Some((last, [])) => last.to_string(),
                Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
                None => String::new(),
            };
            Some(format!("`{k}` is a key of {list} steps, not of {this_kind} steps"))
        }
    });
    let loc = cx.loc(&node.span);
    Some(StepConfig { loc, name: name?, depends_on, retries, retry_delay, retry_on, timeout, pool, kind: step_kind? })
}

fn decode_ingest(t: &mut Fields, cx: &mut Cx) -> Option<IngestStep> {
    let dataset: Option<Spanned<String>> = t.opt(cx, "dataset");
    if let Some(d) = &dataset
        && !valid_name(d)
    {
        cx.error(span(&d.loc), format!("invalid dataset name \"{}\"", d.v)).help = Some(NAME_RULE.into());
    }
    let take = t.node("take").and_then(|n| one_of(n, cx, "take", TAKES)).unwrap_or(Take::All);
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
        let source = if source.v.starts_with("s3://") {
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

fn decode_load(t: &mut Fields, cx: &mut Cx) -> Option<LoadStep> {
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

fn decode_sql(t: &mut Fields, cx: &mut Cx) -> Option<SqlStep> {
    let models = t.opt(cx, "models");
    let select = t.node("select").and_then(|n| string_or_list(n, cx, "select")).unwrap_or_default();
    let exclude = t.node("exclude").and_then(|n| string_or_list(n, cx, "exclude")).unwrap_or_default();
    let connection = t.opt(cx, "connection");
    let threads = t.opt(cx, "threads");
    Some(SqlStep { models, select, exclude, connection, threads })
}

/// The null markers a clean step uses unless told otherwise.
pub const DEFAULT_NULL_MARKERS: &[&str] = &["", "N/A", "NA", "n/a", "-", "null", "NULL", "None"];

fn decode_clean(t: &mut Fields, cx: &mut Cx) -> Option<CleanStep> {
    let table = t.req(cx, "table");
    let output: Option<Spanned<String>> = t.req(cx, "output");
    let connection = t.opt(cx, "connection");
    let null_markers =
        t.opt(cx, "null_markers").unwrap_or_else(|| DEFAULT_NULL_MARKERS.iter().map(|s| s.to_string()).collect());
    let trim = t.opt(cx, "trim").unwrap_or(true);
    let export = t.opt(cx, "export");
    let dedup = t.node("dedup").and_then(|n| {
        let mut f = Fields::new(n, cx, "dedup")?;
        let key = f.node("key").and_then(|k| string_or_list(k, cx, "key"));
        if key.is_none() {
            cx.error(f.span(), "missing key `key` in dedup").help =
                Some("dedup = { key = [\"id\"], keep = \"last\", order_by = \"updated_at\" }".into());
        }
        let keep = f
            .node("keep")
            .and_then(|k| one_of(k, cx, "keep", &[("first", Keep::First), ("last", Keep::Last)]))
            .unwrap_or(Keep::First);
        let order_by = f.opt(cx, "order_by");
        f.finish(cx, |_| None);
        Some(Dedup { key: key?, keep, order_by })
    });
    let mut columns = Vec::new();
    if let Some(node) = t.node("columns") {
        match &node.v {
            V::Table(entries) => {
                for (k, v) in entries {
                    let Some(mut f) = Fields::new(v, cx, format!("column `{}`", k.name)) else { continue };
                    let ty: Option<Spanned<String>> = f.opt(cx, "type");
                    let format = f.opt(cx, "format");
                    let on_invalid = f
                        .node("on_invalid")
                        .and_then(|n| {
                            one_of(n, cx, "on_invalid", &[("null", OnInvalid::Null), ("reject", OnInvalid::Reject)])
                        })
                        .unwrap_or(OnInvalid::Reject);
                    let case = f
                        .node("case")
                        .and_then(|n| one_of(n, cx, "case", &[("lower", Case::Lower), ("upper", Case::Upper)]));
                    let outliers = f.node("outliers").and_then(|n| decode_outliers(n, cx));
                    f.finish(cx, |_| None);
                    let ty = match ty {
                        None => None,
                        Some(t) => match crate::types::ColumnType::parse(&t.v) {
                            Ok(ct) => Some(ct),
                            Err(e) => {
                                cx.error(span(&t.loc), format!("column `{}`: {e}", k.name));
                                continue;
                            }
                        },
                    };
                    if outliers.is_some() && ty.is_some_and(|t| !t.is_numeric()) {
                        cx.error(v.span.clone(), format!("column `{}`: outlier rules need a numeric type", k.name));
                    }
                    columns.push(CleanColumn { name: k.name.clone(), ty, format, on_invalid, case, outliers });
                }
            }
            _ => {
                cx.error(
                    node.span.clone(),
                    format!("wrong type for `columns`: expected a table, found {}", node.type_name()),
                );
            }
        }
    }
    if let (Some(tb), Some(o)) = (&table, &output) {
        let tb: &Spanned<String> = tb;
        if tb.v == o.v {
            cx.error(span(&o.loc), "`output` must differ from `table`: the input is kept as it was");
        }
    }
    Some(CleanStep { table: table?, output: output?, connection, null_markers, trim, dedup, columns, export })
}

fn decode_command(t: &mut Fields, cx: &mut Cx) -> Option<CommandStep> {
    let node = t.node("command");
    let mut shell = false;
    let argv = match node {
        None => {
            cx.error(t.span(), "missing key `command` in a command step").help =
                Some("command = [\"python3\", \"scripts/fetch.py\"] or command = \"./run.sh > out.log\"".into());
            None
        }
        Some(n) => match &n.v {
            V::Str(s) => {
                shell = true;
                let loc = cx.loc(&n.span);
                Some(
                    ["sh", "-c", s.as_str()]
                        .into_iter()
                        .map(|a| Spanned { v: a.to_string(), loc: loc.clone() })
                        .collect::<Vec<_>>(),
                )
            }
            _ => match Vec::<Spanned<Written>>::decode(n, cx, Some("command")) {
                Some(v) if v.is_empty() => {
                    cx.error(n.span.clone(), "`command` is empty");
                    None
                }
                Some(v) => {
                    let argv: Vec<Spanned<String>> = v.into_iter().map(|a| Spanned { v: a.v.0, loc: a.loc }).collect();
                    for a in &argv {
                        check_refs(cx, a);
                    }
                    Some(argv)
                }
                None => None,
            },
        },
    };
    let mut env = Vec::new();
    if let Some(n) = t.node("env") {
        match &n.v {
            V::Table(entries) => {
                for (k, v) in entries {
                    if let Some(s) = Spanned::<Written>::decode(v, cx, Some(&k.name)) {
                        let s = Spanned { v: s.v.0, loc: s.loc };
                        check_refs(cx, &s);
                        env.push((k.name.clone(), s));
                    }
                }
            }
            _ => {
                cx.error(n.span.clone(), format!("wrong type for `env`: expected a table, found {}", n.type_name()));
            }
        }
    }
    Some(CommandStep { argv: argv?, shell, env })
}

/// Reports malformed `${…}` references in a value kept as written (what the
/// environment holds is checked when the value is used).
fn check_refs(cx: &mut Cx, s: &Spanned<String>) {
    if let Err(e) = crate::secret::check_refs(&s.v) {
        cx.error(span(&s.loc), e);
    }
}

fn decode_outliers(n: &Node, cx: &mut Cx) -> Option<OutlierRule> {
    let mut f = Fields::new(n, cx, "outliers")?;
    let method: Option<String> = f.req(cx, "method");
    let rule = match method.as_deref() {
        Some("iqr") => Some(OutlierRule::Iqr { k: f.opt(cx, "k").unwrap_or(1.5) }),
        Some("zscore") => Some(OutlierRule::Zscore { threshold: f.opt(cx, "threshold").unwrap_or(3.0) }),
        Some("bounds") => {
            let min = f.opt(cx, "min");
            let max = f.opt(cx, "max");
            if min.is_none() && max.is_none() {
                cx.error(f.span(), "bounds need `min`, `max` or both");
            }
            Some(OutlierRule::Bounds { min, max })
        }
        Some(other) => {
            let sp = f.node("method").map(|m| m.span.clone()).unwrap_or(f.span());
            cx.error(sp, format!("unknown outlier method \"{other}\"")).help =
                Some("use iqr (with k), zscore (with threshold) or bounds (with min/max)".into());
            None
        }
        None => None,
    };
    f.finish(cx, |_| None);
    rule
}

fn decode_node_step(t: &mut Fields, cx: &mut Cx) -> NodeStep {
    let select = t.node("select").and_then(|n| string_or_list(n, cx, "select")).unwrap_or_default();
    let exclude = t.node("exclude").and_then(|n| string_or_list(n, cx, "exclude")).unwrap_or_default();
    let connection = t.opt(cx, "connection");
    NodeStep { select, exclude, connection }
}

/// A string or an array of strings, as a list.
pub fn string_or_list(n: &Node, cx: &mut Cx, key: &str) -> Option<Vec<String>> {
    match &n.v {
        V::Str(_) => String::decode(n, cx, Some(key)).map(|s| vec![s]),
        _ => Vec::<String>::decode(n, cx, Some(key)),
    }
}

fn decode_export(t: &mut Fields, cx: &mut Cx) -> Option<ExportStep> {
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

    #[test]
    fn step_kind_key_lists_match_the_decoders() {
        // The registry's key lists drive help texts and docs; they must be the
        // keys the decoders actually read.
        for (kind, keys) in STEP_KINDS {
            let f = SourceFile::new("x".into(), "x".into(), String::new());
            let root = parse(&f).unwrap();
            let mut cx = Cx::new(FileId(0), &f);
            let mut t = Fields::new(&root, &mut cx, "step").unwrap();
            match *kind {
                "ingest" => drop(decode_ingest(&mut t, &mut cx)),
                "load" => drop(decode_load(&mut t, &mut cx)),
                "sql" => drop(decode_sql(&mut t, &mut cx)),
                "export" => drop(decode_export(&mut t, &mut cx)),
                "seed" | "snapshot" | "test" => drop(decode_node_step(&mut t, &mut cx)),
                "clean" => drop(decode_clean(&mut t, &mut cx)),
                "command" => drop(decode_command(&mut t, &mut cx)),
                "empty" => {}
                other => panic!("step kind {other} has no decoder in this test"),
            }
            let mut read: Vec<&str> = t.known().to_vec();
            let mut listed: Vec<&str> = keys.to_vec();
            read.sort();
            listed.sort();
            assert_eq!(read, listed, "keys of {kind} steps");
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
        for (_, k) in STEP_KINDS {
            keys.extend(k.iter());
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
