//! MySQL and MariaDB: loads stream through `LOAD DATA LOCAL INFILE` fed from
//! memory (no temporary file of the input). A LOCAL load turns the server's
//! errors into warnings and coerces bad values, so every value is checked
//! before it is sent and any warning the server still raises fails the load.
//!
//! DDL commits implicitly in MySQL, so: append and merge run the data and the
//! load records in one transaction (merge through a temporary staging table);
//! replace fills a new table in a transaction and swaps it in with one atomic
//! `RENAME TABLE` — replacing is idempotent, so the load record written after
//! the swap cannot make a re-run duplicate anything.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Value};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::{
    Backend, Build, Change, Dialect, ErrorAt, LOADS_TABLE, LoadRecord, LoadTarget, LoadTx, NEW_SUFFIX, Naming,
    REJECTS_TABLE, RowSink, Warehouse, build_table_sql,
};
use crate::error::{DbCode, Error, Result, RowError};
use crate::project::{LoadMode, Materialized};
use crate::secret::{redact_url, url_for_driver, without_params};
use crate::types::{Column, ColumnType, RowBatch, Schema, Val};

pub struct Mysql {
    rt: Handle,
    conn: Option<Conn>,
    shown: String,
    /// The current database (`use_schema` moves it).
    database: String,
    /// The URL's database: where `use_schema(None)` goes back to.
    home: String,
    /// Kills the running statement from a second connection.
    interrupt: std::sync::Arc<dyn super::Interrupt>,
    /// Where the last failed statement's error is, when the server says.
    last_at: Option<ErrorAt>,
}

/// `KILL QUERY` for one session, sent on a connection of its own.
struct MyInterrupt {
    rt: Handle,
    opts: Opts,
    id: u32,
}

impl super::Interrupt for MyInterrupt {
    fn interrupt(&self) {
        let (opts, id) = (self.opts.clone(), self.id);
        self.rt.spawn(async move {
            if let Ok(mut c) = Conn::new(opts).await {
                let _ = c.query_drop(format!("KILL QUERY {id}")).await;
                let _ = c.disconnect().await;
            }
        });
    }
}

/// Opens a session with TLS as `tls` asks: under `prefer`, a server that
/// refuses TLS gets a plain session (and is not asked again by this
/// process). Returns the options used, for more sessions like it.
async fn open(tls: &super::tls::Tls, base: OptsBuilder, shown: &str) -> Result<(Conn, Opts)> {
    let plain: Opts = base.clone().into();
    let (host, port) = (plain.ip_or_hostname().to_string(), plain.tcp_port());
    let ssl = tls.mysql(&host, port, shown).await?;
    let opts: Opts = base.ssl_opts(ssl).into();
    match Conn::new(opts.clone()).await {
        Ok(c) => Ok((c, opts)),
        Err(mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)) => {
            if tls.mode != super::tls::Mode::Prefer {
                return Err(Error::external(format!("cannot connect to {shown}: {}", tls.refused()), false));
            }
            tls.mysql_refused(&host, port);
            let c = Conn::new(plain.clone()).await.map_err(|e| my_err(e, &format!("connect to {shown}")))?;
            Ok((c, plain))
        }
        Err(e) => Err(match tls.explain(&e, &host) {
            Some(msg) => Error::external(format!("cannot connect to {shown}: {msg}"), false),
            None => my_err(e, &format!("connect to {shown}")),
        }),
    }
}

/// Where in statement `sql` the server put error `e`. MySQL's protocol has no
/// position: a syntax error (1064) says `near '…' at line N`; an unknown
/// column (1054) or table (1146) is named, and looked up when it is in the
/// statement once.
fn error_at(e: &mysql_async::Error, sql: &str) -> Option<ErrorAt> {
    let mysql_async::Error::Server(s) = e else { return None };
    let at = |offset: usize| Some(ErrorAt { statement: sql.to_string(), offset });
    match s.code {
        1064 => {
            let rest = &s.message[s.message.find("near '")? + 6..];
            let end = rest.rfind("' at line ")?;
            let (near, line) = (&rest[..end], rest[end + 10..].trim().parse::<usize>().ok()?);
            let line_start = if line <= 1 { 0 } else { sql.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)? };
            if near.is_empty() {
                return at(sql.trim_end().len());
            }
            at(line_start + sql[line_start..].find(near)?)
        }
        1054 => {
            let rest = &s.message[s.message.find("column '")? + 8..];
            at(super::name_once(sql, &rest[..rest.find("' in ")?])?)
        }
        1146 => {
            let rest = &s.message[s.message.find("Table '")? + 7..];
            at(super::name_once(sql, &rest[..rest.find("' doesn't exist")?])?)
        }
        _ => None,
    }
}

/// Maps a driver error to the crate's error, keeping MySQL's error number and
/// SQLSTATE as data (they decide the kind and whether a retry may help).
pub fn my_err(e: mysql_async::Error, what: &str) -> Error {
    match &e {
        mysql_async::Error::Server(s) => Error::Db {
            message: format!("cannot {what}: {} (MySQL error {}, SQLSTATE {})", s.message, s.code, s.state),
            code: DbCode::MySql { number: s.code, sqlstate: s.state.clone() },
        },
        mysql_async::Error::Io(_) => Error::external(format!("cannot {what}: {e}"), true),
        mysql_async::Error::Url(_) => Error::user(format!("cannot {what}: {e}")),
        _ => Error::external(format!("cannot {what}: {e}"), false),
    }
}

/// The column comment that marks a DATETIME holding UTC `timestamptz` values.
const TSTZ_COMMENT: &str = "sluice:timestamptz";

/// Quotes an identifier with backticks.
pub fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// The MySQL type of a column type.
pub fn sql_type(t: ColumnType) -> String {
    match t {
        ColumnType::SmallInt => "SMALLINT".into(),
        ColumnType::Integer => "INT".into(),
        ColumnType::BigInt => "BIGINT".into(),
        ColumnType::Decimal(Some((p, s))) => format!("DECIMAL({p},{s})"),
        ColumnType::Decimal(None) => "DECIMAL(65,30)".into(),
        ColumnType::Float => "DOUBLE".into(),
        ColumnType::Text => "LONGTEXT".into(),
        ColumnType::Varchar(n) => format!("VARCHAR({n})"),
        ColumnType::Boolean => "BOOLEAN".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Timestamp => "DATETIME(6)".into(),
        // No time-zone type: UTC in a DATETIME, marked so the type reads back.
        ColumnType::TimestampTz => format!("DATETIME(6) COMMENT '{TSTZ_COMMENT}'"),
        ColumnType::Json => "JSON".into(),
    }
}

/// A column type from `information_schema.columns` (data type, full column type,
/// character length, precision, scale).
pub fn column_type_of(
    data_type: &str,
    column_type: &str,
    len: Option<u64>,
    prec: Option<u64>,
    scale: Option<u64>,
) -> ColumnType {
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" if column_type.to_ascii_lowercase().starts_with("tinyint(1)") => ColumnType::Boolean,
        "tinyint" | "smallint" => ColumnType::SmallInt,
        "mediumint" | "int" | "integer" => ColumnType::Integer,
        "bigint" => ColumnType::BigInt,
        "decimal" | "numeric" => {
            ColumnType::Decimal(Some((prec.unwrap_or(10).min(38) as u8, scale.unwrap_or(0).min(38) as u8)))
        }
        "float" | "double" | "real" => ColumnType::Float,
        "varchar" | "char" => ColumnType::Varchar(len.unwrap_or(255) as u32),
        "date" => ColumnType::Date,
        "datetime" | "timestamp" => ColumnType::Timestamp,
        "json" => ColumnType::Json,
        // MariaDB reports JSON columns as longtext with a json_valid check.
        _ => ColumnType::Text,
    }
}

fn create_table_sql(table: &str, schema: &Schema) -> String {
    let cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("{} {}{}", quote(&c.name), sql_type(c.ty), if c.nullable { "" } else { " NOT NULL" }))
        .collect();
    format!("CREATE TABLE {} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4", quote(table), cols.join(", "))
}

/// Appends one value in LOAD DATA's default text form (tab separated, `\N` for NULL).
fn encode(v: Val, out: &mut BytesMut, scratch: &mut Vec<u8>) {
    match v {
        Val::Null => out.put_slice(b"\\N"),
        Val::Text(s) | Val::Json(s) => escape(s.as_bytes(), out),
        Val::Bool(b) => out.put_u8(if b { b'1' } else { b'0' }),
        Val::Float(f) => out.put_slice(format!("{f:e}").as_bytes()),
        Val::TsTz(t) | Val::Ts(t) => {
            scratch.clear();
            crate::types::value::write_ts(scratch, t, b' ');
            out.put_slice(scratch);
        }
        v => {
            scratch.clear();
            super::format_val(scratch, &v);
            out.put_slice(scratch);
        }
    }
}

fn escape(b: &[u8], out: &mut BytesMut) {
    for &c in b {
        match c {
            b'\\' => out.put_slice(b"\\\\"),
            b'\t' => out.put_slice(b"\\t"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            0 => out.put_slice(b"\\0"),
            c => out.put_u8(c),
        }
    }
}

impl Mysql {
    /// Connects with a `mysql://` (or `mariadb://`) URL. Extra parameters:
    /// `connect_timeout=SECONDS` (the longest the connection and its
    /// handshake may take, default 10), and TLS's `sslmode`/`ssl-mode` and
    /// `sslrootcert`/`ssl-ca` (see `tls`).
    pub fn connect(url: &str) -> Result<Mysql> {
        let shown = redact_url(url);
        let timeout = super::connect_timeout(url)?;
        let tls = super::tls::Tls::from_url(url, &shown)?;
        let mut ours = vec![super::CONNECT_TIMEOUT];
        ours.extend_from_slice(super::tls::PARAMS);
        let url = url_for_driver(&without_params(url, &ours));
        let u = match url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => url.clone(),
        };
        let opts = Opts::from_url(&u).map_err(|e| Error::user(format!("invalid MySQL URL {shown}: {e}")))?;
        let database = opts
            .db_name()
            .map(str::to_string)
            .ok_or_else(|| Error::user(format!("the MySQL URL {shown} names no database: add /DBNAME")))?;
        let opts = OptsBuilder::from_opts(opts).prefer_socket(false).stmt_cache_size(16);
        let rt = super::runtime();
        let (conn, opts) = super::block_on_within(&rt, timeout, open(&tls, opts, &shown))
            .ok_or_else(|| super::connect_timed_out(&shown, timeout, "MySQL or MariaDB"))??;
        let interrupt = std::sync::Arc::new(MyInterrupt { rt: rt.clone(), opts, id: conn.id() });
        let mut m = Mysql { rt, conn: Some(conn), shown, home: database.clone(), database, interrupt, last_at: None };
        m.run(
            "SET time_zone = '+00:00', SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,ONLY_FULL_GROUP_BY', NAMES utf8mb4",
            "set up the session",
        )?;
        Ok(m)
    }

    /// A named lock, held by the session, for loads into `table` (names are
    /// at most 64 characters: the table is hashed into it).
    fn load_lock(&mut self, table: &str, timeout_s: u32) -> Result<bool> {
        use sha2::Digest;
        let sha = crate::storage::raw::hex(&sha2::Sha256::digest(format!("{}.{table}", self.database)));
        let sql = format!("SELECT GET_LOCK('sluice_load_{}', {timeout_s})", &sha[..40]);
        let rows = self.rows(&sql, &format!("take a turn to load into `{table}`"))?;
        Ok(rows.first().and_then(|r| r[0].as_deref()) == Some("1"))
    }

    fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("the connection is here outside LOAD DATA")
    }

    fn run(&mut self, sql: &str, what: &str) -> Result<()> {
        let rt = self.rt.clone();
        let c = self.conn();
        let r = rt.block_on(c.query_drop(sql));
        r.map_err(|e| {
            self.last_at = error_at(&e, sql);
            my_err(e, what)
        })
    }

    fn rows(&mut self, sql: &str, what: &str) -> Result<Vec<Vec<Option<String>>>> {
        let rt = self.rt.clone();
        let c = self.conn();
        let rows: Vec<mysql_async::Row> = rt.block_on(c.query(sql)).map_err(|e| my_err(e, what))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| match r.as_ref(i) {
                        None | Some(Value::NULL) => None,
                        Some(Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                        Some(v) => Some(v.as_sql(true).trim_matches('\'').to_string()),
                    })
                    .collect()
            })
            .collect())
    }

    fn literal(s: &str) -> String {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    }

    fn table_kind(&mut self, name: &str) -> Result<Option<String>> {
        let sql = format!(
            "SELECT table_type FROM information_schema.tables WHERE table_schema = {} AND table_name = {}",
            Self::literal(&self.database),
            Self::literal(name)
        );
        Ok(self.rows(&sql, "read the catalog")?.into_iter().next().and_then(|r| r[0].clone()))
    }

    fn ensure_loads_table(&mut self) -> Result<()> {
        self.run(
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (target VARCHAR(128) NOT NULL, object VARCHAR(512) NOT NULL, sha256 CHAR(64), `rows` BIGINT, run_id VARCHAR(64), loaded_at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6), PRIMARY KEY (target, object)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                quote(LOADS_TABLE)
            ),
            "create the load records table",
        )
    }
}

impl Warehouse for Mysql {
    fn backend(&self) -> Backend {
        Backend::Mysql
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn naming(&self) -> Naming {
        Naming { open: '`', close: '`', schema: None }
    }

    fn execute(&mut self, sql: &str) -> Result<()> {
        self.last_at = None;
        self.run(sql, "run SQL")
    }

    fn use_schema(&mut self, schema: Option<&str>) -> Result<()> {
        let want = schema.unwrap_or(&self.home).to_string();
        if want == self.database {
            return Ok(());
        }
        let q = quote(&want);
        // A database each process makes at once: IF NOT EXISTS takes the race.
        self.run(&format!("CREATE DATABASE IF NOT EXISTS {q}"), &format!("create database {q}"))?;
        self.run(&format!("USE {q}"), &format!("use database {q}"))?;
        self.database = want;
        Ok(())
    }

    fn error_offset(&self, text: &str) -> Option<usize> {
        self.last_at.as_ref().and_then(|at| at.offset_in(text))
    }

    fn query(&mut self, sql: &str, sink: &mut dyn RowSink) -> Result<u64> {
        let rt = self.rt.clone();
        let c = self.conn.as_mut().expect("connected");
        let body = sql.trim().trim_end_matches(';').to_string();
        let last_at = &mut self.last_at;
        *last_at = None;
        rt.block_on(async {
            let res = c.query_iter(body.as_str()).await.map_err(|e| {
                *last_at = error_at(&e, &body);
                my_err(e, "run the query")
            })?;
            drain(res, sink).await
        })
    }

    fn query_bound(&mut self, sql: &str, params: &[super::Param], sink: &mut dyn RowSink) -> Result<u64> {
        let rt = self.rt.clone();
        let c = self.conn.as_mut().expect("connected");
        // Sent as strings; the server converts them for the comparison.
        let ps: Vec<Value> = params.iter().map(|p| Value::Bytes(p.text.clone().into_bytes())).collect();
        rt.block_on(async {
            let res =
                c.exec_iter(sql, mysql_async::Params::Positional(ps)).await.map_err(|e| my_err(e, "run the query"))?;
            drain(res, sink).await
        })
    }

    fn query_columns(&mut self, sql: &str) -> Result<Vec<Column>> {
        use mysql_async::consts::ColumnType as C;
        let rt = self.rt.clone();
        let c = self.conn.as_mut().expect("connected");
        let q = format!("SELECT * FROM (\n{}\n) sluice_q LIMIT 0", sql.trim().trim_end_matches(';'));
        let last_at = &mut self.last_at;
        *last_at = None;
        rt.block_on(async {
            let res = c.query_iter(q.as_str()).await.map_err(|e| {
                *last_at = error_at(&e, &q);
                my_err(e, "prepare the query")
            })?;
            let cols = res.columns().map(|c| c.to_vec()).unwrap_or_default();
            res.drop_result().await.map_err(|e| my_err(e, "prepare the query"))?;
            Ok(cols
                .iter()
                .map(|col| {
                    let ty = match col.column_type() {
                        C::MYSQL_TYPE_TINY if col.column_length() == 1 => ColumnType::Boolean,
                        C::MYSQL_TYPE_TINY | C::MYSQL_TYPE_SHORT => ColumnType::SmallInt,
                        C::MYSQL_TYPE_LONG | C::MYSQL_TYPE_INT24 => ColumnType::Integer,
                        C::MYSQL_TYPE_LONGLONG => ColumnType::BigInt,
                        C::MYSQL_TYPE_NEWDECIMAL | C::MYSQL_TYPE_DECIMAL => {
                            let s = col.decimals();
                            let p = (col.column_length() as u8).saturating_sub(1 + u8::from(s > 0)).clamp(1, 38);
                            ColumnType::Decimal(Some((p.max(s), s)))
                        }
                        C::MYSQL_TYPE_DOUBLE | C::MYSQL_TYPE_FLOAT => ColumnType::Float,
                        C::MYSQL_TYPE_DATE => ColumnType::Date,
                        C::MYSQL_TYPE_DATETIME
                        | C::MYSQL_TYPE_TIMESTAMP
                        | C::MYSQL_TYPE_DATETIME2
                        | C::MYSQL_TYPE_TIMESTAMP2 => ColumnType::Timestamp,
                        C::MYSQL_TYPE_JSON => ColumnType::Json,
                        _ => ColumnType::Text,
                    };
                    Column::new(&col.name_str(), ty)
                })
                .collect())
        })
    }

    fn table_schema(&mut self, table: &str) -> Result<Option<Schema>> {
        let sql = format!(
            "SELECT column_name, data_type, column_type, character_maximum_length, numeric_precision, numeric_scale, is_nullable, column_comment
               FROM information_schema.columns WHERE table_schema = {} AND table_name = {} ORDER BY ordinal_position",
            Self::literal(&self.database),
            Self::literal(table)
        );
        let rows = self.rows(&sql, &format!("read the columns of `{table}`"))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let num = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<u64>().ok());
        // MariaDB's JSON is LONGTEXT with a json_valid() check.
        let json_cols: Vec<String> = self
            .rows(
                &format!(
                    "SELECT check_clause FROM information_schema.check_constraints WHERE constraint_schema = {} AND table_name = {}",
                    Self::literal(&self.database),
                    Self::literal(table)
                ),
                "read the table's checks",
            )
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r[0].clone())
            .filter_map(|c| c.strip_prefix("json_valid(`").and_then(|x| x.strip_suffix("`)")).map(str::to_string))
            .collect();
        Ok(Some(Schema::new(
            rows.iter()
                .map(|r| {
                    let name = r[0].clone().unwrap_or_default();
                    let ty = if json_cols.contains(&name) {
                        ColumnType::Json
                    } else if r[7].as_deref() == Some(TSTZ_COMMENT) {
                        ColumnType::TimestampTz
                    } else {
                        column_type_of(
                            r[1].as_deref().unwrap_or(""),
                            r[2].as_deref().unwrap_or(""),
                            num(&r[3]),
                            num(&r[4]),
                            num(&r[5]),
                        )
                    };
                    Column { name, ty, nullable: r[6].as_deref() != Some("NO"), format: None }
                })
                .collect(),
        )))
    }

    fn begin_load<'a>(&'a mut self, target: &LoadTarget<'_>) -> Result<Box<dyn LoadTx + 'a>> {
        if target.track_loads {
            self.ensure_loads_table()?;
        }
        let t = quote(target.table);
        let kind = self.table_kind(target.table)?;
        // DDL first: it commits implicitly.
        let into = match target.mode {
            LoadMode::Replace => {
                let new = format!("{}{NEW_SUFFIX}", target.table);
                self.run(&format!("DROP TABLE IF EXISTS {}", quote(&new)), "drop a stale table")?;
                self.run(&create_table_sql(&new, target.schema), "create the new table")?;
                quote(&new)
            }
            LoadMode::Append | LoadMode::Merge => {
                match kind.as_deref() {
                    None => self.run(&create_table_sql(target.table, target.schema), "create the table")?,
                    Some("BASE TABLE") => {
                        for c in target.changes {
                            let sql = match c {
                                Change::Add(col) => {
                                    format!("ALTER TABLE {t} ADD COLUMN {} {}", quote(&col.name), sql_type(col.ty))
                                }
                                Change::Widen { column, to } => {
                                    let nn = target
                                        .schema
                                        .columns
                                        .iter()
                                        .find(|x| x.name == *column)
                                        .is_some_and(|x| !x.nullable);
                                    format!(
                                        "ALTER TABLE {t} MODIFY COLUMN {} {}{}",
                                        quote(column),
                                        sql_type(*to),
                                        if nn { " NOT NULL" } else { "" }
                                    )
                                }
                            };
                            self.run(&sql, "change the table")?;
                        }
                    }
                    Some(_) => {
                        return Err(Error::user(format!("`{}` is not a table; a load needs a table", target.table)));
                    }
                }
                if target.mode == LoadMode::Merge {
                    self.run(
                        &format!("DROP TEMPORARY TABLE IF EXISTS {}", quote(STAGE)),
                        "drop a stale staging table",
                    )?;
                    self.run(&format!("CREATE TEMPORARY TABLE {} LIKE {t}", quote(STAGE)), "create the staging table")?;
                    quote(STAGE)
                } else {
                    t.clone()
                }
            }
        };
        if target.quarantine {
            self.prepare_rejects()?;
        }
        self.run("START TRANSACTION", "start a transaction")?;
        let cols: Vec<String> = target.columns.iter().map(|c| quote(&c.name)).collect();
        let sql = format!(
            "LOAD DATA LOCAL INFILE 'sluice-stream' INTO TABLE {into} CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({})",
            cols.join(", ")
        );
        let mut tx = MyLoad {
            load_sql: sql.clone(),
            my: self,
            table: target.table.to_string(),
            columns: target.columns.iter().map(|c| c.name.clone()).collect(),
            mode: target.mode,
            key: target.key.to_vec(),
            run_id: target.run_id.to_string(),
            sender: None,
            task: None,
            buf: BytesMut::with_capacity(1 << 20),
            scratch: Vec::new(),
            rows_sent: 0,
            runs: Vec::new(),
            spool: None,
            open: true,
        };
        tx.start(sql);
        Ok(Box::new(tx))
    }

    fn try_lock_loads(&mut self, table: &str) -> Result<bool> {
        self.load_lock(table, 0)
    }

    fn lock_loads(&mut self, table: &str) -> Result<()> {
        // A year: GET_LOCK has no "forever" that every server version reads alike.
        if self.load_lock(table, 31_536_000)? {
            Ok(())
        } else {
            Err(Error::external(format!("timed out waiting for other loads into `{table}`"), true))
        }
    }

    fn loaded_objects(&mut self, table: &str) -> Result<BTreeSet<String>> {
        if self.table_kind(LOADS_TABLE)?.is_none() {
            return Ok(BTreeSet::new());
        }
        let sql = format!("SELECT object FROM {} WHERE target = {}", quote(LOADS_TABLE), Self::literal(table));
        Ok(self.rows(&sql, "read loaded objects")?.into_iter().filter_map(|r| r[0].clone()).collect())
    }

    fn materialize(&mut self, name: &str, sql: &str, build: &Build<'_>) -> Result<()> {
        let body = sql.trim().trim_end_matches(';').trim_end().to_string();
        self.last_at = None;
        let what = format!("build {name}");
        if build.kind == Materialized::View {
            if self.table_kind(name)?.as_deref() == Some("BASE TABLE") {
                self.run(&format!("DROP TABLE {}", quote(name)), "drop the old table")?;
            }
            return self.run(&format!("CREATE OR REPLACE VIEW {} AS\n{body}", quote(name)), &what);
        }
        // Two processes building the same table at once would share its new
        // and old names: they take turns under a named lock (released when
        // the build ends, or by the server when the connection closes).
        let lock = format!("CONCAT('sluice:build:', MD5(CONCAT(DATABASE(), '.', {})))", Self::literal(name));
        let got =
            self.rows(&format!("SELECT GET_LOCK({lock}, 86400)"), &format!("wait for another build of {name}"))?;
        if got.first().and_then(|r| r[0].as_deref()) != Some("1") {
            return Err(Error::external(
                format!("cannot build {name}: it did not get its turn after another build of it"),
                false,
            ));
        }
        let res = self.build_table(name, &body, build);
        let _ = self.run(&format!("DO RELEASE_LOCK({lock})"), "release the build lock");
        res
    }

    fn dialect(&self) -> &'static dyn Dialect {
        &MysqlDialect
    }

    fn interrupter(&self) -> Option<std::sync::Arc<dyn super::Interrupt>> {
        Some(self.interrupt.clone())
    }
}

impl Mysql {
    /// Builds a table model under a new name and swaps it in.
    fn build_table(&mut self, name: &str, body: &str, build: &Build<'_>) -> Result<()> {
        let what = format!("build {name}");
        // DDL commits in MySQL: build under a new name, then one atomic RENAME.
        let new = format!("{name}{NEW_SUFFIX}");
        let old = format!("{name}__sluice_old");
        self.run(&format!("DROP TABLE IF EXISTS {}, {}", quote(&new), quote(&old)), "drop a stale build")?;
        for s in build_table_sql(&MysqlDialect, &quote(&new), body, build.contract) {
            if let Err(e) = self.run(&s, &what) {
                let _ = self.run(&format!("DROP TABLE IF EXISTS {}", quote(&new)), "drop the failed build");
                return Err(e);
            }
        }
        if let Some(key) = build.unique_key {
            let k: Vec<String> = key.iter().map(|c| quote(c)).collect();
            if let Err(e) = self.run(
                &format!(
                    "ALTER TABLE {} ADD UNIQUE INDEX {} ({})",
                    quote(&new),
                    quote(&format!("{name}__sluice_key")),
                    k.join(", ")
                ),
                &format!("index {name} on its unique key"),
            ) {
                let _ = self.run(&format!("DROP TABLE IF EXISTS {}", quote(&new)), "drop the failed build");
                return Err(e);
            }
        }
        match self.table_kind(name)?.as_deref() {
            Some("BASE TABLE") => {
                self.run(
                    &format!("RENAME TABLE {} TO {}, {} TO {}", quote(name), quote(&old), quote(&new), quote(name)),
                    &format!("swap in {name}"),
                )?;
                self.run(&format!("DROP TABLE {}", quote(&old)), "drop the old table")
            }
            Some(_) => {
                self.run(&format!("DROP VIEW {}", quote(name)), "drop the old view")?;
                self.run(&format!("RENAME TABLE {} TO {}", quote(&new), quote(name)), &format!("swap in {name}"))
            }
            None => self.run(&format!("RENAME TABLE {} TO {}", quote(&new), quote(name)), &format!("swap in {name}")),
        }
    }
}

/// Streams a result's rows into `sink` (text or binary protocol alike).
async fn drain<P: mysql_async::prelude::Protocol>(
    mut res: mysql_async::QueryResult<'_, 'static, P>,
    sink: &mut dyn RowSink,
) -> Result<u64> {
    use mysql_async::consts::ColumnType as C;
    let cols = res.columns().map(|c| c.to_vec()).unwrap_or_default();
    let names: Vec<String> = cols.iter().map(|c| c.name_str().into_owned()).collect();
    sink.columns(&names)?;
    let kinds: Vec<(C, u32)> = cols.iter().map(|c| (c.column_type(), c.column_length())).collect();
    let mut n = 0u64;
    while let Some(row) = res.next().await.map_err(|e| my_err(e, "read query results"))? {
        let mut texts: Vec<Option<String>> = Vec::with_capacity(names.len());
        for i in 0..names.len() {
            texts.push(match row.as_ref(i) {
                None | Some(Value::NULL) => None,
                Some(Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                Some(v) => Some(v.as_sql(true).trim_matches('\'').to_string()),
            });
        }
        let mut vals = Vec::with_capacity(names.len());
        for (i, t) in texts.iter().enumerate() {
            let Some(s) = t else {
                vals.push(Val::Null);
                continue;
            };
            vals.push(match kinds[i] {
                (C::MYSQL_TYPE_TINY, 1) => Val::Bool(s != "0"),
                (
                    C::MYSQL_TYPE_TINY
                    | C::MYSQL_TYPE_SHORT
                    | C::MYSQL_TYPE_LONG
                    | C::MYSQL_TYPE_INT24
                    | C::MYSQL_TYPE_LONGLONG,
                    _,
                ) => s.parse().map(Val::Int).unwrap_or(Val::Text(s)),
                (C::MYSQL_TYPE_NEWDECIMAL | C::MYSQL_TYPE_DECIMAL, _) => Val::Dec(s),
                (C::MYSQL_TYPE_DOUBLE | C::MYSQL_TYPE_FLOAT, _) => s.parse().map(Val::Float).unwrap_or(Val::Text(s)),
                (
                    C::MYSQL_TYPE_DATETIME
                    | C::MYSQL_TYPE_TIMESTAMP
                    | C::MYSQL_TYPE_DATETIME2
                    | C::MYSQL_TYPE_TIMESTAMP2,
                    _,
                ) => {
                    // DATETIME(6) pads the fraction: print as the other warehouses do.
                    match crate::types::parse_value(
                        &Column::new("t", ColumnType::Timestamp),
                        s.as_bytes(),
                        false,
                        &Default::default(),
                    ) {
                        Ok(Val::Ts(m)) => Val::Ts(m),
                        _ => Val::Text(s),
                    }
                }
                _ => Val::Text(s),
            });
        }
        sink.row(&vals)?;
        n += 1;
    }
    Ok(n)
}

/// MySQL's and MariaDB's SQL.
pub struct MysqlDialect;

impl Dialect for MysqlDialect {
    fn quote(&self, ident: &str) -> String {
        quote(ident)
    }
    fn param(&self, _i: usize, _ty: ColumnType) -> String {
        "?".into()
    }
    fn sql_type(&self, t: ColumnType) -> String {
        sql_type(t)
    }
    fn begin(&self) -> Option<&'static str> {
        Some("START TRANSACTION")
    }
    fn transactional_ddl(&self) -> bool {
        false
    }
    fn create_temp_as(&self, name: &str, select: &str) -> String {
        format!("CREATE TEMPORARY TABLE {} AS\n{select}", quote(name))
    }
    fn temp_relation(&self, name: &str) -> String {
        quote(name)
    }
    fn drop_temp(&self, name: &str) -> String {
        format!("DROP TEMPORARY TABLE IF EXISTS {}", quote(name))
    }
    fn upsert(&self, table: &str, src: &str, cols: &[String], key: &[String]) -> String {
        let c: Vec<String> = cols.iter().map(|c| quote(c)).collect();
        let mut set: Vec<String> =
            cols.iter().filter(|c| !key.contains(c)).map(|c| format!("{0} = VALUES({0})", quote(c))).collect();
        if set.is_empty() {
            set = key.iter().map(|c| format!("{0} = {0}", quote(c))).collect();
        }
        format!(
            "INSERT INTO {table} ({0}) SELECT {0} FROM {src} ON DUPLICATE KEY UPDATE {1}",
            c.join(", "),
            set.join(", ")
        )
    }
    fn null_safe_differ(&self, a: &str, b: &str) -> String {
        format!("NOT ({a} <=> {b})")
    }
    fn update_from(&self, target: &str, col: &str, expr: &str, source: &str, on: &str, cond: &str) -> String {
        format!("UPDATE {target} JOIN {source} ON {on} SET {target}.{} = {expr} WHERE {cond}", quote(col))
    }
}

const STAGE: &str = "__sluice_stage";

type LoadTask = tokio::task::JoinHandle<(Conn, std::result::Result<u16, mysql_async::Error>)>;

struct MyLoad<'a> {
    my: &'a mut Mysql,
    /// The LOAD DATA statement (started again for each input of a merge).
    load_sql: String,
    table: String,
    columns: Vec<String>,
    mode: LoadMode,
    key: Vec<String>,
    run_id: String,
    sender: Option<mpsc::Sender<std::io::Result<Bytes>>>,
    task: Option<LoadTask>,
    buf: BytesMut,
    scratch: Vec<u8>,
    rows_sent: u64,
    /// Row number → source line, as runs of consecutive lines.
    runs: Vec<(u64, u64)>,
    spool: Option<(std::path::PathBuf, std::io::BufWriter<std::fs::File>)>,
    open: bool,
}

/// Runs a LOAD DATA LOCAL query fed from a channel; returns the connection and
/// the server's warning count.
fn spawn_load(rt: &Handle, mut conn: Conn, sql: String, rx: mpsc::Receiver<std::io::Result<Bytes>>) -> LoadTask {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    conn.set_infile_handler(async move { Ok(Box::pin(stream) as mysql_async::InfileData) });
    rt.spawn(async move {
        let res = async {
            let r = conn.query_iter(sql).await?;
            let w = r.warnings();
            r.drop_result().await?;
            Ok::<u16, mysql_async::Error>(w)
        }
        .await;
        (conn, res)
    })
}

impl MyLoad<'_> {
    fn start(&mut self, sql: String) {
        let (tx, rx) = mpsc::channel(4);
        let conn = self.my.conn.take().expect("connected");
        self.task = Some(spawn_load(&self.my.rt, conn, sql, rx));
        self.sender = Some(tx);
    }

    fn send(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let bytes = self.buf.split().freeze();
        let s = self.sender.as_ref().expect("LOAD DATA is running");
        if s.blocking_send(Ok(bytes)).is_err() {
            // The query ended early: its error says why.
            return Err(self
                .finish_load()
                .err()
                .unwrap_or_else(|| Error::external("LOAD DATA ended before all rows were sent", true)));
        }
        Ok(())
    }

    /// Ends the stream and waits for the server; fails on any warning.
    fn finish_load(&mut self) -> Result<()> {
        self.sender = None;
        let Some(task) = self.task.take() else { return Ok(()) };
        let (conn, res) =
            self.my.rt.block_on(task).map_err(|e| Error::internal(format!("the LOAD DATA task failed: {e}")))?;
        self.my.conn = Some(conn);
        let warnings = res.map_err(|e| my_err(e, &format!("load rows into `{}`", self.table)))?;
        if warnings > 0 {
            let rows = self.my.rows("SHOW WARNINGS LIMIT 10", "read the server's warnings")?;
            let list: Vec<String> = rows
                .into_iter()
                .map(|r| {
                    let msg = r.get(2).cloned().flatten().unwrap_or_default();
                    self.explain_row(&msg)
                })
                .collect();
            return Err(Error::DataMsg(format!(
                "the server raised {warnings} warning{} while loading `{}`, so nothing was loaded:\n  {}",
                if warnings == 1 { "" } else { "s" },
                self.table,
                list.join("\n  ")
            )));
        }
        Ok(())
    }

    /// Adds the source line to a server message that names a row number.
    fn explain_row(&self, msg: &str) -> String {
        let Some(i) = msg.rfind("at row ") else { return msg.to_string() };
        let Ok(row) = msg[i + 7..].trim().parse::<u64>() else { return msg.to_string() };
        let idx = self.runs.partition_point(|(start, _)| *start <= row);
        match idx.checked_sub(1).map(|k| self.runs[k]) {
            Some((start, line)) => format!("{msg} (source line {})", line + (row - start)),
            None => msg.to_string(),
        }
    }
}

impl LoadTx for MyLoad<'_> {
    fn write(&mut self, batch: &RowBatch) -> Result<()> {
        if self.sender.is_none() {
            self.start(self.load_sql.clone());
        }
        for r in 0..batch.len() {
            self.rows_sent += 1;
            let line = batch.lines[r];
            match self.runs.last() {
                Some((start, l)) if l + (self.rows_sent - start) == line => {}
                _ => self.runs.push((self.rows_sent, line)),
            }
            for (i, cell) in batch.row(r).iter().enumerate() {
                if i > 0 {
                    self.buf.put_u8(b'\t');
                }
                encode(batch.val(*cell), &mut self.buf, &mut self.scratch);
            }
            self.buf.put_u8(b'\n');
            if self.buf.len() >= 1 << 20 {
                self.send()?;
            }
        }
        Ok(())
    }

    fn write_rejects(&mut self, rejects: &[RowError]) -> Result<()> {
        super::spool_rejects(&mut self.spool, "tsv", &self.table, &self.run_id, rejects, &|s, out| {
            escape(s.as_bytes(), out)
        })
    }

    fn end_input(&mut self, label: &str) -> Result<()> {
        if self.mode != LoadMode::Merge {
            return Ok(());
        }
        if self.sender.is_some() {
            self.send()?;
            self.finish_load()?;
        }
        let t = quote(&self.table);
        let keys: Vec<String> = self.key.iter().map(|k| quote(k)).collect();
        let stage = quote(STAGE);
        let dups = self.my.rows(
            &format!(
                "SELECT CONCAT_WS(', ', {k}) FROM {stage} GROUP BY {k} HAVING COUNT(*) > 1 LIMIT 5",
                k = keys.join(", ")
            ),
            "check merge keys",
        )?;
        if !dups.is_empty() {
            let list: Vec<String> = dups.into_iter().filter_map(|r| r[0].clone()).collect();
            return Err(super::repeated_merge_keys(label, &self.key, &list));
        }
        let cond: Vec<String> = keys.iter().map(|k| format!("s.{k} = t.{k}")).collect();
        let cols: Vec<String> = self.columns.iter().map(|c| quote(c)).collect();
        self.my
            .run(&format!("DELETE t FROM {t} t JOIN {stage} s ON {}", cond.join(" AND ")), "merge the staged rows")?;
        self.my.run(
            &format!("INSERT INTO {t} ({c}) SELECT {c} FROM {stage}", c = cols.join(", ")),
            "merge the staged rows",
        )?;
        // Not TRUNCATE: it would end the transaction.
        self.my.run(&format!("DELETE FROM {stage}"), "empty the staging table")?;
        // Row numbers in the server's warnings start again with the next input.
        self.rows_sent = 0;
        self.runs.clear();
        Ok(())
    }

    fn commit(mut self: Box<Self>, records: &[LoadRecord]) -> Result<()> {
        if self.sender.is_some() {
            self.send()?;
            self.finish_load()?;
        }
        if let Some((path, w)) = self.spool.take() {
            let res = (|| {
                drop(w.into_inner().map_err(|e| Error::io("write", &path, e.into_error()))?);
                let data = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
                let sql = format!(
                    "LOAD DATA LOCAL INFILE 'sluice-rejects' INTO TABLE {} CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' (target, file, line, column_name, value, error, record, run_id)",
                    quote(REJECTS_TABLE)
                );
                let (tx, rx) = mpsc::channel(2);
                let conn = self.my.conn.take().expect("connected");
                let task = spawn_load(&self.my.rt, conn, sql, rx);
                for chunk in data.chunks(1 << 20) {
                    let _ = tx.blocking_send(Ok(Bytes::copy_from_slice(chunk)));
                }
                drop(tx);
                let (conn, res) = self
                    .my
                    .rt
                    .block_on(task)
                    .map_err(|e| Error::internal(format!("the LOAD DATA task failed: {e}")))?;
                self.my.conn = Some(conn);
                res.map_err(|e| my_err(e, "record rejected rows"))?;
                Ok::<(), Error>(())
            })();
            let _ = std::fs::remove_file(&path);
            res?;
        }
        let table = self.table.clone();
        let record_loads = |my: &mut Mysql| -> Result<()> {
            for r in records {
                my.run(
                    &format!(
                        "INSERT INTO {} (target, object, sha256, `rows`, run_id) VALUES ({}, {}, {}, {}, {})",
                        quote(LOADS_TABLE),
                        Mysql::literal(&table),
                        Mysql::literal(&r.object),
                        Mysql::literal(&r.sha256),
                        r.rows,
                        Mysql::literal(&r.run_id)
                    ),
                    "record the load",
                )?;
            }
            Ok(())
        };
        match self.mode {
            LoadMode::Append | LoadMode::Merge => {
                record_loads(self.my)?;
                self.my.run("COMMIT", "commit the load")?;
                if self.mode == LoadMode::Merge {
                    self.my
                        .run(&format!("DROP TEMPORARY TABLE IF EXISTS {}", quote(STAGE)), "drop the staging table")?;
                }
            }
            LoadMode::Replace => {
                let t = quote(&self.table);
                self.my.run("COMMIT", "commit the new table")?;
                let new = format!("{}{NEW_SUFFIX}", self.table);
                let old = format!("{}__sluice_old", self.table);
                self.my.run(&format!("DROP TABLE IF EXISTS {}", quote(&old)), "drop a stale table")?;
                match self.my.table_kind(&self.table)?.as_deref() {
                    Some("BASE TABLE") => {
                        self.my.run(
                            &format!("RENAME TABLE {t} TO {}, {} TO {t}", quote(&old), quote(&new)),
                            "swap in the new table",
                        )?;
                        self.my.run(&format!("DROP TABLE {}", quote(&old)), "drop the old table")?;
                    }
                    Some(_) => {
                        self.my.run(&format!("DROP VIEW {t}"), "drop the old view")?;
                        self.my.run(&format!("RENAME TABLE {} TO {t}", quote(&new)), "swap in the new table")?;
                    }
                    None => self.my.run(&format!("RENAME TABLE {} TO {t}", quote(&new)), "swap in the new table")?,
                }
                self.my.run("START TRANSACTION", "start a transaction")?;
                if self.my.table_kind(LOADS_TABLE)?.is_some() {
                    self.my.run(
                        &format!("DELETE FROM {} WHERE target = {}", quote(LOADS_TABLE), Mysql::literal(&self.table)),
                        "reset load records",
                    )?;
                }
                record_loads(self.my)?;
                self.my.run("COMMIT", "record the load")?;
            }
        }
        self.open = false;
        Ok(())
    }

    fn rollback(mut self: Box<Self>) -> Result<()> {
        self.sender = None;
        if self.task.is_some() {
            let _ = self.finish_load();
        }
        self.open = false;
        if let Some((path, _)) = self.spool.take() {
            let _ = std::fs::remove_file(path);
        }
        if self.my.conn.is_some() {
            self.my.run("ROLLBACK", "roll back the load")?;
            if self.mode == LoadMode::Replace {
                let new = format!("{}{NEW_SUFFIX}", self.table);
                self.my.run(&format!("DROP TABLE IF EXISTS {}", quote(&new)), "drop the unfinished table")?;
            }
        }
        Ok(())
    }
}

impl Drop for MyLoad<'_> {
    fn drop(&mut self) {
        if let Some((path, _)) = self.spool.take() {
            let _ = std::fs::remove_file(path);
        }
        if self.open {
            self.sender = None;
            if self.task.is_some() {
                let _ = self.finish_load();
            }
            if self.my.conn.is_some() {
                let _ = self.my.run("ROLLBACK", "roll back");
            }
        }
    }
}

impl Mysql {
    /// Creates the rejects table (DDL: before any load transaction starts).
    fn prepare_rejects(&mut self) -> Result<()> {
        self.run(
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (target VARCHAR(255) NOT NULL, file TEXT, line BIGINT, column_name TEXT, value LONGTEXT, error TEXT, record LONGTEXT, run_id VARCHAR(64), rejected_at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                quote(REJECTS_TABLE)
            ),
            "create the rejects table",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_data_escapes() {
        let mut out = BytesMut::new();
        escape(b"a\tb\\c\nd\0", &mut out);
        assert_eq!(&out[..], b"a\\tb\\\\c\\nd\\0");
    }

    #[test]
    fn types_map_both_ways() {
        assert_eq!(sql_type(ColumnType::Decimal(Some((12, 2)))), "DECIMAL(12,2)");
        assert_eq!(
            column_type_of("decimal", "decimal(12,2)", None, Some(12), Some(2)),
            ColumnType::Decimal(Some((12, 2)))
        );
        assert_eq!(column_type_of("tinyint", "tinyint(1)", None, Some(3), Some(0)), ColumnType::Boolean);
        assert_eq!(column_type_of("varchar", "varchar(16)", Some(16), None, None), ColumnType::Varchar(16));
        assert_eq!(column_type_of("datetime", "datetime(6)", None, None, None), ColumnType::Timestamp);
    }
}
