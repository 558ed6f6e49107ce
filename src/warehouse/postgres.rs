//! PostgreSQL: loads stream through `COPY … FROM STDIN (FORMAT binary)`,
//! encoded on the client from typed values (the server does no parsing), inside
//! one transaction. Append copies straight into the table; replace fills a new
//! table and swaps it in by rename (views on the old table are recreated on the
//! new one in the same transaction); merge copies into a temporary staging
//! table. Query results stream out through `COPY (query) TO STDOUT`.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::runtime::Handle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, CopyInSink};

use super::{
    Backend, Build, Change, Dialect, ErrorAt, LOADS_TABLE, LoadRecord, LoadTarget, LoadTx, NEW_SUFFIX, Naming,
    REJECTS_TABLE, RowSink, Warehouse, build_table_sql,
};
use crate::error::{DbCode, Error, Result, RowError};
use crate::project::{LoadMode, Materialized};
use crate::secret::{redact_url, url_for_driver, url_params, without_params};
use crate::types::{Cell, Column, ColumnType, RowBatch, Schema, Val};

pub struct Postgres {
    rt: Handle,
    client: Client,
    shown: String,
    /// Where relations are made and looked up (`use_schema` moves it).
    schema: Option<String>,
    /// The URL's schema: where `use_schema(None)` goes back to.
    home: Option<String>,
    /// Schemas this connection made sure exist.
    made: BTreeSet<String>,
    /// Text COPY instead of binary (for comparison in benchmarks).
    text_copy: bool,
    /// Cancels the running statement (a cancel request on a new connection).
    interrupt: std::sync::Arc<dyn super::Interrupt>,
    /// Where the last failed statement's error is, when PostgreSQL says.
    last_at: std::cell::RefCell<Option<ErrorAt>>,
}

/// PostgreSQL's cancel request for one session.
struct PgInterrupt {
    rt: Handle,
    token: tokio_postgres::CancelToken,
    tls: super::tls::PgTls,
}

impl super::Interrupt for PgInterrupt {
    fn interrupt(&self) {
        // Sent from the runtime: the caller may be any thread, even one
        // that runs inside a runtime of its own.
        let (token, tls) = (self.token.clone(), self.tls.clone());
        self.rt.spawn(async move {
            let _ = token.cancel_query(tls).await;
        });
    }
}

/// A table column from the catalog: name, type OID, type modifier, not null.
type PgColumn = (String, u32, i32, bool);

/// Type OIDs the loader encodes.
mod oid {
    pub const BOOL: u32 = 16;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
    pub const JSONB: u32 = 3802;
}

/// Bytes of COPY output handed over at once by `copy_text`.
const COPY_BLOCK: usize = 1 << 20;

/// Microseconds and days between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * 86_400_000_000;

/// Maps a driver error to the crate's error, keeping the SQLSTATE as data
/// (its class decides the kind and whether a retry may help).
pub fn pg_err(e: tokio_postgres::Error, what: &str) -> Error {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code().to_string();
        let mut msg = format!("cannot {what}: {} (SQLSTATE {code})", db.message());
        if let Some(d) = db.detail() {
            msg.push_str(&format!("; {d}"));
        }
        if let Some(h) = db.hint() {
            msg.push_str(&format!("; hint: {h}"));
        }
        if let Some(w) = db.where_() {
            msg.push_str(&format!("; at {w}"));
        }
        return Error::Db { message: msg, code: DbCode::SqlState(code) };
    }
    if e.is_closed() {
        return Error::external(format!("cannot {what}: the connection to PostgreSQL was closed"), true);
    }
    let text = e.to_string();
    let source = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
    let detail = if source.is_empty() || text.contains(&source) { text } else { format!("{text}: {source}") };
    Error::external(format!("cannot {what}: {detail}"), true)
}

/// The driver's configuration from a `postgres://` URL, and its TLS
/// settings: sluice's own parameters (`drop`, `connect_timeout` and the TLS
/// ones) are taken out before the driver reads the URL.
pub fn pg_config(url: &str, shown: &str, drop: &[&str]) -> Result<(tokio_postgres::Config, super::tls::Tls)> {
    let tls = super::tls::Tls::from_url(url, shown)?;
    let mut ours: Vec<&str> = drop.to_vec();
    ours.push(super::CONNECT_TIMEOUT);
    ours.extend_from_slice(super::tls::PARAMS);
    let pg_url = url_for_driver(&without_params(url, &ours));
    let mut config = tokio_postgres::Config::from_str(&pg_url)
        .map_err(|e| Error::user(format!("invalid PostgreSQL URL {shown}: {e}")))?;
    // As libpq: a Unix socket is not encrypted, whatever the mode (the
    // server would refuse TLS there).
    let hosts = config.get_hosts();
    let unix_only = !hosts.is_empty() && hosts.iter().all(|h| !matches!(h, tokio_postgres::config::Host::Tcp(_)));
    config.ssl_mode(if unix_only { tokio_postgres::config::SslMode::Disable } else { tls.pg_mode() });
    Ok((config, tls))
}

/// `pg_err` for a failed connection, saying what TLS did when it is why.
pub fn pg_connect_err(
    e: tokio_postgres::Error,
    tls: &super::tls::Tls,
    config: &tokio_postgres::Config,
    what: &str,
) -> Error {
    let host = config
        .get_hosts()
        .iter()
        .find_map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => Some(h.clone()),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => None,
        })
        .unwrap_or_else(|| "localhost".into());
    if let Some(msg) = tls.explain(&e, &host) {
        return Error::external(format!("cannot {what}: {msg}"), false);
    }
    // tokio-postgres has no error kind for this answer, only its text.
    let source = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
    if e.as_db_error().is_none() && source == "server does not support TLS" {
        return Error::external(format!("cannot {what}: {}", tls.refused()), false);
    }
    pg_err(e, what)
}

/// `CREATE SCHEMA IF NOT EXISTS`, safe when several processes start at once
/// (the check and the create race; the loser's duplicate is not an error).
pub fn create_schema(rt: &Handle, client: &Client, quoted: &str) -> Result<()> {
    match rt.block_on(client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))) {
        Ok(()) => Ok(()),
        Err(e) => match pg_err(e, &format!("create schema {quoted}")) {
            e if e.db_code().is_some_and(|c| c.is_unique_violation() || c.is_duplicate_object()) => Ok(()),
            e => Err(e),
        },
    }
}

impl Postgres {
    /// Connects with a `postgres://` URL. Extra parameters: `schema=NAME` (where
    /// tables live; created if missing), `copy=text` (text COPY),
    /// `connect_timeout=SECONDS` (the longest the connection and its
    /// handshake may take, default 10), and TLS's `sslmode` and
    /// `sslrootcert` (see `tls`).
    pub fn connect(url: &str) -> Result<Postgres> {
        let shown = redact_url(url);
        let mut schema = None;
        let mut text_copy = false;
        for (k, v) in url_params(url) {
            match k {
                "schema" => schema = Some(v.to_string()),
                "copy" => text_copy = v == "text",
                _ => {}
            }
        }
        let timeout = super::connect_timeout(url)?;
        let (mut config, tls) = pg_config(url, &shown, &["schema", "copy"])?;
        if config.get_application_name().is_none() {
            config.application_name("sluice");
        }
        config.connect_timeout(timeout);
        let connector = tls.postgres()?;
        let rt = super::runtime();
        let (client, conn) = super::block_on_within(&rt, timeout, config.connect(connector.clone()))
            .ok_or_else(|| super::connect_timed_out(&shown, timeout, "PostgreSQL"))?
            .map_err(|e| pg_connect_err(e, &tls, &config, &format!("connect to {shown}")))?;
        rt.spawn(async move {
            let _ = conn.await;
        });
        let interrupt =
            std::sync::Arc::new(PgInterrupt { rt: rt.clone(), token: client.cancel_token(), tls: connector });
        let mut pg = Postgres {
            rt,
            client,
            shown,
            home: schema.clone(),
            made: schema.iter().cloned().collect(),
            schema,
            text_copy,
            interrupt,
            last_at: Default::default(),
        };
        let mut setup = String::from(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 1;",
        );
        if let Some(s) = &pg.schema {
            let q = pg.naming().quote(s);
            create_schema(&pg.rt, &pg.client, &q)?;
            setup.push_str(&format!("SET search_path = {q};"));
        }
        pg.batch(&setup, "set up the session")?;
        Ok(pg)
    }

    fn batch(&mut self, sql: &str, what: &str) -> Result<()> {
        let r = self.rt.block_on(self.client.batch_execute(sql));
        self.check(r, what, sql)
    }

    /// Maps the driver's error for statement `sql`, remembering where in
    /// `sql` it is.
    fn check<T>(&self, r: std::result::Result<T, tokio_postgres::Error>, what: &str, sql: &str) -> Result<T> {
        r.map_err(|e| {
            let at = match e.as_db_error().and_then(|d| d.position()) {
                Some(tokio_postgres::error::ErrorPosition::Original(p)) => {
                    ErrorAt::from_char_position(sql, *p as usize)
                }
                _ => None,
            };
            self.last_at.replace(at);
            pg_err(e, what)
        })
    }

    /// The current schema (where unqualified tables are).
    fn current_schema(&self) -> String {
        self.schema.clone().unwrap_or_else(|| "public".into())
    }

    fn query_strings(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        what: &str,
    ) -> Result<Vec<Vec<Option<String>>>> {
        let r = self.rt.block_on(self.client.query(sql, params));
        let rows = self.check(r, what, sql)?;
        Ok(rows.iter().map(|r| (0..r.len()).map(|i| r.get::<_, Option<String>>(i)).collect()).collect())
    }

    /// The columns of a table: name, type OID, type modifier, not null.
    fn columns(&self, table: &str) -> Result<Option<Vec<PgColumn>>> {
        let rows = self
            .rt
            .block_on(self.client.query(
                "SELECT a.attname::text, a.atttypid::oid, a.atttypmod, a.attnotnull
                   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
                    AND a.attnum > 0 AND NOT a.attisdropped
                  ORDER BY a.attnum",
                &[&self.current_schema(), &table],
            ))
            .map_err(|e| pg_err(e, &format!("read the columns of `{table}`")))?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect()))
    }

    fn relkind(&self, name: &str) -> Result<Option<String>> {
        let rows = self.query_strings(
            "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
            &[&self.current_schema(), &name],
            "read the catalog",
        )?;
        Ok(rows.first().and_then(|r| r[0].clone()))
    }
}

/// The PostgreSQL type of a column type.
pub fn sql_type(t: ColumnType) -> String {
    match t {
        ColumnType::SmallInt => "smallint".into(),
        ColumnType::Integer => "integer".into(),
        ColumnType::BigInt => "bigint".into(),
        ColumnType::Decimal(Some((p, s))) => format!("numeric({p},{s})"),
        ColumnType::Decimal(None) => "numeric".into(),
        ColumnType::Float => "double precision".into(),
        ColumnType::Text => "text".into(),
        ColumnType::Varchar(n) => format!("varchar({n})"),
        ColumnType::Boolean => "boolean".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Timestamp => "timestamp".into(),
        ColumnType::TimestampTz => "timestamptz".into(),
        ColumnType::Json => "jsonb".into(),
    }
}

/// A column type back from a PostgreSQL type OID and modifier.
pub fn column_type_of(oid: u32, typmod: i32) -> ColumnType {
    match oid {
        oid::INT2 => ColumnType::SmallInt,
        oid::INT4 => ColumnType::Integer,
        oid::INT8 => ColumnType::BigInt,
        oid::NUMERIC if typmod >= 4 => {
            let m = typmod - 4;
            ColumnType::Decimal(Some((((m >> 16) & 0xffff) as u8, (m & 0xffff) as u8)))
        }
        oid::NUMERIC => ColumnType::Decimal(None),
        oid::FLOAT4 | oid::FLOAT8 => ColumnType::Float,
        oid::VARCHAR | oid::BPCHAR if typmod >= 4 => ColumnType::Varchar((typmod - 4) as u32),
        oid::BOOL => ColumnType::Boolean,
        oid::DATE => ColumnType::Date,
        oid::TIMESTAMP => ColumnType::Timestamp,
        oid::TIMESTAMPTZ => ColumnType::TimestampTz,
        oid::JSON | oid::JSONB => ColumnType::Json,
        _ => ColumnType::Text,
    }
}

fn create_table_sql(naming: &Naming, table: &str, schema: &Schema) -> String {
    let cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("{} {}{}", naming.quote(&c.name), sql_type(c.ty), if c.nullable { "" } else { " NOT NULL" }))
        .collect();
    format!("CREATE TABLE {} ({})", naming.relation(table), cols.join(", "))
}

/// Appends one value in COPY binary form (length, then bytes) for a column of
/// type `oid`.
pub fn encode_binary(v: Val, oid: u32, out: &mut BytesMut, scratch: &mut Vec<u8>) -> std::result::Result<(), String> {
    let mut fixed = |bytes: &[u8]| {
        out.put_i32(bytes.len() as i32);
        out.put_slice(bytes);
    };
    match (v, oid) {
        (Val::Null, _) => out.put_i32(-1),
        (Val::Int(i), oid::INT8) => fixed(&i.to_be_bytes()),
        (Val::Int(i), oid::INT4) => {
            fixed(&i32::try_from(i).map_err(|_| format!("{i} is out of range for integer"))?.to_be_bytes())
        }
        (Val::Int(i), oid::INT2) => {
            fixed(&i16::try_from(i).map_err(|_| format!("{i} is out of range for smallint"))?.to_be_bytes())
        }
        (Val::Int(i), oid::NUMERIC) => {
            scratch.clear();
            encode_numeric(&i.to_string(), scratch);
            fixed(scratch);
        }
        (Val::Int(i), oid::FLOAT8) => fixed(&(i as f64).to_be_bytes()),
        (Val::Int(i), oid::FLOAT4) => fixed(&(i as f32).to_be_bytes()),
        (Val::Dec(s), oid::NUMERIC) => {
            scratch.clear();
            encode_numeric(s, scratch);
            fixed(scratch);
        }
        (Val::Dec(s), oid::FLOAT8) => fixed(&s.parse::<f64>().map_err(|e| e.to_string())?.to_be_bytes()),
        (Val::Dec(s), oid::FLOAT4) => fixed(&s.parse::<f32>().map_err(|e| e.to_string())?.to_be_bytes()),
        (Val::Float(f), oid::FLOAT8) => fixed(&f.to_be_bytes()),
        (Val::Float(f), oid::FLOAT4) => fixed(&(f as f32).to_be_bytes()),
        (Val::Bool(b), oid::BOOL) => fixed(&[u8::from(b)]),
        (Val::Date(d), oid::DATE) => fixed(&(d - PG_EPOCH_DAYS as i32).to_be_bytes()),
        (Val::Date(d), oid::TIMESTAMP) => fixed(&(d as i64 * 86_400_000_000 - PG_EPOCH_MICROS).to_be_bytes()),
        (Val::Ts(t), oid::TIMESTAMP) => fixed(&(t - PG_EPOCH_MICROS).to_be_bytes()),
        (Val::TsTz(t), oid::TIMESTAMPTZ) => fixed(&(t - PG_EPOCH_MICROS).to_be_bytes()),
        (Val::Text(s) | Val::Json(s), oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::JSON) => fixed(s.as_bytes()),
        (Val::Text(s) | Val::Json(s), oid::JSONB) => {
            out.put_i32(s.len() as i32 + 1);
            out.put_u8(1);
            out.put_slice(s.as_bytes());
        }
        (v, oid::TEXT | oid::VARCHAR | oid::BPCHAR) => {
            scratch.clear();
            super::format_val(scratch, &v);
            fixed(scratch);
        }
        (v, oid) => return Err(format!("cannot write a {} value into a column of PostgreSQL type {oid}", kind(&v))),
    }
    Ok(())
}

fn kind(v: &Val) -> &'static str {
    match v {
        Val::Null => "null",
        Val::Int(_) => "integer",
        Val::Dec(_) => "decimal",
        Val::Float(_) => "float",
        Val::Bool(_) => "boolean",
        Val::Text(_) => "text",
        Val::Date(_) => "date",
        Val::Ts(_) => "timestamp",
        Val::TsTz(_) => "timestamptz",
        Val::Json(_) => "json",
    }
}

/// Encodes a validated decimal literal as PostgreSQL's binary NUMERIC.
pub fn encode_numeric(s: &str, out: &mut Vec<u8>) {
    let (neg, int, frac) = crate::types::value::decimal_parts(s);
    let int = int.trim_start_matches('0');
    let dscale = frac.len() as u16;
    // Groups of four digits: the integer part padded on the left, the fraction on the right.
    let int_pad = (4 - int.len() % 4) % 4;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let mut digits: Vec<i16> = Vec::with_capacity((int.len() + frac.len()) / 4 + 2);
    let mut acc = 0i16;
    let mut n = 0;
    let all = std::iter::repeat_n(b'0', int_pad)
        .chain(int.bytes())
        .chain(frac.bytes())
        .chain(std::iter::repeat_n(b'0', frac_pad));
    for b in all {
        acc = acc * 10 + (b - b'0') as i16;
        n += 1;
        if n == 4 {
            digits.push(acc);
            acc = 0;
            n = 0;
        }
    }
    let int_groups = (int.len() + int_pad) / 4;
    let mut weight = int_groups as i16 - 1;
    let mut start = 0;
    while start < digits.len() && digits[start] == 0 {
        start += 1;
        weight -= 1;
    }
    let mut end = digits.len();
    while end > start && digits[end - 1] == 0 {
        end -= 1;
    }
    let digits = &digits[start..end];
    if digits.is_empty() {
        weight = 0;
    }
    let sign: u16 = if neg && !digits.is_empty() { 0x4000 } else { 0 };
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
}

/// Appends one value in COPY text form.
fn encode_text(v: Val, out: &mut BytesMut, scratch: &mut Vec<u8>) {
    match v {
        Val::Null => out.put_slice(b"\\N"),
        Val::Text(s) | Val::Json(s) => escape_text(s.as_bytes(), out),
        Val::Bool(b) => out.put_slice(if b { b"t" } else { b"f" }),
        Val::TsTz(t) => {
            scratch.clear();
            crate::types::value::write_ts(scratch, t, b' ');
            out.put_slice(scratch);
            out.put_slice(b"+00");
        }
        Val::Float(f) => out.put_slice(format!("{f:e}").as_bytes()),
        v => {
            scratch.clear();
            super::format_val(scratch, &v);
            out.put_slice(scratch);
        }
    }
}

fn escape_text(b: &[u8], out: &mut BytesMut) {
    for &c in b {
        match c {
            b'\\' => out.put_slice(b"\\\\"),
            b'\t' => out.put_slice(b"\\t"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            c => out.put_u8(c),
        }
    }
}

/// Undoes COPY text escapes.
fn unescape_text(b: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            i += 1;
            match b[i] {
                b't' => out.push(b'\t'),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'v' => out.push(11),
                c @ b'0'..=b'7' => {
                    let mut v = (c - b'0') as u32;
                    let mut k = 0;
                    while k < 2 && i + 1 < b.len() && (b'0'..=b'7').contains(&b[i + 1]) {
                        i += 1;
                        k += 1;
                        v = v * 8 + (b[i] - b'0') as u32;
                    }
                    out.push(v as u8);
                }
                c => out.push(c),
            }
        } else {
            out.push(b[i]);
        }
        i += 1;
    }
}

/// A relation and the views (and materialized views) that depend on it,
/// directly or not, as (kind, schema, name, definition), the relation first,
/// then its views in the order to create them. `$1` is the relation; a view's
/// definition is read only when its `schema.name` is in `$2` (the relations
/// whose locks are held: see `swap_in`), else it is NULL. (`refclassid` lets
/// it use pg_depend's index: without it, a full scan.)
const RELATION_AND_VIEWS: &str = "
WITH RECURSIVE deps(oid, depth) AS (
    SELECT to_regclass($1)::oid, 0 WHERE to_regclass($1) IS NOT NULL
  UNION
    SELECT DISTINCT r.ev_class, deps.depth + 1
      FROM deps JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = deps.oid
      JOIN pg_rewrite r ON r.oid = d.objid
     WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class <> deps.oid AND deps.depth < 50
)
SELECT c.relkind::text, n.nspname::text, c.relname::text,
       CASE WHEN d.depth > 0 AND n.nspname || '.' || c.relname = ANY($2::text[]) THEN pg_get_viewdef(c.oid) END
  FROM (SELECT oid, max(depth) AS depth FROM deps GROUP BY oid) d
  JOIN pg_class c ON c.oid = d.oid JOIN pg_namespace n ON n.oid = c.relnamespace
 ORDER BY d.depth, c.relname";

/// The advisory-lock class (the first key) of relation names: whoever drops,
/// recreates or replaces a relation holds the lock of its `schema.name`.
const RELATION_LOCK: i32 = 345_550;

/// Takes the locks of relation names (`schema.name`, `$1`; `$2` is
/// `RELATION_LOCK`) in key order, until the transaction ends.
const LOCK_RELATIONS: &str = "
SELECT pg_advisory_xact_lock($2, k)
  FROM (SELECT DISTINCT hashtext(x) AS k FROM unnest($1::text[]) AS x ORDER BY 1 OFFSET 0) s";

impl Postgres {
    /// Takes the relation locks of `names` (in key order), adding them to `held`.
    fn lock_relations(&self, names: Vec<String>, held: &mut BTreeSet<String>, what: &str) -> Result<()> {
        let r = self.rt.block_on(self.client.execute(LOCK_RELATIONS, &[&names, &RELATION_LOCK]));
        self.check(r, what, LOCK_RELATIONS)?;
        held.extend(names);
        Ok(())
    }

    /// Replaces relation `name` with `new` (already filled) in the running
    /// transaction: views on the old one are recreated on the new one.
    ///
    /// Tables built at the same time can share views (a view joining both),
    /// which each swap drops and recreates. So a swap first takes the
    /// relation lock of the relation and of every view on it, in one order,
    /// then reads the views' definitions, drops, renames and recreates, and
    /// keeps the locks until it commits: swaps that share views take turns
    /// (only there; the builds themselves run at once), and none reads a
    /// view another is dropping.
    fn swap_in(&mut self, name: &str, new: &str) -> Result<()> {
        let n = self.naming();
        let rel = n.relation(name);
        let what = format!("find the views on `{name}`");
        let none: Vec<String> = Vec::new();
        let mut held = BTreeSet::new();
        let first = self.query_strings(RELATION_AND_VIEWS, &[&rel, &none], &what)?;
        let mut names: Vec<String> = first
            .iter()
            .skip(1)
            .map(|r| format!("{}.{}", r[1].as_deref().unwrap_or(""), r[2].as_deref().unwrap_or("")))
            .collect();
        names.push(format!("{}.{name}", self.current_schema()));
        self.lock_relations(names, &mut held, &format!("wait for other builds that replace the views on `{name}`"))?;
        let held_list = |h: &BTreeSet<String>| h.iter().cloned().collect::<Vec<String>>();
        let rows = loop {
            // Read again under the locks: what others swapped meanwhile is
            // committed now. A view that appeared since is locked too.
            let rows = self.query_strings(RELATION_AND_VIEWS, &[&rel, &held_list(&held)], &what)?;
            let more: Vec<String> = rows
                .iter()
                .skip(1)
                .filter(|r| r[3].is_none())
                .map(|r| format!("{}.{}", r[1].as_deref().unwrap_or(""), r[2].as_deref().unwrap_or("")))
                .collect();
            if more.is_empty() {
                break rows;
            }
            self.lock_relations(more, &mut held, &format!("wait for other builds that replace the views on `{name}`"))?;
        };
        let kind = rows.first().and_then(|r| r[0].clone());
        let mut sql = match kind.as_deref() {
            Some("v") => format!("DROP VIEW {rel} CASCADE;"),
            Some("m") => format!("DROP MATERIALIZED VIEW {rel} CASCADE;"),
            Some(_) => format!("DROP TABLE {rel} CASCADE;"),
            None => String::new(),
        };
        sql.push_str(&format!(" ALTER TABLE {} RENAME TO {};", n.relation(new), n.quote(name)));
        for r in rows.iter().skip(1) {
            let what = if r[0].as_deref() == Some("m") { "MATERIALIZED VIEW" } else { "VIEW" };
            let def = r[3].as_deref().unwrap_or_default().trim_end().trim_end_matches(';');
            sql.push_str(&format!(
                "\nCREATE {what} {}.{} AS {def};",
                n.quote(r[1].as_deref().unwrap_or_default()),
                n.quote(r[2].as_deref().unwrap_or_default())
            ));
        }
        self.batch(&sql, &format!("swap in the new `{name}` and recreate the views on it"))
    }

    /// Builds a model once: a view replaced in place, or a new relation
    /// built and swapped in, in one transaction.
    fn materialize_once(&mut self, name: &str, body: &str, build: &Build<'_>) -> Result<()> {
        let n = self.naming();
        let d = &PgDialect;
        let new = format!("{name}{NEW_SUFFIX}");
        let what = format!("build {name}");
        if build.kind == Materialized::View {
            // A view whose columns stay the same (or only gain some at the
            // end) is replaced in place, one statement under its relation
            // lock, and the views on it stay as they are. A new view is
            // created the same way. Otherwise it is swapped like a table.
            let key = format!("{}.{name}", self.current_schema()).replace('\'', "''");
            let sql = format!(
                "BEGIN; SELECT pg_advisory_xact_lock({RELATION_LOCK}, hashtext('{key}')); CREATE OR REPLACE VIEW {} AS\n{body}\n; COMMIT",
                n.relation(name)
            );
            match self.rt.block_on(self.client.batch_execute(&sql)) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let _ = self.batch("ROLLBACK", "roll back");
                    // Columns dropped, renamed or retyped; or not a view.
                    if !e.code().is_some_and(|c| {
                        *c == SqlState::INVALID_TABLE_DEFINITION
                            || *c == SqlState::DATATYPE_MISMATCH
                            || *c == SqlState::WRONG_OBJECT_TYPE
                    }) {
                        return self.check(Err(e), &what, &sql);
                    }
                }
            }
        }
        self.batch("BEGIN", "start a transaction")?;
        let res = (|| {
            // DDL is transactional here, so a build that was cut off left
            // nothing behind; the new relation's name is free.
            match build.kind {
                Materialized::View => self.batch(&format!("CREATE VIEW {} AS\n{body}", n.relation(&new)), &what)?,
                _ => {
                    for s in build_table_sql(d, &n.relation(&new), body, build.contract) {
                        self.batch(&s, &what)?;
                    }
                }
            }
            self.swap_in(name, &new)?;
            if let Some(key) = build.unique_key {
                let idx = d.unique_index(&format!("{name}__sluice_key"), &n.relation(name), key);
                self.batch(&idx, &format!("index {name} on its unique key"))?;
            }
            Ok(())
        })();
        match res {
            Ok(()) => self.batch("COMMIT", "commit"),
            Err(e) => {
                let _ = self.batch("ROLLBACK", "roll back");
                Err(e)
            }
        }
    }
}

impl Warehouse for Postgres {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn naming(&self) -> Naming {
        Naming { open: '"', close: '"', schema: self.schema.clone() }
    }

    fn use_schema(&mut self, schema: Option<&str>) -> Result<()> {
        let want = schema.map(str::to_string).or_else(|| self.home.clone());
        if want == self.schema {
            return Ok(());
        }
        if let Some(s) = &want
            && !self.made.contains(s)
        {
            create_schema(&self.rt, &self.client, &self.naming().quote(s))?;
            self.made.insert(s.clone());
        }
        self.schema = want;
        Ok(())
    }

    fn execute(&mut self, sql: &str) -> Result<()> {
        self.last_at.replace(None);
        self.batch(sql, "run SQL")
    }

    fn error_offset(&self, text: &str) -> Option<usize> {
        self.last_at.borrow().as_ref().and_then(|at| at.offset_in(text))
    }

    fn copy_text(
        &mut self,
        sql: &str,
        o: &super::TextCopy,
        header: &mut super::HeaderFn,
        out: &mut dyn std::io::Write,
    ) -> Result<Option<u64>> {
        let body = sql.trim().trim_end_matches(';');
        self.last_at.replace(None);
        // What COPY cannot write exactly as the row-by-row path does.
        if o.null.contains(['\r', '\n']) || o.delimiter > 0x7f || o.delimiter == b'\\' {
            return Ok(None);
        }
        let csv_null_ok = o.null.is_empty();
        if o.csv_quoting && !csv_null_ok {
            // COPY's CSV quotes a value equal to the NULL marker but not an
            // empty string; Sluice quotes both.
            return Ok(None);
        }
        let r = self.rt.block_on(self.client.prepare(body));
        let stmt = self.check(r, "prepare the query", body)?;
        let names: Vec<String> = stmt.columns().iter().map(|c| c.name().to_string()).collect();
        if o.csv_quoting && names.len() == 1 {
            // COPY's CSV quotes a lone `\.` in a one-column result.
            return Ok(None);
        }
        let q = |n: &str| format!("_sluice_q.\"{}\"", n.replace('"', "\"\""));
        let mut exprs = Vec::with_capacity(names.len());
        let mut wrap = false;
        for (c, name) in stmt.columns().iter().zip(&names) {
            let declared = o.declared.get(name).copied();
            let oid = c.type_().oid();
            let e = match (oid, declared) {
                // Sluice writes floats with 15 significant digits; COPY differently.
                (oid::FLOAT4 | oid::FLOAT8, _) => return Ok(None),
                (oid::BOOL, _) => {
                    format!("CASE WHEN {0} THEN 'true' WHEN NOT {0} THEN 'false' END", q(name))
                }
                // A numeric column of that very scale already prints so.
                (oid::NUMERIC, Some(ColumnType::Decimal(Some((_, scale)))))
                    if c.type_modifier() >= 4 && ((c.type_modifier() - 4) & 0xffff) as u8 == scale =>
                {
                    exprs.push(q(name));
                    continue;
                }
                (oid::NUMERIC | oid::INT2 | oid::INT4 | oid::INT8, Some(ColumnType::Decimal(Some((_, scale)))))
                    if scale > 0 || oid == oid::NUMERIC =>
                {
                    format!("round({}::numeric, {scale})", q(name))
                }
                _ => {
                    exprs.push(q(name));
                    continue;
                }
            };
            wrap = true;
            exprs.push(e);
        }
        if wrap && names.iter().collect::<BTreeSet<_>>().len() != names.len() {
            return Ok(None);
        }
        let select =
            if wrap { format!("SELECT {} FROM ({body}) AS _sluice_q", exprs.join(", ")) } else { body.to_string() };
        let lit = |s: &str| format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"));
        let delim = lit(&(o.delimiter as char).to_string());
        let copy = if o.csv_quoting {
            format!("COPY ({select}) TO STDOUT (FORMAT csv, DELIMITER {delim}, NULL '')")
        } else {
            format!("COPY ({select}) TO STDOUT (FORMAT text, DELIMITER {delim}, NULL {})", lit(o.null))
        };
        let r = self.rt.block_on(self.client.copy_out(copy.as_str()));
        let stream = self.check(r, "run the query", &copy)?;
        header(&names, out)?;
        // PostgreSQL sends a message a row. A task on the runtime gathers
        // them into 1 MiB blocks (the connection and it take turns on one
        // worker), and this thread counts and writes whole blocks: one
        // hand-over per MiB, not one per row, and reading overlaps writing.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::result::Result<Bytes, tokio_postgres::Error>>(4);
        self.rt.spawn(async move {
            let mut stream = Box::pin(stream);
            let mut buf = BytesMut::with_capacity(COPY_BLOCK + (64 << 10));
            loop {
                match stream.next().await {
                    Some(Ok(c)) => {
                        buf.extend_from_slice(&c);
                        if buf.len() >= COPY_BLOCK && tx.send(Ok(buf.split().freeze())).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    None => {
                        if !buf.is_empty() {
                            let _ = tx.send(Ok(buf.freeze())).await;
                        }
                        return;
                    }
                }
            }
        });
        let mut rows = 0u64;
        let mut in_quotes = false;
        while let Some(block) = rx.blocking_recv() {
            let block = self.check(block, "read query results", &copy)?;
            if o.csv_quoting {
                for i in memchr::memchr2_iter(b'"', b'\n', &block) {
                    if block[i] == b'"' {
                        in_quotes = !in_quotes;
                    } else if !in_quotes {
                        rows += 1;
                    }
                }
            } else {
                rows += memchr::memchr_iter(b'\n', &block).count() as u64;
            }
            out.write_all(&block).map_err(|e| Error::external(format!("cannot write the export: {e}"), false))?;
        }
        Ok(Some(rows))
    }

    fn query(&mut self, sql: &str, sink: &mut dyn RowSink) -> Result<u64> {
        let body = sql.trim().trim_end_matches(';');
        self.last_at.replace(None);
        let r = self.rt.block_on(self.client.prepare(body));
        let stmt = self.check(r, "prepare the query", body)?;
        let names: Vec<String> = stmt.columns().iter().map(|c| c.name().to_string()).collect();
        let oids: Vec<u32> = stmt.columns().iter().map(|c| c.type_().oid()).collect();
        sink.columns(&names)?;
        sink.types(
            &stmt
                .columns()
                .iter()
                .map(|c| Some(column_type_of(c.type_().oid(), c.type_modifier())))
                .collect::<Vec<_>>(),
        );
        let copy = format!("COPY ({body}) TO STDOUT");
        let r = self.rt.block_on(self.client.copy_out(copy.as_str()));
        let stream = self.check(r, "run the query", &copy)?;
        let mut stream = Box::pin(stream);
        let mut pending: Vec<u8> = Vec::new();
        let mut fields: Vec<Vec<u8>> = vec![Vec::new(); names.len()];
        let mut nulls: Vec<bool> = vec![false; names.len()];
        let mut n = 0u64;
        loop {
            let chunk = self.rt.block_on(stream.next());
            let Some(chunk) = chunk else { break };
            let chunk = self.check(chunk, "read query results", &copy)?;
            pending.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(k) = memchr::memchr(b'\n', &pending[start..]) {
                let line = &pending[start..start + k];
                for (i, f) in line.split(|&b| b == b'\t').enumerate().take(names.len()) {
                    fields[i].clear();
                    nulls[i] = f == b"\\N";
                    if !nulls[i] {
                        unescape_text(f, &mut fields[i]);
                    }
                }
                let mut vals = Vec::with_capacity(names.len());
                for i in 0..names.len() {
                    if nulls[i] {
                        vals.push(Val::Null);
                        continue;
                    }
                    let s = std::str::from_utf8(&fields[i])
                        .map_err(|_| Error::external("PostgreSQL sent text that is not UTF-8", false))?;
                    vals.push(match oids[i] {
                        oid::INT2 | oid::INT4 | oid::INT8 => s.parse().map(Val::Int).unwrap_or(Val::Text(s)),
                        oid::NUMERIC => Val::Dec(s),
                        oid::FLOAT4 | oid::FLOAT8 => s.parse().map(Val::Float).unwrap_or(Val::Text(s)),
                        oid::BOOL => Val::Bool(s == "t"),
                        _ => Val::Text(s),
                    });
                }
                sink.row(&vals)?;
                n += 1;
                start += k + 1;
            }
            pending.drain(..start);
        }
        Ok(n)
    }

    fn copy_csv_out(&mut self, sql: &str, out: &mut dyn std::io::Write) -> Result<bool> {
        let body = sql.trim().trim_end_matches(';');
        self.last_at.replace(None);
        let copy = format!("COPY ({body}) TO STDOUT (FORMAT csv, HEADER)");
        let r = self.rt.block_on(self.client.copy_out(copy.as_str()));
        let stream = self.check(r, "run the query", &copy)?;
        let mut stream = Box::pin(stream);
        while let Some(chunk) = self.rt.block_on(stream.next()) {
            let chunk = self.check(chunk, "read query results", &copy)?;
            out.write_all(&chunk).map_err(|e| Error::external(format!("cannot pass on query results: {e}"), false))?;
        }
        Ok(true)
    }

    fn query_bound(&mut self, sql: &str, params: &[super::Param], sink: &mut dyn RowSink) -> Result<u64> {
        let stmt = self.rt.block_on(self.client.prepare(sql)).map_err(|e| pg_err(e, "prepare the query"))?;
        let names: Vec<String> = stmt.columns().iter().map(|c| c.name().to_string()).collect();
        if let Some(c) = stmt.columns().iter().find(|c| !matches!(c.type_().oid(), oid::TEXT | oid::VARCHAR)) {
            return Err(Error::internal(format!(
                "query_bound selects column `{}` as {}, not text",
                c.name(),
                c.type_()
            )));
        }
        sink.columns(&names)?;
        let texts: Vec<&str> = params.iter().map(|p| p.text.as_str()).collect();
        let ps: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            texts.iter().map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        let rows = self.rt.block_on(self.client.query(&stmt, &ps)).map_err(|e| pg_err(e, "run the query"))?;
        let mut vals: Vec<Val> = Vec::with_capacity(names.len());
        for r in &rows {
            vals.clear();
            for i in 0..names.len() {
                vals.push(match r.get::<_, Option<&str>>(i) {
                    Some(s) => Val::Text(s),
                    None => Val::Null,
                });
            }
            sink.row(&vals)?;
        }
        Ok(rows.len() as u64)
    }

    fn query_columns(&mut self, sql: &str) -> Result<Vec<Column>> {
        let body = sql.trim().trim_end_matches(';');
        self.last_at.replace(None);
        let r = self.rt.block_on(self.client.prepare(body));
        let stmt = self.check(r, "prepare the query", body)?;
        Ok(stmt.columns().iter().map(|c| Column::new(c.name(), column_type_of(c.type_().oid(), -1))).collect())
    }

    fn table_schema(&mut self, table: &str) -> Result<Option<Schema>> {
        Ok(self.columns(table)?.map(|cols| {
            Schema::new(
                cols.into_iter()
                    .map(|(name, oid, typmod, notnull)| Column {
                        name,
                        ty: column_type_of(oid, typmod),
                        nullable: !notnull,
                        format: None,
                    })
                    .collect(),
            )
        }))
    }

    fn begin_load<'a>(&'a mut self, target: &LoadTarget<'_>) -> Result<Box<dyn LoadTx + 'a>> {
        let n = self.naming();
        let t = n.quote(target.table);
        if target.track_loads {
            self.batch(
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (target text NOT NULL, object text NOT NULL, sha256 text, rows bigint, run_id text, loaded_at timestamptz DEFAULT now(), PRIMARY KEY (target, object))",
                n.quote(LOADS_TABLE)
            ),
            "create the load records table",
        )
        .or_else(|e| {
            // Two processes creating it at once: the loser's duplicate is not an error.
            if e.db_code().is_some_and(|c| c.is_unique_violation() || c.is_duplicate_object()) { Ok(()) } else { Err(e) }
        })?;
        }
        self.batch("BEGIN", "start a transaction")?;
        let mut tx = PgLoad {
            pg: self,
            table: target.table.to_string(),
            into: String::new(),
            columns: target.columns.iter().map(|c| c.name.clone()).collect(),
            oids: Vec::new(),
            mode: target.mode,
            key: target.key.to_vec(),
            run_id: target.run_id.to_string(),
            sink: None,
            spool: None,
            buf: BytesMut::with_capacity(1 << 20),
            scratch: Vec::with_capacity(64),
            open: true,
        };
        let res = tx.setup(target);
        if let Err(e) = res {
            let _ = tx.pg.batch("ROLLBACK", "roll back");
            tx.open = false;
            return Err(e);
        }
        let _ = t;
        Ok(Box::new(tx))
    }

    fn try_lock_loads(&mut self, table: &str) -> Result<bool> {
        // The same key as the load transaction's own lock (advisory locks of
        // one session nest), held by the session until it ends.
        let key = format!("sluice:load:{}", self.naming().relation(table));
        let rows = self
            .rt
            .block_on(self.client.query("SELECT pg_try_advisory_lock(hashtext($1))", &[&key]))
            .map_err(|e| pg_err(e, &format!("take a turn to load into `{table}`")))?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    fn lock_loads(&mut self, table: &str) -> Result<()> {
        let key = format!("sluice:load:{}", self.naming().relation(table));
        self.rt
            .block_on(self.client.execute("SELECT pg_advisory_lock(hashtext($1))", &[&key]))
            .map_err(|e| pg_err(e, &format!("wait for other loads into `{table}`")))?;
        Ok(())
    }

    fn loaded_objects(&mut self, table: &str) -> Result<BTreeSet<String>> {
        if self.relkind(LOADS_TABLE)?.is_none() {
            return Ok(BTreeSet::new());
        }
        let sql = format!("SELECT object FROM {} WHERE target = $1", self.naming().relation(LOADS_TABLE));
        Ok(self
            .query_strings(&sql, &[&table], "read loaded objects")?
            .into_iter()
            .filter_map(|r| r[0].clone())
            .collect())
    }

    fn materialize(&mut self, name: &str, sql: &str, build: &Build<'_>) -> Result<()> {
        let body = sql.trim().trim_end_matches(';').trim_end();
        // The database rolls back a deadlock's victim (or a transaction it
        // cannot serialize) whole: building again is safe. Swaps lock in one
        // order, so this is for locks taken by others (a user's DDL).
        let mut tries = 1;
        loop {
            self.last_at.replace(None);
            match self.materialize_once(name, body, build) {
                Err(e) if tries < 4 && e.db_code().is_some_and(|c| c.is_conflict()) => {
                    std::thread::sleep(std::time::Duration::from_millis(20 * tries));
                    tries += 1;
                }
                r => return r,
            }
        }
    }

    fn dialect(&self) -> &'static dyn Dialect {
        &PgDialect
    }

    fn interrupter(&self) -> Option<std::sync::Arc<dyn super::Interrupt>> {
        Some(self.interrupt.clone())
    }
}

/// PostgreSQL's SQL.
pub struct PgDialect;

impl Dialect for PgDialect {
    fn quote(&self, ident: &str) -> String {
        format!("\"{}\"", ident.replace('"', "\"\""))
    }
    fn param(&self, i: usize, ty: ColumnType) -> String {
        // Sent as text, converted by the server to the column's type.
        format!("CAST(${i}::text AS {})", sql_type(ty))
    }
    fn as_text(&self, expr: &str) -> String {
        format!("({expr})::text")
    }
    fn sql_type(&self, t: ColumnType) -> String {
        sql_type(t)
    }
    fn begin(&self) -> Option<&'static str> {
        Some("BEGIN")
    }
    fn transactional_ddl(&self) -> bool {
        true
    }
    fn create_temp_as(&self, name: &str, select: &str) -> String {
        format!("CREATE TEMP TABLE {} AS\n{select}", self.quote(name))
    }
    fn temp_relation(&self, name: &str) -> String {
        format!("pg_temp.{}", self.quote(name))
    }
    fn drop_temp(&self, name: &str) -> String {
        format!("DROP TABLE IF EXISTS pg_temp.{}", self.quote(name))
    }
    fn upsert(&self, table: &str, src: &str, cols: &[String], key: &[String]) -> String {
        let c: Vec<String> = cols.iter().map(|c| self.quote(c)).collect();
        let k: Vec<String> = key.iter().map(|c| self.quote(c)).collect();
        let set: Vec<String> =
            cols.iter().filter(|c| !key.contains(c)).map(|c| format!("{0} = EXCLUDED.{0}", self.quote(c))).collect();
        let action = if set.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", set.join(", ")) };
        format!(
            "INSERT INTO {table} ({0}) SELECT {0} FROM {src} ON CONFLICT ({1}) DO {action}",
            c.join(", "),
            k.join(", ")
        )
    }
}

struct PgLoad<'a> {
    pg: &'a mut Postgres,
    table: String,
    /// Where rows are copied: the table, its new copy, or the staging table.
    into: String,
    columns: Vec<String>,
    oids: Vec<u32>,
    mode: LoadMode,
    key: Vec<String>,
    run_id: String,
    sink: Option<Pin<Box<CopyInSink<Bytes>>>>,
    /// Rejected rows waiting for the COPY to end (a temporary file).
    spool: Option<(std::path::PathBuf, std::io::BufWriter<std::fs::File>)>,
    buf: BytesMut,
    scratch: Vec<u8>,
    open: bool,
}

const STAGE: &str = "__sluice_stage";

impl PgLoad<'_> {
    fn setup(&mut self, target: &LoadTarget<'_>) -> Result<()> {
        let n = self.pg.naming();
        let t = n.relation(target.table);
        // Loads into one table take turns (runs at the same time are common
        // under a scheduler): what exists is read after the previous load
        // committed, so two first loads do not both create the table.
        let key = format!("sluice:load:{t}");
        self.pg
            .rt
            .block_on(self.pg.client.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key]))
            .map_err(|e| pg_err(e, &format!("wait for other loads into `{}`", target.table)))?;
        let exists = self.pg.relkind(target.table)?;
        match target.mode {
            LoadMode::Replace => {
                let new = format!("{}{NEW_SUFFIX}", target.table);
                self.pg.batch(&format!("DROP TABLE IF EXISTS {}", n.relation(&new)), "drop a stale table")?;
                self.pg.batch(&create_table_sql(&n, &new, target.schema), "create the new table")?;
                self.into = new;
            }
            LoadMode::Append | LoadMode::Merge => {
                match exists.as_deref() {
                    None => self.pg.batch(&create_table_sql(&n, target.table, target.schema), "create the table")?,
                    Some("r" | "p") => {
                        for c in target.changes {
                            let sql = match c {
                                Change::Add(col) => {
                                    format!("ALTER TABLE {t} ADD COLUMN {} {}", n.quote(&col.name), sql_type(col.ty))
                                }
                                Change::Widen { column, to } => {
                                    format!("ALTER TABLE {t} ALTER COLUMN {} TYPE {}", n.quote(column), sql_type(*to))
                                }
                            };
                            self.pg.batch(&sql, "change the table")?;
                        }
                    }
                    Some(_) => {
                        return Err(Error::user(format!("`{}` is not a table; a load needs a table", target.table)));
                    }
                }
                if target.mode == LoadMode::Merge {
                    self.pg.batch(
                        &format!("CREATE TEMP TABLE {} (LIKE {t} INCLUDING DEFAULTS) ON COMMIT DROP", n.quote(STAGE)),
                        "create the staging table",
                    )?;
                    self.into = STAGE.to_string();
                } else {
                    self.into = target.table.to_string();
                }
            }
        }
        // Encode for the types the table really has.
        let lookup = if self.into == STAGE { target.table.to_string() } else { self.into.clone() };
        let cols = self.pg.columns(&lookup)?.ok_or_else(|| Error::internal(format!("table `{lookup}` vanished")))?;
        for (c, src) in self.columns.iter().zip(target.columns) {
            let Some((_, oid, _, _)) = cols.iter().find(|(name, ..)| name == c) else {
                return Err(Error::user(format!("table `{}` has no column `{c}`", target.table)));
            };
            let ok = matches!(
                (src.ty, *oid),
                (
                    ColumnType::SmallInt | ColumnType::Integer | ColumnType::BigInt,
                    oid::INT2 | oid::INT4 | oid::INT8 | oid::NUMERIC | oid::FLOAT4 | oid::FLOAT8
                ) | (ColumnType::Decimal(_), oid::NUMERIC | oid::FLOAT4 | oid::FLOAT8)
                    | (ColumnType::Float, oid::FLOAT4 | oid::FLOAT8)
                    | (ColumnType::Boolean, oid::BOOL)
                    | (ColumnType::Date, oid::DATE | oid::TIMESTAMP)
                    | (ColumnType::Timestamp, oid::TIMESTAMP)
                    | (ColumnType::TimestampTz, oid::TIMESTAMPTZ)
                    | (
                        ColumnType::Text | ColumnType::Varchar(_),
                        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::JSON | oid::JSONB
                    )
                    | (ColumnType::Json, oid::JSON | oid::JSONB | oid::TEXT | oid::VARCHAR)
                    | (_, oid::TEXT)
            );
            if !ok {
                return Err(Error::user(format!(
                    "column `{c}` is {} in the source, but `{}`.`{c}` has PostgreSQL type {} (oid {oid}), which a load cannot write {} values into",
                    src.ty,
                    target.table,
                    sql_type(column_type_of(*oid, -1)),
                    src.ty
                )));
            }
            self.oids.push(*oid);
        }
        self.start_copy()
    }

    /// Starts the COPY into `into` (again after a merge applied an input).
    fn start_copy(&mut self) -> Result<()> {
        let n = self.pg.naming();
        let quoted: Vec<String> = self.columns.iter().map(|c| n.quote(c)).collect();
        let into = if self.into == STAGE { n.quote(STAGE) } else { n.relation(&self.into) };
        let format = if self.pg.text_copy { "" } else { " (FORMAT binary)" };
        let sql = format!("COPY {into} ({}) FROM STDIN{format}", quoted.join(", "));
        let sink = self
            .pg
            .rt
            .block_on(self.pg.client.copy_in::<_, Bytes>(sql.as_str()))
            .map_err(|e| pg_err(e, "start COPY"))?;
        self.sink = Some(Box::pin(sink));
        if !self.pg.text_copy {
            self.buf.put_slice(b"PGCOPY\n\xff\r\n\0");
            self.buf.put_i32(0);
            self.buf.put_i32(0);
        }
        Ok(())
    }

    fn send(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let bytes = self.buf.split().freeze();
        let sink = self.sink.as_mut().expect("COPY is running");
        self.pg.rt.block_on(sink.send(bytes)).map_err(|e| pg_err(e, &format!("copy rows into `{}`", self.table)))
    }

    fn finish_copy(&mut self) -> Result<u64> {
        if !self.pg.text_copy {
            self.buf.put_i16(-1);
        }
        self.send()?;
        let mut sink = self.sink.take().expect("COPY is running");
        self.pg
            .rt
            .block_on(sink.as_mut().finish())
            .map_err(|e| pg_err(e, &format!("finish COPY into `{}`", self.table)))
    }
}

impl LoadTx for PgLoad<'_> {
    fn write(&mut self, batch: &RowBatch) -> Result<()> {
        if self.sink.is_none() {
            self.start_copy()?;
        }
        let width = self.columns.len() as i16;
        for r in 0..batch.len() {
            let row = batch.row(r);
            if self.pg.text_copy {
                for (i, cell) in row.iter().enumerate() {
                    if i > 0 {
                        self.buf.put_u8(b'\t');
                    }
                    encode_text(batch.val(*cell), &mut self.buf, &mut self.scratch);
                }
                self.buf.put_u8(b'\n');
            } else {
                self.buf.put_i16(width);
                for (i, cell) in row.iter().enumerate() {
                    let v = match *cell {
                        Cell::Null => Val::Null,
                        c => batch.val(c),
                    };
                    encode_binary(v, self.oids[i], &mut self.buf, &mut self.scratch).map_err(|e| {
                        Error::DataMsg(format!("line {}: column `{}`: {e}", batch.lines[r], self.columns[i]))
                    })?;
                }
            }
            if self.buf.len() >= 1 << 20 {
                self.send()?;
            }
        }
        Ok(())
    }

    fn write_rejects(&mut self, rejects: &[RowError]) -> Result<()> {
        // The connection is busy with the COPY of the rows: spool the rejects
        // (bounded memory) and copy them in at commit, in the same transaction.
        super::spool_rejects(&mut self.spool, "copy", &self.table, &self.run_id, rejects, &|s, out| {
            escape_text(strip_nul(s).as_bytes(), out)
        })
    }

    fn end_input(&mut self, label: &str) -> Result<()> {
        if self.mode != LoadMode::Merge {
            return Ok(());
        }
        if self.sink.is_some() {
            self.finish_copy()?;
        }
        let n = self.pg.naming();
        let t = n.relation(&self.table);
        let keys: Vec<String> = self.key.iter().map(|k| n.quote(k)).collect();
        let stage = n.quote(STAGE);
        let dups = self.pg.query_strings(
            &format!(
                "SELECT concat_ws(', ', {k}) FROM {stage} GROUP BY {k} HAVING count(*) > 1 LIMIT 5",
                k = keys.iter().map(|k| format!("{k}::text")).collect::<Vec<_>>().join(", ")
            ),
            &[],
            "check merge keys",
        )?;
        if !dups.is_empty() {
            let list: Vec<String> = dups.into_iter().filter_map(|r| r[0].clone()).collect();
            return Err(super::repeated_merge_keys(label, &self.key, &list));
        }
        let cond: Vec<String> = keys.iter().map(|k| format!("s.{k} = t.{k}")).collect();
        let cols: Vec<String> = self.columns.iter().map(|c| n.quote(c)).collect();
        self.pg.batch(
            &format!(
                "DELETE FROM {t} t USING {stage} s WHERE {}; INSERT INTO {t} ({c}) SELECT {c} FROM {stage}; TRUNCATE {stage};",
                cond.join(" AND "),
                c = cols.join(", ")
            ),
            "merge the staged rows",
        )
    }

    fn commit(mut self: Box<Self>, records: &[LoadRecord]) -> Result<()> {
        if self.sink.is_some() {
            self.finish_copy()?;
        }
        let n = self.pg.naming();
        match self.mode {
            LoadMode::Replace => {
                let new = format!("{}{NEW_SUFFIX}", self.table);
                let table = self.table.clone();
                self.pg.swap_in(&table, &new)?;
                if self.pg.relkind(LOADS_TABLE)?.is_some() {
                    let sql = format!("DELETE FROM {} WHERE target = $1", n.relation(LOADS_TABLE));
                    self.pg
                        .rt
                        .block_on(self.pg.client.execute(sql.as_str(), &[&self.table]))
                        .map_err(|e| pg_err(e, "reset load records"))?;
                }
            }
            LoadMode::Merge => {}
            LoadMode::Append => {}
        }
        if let Some((path, w)) = self.spool.take() {
            let res = (|| {
                let f = w.into_inner().map_err(|e| Error::io("write", &path, e.into_error()))?;
                drop(f);
                self.pg.batch(
                    &format!(
                        "CREATE TABLE IF NOT EXISTS {} (target text NOT NULL, file text, line bigint, column_name text, value text, error text, record text, run_id text, rejected_at timestamptz DEFAULT now())",
                        n.relation(REJECTS_TABLE)
                    ),
                    "create the rejects table",
                )?;
                let sql = format!(
                    "COPY {} (target, file, line, column_name, value, error, record, run_id) FROM STDIN",
                    n.relation(REJECTS_TABLE)
                );
                let sink = self
                    .pg
                    .rt
                    .block_on(self.pg.client.copy_in::<_, Bytes>(sql.as_str()))
                    .map_err(|e| pg_err(e, "record rejected rows"))?;
                let mut sink = Box::pin(sink);
                let mut f = std::fs::File::open(&path).map_err(|e| Error::io("read", &path, e))?;
                let mut chunk = vec![0u8; 1 << 20];
                loop {
                    let k = std::io::Read::read(&mut f, &mut chunk).map_err(|e| Error::io("read", &path, e))?;
                    if k == 0 {
                        break;
                    }
                    self.pg
                        .rt
                        .block_on(sink.send(Bytes::copy_from_slice(&chunk[..k])))
                        .map_err(|e| pg_err(e, "record rejected rows"))?;
                }
                self.pg.rt.block_on(sink.as_mut().finish()).map_err(|e| pg_err(e, "record rejected rows"))?;
                Ok::<(), Error>(())
            })();
            let _ = std::fs::remove_file(&path);
            res?;
        }
        if !records.is_empty() {
            let stmt = self
                .pg
                .rt
                .block_on(self.pg.client.prepare(&format!(
                    // A plain insert: the same object recorded twice means two
                    // loads ran at once, and the second must not commit.
                    "INSERT INTO {} (target, object, sha256, rows, run_id) VALUES ($1, $2, $3, $4, $5)",
                    n.relation(LOADS_TABLE)
                )))
                .map_err(|e| pg_err(e, "record the load"))?;
            for r in records {
                let rows = r.rows as i64;
                self.pg
                    .rt
                    .block_on(self.pg.client.execute(&stmt, &[&self.table, &r.object, &r.sha256, &rows, &r.run_id]))
                    .map_err(|e| pg_err(e, "record the load"))?;
            }
        }
        self.pg.batch("COMMIT", "commit the load")?;
        self.open = false;
        Ok(())
    }

    fn rollback(mut self: Box<Self>) -> Result<()> {
        self.open = false;
        self.sink = None;
        if let Some((path, _)) = self.spool.take() {
            let _ = std::fs::remove_file(path);
        }
        self.pg.batch("ROLLBACK", "roll back the load")
    }
}

fn strip_nul(s: &str) -> String {
    s.replace('\0', "\\x00")
}

impl Drop for PgLoad<'_> {
    fn drop(&mut self) {
        if let Some((path, _)) = self.spool.take() {
            let _ = std::fs::remove_file(path);
        }
        if self.open {
            self.sink = None;
            let _ = self.pg.batch("ROLLBACK", "roll back");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(s: &str) -> Vec<i16> {
        let mut v = Vec::new();
        encode_numeric(s, &mut v);
        v.chunks(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect()
    }

    #[test]
    fn numeric_binary_layout() {
        // [ndigits, weight, sign, dscale, digits…]
        assert_eq!(numeric("12.50"), vec![2, 0, 0, 2, 12, 5000]);
        assert_eq!(numeric("-12345.6789"), vec![3, 1, 0x4000, 4, 1, 2345, 6789]);
        assert_eq!(numeric("0.0001"), vec![1, -1, 0, 4, 1]);
        assert_eq!(numeric("0.00"), vec![0, 0, 0, 2]);
        assert_eq!(numeric("10000"), vec![1, 1, 0, 0, 1]);
        assert_eq!(numeric("+7"), vec![1, 0, 0, 0, 7]);
        assert_eq!(numeric("-0.0"), vec![0, 0, 0, 1]);
    }

    #[test]
    fn text_escapes_round_trip() {
        let mut out = BytesMut::new();
        escape_text(b"a\tb\\c\nd", &mut out);
        assert_eq!(&out[..], b"a\\tb\\\\c\\nd");
        let mut back = Vec::new();
        unescape_text(&out, &mut back);
        assert_eq!(back, b"a\tb\\c\nd");
    }

    #[test]
    fn types_map_both_ways() {
        for t in [
            "smallint",
            "integer",
            "bigint",
            "decimal(12,2)",
            "numeric",
            "float",
            "text",
            "varchar(9)",
            "boolean",
            "date",
            "timestamp",
            "timestamptz",
            "json",
        ] {
            let ty = ColumnType::parse(t).unwrap();
            let oid = match sql_type(ty).as_str() {
                "smallint" => oid::INT2,
                "integer" => oid::INT4,
                "bigint" => oid::INT8,
                s if s.starts_with("numeric") => oid::NUMERIC,
                "double precision" => oid::FLOAT8,
                "text" => oid::TEXT,
                s if s.starts_with("varchar") => oid::VARCHAR,
                "boolean" => oid::BOOL,
                "date" => oid::DATE,
                "timestamp" => oid::TIMESTAMP,
                "timestamptz" => oid::TIMESTAMPTZ,
                "jsonb" => oid::JSONB,
                other => panic!("{other}"),
            };
            let typmod = match ty {
                ColumnType::Decimal(Some((p, s))) => ((p as i32) << 16 | s as i32) + 4,
                ColumnType::Varchar(n) => n as i32 + 4,
                _ => -1,
            };
            assert_eq!(column_type_of(oid, typmod), ty, "{t}");
        }
    }
}
