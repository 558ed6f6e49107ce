//! The databases data is loaded into and transformed in, behind one interface:
//! connect by URL, the dialect (quoting, types, DDL), bulk load inside one
//! transaction, run SQL, stream query results out. One file per backend;
//! backends never use each other. The interface is synchronous: callers run it
//! on blocking threads, and network backends drive their async drivers inside.

pub mod mysql;
pub mod oracle;
pub mod postgres;
pub mod sqlite;
pub mod tls;

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{Error, Result, RowError};
use crate::project::{LoadMode, Materialized};
use crate::secret::Secret;
use crate::types::{Column, ColumnType, RowBatch, Schema, Val};

/// Which database a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    Mysql,
    Oracle,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
            Backend::Oracle => "oracle",
        }
    }
}

/// How a warehouse writes names: its identifier quotes and the schema (if
/// any) that relations live in. Cheap to clone into template closures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    pub open: char,
    pub close: char,
    pub schema: Option<String>,
}

impl Naming {
    pub fn quote(&self, ident: &str) -> String {
        let doubled = format!("{0}{0}", self.close);
        format!("{}{}{}", self.open, ident.replace(self.close, &doubled), self.close)
    }

    pub fn relation(&self, name: &str) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", self.quote(s), self.quote(name)),
            None => self.quote(name),
        }
    }

    /// A closure for templates' `ref()`.
    pub fn relation_fn(&self) -> crate::template::RelationFn {
        let n = self.clone();
        std::sync::Arc::new(move |name: &str| n.relation(name))
    }
}

/// A change a load makes to an existing table before writing rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Add a (nullable) column.
    Add(Column),
    /// Make a column's type wider.
    Widen { column: String, to: ColumnType },
}

/// The table a load fills, and how.
#[derive(Debug, Clone)]
pub struct LoadTarget<'a> {
    pub table: &'a str,
    /// The columns each row carries, in order (their declared types).
    pub columns: &'a [Column],
    /// The table's schema: created from this when the table does not exist or
    /// is replaced.
    pub schema: &'a Schema,
    pub mode: LoadMode,
    /// Key columns of a merge.
    pub key: &'a [String],
    /// Changes to make first (schema_change = "add_columns").
    pub changes: &'a [Change],
    /// The run that loads (recorded with rejects).
    pub run_id: &'a str,
    /// Rejected rows will be kept in `_sluice_rejects`.
    pub quarantine: bool,
    /// Loaded objects will be recorded in `_sluice_loads` (pipeline loads).
    pub track_loads: bool,
}

/// A raw object recorded as loaded in `_sluice_loads`, in the same transaction
/// as its rows, so it is never loaded twice.
#[derive(Debug, Clone)]
pub struct LoadRecord {
    pub object: String,
    pub sha256: String,
    pub rows: u64,
    pub run_id: String,
}

/// A load in progress: rows go in, and nothing is visible until `commit`.
pub trait LoadTx {
    fn write(&mut self, batch: &RowBatch) -> Result<()>;
    /// Records rejected rows in `_sluice_rejects`, in the same transaction.
    fn write_rejects(&mut self, rejects: &[RowError]) -> Result<()>;
    /// Ends one input file (`label` as errors name it). A merge applies that
    /// file's rows here, so a later file's row wins over an earlier one's
    /// with the same key; within one file a key must be unique.
    fn end_input(&mut self, _label: &str) -> Result<()> {
        Ok(())
    }
    /// Records the loaded objects and publishes the rows, all at once.
    fn commit(self: Box<Self>, records: &[LoadRecord]) -> Result<()>;
    /// Leaves the target exactly as it was.
    fn rollback(self: Box<Self>) -> Result<()>;
}

/// Receives the rows of a query.
pub trait RowSink {
    fn columns(&mut self, names: &[String]) -> Result<()>;
    /// The columns' types, where the warehouse knows them (after `columns`,
    /// before the first row; not every backend calls it).
    fn types(&mut self, _types: &[Option<ColumnType>]) {}
    fn row(&mut self, vals: &[Val]) -> Result<()>;
}

/// A delimited text export a warehouse may write straight from its server
/// (`Warehouse::copy_text`).
pub struct TextCopy<'a> {
    pub delimiter: u8,
    /// CSV-style quoting (else PostgreSQL's backslash escapes).
    pub csv_quoting: bool,
    pub null: &'a str,
    /// Declared column types by name (decimals are written with their scale).
    pub declared: &'a std::collections::BTreeMap<String, ColumnType>,
}

/// Writes the header row, given the result's column names.
pub type HeaderFn<'a> = dyn FnMut(&[String], &mut dyn std::io::Write) -> Result<()> + 'a;

/// Stops, from another thread, what a connection is running on its server:
/// PostgreSQL's cancel request, MariaDB's `KILL QUERY` from a second
/// connection, SQLite's interrupt. Harmless when the connection is idle.
pub trait Interrupt: Send + Sync {
    fn interrupt(&self);
}

/// A connection to a warehouse.
pub trait Warehouse: Send {
    fn backend(&self) -> Backend;
    /// Writes a query's rows as delimited text straight from the server,
    /// byte for byte what `query` into a delimited export writes; `None`
    /// (having written nothing) when this warehouse or this query cannot.
    fn copy_text(
        &mut self,
        _sql: &str,
        _opts: &TextCopy,
        _header: &mut HeaderFn,
        _out: &mut dyn std::io::Write,
    ) -> Result<Option<u64>> {
        Ok(None)
    }
    /// The connection as shown to users (no secrets).
    fn describe(&self) -> String;
    /// How identifiers and relations are written in this warehouse's SQL.
    fn naming(&self) -> Naming;
    /// Makes `schema` (created when missing) where this connection's
    /// relations are made and looked up, until the next call; `None` goes
    /// back to the connection's own schema. dbt projects build nodes in
    /// schemas of their own this way.
    fn use_schema(&mut self, schema: Option<&str>) -> Result<()> {
        match schema {
            None => Ok(()),
            Some(s) => Err(Error::user(format!(
                "the {} warehouse cannot build in another schema (`{s}`)",
                self.backend().name()
            ))),
        }
    }
    /// Quotes an identifier.
    fn quote(&self, ident: &str) -> String {
        self.naming().quote(ident)
    }
    /// How a table or model is named in SQL.
    fn relation(&self, name: &str) -> String {
        self.naming().relation(name)
    }
    /// Runs statements that return no rows.
    fn execute(&mut self, sql: &str) -> Result<()>;
    /// Runs a query and streams its rows into `sink`; returns the row count.
    fn query(&mut self, sql: &str, sink: &mut dyn RowSink) -> Result<u64>;
    /// The columns of a table, or `None` if it does not exist.
    fn table_schema(&mut self, table: &str) -> Result<Option<Schema>>;
    /// The columns a query returns, with the types the database reports (text
    /// when it reports none), without running it for its rows.
    fn query_columns(&mut self, sql: &str) -> Result<Vec<Column>>;
    /// Starts a load transaction.
    fn begin_load<'a>(&'a mut self, target: &LoadTarget<'_>) -> Result<Box<dyn LoadTx + 'a>>;
    /// The raw objects (and landings) already loaded into a table.
    fn loaded_objects(&mut self, table: &str) -> Result<BTreeSet<String>>;
    /// Significant digits a decimal is stored exactly to, with the
    /// warehouse's name, when that is fewer than a decimal column declares
    /// (SQLite keeps non-integer decimals as 64-bit floats).
    fn exact_decimal_digits(&self) -> Option<(u32, &'static str)> {
        None
    }
    /// Takes this connection's turn to load into `table` if no other
    /// connection has it; `false` when another has. The turn lasts until
    /// the connection closes.
    fn try_lock_loads(&mut self, _table: &str) -> Result<bool> {
        Ok(true)
    }
    /// Waits for this connection's turn to load into `table`.
    fn lock_loads(&mut self, _table: &str) -> Result<()> {
        Ok(())
    }
    /// Builds a table or a view from a model's rendered SELECT, replacing what
    /// was there in one step readers cannot see half of.
    fn materialize(&mut self, name: &str, sql: &str, build: &Build<'_>) -> Result<()>;
    /// The SQL dialect, for what the model layer generates itself.
    fn dialect(&self) -> &'static dyn Dialect;
    /// Where the database put the error of the last statement that failed,
    /// as a byte offset into `text`: SQL the caller gave to `materialize`,
    /// `execute`, `query` or `query_columns`, which the failed statement
    /// embeds. `None` when the database did not say, or the place is not in
    /// `text`.
    fn error_offset(&self, text: &str) -> Option<usize> {
        let _ = text;
        None
    }
    /// What stops this connection's work on the server (`None`: it cannot
    /// be stopped from outside; a stopped step then ends after its statement).
    fn interrupter(&self) -> Option<std::sync::Arc<dyn Interrupt>> {
        None
    }
    /// Runs a query whose placeholders (written with [`Dialect::param`]) are
    /// bound to `params`, never formatted into the SQL; streams its rows.
    /// The columns it selects are wrapped with [`Dialect::as_text`].
    fn query_bound(&mut self, _sql: &str, _params: &[Param], _sink: &mut dyn RowSink) -> Result<u64> {
        Err(Error::user(format!("the {} warehouse cannot run queries with bound values yet", self.backend().name())))
    }
    /// Streams a query's rows to `out` as CSV with a header, written by the
    /// database itself (PostgreSQL's `COPY (…) TO STDOUT (FORMAT csv,
    /// HEADER)`: RFC 4180 quoting, NULL an empty unquoted field, an empty
    /// text `""`, values in the database's own text forms). `false` (with
    /// nothing written) when the database has no such path; the caller then
    /// formats the rows of [`Warehouse::query`].
    fn copy_csv_out(&mut self, _sql: &str, _out: &mut dyn std::io::Write) -> Result<bool> {
        Ok(false)
    }
}

/// A value bound to a query: its text (already checked against its type)
/// and the declared type it compares with.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub text: String,
    pub ty: ColumnType,
}

/// Where the name an error is about (`missing_table`, `s.nope`) is in `sql`,
/// for databases that name it without a place: a byte offset, when the name
/// (or, qualified, its last part) is there once as a whole word, any case.
pub fn name_once(sql: &str, name: &str) -> Option<usize> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
    let lower = sql.to_ascii_lowercase();
    let find = |name: &str| -> Option<usize> {
        let name = name.to_ascii_lowercase();
        if name.is_empty() {
            return None;
        }
        let hits: Vec<usize> = lower
            .match_indices(&name)
            .map(|(i, _)| i)
            .filter(|&i| {
                (i == 0 || !word(sql.as_bytes()[i - 1])) && sql.as_bytes().get(i + name.len()).is_none_or(|&b| !word(b))
            })
            .collect();
        if hits.len() == 1 { Some(hits[0]) } else { None }
    };
    find(name).or_else(|| find(name.rsplit('.').next()?))
}

/// Where a database put an error: the statement it was sent and a byte
/// offset into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorAt {
    pub statement: String,
    pub offset: usize,
}

impl ErrorAt {
    /// From a 1-based character position (PostgreSQL's).
    pub fn from_char_position(statement: &str, position: usize) -> Option<ErrorAt> {
        let offset = match statement.char_indices().nth(position.checked_sub(1)?) {
            Some((b, _)) => b,
            None => statement.len(),
        };
        Some(ErrorAt { statement: statement.to_string(), offset })
    }

    /// The byte offset in `text` (trimmed as backends trim a model's SQL,
    /// and embedded in the statement) of the error.
    pub fn offset_in(&self, text: &str) -> Option<usize> {
        let start = text.len() - text.trim_start().len();
        let body = text.trim().trim_end_matches(';').trim_end();
        if body.is_empty() {
            return None;
        }
        let at = self.statement.find(body)?;
        (self.offset >= at && self.offset <= at + body.len()).then(|| start + self.offset - at)
    }
}

/// How `materialize` builds a model.
#[derive(Debug, Clone, Copy)]
pub struct Build<'a> {
    /// `Table` or `View`.
    pub kind: Materialized,
    /// Declared column types: the table is created with them and filled from the query.
    pub contract: Option<&'a Schema>,
    /// A unique index to keep on these columns (incremental models merge on it).
    pub unique_key: Option<&'a [String]>,
}

/// The SQL a warehouse speaks, for what Sluice generates: transactions,
/// temporary tables, upserts, schema changes, limits. Pure text, no connection.
pub trait Dialect: Send + Sync {
    fn quote(&self, ident: &str) -> String;
    fn sql_type(&self, t: ColumnType) -> String;
    /// The statement that starts a transaction (`None`: the database starts one itself).
    fn begin(&self) -> Option<&'static str>;
    /// Whether data changes need a COMMIT (false in autocommit mode with no BEGIN).
    fn needs_commit(&self) -> bool {
        self.begin().is_some()
    }
    /// Whether CREATE, ALTER and DROP take part in transactions.
    fn transactional_ddl(&self) -> bool;
    /// Creates a session-private table from a query.
    fn create_temp_as(&self, name: &str, select: &str) -> String;
    /// How a temporary table is named in later statements.
    fn temp_relation(&self, name: &str) -> String;
    fn drop_temp(&self, name: &str) -> String;
    fn add_column(&self, table: &str, col: &Column) -> String {
        format!("ALTER TABLE {table} ADD COLUMN {} {}", self.quote(&col.name), self.sql_type(col.ty))
    }
    fn drop_column(&self, table: &str, col: &str) -> String {
        format!("ALTER TABLE {table} DROP COLUMN {}", self.quote(col))
    }
    /// Inserts `src`'s rows into `table`, replacing rows with the same key.
    fn upsert(&self, table: &str, src: &str, cols: &[String], key: &[String]) -> String;
    fn insert_select(&self, table: &str, src: &str, cols: &[String]) -> String {
        let c: Vec<String> = cols.iter().map(|c| self.quote(c)).collect();
        format!("INSERT INTO {table} ({0}) SELECT {0} FROM {src}", c.join(", "))
    }
    /// Creates a unique index unless it exists.
    fn unique_index(&self, index: &str, table: &str, key: &[String]) -> String {
        let k: Vec<String> = key.iter().map(|c| self.quote(c)).collect();
        format!("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {table} ({})", self.quote(index), k.join(", "))
    }
    /// Sets `col` of `target`'s rows that match rows of `source` (given with its
    /// alias) on `on` and meet `cond` (`target` is referred to by its own name).
    fn update_from(&self, target: &str, col: &str, expr: &str, source: &str, on: &str, cond: &str) -> String {
        format!("UPDATE {target} SET {} = {expr} FROM {source} WHERE {on} AND {cond}", self.quote(col))
    }
    /// A query limited to `n` rows.
    fn limit(&self, select: &str, n: u64) -> String {
        format!("{select} LIMIT {n}")
    }
    /// A query's rows `offset+1 ..= offset+n` (the query orders them).
    fn limit_offset(&self, select: &str, n: u64, offset: u64) -> String {
        format!("{select} LIMIT {n} OFFSET {offset}")
    }
    /// A condition true when `a` and `b` differ, NULLs compared as values.
    fn null_safe_differ(&self, a: &str, b: &str) -> String {
        format!("{a} IS DISTINCT FROM {b}")
    }
    /// The placeholder of the `i`-th (1-based) bound value, compared with a
    /// column of type `ty`.
    fn param(&self, i: usize, _ty: ColumnType) -> String {
        format!("?{i}")
    }
    /// A selected column as `query_bound` returns it (PostgreSQL sends
    /// every value as text there; the others keep their types).
    fn as_text(&self, expr: &str) -> String {
        expr.to_string()
    }
    /// A timestamp literal (UTC, no zone).
    fn timestamp_literal(&self, micros: i64) -> String {
        let mut b = Vec::new();
        crate::types::value::write_ts(&mut b, micros, b' ');
        format!("TIMESTAMP '{}'", String::from_utf8(b).expect("timestamps are ASCII"))
    }
}

/// SQL that creates table `new` from a model's SELECT: `CREATE TABLE … AS`, or
/// with a contract, the declared table filled by `INSERT … SELECT` (the query's
/// columns are matched by name).
pub fn build_table_sql(d: &dyn Dialect, new_rel: &str, body: &str, contract: Option<&Schema>) -> Vec<String> {
    match contract {
        None => vec![format!("CREATE TABLE {new_rel} AS\n{body}")],
        Some(s) => {
            let cols: Vec<String> = s
                .columns
                .iter()
                .map(|c| {
                    format!("{} {}{}", d.quote(&c.name), d.sql_type(c.ty), if c.nullable { "" } else { " NOT NULL" })
                })
                .collect();
            let names: Vec<String> = s.columns.iter().map(|c| format!("sluice_q.{}", d.quote(&c.name))).collect();
            let plain: Vec<String> = s.columns.iter().map(|c| d.quote(&c.name)).collect();
            vec![
                format!("CREATE TABLE {new_rel} ({})", cols.join(", ")),
                format!(
                    "INSERT INTO {new_rel} ({}) SELECT {} FROM (\n{body}\n) sluice_q",
                    plain.join(", "),
                    names.join(", ")
                ),
            ]
        }
    }
}

/// Rejected rows spooled to a temporary file while the connection is busy
/// with the bulk load, to be copied into `_sluice_rejects` at commit.
pub type RejectSpool = Option<(std::path::PathBuf, std::io::BufWriter<std::fs::File>)>;

/// Appends rejected rows to `spool` (created on first use, `ext` its file
/// extension) as tab-separated lines: table, file, line, column, value,
/// error, record, run id; `\N` is NULL and `escape` writes a text field in
/// the backend's bulk format.
pub fn spool_rejects(
    spool: &mut RejectSpool,
    ext: &str,
    table: &str,
    run_id: &str,
    rejects: &[RowError],
    escape: &dyn Fn(&str, &mut bytes::BytesMut),
) -> Result<()> {
    use bytes::BufMut;
    if spool.is_none() {
        let path = std::env::temp_dir().join(format!("sluice-rejects-{}.{ext}", uuid::Uuid::now_v7().simple()));
        let f = std::fs::File::create(&path).map_err(|e| Error::io("create", &path, e))?;
        *spool = Some((path, std::io::BufWriter::new(f)));
    }
    let (path, w) = spool.as_mut().expect("just created");
    let mut line = bytes::BytesMut::with_capacity(512);
    for r in rejects {
        line.clear();
        let text = |v: Option<&str>, out: &mut bytes::BytesMut| match v {
            None => out.put_slice(b"\\N"),
            Some(s) => escape(s, out),
        };
        text(Some(table), &mut line);
        line.put_u8(b'\t');
        text(Some(&r.file), &mut line);
        line.put_u8(b'\t');
        line.put_slice(r.line.to_string().as_bytes());
        line.put_u8(b'\t');
        text(r.column.as_deref(), &mut line);
        line.put_u8(b'\t');
        text(r.value.as_deref(), &mut line);
        line.put_u8(b'\t');
        text(Some(&r.reason), &mut line);
        line.put_u8(b'\t');
        text(r.record.as_deref(), &mut line);
        line.put_u8(b'\t');
        text(Some(run_id), &mut line);
        line.put_u8(b'\n');
        std::io::Write::write_all(w, &line).map_err(|e| Error::io("write", path, e))?;
    }
    Ok(())
}

/// The error for a merge whose input repeats keys (`dups`: the first few).
pub fn repeated_merge_keys(label: &str, key: &[String], dups: &[String]) -> Error {
    Error::DataMsg(format!(
        "{label} has rows with the same merge key ({}) more than once: {}; within one file a key must be unique (across files the later file wins); nothing was loaded",
        key.join(", "),
        dups.join("; ")
    ))
}

/// Refuses a table name no warehouse can hold (empty, blank, or with a NUL).
pub fn check_table_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::user("the table name is empty: name a table (--table NAME, or `table = \"NAME\"`)"));
    }
    if name.contains('\0') {
        return Err(Error::user(format!("the table name {name:?} holds a NUL character")));
    }
    Ok(())
}

/// The name of the table that records loaded objects.
pub const LOADS_TABLE: &str = "_sluice_loads";
/// The name of the table that keeps quarantined rows.
pub const REJECTS_TABLE: &str = "_sluice_rejects";
/// The suffix of the table a replace fills before it is swapped in.
pub const NEW_SUFFIX: &str = "__sluice_new";

/// How a warehouse at this URL writes names, without connecting.
pub fn naming_for(url: &Secret) -> Naming {
    let u = url.expose();
    let scheme = u.split(':').next().unwrap_or("");
    match scheme {
        "mysql" | "mariadb" => Naming { open: '`', close: '`', schema: None },
        "postgres" | "postgresql" => {
            let schema =
                crate::secret::url_params(u).into_iter().find(|(k, _)| *k == "schema").map(|(_, v)| v.to_string());
            Naming { open: '"', close: '"', schema }
        }
        _ => Naming { open: '"', close: '"', schema: None },
    }
}

/// The URL parameter that bounds a connection and its handshake.
pub const CONNECT_TIMEOUT: &str = "connect_timeout";
/// How long a connection and its handshake may take unless the URL's
/// `connect_timeout` says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The URL's `connect_timeout=SECONDS` (a number, fractions allowed), else
/// the default.
pub fn connect_timeout(url: &str) -> Result<std::time::Duration> {
    match crate::secret::url_params(url).into_iter().rev().find(|(k, _)| *k == CONNECT_TIMEOUT) {
        None => Ok(DEFAULT_CONNECT_TIMEOUT),
        Some((_, v)) => match v.parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(std::time::Duration::from_secs_f64(secs)),
            _ => Err(Error::user(format!(
                "invalid {CONNECT_TIMEOUT}={v} in {}: a number of seconds greater than 0, e.g. {CONNECT_TIMEOUT}=5",
                crate::secret::redact_url(url)
            ))),
        },
    }
}

/// Runs `f` on `rt` for at most `limit` (`None`: it did not finish in time).
pub fn block_on_within<F: std::future::Future>(
    rt: &tokio::runtime::Handle,
    limit: std::time::Duration,
    f: F,
) -> Option<F::Output> {
    // The timer is made inside the runtime, which it needs.
    rt.block_on(async move { tokio::time::timeout(limit, f).await.ok() })
}

/// The error of a connection that did not complete its handshake in time:
/// nothing answered, or what answered does not speak `protocol`.
pub fn connect_timed_out(shown: &str, timeout: std::time::Duration, protocol: &str) -> Error {
    Error::external(
        format!(
            "cannot connect to {shown}: no {protocol} handshake within {}s ({CONNECT_TIMEOUT}); check that a {protocol} server listens at that host and port (raise the limit with ?{CONNECT_TIMEOUT}=SECONDS)",
            timeout.as_secs_f64()
        ),
        true,
    )
}

/// Connects to the warehouse a URL names. Relative SQLite paths are under `base`.
pub fn connect(url: &Secret, base: &Path) -> Result<Box<dyn Warehouse>> {
    let u = url.expose();
    let scheme = u.split(':').next().unwrap_or("");
    match scheme {
        "sqlite" => Ok(Box::new(sqlite::Sqlite::open(u, base)?)),
        "postgres" | "postgresql" => Ok(Box::new(postgres::Postgres::connect(u)?)),
        "mysql" | "mariadb" => Ok(Box::new(mysql::Mysql::connect(u)?)),
        #[cfg(feature = "oracle")]
        "oracle" => Ok(Box::new(oracle::Oracle::connect(u)?)),
        #[cfg(not(feature = "oracle"))]
        "oracle" => Err(Error::user(format!(
            "warehouse {url}: this sluice was built without Oracle support; rebuild with `cargo build --release --features oracle` (Oracle's pure-Rust driver, no Instant Client needed)"
        ))),
        _ => Err(Error::user(format!(
            "unsupported warehouse URL \"{}\": use sqlite://PATH, postgres://…, mysql://… or oracle://…",
            url
        ))),
    }
}

/// The tokio runtime network backends drive their drivers on: one of the
/// process's own, never the caller's. The interface is synchronous (it
/// blocks on this runtime), so async code calls it from a blocking thread
/// (`spawn_blocking`): the HTTP server's handlers do. Taking the caller's
/// runtime instead would tie connections to a runtime that may stop, and
/// blocking on it from one of its own tasks panics.
pub fn runtime() -> tokio::runtime::Handle {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-io")
            .enable_all()
            .build()
            .expect("a tokio runtime starts")
    })
    .handle()
    .clone()
}

/// Writes a value as text the way exports show it. NULL is the caller's business.
pub fn format_val(out: &mut Vec<u8>, v: &Val) {
    use std::io::Write;
    match *v {
        Val::Null => {}
        Val::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Val::Float(f) => out.extend_from_slice(format_float(f).as_bytes()),
        Val::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Val::Dec(s) => out.extend_from_slice(s.trim_start_matches('+').as_bytes()),
        Val::Text(s) | Val::Json(s) => out.extend_from_slice(s.as_bytes()),
        Val::Date(d) => crate::types::value::write_date(out, d as i64),
        Val::Ts(t) => crate::types::value::write_ts(out, t, b' '),
        Val::TsTz(t) => {
            crate::types::value::write_ts(out, t, b' ');
            out.extend_from_slice(b"+00");
        }
    }
}

/// Formats a float with at most 15 significant digits (as SQLite and most SQL
/// clients print doubles): `3.0`, `0.3`, `1234.5`, `1.0e+20`.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if f == 0.0 {
        return "0.0".into();
    }
    let sci = format!("{:.14e}", f);
    let (mant, exp) = sci.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("exponent is a number");
    if (-5..15).contains(&exp) {
        let decimals = (14 - exp).max(0) as usize;
        let mut s = format!("{:.*}", decimals, f);
        if s.contains('.') {
            while s.ends_with('0') {
                s.pop();
            }
            if s.ends_with('.') {
                s.push('0');
            }
        } else {
            s.push_str(".0");
        }
        s
    } else {
        let mut m = mant.to_string();
        while m.ends_with('0') {
            m.pop();
        }
        if m.ends_with('.') {
            m.push('0');
        }
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    }
}

/// Writes a value of a column declared `decimal(p, s)` with `s` decimals,
/// whatever the backend returned: a decimal with its own scale (PostgreSQL's
/// unconstrained `numeric`, MariaDB's computed scales), a float (SQLite's
/// REAL) or an integer. Decimals are rounded half away from zero, as the
/// databases do when they store a value into such a column; other values
/// (and other declared types) are written as `format_val` does.
pub fn format_declared(out: &mut Vec<u8>, v: &Val, declared: Option<ColumnType>) {
    let Some(ColumnType::Decimal(Some((_, scale)))) = declared else { return format_val(out, v) };
    let scale = scale as usize;
    match *v {
        Val::Dec(s) if s.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+') => {
            out.extend_from_slice(rescale(s, scale).as_bytes())
        }
        Val::Float(f) if f.is_finite() => out.extend_from_slice(format_scaled(f, scale as u8).as_bytes()),
        Val::Int(i) if scale > 0 => {
            use std::io::Write;
            let _ = write!(out, "{i}.{}", "0".repeat(scale));
        }
        _ => format_val(out, v),
    }
}

/// A decimal literal with exactly `scale` decimals (rounded half away from zero).
pub fn rescale(s: &str, scale: usize) -> String {
    crate::types::value::rescale_decimal(s, scale)
}

/// Formats a decimal stored as a float with the declared scale (`12.5` → `12.50`).
pub fn format_scaled(f: f64, scale: u8) -> String {
    format!("{:.*}", scale as usize, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11, item 8: any password connects, whether it came from a
    /// `${env:…}` value (encoded when substituted) or was written raw in
    /// the URL (encoded on the way to the driver); both drivers read back
    /// exactly the password.
    #[test]
    fn any_password_reaches_both_drivers_whole() {
        use crate::secret::{encode_userinfo, url_for_driver};
        use std::str::FromStr;
        for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ é€".chars() {
            let pw = format!("p@ss:w/rd?#%{c}x{c}");
            for written in [encode_userinfo(&pw), pw.clone()] {
                let url = url_for_driver(&format!("postgres://app:{written}@127.0.0.1:5432/test"));
                let cfg = tokio_postgres::Config::from_str(&url).unwrap_or_else(|e| panic!("{pw:?}: {e}"));
                assert_eq!(cfg.get_password(), Some(pw.as_bytes()), "{pw:?}");
                assert_eq!(cfg.get_user(), Some("app"));
                assert_eq!(cfg.get_dbname(), Some("test"));
                assert_eq!(cfg.get_ports(), &[5432]);
                let url = url_for_driver(&format!("mysql://app:{written}@127.0.0.1:3306/shop"));
                let opts = mysql_async::Opts::from_url(&url).unwrap_or_else(|e| panic!("{pw:?}: {e}"));
                assert_eq!(opts.pass(), Some(pw.as_str()), "{pw:?}");
                assert_eq!(opts.user(), Some("app"));
                assert_eq!(opts.db_name(), Some("shop"));
                assert_eq!(opts.tcp_port(), 3306);
            }
        }
    }

    #[test]
    fn connect_timeout_comes_from_the_url() {
        assert_eq!(connect_timeout("postgres://h/db").unwrap(), DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(
            connect_timeout("mysql://h/db?connect_timeout=2.5").unwrap(),
            std::time::Duration::from_millis(2500)
        );
        let e = connect_timeout("mysql://u:pw@h/db?connect_timeout=soon").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid connect_timeout=soon in mysql://u:***@h/db?connect_timeout=soon: a number of seconds greater than 0, e.g. connect_timeout=5"
        );
    }

    #[test]
    fn floats_print_like_sql_clients() {
        assert_eq!(format_float(3.0), "3.0");
        assert_eq!(format_float(0.1 + 0.2), "0.3");
        assert_eq!(format_float(1234.5), "1234.5");
        assert_eq!(format_float(-2.25), "-2.25");
        assert_eq!(format_float(1e20), "1.0e+20");
        assert_eq!(format_float(1.5e-7), "1.5e-07");
        assert_eq!(format_float(123456789012345.0), "123456789012345.0");
        assert_eq!(format_scaled(12.5, 2), "12.50");
    }

    #[test]
    fn error_places_map_into_the_sql_given() {
        // PostgreSQL counts characters from 1.
        let at = ErrorAt::from_char_position("CREATE VIEW \"ä\" AS\nselect nope", 27).unwrap();
        assert_eq!(&at.statement[at.offset..], "nope");
        // Back into the model's SQL, which the statement embeds trimmed.
        assert_eq!(at.offset_in("\nselect nope\n;"), Some(8));
        assert_eq!(at.offset_in("select other"), None);
        let outside = ErrorAt { statement: "CREATE TABLE x AS\nselect 1".into(), offset: 3 };
        assert_eq!(outside.offset_in("select 1"), None);
        assert_eq!(name_once("select a.nope from t a", "a.nope"), Some(7));
        assert_eq!(name_once("select NOPE from t", "nope"), Some(7));
        assert_eq!(name_once("select x from `db`.`missing`", "db.missing"), Some(20));
        assert_eq!(name_once("select id, id2 from t where id > 0", "id"), None);
        assert_eq!(name_once("select id2 from t", "id"), None);
    }

    #[test]
    fn decimals_take_the_declared_scale() {
        assert_eq!(rescale("9297.8", 2), "9297.80");
        assert_eq!(rescale("4648.9000000000000000", 2), "4648.90");
        assert_eq!(rescale("1.755", 2), "1.76");
        assert_eq!(rescale("-1.755", 2), "-1.76");
        assert_eq!(rescale("9.995", 2), "10.00");
        assert_eq!(rescale("-0.001", 2), "0.00");
        assert_eq!(rescale("+7", 1), "7.0");
        assert_eq!(rescale(".5", 0), "1");
        assert_eq!(rescale("12", 0), "12");
        let d = Some(ColumnType::Decimal(Some((14, 2))));
        let f = |v: Val| {
            let mut out = Vec::new();
            format_declared(&mut out, &v, d);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(f(Val::Float(9297.8)), "9297.80");
        assert_eq!(f(Val::Int(4)), "4.00");
        assert_eq!(f(Val::Dec("6.5")), "6.50");
        assert_eq!(f(Val::Text("x")), "x");
    }
}
