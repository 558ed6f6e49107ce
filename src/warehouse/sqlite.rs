//! The embedded default warehouse: a SQLite file. Loads are prepared inserts in
//! one `BEGIN IMMEDIATE` transaction (replace drops and recreates the table
//! inside it), so a failed or killed load leaves the file as it was (WAL).
//! Decimals follow SQLite's NUMERIC affinity: exact up to 15 significant digits.

use std::collections::BTreeSet;
use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode};

use super::{
    Backend, Build, Change, Dialect, ErrorAt, LOADS_TABLE, LoadRecord, LoadTarget, LoadTx, Naming, REJECTS_TABLE,
    RowSink, Warehouse, build_table_sql, format_scaled,
};
use crate::error::{DbCode, Error, Result, RowError};
use crate::project::{LoadMode, Materialized};
use crate::types::{Cell, Column, ColumnType, RowBatch, Schema, Val};

pub struct Sqlite {
    conn: Connection,
    shown: String,
    /// The database file (none in memory).
    path: Option<std::path::PathBuf>,
    /// This connection's turn to load (a lock on a file beside the database).
    load_lock: Option<std::fs::File>,
    interrupt: std::sync::Arc<LiteInterrupt>,
    /// Where the last failed statement's error is, when SQLite says.
    last_at: std::cell::RefCell<Option<ErrorAt>>,
    /// The attached database relations are made in (`use_schema`); `None`: main.
    schema: Option<String>,
    /// Databases attached as schemas (`<schema>.db` beside the main file).
    attached: BTreeSet<String>,
}

/// SQLite's interrupt: the running statement fails with SQLITE_INTERRUPT,
/// and a wait for the load lock gives up.
struct LiteInterrupt(rusqlite::InterruptHandle, std::sync::atomic::AtomicBool);

impl super::Interrupt for LiteInterrupt {
    fn interrupt(&self) {
        self.1.store(true, std::sync::atomic::Ordering::SeqCst);
        self.0.interrupt();
    }
}

impl Sqlite {
    /// Opens `sqlite://PATH` (relative to `base`), `sqlite:///ABS` or `sqlite::memory:`.
    pub fn open(url: &str, base: &Path) -> Result<Sqlite> {
        let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        let mut file = None;
        let conn = if rest == ":memory:" || rest.is_empty() {
            Connection::open_in_memory().map_err(|e| sql_err(e, "open an in-memory database"))?
        } else {
            let p = Path::new(rest);
            let path = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
            crate::project::sqlite_folder(&path, base, url)?;
            let c = Connection::open(&path).map_err(|e| sql_err(e, &format!("open {}", path.display())))?;
            file = Some(path);
            c
        };
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA cache_size = -32768;",
        )
        .map_err(|e| sql_err(e, &format!("set up {url}")))?;
        let interrupt = std::sync::Arc::new(LiteInterrupt(conn.get_interrupt_handle(), Default::default()));
        Ok(Sqlite {
            conn,
            shown: url.to_string(),
            path: file,
            load_lock: None,
            interrupt,
            last_at: Default::default(),
            schema: None,
            attached: BTreeSet::new(),
        })
    }

    /// Takes the lock file's lock (waiting for it when `wait`); `false` when
    /// another process holds it and `wait` is not set.
    fn load_lock(&mut self, wait: bool) -> Result<bool> {
        use std::os::fd::AsRawFd;
        let Some(db) = &self.path else { return Ok(true) };
        if self.load_lock.is_some() {
            return Ok(true);
        }
        let path = db.with_file_name(format!(
            "{}.sluice-load.lock",
            db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        ));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        // Waiting polls, so a step asked to stop stops waiting too.
        loop {
            // SAFETY: the descriptor is open for the duration of the call.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                self.load_lock = Some(f);
                return Ok(true);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if !wait => return Ok(false),
                Some(libc::EWOULDBLOCK) => {
                    if self.interrupt.1.load(std::sync::atomic::Ordering::SeqCst) {
                        return Err(Error::external("stopped while waiting for another load to finish", true));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                _ => return Err(Error::io("lock", &path, e)),
            }
        }
    }

    /// The connection itself, for tests and tools.
    pub fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// `name` in the current schema, as SQL.
    fn rel(&self, name: &str) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote(s), quote(name)),
            None => quote(name),
        }
    }

    fn object_type(&self, name: &str) -> Result<Option<String>> {
        let master = format!("{}.sqlite_master", quote(self.schema.as_deref().unwrap_or("main")));
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT type FROM {master} WHERE name = ?1 AND type IN ('table', 'view')"))
            .map_err(|e| sql_err(e, "read the schema"))?;
        let mut rows = stmt.query([name]).map_err(|e| sql_err(e, "read the schema"))?;
        match rows.next().map_err(|e| sql_err(e, "read the schema"))? {
            Some(r) => Ok(Some(r.get(0).map_err(|e| sql_err(e, "read the schema"))?)),
            None => Ok(None),
        }
    }

    fn drop_relation(&self, name: &str) -> Result<()> {
        match self.object_type(name)?.as_deref() {
            Some("view") => self.exec(&format!("DROP VIEW {}", self.rel(name))),
            Some(_) => self.exec(&format!("DROP TABLE {}", self.rel(name))),
            None => Ok(()),
        }
    }

    fn exec(&self, sql: &str) -> Result<()> {
        self.exec_as(sql, "run SQL")
    }

    fn exec_as(&self, sql: &str, what: &str) -> Result<()> {
        self.conn.execute_batch(sql).map_err(|e| self.fail(e, what, sql))
    }

    /// Maps an error of statement(s) `sql`, remembering where in `sql` it is.
    fn fail(&self, e: rusqlite::Error, what: &str, sql: &str) -> Error {
        // The offset is into the statement that failed: `sql` from there on.
        let at = match &e {
            rusqlite::Error::SqlInputError { sql: rest, offset, .. }
                if *offset >= 0 && sql.ends_with(rest.as_str()) =>
            {
                Some(ErrorAt { statement: sql.to_string(), offset: sql.len() - rest.len() + *offset as usize })
            }
            // Without a place, the table or column it names, when it is there once.
            rusqlite::Error::SqliteFailure(_, Some(msg)) => ["no such table: ", "no such column: "]
                .iter()
                .find_map(|p| msg.strip_prefix(p))
                .and_then(|name| super::name_once(sql, name.strip_prefix("main.").unwrap_or(name)))
                .map(|offset| ErrorAt { statement: sql.to_string(), offset }),
            _ => None,
        };
        self.last_at.replace(at);
        sql_err(e, what)
    }
}

/// Quotes an identifier for SQLite.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The declared SQLite type of a column type.
pub fn sql_type(t: ColumnType) -> String {
    match t {
        ColumnType::SmallInt => "SMALLINT".into(),
        ColumnType::Integer => "INTEGER".into(),
        ColumnType::BigInt => "BIGINT".into(),
        ColumnType::Decimal(Some((p, s))) => format!("DECIMAL({p},{s})"),
        ColumnType::Decimal(None) => "NUMERIC".into(),
        ColumnType::Float => "DOUBLE".into(),
        ColumnType::Text => "TEXT".into(),
        ColumnType::Varchar(n) => format!("VARCHAR({n})"),
        ColumnType::Boolean => "BOOLEAN".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Timestamp => "TIMESTAMP".into(),
        ColumnType::TimestampTz => "TIMESTAMPTZ".into(),
        ColumnType::Json => "JSON".into(),
    }
}

/// A declared SQLite type back to a column type (SQLite's affinity rules for
/// names it does not know).
pub fn column_type_of(decl: &str) -> ColumnType {
    if let Ok(t) = ColumnType::parse(decl) {
        return t;
    }
    let u = decl.to_ascii_uppercase();
    if u.contains("INT") {
        ColumnType::BigInt
    } else if u.contains("CHAR") || u.contains("CLOB") || u.contains("TEXT") || u.is_empty() {
        ColumnType::Text
    } else if u.contains("REAL") || u.contains("FLOA") || u.contains("DOUB") {
        ColumnType::Float
    } else {
        ColumnType::Decimal(None)
    }
}

/// `CREATE TABLE` for `table` (a relation as SQL, quoted).
fn create_table_sql(table: &str, schema: &Schema) -> String {
    let cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("{} {}{}", quote(&c.name), sql_type(c.ty), if c.nullable { "" } else { " NOT NULL" }))
        .collect();
    format!("CREATE TABLE {table} ({})", cols.join(", "))
}

/// Maps a SQLite error to the crate's error, keeping SQLite's extended result
/// code as data (it decides the kind: busy/locked may pass on a retry, I/O
/// is the system's, constraints are the data's, the rest is about the SQL).
pub fn sql_err(e: rusqlite::Error, what: &str) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg) => {
            let detail = msg.clone().unwrap_or_else(|| f.to_string());
            let message = match f.code {
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                    format!("cannot {what}: the database is busy ({detail})")
                }
                _ => format!("cannot {what}: {detail}"),
            };
            Error::Db { message, code: DbCode::Sqlite(f.extended_code) }
        }
        rusqlite::Error::SqlInputError { error, msg, .. } => {
            Error::Db { message: format!("cannot {what}: {msg}"), code: DbCode::Sqlite(error.extended_code) }
        }
        _ => Error::external(format!("cannot {what}: {e}"), false),
    }
}

impl Warehouse for Sqlite {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn naming(&self) -> Naming {
        Naming { open: '"', close: '"', schema: self.schema.clone() }
    }

    /// A schema is a database file `<schema>.db` beside the main one (as
    /// dbt-sqlite's `schema_directory`), attached under the schema's name;
    /// `main` is the main file.
    fn use_schema(&mut self, schema: Option<&str>) -> Result<()> {
        let want = schema.filter(|s| *s != "main").map(str::to_string);
        if let Some(s) = &want
            && !self.attached.contains(s)
        {
            if s.eq_ignore_ascii_case("temp") || s.contains(['/', '\\', '\0']) || s.starts_with('.') {
                return Err(Error::user(format!("`{s}` cannot be a SQLite schema: it names a database file")));
            }
            let file = match &self.path {
                Some(p) => p.with_file_name(format!("{s}.db")).to_string_lossy().into_owned(),
                None => ":memory:".to_string(),
            };
            let attached: bool = self
                .conn
                .query_row("SELECT count(*) > 0 FROM pragma_database_list WHERE name = ?1", [s], |r| r.get(0))
                .map_err(|e| sql_err(e, "list attached databases"))?;
            if !attached {
                self.conn
                    .execute("ATTACH DATABASE ?1 AS ?2", [&file, s])
                    .map_err(|e| sql_err(e, &format!("attach {file} as schema `{s}`")))?;
                self.conn
                    .execute_batch(&format!("PRAGMA {}.journal_mode = WAL", quote(s)))
                    .map_err(|e| sql_err(e, &format!("set up schema `{s}`")))?;
            }
            self.attached.insert(s.clone());
        }
        self.schema = want;
        Ok(())
    }

    fn execute(&mut self, sql: &str) -> Result<()> {
        self.last_at.replace(None);
        self.exec(sql)
    }

    fn error_offset(&self, text: &str) -> Option<usize> {
        self.last_at.borrow().as_ref().and_then(|at| at.offset_in(text))
    }

    fn query(&mut self, sql: &str, sink: &mut dyn RowSink) -> Result<u64> {
        self.query_bound(sql, &[], sink)
    }

    fn query_bound(&mut self, sql: &str, params: &[super::Param], sink: &mut dyn RowSink) -> Result<u64> {
        use rusqlite::types::Value as SV;
        // Bound with the column's kind: a value without affinity compares
        // with a column without one (a model's expression) by its own type.
        let bound: Vec<SV> = params
            .iter()
            .map(|p| match p.ty {
                ColumnType::SmallInt | ColumnType::Integer | ColumnType::BigInt => {
                    p.text.parse().map(SV::Integer).unwrap_or_else(|_| SV::Text(p.text.clone()))
                }
                ColumnType::Float | ColumnType::Decimal(_) => {
                    p.text.parse().map(SV::Real).unwrap_or_else(|_| SV::Text(p.text.clone()))
                }
                ColumnType::Boolean => {
                    SV::Integer(matches!(p.text.as_str(), "true" | "t" | "1" | "yes" | "y" | "on") as i64)
                }
                _ => SV::Text(p.text.clone()),
            })
            .collect();
        self.last_at.replace(None);
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.fail(e, "prepare the query", sql))?;
        let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
        let kinds: Vec<Option<ColumnType>> = stmt.columns().map(|c| c.decl_type().map(column_type_of)).collect();
        sink.columns(&names)?;
        let width = names.len();
        let mut rows = stmt.query(rusqlite::params_from_iter(bound)).map_err(|e| sql_err(e, "run the query"))?;
        let mut n = 0u64;
        let mut scratch: Vec<String> = vec![String::new(); width];
        while let Some(row) = rows.next().map_err(|e| sql_err(e, "read query results"))? {
            // First format what needs formatting, then borrow.
            for i in 0..width {
                scratch[i].clear();
                let v = row.get_ref(i).map_err(|e| sql_err(e, "read a value"))?;
                match (v, kinds[i]) {
                    (ValueRef::Real(f), Some(ColumnType::Decimal(Some((_, s))))) => scratch[i] = format_scaled(f, s),
                    (ValueRef::Integer(x), Some(ColumnType::Decimal(Some((_, s))))) if s > 0 => {
                        scratch[i] = format!("{x}.{}", "0".repeat(s as usize))
                    }
                    (ValueRef::Blob(b), _) => scratch[i] = crate::storage::raw::hex(b),
                    (ValueRef::Text(t), _) if std::str::from_utf8(t).is_err() => {
                        scratch[i] = String::from_utf8_lossy(t).into_owned()
                    }
                    _ => {}
                }
            }
            let mut vals: Vec<Val> = Vec::with_capacity(width);
            for i in 0..width {
                let v = row.get_ref(i).map_err(|e| sql_err(e, "read a value"))?;
                let val = match (v, kinds[i]) {
                    (ValueRef::Null, _) => Val::Null,
                    (ValueRef::Integer(x), Some(ColumnType::Boolean)) => Val::Bool(x != 0),
                    (ValueRef::Integer(_), Some(ColumnType::Decimal(Some((_, s))))) if s > 0 => Val::Dec(&scratch[i]),
                    (ValueRef::Integer(x), _) => Val::Int(x),
                    (ValueRef::Real(_), Some(ColumnType::Decimal(Some(_)))) => Val::Dec(&scratch[i]),
                    (ValueRef::Real(f), _) => Val::Float(f),
                    (ValueRef::Text(t), Some(ColumnType::TimestampTz)) => {
                        match crate::types::parse_value(
                            &Column::new("t", ColumnType::TimestampTz),
                            t,
                            false,
                            &Default::default(),
                        ) {
                            Ok(v) => v,
                            Err(_) => Val::Text(std::str::from_utf8(t).unwrap_or(&scratch[i])),
                        }
                    }
                    (ValueRef::Text(t), _) => match std::str::from_utf8(t) {
                        Ok(s) => Val::Text(s),
                        Err(_) => Val::Text(&scratch[i]),
                    },
                    (ValueRef::Blob(_), _) => Val::Text(&scratch[i]),
                };
                vals.push(val);
            }
            sink.row(&vals)?;
            n += 1;
        }
        Ok(n)
    }

    fn query_columns(&mut self, sql: &str) -> Result<Vec<Column>> {
        self.last_at.replace(None);
        let body = sql.trim().trim_end_matches(';');
        let stmt = self.conn.prepare(body).map_err(|e| self.fail(e, "prepare the query", body))?;
        Ok(stmt
            .columns()
            .map(|c| Column::new(c.name(), c.decl_type().map(column_type_of).unwrap_or(ColumnType::Text)))
            .collect())
    }

    fn table_schema(&mut self, table: &str) -> Result<Option<Schema>> {
        if self.object_type(table)?.is_none() {
            return Ok(None);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT name, type, \"notnull\" FROM pragma_table_info(?1, ?2) ORDER BY cid")
            .map_err(|e| sql_err(e, "read the table's columns"))?;
        let cols = stmt
            .query_map([table, self.schema.as_deref().unwrap_or("main")], |r| {
                let name: String = r.get(0)?;
                let decl: String = r.get(1)?;
                let notnull: i64 = r.get(2)?;
                Ok(Column { name, ty: column_type_of(&decl), nullable: notnull == 0, format: None })
            })
            .map_err(|e| sql_err(e, "read the table's columns"))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| sql_err(e, "read the table's columns"))?;
        Ok(Some(Schema::new(cols)))
    }

    fn begin_load<'a>(&'a mut self, target: &LoadTarget<'_>) -> Result<Box<dyn LoadTx + 'a>> {
        let what = format!("load into table `{}`", target.table);
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| sql_err(e, &what))?;
        let mut guard = SqliteLoad {
            conn: &mut self.conn,
            insert: String::new(),
            table: target.table.to_string(),
            schema: self.schema.clone(),
            columns: target.columns.iter().map(|c| c.name.clone()).collect(),
            key: target.key.to_vec(),
            merge: target.mode == LoadMode::Merge,
            run_id: target.run_id.to_string(),
            open: true,
        };
        guard.setup(target)?;
        Ok(Box::new(guard))
    }

    fn exact_decimal_digits(&self) -> Option<(u32, &'static str)> {
        Some((15, "SQLite"))
    }

    fn try_lock_loads(&mut self, _table: &str) -> Result<bool> {
        // SQLite has one writer at a time: loads into any table of a file
        // take turns on one lock file beside it.
        self.load_lock(false)
    }

    fn lock_loads(&mut self, _table: &str) -> Result<()> {
        self.load_lock(true).map(|_| ())
    }

    fn loaded_objects(&mut self, table: &str) -> Result<BTreeSet<String>> {
        if self.object_type(LOADS_TABLE)?.is_none() {
            return Ok(BTreeSet::new());
        }
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT object FROM {} WHERE target = ?1", quote(LOADS_TABLE)))
            .map_err(|e| sql_err(e, "read loaded objects"))?;
        let out = stmt
            .query_map([table], |r| r.get::<_, String>(0))
            .map_err(|e| sql_err(e, "read loaded objects"))?
            .collect::<std::result::Result<BTreeSet<_>, _>>()
            .map_err(|e| sql_err(e, "read loaded objects"))?;
        Ok(out)
    }

    fn materialize(&mut self, name: &str, sql: &str, build: &Build<'_>) -> Result<()> {
        let body = sql.trim().trim_end_matches(';').trim_end();
        let d = &SqliteDialect;
        self.last_at.replace(None);
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| sql_err(e, "start a transaction"))?;
        let res = (|| {
            self.drop_relation(name)?;
            let what = format!("build {name}");
            match build.kind {
                Materialized::View => {
                    // SQLite creates a view over a table or column that does
                    // not exist, and fails only when it is read: compile its
                    // query first, so the build fails instead, at the place.
                    self.conn.prepare(body).map_err(|e| self.fail(e, &what, body))?;
                    self.exec_as(&format!("CREATE VIEW {} AS\n{body}", self.rel(name)), &what).map_err(|e| {
                        if e.to_string().contains("cannot reference objects in database") {
                            Error::user(format!(
                                "{e}: a SQLite view reads only the database file of its own schema; make the model a table, or build it in the schema it reads"
                            ))
                        } else {
                            e
                        }
                    })?
                }
                _ => {
                    for s in build_table_sql(d, &self.rel(name), body, build.contract) {
                        self.exec_as(&s, &what)?;
                    }
                    if let Some(key) = build.unique_key {
                        // SQLite names an attached schema's index, not its table.
                        let index = self.rel(&format!("{name}__sluice_key"));
                        let k: Vec<String> = key.iter().map(|c| quote(c)).collect();
                        self.exec_as(
                            &format!("CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {} ({})", quote(name), k.join(", ")),
                            &format!("index {name} on its unique key"),
                        )?;
                    }
                }
            }
            Ok(())
        })();
        match res {
            Ok(()) => self.conn.execute_batch("COMMIT").map_err(|e| sql_err(e, "commit")),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn dialect(&self) -> &'static dyn Dialect {
        &SqliteDialect
    }

    fn interrupter(&self) -> Option<std::sync::Arc<dyn super::Interrupt>> {
        Some(self.interrupt.clone())
    }
}

/// SQLite's SQL.
pub struct SqliteDialect;

impl Dialect for SqliteDialect {
    fn quote(&self, ident: &str) -> String {
        quote(ident)
    }
    fn sql_type(&self, t: ColumnType) -> String {
        sql_type(t)
    }
    fn begin(&self) -> Option<&'static str> {
        Some("BEGIN IMMEDIATE")
    }
    fn transactional_ddl(&self) -> bool {
        true
    }
    fn create_temp_as(&self, name: &str, select: &str) -> String {
        format!("CREATE TEMP TABLE {} AS\n{select}", quote(name))
    }
    fn unique_index(&self, index: &str, table: &str, key: &[String]) -> String {
        let k: Vec<String> = key.iter().map(|c| quote(c)).collect();
        // In an attached schema SQLite qualifies the index, never the table.
        let (index, table) = match table.find("\".\"") {
            Some(i) if table.starts_with('"') => (format!("{}.{}", &table[..=i], quote(index)), &table[i + 2..]),
            _ => (quote(index), table),
        };
        format!("CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {table} ({})", k.join(", "))
    }
    fn temp_relation(&self, name: &str) -> String {
        format!("temp.{}", quote(name))
    }
    fn drop_temp(&self, name: &str) -> String {
        format!("DROP TABLE IF EXISTS temp.{}", quote(name))
    }
    fn upsert(&self, table: &str, src: &str, cols: &[String], key: &[String]) -> String {
        let c: Vec<String> = cols.iter().map(|c| quote(c)).collect();
        let k: Vec<String> = key.iter().map(|c| quote(c)).collect();
        let set: Vec<String> =
            cols.iter().filter(|c| !key.contains(c)).map(|c| format!("{0} = excluded.{0}", quote(c))).collect();
        let action = if set.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", set.join(", ")) };
        // `WHERE true` keeps SQLite from reading ON CONFLICT as a join clause.
        format!(
            "INSERT INTO {table} ({0}) SELECT {0} FROM {src} WHERE true ON CONFLICT ({1}) DO {action}",
            c.join(", "),
            k.join(", ")
        )
    }
    fn null_safe_differ(&self, a: &str, b: &str) -> String {
        format!("{a} IS NOT {b}")
    }
    fn timestamp_literal(&self, micros: i64) -> String {
        let mut b = Vec::new();
        crate::types::value::write_ts(&mut b, micros, b' ');
        format!("'{}'", String::from_utf8(b).expect("timestamps are ASCII"))
    }
}

const STAGE: &str = "__sluice_stage";

struct SqliteLoad<'a> {
    conn: &'a mut Connection,
    insert: String,
    table: String,
    /// The attached schema the table is in (`None`: main).
    schema: Option<String>,
    columns: Vec<String>,
    key: Vec<String>,
    merge: bool,
    run_id: String,
    open: bool,
}

fn exec(c: &Connection, sql: &str, what: &str) -> Result<()> {
    c.execute_batch(sql).map_err(|e| sql_err(e, what))
}

impl SqliteLoad<'_> {
    /// `name` in the load's schema, as SQL.
    fn rel(&self, name: &str) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote(s), quote(name)),
            None => quote(name),
        }
    }

    fn object_type(&self, name: &str) -> Result<Option<String>> {
        self.object_type_in(name, self.schema.as_deref())
    }

    fn object_type_in(&self, name: &str, schema: Option<&str>) -> Result<Option<String>> {
        let master = format!("{}.sqlite_master", quote(schema.unwrap_or("main")));
        self.conn
            .query_row(
                &format!("SELECT type FROM {master} WHERE name = ?1 AND type IN ('table', 'view')"),
                [name],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| if matches!(e, rusqlite::Error::QueryReturnedNoRows) { Ok(None) } else { Err(e) })
            .map_err(|e| sql_err(e, "read the schema"))
    }

    fn setup(&mut self, target: &LoadTarget<'_>) -> Result<()> {
        let t = self.rel(target.table);
        // Load records stay in the main database.
        let loads_exist = self.object_type_in(LOADS_TABLE, None)?.is_some();
        if target.track_loads && !loads_exist {
            exec(
                self.conn,
                &format!(
                    "CREATE TABLE {} (target TEXT NOT NULL, object TEXT NOT NULL, sha256 TEXT, rows INTEGER, run_id TEXT, loaded_at TEXT, PRIMARY KEY (target, object))",
                    quote(LOADS_TABLE)
                ),
                "create the load records table",
            )?;
        }
        let existing = self.object_type(target.table)?;
        if existing.as_deref() == Some("view") {
            if target.mode != LoadMode::Replace {
                return Err(Error::user(format!("`{}` is a view; a load needs a table", target.table)));
            }
            exec(self.conn, &format!("DROP VIEW {t}"), "drop the view")?;
        }
        let exists = existing.as_deref() == Some("table");
        match target.mode {
            LoadMode::Replace => {
                if exists {
                    exec(self.conn, &format!("DROP TABLE {t}"), "drop the old table")?;
                }
                exec(self.conn, &create_table_sql(&t, target.schema), "create the table")?;
                if target.track_loads || loads_exist {
                    self.conn
                        .execute(&format!("DELETE FROM {} WHERE target = ?1", quote(LOADS_TABLE)), [target.table])
                        .map_err(|e| sql_err(e, "reset load records"))?;
                }
            }
            LoadMode::Append | LoadMode::Merge => {
                if !exists {
                    exec(self.conn, &create_table_sql(&t, target.schema), "create the table")?;
                } else {
                    self.apply_changes(target)?;
                }
            }
        }
        let cols: Vec<String> = self.columns.iter().map(|c| quote(c)).collect();
        let into = if self.merge {
            exec(self.conn, &format!("DROP TABLE IF EXISTS temp.{}", quote(STAGE)), "drop a stale staging table")?;
            exec(
                self.conn,
                &format!("CREATE TEMP TABLE {} AS SELECT {} FROM {t} WHERE 0", quote(STAGE), cols.join(", ")),
                "create the staging table",
            )?;
            format!("temp.{}", quote(STAGE))
        } else {
            t
        };
        let params: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
        self.insert = format!("INSERT INTO {into} ({}) VALUES ({})", cols.join(", "), params.join(", "));
        Ok(())
    }

    /// Adds and widens columns. SQLite cannot change a column's declared type,
    /// so widening rebuilds the table inside the transaction.
    fn apply_changes(&mut self, target: &LoadTarget<'_>) -> Result<()> {
        let t = self.rel(target.table);
        let mut widen = false;
        for c in target.changes {
            match c {
                Change::Add(col) => exec(
                    self.conn,
                    &format!("ALTER TABLE {t} ADD COLUMN {} {}", quote(&col.name), sql_type(col.ty)),
                    &format!("add column `{}`", col.name),
                )?,
                Change::Widen { .. } => widen = true,
            }
        }
        if widen {
            let new = format!("{}{}", target.table, super::NEW_SUFFIX);
            let new_rel = self.rel(&new);
            exec(self.conn, &format!("DROP TABLE IF EXISTS {new_rel}"), "drop a stale table")?;
            exec(self.conn, &create_table_sql(&new_rel, target.schema), "create the widened table")?;
            let cols: Vec<String> = target.schema.columns.iter().map(|c| quote(&c.name)).collect();
            exec(
                self.conn,
                &format!("INSERT INTO {new_rel} ({0}) SELECT {0} FROM {t}", cols.join(", ")),
                "copy rows into the widened table",
            )?;
            // RENAME TO takes the bare name: the table stays in its schema.
            exec(
                self.conn,
                &format!(
                    "PRAGMA legacy_alter_table = ON; DROP TABLE {t}; ALTER TABLE {new_rel} RENAME TO {}; PRAGMA legacy_alter_table = OFF;",
                    quote(target.table)
                ),
                "swap in the widened table",
            )?;
        }
        Ok(())
    }
}

impl LoadTx for SqliteLoad<'_> {
    fn write(&mut self, batch: &RowBatch) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(&self.insert).map_err(|e| sql_err(e, "prepare the insert"))?;
        let mut buf: Vec<u8> = Vec::with_capacity(64);
        for r in 0..batch.len() {
            for (i, cell) in batch.row(r).iter().enumerate() {
                let idx = i + 1;
                let res = match *cell {
                    Cell::Null => stmt.raw_bind_parameter(idx, rusqlite::types::Null),
                    Cell::Int(x) => stmt.raw_bind_parameter(idx, x),
                    Cell::Float(f) => stmt.raw_bind_parameter(idx, f),
                    Cell::Bool(b) => stmt.raw_bind_parameter(idx, i64::from(b)),
                    Cell::Text(..) | Cell::Json(..) | Cell::Dec(..) => match batch.val(*cell) {
                        Val::Text(s) | Val::Json(s) => stmt.raw_bind_parameter(idx, s),
                        Val::Dec(s) => stmt.raw_bind_parameter(idx, s.trim_start_matches('+')),
                        _ => unreachable!("text cells hold text"),
                    },
                    Cell::Date(d) => {
                        buf.clear();
                        crate::types::value::write_date(&mut buf, d as i64);
                        stmt.raw_bind_parameter(idx, std::str::from_utf8(&buf).expect("dates are ASCII"))
                    }
                    Cell::Ts(t) => {
                        buf.clear();
                        crate::types::value::write_ts(&mut buf, t, b' ');
                        stmt.raw_bind_parameter(idx, std::str::from_utf8(&buf).expect("timestamps are ASCII"))
                    }
                    Cell::TsTz(t) => {
                        buf.clear();
                        crate::types::value::write_ts(&mut buf, t, b' ');
                        buf.extend_from_slice(b"+00:00");
                        stmt.raw_bind_parameter(idx, std::str::from_utf8(&buf).expect("timestamps are ASCII"))
                    }
                };
                res.map_err(|e| sql_err(e, "bind a value"))?;
            }
            stmt.raw_execute().map_err(|e| {
                sql_err(e, &format!("insert the row from line {} into `{}`", batch.lines[r], self.table))
            })?;
        }
        Ok(())
    }

    fn write_rejects(&mut self, rejects: &[RowError]) -> Result<()> {
        exec(
            self.conn,
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (target TEXT NOT NULL, file TEXT, line INTEGER, column_name TEXT, value TEXT, error TEXT, record TEXT, run_id TEXT, rejected_at TEXT)",
                quote(REJECTS_TABLE)
            ),
            "create the rejects table",
        )?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "INSERT INTO {} (target, file, line, column_name, value, error, record, run_id, rejected_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                quote(REJECTS_TABLE)
            ))
            .map_err(|e| sql_err(e, "record rejected rows"))?;
        for r in rejects {
            stmt.execute(rusqlite::params![
                self.table,
                r.file,
                r.line as i64,
                r.column,
                r.value,
                r.reason,
                r.record,
                self.run_id,
                now
            ])
            .map_err(|e| sql_err(e, "record rejected rows"))?;
        }
        Ok(())
    }

    fn end_input(&mut self, label: &str) -> Result<()> {
        if self.merge {
            let stage = format!("temp.{}", quote(STAGE));
            let keys: Vec<String> = self.key.iter().map(|k| quote(k)).collect();
            let dups: Vec<String> = {
                let texts: Vec<String> = keys.iter().map(|k| format!("CAST({k} AS TEXT)")).collect();
                let mut stmt = self
                    .conn
                    .prepare(&format!(
                        "SELECT {} FROM {stage} GROUP BY {} HAVING count(*) > 1 LIMIT 5",
                        texts.join(" || ', ' || "),
                        keys.join(", ")
                    ))
                    .map_err(|e| sql_err(e, "check merge keys"))?;
                stmt.query_map([], |r| r.get::<_, Option<String>>(0).map(|v| v.unwrap_or_else(|| "NULL".into())))
                    .map_err(|e| sql_err(e, "check merge keys"))?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(|e| sql_err(e, "check merge keys"))?
            };
            if !dups.is_empty() {
                return Err(super::repeated_merge_keys(label, &self.key, &dups));
            }
            let t = self.rel(&self.table);
            let cond: Vec<String> = keys.iter().map(|k| format!("s.{k} = {t}.{k}")).collect();
            let cols: Vec<String> = self.columns.iter().map(|c| quote(c)).collect();
            exec(
                self.conn,
                &format!(
                    "DELETE FROM {t} WHERE EXISTS (SELECT 1 FROM {stage} s WHERE {}); INSERT INTO {t} ({c}) SELECT {c} FROM {stage}; DELETE FROM {stage};",
                    cond.join(" AND "),
                    c = cols.join(", ")
                ),
                "merge the staged rows",
            )?;
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>, records: &[LoadRecord]) -> Result<()> {
        if self.merge {
            exec(self.conn, &format!("DROP TABLE temp.{}", quote(STAGE)), "drop the staging table")?;
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if !records.is_empty() {
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "INSERT INTO {} (target, object, sha256, rows, run_id, loaded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    quote(LOADS_TABLE)
                ))
                .map_err(|e| sql_err(e, "record the load"))?;
            for r in records {
                stmt.execute(rusqlite::params![self.table, r.object, r.sha256, r.rows as i64, r.run_id, now])
                    .map_err(|e| sql_err(e, "record the load"))?;
            }
        }
        self.conn.execute_batch("COMMIT").map_err(|e| sql_err(e, "commit the load"))?;
        self.open = false;
        Ok(())
    }

    fn rollback(mut self: Box<Self>) -> Result<()> {
        self.open = false;
        self.conn.execute_batch("ROLLBACK").map_err(|e| sql_err(e, "roll back the load"))
    }
}

impl Drop for SqliteLoad<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_files_beside_the_database_whatever_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let mut db = Sqlite::open(&url, dir.path()).unwrap();
        // A name that would reach outside the folder, or SQLite's own temp, is refused.
        for bad in ["../x", "a/b", ".hidden", "temp"] {
            let e = db.use_schema(Some(bad)).unwrap_err();
            assert!(e.to_string().contains("cannot be a SQLite schema"), "{bad}: {e}");
        }
        // Quotes in a name are only quoted.
        let odd = "it's \"odd\"";
        let build = Build { kind: Materialized::Table, contract: None, unique_key: Some(&["x".to_string()]) };
        db.use_schema(Some(odd)).unwrap();
        db.materialize("t", "select 1 as x", &build).unwrap();
        assert!(dir.path().join(format!("{odd}.db")).exists());
        assert!(db.table_schema("t").unwrap().is_some());
        // Back home, `t` is not in main; `main` is the main file.
        db.use_schema(None).unwrap();
        assert!(db.table_schema("t").unwrap().is_none());
        db.use_schema(Some("main")).unwrap();
        assert_eq!(db.naming().schema, None);
        // Still attached: read with its schema from home.
        let mut c = super::super::CountSink::default();
        db.query(&format!("SELECT COUNT(*) FROM {}.\"t\"", quote(odd)), &mut c).unwrap();
        assert_eq!(c.0, Some(1));
    }
}
