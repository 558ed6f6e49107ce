//! `export`: writes a table or a query's rows to a TSV or CSV file with a
//! header row. The file is written under a temporary name in the same folder
//! and renamed when complete, so a reader never sees half a file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::models::WarehouseResolve;
use super::{RunCtx, StepOutput, count, human_bytes};
use crate::error::{Error, Result};
use crate::formats::csv::CsvWriter;
use crate::project::{ExportFormat, ExportStep, ExportWhat};
use crate::template;
use crate::types::{ColumnType, Val};
use crate::warehouse::{RowSink, Warehouse, format_declared};

/// Where and how rows are written.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    pub format: ExportFormat,
    pub header: bool,
    pub null: String,
    /// Column types the project declares for the exported columns, by name:
    /// a `decimal(p, s)` column is written with `s` decimals on every
    /// backend, whatever type the database computed or stored.
    pub declared: BTreeMap<String, ColumnType>,
}

/// Writes rows to a delimited file as they arrive.
pub struct DelimitedSink<W: Write> {
    w: CsvWriter<W>,
    spec: ExportSpec,
    /// The declared type of each column of the result.
    types: Vec<Option<ColumnType>>,
    buf: Vec<u8>,
    pub rows: u64,
}

impl<W: Write> DelimitedSink<W> {
    pub fn new(out: W, spec: ExportSpec) -> Self {
        let delim = match spec.format {
            ExportFormat::Tsv => b'\t',
            ExportFormat::Csv => b',',
        };
        DelimitedSink { w: CsvWriter::new(out, delim), spec, types: Vec::new(), buf: Vec::with_capacity(256), rows: 0 }
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
                Val::Text(s) if s.is_empty() || *s == self.spec.null => self.w.quoted(s.as_bytes()),
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

/// Runs `sql` and writes its rows to `path` atomically. Returns rows and bytes.
pub fn export_query(
    wh: &mut dyn Warehouse,
    sql: &str,
    path: &Path,
    shown: &str,
    spec: &ExportSpec,
) -> Result<(u64, u64)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create the output folder", &dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "export".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::now_v7().simple()));
    let file = File::create(&tmp).map_err(|e| Error::io(&format!("create {shown} (as a temporary file)"), &dir, e))?;
    let mut sink = DelimitedSink::new(BufWriter::with_capacity(1 << 20, file), spec.clone());
    let res = wh.query(sql, &mut sink).and_then(|rows| {
        let file = sink.into_inner().into_inner().map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| Error::io("publish", path, e))?;
        Ok((rows, bytes))
    });
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
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
            let call = template::Call { resolve, this: String::new(), is_incremental: false };
            let r = renderer.render("query", &q.v, &call).map_err(|e| {
                Error::user(format!("{}: in `query`: {}", ctx.project.sources.position(&q.loc), e.message))
            })?;
            refs = r.refs;
            (r.sql, "query".to_string())
        }
    };
    let path = ctx.project.path(&cfg.path.v);
    let shown = ctx.project.show_path(&cfg.path.v);
    let spec = ExportSpec {
        format: cfg.format,
        header: cfg.header,
        null: cfg.null.clone(),
        declared: declared_types(ctx.project, &refs),
    };
    let (rows, bytes) = export_query(wh.as_mut(), &sql, &path, &shown, &spec)?;
    Ok(StepOutput {
        summary: format!("wrote {} of {what} to {shown} ({})", count(rows, "row"), human_bytes(bytes)),
        rows: Some(rows),
        bytes: Some(bytes),
        details: json!({ "path": shown, "rows": rows, "bytes": bytes }),
    })
}
