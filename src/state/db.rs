//! The state store's SQL layer: one small interface over SQLite (rusqlite) and
//! PostgreSQL (tokio-postgres), so every operation is written once. Statements
//! use `$1`-style parameters (rewritten to `?1` for SQLite); values are
//! integers, text and NULLs only (times are microseconds since the epoch, in
//! UTC, and structured data is JSON text).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::error::{DbCode, Error, Result};
use crate::secret::redact_url;

/// A parameter or a result value.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    Null,
    Int(i64),
    Text(String),
}

impl V {
    pub fn int(&self) -> Option<i64> {
        match self {
            V::Int(i) => Some(*i),
            V::Text(t) => t.parse().ok(),
            V::Null => None,
        }
    }
    pub fn text(&self) -> Option<&str> {
        match self {
            V::Text(t) => Some(t),
            _ => None,
        }
    }
    pub fn string(&self) -> String {
        match self {
            V::Text(t) => t.clone(),
            V::Int(i) => i.to_string(),
            V::Null => String::new(),
        }
    }
}

impl From<i64> for V {
    fn from(i: i64) -> V {
        V::Int(i)
    }
}
impl From<u32> for V {
    fn from(i: u32) -> V {
        V::Int(i as i64)
    }
}
impl From<&str> for V {
    fn from(s: &str) -> V {
        V::Text(s.to_string())
    }
}
impl From<String> for V {
    fn from(s: String) -> V {
        V::Text(s)
    }
}
impl From<&String> for V {
    fn from(s: &String) -> V {
        V::Text(s.clone())
    }
}
impl<T: Into<V>> From<Option<T>> for V {
    fn from(o: Option<T>) -> V {
        o.map(Into::into).unwrap_or(V::Null)
    }
}

impl ToSql for V {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            V::Null => Ok(IsNull::Yes),
            V::Int(i) => match *ty {
                Type::INT2 => (*i as i16).to_sql(ty, out),
                Type::INT4 => (*i as i32).to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            V::Text(s) => match *ty {
                Type::INT8 => s.parse::<i64>()?.to_sql(ty, out),
                _ => s.as_str().to_sql(ty, out),
            },
        }
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

pub type Row = Vec<V>;

/// Statements inside one transaction.
pub trait Tx {
    /// Runs a statement; returns the rows it changed.
    fn exec(&mut self, sql: &str, params: &[V]) -> Result<u64>;
    fn query(&mut self, sql: &str, params: &[V]) -> Result<Vec<Row>>;
    fn is_postgres(&self) -> bool;
    /// Wakes idle workers once the transaction commits (`NOTIFY` on
    /// PostgreSQL, a condition variable in this process on SQLite).
    fn notify(&mut self) -> Result<()>;
    /// Rolls the transaction back instead of committing it, though the
    /// closure returns `Ok`.
    fn abort(&mut self);
}

/// Refuses text parameters that hold a NUL character: PostgreSQL's text
/// cannot store one (it fails with SQLSTATE 22021), so neither backend takes
/// them, and a request carrying one is the caller's error, not the store's.
fn check_params(params: &[V]) -> Result<()> {
    match params.iter().find_map(|p| p.text().filter(|t| t.contains('\0'))) {
        Some(t) => Err(Error::user(format!(
            "invalid value \"{}\": text with a NUL character (\\0) cannot be stored or looked up",
            t.escape_debug()
        ))),
        None => Ok(()),
    }
}

/// The first row's first value, if any.
pub fn first(rows: &[Row]) -> Option<&V> {
    rows.first().and_then(|r| r.first())
}

/// The channel idle workers listen on.
pub const CHANNEL: &str = "sluice_tasks";

/// Wakes waiters in this process (SQLite, and a PostgreSQL fallback).
#[derive(Default)]
pub struct Bell {
    rung: Mutex<u64>,
    cv: Condvar,
}

impl Bell {
    pub fn ring(&self) {
        *self.rung.lock().expect("bell") += 1;
        self.cv.notify_all();
    }
    /// Waits until rung after `seen` or for `timeout`; returns the new count.
    pub fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let g = self.rung.lock().expect("bell");
        let (g, _) = self.cv.wait_timeout_while(g, timeout, |n| *n == seen).expect("bell");
        *g
    }
    pub fn count(&self) -> u64 {
        *self.rung.lock().expect("bell")
    }
}

/// A connection pool to the state database.
pub enum Db {
    Sqlite(SqliteDb),
    Postgres(PgDb),
}

impl Db {
    /// Opens `sqlite://PATH` (relative to `base`) or `postgres://…`.
    pub fn open(url: &str, base: &std::path::Path) -> Result<Db> {
        Db::open_as(url, base, true)
    }

    /// Like `open`, but a PostgreSQL store is not connected to yet: its
    /// first transaction connects (for services that start before it).
    pub fn pending(url: &str, base: &std::path::Path) -> Result<Db> {
        Db::open_as(url, base, false)
    }

    fn open_as(url: &str, base: &std::path::Path, connect: bool) -> Result<Db> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            if connect { PgDb::open(url).map(Db::Postgres) } else { PgDb::pending(url).map(Db::Postgres) }
        } else if let Some(rest) = url.strip_prefix("sqlite://") {
            let path = if rest.starts_with('/') { std::path::PathBuf::from(rest) } else { base.join(rest) };
            crate::project::sqlite_folder(&path, base, url)?;
            SqliteDb::open(&path).map(Db::Sqlite)
        } else {
            Err(Error::user(format!(
                "unsupported state store URL {}: use sqlite://PATH or postgres://…",
                redact_url(url)
            )))
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    pub fn describe(&self) -> String {
        match self {
            Db::Sqlite(s) => format!("sqlite://{}", s.path.display()),
            Db::Postgres(p) => p.shown.clone(),
        }
    }

    pub fn bell(&self) -> &Arc<Bell> {
        match self {
            Db::Sqlite(s) => &s.bell,
            Db::Postgres(p) => &p.bell,
        }
    }

    /// Runs read-only statements without a transaction around them (each
    /// statement sees its own snapshot): two round trips fewer than `tx` on
    /// PostgreSQL, and no write lock on SQLite. For single-statement reads.
    pub fn read<T>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        match self {
            Db::Sqlite(s) => {
                let conn = s.conn.lock().expect("state connection");
                let mut t = SqliteTx { conn: &conn, rang: false, abort: false };
                f(&mut t)
            }
            Db::Postgres(p) => {
                let popped = p.idle.lock().expect("pool").pop();
                let mut conn = match popped {
                    Some(c) if !c.client.is_closed() => c,
                    _ => p.connect()?,
                };
                let res = {
                    let mut t = PgTx { rt: &p.rt, conn: &mut conn, channel: &p.channel, abort: false };
                    f(&mut t)
                };
                if !conn.client.is_closed() {
                    p.idle.lock().expect("pool").push(conn);
                }
                res
            }
        }
    }

    /// Runs `f` in one transaction, committed when it returns `Ok`. A
    /// transaction that lost a race (a serialization failure, a deadlock, a
    /// busy SQLite file) is tried again.
    pub fn tx<T>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        let mut tries = 0;
        loop {
            tries += 1;
            let r = match self {
                Db::Sqlite(s) => s.tx(&mut f),
                Db::Postgres(p) => p.tx(&mut f),
            };
            match r {
                Err(Retry::Again(e)) if tries < 20 => {
                    std::thread::sleep(Duration::from_millis(2 * tries));
                    let _ = e;
                }
                Err(Retry::Again(e)) | Err(Retry::Fail(e)) => return Err(e),
                Ok(v) => return Ok(v),
            }
        }
    }
}

enum Retry {
    Again(Error),
    Fail(Error),
}

pub struct SqliteDb {
    pub path: std::path::PathBuf,
    conn: Mutex<rusqlite::Connection>,
    bell: Arc<Bell>,
}

impl SqliteDb {
    fn open(path: &std::path::Path) -> Result<SqliteDb> {
        let conn = rusqlite::Connection::open(path)
            .map_err(|e| Error::external(format!("cannot open the state store {}: {e}", path.display()), false))?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(|e| sqlite_err(e, "set up the state store"))?;
        // Switching a new file to WAL takes an exclusive lock, which SQLite
        // may refuse at once (without waiting) while other processes open
        // the same new file: try again for a while.
        let mut tries = 0;
        loop {
            match conn
                .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if (f.code == rusqlite::ErrorCode::DatabaseBusy
                        || f.code == rusqlite::ErrorCode::DatabaseLocked)
                        && tries < 200 =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(sqlite_err(e, "set up the state store")),
            }
        }
        Ok(SqliteDb { path: path.to_path_buf(), conn: Mutex::new(conn), bell: Arc::new(Bell::default()) })
    }

    fn tx<T>(&self, f: &mut impl FnMut(&mut dyn Tx) -> Result<T>) -> std::result::Result<T, Retry> {
        let conn = self.conn.lock().expect("state connection");
        conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| classify_sqlite(e, "start a transaction"))?;
        let mut t = SqliteTx { conn: &conn, rang: false, abort: false };
        match f(&mut t) {
            Ok(v) if t.abort => {
                conn.execute_batch("ROLLBACK").map_err(|e| classify_sqlite(e, "roll back"))?;
                Ok(v)
            }
            Ok(v) => {
                let rang = t.rang;
                conn.execute_batch("COMMIT").map_err(|e| classify_sqlite(e, "commit"))?;
                if rang {
                    self.bell.ring();
                }
                Ok(v)
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(Retry::Fail(e))
            }
        }
    }
}

/// A SQLite error of the state store, its extended result code kept as data.
fn sqlite_err(e: rusqlite::Error, what: &str) -> Error {
    let message = format!("state store: cannot {what}: {e}");
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => Error::Db { message, code: DbCode::Sqlite(f.extended_code) },
        rusqlite::Error::SqlInputError { error, .. } => {
            Error::Db { message, code: DbCode::Sqlite(error.extended_code) }
        }
        _ => Error::external(message, false),
    }
}

/// A failure to start or end a transaction: one that lost a race (a busy
/// file) is run again.
fn classify_sqlite(e: rusqlite::Error, what: &str) -> Retry {
    retry_on_conflict(sqlite_err(e, what))
}

/// Runs a transaction that lost a race again; fails on anything else.
fn retry_on_conflict(e: Error) -> Retry {
    if e.db_code().is_some_and(|c| c.is_conflict()) { Retry::Again(e) } else { Retry::Fail(e) }
}

struct SqliteTx<'a> {
    conn: &'a rusqlite::Connection,
    rang: bool,
    abort: bool,
}

/// `$1` → `?1`, outside quoted strings.
fn sqlite_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut in_str = false;
    for c in sql.chars() {
        if c == '\'' {
            in_str = !in_str;
        }
        out.push(if c == '$' && !in_str { '?' } else { c });
    }
    out
}

fn to_sqlite(v: &V) -> rusqlite::types::Value {
    match v {
        V::Null => rusqlite::types::Value::Null,
        V::Int(i) => rusqlite::types::Value::Integer(*i),
        V::Text(t) => rusqlite::types::Value::Text(t.clone()),
    }
}

impl Tx for SqliteTx<'_> {
    fn exec(&mut self, sql: &str, params: &[V]) -> Result<u64> {
        check_params(params)?;
        let mut st = self.conn.prepare_cached(&sqlite_sql(sql)).map_err(|e| sqlite_err(e, "prepare a statement"))?;
        let ps: Vec<rusqlite::types::Value> = params.iter().map(to_sqlite).collect();
        st.execute(rusqlite::params_from_iter(ps)).map(|n| n as u64).map_err(|e| sqlite_err(e, "write"))
    }

    fn query(&mut self, sql: &str, params: &[V]) -> Result<Vec<Row>> {
        check_params(params)?;
        let mut st = self.conn.prepare_cached(&sqlite_sql(sql)).map_err(|e| sqlite_err(e, "prepare a query"))?;
        let n = st.column_count();
        let ps: Vec<rusqlite::types::Value> = params.iter().map(to_sqlite).collect();
        let mut rows = st.query(rusqlite::params_from_iter(ps)).map_err(|e| sqlite_err(e, "read"))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| sqlite_err(e, "read"))? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(match r.get_ref(i).map_err(|e| sqlite_err(e, "read"))? {
                    rusqlite::types::ValueRef::Null => V::Null,
                    rusqlite::types::ValueRef::Integer(x) => V::Int(x),
                    rusqlite::types::ValueRef::Real(x) => V::Int(x as i64),
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        V::Text(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            out.push(row);
        }
        Ok(out)
    }

    fn is_postgres(&self) -> bool {
        false
    }

    fn notify(&mut self) -> Result<()> {
        self.rang = true;
        Ok(())
    }

    fn abort(&mut self) {
        self.abort = true;
    }
}

pub struct PgDb {
    url: String,
    pub shown: String,
    /// `?schema=NAME`: the store's tables live in this schema (created if missing).
    schema: Option<String>,
    /// The NOTIFY channel (one per schema).
    channel: String,
    /// How long a connection and its handshake may take.
    timeout: Duration,
    /// The URL's TLS settings (`sslmode`, `sslrootcert`) and the connector
    /// made from them once.
    tls: crate::warehouse::tls::Tls,
    connector: crate::warehouse::tls::PgTls,
    rt: tokio::runtime::Handle,
    idle: Mutex<Vec<PgConn>>,
    bell: Arc<Bell>,
}

struct PgConn {
    client: tokio_postgres::Client,
    statements: HashMap<String, tokio_postgres::Statement>,
}

impl PgDb {
    fn open(url: &str) -> Result<PgDb> {
        let db = PgDb::pending(url)?;
        let c = db.connect()?;
        db.idle.lock().expect("pool").push(c);
        Ok(db)
    }

    /// The pool, not connected yet: the first transaction connects.
    fn pending(url: &str) -> Result<PgDb> {
        let schema = crate::secret::url_params(url)
            .into_iter()
            .find(|(k, v)| *k == "schema" && !v.is_empty())
            .map(|(_, v)| v.to_string());
        let timeout = crate::warehouse::connect_timeout(url)?;
        let shown = redact_url(url);
        let tls = crate::warehouse::tls::Tls::from_url(url, &shown)?;
        let connector = tls.postgres()?;
        let channel = match &schema {
            None => CHANNEL.to_string(),
            Some(s) => format!(
                "{CHANNEL}_{}",
                s.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>()
            ),
        };
        Ok(PgDb {
            url: url.to_string(),
            shown,
            schema,
            channel,
            timeout,
            tls,
            connector,
            rt: crate::warehouse::runtime(),
            idle: Mutex::new(Vec::new()),
            bell: Arc::new(Bell::default()),
        })
    }

    fn config(&self) -> Result<tokio_postgres::Config> {
        let (mut config, _) = crate::warehouse::postgres::pg_config(&self.url, &self.shown, &["schema"])?;
        if config.get_application_name().is_none() {
            config.application_name("sluice-state");
        }
        config.connect_timeout(self.timeout);
        Ok(config)
    }

    fn connect(&self) -> Result<PgConn> {
        let config = self.config()?;
        let (client, conn) =
            crate::warehouse::block_on_within(&self.rt, self.timeout, config.connect(self.connector.clone()))
                .ok_or_else(|| crate::warehouse::connect_timed_out(&self.shown, self.timeout, "PostgreSQL"))?
                .map_err(|e| {
                    crate::warehouse::postgres::pg_connect_err(
                        e,
                        &self.tls,
                        &config,
                        &format!("connect to the state store {}", self.shown),
                    )
                })?;
        self.rt.spawn(async move {
            let _ = conn.await;
        });
        let mut setup = "SET TimeZone = 'UTC';".to_string();
        if let Some(s) = &self.schema {
            let q = format!("\"{}\"", s.replace('"', "\"\""));
            crate::warehouse::postgres::create_schema(&self.rt, &client, &q)?;
            setup.push_str(&format!("SET search_path = {q};"));
        }
        self.rt
            .block_on(client.batch_execute(&setup))
            .map_err(|e| crate::warehouse::postgres::pg_err(e, "set up the state store session"))?;
        Ok(PgConn { client, statements: HashMap::new() })
    }

    /// Takes the session-level advisory lock `key` on a connection of its
    /// own; `None` when another session holds it. The lock lasts as long as
    /// the returned guard (and its connection).
    pub fn try_advisory_lock(&self, key: i64) -> Result<Option<AdvisoryLock>> {
        let c = self.connect()?;
        let row = self
            .rt
            .block_on(c.client.query_one("SELECT pg_try_advisory_lock($1)", &[&key]))
            .map_err(|e| crate::warehouse::postgres::pg_err(e, "take the scheduler lock"))?;
        Ok(if row.get::<_, bool>(0) { Some(AdvisoryLock { client: c.client }) } else { None })
    }

    /// A dedicated connection that listens on the workers' channel; each
    /// notification rings `bell`. When that connection drops, waiters are
    /// woken (they poll meanwhile) and it is opened again every second.
    pub fn listen(&self, bell: Arc<Bell>) -> Result<()> {
        let config = self.config()?;
        let channel = self.channel.clone();
        // The first connection is made here, so a wrong URL is an error now.
        let timeout = self.timeout;
        let tls = self.connector.clone();
        let first =
            crate::warehouse::block_on_within(&self.rt, timeout, listen_once(&config, &tls, &channel, bell.clone()))
                .ok_or_else(|| crate::warehouse::connect_timed_out(&self.shown, timeout, "PostgreSQL"))?
                .map_err(|e| {
                    crate::warehouse::postgres::pg_err(e, &format!("listen for new tasks on {}", self.shown))
                })?;
        self.rt.spawn(async move {
            let mut current = Some(first);
            loop {
                if let Some((client, driver)) = current.take() {
                    let _ = driver.await;
                    drop(client);
                }
                bell.ring();
                tokio::time::sleep(Duration::from_secs(1)).await;
                current = tokio::time::timeout(timeout, listen_once(&config, &tls, &channel, bell.clone()))
                    .await
                    .ok()
                    .and_then(|r| r.ok());
            }
        });
        Ok(())
    }

    fn tx<T>(&self, f: &mut impl FnMut(&mut dyn Tx) -> Result<T>) -> std::result::Result<T, Retry> {
        let popped = self.idle.lock().expect("pool").pop();
        let mut conn = match popped {
            Some(c) if !c.client.is_closed() => c,
            _ => self.connect().map_err(Retry::Fail)?,
        };
        let res = (|| {
            self.rt.block_on(conn.client.batch_execute("BEGIN")).map_err(|e| classify_pg(e, "start a transaction"))?;
            let mut t = PgTx { rt: &self.rt, conn: &mut conn, channel: &self.channel, abort: false };
            match f(&mut t) {
                Ok(v) if t.abort => {
                    self.rt.block_on(conn.client.batch_execute("ROLLBACK")).map_err(|e| classify_pg(e, "roll back"))?;
                    Ok(v)
                }
                Ok(v) => {
                    self.rt.block_on(conn.client.batch_execute("COMMIT")).map_err(|e| classify_pg(e, "commit"))?;
                    Ok(v)
                }
                Err(e) => {
                    let _ = self.rt.block_on(conn.client.batch_execute("ROLLBACK"));
                    Err(retry_on_conflict(e))
                }
            }
        })();
        if !conn.client.is_closed() {
            self.idle.lock().expect("pool").push(conn);
        }
        res
    }
}

/// Connects and listens on `channel`; the returned task drives the
/// connection (ringing `bell` on each notification) until it drops.
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &crate::warehouse::tls::PgTls,
    channel: &str,
    bell: Arc<Bell>,
) -> std::result::Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
    use futures_util::StreamExt;
    let (client, mut conn) = config.connect(tls.clone()).await?;
    let driver = tokio::spawn(async move {
        let mut stream = Box::pin(futures_util::stream::poll_fn(move |cx| conn.poll_message(cx)));
        while let Some(m) = stream.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(_)) => bell.ring(),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    Ok((client, driver))
}

fn classify_pg(e: tokio_postgres::Error, what: &str) -> Retry {
    retry_on_conflict(crate::warehouse::postgres::pg_err(e, &format!("{what} in the state store")))
}

/// A held advisory lock (see `PgDb::try_advisory_lock`).
pub struct AdvisoryLock {
    client: tokio_postgres::Client,
}

impl AdvisoryLock {
    /// Whether the lock is still held (its connection is alive).
    pub fn held(&self) -> bool {
        !self.client.is_closed()
    }
}

struct PgTx<'a> {
    rt: &'a tokio::runtime::Handle,
    conn: &'a mut PgConn,
    channel: &'a str,
    abort: bool,
}

impl PgTx<'_> {
    fn statement(&mut self, sql: &str) -> Result<tokio_postgres::Statement> {
        if let Some(s) = self.conn.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self
            .rt
            .block_on(self.conn.client.prepare(sql))
            .map_err(|e| crate::warehouse::postgres::pg_err(e, "prepare a state store statement"))?;
        self.conn.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

impl Tx for PgTx<'_> {
    fn exec(&mut self, sql: &str, params: &[V]) -> Result<u64> {
        check_params(params)?;
        let st = self.statement(sql)?;
        let ps: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        self.rt
            .block_on(self.conn.client.execute(&st, &ps))
            .map_err(|e| crate::warehouse::postgres::pg_err(e, "write to the state store"))
    }

    fn query(&mut self, sql: &str, params: &[V]) -> Result<Vec<Row>> {
        check_params(params)?;
        let st = self.statement(sql)?;
        let ps: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = self
            .rt
            .block_on(self.conn.client.query(&st, &ps))
            .map_err(|e| crate::warehouse::postgres::pg_err(e, "read the state store"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut row = Vec::with_capacity(r.len());
            for (i, c) in r.columns().iter().enumerate() {
                let v = match *c.type_() {
                    Type::INT8 => r.get::<_, Option<i64>>(i).map(V::Int),
                    Type::INT4 => r.get::<_, Option<i32>>(i).map(|x| V::Int(x as i64)),
                    Type::INT2 => r.get::<_, Option<i16>>(i).map(|x| V::Int(x as i64)),
                    Type::BOOL => r.get::<_, Option<bool>>(i).map(|x| V::Int(x as i64)),
                    Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                        r.get::<_, Option<String>>(i).map(V::Text)
                    }
                    ref t => {
                        // The store's SQL selects integers and text only;
                        // anything else is a mistake in that SQL.
                        return Err(Error::internal(format!(
                            "the state store's query returned column {i} as {t}, not an integer or text: {sql}"
                        )));
                    }
                };
                row.push(v.unwrap_or(V::Null));
            }
            out.push(row);
        }
        Ok(out)
    }

    fn is_postgres(&self) -> bool {
        true
    }

    fn notify(&mut self) -> Result<()> {
        let sql = format!("SELECT pg_notify('{}', '')", self.channel);
        self.exec(&sql, &[]).map(|_| ())
    }

    fn abort(&mut self) {
        self.abort = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_parameters_become_question_marks_outside_strings() {
        assert_eq!(sqlite_sql("SELECT $1, '$2' FROM t WHERE a = $2"), "SELECT ?1, '$2' FROM t WHERE a = ?2");
    }

    #[test]
    fn text_with_a_nul_is_the_callers_error() {
        let e = check_params(&[V::Int(1), V::from("a\0b")]).unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::User);
        assert_eq!(
            e.to_string(),
            "invalid value \"a\\0b\": text with a NUL character (\\0) cannot be stored or looked up"
        );
        assert!(check_params(&[V::from("ok"), V::Null]).is_ok());
    }
}
