//! Errors of every layer, each with a kind that decides who must act and the
//! process exit code. This module owns the error vocabulary (diagnostics with
//! file:line:col, bad rows with file/line/column/value) and must not know about
//! any other module of the crate.

use std::fmt;
use std::path::Path;

/// Who must act on an error, and what the process exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
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
    /// 1-based physical line where the record starts.
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
        write!(f, "{}:{}: ", self.file, self.line)?;
        if let Some(c) = &self.column {
            write!(f, "column `{c}`: ")?;
        }
        if let Some(v) = &self.value {
            write!(f, "{} ", quote_value(v))?;
        }
        write!(f, "{}", self.reason)
    }
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
            Error::Internal(_) => Kind::Internal,
            Error::Context { source, .. } => source.kind(),
        }
    }

    /// Whether running the same work again may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            Error::External { retryable, .. } => *retryable,
            Error::Context { source, .. } => source.retryable(),
            _ => false,
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

    #[test]
    fn printable_bytes_escapes_invalid_utf8() {
        assert_eq!(printable_bytes(b"ab\xffc"), "ab\\xffc");
    }
}
