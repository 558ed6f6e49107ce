//! `export`: writes a table's or a query's rows to a file or an object:
//! TSV or CSV (a header row, CSV-style quoting or PostgreSQL's backslash
//! escapes), NDJSON, a JSON array, or Parquet (snappy/zstd, a row-group
//! size). The output is written under a temporary name (or as an S3
//! multipart upload) and published only when complete, so a reader never
//! sees half a file. On PostgreSQL a delimited export streams the server's
//! own `COPY … TO STDOUT` output, byte for byte what the row-by-row path
//! writes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use serde_json::json;

use super::models::WarehouseResolve;
use super::{RunCtx, StepOutput, count, human_bytes};
use crate::error::{Error, Result};
use crate::formats::csv::{CsvWriter, EscapedWriter};
use crate::formats::json::JsonWriter;
use crate::formats::parquet::{ParquetOptions, ParquetWriter};
use crate::project::{ExportFormat, ExportStep, ExportWhat, Quoting};
use crate::storage::output;
use crate::template;
use crate::types::{ColumnType, RowBatch, Val};
use crate::warehouse::{RowSink, TextCopy, Warehouse, format_declared};

/// Where and how rows are written.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    pub format: ExportFormat,
    pub header: bool,
    /// How NULL is written (delimited formats).
    pub null: String,
    /// TSV: CSV-style quotes or backslash escapes.
    pub quoting: Quoting,
    pub parquet: ParquetOptions,
    /// Column types the project declares for the exported columns, by name:
    /// a `decimal(p, s)` column is written with `s` decimals on every
    /// backend, whatever type the database computed or stored. Parquet and
    /// JSON also take their column types from here (and from the table).
    pub declared: BTreeMap<String, ColumnType>,
}

impl ExportSpec {
    /// The defaults of a format: a header, `quoting = "csv"` (NULL empty).
    pub fn new(format: ExportFormat) -> ExportSpec {
        ExportSpec {
            format,
            header: true,
            null: String::new(),
            quoting: Quoting::Csv,
            parquet: ParquetOptions::default(),
            declared: BTreeMap::new(),
        }
    }

    /// The NULL marker of a quoting when none is given: empty for CSV-style
    /// quoting (an empty string is `""`), `\N` for backslash escapes.
    pub fn default_null(quoting: Quoting) -> &'static str {
        match quoting {
            Quoting::Csv => "",
            Quoting::Backslash => "\\N",
        }
    }

    fn escaped(&self) -> bool {
        self.format == ExportFormat::Tsv && self.quoting == Quoting::Backslash
    }

    fn delimiter(&self) -> u8 {
        if self.format == ExportFormat::Csv { b',' } else { b'\t' }
    }
}

enum FieldWriter<W: Write> {
    Quoted(CsvWriter<W>),
    Escaped(EscapedWriter<W>),
}

impl<W: Write> FieldWriter<W> {
    fn field(&mut self, v: &[u8]) -> std::io::Result<()> {
        match self {
            FieldWriter::Quoted(w) => w.field(v),
            FieldWriter::Escaped(w) => w.field(v),
        }
    }

    /// A text that must not read back as NULL (empty, or the marker).
    fn not_null(&mut self, v: &[u8]) -> std::io::Result<()> {
        match self {
            FieldWriter::Quoted(w) => w.quoted(v),
            FieldWriter::Escaped(w) => w.field(v),
        }
    }

    fn raw(&mut self, v: &[u8]) -> std::io::Result<()> {
        match self {
            FieldWriter::Quoted(w) => w.raw(v),
            FieldWriter::Escaped(w) => w.raw(v),
        }
    }

    fn end_record(&mut self) -> std::io::Result<()> {
        match self {
            FieldWriter::Quoted(w) => w.end_record(),
            FieldWriter::Escaped(w) => w.end_record(),
        }
    }

    fn into_inner(self) -> W {
        match self {
            FieldWriter::Quoted(w) => w.into_inner(),
            FieldWriter::Escaped(w) => w.into_inner(),
        }
    }
}

/// Writes the header row of a delimited export (also used before a
/// server-side copy).
pub fn write_header(out: &mut dyn Write, names: &[String], spec: &ExportSpec) -> std::io::Result<()> {
    let mut w = if spec.escaped() {
        FieldWriter::Escaped(EscapedWriter::new(out, spec.delimiter()))
    } else {
        FieldWriter::Quoted(CsvWriter::new(out, spec.delimiter()))
    };
    for n in names {
        w.field(n.as_bytes())?;
    }
    w.end_record()
}

/// Writes rows to a delimited file as they arrive.
pub struct DelimitedSink<W: Write> {
    w: FieldWriter<W>,
    spec: ExportSpec,
    /// The declared type of each column of the result.
    types: Vec<Option<ColumnType>>,
    buf: Vec<u8>,
    pub rows: u64,
}

impl<W: Write> DelimitedSink<W> {
    pub fn new(out: W, spec: ExportSpec) -> Self {
        let w = if spec.escaped() {
            FieldWriter::Escaped(EscapedWriter::new(out, spec.delimiter()))
        } else {
            FieldWriter::Quoted(CsvWriter::new(out, spec.delimiter()))
        };
        DelimitedSink { w, spec, types: Vec::new(), buf: Vec::with_capacity(256), rows: 0 }
    }

    pub fn into_inner(self) -> W {
        self.w.into_inner()
    }
}

fn write_err(e: std::io::Error) -> Error {
    Error::external(format!("cannot write the export: {e}"), false)
}

impl<W: Write> RowSink for DelimitedSink<W> {
    fn columns(&mut self, names: &[String]) -> Result<()> {
        self.types = names.iter().map(|n| self.spec.declared.get(n).copied()).collect();
        if self.spec.header {
            for n in names {
                self.w.field(n.as_bytes()).map_err(write_err)?;
            }
            self.w.end_record().map_err(write_err)?;
        }
        Ok(())
    }

    fn row(&mut self, vals: &[Val]) -> Result<()> {
        for (i, v) in vals.iter().enumerate() {
            match v {
                Val::Null => self.w.raw(self.spec.null.as_bytes()),
                Val::Text(s) if s.is_empty() || *s == self.spec.null => self.w.not_null(s.as_bytes()),
                v => {
                    self.buf.clear();
                    format_declared(&mut self.buf, v, self.types.get(i).copied().flatten());
                    self.w.field(&self.buf)
                }
            }
            .map_err(write_err)?;
        }
        self.w.end_record().map_err(write_err)?;
        self.rows += 1;
        Ok(())
    }
}

/// Writes rows as NDJSON or a JSON array.
pub struct JsonSink<W: Write> {
    w: JsonWriter<W>,
    declared: BTreeMap<String, ColumnType>,
    json: Vec<bool>,
    decimals: Vec<Option<ColumnType>>,
    buf: Vec<u8>,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W, spec: &ExportSpec) -> Self {
        JsonSink {
            w: JsonWriter::new(out, spec.format == ExportFormat::Json),
            declared: spec.declared.clone(),
            json: Vec::new(),
            decimals: Vec::new(),
            buf: Vec::new(),
        }
    }

    pub fn finish(self) -> Result<W> {
        self.w.finish().map_err(write_err)
    }
}

impl<W: Write> RowSink for JsonSink<W> {
    fn columns(&mut self, names: &[String]) -> Result<()> {
        self.json = names.iter().map(|n| self.declared.get(n) == Some(&ColumnType::Json)).collect();
        self.decimals = names
            .iter()
            .map(|n| self.declared.get(n).copied().filter(|t| matches!(t, ColumnType::Decimal(Some(_)))))
            .collect();
        self.w.columns(names).map_err(write_err)
    }

    fn types(&mut self, types: &[Option<ColumnType>]) {
        for (i, t) in types.iter().enumerate() {
            if *t == Some(ColumnType::Json)
                && let Some(j) = self.json.get_mut(i)
            {
                *j = true;
            }
        }
    }

    fn row(&mut self, vals: &[Val]) -> Result<()> {
        if self.decimals.iter().all(Option::is_none) {
            return self.w.row(vals, &self.json).map_err(write_err);
        }
        // Declared decimals are written with their scale.
        let mut texts = Vec::with_capacity(vals.len());
        for (i, v) in vals.iter().enumerate() {
            match (self.decimals.get(i).copied().flatten(), v) {
                (Some(t), Val::Dec(_) | Val::Int(_) | Val::Float(_)) => {
                    self.buf.clear();
                    format_declared(&mut self.buf, v, Some(t));
                    texts.push(Some(String::from_utf8_lossy(&self.buf).into_owned()));
                }
                _ => texts.push(None),
            }
        }
        let vals: Vec<Val> = vals
            .iter()
            .zip(&texts)
            .map(|(v, t)| match t {
                Some(t) => Val::Dec(t.as_str()),
                None => *v,
            })
            .collect();
        self.w.row(&vals, &self.json).map_err(write_err)
    }
}

/// Rows gathered to decide the types of columns nobody declared.
const TYPE_SAMPLE: usize = 1000;

/// Writes rows as a Parquet file. Column types come from the declarations
/// (the project's, the table's), then from what the warehouse says, and for
/// the rest from the values of the first rows.
pub struct ParquetSink<W: Write + Send> {
    out: Option<W>,
    opts: ParquetOptions,
    names: Vec<String>,
    types: Vec<Option<ColumnType>>,
    /// Rows held until every column's type is known.
    sample: RowBatch,
    writer: Option<ParquetWriter<W>>,
    rows: u64,
}

impl<W: Write + Send> ParquetSink<W> {
    pub fn new(out: W, spec: &ExportSpec) -> Self {
        ParquetSink {
            out: Some(out),
            opts: spec.parquet,
            names: Vec::new(),
            types: Vec::new(),
            sample: RowBatch::new(0),
            writer: None,
            rows: 0,
        }
    }

    fn start(&mut self) -> Result<()> {
        let mut seen: Vec<Option<ColumnType>> = vec![None; self.names.len()];
        for r in 0..self.sample.len() {
            for (i, c) in self.sample.row(r).iter().enumerate() {
                let t = match self.sample.val(*c) {
                    Val::Null => continue,
                    Val::Int(_) => ColumnType::BigInt,
                    Val::Float(_) => ColumnType::Float,
                    Val::Bool(_) => ColumnType::Boolean,
                    Val::Date(_) => ColumnType::Date,
                    Val::Ts(_) => ColumnType::Timestamp,
                    Val::TsTz(_) => ColumnType::TimestampTz,
                    Val::Dec(_) => ColumnType::Decimal(None),
                    Val::Text(_) | Val::Json(_) => ColumnType::Text,
                };
                seen[i] = Some(match (seen[i], t) {
                    (None, t) => t,
                    (Some(a), b) if a == b => a,
                    (Some(ColumnType::BigInt), ColumnType::Float) | (Some(ColumnType::Float), ColumnType::BigInt) => {
                        ColumnType::Float
                    }
                    _ => ColumnType::Text,
                });
            }
        }
        let cols: Vec<(String, ColumnType)> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), self.types[i].or(seen[i]).unwrap_or(ColumnType::Text)))
            .collect();
        let out = self.out.take().ok_or_else(|| Error::internal("the Parquet export started twice"))?;
        let mut w = ParquetWriter::new(out, &cols, self.opts).map_err(|e| Error::external(e, false))?;
        for r in 0..self.sample.len() {
            let vals: Vec<Val> = self.sample.row(r).iter().map(|c| self.sample.val(*c)).collect();
            w.row(&vals).map_err(|e| row_err(self.sample.lines[r], e))?;
        }
        self.sample.clear();
        self.writer = Some(w);
        Ok(())
    }

    pub fn finish(mut self) -> Result<W> {
        if self.writer.is_none() {
            self.start()?;
        }
        let w = self.writer.take().expect("started above");
        w.finish().map_err(|e| Error::external(e, false))
    }
}

fn row_err(row: u64, e: String) -> Error {
    Error::DataMsg(format!("row {row} of the result: {e}; declare the column's type to export it"))
}

impl<W: Write + Send> RowSink for ParquetSink<W> {
    fn columns(&mut self, names: &[String]) -> Result<()> {
        self.names = names.to_vec();
        if self.types.len() != names.len() {
            self.types = vec![None; names.len()];
        }
        self.sample = RowBatch::new(names.len());
        Ok(())
    }

    fn types(&mut self, types: &[Option<ColumnType>]) {
        self.types = types.to_vec();
    }

    fn row(&mut self, vals: &[Val]) -> Result<()> {
        self.rows += 1;
        if let Some(w) = self.writer.as_mut() {
            return w.row(vals).map_err(|e| row_err(self.rows, e));
        }
        self.sample.push(vals, self.rows);
        if self.sample.len() >= TYPE_SAMPLE || self.types.iter().all(Option::is_some) {
            self.start()?;
        }
        Ok(())
    }
}

/// Any export's rows, in the spec's format.
pub enum Sink<W: Write + Send> {
    Delimited(DelimitedSink<W>),
    Json(JsonSink<W>),
    Parquet(Box<ParquetSink<W>>),
}

impl<W: Write + Send> Sink<W> {
    pub fn new(out: W, spec: &ExportSpec) -> Sink<W> {
        match spec.format {
            ExportFormat::Tsv | ExportFormat::Csv => Sink::Delimited(DelimitedSink::new(out, spec.clone())),
            ExportFormat::Ndjson | ExportFormat::Json => Sink::Json(JsonSink::new(out, spec)),
            ExportFormat::Parquet => Sink::Parquet(Box::new(ParquetSink::new(out, spec))),
        }
    }

    /// Ends the output (a JSON array's `]`, Parquet's footer).
    pub fn finish(self) -> Result<W> {
        match self {
            Sink::Delimited(s) => Ok(s.into_inner()),
            Sink::Json(s) => s.finish(),
            Sink::Parquet(s) => s.finish(),
        }
    }
}

impl<W: Write + Send> RowSink for Sink<W> {
    fn columns(&mut self, names: &[String]) -> Result<()> {
        match self {
            Sink::Delimited(s) => s.columns(names),
            Sink::Json(s) => s.columns(names),
            Sink::Parquet(s) => s.columns(names),
        }
    }

    fn types(&mut self, types: &[Option<ColumnType>]) {
        match self {
            Sink::Delimited(s) => s.types(types),
            Sink::Json(s) => s.types(types),
            Sink::Parquet(s) => {
                // What the project declares wins over what the warehouse says.
                let merged: Vec<Option<ColumnType>> =
                    types.iter().enumerate().map(|(i, t)| s.types.get(i).copied().flatten().or(*t)).collect();
                s.types(&merged)
            }
        }
    }

    fn row(&mut self, vals: &[Val]) -> Result<()> {
        match self {
            Sink::Delimited(s) => s.row(vals),
            Sink::Json(s) => s.row(vals),
            Sink::Parquet(s) => s.row(vals),
        }
    }
}

/// Runs `sql` and writes its rows to `out` in the spec's format: straight
/// from the server when the warehouse can (PostgreSQL's COPY), else row by
/// row. Returns the rows written; `out` is not finished.
pub fn write_rows(wh: &mut dyn Warehouse, sql: &str, spec: &ExportSpec, out: &mut (dyn Write + Send)) -> Result<u64> {
    if spec.format.is_delimited() {
        let copy = TextCopy {
            delimiter: spec.delimiter(),
            csv_quoting: !spec.escaped(),
            null: &spec.null,
            declared: &spec.declared,
        };
        let mut header = |names: &[String], out: &mut dyn Write| -> Result<()> {
            if spec.header { write_header(out, names, spec).map_err(write_err) } else { Ok(()) }
        };
        if let Some(rows) = wh.copy_text(sql, &copy, &mut header, out)? {
            return Ok(rows);
        }
    }
    let mut sink = Sink::new(&mut *out, spec);
    let rows = wh.query(sql, &mut DeclaredFirst { inner: &mut sink, declared: &spec.declared })?;
    sink.finish()?;
    Ok(rows)
}

/// Hands the declared types to a sink as soon as the column names are known.
struct DeclaredFirst<'a, S: RowSink> {
    inner: &'a mut S,
    declared: &'a BTreeMap<String, ColumnType>,
}

impl<S: RowSink> RowSink for DeclaredFirst<'_, S> {
    fn columns(&mut self, names: &[String]) -> Result<()> {
        self.inner.columns(names)?;
        if !self.declared.is_empty() {
            let types: Vec<Option<ColumnType>> = names.iter().map(|n| self.declared.get(n).copied()).collect();
            self.inner.types(&types);
        }
        Ok(())
    }

    fn types(&mut self, types: &[Option<ColumnType>]) {
        self.inner.types(types)
    }

    fn row(&mut self, vals: &[Val]) -> Result<()> {
        self.inner.row(vals)
    }
}

/// Runs `sql` and writes its rows to `dest` (a path under `base`,
/// `file:///…` or `s3://…`) atomically. Returns rows and bytes.
pub fn export_query(
    wh: &mut dyn Warehouse,
    sql: &str,
    dest: &str,
    base: &Path,
    shown: &str,
    spec: &ExportSpec,
) -> Result<(u64, u64)> {
    let mut out = output::create(dest, base, shown)?;
    match write_rows(wh, sql, spec, &mut out) {
        Ok(rows) => Ok((rows, out.commit()?)),
        Err(e) => {
            out.abort();
            Err(e)
        }
    }
}

/// The column types the project declares for the models and seeds named
/// (in `models/*.toml`: a model's columns, with or without a full contract;
/// a seed's columns), by column name. A name declared with different types
/// by two of them is left out.
pub fn declared_types(project: &crate::project::Project, names: &[String]) -> BTreeMap<String, ColumnType> {
    let mut out = BTreeMap::new();
    let mut clash = BTreeSet::new();
    for name in names {
        let cols: Vec<(String, ColumnType)> = match (project.meta.model(name), project.meta.seed(name)) {
            (Some(m), _) => {
                m.columns.iter().filter_map(|c| c.column.as_ref().map(|c| (c.name.clone(), c.ty))).collect()
            }
            (None, Some(s)) => {
                s.columns.iter().flat_map(|s| s.columns.iter().map(|c| (c.name.clone(), c.ty))).collect()
            }
            (None, None) => Vec::new(),
        };
        for (col, ty) in cols {
            match out.insert(col.clone(), ty) {
                Some(old) if old != ty => {
                    clash.insert(col);
                }
                _ => {}
            }
        }
    }
    out.retain(|k, _| !clash.contains(k));
    out
}

pub fn run(ctx: &RunCtx, cfg: &ExportStep) -> Result<StepOutput> {
    let mut wh = ctx.warehouse(cfg.connection.as_ref().map(|c| c.v.as_str()))?;
    let mut refs = Vec::new();
    let (sql, what) = match &cfg.what {
        ExportWhat::Table(t) => {
            refs.push(t.v.clone());
            (format!("SELECT * FROM {}", wh.relation(&t.v)), t.v.clone())
        }
        ExportWhat::Query(q) => {
            let renderer =
                crate::plan::renderer(ctx.project).map_err(|(f, e)| Error::user(format!("{f}: {}", e.message)))?;
            let resolve = WarehouseResolve::new(ctx.project, &ctx.plan.models, wh.naming(), ctx.run_vars());
            let resolve = std::sync::Arc::new(resolve);
            let call =
                template::Call { resolve, this: String::new(), is_incremental: false, config: Default::default() };
            let r = renderer.render("query", &q.v, &call).map_err(|e| {
                Error::user(format!("{}: in `query`: {}", ctx.project.sources.position(&q.loc), e.message))
            })?;
            refs = r.refs;
            (r.sql, "query".to_string())
        }
    };
    let shown = if output::is_remote(&cfg.path.v) {
        crate::secret::redact_url(&cfg.path.v)
    } else {
        ctx.project.show_path(cfg.path.v.strip_prefix("file://").unwrap_or(&cfg.path.v))
    };
    let mut declared = BTreeMap::new();
    if let ExportWhat::Table(t) = &cfg.what
        && let Some(schema) = wh.table_schema(&t.v)?
    {
        for c in schema.columns {
            declared.insert(c.name, c.ty);
        }
    }
    declared.extend(declared_types(ctx.project, &refs));
    let spec = ExportSpec {
        format: cfg.format,
        header: cfg.header,
        null: cfg.null.clone().unwrap_or_else(|| ExportSpec::default_null(cfg.quoting).to_string()),
        quoting: cfg.quoting,
        parquet: ParquetOptions { compression: cfg.compression, row_group_size: cfg.row_group_size },
        declared,
    };
    let (rows, bytes) = export_query(wh.as_mut(), &sql, &cfg.path.v, &ctx.project.dir, &shown, &spec)?;
    Ok(StepOutput {
        summary: format!("wrote {} of {what} to {shown} ({})", count(rows, "row"), human_bytes(bytes)),
        rows: Some(rows),
        bytes: Some(bytes),
        details: json!({ "path": shown, "rows": rows, "bytes": bytes, "format": cfg.format.name() }),
        datasets: Vec::new(),
        objects: Some(1),
    })
}
