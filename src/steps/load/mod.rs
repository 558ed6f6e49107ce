//! `load`: streams CSV/TSV or JSON files into a warehouse table in one
//! transaction.
//!
//! Planning first: the source's columns (declared, the table's own, or
//! inferred), compared with the table under the `schema_change` policy. Then a
//! parser thread per input checks every value against its type and hands typed
//! row batches over a bounded channel to the warehouse's bulk path on the
//! calling thread, so memory stays bounded whatever the file size. Bad rows
//! carry file, line, column, value and reason; `on_error` decides whether the
//! load fails (nothing published), skips them, or quarantines them. The
//! objects loaded are recorded in the same transaction, so a raw object is
//! never loaded twice.

pub mod drift;
pub mod parse;

use std::collections::BTreeSet;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;

use serde_json::json;

use super::{DatasetKind, DatasetUpdate, Meter, RunCtx, StepOutput, count, human_bytes};
use crate::error::{BadRows, Error, Result, RowError};
use crate::formats::csv::CsvWriter;
use crate::project::{LoadMode, LoadStep, OnError, PipelineConfig, ReadOptions, SchemaChange, SchemaSource, StepKind};
use crate::storage::raw;
use crate::types::{Column, RowBatch, Schema};
use crate::warehouse::{Change, LoadRecord, LoadTarget, Warehouse};

/// How many bad rows a report lists.
pub const REPORTED_ERRORS: usize = 10;

/// Opens an input once more (inputs are read to plan, to sample and to load).
pub type Opener = Box<dyn FnOnce() -> Result<Box<dyn Read + Send>> + Send>;
/// Opens an input as many times as needed.
pub type Reopen = Arc<dyn Fn() -> Result<Box<dyn Read + Send>> + Send + Sync>;

/// A load of one table.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub table: String,
    /// The declared columns; `None` uses the table's own (or infers them).
    pub schema: Option<Schema>,
    pub mode: LoadMode,
    pub key: Vec<String>,
    pub read: ReadOptions,
    pub on_error: OnError,
    pub max_errors: Option<u64>,
    pub schema_change: SchemaChange,
    /// Create the table when it does not exist.
    pub create: bool,
    /// Where `quarantine` writes rejected rows.
    pub rejects_path: Option<PathBuf>,
    pub run_id: String,
    /// What `_sluice_loads` records when the load commits (pipeline loads:
    /// the raw objects, and for `replace` the landing).
    pub records: Vec<LoadRecord>,
    /// Checked between batches and before the commit.
    pub cancel: crate::steps::Cancel,
}

/// One input file of a load.
#[derive(Clone)]
pub struct Input {
    /// The file as named in row errors.
    pub label: String,
    /// Its file or object name (the extension picks the format).
    pub name: String,
    pub size: Option<u64>,
    pub open: Reopen,
    /// The input's local file, when it is one (Parquet reads it in place
    /// instead of copying the stream to a temporary file).
    pub path: Option<PathBuf>,
}

impl Input {
    /// A local file.
    pub fn file(path: &Path, label: &str) -> Input {
        let p = path.to_path_buf();
        Input {
            label: label.to_string(),
            name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            size: std::fs::metadata(path).ok().map(|m| m.len()),
            path: Some(path.to_path_buf()),
            open: Arc::new(move || {
                let f = std::fs::File::open(&p).map_err(|e| Error::io("open", &p, e))?;
                Ok(Box::new(f) as Box<dyn Read + Send>)
            }),
        }
    }

    pub fn opener(&self) -> Opener {
        let o = self.open.clone();
        Box::new(move || o())
    }
}

/// What a load did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub read: u64,
    pub loaded: u64,
    pub rejected: u64,
    pub bytes: u64,
    pub first_errors: Vec<RowError>,
    /// Changes made to the table (`schema_change = "add_columns"`).
    pub changes: Vec<Change>,
    /// Whether the table was created.
    pub created: bool,
    /// The quarantine file written.
    pub rejects_file: Option<PathBuf>,
    /// The schema used (after inference, if any).
    pub schema: Schema,
    /// Another load of the same objects committed first (two runs at once):
    /// this one was rolled back and loaded nothing.
    pub loaded_concurrently: bool,
}

/// Loads every input into the table in one transaction.
pub fn load(wh: &mut dyn Warehouse, spec: &LoadSpec, inputs: &[Input], meter: &Arc<dyn Meter>) -> Result<LoadReport> {
    let table = spec.table.as_str();
    crate::warehouse::check_table_name(table)?;
    let Some(first) = inputs.first() else { return Ok(LoadReport::default()) };
    let existing = wh.table_schema(table)?;
    if existing.is_none() && !spec.create {
        return Err(Error::user(format!(
            "table `{table}` does not exist in {}; pass --create to create it from the schema",
            wh.describe()
        )));
    }
    let header = parse::peek_header(first, &spec.read)?;
    let needs_inference = (spec.schema.is_none() && (existing.is_none() || spec.mode == LoadMode::Replace))
        || spec.schema_change == SchemaChange::AddColumns;
    let inferred = if needs_inference {
        let src = match (&first.path, spec.read.format_of(&first.name)) {
            (Some(p), crate::project::FileFormat::Parquet) => {
                Box::new(std::fs::File::open(p).map_err(|e| Error::io("open", p, e))?) as Box<dyn Read + Send>
            }
            _ => (first.open)()?,
        };
        let (s, _) = crate::formats::infer::infer(src, &first.name, &spec.read, crate::formats::infer::DEFAULT_SAMPLE)
            .map_err(Error::DataMsg)?;
        Some(s)
    } else {
        None
    };
    let base_existing = if spec.mode == LoadMode::Replace { None } else { existing.as_ref() };
    let source = source_columns(spec, base_existing, header.as_deref(), inferred.as_ref(), &first.label)?;
    let plan = drift::plan(table, &source, existing.as_ref(), spec.mode, spec.schema_change)?;
    let key: Vec<usize> = spec
        .key
        .iter()
        .map(|k| {
            plan.write.iter().position(|c| c.name == *k).ok_or_else(|| {
                Error::user(format!("merge key `{k}` is not a column of the source (columns: {})", names(&plan.write)))
            })
        })
        .collect::<Result<_>>()?;
    let target = LoadTarget {
        table,
        columns: &plan.write,
        schema: &plan.table,
        mode: spec.mode,
        key: &spec.key,
        changes: &plan.changes,
        run_id: &spec.run_id,
        quarantine: spec.on_error == OnError::Quarantine,
        track_loads: !spec.records.is_empty(),
    };
    let mut report = LoadReport {
        changes: plan.changes.clone(),
        created: existing.is_none(),
        schema: plan.table.clone(),
        ..Default::default()
    };
    let mut rejects = match (spec.on_error, &spec.rejects_path) {
        (OnError::Quarantine, Some(p)) => Some(RejectsFile::create(p)?),
        _ => None,
    };
    let exact_decimal = wh.exact_decimal_digits();
    let mut tx = wh.begin_load(&target)?;
    let allow_missing = spec.schema_change != SchemaChange::Fail;
    let allow_extra = spec.schema_change != SchemaChange::Fail;
    for input in inputs {
        meter.message(&input.label);
        let (batches_tx, batches_rx) = sync_channel::<RowBatch>(3);
        let (spare_tx, spare_rx) = sync_channel::<RowBatch>(4);
        let stop = Arc::new(AtomicBool::new(spec.on_error == OnError::Fail && report.rejected > 0));
        let job = parse::Job {
            label: input.label.clone(),
            name: input.name.clone(),
            open: input.opener(),
            path: input.path.clone(),
            columns: plan.write.clone(),
            read: spec.read.clone(),
            allow_extra,
            allow_missing,
            key: key.clone(),
            table: table.to_string(),
            exact_decimal,
        };
        let parser = {
            let stop = stop.clone();
            let meter = meter.clone();
            let base = (report.read, report.bytes);
            std::thread::Builder::new()
                .name("sluice-parse".into())
                .spawn(move || {
                    let sink =
                        parse::Sink { out: batches_tx, spare: spare_rx, stop: &stop, meter: meter.as_ref(), base };
                    parse::run(job, sink)
                })
                .map_err(|e| Error::internal(format!("cannot start a parser thread: {e}")))?
        };
        let mut failure: Option<Error> = None;
        for batch in batches_rx.iter() {
            if failure.is_none()
                && let Err(e) = spec.cancel.check()
            {
                failure = Some(e);
                stop.store(true, Ordering::Relaxed);
            }
            if failure.is_none() && !batch.rejects.is_empty() {
                report.rejected += batch.rejects.len() as u64;
                for e in &batch.rejects {
                    if report.first_errors.len() < REPORTED_ERRORS {
                        report.first_errors.push(e.clone());
                    }
                }
                if let Some(f) = rejects.as_mut()
                    && let Err(e) = f.write(&batch.rejects)
                {
                    failure = Some(e);
                }
                match spec.on_error {
                    OnError::Fail => stop.store(true, Ordering::Relaxed),
                    OnError::Quarantine => {
                        if let Err(e) = tx.write_rejects(&batch.rejects) {
                            failure = Some(e);
                        }
                    }
                    OnError::Skip => {}
                }
                if spec.max_errors.is_some_and(|m| report.rejected > m) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            if failure.is_none()
                && !batch.is_empty()
                && !stop.load(Ordering::Relaxed)
                && let Err(e) = tx.write(&batch)
            {
                failure = Some(e);
            }
            if failure.is_some() {
                stop.store(true, Ordering::Relaxed);
            }
            let _ = spare_tx.try_send(batch);
        }
        drop(spare_tx);
        let parsed = parser.join().map_err(|_| Error::internal("the parser thread panicked"))?;
        let parsed = match (failure, parsed) {
            (Some(e), _) | (None, Err(e)) => {
                tx.rollback()?;
                if let Some(f) = rejects {
                    report.rejects_file = f.finish().ok();
                }
                return Err(e);
            }
            (None, Ok(p)) => p,
        };
        if let Err(e) = tx.end_input(&input.label) {
            tx.rollback()?;
            return Err(e);
        }
        report.read += parsed.read;
        report.bytes += parsed.bytes;
    }
    report.loaded = report.read - report.rejected;
    let too_many = match spec.on_error {
        OnError::Fail => report.rejected > 0,
        OnError::Skip | OnError::Quarantine => spec.max_errors.is_some_and(|m| report.rejected > m),
    };
    let rejects_file = match rejects {
        Some(f) => Some(f.finish()?),
        None => None,
    };
    if too_many {
        tx.rollback()?;
        let mut outcome = format!("nothing was loaded; table `{table}` is unchanged");
        if spec.on_error != OnError::Fail {
            outcome = format!("more than max_errors = {}; {outcome}", spec.max_errors.unwrap_or(0));
        }
        if let Some(p) = &rejects_file {
            outcome.push_str(&format!("; rejected rows are in {}", p.display()));
        }
        return Err(Error::Data(Box::new(BadRows { first: report.first_errors, total: report.rejected, outcome })));
    }
    if let Err(e) = spec.cancel.check() {
        tx.rollback()?;
        return Err(e);
    }
    if let Err(e) = tx.commit(&spec.records) {
        // Two loads of the same objects at once (on a warehouse whose loads
        // cannot take turns): the record of what was loaded is unique, so the
        // second commit fails and rolls back. If every object is now loaded,
        // it was loaded exactly once: not an error.
        if !spec.records.is_empty()
            && let Ok(done) = wh.loaded_objects(table)
            && spec.records.iter().all(|r| done.contains(&r.object))
        {
            return Ok(LoadReport { loaded_concurrently: true, loaded: 0, rejected: 0, ..report });
        }
        return Err(e);
    }
    report.rejects_file = rejects_file;
    Ok(report)
}

fn names(cols: &[Column]) -> String {
    cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// The columns the source brings, with their types: the declared schema (or
/// the table's, or the inferred one) matched against the file's header.
fn source_columns(
    spec: &LoadSpec,
    existing: Option<&Schema>,
    header: Option<&[String]>,
    inferred: Option<&Schema>,
    label: &str,
) -> Result<Vec<Column>> {
    let base: &Schema = match (&spec.schema, existing, inferred) {
        (Some(s), _, _) => s,
        (None, Some(t), _) => t,
        (None, None, Some(i)) => i,
        (None, None, None) => {
            return Err(Error::user(format!(
                "no schema for table `{}`: declare the columns, pass --schema FILE, or load into an existing table",
                spec.table
            )));
        }
    };
    let Some(header) = header else { return Ok(base.columns.clone()) };
    let mut out = Vec::new();
    let mut extra = Vec::new();
    for h in header {
        match base.columns.iter().find(|c| c.name == *h) {
            Some(c) => out.push(c.clone()),
            None => match spec.schema_change {
                SchemaChange::AddColumns => {
                    let ty = inferred.and_then(|i| i.columns.iter().find(|c| c.name == *h)).map(|c| c.ty);
                    out.push(Column::new(h, ty.unwrap_or(crate::types::ColumnType::Text)));
                }
                SchemaChange::IgnoreExtra => {}
                SchemaChange::Fail => extra.push(h.as_str()),
            },
        }
    }
    let missing: Vec<&str> = base
        .columns
        .iter()
        .filter(|c| !header.contains(&c.name))
        .filter(|c| spec.schema_change == SchemaChange::Fail || !c.nullable)
        .map(|c| c.name.as_str())
        .collect();
    if !extra.is_empty() || !missing.is_empty() {
        let declared: Vec<&str> = base.columns.iter().map(|c| c.name.as_str()).collect();
        return Err(Error::DataMsg(parse::header_mismatch(label, &spec.table, &missing, &extra, &declared, header)));
    }
    Ok(out)
}

/// The quarantine file: a TSV of rejected rows, written under a temporary
/// name and renamed when the load ends.
struct RejectsFile {
    path: PathBuf,
    tmp: PathBuf,
    w: CsvWriter<BufWriter<std::fs::File>>,
}

impl RejectsFile {
    fn create(path: &Path) -> Result<RejectsFile> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create the rejects folder", &dir, e))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "rejects.tsv".into());
        let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::now_v7().simple()));
        let f = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let mut w = CsvWriter::new(BufWriter::new(f), b'\t');
        for h in ["line", "column", "value", "error", "record", "file"] {
            w.field(h.as_bytes()).map_err(|e| Error::io("write", &tmp, e))?;
        }
        w.end_record().map_err(|e| Error::io("write", &tmp, e))?;
        Ok(RejectsFile { path: path.to_path_buf(), tmp, w })
    }

    fn write(&mut self, rows: &[RowError]) -> Result<()> {
        let tmp = self.tmp.clone();
        let io = |e| Error::io("write", &tmp, e);
        for r in rows {
            self.w.field(r.line.to_string().as_bytes()).map_err(io)?;
            self.w.field(r.column.as_deref().unwrap_or("").as_bytes()).map_err(io)?;
            self.w.field(r.value.as_deref().unwrap_or("").as_bytes()).map_err(io)?;
            self.w.field(r.reason.as_bytes()).map_err(io)?;
            self.w.field(r.record.as_deref().unwrap_or("").as_bytes()).map_err(io)?;
            self.w.field(r.file.as_bytes()).map_err(io)?;
            self.w.end_record().map_err(io)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<PathBuf> {
        let f = self.w.into_inner().into_inner().map_err(|e| Error::io("write", &self.tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io("sync", &self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io("publish", &self.path, e))?;
        Ok(self.path)
    }
}

/// The dataset a load reads: the one its `from` step lands into.
pub fn dataset_of(pl: &PipelineConfig, cfg: &LoadStep) -> Result<String> {
    let from = pl
        .steps
        .iter()
        .find(|s| s.name.v == cfg.from.v)
        .ok_or_else(|| Error::user(format!("no step `{}` in pipeline `{}`", cfg.from.v, pl.name.v)))?;
    match &from.kind {
        StepKind::Ingest(i) => Ok(super::ingest::dataset_of(from, i)),
        other => {
            Err(Error::user(format!("`from` must name an ingest step; `{}` is a {} step", cfg.from.v, other.name())))
        }
    }
}

/// How a load reads what its `from` step landed: the pages of an HTTP
/// source are JSON documents whose records sit at the source's `records` path.
pub fn pages_of(pl: &PipelineConfig, cfg: &LoadStep) -> Option<crate::formats::pages::JsonPages> {
    let from = pl.steps.iter().find(|s| s.name.v == cfg.from.v)?;
    match &from.kind {
        StepKind::Ingest(i) => match &i.source {
            crate::project::SourceSpec::Http(h) => {
                Some(crate::formats::pages::JsonPages { records: h.records.clone(), separator: h.flatten.clone() })
            }
            _ => None,
        },
        _ => None,
    }
}

/// The declared schema of a load step (`None`: the table's own).
pub fn declared_schema(ctx: &RunCtx, cfg: &LoadStep) -> Result<Option<Schema>> {
    match &cfg.schema {
        SchemaSource::Inline(s) => Ok(Some(s.v.clone())),
        SchemaSource::File(f) => crate::plan::load_schema_file(ctx.project, &f.v).map(Some),
        SchemaSource::Table => Ok(None),
    }
}

/// A summary line of a load: rows read, loaded, rejected.
pub fn summary(table: &str, r: &LoadReport, files: usize) -> String {
    let mut s = format!(
        "loaded {} into {table} from {} ({})",
        count(r.loaded, "row"),
        count(files as u64, "file"),
        human_bytes(r.bytes)
    );
    if r.rejected > 0 {
        s.push_str(&format!("; read {}, rejected {}", count(r.read, "row"), count(r.rejected, "row")));
        if let Some(p) = &r.rejects_file {
            s.push_str(&format!(" (in {})", p.display()));
        }
    }
    for c in &r.changes {
        match c {
            Change::Add(col) => s.push_str(&format!("; added column `{}` ({})", col.name, col.ty)),
            Change::Widen { column, to } => s.push_str(&format!("; widened `{column}` to {to}")),
        }
    }
    s
}

/// What a pipeline load reads: the landed files not loaded yet.
#[derive(Debug, Default)]
struct Pending {
    files: Vec<raw::ManifestFile>,
    /// What `_sluice_loads` records for it (the files, and for `replace` the
    /// landing's manifest).
    records: Vec<LoadRecord>,
    /// Files never loaded whose source now holds other bytes.
    superseded: Vec<raw::ManifestFile>,
}

/// Picks what to load. `replace` makes the table the newest landing's content,
/// whatever was loaded before (a source that went back to earlier bytes is a
/// new landing). `append` and `merge` load every landed file not loaded yet,
/// in landing order, once per content; a file that was never loaded and whose
/// source has since landed other bytes is superseded: the source no longer
/// holds it.
fn pending(manifests: &[raw::Manifest], done: &BTreeSet<String>, mode: LoadMode, run_id: &str) -> Pending {
    let record = |object: &str, sha256: &str, rows: u64| LoadRecord {
        object: object.to_string(),
        sha256: sha256.to_string(),
        rows,
        run_id: run_id.to_string(),
    };
    let mut out = Pending::default();
    let mut seen = BTreeSet::new();
    match mode {
        LoadMode::Replace => {
            let Some(newest) = manifests.last() else { return out };
            if done.contains(&newest.key) {
                return out;
            }
            let rows = newest.files.iter().map(|f| f.rows).sum();
            out.records.push(record(&newest.key, "", rows));
            for f in &newest.files {
                if seen.insert(f.key.clone()) {
                    out.records.push(record(&f.key, &f.sha256, f.rows));
                    out.files.push(f.clone());
                }
            }
        }
        LoadMode::Append | LoadMode::Merge => {
            // Only a landing that lists the whole source says what it holds
            // now; a landing of new objects adds to what came before.
            let mut current: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
            for f in manifests.iter().filter(|m| m.complete).flat_map(|m| &m.files) {
                current.insert(&f.source, &f.sha256);
            }
            for (m, f) in manifests.iter().flat_map(|m| m.files.iter().map(move |f| (m, f))) {
                if done.contains(&f.key) || !seen.insert(f.key.clone()) {
                    continue;
                }
                if m.complete && current.get(f.source.as_str()) != Some(&f.sha256.as_str()) {
                    out.superseded.push(f.clone());
                    continue;
                }
                out.records.push(record(&f.key, &f.sha256, f.rows));
                out.files.push(f.clone());
            }
        }
    }
    out
}

pub fn run(ctx: &RunCtx, pl: &PipelineConfig, cfg: &LoadStep) -> Result<StepOutput> {
    let dataset = dataset_of(pl, cfg)?;
    let mut read = cfg.read.clone();
    read.pages = pages_of(pl, cfg);
    let mut wh = ctx.warehouse(cfg.connection.as_ref().map(|c| c.v.as_str()))?;
    let schema = declared_schema(ctx, cfg)?;
    let table = &cfg.table.v;
    // Loads into one table take turns, and what is pending is read only once
    // it is this load's turn: a load that waited skips what the other loaded.
    let waited = if wh.try_lock_loads(table)? {
        None
    } else {
        let meter = ctx.meter(&format!("waiting for another load into {table}"), None);
        meter.message(&format!("waiting for another load into {table}"));
        let start = std::time::Instant::now();
        wh.lock_loads(table)?;
        Some(start.elapsed())
    };
    let waited_note = |s: &mut String| {
        if let Some(w) = waited {
            s.push_str(&format!(" (waited {:.1} s for another load into {table} to finish)", w.as_secs_f64()));
        }
    };
    let manifests = raw::manifests(ctx.store.as_ref(), &dataset)?;
    if manifests.is_empty() {
        return Ok(StepOutput {
            summary: format!("nothing to load: no file has landed for dataset `{dataset}` yet"),
            rows: Some(0),
            ..Default::default()
        });
    }
    let done = wh.loaded_objects(table)?;
    let Pending { files: pending, records, superseded } = pending(&manifests, &done, cfg.mode, &ctx.run_id);
    let superseded_note = |s: &mut String| {
        if !superseded.is_empty() {
            let names: Vec<String> = superseded.iter().map(|f| format!("{} ({})", f.source, f.key)).collect();
            s.push_str(&format!("; not loaded, as their source has since landed other content: {}", names.join(", ")));
        }
    };
    if pending.is_empty() {
        let mut summary = format!("nothing new to load into {table}: every landed file of `{dataset}` is loaded");
        waited_note(&mut summary);
        superseded_note(&mut summary);
        return Ok(StepOutput {
            summary,
            rows: Some(0),
            details: json!({ "table": table, "objects": [], "loaded": 0, "superseded": superseded }),
            ..Default::default()
        });
    }
    let total: u64 = pending.iter().map(|f| f.bytes).sum();
    let meter = ctx.meter(&format!("loading {table}"), Some(total));
    let inputs: Vec<Input> = pending
        .iter()
        .map(|f| {
            let store = ctx.store.clone();
            let key = f.key.clone();
            Input {
                // A page is named by its object (its URL is in the manifest).
                label: if read.pages.is_some() { f.key.clone() } else { f.source.clone() },
                name: if read.pages.is_some() { f.key.clone() } else { f.name.clone() },
                size: Some(f.bytes),
                path: ctx.store.local_path(&f.key),
                open: Arc::new(move || {
                    store.get(&key)?.ok_or_else(|| {
                        Error::external(format!("raw object {key} is missing from {}", store.describe()), false)
                    })
                }),
            }
        })
        .collect();
    let rejects_path = (cfg.on_error == OnError::Quarantine).then(|| match &cfg.rejects {
        Some(r) => ctx.project.path(&r.v),
        None => ctx.project.path(&format!(".sluice/rejects/{table}/{}.tsv", ctx.run_id)),
    });
    let spec = LoadSpec {
        table: table.clone(),
        schema,
        mode: cfg.mode,
        key: cfg.key.clone(),
        read,
        on_error: cfg.on_error,
        max_errors: cfg.max_errors,
        schema_change: cfg.schema_change,
        create: true,
        rejects_path,
        run_id: ctx.run_id.clone(),
        records,
        cancel: ctx.cancel.clone(),
    };
    let objects: Vec<&str> = pending.iter().map(|f| f.key.as_str()).collect();
    let report = load(wh.as_mut(), &spec, &inputs, &meter)?;
    if report.loaded_concurrently {
        return Ok(StepOutput {
            summary: format!("nothing new to load into {table}: a run at the same time loaded the same files"),
            rows: Some(0),
            bytes: None,
            details: json!({ "table": table, "objects": [], "loaded": 0, "loaded_concurrently": objects }),
            ..Default::default()
        });
    }
    let mut summary = summary(table, &report, pending.len());
    waited_note(&mut summary);
    superseded_note(&mut summary);
    Ok(StepOutput {
        summary,
        rows: Some(report.loaded),
        bytes: Some(report.bytes),
        details: json!({
            "table": table,
            "objects": objects,
            "read": report.read,
            "loaded": report.loaded,
            "rejected": report.rejected,
            "rejects_file": report.rejects_file.as_ref().map(|p| p.display().to_string()),
            "first_rejects": report.first_errors.iter().map(|e| json!({
                "file": e.file, "line": e.line, "column": e.column, "value": e.value, "reason": e.reason,
            })).collect::<Vec<_>>(),
            "superseded": superseded,
        }),
        datasets: vec![DatasetUpdate::new(table.clone(), DatasetKind::Table)],
        objects: Some(objects.len() as u64),
    })
}
