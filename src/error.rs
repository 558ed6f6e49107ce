//! Errors of every layer, each with a kind that decides who must act and the
//! process exit code. This module owns the error vocabulary (diagnostics with
//! file:line:col, bad rows with file/line/column/value) and must not know about
//! any other module of the crate.

use std::fmt;
use std::path::Path;

/// Who must act on an error, and what the process exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A program the project runs (a `command` step) exited with a failure
    /// status: its own output says why (exit 1).
    Command,
    /// The project, the arguments or a model is wrong: the user fixes it (exit 2).
    User,
    /// Input data is bad: rows that do not parse or do not fit (exit 3).
    Data,
    /// A server, a file system or the network refused or failed (exit 4).
    External,
    /// A bug in sluice (exit 70).
    Internal,
}

impl Kind {
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Command => 1,
            Kind::User => 2,
            Kind::Data => 3,
            Kind::External => 4,
            Kind::Internal => 70,
        }
    }
}

/// One problem found in a project file, at a place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as shown to the user (relative to the project folder).
    pub file: String,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub col: usize,
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub help: Option<String>,
    /// The source line the problem is on, with the span to underline.
    pub snippet: Option<Snippet>,
    pub severity: Severity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    pub text: String,
    pub col: usize,
    pub width: usize,
}

impl Diagnostic {
    pub fn new(file: impl Into<String>, line: usize, col: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.into(),
            line,
            col,
            message: message.into(),
            help: None,
            snippet: None,
            severity: Severity::Error,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The one-line form: `file:line:col: message`.
    pub fn headline(&self) -> String {
        let sev = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        if self.line == 0 {
            format!("{}: {sev}{}", self.file, self.message)
        } else {
            format!("{}:{}:{}: {sev}{}", self.file, self.line, self.col, self.message)
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.headline())?;
        if let Some(s) = &self.snippet {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            write!(
                f,
                "\n {pad} |\n {num} | {}\n {pad} | {}{}",
                s.text,
                " ".repeat(s.col.saturating_sub(1)),
                "^".repeat(s.width.max(1))
            )?;
        }
        if let Some(h) = &self.help {
            write!(f, "\n  = help: {h}")?;
        }
        Ok(())
    }
}

/// One rejected record of an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The input, as the user knows it (the source path, or the raw object key).
    pub file: String,
    /// 1-based physical line where the record starts (for a Parquet file,
    /// the 1-based row number).
    pub line: u64,
    /// The column the problem is in, when it is about one column.
    pub column: Option<String>,
    /// The raw value, made printable (invalid UTF-8 bytes shown as `\xNN`).
    pub value: Option<String>,
    /// Why the record was rejected.
    pub reason: String,
    /// The whole record as it is in the file (made printable), for rejects files.
    pub record: Option<String>,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_parquet(&self.file) {
            // A Parquet file has rows, not lines.
            write!(f, "{}: row {}: ", self.file, self.line)?;
        } else {
            write!(f, "{}:{}: ", self.file, self.line)?;
        }
        if let Some(c) = &self.column {
            write!(f, "column `{c}`: ")?;
        }
        if let Some(v) = &self.value {
            write!(f, "{} ", quote_value(v))?;
        }
        write!(f, "{}", self.reason)
    }
}

/// Whether an input is a Parquet file (its rows are counted, not its lines).
fn is_parquet(file: &str) -> bool {
    let l = file.to_ascii_lowercase();
    l.ends_with(".parquet") || l.ends_with(".parq")
}

/// Shows a value between double quotes, escaping what would confuse a reader.
pub fn quote_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Makes raw bytes printable: valid UTF-8 as is, other bytes as `\xNN`.
pub fn printable_bytes(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.utf8_chunks() {
        out.push_str(chunk.valid());
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

/// The bad rows of a load that published nothing.
#[derive(Debug, Clone)]
pub struct BadRows {
    /// The first rejected rows, in file order.
    pub first: Vec<RowError>,
    /// How many rows were rejected in all.
    pub total: u64,
    /// What was not changed, e.g. "table `sales` was left unchanged".
    pub outcome: String,
}

impl fmt::Display for BadRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.total == 1 { "" } else { "s" };
        write!(f, "{} bad row{s}; {}", self.total, self.outcome)?;
        for e in &self.first {
            write!(f, "\n  {e}")?;
        }
        if self.total > self.first.len() as u64 {
            write!(f, "\n  … and {} more", self.total - self.first.len() as u64)?;
        }
        Ok(())
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A database's own code for an error, kept as data: the kind of the error
/// and whether trying again may help are decided from it, never from the
/// message's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbCode {
    /// PostgreSQL's SQLSTATE (five characters, e.g. `23505`).
    SqlState(String),
    /// MySQL's or MariaDB's error number and the SQLSTATE it reports with it.
    MySql { number: u16, sqlstate: String },
    /// SQLite's extended result code (e.g. 2067, `SQLITE_CONSTRAINT_UNIQUE`).
    Sqlite(i32),
    /// Oracle's error number (`ORA-00001` is 1).
    Oracle(u32),
}

impl fmt::Display for DbCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbCode::SqlState(s) => write!(f, "SQLSTATE {s}"),
            DbCode::MySql { number, sqlstate } => write!(f, "MySQL error {number}, SQLSTATE {sqlstate}"),
            DbCode::Sqlite(c) => write!(f, "SQLite error {c}"),
            DbCode::Oracle(n) => write!(f, "ORA-{n:05}"),
        }
    }
}

impl DbCode {
    /// The SQLSTATE, when the database gave a specific one (MySQL's generic
    /// `HY000` says nothing).
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            DbCode::SqlState(s) => Some(s),
            DbCode::MySql { sqlstate, .. } if sqlstate.len() == 5 && sqlstate != "HY000" => Some(sqlstate),
            _ => None,
        }
    }

    /// Who must act, and whether trying again may help.
    pub fn classify(&self) -> (Kind, bool) {
        match self {
            DbCode::SqlState(s) => classify_sqlstate(s),
            DbCode::MySql { number, .. } => match number {
                // Lock wait timeout, deadlock, too many connections, shutdown,
                // network errors, a killed connection or query, a statement timeout.
                1205
                | 1213
                | 1040
                | 1053
                | 1152..=1161
                | 1317
                | 1927
                | 1969
                | 3024
                | 4031
                | 2002
                | 2003
                | 2006
                | 2013 => (Kind::External, true),
                // Access denied.
                1044 | 1045 | 1227 | 1698 => (Kind::External, false),
                // NULL into NOT NULL, duplicate key, out of range, truncated,
                // invalid values, too long, foreign keys, check constraints,
                // a subquery with more than one row.
                1048 | 1062 | 1169 | 1216 | 1217 | 1242 | 1263 | 1264 | 1265 | 1292 | 1366 | 1406 | 1451 | 1452
                | 1586 | 1690 | 3819 | 4025 => (Kind::Data, false),
                _ => match self.sqlstate() {
                    Some(s) => classify_sqlstate(s),
                    None => (Kind::User, false),
                },
            },
            DbCode::Sqlite(code) => match code & 0xff {
                // BUSY, LOCKED, INTERRUPT.
                5 | 6 | 9 => (Kind::External, true),
                // TOOBIG, CONSTRAINT, MISMATCH.
                18..=20 => (Kind::Data, false),
                // PERM, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
                3 | 7 | 8 | 10 | 11 | 13 | 14 | 15 | 26 => (Kind::External, false),
                _ => (Kind::User, false),
            },
            DbCode::Oracle(n) => match n {
                // Unique, NULL, invalid number, too long, precision, dates,
                // check and foreign-key constraints.
                1 | 1400 | 1407 | 1438 | 1722 | 1830 | 1839 | 1840 | 1841 | 1843 | 1847 | 1858 | 1861 | 2290 | 2291
                | 2292 | 12899 => (Kind::Data, false),
                // Deadlock, serialization, cancelled, connection lost,
                // listener errors, connect timeout.
                60 | 8177 | 1013 | 1033 | 1034 | 1089 | 3113 | 3114 | 3135 | 12170 | 12514 | 12516 | 12519 | 12520
                | 12521 | 12528 | 12537 | 12541 | 12547 => (Kind::External, true),
                // Wrong credentials, account locked or expired.
                1017 | 28000 | 28001 => (Kind::External, false),
                _ => (Kind::User, false),
            },
        }
    }

    pub fn kind(&self) -> Kind {
        self.classify().0
    }

    pub fn retryable(&self) -> bool {
        self.classify().1
    }

    /// A unique or primary key was violated.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbCode::SqlState(s) => s == "23505",
            DbCode::MySql { number, .. } => matches!(number, 1062 | 1586),
            // SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE.
            DbCode::Sqlite(c) => matches!(c, 1555 | 2067),
            DbCode::Oracle(n) => *n == 1,
        }
    }

    /// The transaction lost a race (a serialization failure or a deadlock)
    /// and may simply be run again.
    pub fn is_conflict(&self) -> bool {
        match self {
            DbCode::SqlState(s) => s.starts_with("40"),
            DbCode::MySql { number, .. } => matches!(number, 1205 | 1213),
            DbCode::Sqlite(c) => matches!(c & 0xff, 5 | 6),
            DbCode::Oracle(n) => matches!(n, 60 | 8177),
        }
    }

    /// The object (schema, table, index) exists already.
    pub fn is_duplicate_object(&self) -> bool {
        match self {
            // duplicate_schema, duplicate_table, duplicate_object.
            DbCode::SqlState(s) => matches!(s.as_str(), "42P06" | "42P07" | "42710"),
            DbCode::MySql { number, .. } => matches!(number, 1050 | 1061 | 1007),
            DbCode::Sqlite(_) => false,
            DbCode::Oracle(n) => *n == 955,
        }
    }
}

/// Kinds by SQLSTATE class, the standard's and PostgreSQL's.
fn classify_sqlstate(s: &str) -> (Kind, bool) {
    match s.get(..2).unwrap_or("") {
        // Connection exceptions; insufficient resources (too many
        // connections, out of memory or disk); operator intervention (the
        // server shutting down or starting up, a cancelled statement); a
        // transaction that lost a race (serialization failure, deadlock).
        "08" | "53" | "57" | "40" => (Kind::External, true),
        // lock_not_available (NOWAIT), snapshot too old.
        "55" if s == "55P03" => (Kind::External, true),
        "72" => (Kind::External, true),
        // The server's own system and internal errors.
        "58" | "XX" => (Kind::External, false),
        // Wrong credentials.
        "28" => (Kind::External, false),
        // Data exceptions, integrity constraint violations, cardinality
        // violations (ON CONFLICT touching a row twice), WITH CHECK OPTION.
        "22" | "23" | "21" | "44" => (Kind::Data, false),
        // Syntax errors, undefined tables and columns, privileges, unknown
        // databases and schemas, unsupported features, and the rest.
        _ => (Kind::User, false),
    }
}

/// The crate's error: a kind, a message, and the layers of context it went through.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A user mistake described by one message.
    #[error("{0}")]
    User(String),
    /// Every problem found in the project's files.
    #[error("{}", render_diagnostics(.0))]
    Config(Vec<Diagnostic>),
    /// Input rows that were rejected.
    #[error("{0}")]
    Data(Box<BadRows>),
    /// A single bad input that is not about rows (a file that is not CSV at all).
    #[error("{0}")]
    DataMsg(String),
    /// A database refused a statement or a connection; its code decides the
    /// kind and whether trying again may help. `message` says what was being
    /// done and what the database said.
    #[error("{message}")]
    Db { message: String, code: DbCode },
    /// A program a `command` step ran exited with a failure status
    /// (`status` 75, `EX_TEMPFAIL`, may pass on a retry).
    #[error("{message}")]
    Command { message: String, status: Option<i32> },
    /// A server or the OS failed; `retryable` says if trying again may help.
    #[error("{message}")]
    External {
        message: String,
        retryable: bool,
        #[source]
        source: Option<BoxError>,
    },
    #[error("internal error: {0} (this is a bug in sluice)")]
    Internal(String),
    /// Another error with what was being done when it happened.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

fn render_diagnostics(d: &[Diagnostic]) -> String {
    let errors = d.iter().filter(|d| d.severity == Severity::Error).count();
    let mut out = String::new();
    for x in d {
        out.push_str(&x.to_string());
        out.push('\n');
    }
    let s = if errors == 1 { "" } else { "s" };
    out.push_str(&format!("{errors} error{s} found"));
    out
}

impl Error {
    pub fn user(msg: impl Into<String>) -> Self {
        Error::User(msg.into())
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }

    pub fn external(msg: impl Into<String>, retryable: bool) -> Self {
        Error::External { message: msg.into(), retryable, source: None }
    }

    /// An I/O failure on a path. A missing file or a denied permission is for the
    /// user to fix; anything else is the system's.
    pub fn io(op: &str, path: &Path, err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let what = match err.kind() {
            K::NotFound => "no such file or directory".to_string(),
            K::PermissionDenied => "permission denied".to_string(),
            K::IsADirectory => "is a directory".to_string(),
            _ => err.to_string(),
        };
        let msg = format!("cannot {op} {}: {what}", path.display());
        match err.kind() {
            K::NotFound | K::PermissionDenied | K::IsADirectory | K::AlreadyExists | K::ReadOnlyFilesystem => {
                Error::User(msg)
            }
            _ => Error::External { message: msg, retryable: false, source: Some(Box::new(err)) },
        }
    }

    /// The kind of the innermost error.
    pub fn kind(&self) -> Kind {
        match self {
            Error::User(_) | Error::Config(_) => Kind::User,
            Error::Data(_) | Error::DataMsg(_) => Kind::Data,
            Error::External { .. } => Kind::External,
            Error::Db { code, .. } => code.kind(),
            Error::Command { .. } => Kind::Command,
            Error::Internal(_) => Kind::Internal,
            Error::Context { source, .. } => source.kind(),
        }
    }

    /// Whether running the same work again may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            Error::External { retryable, .. } => *retryable,
            Error::Db { code, .. } => code.retryable(),
            Error::Command { status, .. } => *status == Some(75),
            Error::Context { source, .. } => source.retryable(),
            _ => false,
        }
    }

    /// The database's code of the innermost error, when a database raised it.
    pub fn db_code(&self) -> Option<&DbCode> {
        match self.root() {
            Error::Db { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The innermost error, below every context layer.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            e => e,
        }
    }

    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context { context: context.into(), source: Box::new(self) }
    }

    /// The whole chain on one line: `context: context: cause`. Multi-line
    /// causes (diagnostics, bad rows) keep their own lines.
    pub fn chain(&self) -> String {
        match self {
            Error::Context { context, source } => format!("{context}: {}", source.chain()),
            Error::External { message, source: Some(s), .. } => {
                let inner = s.to_string();
                if message.contains(&inner) { message.clone() } else { format!("{message}: {inner}") }
            }
            e => e.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to errors as they travel up.
pub trait ResultExt<T> {
    fn context(self, ctx: impl Into<String>) -> Result<T>;
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, ctx: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.context(ctx))
    }
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| e.context(f()))
    }
}

/// The closest candidate to `word` by edit distance, when it is close enough
/// to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(&str, usize)> = None;
    for c in candidates {
        let d = edit_distance(&word.to_lowercase(), &c.to_lowercase());
        let limit = (word.chars().count().max(c.chars().count()) / 3).max(1) + 1;
        if d <= limit && best.is_none_or(|(_, bd)| d < bd) {
            best = Some((c, d));
        }
    }
    best.map(|(c, _)| c)
}

/// Levenshtein distance counting a swap of neighbours as one edit.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[n][m]
}

/// "did you mean `x`?" or the list of valid choices.
pub fn suggest(word: &str, candidates: &[&str]) -> Option<String> {
    if let Some(n) = nearest(word, candidates.iter().copied()) {
        return Some(format!("did you mean `{n}`?"));
    }
    if candidates.is_empty() {
        None
    } else if candidates.len() <= 12 {
        Some(format!("valid choices: {}", candidates.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_finds_typos() {
        assert_eq!(nearest("conection", ["connection", "table", "mode"]), Some("connection"));
        assert_eq!(nearest("tabel", ["connection", "table", "mode"]), Some("table"));
        assert_eq!(nearest("zzz", ["connection", "table", "mode"]), None);
    }

    #[test]
    fn kinds_pass_through_context() {
        let e = Error::user("bad").context("step `a`").context("pipeline `p`");
        assert_eq!(e.kind(), Kind::User);
        assert_eq!(e.chain(), "pipeline `p`: step `a`: bad");
    }

    /// Issue 11, item 20: kinds and retries come from the database's code,
    /// the same way on every backend.
    #[test]
    fn database_codes_decide_kinds_and_retries() {
        let pg = |s: &str| DbCode::SqlState(s.into()).classify();
        let my = |n: u16, s: &str| DbCode::MySql { number: n, sqlstate: s.into() }.classify();
        let lite = |c: i32| DbCode::Sqlite(c).classify();
        let ora = |n: u32| DbCode::Oracle(n).classify();
        let (user, data, ext, retry) =
            ((Kind::User, false), (Kind::Data, false), (Kind::External, false), (Kind::External, true));
        // A missing column or table, a syntax error: the user's SQL.
        assert_eq!([pg("42703"), pg("42P01"), pg("42601"), my(1054, "42S22"), my(1146, "42S02"), lite(1)], [user; 6]);
        // A unique, NOT NULL or check violation, a bad value: the data.
        assert_eq!(
            [pg("23505"), pg("23502"), pg("22P02"), my(1062, "23000"), my(1366, "HY000"), lite(2067)],
            [data; 6]
        );
        assert_eq!([lite(1299), lite(275), ora(1), ora(1400)], [data; 4]);
        // Connections, resources, shutdowns and lost races may pass.
        assert_eq!([pg("08006"), pg("57P01"), pg("53300"), pg("40001"), pg("40P01"), pg("55P03")], [retry; 6]);
        assert_eq!([my(1213, "40001"), my(1205, "HY000"), my(1040, "08004"), lite(5), lite(517), ora(60)], [retry; 6]);
        // Credentials and the server's own failures do not.
        assert_eq!([pg("28P01"), pg("XX000"), my(1045, "28000"), lite(14), ora(1017)], [ext; 5]);
        // Unknown numbers fall back to the SQLSTATE MySQL gives with them.
        assert_eq!(my(9999, "23000"), data);
        assert_eq!(my(9999, "HY000"), user);
        assert!(DbCode::SqlState("23505".into()).is_unique_violation() && DbCode::Sqlite(1555).is_unique_violation());
        assert!(DbCode::SqlState("40P01".into()).is_conflict() && DbCode::Sqlite(5).is_conflict());
        let e =
            Error::Db { message: "cannot x: boom".into(), code: DbCode::SqlState("40001".into()) }.context("step `a`");
        assert_eq!(
            (e.kind(), e.retryable(), e.db_code()),
            (Kind::External, true, Some(&DbCode::SqlState("40001".into())))
        );
        assert_eq!(e.chain(), "step `a`: cannot x: boom");
        let c = |status| Error::Command { message: "`x` exited".into(), status };
        assert_eq!((c(Some(1)).kind().exit_code(), c(Some(1)).retryable(), c(Some(75)).retryable()), (1, false, true));
    }

    #[test]
    fn printable_bytes_escapes_invalid_utf8() {
        assert_eq!(printable_bytes(b"ab\xffc"), "ab\\xffc");
    }
}
