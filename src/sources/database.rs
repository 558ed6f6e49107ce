//! A table or a query of a named connection (PostgreSQL, MariaDB/MySQL,
//! SQLite; Oracle with the `oracle` feature), landed raw as one CSV object
//! with a header. The rows stream: the query runs on its own thread (its own
//! connection) and writes into a bounded pipe that landing reads, so no
//! result is ever held whole in memory. PostgreSQL writes the CSV itself
//! (`COPY (…) TO STDOUT (FORMAT csv, HEADER)`); the others are formatted
//! here from the streamed rows.
//!
//! With a `cursor` column the source is incremental: each run first reads
//! the column's current maximum (the new high-water mark), then lands the
//! rows above the previous landing's mark up to it, in cursor order. The
//! mark travels in the landing's manifest, so it is committed together with
//! the rows it covers: a run killed before its manifest leaves the old mark,
//! and the next run lands the same rows again (its half-written object was
//! never published); a finished run is never repeated. Values are bound as
//! parameters (MariaDB, SQLite) or written as escaped literals where the
//! statement cannot take parameters (PostgreSQL's COPY, Oracle).
//!
//! This module must not load anything: loads read the landed CSV.

use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use super::{Object, Source};
use crate::error::{Error, Result};
use crate::formats::csv::CsvWriter;
use crate::project::{DatabaseSource, ExportWhat};
use crate::steps::RunCtx;
use crate::storage::raw::{Manifest, RowCount};
use crate::types::{Column, ColumnType, Val};
use crate::warehouse::{Backend, Param, RowSink, Warehouse, format_val};

/// Bytes per message of the pipe, and messages it holds: at most ~4 MiB in flight.
const CHUNK: usize = 256 * 1024;
const CHUNKS_IN_FLIGHT: usize = 16;

pub struct DbSource {
    /// The query still to run (taken by `next`).
    pending: Option<Pending>,
    column: Option<String>,
    /// The high-water mark this landing reaches (the previous one when
    /// nothing is new).
    high_water: Option<String>,
}

struct Pending {
    wh: Box<dyn Warehouse>,
    sql: String,
    params: Vec<Param>,
    name: String,
    shown: String,
}

impl DbSource {
    pub fn open(ctx: &RunCtx, spec: &DatabaseSource, previous: Option<&Manifest>) -> Result<Self> {
        let conn = spec.connection.v.as_str();
        let mut wh = ctx.warehouse(Some(conn))?;
        let backend = wh.backend();
        let (base, name, shown) = match &spec.what {
            ExportWhat::Table(t) => {
                if !t.v.contains('.') && wh.table_schema(&t.v)?.is_none() {
                    return Err(Error::user(format!(
                        "table `{}` not found on connection `{conn}` ({})",
                        t.v,
                        wh.describe()
                    )));
                }
                let rel: Vec<String> = t.v.split('.').map(|p| wh.quote(p)).collect();
                (
                    format!("SELECT * FROM {}", rel.join(".")),
                    format!("{}.csv", file_name(&t.v)),
                    format!("{conn}.{}", t.v),
                )
            }
            ExportWhat::Query(q) => (
                format!("SELECT * FROM (\n{}\n) sluice_src", q.v.trim().trim_end_matches(';')),
                "query.csv".to_string(),
                format!("a query of {conn}"),
            ),
        };
        let columns = wh
            .query_columns(&base)
            .map_err(|e| e.context(format!("connection `{conn}`: read the columns of {shown}")))?;
        let Some(cursor) = &spec.cursor else {
            return Ok(DbSource {
                pending: Some(Pending { wh, sql: base, params: Vec::new(), name, shown }),
                column: None,
                high_water: None,
            });
        };
        let col = find_column(&columns, &cursor.v).ok_or_else(|| {
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            Error::user(format!(
                "cursor column `{}` is not a column of {shown}; its columns: {}",
                cursor.v,
                names.join(", ")
            ))
        })?;
        let c = wh.quote(&col.name);
        let ty = col.ty;
        // The previous landing's mark, when it was kept for this column.
        let low: Option<String> = previous
            .and_then(|m| m.cursor.as_ref())
            .filter(|c| c.get("column").and_then(|v| v.as_str()) == Some(col.name.as_str()))
            .and_then(|c| c.get("high_water").and_then(|v| v.as_str()).map(str::to_string));
        let mut params = Vec::new();
        let mut conds = Vec::new();
        if let Some(lo) = &low {
            conds.push(format!("{c} > {}", value(backend, lo, ty, &mut params)));
        }
        let filter = |conds: &[String]| {
            if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) }
        };
        let max_sql = format!("SELECT MAX({c}) FROM ({base}) sluice_m{}", filter(&conds));
        let mut max = MaxSink(None);
        run(wh.as_mut(), &max_sql, &params, &mut max)
            .map_err(|e| e.context(format!("connection `{conn}`: read the cursor of {shown}")))?;
        let Some(high) = max.0 else {
            // Nothing above the mark: nothing to land, and the mark stays.
            return Ok(DbSource { pending: None, column: Some(col.name.clone()), high_water: low });
        };
        conds.push(format!("{c} <= {}", value(backend, &high, ty, &mut params)));
        let sql = format!("SELECT * FROM ({base}) sluice_src{} ORDER BY {c}", filter(&conds));
        Ok(DbSource {
            pending: Some(Pending { wh, sql, params, name, shown }),
            column: Some(col.name.clone()),
            high_water: Some(high),
        })
    }
}

impl Source for DbSource {
    fn next(&mut self) -> Result<Option<Object>> {
        let Some(Pending { mut wh, sql, params, name, shown }) = self.pending.take() else { return Ok(None) };
        let (tx, rx) = sync_channel(CHUNKS_IN_FLIGHT);
        let done = tx.clone();
        let thread = std::thread::Builder::new().name("sluice-db-source".into()).spawn(move || {
            let mut out = PipeWriter { tx, buf: Vec::with_capacity(CHUNK) };
            let res = stream(wh.as_mut(), &sql, &params, &mut out).and_then(|()| out.send());
            drop(out);
            let _ = done.send(match res {
                Ok(()) => Msg::End,
                Err(e) => Msg::Failed(format!("{e:#}")),
            });
        });
        thread.map_err(|e| Error::internal(format!("cannot start the query thread: {e}")))?;
        Ok(Some(Object {
            name,
            shown,
            size: None,
            count: RowCount::Csv { delimiter: b',', quote: b'"', header: true },
            reader: Box::new(PipeReader { rx, chunk: Vec::new(), at: 0, ended: false }),
        }))
    }

    fn complete(&self) -> bool {
        self.column.is_none()
    }

    fn cursor(&self) -> Option<serde_json::Value> {
        let column = self.column.as_ref()?;
        Some(serde_json::json!({ "column": column, "high_water": self.high_water }))
    }
}

/// The object's name for a table (`shop.orders` → `orders`).
fn file_name(table: &str) -> String {
    let last = table.rsplit('.').next().unwrap_or(table);
    let clean: String =
        last.chars().map(|c| if c.is_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    if clean.is_empty() { "table".into() } else { clean }
}

/// The column a cursor names: exactly, else the only one equal ignoring case.
fn find_column<'c>(columns: &'c [Column], name: &str) -> Option<&'c Column> {
    columns.iter().find(|c| c.name == name).or_else(|| {
        let mut same = columns.iter().filter(|c| c.name.eq_ignore_ascii_case(name));
        match (same.next(), same.next()) {
            (Some(c), None) => Some(c),
            _ => None,
        }
    })
}

/// A cursor value in SQL compared with a column of type `ty`: a bound
/// parameter where the statement takes them, else an escaped literal.
fn value(backend: Backend, v: &str, ty: ColumnType, params: &mut Vec<Param>) -> String {
    use ColumnType as T;
    match backend {
        // COPY takes no parameters. An E'' literal means the same whatever
        // `standard_conforming_strings` says; the server types it as the column.
        Backend::Postgres => format!("E'{}'", v.replace('\\', "\\\\").replace('\'', "''")),
        Backend::Oracle => format!("'{}'", v.replace('\'', "''")),
        Backend::Mysql => {
            params.push(Param { text: v.to_string(), ty });
            match ty {
                T::SmallInt | T::Integer | T::BigInt => "CAST(? AS SIGNED)",
                T::Decimal(_) => "CAST(? AS DECIMAL(65,30))",
                T::Float => "CAST(? AS DOUBLE)",
                T::Date => "CAST(? AS DATE)",
                T::Timestamp | T::TimestampTz => "CAST(? AS DATETIME(6))",
                _ => "?",
            }
            .to_string()
        }
        Backend::Sqlite => {
            params.push(Param { text: v.to_string(), ty });
            let i = params.len();
            match ty {
                T::SmallInt | T::Integer | T::BigInt => format!("CAST(?{i} AS INTEGER)"),
                T::Decimal(_) | T::Float => format!("CAST(?{i} AS REAL)"),
                _ => format!("?{i}"),
            }
        }
    }
}

/// Runs a query with its parameters (if any) into `sink`.
fn run(wh: &mut dyn Warehouse, sql: &str, params: &[Param], sink: &mut dyn RowSink) -> Result<u64> {
    if params.is_empty() { wh.query(sql, sink) } else { wh.query_bound(sql, params, sink) }
}

/// Streams the rows of `sql` to `out` as CSV with a header.
fn stream(wh: &mut dyn Warehouse, sql: &str, params: &[Param], out: &mut dyn Write) -> Result<()> {
    if params.is_empty() && wh.copy_csv_out(sql, out)? {
        return Ok(());
    }
    let mut sink = CsvRows { w: CsvWriter::new(out, b','), buf: Vec::with_capacity(256) };
    run(wh, sql, params, &mut sink)?;
    Ok(())
}

/// The first value of the first row, as text (NULL: `None`).
struct MaxSink(Option<String>);

impl RowSink for MaxSink {
    fn columns(&mut self, _names: &[String]) -> Result<()> {
        Ok(())
    }
    fn row(&mut self, vals: &[Val]) -> Result<()> {
        if let Some(v) = vals.first()
            && !matches!(v, Val::Null)
        {
            let mut b = Vec::new();
            format_val(&mut b, v);
            self.0 = Some(String::from_utf8_lossy(&b).into_owned());
        }
        Ok(())
    }
}

/// Rows as CSV the way the loader reads them back: NULL is an empty unquoted
/// field, an empty text `""`.
struct CsvRows<W: Write> {
    w: CsvWriter<W>,
    buf: Vec<u8>,
}

fn pass_err(e: std::io::Error) -> Error {
    Error::external(format!("cannot pass on query results: {e}"), false)
}

impl<W: Write> RowSink for CsvRows<W> {
    fn columns(&mut self, names: &[String]) -> Result<()> {
        for n in names {
            self.w.field(n.as_bytes()).map_err(pass_err)?;
        }
        self.w.end_record().map_err(pass_err)
    }

    fn row(&mut self, vals: &[Val]) -> Result<()> {
        for v in vals {
            match v {
                Val::Null => self.w.raw(b""),
                Val::Text("") => self.w.quoted(b""),
                v => {
                    self.buf.clear();
                    format_val(&mut self.buf, v);
                    self.w.field(&self.buf)
                }
            }
            .map_err(pass_err)?;
        }
        self.w.end_record().map_err(pass_err)
    }
}

enum Msg {
    Data(Vec<u8>),
    /// Every row was sent.
    End,
    /// The query failed (the error, shown in full).
    Failed(String),
}

/// The query thread's end of the pipe: bytes gathered into chunks.
struct PipeWriter {
    tx: SyncSender<Msg>,
    buf: Vec<u8>,
}

impl PipeWriter {
    fn send(&mut self) -> Result<()> {
        self.flush().map_err(pass_err)
    }
}

impl Write for PipeWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(Msg::Data(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the landing stopped reading"))
    }
}

/// Landing's end of the pipe. It ends only when the query thread says every
/// row was sent; a failed (or vanished) query is a read error, so a partial
/// result is never landed.
struct PipeReader {
    rx: Receiver<Msg>,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            let msg = match self.rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty) => self.rx.recv().map_err(|_| vanished())?,
                Err(TryRecvError::Disconnected) => return Err(vanished()),
            };
            match msg {
                Msg::Data(c) => {
                    self.chunk = c;
                    self.at = 0;
                }
                Msg::End => self.ended = true,
                Msg::Failed(e) => return Err(std::io::Error::other(e)),
            }
        }
        let n = out.len().min(self.chunk.len() - self.at);
        out[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn vanished() -> std::io::Error {
    std::io::Error::other("the query stopped without finishing (its thread ended)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_escaped_for_each_backend() {
        let mut p = Vec::new();
        assert_eq!(value(Backend::Postgres, r"a'b\c", ColumnType::Text, &mut p), r"E'a''b\\c'");
        assert_eq!(value(Backend::Oracle, "a'b", ColumnType::Text, &mut p), "'a''b'");
        assert!(p.is_empty());
        assert_eq!(value(Backend::Mysql, "7", ColumnType::BigInt, &mut p), "CAST(? AS SIGNED)");
        assert_eq!(value(Backend::Sqlite, "7", ColumnType::BigInt, &mut p), "CAST(?2 AS INTEGER)");
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn a_failed_query_is_a_read_error_not_an_end() {
        let (tx, rx) = sync_channel(4);
        tx.send(Msg::Data(b"id\n1\n".to_vec())).unwrap();
        tx.send(Msg::Failed("server closed the connection".into())).unwrap();
        let mut r = PipeReader { rx, chunk: Vec::new(), at: 0, ended: false };
        let mut s = String::new();
        let e = r.read_to_string(&mut s).unwrap_err();
        assert!(e.to_string().contains("server closed"), "{e}");

        let (tx, rx) = sync_channel(4);
        tx.send(Msg::Data(b"id\n".to_vec())).unwrap();
        drop(tx);
        let mut r = PipeReader { rx, chunk: Vec::new(), at: 0, ended: false };
        assert!(r.read_to_string(&mut String::new()).is_err());
    }

    #[test]
    fn table_names_become_object_names() {
        assert_eq!(file_name("shop.orders"), "orders");
        assert_eq!(file_name("weird name"), "weird_name");
    }
}
