//! `sluice load SOURCE TARGET_URL --table T`: one file into one table, with
//! every value type-checked, in one transaction.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::project::{Encoding, FileFormat, LoadMode, OnError, ReadOptions, SchemaChange};
use crate::secret::{Env, Secret};
use crate::steps::load::{Input, LoadSpec, load, summary};
use crate::steps::{count, human_bytes};
use crate::warehouse;

use super::progress::{Screen, format_duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Append,
    Replace,
    Merge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnErrorArg {
    Fail,
    Skip,
    Quarantine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Csv,
    Tsv,
    Json,
    Ndjson,
    Parquet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaChangeArg {
    Fail,
    #[value(name = "add_columns", alias = "add-columns")]
    AddColumns,
    #[value(name = "ignore_extra", alias = "ignore-extra")]
    IgnoreExtra,
}

/// How an input file is read (shared by `load` and `infer`).
#[derive(Debug, Clone, clap::Args)]
pub struct ReadArgs {
    /// The file's format (from its extension by default: .json/.ndjson/.jsonl are JSON, .parquet Parquet, the rest CSV).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Field delimiter, one character ("\t" for tab); comma by default, tab for .tsv files.
    #[arg(long, value_name = "CHAR")]
    pub delimiter: Option<String>,
    /// Quote character.
    #[arg(long, value_name = "CHAR", default_value = "\"")]
    pub quote: String,
    /// The first line holds data, not column names.
    #[arg(long)]
    pub no_header: bool,
    /// A marker that means NULL besides the empty unquoted field (e.g. '\N').
    #[arg(long, value_name = "TEXT")]
    pub null: Option<String>,
    /// The file's text encoding: utf-8, latin1 (iso-8859-1) or windows-1252 (cp1252).
    #[arg(long, default_value = "utf-8")]
    pub encoding: String,
}

impl ReadArgs {
    pub fn options(&self) -> Result<ReadOptions> {
        let one = |what: &str, s: &str| -> Result<u8> {
            let s = if s == "\\t" { "\t" } else { s };
            if s.len() == 1 && s.is_ascii() {
                Ok(s.as_bytes()[0])
            } else {
                Err(Error::user(format!("--{what} must be one ASCII character, found \"{s}\"")))
            }
        };
        let (format, mut delimiter) = match self.format {
            None => (None, None),
            Some(FormatArg::Csv) => (Some(FileFormat::Csv), None),
            Some(FormatArg::Tsv) => (Some(FileFormat::Csv), Some(b'\t')),
            Some(FormatArg::Json | FormatArg::Ndjson) => (Some(FileFormat::Json), None),
            Some(FormatArg::Parquet) => (Some(FileFormat::Parquet), None),
        };
        if let Some(d) = &self.delimiter {
            delimiter = Some(one("delimiter", d)?);
        }
        let encoding = crate::project::ENCODINGS
            .iter()
            .find(|(n, _)| {
                n.eq_ignore_ascii_case(&self.encoding) || (self.encoding.eq_ignore_ascii_case("utf8") && *n == "utf-8")
            })
            .map(|(_, e)| *e)
            .ok_or_else(|| {
                Error::user(format!("unknown --encoding \"{}\": use utf-8, latin1 or windows-1252", self.encoding))
            })?;
        Ok(ReadOptions {
            format,
            delimiter,
            quote: one("quote", &self.quote)?,
            header: !self.no_header,
            null: self.null.clone(),
            encoding: if encoding == Encoding::Utf8 { Encoding::Utf8 } else { encoding },
            pages: None,
        })
    }
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  sluice load sales.csv sqlite://warehouse.db --table sales --create
  sluice load sales.csv postgres://app:${env:PGPASSWORD}@db/shop --table sales --schema sales.schema.toml
  sluice load dirty.csv mysql://root@127.0.0.1/shop --table sales --on-error quarantine --rejects rejects.tsv
  sluice load updates.ndjson postgres://… --table customers --mode merge --key customer_id
  sluice load events.parquet postgres://… --table events --create")]
pub struct Args {
    /// The file to load: CSV/TSV, NDJSON, a JSON array of objects, or Parquet.
    pub source: PathBuf,
    /// The warehouse: sqlite://PATH, postgres://…, mysql://… (${env:NAME} is resolved).
    pub target: String,
    /// The table to load into.
    #[arg(long, short = 't')]
    pub table: String,
    /// A schema file ([columns] name = "type"); the table's own columns by default.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// Create the table if it does not exist (from --schema, or the inferred schema).
    #[arg(long)]
    pub create: bool,
    #[arg(long, value_enum, default_value = "append")]
    pub mode: Mode,
    /// Key columns for --mode merge, comma separated.
    #[arg(long, value_name = "COLS", value_delimiter = ',')]
    pub key: Vec<String>,
    /// Rows that do not fit: fail publishes nothing; skip loads the good rows; quarantine also keeps the bad ones.
    #[arg(long, value_enum, default_value = "fail")]
    pub on_error: OnErrorArg,
    /// With skip/quarantine: fail when more rows than this are bad.
    #[arg(long, value_name = "N")]
    pub max_errors: Option<u64>,
    /// With quarantine: the rejects file (TSV); SOURCE.rejects.tsv by default.
    #[arg(long, value_name = "PATH")]
    pub rejects: Option<PathBuf>,
    /// When the file's columns differ from the table's.
    #[arg(long, value_enum, default_value = "fail")]
    pub schema_change: SchemaChangeArg,
    #[command(flatten)]
    pub read: ReadArgs,
}

pub fn run(a: Args) -> Result<i32> {
    let started = Instant::now();
    let cwd = Path::new(".");
    let env = Env::load(cwd).map_err(Error::user)?;
    let url = Secret::new(&a.target, &env).map_err(Error::user)?;
    if !a.source.is_file() {
        return Err(Error::user(format!("source file not found: {}", a.source.display())));
    }
    let mode = match a.mode {
        Mode::Append => LoadMode::Append,
        Mode::Replace => LoadMode::Replace,
        Mode::Merge => LoadMode::Merge,
    };
    if mode == LoadMode::Merge && a.key.is_empty() {
        return Err(Error::user("--mode merge needs --key COLS: the column(s) that identify a row"));
    }
    if mode != LoadMode::Merge && !a.key.is_empty() {
        return Err(Error::user("--key applies only to --mode merge"));
    }
    let on_error = match a.on_error {
        OnErrorArg::Fail => OnError::Fail,
        OnErrorArg::Skip => OnError::Skip,
        OnErrorArg::Quarantine => OnError::Quarantine,
    };
    if a.rejects.is_some() && on_error != OnError::Quarantine {
        return Err(Error::user("--rejects applies only to --on-error quarantine"));
    }
    let schema = match &a.schema {
        Some(p) => Some(crate::plan::read_schema_file(p, &p.display().to_string(), &env)?),
        None => None,
    };
    let label = a.source.display().to_string();
    let rejects_path = (on_error == OnError::Quarantine)
        .then(|| a.rejects.clone().unwrap_or_else(|| PathBuf::from(format!("{label}.rejects.tsv"))));
    let spec = LoadSpec {
        table: a.table.clone(),
        schema,
        mode,
        key: a.key.clone(),
        read: a.read.options()?,
        on_error,
        max_errors: a.max_errors,
        schema_change: match a.schema_change {
            SchemaChangeArg::Fail => SchemaChange::Fail,
            SchemaChangeArg::AddColumns => SchemaChange::AddColumns,
            SchemaChangeArg::IgnoreExtra => SchemaChange::IgnoreExtra,
        },
        create: a.create,
        rejects_path,
        run_id: uuid::Uuid::now_v7().to_string(),
        records: Vec::new(),
        cancel: super::cancel_on_signals(),
    };
    let input = Input::file(&a.source, &label);
    let mut wh = warehouse::connect(&url, cwd)?;
    spec.cancel.watch(wh.as_ref());
    let screen = Screen::new();
    let meter = (screen.meters())(&format!("loading {}", a.table), input.size);
    let res = load(wh.as_mut(), &spec, std::slice::from_ref(&input), &meter);
    drop(meter);
    screen.clear();
    let report = res?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    outln!("{}", summary(&a.table, &report, 1));
    outln!(
        "read {}, loaded {}, rejected {} in {}: {} rows/s, {}/s ({})",
        count(report.read, "row"),
        crate::steps::thousands(report.loaded),
        crate::steps::thousands(report.rejected),
        format_duration(started.elapsed()),
        crate::steps::thousands((report.read as f64 / secs) as u64),
        human_bytes((report.bytes as f64 / secs) as u64),
        wh.describe()
    );
    Ok(0)
}
