//! The parser thread of a load: reads one input (CSV/TSV or JSON), checks every
//! value against its column's type, and sends typed row batches (with the rows
//! it rejected) to the writer. It allocates nothing per field for good rows.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};

use super::Opener;
use crate::error::{Error, Result, RowError, printable_bytes};
use crate::formats::csv::{CsvReader, Next};
use crate::formats::json::{Field, JsonNext, JsonReader, Layout, field, members};
use crate::project::{FileFormat, ReadOptions};
use crate::steps::Meter;
use crate::types::{Column, ColumnType, NullRule, RowBatch, parse_value};

const BATCH_ROWS: usize = 4096;
const BATCH_TEXT: usize = 1 << 20;
const BATCH_REJECTS: usize = 1024;

/// One input to parse.
pub struct Job {
    /// The input as named in row errors.
    pub label: String,
    /// The file or object name (its extension picks the format).
    pub name: String,
    pub open: Opener,
    /// The input's local file, when it is one.
    pub path: Option<std::path::PathBuf>,
    /// The columns each row carries, in order.
    pub columns: Vec<Column>,
    pub read: ReadOptions,
    /// Fields the columns do not name are ignored (not an error).
    pub allow_extra: bool,
    /// Nullable columns the input lacks load as NULL (not an error).
    pub allow_missing: bool,
    /// Columns (indexes into `columns`) that may not be NULL (a merge key).
    pub key: Vec<usize>,
    pub table: String,
    /// Significant digits the warehouse stores a decimal exactly to, and its
    /// name (SQLite: 15); a value beyond is a bad row, never rounded.
    pub exact_decimal: Option<(u32, &'static str)>,
}

/// Checks a parsed value against what the warehouse stores exactly.
fn fits(v: &crate::types::Val, limit: Option<(u32, &'static str)>) -> Result<(), String> {
    let (crate::types::Val::Dec(s), Some((max, warehouse))) = (v, limit) else { return Ok(()) };
    let (_, int, frac) = crate::types::value::decimal_parts(s);
    let frac = frac.trim_end_matches('0');
    let int = int.trim_start_matches('0');
    let digits = if frac.is_empty() {
        // A whole number is stored as a 64-bit integer when it fits one.
        if int.len() < 19 || s.parse::<i64>().is_ok() {
            return Ok(());
        }
        int.len()
    } else if int.is_empty() {
        frac.trim_start_matches('0').len()
    } else {
        int.len() + frac.len()
    };
    if digits as u32 > max {
        return Err(format!(
            "has {digits} significant digits; {warehouse} stores decimals exactly only to {max} (values are never rounded: keep such a column as text, or load it into PostgreSQL or MariaDB)"
        ));
    }
    Ok(())
}

/// Counts of one input.
#[derive(Debug, Clone, Copy, Default)]
pub struct Parsed {
    pub read: u64,
    pub rejected: u64,
    pub bytes: u64,
}

/// Where parsed rows go.
pub struct Sink<'a> {
    pub out: SyncSender<RowBatch>,
    pub spare: Receiver<RowBatch>,
    /// Set by the writer when rows are no longer wanted (only rejects are).
    pub stop: &'a AtomicBool,
    pub meter: &'a dyn Meter,
    /// Rows and bytes of earlier inputs, for the meter.
    pub base: (u64, u64),
}

struct State<'a> {
    sink: Sink<'a>,
    batch: RowBatch,
    width: usize,
    read: u64,
    rejected: u64,
    sending: bool,
}

impl State<'_> {
    fn reject(&mut self, e: RowError) {
        self.rejected += 1;
        self.batch.rejects.push(e);
    }

    /// Sends the batch when it is full enough (or `force`).
    fn flush(&mut self, force: bool, position: u64) {
        let full = self.batch.len() >= BATCH_ROWS
            || self.batch.text_bytes() >= BATCH_TEXT
            || self.batch.rejects.len() >= BATCH_REJECTS;
        if !(force || full) {
            return;
        }
        if self.batch.is_empty() && self.batch.rejects.is_empty() {
            return;
        }
        let next = self.sink.spare.try_recv().unwrap_or_else(|_| RowBatch::new(self.width));
        let mut full = std::mem::replace(&mut self.batch, next);
        self.batch.clear();
        if self.sink.stop.load(Ordering::Relaxed) {
            // Rows are no longer wanted; keep the rejects (they are counted).
            full.discard_rows();
        }
        if self.sending && self.sink.out.send(full).is_err() {
            self.sending = false;
        }
        self.sink.meter.update(self.sink.base.1 + position, self.sink.base.0 + self.read);
    }
}

fn reason_for_key(col: &Column) -> String {
    format!("is missing; `{}` is a merge key and cannot be NULL", col.name)
}

/// Parses one input. Runs on its own thread.
pub fn run(mut job: Job, sink: Sink<'_>) -> Result<Parsed> {
    let open = std::mem::replace(&mut job.open, Box::new(|| Err(Error::internal("an input was opened twice"))));
    let width = job.columns.len();
    let mut st = State { sink, batch: RowBatch::new(width), width, read: 0, rejected: 0, sending: true };
    if job.read.format_of(&job.name) == FileFormat::Parquet {
        let file = parquet_file(&job.label, job.path.as_deref(), open)?;
        let bytes = parse_parquet(&job, file, &mut st)?;
        return Ok(Parsed { read: st.read, rejected: st.rejected, bytes });
    }
    let mut src = open()?;
    if let Some(pages) = &job.read.pages {
        // An API page: its records, flattened, as NDJSON.
        let nd = crate::formats::pages::to_ndjson(src, &job.label, pages).map_err(Error::DataMsg)?;
        src = Box::new(std::io::Cursor::new(nd));
    }
    let src = crate::formats::encoding::decode(job.read.encoding, src);
    let bytes = match job.read.format_of(&job.name) {
        FileFormat::Csv => parse_csv(&job, src, &mut st)?,
        FileFormat::Json => parse_json(&job, src, &mut st)?,
        FileFormat::Parquet => unreachable!("Parquet is read above"),
    };
    Ok(Parsed { read: st.read, rejected: st.rejected, bytes })
}

fn nulls(read: &ReadOptions) -> NullRule {
    NullRule { marker: read.null.as_ref().map(|s| s.as_bytes().to_vec()) }
}

fn parse_csv(job: &Job, src: Box<dyn Read + Send + '_>, st: &mut State) -> Result<u64> {
    let label = job.label.as_str();
    let mut reader = CsvReader::new(src, job.read.delimiter_of(&job.name), job.read.quote);
    let io_err = |e: std::io::Error| Error::external(format!("cannot read {label}: {e}"), true);
    let nulls = nulls(&job.read);
    let (mapping, header): (Vec<Option<usize>>, Vec<String>) = if job.read.header {
        match reader.next_record().map_err(io_err)? {
            Next::End => return Ok(0),
            Next::Bad(b) => {
                return Err(Error::DataMsg(format!("{label}:{}: the header row cannot be read: {}", b.line, b.reason)));
            }
            Next::Record(r, _) => {
                let names = header_names(label, r.iter())?;
                (map_header(job, &names)?, names)
            }
        }
    } else {
        ((0..job.columns.len()).map(Some).collect(), job.columns.iter().map(|c| c.name.clone()).collect())
    };
    let width = header.len();
    reader.set_expected_fields(width);
    loop {
        let position = reader.position();
        match reader.next_record().map_err(io_err)? {
            Next::End => break,
            Next::Bad(b) => {
                st.read += 1;
                st.reject(RowError {
                    file: label.to_string(),
                    line: b.line,
                    column: header.get(b.field).cloned(),
                    value: Some(printable_bytes(&b.value)),
                    reason: b.reason,
                    record: Some(printable_bytes(&b.raw)),
                });
            }
            Next::Record(rec, raw) => {
                st.read += 1;
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
                    let e = RowError {
                        file: label.to_string(),
                        line: rec.line,
                        column: None,
                        value: None,
                        reason,
                        record: Some(printable_bytes(raw)),
                    };
                    st.reject(e);
                    continue;
                }
                let mut bad = None;
                for (j, col) in job.columns.iter().enumerate() {
                    let (v, quoted) = match mapping[j] {
                        Some(k) => (rec.field(k), rec.quoted(k)),
                        None => (&b""[..], false),
                    };
                    match parse_value(col, v, quoted, &nulls) {
                        Ok(crate::types::Val::Null) if job.key.contains(&j) => {
                            bad = Some((j, v, reason_for_key(col)));
                            break;
                        }
                        Ok(val) => match fits(&val, job.exact_decimal) {
                            Ok(()) => st.batch.push_cell(&val),
                            Err(reason) => {
                                bad = Some((j, v, reason));
                                break;
                            }
                        },
                        Err(reason) => {
                            bad = Some((j, v, reason));
                            break;
                        }
                    }
                }
                match bad {
                    Some((j, v, reason)) => {
                        st.batch.discard_partial_row();
                        let e = RowError {
                            file: label.to_string(),
                            line: rec.line,
                            column: Some(job.columns[j].name.clone()),
                            value: Some(printable_bytes(v)),
                            reason,
                            record: Some(printable_bytes(raw)),
                        };
                        st.reject(e);
                    }
                    None => st.batch.finish_row(rec.line),
                }
            }
        }
        st.flush(false, position);
    }
    let end = reader.position();
    st.flush(true, end);
    Ok(end)
}

fn header_names<'a>(label: &str, fields: impl Iterator<Item = &'a [u8]>) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for f in fields {
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
    if let Some(i) = names.iter().position(String::is_empty) {
        return Err(Error::DataMsg(format!(
            "{label}:1: field {} of the header has no name; every column needs one (the header is: {})",
            i + 1,
            names.join(",")
        )));
    }
    for (i, n) in names.iter().enumerate() {
        if let Some(j) = names[..i].iter().position(|m| m == n) {
            return Err(Error::DataMsg(format!(
                "{label}:1: the header names column `{n}` twice (fields {} and {}); column names must be unique",
                j + 1,
                i + 1
            )));
        }
    }
    Ok(names)
}

/// A Parquet input as a seekable file: the local file, or the stream
/// copied to a temporary file.
fn parquet_file(label: &str, path: Option<&std::path::Path>, open: Opener) -> Result<std::fs::File> {
    if let Some(p) = path {
        return std::fs::File::open(p).map_err(|e| Error::io("open", p, e));
    }
    crate::formats::parquet::spill(open()?)
        .map_err(|e| Error::external(format!("cannot read {label} (copying it to a temporary file): {e}"), true))
}

/// Loads a Parquet file: each value goes through the same parsers as a CSV
/// field, and a bad one is reported with its row number (1-based) and column.
fn parse_parquet(job: &Job, file: std::fs::File, st: &mut State) -> Result<u64> {
    use crate::formats::parquet::{ParquetRows, cell_text, column_type_of};
    let label = job.label.as_str();
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut rows = ParquetRows::open(file).map_err(|e| Error::DataMsg(format!("{label}: {e}")))?;
    let names: Vec<String> = rows.fields.iter().map(|(n, _)| n.clone()).collect();
    let mapping = map_header(job, &names)?;
    for (j, m) in mapping.iter().enumerate() {
        if let Some(k) = m
            && column_type_of(&rows.fields[*k].1).is_none()
        {
            return Err(Error::DataMsg(format!(
                "{label}: column `{}` has the Parquet/Arrow type {}, which Sluice cannot load (yet); leave it out of the columns declared for `{}`",
                job.columns[j].name, rows.fields[*k].1, job.table
            )));
        }
    }
    let total = rows.rows.max(1);
    let plain = NullRule::default();
    let mut buf = Vec::with_capacity(256);
    let mut row_no = 0u64;
    while let Some(batch) = rows.next_batch().map_err(|e| Error::DataMsg(format!("{label}: {e}")))? {
        for i in 0..batch.num_rows() {
            row_no += 1;
            st.read += 1;
            let mut bad = None;
            for (j, col) in job.columns.iter().enumerate() {
                buf.clear();
                let parsed = match mapping[j] {
                    None => parse_value(col, b"", false, &plain),
                    Some(k) => match cell_text(batch.column(k).as_ref(), i, &mut buf) {
                        Ok(false) => parse_value(col, b"", false, &plain),
                        Ok(true) => parse_value(col, &buf, true, &plain),
                        Err(reason) => Err(reason),
                    },
                };
                match parsed {
                    Ok(crate::types::Val::Null) if job.key.contains(&j) => {
                        bad = Some((j, reason_for_key(col)));
                        break;
                    }
                    Ok(v) => match fits(&v, job.exact_decimal) {
                        Ok(()) => st.batch.push_cell(&v),
                        Err(reason) => {
                            bad = Some((j, reason));
                            break;
                        }
                    },
                    Err(reason) => {
                        bad = Some((j, reason));
                        break;
                    }
                }
            }
            match bad {
                Some((j, reason)) => {
                    st.batch.discard_partial_row();
                    st.reject(RowError {
                        file: label.to_string(),
                        line: row_no,
                        column: Some(job.columns[j].name.clone()),
                        value: Some(printable_bytes(&buf)),
                        reason,
                        record: None,
                    });
                }
                None => st.batch.finish_row(row_no),
            }
            st.flush(false, bytes * row_no / total);
        }
    }
    st.flush(true, bytes);
    Ok(bytes)
}

/// Reads just the column names of an input (for planning): a CSV header,
/// a Parquet file's columns; `None` for JSON and header-less files.
pub fn peek_header(input: &super::Input, read: &ReadOptions) -> Result<Option<Vec<String>>> {
    let (label, name) = (input.label.as_str(), input.name.as_str());
    if read.format_of(name) == FileFormat::Parquet {
        let file = parquet_file(label, input.path.as_deref(), input.opener())?;
        let rows =
            crate::formats::parquet::ParquetRows::open(file).map_err(|e| Error::DataMsg(format!("{label}: {e}")))?;
        return Ok(Some(rows.fields.iter().map(|(n, _)| n.clone()).collect()));
    }
    if read.format_of(name) != FileFormat::Csv || !read.header {
        return Ok(None);
    }
    let open = input.opener();
    let src = crate::formats::encoding::decode(read.encoding, open()?);
    let mut reader = CsvReader::new(src, read.delimiter_of(name), read.quote);
    match reader.next_record().map_err(|e| Error::external(format!("cannot read {label}: {e}"), true))? {
        Next::End => Ok(None),
        Next::Bad(b) => Err(Error::DataMsg(format!("{label}:{}: the header row cannot be read: {}", b.line, b.reason))),
        Next::Record(r, _) => Ok(Some(header_names(label, r.iter())?)),
    }
}

/// For each column, its field in the header; checks the header against the
/// columns under the job's policy.
fn map_header(job: &Job, names: &[String]) -> Result<Vec<Option<usize>>> {
    let label = &job.label;
    let mut seen = std::collections::BTreeSet::new();
    for n in names {
        if !seen.insert(n.as_str()) {
            return Err(Error::DataMsg(format!("{label}:1: the header names column `{n}` twice")));
        }
    }
    let mut mapping = Vec::with_capacity(job.columns.len());
    let mut missing = Vec::new();
    for c in &job.columns {
        match names.iter().position(|n| *n == c.name) {
            Some(i) => mapping.push(Some(i)),
            None => {
                if !(job.allow_missing && c.nullable) {
                    missing.push(c.name.as_str());
                }
                mapping.push(None);
            }
        }
    }
    let declared: Vec<&str> = job.columns.iter().map(|c| c.name.as_str()).collect();
    let extra: Vec<&str> = if job.allow_extra {
        Vec::new()
    } else {
        names.iter().map(String::as_str).filter(|n| !declared.contains(n)).collect()
    };
    if missing.is_empty() && extra.is_empty() {
        return Ok(mapping);
    }
    Err(Error::DataMsg(header_mismatch(label, &job.table, &missing, &extra, &declared, names)))
}

/// The message for a header that does not match the columns.
pub fn header_mismatch(
    label: &str,
    table: &str,
    missing: &[&str],
    extra: &[&str],
    declared: &[&str],
    names: &[String],
) -> String {
    let list = |v: &[&str]| v.iter().map(|x| format!("`{x}`")).collect::<Vec<_>>().join(", ");
    let mut msg = format!("{label}:1: the header does not match the columns declared for `{table}`");
    if !missing.is_empty() {
        let s = if missing.len() == 1 { "" } else { "s" };
        msg.push_str(&format!("; missing column{s} {}", list(missing)));
        for m in missing {
            if let Some(n) = names.iter().find(|n| n.eq_ignore_ascii_case(m)) {
                msg.push_str(&format!(" (the file has `{n}`, which differs only in case)"));
            }
        }
    }
    if !extra.is_empty() {
        let s = if extra.len() == 1 { "" } else { "s" };
        msg.push_str(&format!("; undeclared column{s} {}", list(extra)));
    }
    msg.push_str(&format!("\n  expected: {}\n  found:    {}", declared.join(", "), names.join(", ")));
    msg
}

fn parse_json(job: &Job, src: Box<dyn Read + Send + '_>, st: &mut State) -> Result<u64> {
    let label = job.label.as_str();
    let mut reader = JsonReader::new(src, Layout::Auto);
    let nulls = nulls(&job.read);
    let mut slots: Vec<Option<usize>> = vec![None; job.columns.len()];
    loop {
        let position = reader.position();
        match reader.next_record().map_err(|e| Error::external(format!("cannot read {label}: {e}"), true))? {
            JsonNext::End => break,
            JsonNext::Bad { line, reason, raw } => {
                st.read += 1;
                st.reject(RowError {
                    file: label.to_string(),
                    line,
                    column: None,
                    value: None,
                    reason,
                    record: Some(printable_bytes(&raw)),
                });
            }
            JsonNext::Record { line, bytes } => {
                st.read += 1;
                let rec_err = |column: Option<String>, value: Option<String>, reason: String| RowError {
                    file: label.to_string(),
                    line,
                    column,
                    value,
                    reason,
                    record: Some(printable_bytes(&bytes[..bytes.len().min(2000)])),
                };
                let m = match members(bytes) {
                    Ok(m) => m,
                    Err(reason) => {
                        st.reject(rec_err(None, None, reason));
                        continue;
                    }
                };
                slots.iter_mut().for_each(|s| *s = None);
                let mut bad = None;
                for (i, (k, _)) in m.iter().enumerate() {
                    match job.columns.iter().position(|c| c.name == *k) {
                        Some(j) => slots[j] = Some(i),
                        None if job.allow_extra => {}
                        None => {
                            bad = Some(rec_err(
                                Some(k.to_string()),
                                None,
                                format!("is a key that is not a column of `{}`", job.table),
                            ));
                            break;
                        }
                    }
                }
                if bad.is_none() {
                    for (j, col) in job.columns.iter().enumerate() {
                        let f = match slots[j] {
                            None => Ok(Field::Null),
                            Some(i) => field(m[i].1),
                        };
                        let parsed = match &f {
                            Err(reason) => Err((None, reason.clone())),
                            Ok(Field::Null) => {
                                parse_value(col, b"", false, &nulls).map_err(|r| (Some(String::new()), r))
                            }
                            Ok(Field::Text(t, q)) => {
                                parse_value(col, t.as_bytes(), *q, &nulls).map_err(|r| (Some(t.to_string()), r))
                            }
                            Ok(Field::Nested(t)) => {
                                if col.ty == ColumnType::Json {
                                    Ok(crate::types::Val::Json(t))
                                } else if col.ty.is_text() {
                                    // An object or array keeps its JSON text in a text column.
                                    parse_value(col, t.as_bytes(), true, &nulls).map_err(|r| (Some(t.to_string()), r))
                                } else {
                                    let what = if t.starts_with('[') { "an array" } else { "an object" };
                                    Err((Some(t.to_string()), format!("is {what}, not a {} value", col.ty)))
                                }
                            }
                        };
                        match parsed {
                            Ok(crate::types::Val::Null) if job.key.contains(&j) => {
                                bad = Some(rec_err(Some(col.name.clone()), Some(String::new()), reason_for_key(col)));
                                break;
                            }
                            Ok(v) if fits(&v, job.exact_decimal).is_ok() => st.batch.push_cell(&v),
                            Ok(v) => {
                                let reason = fits(&v, job.exact_decimal).expect_err("checked just above");
                                let value = match &v {
                                    crate::types::Val::Dec(s) => Some(s.to_string()),
                                    _ => None,
                                };
                                bad = Some(rec_err(Some(col.name.clone()), value, reason));
                                break;
                            }
                            Err((value, reason)) => {
                                bad = Some(rec_err(Some(col.name.clone()), value, reason));
                                break;
                            }
                        }
                    }
                }
                match bad {
                    Some(e) => {
                        st.batch.discard_partial_row();
                        st.reject(e);
                    }
                    None => st.batch.finish_row(line),
                }
            }
        }
        st.flush(false, position);
    }
    let end = reader.position();
    st.flush(true, end);
    Ok(end)
}
