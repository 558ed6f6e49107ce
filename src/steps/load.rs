//! `load`: streams delimited files into a warehouse table in one transaction.
//!
//! A parser thread reads each input, checks every value against its declared
//! type and hands typed row batches over a bounded channel to the warehouse's
//! bulk path on the calling thread; memory stays bounded whatever the file
//! size. Bad rows carry file, line, column, value and reason. With the `fail`
//! policy nothing is published when any row is bad; the objects loaded are
//! recorded in the same transaction, so a raw object is never loaded twice.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use serde_json::json;

use super::{Meter, RunCtx, StepOutput, count, human_bytes};
use crate::error::{BadRows, Error, Result, RowError, printable_bytes};
use crate::formats::csv::{CsvReader, Next};
use crate::project::{CsvOptions, LoadMode, LoadStep, PipelineConfig, SchemaSource, StepKind};
use crate::storage::raw;
use crate::types::{NullRule, RowBatch, Schema, parse_value};
use crate::warehouse::{LoadRecord, LoadTarget, Warehouse};

/// What to do with rows that do not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Publish nothing and report the first bad rows.
    Fail,
    /// Load the good rows, up to `max_errors` bad ones.
    Skip,
}

/// How many bad rows a `fail` report lists.
pub const REPORTED_ERRORS: usize = 10;
const BATCH_ROWS: usize = 4096;
const BATCH_TEXT: usize = 1 << 20;

/// A load of one table.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub table: String,
    pub schema: Schema,
    pub mode: LoadMode,
    pub csv: CsvOptions,
    pub on_error: OnError,
    pub max_errors: Option<u64>,
}

/// One input file of a load.
pub struct Input {
    /// The file as named in row errors.
    pub label: String,
    /// What `_sluice_loads` records for it.
    pub record: Option<LoadRecord>,
    pub size: Option<u64>,
    pub open: Box<dyn FnOnce() -> Result<Box<dyn Read + Send>> + Send>,
}

/// What a load did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub read: u64,
    pub loaded: u64,
    pub rejected: u64,
    pub bytes: u64,
    pub first_errors: Vec<RowError>,
}

/// Loads every input into the table in one transaction.
pub fn load(wh: &mut dyn Warehouse, spec: &LoadSpec, inputs: Vec<Input>, meter: &Arc<dyn Meter>) -> Result<LoadReport> {
    let target = LoadTarget { table: &spec.table, schema: &spec.schema, mode: spec.mode };
    let mut tx = wh.begin_load(&target)?;
    let mut report = LoadReport::default();
    let mut records = Vec::new();
    for input in inputs {
        if let Some(r) = &input.record {
            records.push(r.clone());
        }
        meter.message(&input.label);
        let (batches_tx, batches_rx) = sync_channel::<RowBatch>(3);
        let (spare_tx, spare_rx) = sync_channel::<RowBatch>(4);
        let stop = Arc::new(AtomicBool::new(false));
        let parser = {
            let spec = spec.clone();
            let stop = stop.clone();
            let meter = meter.clone();
            let base = (report.read, report.bytes);
            let Input { label, open, .. } = input;
            std::thread::Builder::new()
                .name("sluice-parse".into())
                .spawn(move || parse_input(&spec, &label, open, batches_tx, spare_rx, &stop, meter.as_ref(), base))
                .map_err(|e| Error::internal(format!("cannot start a parser thread: {e}")))?
        };
        let mut write_err = None;
        for batch in batches_rx.iter() {
            if write_err.is_none()
                && let Err(e) = tx.write(&batch)
            {
                write_err = Some(e);
                stop.store(true, Ordering::Relaxed);
            }
            let _ = spare_tx.try_send(batch);
        }
        drop(spare_tx);
        let parsed = parser.join().map_err(|_| Error::internal("the parser thread panicked"))?;
        if let Some(e) = write_err {
            tx.rollback()?;
            return Err(e);
        }
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                tx.rollback()?;
                return Err(e);
            }
        };
        report.read += parsed.read;
        report.loaded += parsed.read - parsed.rejected;
        report.rejected += parsed.rejected;
        report.bytes += parsed.bytes;
        for e in parsed.errors {
            if report.first_errors.len() < REPORTED_ERRORS {
                report.first_errors.push(e);
            }
        }
        if spec.on_error == OnError::Fail && report.rejected > 0 {
            // Keep counting the other inputs' bad rows? No: the load has failed.
            break;
        }
    }
    let too_many = match spec.on_error {
        OnError::Fail => report.rejected > 0,
        OnError::Skip => spec.max_errors.is_some_and(|m| report.rejected > m),
    };
    if too_many {
        tx.rollback()?;
        let mut outcome = format!("nothing was loaded; table `{}` is unchanged", spec.table);
        if let (OnError::Skip, Some(m)) = (spec.on_error, spec.max_errors) {
            outcome = format!("more than max_errors = {m}; {outcome}");
        }
        return Err(Error::Data(Box::new(BadRows { first: report.first_errors, total: report.rejected, outcome })));
    }
    tx.commit(&records)?;
    Ok(report)
}

struct Parsed {
    read: u64,
    rejected: u64,
    bytes: u64,
    errors: Vec<RowError>,
}

/// Reads one input and sends its good rows as batches. Runs on its own thread.
#[allow(clippy::too_many_arguments)]
fn parse_input(
    spec: &LoadSpec,
    label: &str,
    open: Box<dyn FnOnce() -> Result<Box<dyn Read + Send>> + Send>,
    out: SyncSender<RowBatch>,
    spare: Receiver<RowBatch>,
    stop: &AtomicBool,
    meter: &dyn Meter,
    base: (u64, u64),
) -> Result<Parsed> {
    let src = open()?;
    let mut reader = CsvReader::new(src, spec.csv.delimiter, spec.csv.quote);
    let cols = &spec.schema.columns;
    let nulls = NullRule { marker: spec.csv.null.as_ref().map(|s| s.as_bytes().to_vec()) };
    let io_err = |e: std::io::Error| Error::external(format!("cannot read {label}: {e}"), true);

    // Map the header to the declared columns.
    let (mapping, header): (Vec<usize>, Vec<String>) = if spec.csv.header {
        match reader.next_record().map_err(io_err)? {
            Next::End => return Ok(Parsed { read: 0, rejected: 0, bytes: 0, errors: Vec::new() }),
            Next::Bad(b) => {
                return Err(Error::DataMsg(format!("{label}:{}: the header row cannot be read: {}", b.line, b.reason)));
            }
            Next::Record(r) => {
                let mut names = Vec::with_capacity(r.len());
                for f in r.iter() {
                    match std::str::from_utf8(f) {
                        Ok(s) => names.push(s.trim().to_string()),
                        Err(_) => {
                            return Err(Error::DataMsg(format!(
                                "{label}:1: the header has a column name that is not valid UTF-8: {}",
                                printable_bytes(f)
                            )));
                        }
                    }
                }
                (map_header(label, &spec.table, &names, &spec.schema)?, names)
            }
        }
    } else {
        ((0..cols.len()).collect(), cols.iter().map(|c| c.name.clone()).collect())
    };
    let width = header.len();
    reader.set_expected_fields(width);

    let mut batch = RowBatch::new(cols.len());
    let mut read = 0u64;
    let mut rejected = 0u64;
    let mut errors: Vec<RowError> = Vec::new();
    let mut sending = true;
    let record_error = |e: RowError, rejected: &mut u64, errors: &mut Vec<RowError>| {
        *rejected += 1;
        if errors.len() < REPORTED_ERRORS {
            errors.push(e);
        }
        if spec.on_error == OnError::Fail {
            stop.store(true, Ordering::Relaxed);
        }
    };
    loop {
        match reader.next_record().map_err(io_err)? {
            Next::End => break,
            Next::Bad(b) => {
                read += 1;
                let column = header.get(b.field).cloned();
                record_error(
                    RowError {
                        file: label.to_string(),
                        line: b.line,
                        column,
                        value: Some(printable_bytes(&b.value)),
                        reason: b.reason,
                    },
                    &mut rejected,
                    &mut errors,
                );
            }
            Next::Record(rec) => {
                read += 1;
                if rec.len() != width {
                    let reason = if rec.len() < width {
                        format!(
                            "has {} fields, expected {width} (no value for {})",
                            rec.len(),
                            header[rec.len()..].iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", ")
                        )
                    } else {
                        format!("has {} fields, expected {width}", rec.len())
                    };
                    let line = rec.line;
                    record_error(
                        RowError { file: label.to_string(), line, column: None, value: None, reason },
                        &mut rejected,
                        &mut errors,
                    );
                    continue;
                }
                let mut bad = None;
                for (j, col) in cols.iter().enumerate() {
                    let k = mapping[j];
                    match parse_value(col, rec.field(k), rec.quoted(k), &nulls) {
                        Ok(v) => batch.push_cell(&v),
                        Err(reason) => {
                            bad = Some(RowError {
                                file: label.to_string(),
                                line: rec.line,
                                column: Some(col.name.clone()),
                                value: Some(printable_bytes(rec.field(k))),
                                reason,
                            });
                            break;
                        }
                    }
                }
                match bad {
                    Some(e) => {
                        batch.discard_partial_row();
                        record_error(e, &mut rejected, &mut errors);
                    }
                    None => batch.finish_row(rec.line),
                }
            }
        }
        if batch.len() >= BATCH_ROWS || batch.text_bytes() >= BATCH_TEXT {
            sending = sending && !stop.load(Ordering::Relaxed);
            let next = spare.try_recv().unwrap_or_else(|_| RowBatch::new(cols.len()));
            let full = std::mem::replace(&mut batch, next);
            if sending && out.send(full).is_err() {
                sending = false;
            }
            batch.clear();
            meter.update(base.1 + reader.position(), base.0 + read);
        }
    }
    sending = sending && !stop.load(Ordering::Relaxed);
    if sending && !batch.is_empty() {
        let _ = out.send(batch);
    }
    meter.update(base.1 + reader.position(), base.0 + read);
    Ok(Parsed { read, rejected, bytes: reader.position(), errors })
}

/// For each declared column, its field in the file; every declared column must
/// be in the header and every header column declared.
fn map_header(label: &str, table: &str, names: &[String], schema: &Schema) -> Result<Vec<usize>> {
    let mut seen = BTreeSet::new();
    for n in names {
        if !seen.insert(n.as_str()) {
            return Err(Error::DataMsg(format!("{label}:1: the header names column `{n}` twice")));
        }
    }
    let mut mapping = Vec::with_capacity(schema.columns.len());
    let mut missing = Vec::new();
    for c in &schema.columns {
        match names.iter().position(|n| *n == c.name) {
            Some(i) => mapping.push(i),
            None => missing.push(c.name.as_str()),
        }
    }
    let declared = schema.names();
    let extra: Vec<&str> = names.iter().map(String::as_str).filter(|n| !declared.contains(n)).collect();
    if missing.is_empty() && extra.is_empty() {
        return Ok(mapping);
    }
    let list = |v: &[&str]| v.iter().map(|x| format!("`{x}`")).collect::<Vec<_>>().join(", ");
    let mut msg = format!("{label}:1: the header does not match the columns declared for `{table}`");
    if !missing.is_empty() {
        let s = if missing.len() == 1 { "" } else { "s" };
        msg.push_str(&format!("; missing column{s} {}", list(&missing)));
        for m in &missing {
            if let Some(n) = names.iter().find(|n| n.eq_ignore_ascii_case(m)) {
                msg.push_str(&format!(" (the file has `{n}`, which differs only in case)"));
            }
        }
    }
    if !extra.is_empty() {
        let s = if extra.len() == 1 { "" } else { "s" };
        msg.push_str(&format!("; undeclared column{s} {}", list(&extra)));
    }
    msg.push_str(&format!("\n  expected: {}\n  found:    {}", declared.join(", "), names.join(", ")));
    Err(Error::DataMsg(msg))
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

/// The schema a load uses: declared inline, in a schema file, or the table's own.
pub fn resolve_schema(ctx: &RunCtx, wh: &mut dyn Warehouse, cfg: &LoadStep) -> Result<Schema> {
    match &cfg.schema {
        SchemaSource::Inline(s) => Ok(s.v.clone()),
        SchemaSource::File(f) => crate::plan::load_schema_file(ctx.project, &f.v),
        SchemaSource::Table => wh.table_schema(&cfg.table.v)?.ok_or_else(|| {
            Error::user(format!(
                "table `{}` does not exist and the step declares no columns: add [steps.columns] or `schema = \"FILE\"` (`sluice infer DATA.csv` prints one)",
                cfg.table.v
            ))
        }),
    }
}

pub fn run(ctx: &RunCtx, pl: &PipelineConfig, cfg: &LoadStep) -> Result<StepOutput> {
    let dataset = dataset_of(pl, cfg)?;
    let mut wh = ctx.warehouse(cfg.connection.as_ref().map(|c| c.v.as_str()))?;
    let schema = resolve_schema(ctx, wh.as_mut(), cfg)?;
    let manifests = raw::manifests(ctx.store.as_ref(), &dataset)?;
    let table = &cfg.table.v;
    if manifests.is_empty() {
        return Ok(StepOutput {
            summary: format!("nothing to load: no file has landed for dataset `{dataset}` yet"),
            rows: Some(0),
            ..Default::default()
        });
    }
    let done = wh.loaded_objects(table)?;
    let pending: Vec<raw::ManifestFile> = match cfg.mode {
        LoadMode::Replace => {
            let newest = manifests.last().expect("not empty");
            if newest.files.iter().all(|f| done.contains(&f.key)) { Vec::new() } else { newest.files.clone() }
        }
        LoadMode::Append => {
            manifests.iter().flat_map(|m| m.files.iter()).filter(|f| !done.contains(&f.key)).cloned().collect()
        }
    };
    if pending.is_empty() {
        return Ok(StepOutput {
            summary: format!("nothing new to load into {table}: every landed file of `{dataset}` is loaded"),
            rows: Some(0),
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
                label: f.source.clone(),
                record: Some(LoadRecord {
                    object: f.key.clone(),
                    sha256: f.sha256.clone(),
                    rows: f.rows,
                    run_id: ctx.run_id.clone(),
                }),
                size: Some(f.bytes),
                open: Box::new(move || {
                    store.get(&key)?.ok_or_else(|| {
                        Error::external(format!("raw object {key} is missing from {}", store.describe()), false)
                    })
                }),
            }
        })
        .collect();
    let spec = LoadSpec {
        table: table.clone(),
        schema,
        mode: cfg.mode,
        csv: cfg.csv.clone(),
        on_error: OnError::Fail,
        max_errors: None,
    };
    let objects: Vec<&str> = pending.iter().map(|f| f.key.as_str()).collect();
    let report = load(wh.as_mut(), &spec, inputs, &meter)?;
    let n = pending.len();
    Ok(StepOutput {
        summary: format!(
            "loaded {} into {table} from {} ({})",
            count(report.loaded, "row"),
            count(n as u64, "file"),
            human_bytes(report.bytes)
        ),
        rows: Some(report.loaded),
        bytes: Some(report.bytes),
        details: json!({ "table": table, "objects": objects, "read": report.read, "loaded": report.loaded, "rejected": report.rejected }),
    })
}
