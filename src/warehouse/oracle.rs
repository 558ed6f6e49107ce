//! Oracle Database: SQL generation (types, DDL, array-bound inserts with explicit
//! conversions, merge), always built and unit-tested; the connection itself is
//! behind the `oracle` cargo feature, on Oracle's pure-Rust thin driver
//! (`oracledb`, no Instant Client), and is exercised only when
//! `SLUICE_TEST_ORACLE_URL` points at a server — no Oracle server can be had
//! where Sluice is built and tested.
//!
//! DDL commits in Oracle, so: the table is created (or changed) first, then the
//! rows go in with array binds (`execute_batch`) in one transaction. Replace is
//! `DELETE` then insert in that transaction (atomic for readers; the table keeps
//! its shape); merge stages rows in a global temporary table and runs `MERGE`.

use crate::types::{Column, ColumnType, Schema};

/// The longest text an Oracle `VARCHAR2` column holds in characters here
/// (standard `MAX_STRING_SIZE`).
pub const MAX_VARCHAR: u32 = 4000;

/// Quotes an identifier (case-sensitive, as written).
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The Oracle type of a column type.
pub fn sql_type(t: ColumnType) -> String {
    match t {
        ColumnType::SmallInt => "NUMBER(5)".into(),
        ColumnType::Integer => "NUMBER(10)".into(),
        ColumnType::BigInt => "NUMBER(19)".into(),
        ColumnType::Decimal(Some((p, s))) => format!("NUMBER({p},{s})"),
        ColumnType::Decimal(None) => "NUMBER".into(),
        ColumnType::Float => "BINARY_DOUBLE".into(),
        ColumnType::Text | ColumnType::Json => format!("VARCHAR2({MAX_VARCHAR} CHAR)"),
        ColumnType::Varchar(n) => format!("VARCHAR2({} CHAR)", n.min(MAX_VARCHAR)),
        ColumnType::Boolean => "NUMBER(1)".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Timestamp => "TIMESTAMP(6)".into(),
        ColumnType::TimestampTz => "TIMESTAMP(6) WITH TIME ZONE".into(),
    }
}

/// `CREATE TABLE` for a schema (JSON columns get an `IS JSON` check).
pub fn create_table_sql(table: &str, schema: &Schema) -> String {
    let mut cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("{} {}{}", quote(&c.name), sql_type(c.ty), if c.nullable { "" } else { " NOT NULL" }))
        .collect();
    for c in schema.columns.iter().filter(|c| c.ty == ColumnType::Json) {
        cols.push(format!("CHECK ({} IS JSON)", quote(&c.name)));
    }
    format!("CREATE TABLE {} ({})", quote(table), cols.join(", "))
}

/// The bind expression of a column: values are bound as text in a fixed
/// format and converted by the server, so session NLS settings never matter.
pub fn bind_expr(c: &Column, n: usize) -> String {
    match c.ty {
        ColumnType::Date => format!("TO_DATE(:{n}, 'YYYY-MM-DD')"),
        ColumnType::Timestamp => format!("TO_TIMESTAMP(:{n}, 'YYYY-MM-DD HH24:MI:SS.FF6')"),
        ColumnType::TimestampTz => format!("TO_TIMESTAMP_TZ(:{n}, 'YYYY-MM-DD HH24:MI:SS.FF6 TZH:TZM')"),
        // The session sets NLS_NUMERIC_CHARACTERS = '.,' when it connects.
        ColumnType::Decimal(_) => format!("TO_NUMBER(:{n})"),
        _ => format!(":{n}"),
    }
}

/// The array-bound insert of rows with these columns.
pub fn insert_sql(table: &str, cols: &[Column]) -> String {
    let names: Vec<String> = cols.iter().map(|c| quote(&c.name)).collect();
    let binds: Vec<String> = cols.iter().enumerate().map(|(i, c)| bind_expr(c, i + 1)).collect();
    format!("INSERT INTO {} ({}) VALUES ({})", quote(table), names.join(", "), binds.join(", "))
}

/// The MERGE of a staging table into the target on key columns.
pub fn merge_sql(table: &str, stage: &str, cols: &[Column], key: &[String]) -> String {
    let on: Vec<String> = key.iter().map(|k| format!("t.{0} = s.{0}", quote(k))).collect();
    let set: Vec<String> =
        cols.iter().filter(|c| !key.contains(&c.name)).map(|c| format!("t.{0} = s.{0}", quote(&c.name))).collect();
    let names: Vec<String> = cols.iter().map(|c| quote(&c.name)).collect();
    let vals: Vec<String> = cols.iter().map(|c| format!("s.{}", quote(&c.name))).collect();
    let update =
        if set.is_empty() { String::new() } else { format!(" WHEN MATCHED THEN UPDATE SET {}", set.join(", ")) };
    format!(
        "MERGE INTO {} t USING {} s ON ({}){update} WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})",
        quote(table),
        quote(stage),
        on.join(" AND "),
        names.join(", "),
        vals.join(", ")
    )
}

/// The column type of an Oracle column from `ALL_TAB_COLUMNS`.
pub fn column_type_of(
    data_type: &str,
    precision: Option<u32>,
    scale: Option<i32>,
    char_len: Option<u32>,
) -> ColumnType {
    let d = data_type.to_ascii_uppercase();
    match d.as_str() {
        "NUMBER" => match (precision, scale) {
            (Some(1), Some(0)) => ColumnType::Boolean,
            (Some(p), Some(0)) if p <= 5 => ColumnType::SmallInt,
            (Some(p), Some(0)) if p <= 10 => ColumnType::Integer,
            (Some(p), Some(0)) if p <= 19 => ColumnType::BigInt,
            (Some(p), Some(s)) if s >= 0 => ColumnType::Decimal(Some((p.min(38) as u8, s as u8))),
            _ => ColumnType::Decimal(None),
        },
        "BINARY_DOUBLE" | "BINARY_FLOAT" | "FLOAT" => ColumnType::Float,
        "VARCHAR2" | "NVARCHAR2" | "CHAR" | "NCHAR" => match char_len {
            Some(n) if n < MAX_VARCHAR => ColumnType::Varchar(n),
            _ => ColumnType::Text,
        },
        "DATE" => ColumnType::Date,
        "JSON" => ColumnType::Json,
        d if d.starts_with("TIMESTAMP") && d.contains("TIME ZONE") => ColumnType::TimestampTz,
        d if d.starts_with("TIMESTAMP") => ColumnType::Timestamp,
        _ => ColumnType::Text,
    }
}

/// Oracle's SQL.
pub struct OracleDialect;

impl crate::warehouse::Dialect for OracleDialect {
    fn quote(&self, ident: &str) -> String {
        quote(ident)
    }
    fn sql_type(&self, t: ColumnType) -> String {
        sql_type(t)
    }
    fn begin(&self) -> Option<&'static str> {
        None
    }
    fn needs_commit(&self) -> bool {
        true
    }
    fn transactional_ddl(&self) -> bool {
        false
    }
    fn create_temp_as(&self, name: &str, select: &str) -> String {
        format!("CREATE GLOBAL TEMPORARY TABLE {} ON COMMIT PRESERVE ROWS AS\n{select}", quote(name))
    }
    fn temp_relation(&self, name: &str) -> String {
        quote(name)
    }
    fn drop_temp(&self, name: &str) -> String {
        format!(
            "BEGIN EXECUTE IMMEDIATE 'TRUNCATE TABLE {0}'; EXECUTE IMMEDIATE 'DROP TABLE {0}'; EXCEPTION WHEN OTHERS THEN NULL; END;",
            quote(name)
        )
    }
    fn add_column(&self, table: &str, col: &Column) -> String {
        format!("ALTER TABLE {table} ADD ({} {})", quote(&col.name), sql_type(col.ty))
    }
    fn upsert(&self, table: &str, src: &str, cols: &[String], key: &[String]) -> String {
        let on: Vec<String> = key.iter().map(|k| format!("t.{0} = s.{0}", quote(k))).collect();
        let set: Vec<String> =
            cols.iter().filter(|c| !key.contains(c)).map(|c| format!("t.{0} = s.{0}", quote(c))).collect();
        let names: Vec<String> = cols.iter().map(|c| quote(c)).collect();
        let vals: Vec<String> = cols.iter().map(|c| format!("s.{}", quote(c))).collect();
        let update =
            if set.is_empty() { String::new() } else { format!(" WHEN MATCHED THEN UPDATE SET {}", set.join(", ")) };
        format!(
            "MERGE INTO {table} t USING {src} s ON ({}){update} WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})",
            on.join(" AND "),
            names.join(", "),
            vals.join(", ")
        )
    }
    fn unique_index(&self, index: &str, table: &str, key: &[String]) -> String {
        let k: Vec<String> = key.iter().map(|c| quote(c)).collect();
        format!(
            "BEGIN EXECUTE IMMEDIATE 'CREATE UNIQUE INDEX {} ON {table} ({})'; EXCEPTION WHEN OTHERS THEN IF SQLCODE != -955 THEN RAISE; END IF; END;",
            quote(index).replace('\'', "''"),
            k.join(", ").replace('\'', "''")
        )
    }
    fn limit(&self, select: &str, n: u64) -> String {
        format!("{select} FETCH FIRST {n} ROWS ONLY")
    }
    fn limit_offset(&self, select: &str, n: u64, offset: u64) -> String {
        format!("{select} OFFSET {offset} ROWS FETCH NEXT {n} ROWS ONLY")
    }
    fn null_safe_differ(&self, a: &str, b: &str) -> String {
        format!("DECODE({a}, {b}, 0, 1) = 1")
    }
    fn update_from(&self, target: &str, col: &str, expr: &str, source: &str, on: &str, cond: &str) -> String {
        format!(
            "MERGE INTO {target} USING {source} ON ({on}) WHEN MATCHED THEN UPDATE SET {} = {expr} WHERE {cond}",
            quote(col)
        )
    }
}

#[cfg(feature = "oracle")]
pub use driver::Oracle;

#[cfg(feature = "oracle")]
mod driver {
    use std::collections::BTreeSet;

    use super::*;
    use crate::error::{DbCode, Error, Result, RowError};
    use crate::project::{LoadMode, Materialized};
    use crate::secret::redact_url;
    use crate::types::{Cell, RowBatch, Val};
    use crate::warehouse::{
        Backend, Build, Change, Dialect, LOADS_TABLE, LoadRecord, LoadTarget, LoadTx, NEW_SUFFIX, Naming,
        REJECTS_TABLE, RowSink, Warehouse, build_table_sql,
    };

    pub struct Oracle {
        conn: oracledb::Connection,
        shown: String,
    }

    /// Maps a driver error to the crate's error, keeping the ORA- number as
    /// data (it decides the kind and whether a retry may help).
    fn ora_err(e: oracledb::Error, what: &str) -> Error {
        let msg = format!("cannot {what}: {e}");
        match e.kind() {
            oracledb::ErrorKind::DeadConnection
            | oracledb::ErrorKind::NotConnected
            | oracledb::ErrorKind::CallTimeoutExceeded => Error::external(msg, true),
            oracledb::ErrorKind::DbError(db) => {
                Error::Db { message: msg, code: DbCode::Oracle(u32::try_from(db.code()).unwrap_or(u32::MAX)) }
            }
            _ => Error::external(msg, false),
        }
    }

    impl Oracle {
        /// Connects with `oracle://user:password@host:port/service`.
        pub fn connect(url: &str) -> Result<Oracle> {
            let shown = redact_url(url);
            let timeout = crate::warehouse::connect_timeout(url)?;
            let url = &crate::secret::without_params(url, &[crate::warehouse::CONNECT_TIMEOUT]);
            let (auth, target) = match crate::secret::split_url(url) {
                Some(crate::secret::UrlParts { userinfo_range: Some(ui), host_start, .. }) => {
                    (&url[ui], &url[host_start..])
                }
                _ => {
                    return Err(Error::user(format!(
                        "invalid Oracle URL {shown}: expected oracle://user:password@host:port/service"
                    )));
                }
            };
            let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
            let (user, password) = (crate::secret::decode_userinfo(user), crate::secret::decode_userinfo(password));
            let config = oracledb::Config::default()
                .set_credentials(&user, &password)
                .set_transport_connect_timeout(Some(timeout))
                .set_connect_string(target)
                .map_err(|e| ora_err(e, &format!("read the Oracle connect string of {shown}")))?;
            // The driver blocks; the whole connect and handshake get the
            // limit (a connection still going after it is left to end).
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(oracledb::connect(config));
            });
            let conn = match rx.recv_timeout(timeout) {
                Ok(r) => r.map_err(|e| ora_err(e, &format!("connect to {shown}")))?,
                Err(_) => return Err(crate::warehouse::connect_timed_out(&shown, timeout, "Oracle")),
            };
            let o = Oracle { conn, shown };
            o.exec("ALTER SESSION SET TIME_ZONE = '+00:00'", "set up the session")?;
            o.exec("ALTER SESSION SET NLS_TIMESTAMP_FORMAT = 'YYYY-MM-DD HH24:MI:SS.FF6'", "set up the session")?;
            o.exec(
                "ALTER SESSION SET NLS_TIMESTAMP_TZ_FORMAT = 'YYYY-MM-DD HH24:MI:SS.FF6 TZH:TZM'",
                "set up the session",
            )?;
            o.exec("ALTER SESSION SET NLS_DATE_FORMAT = 'YYYY-MM-DD'", "set up the session")?;
            o.exec("ALTER SESSION SET NLS_NUMERIC_CHARACTERS = '.,'", "set up the session")?;
            Ok(o)
        }

        fn exec(&self, sql: &str, what: &str) -> Result<()> {
            self.conn.execute(sql, &[]).map(|_| ()).map_err(|e| ora_err(e, what))
        }

        /// Runs DDL that may fail because the object already exists (ORA-00955).
        fn exec_if_absent(&self, sql: &str, what: &str) -> Result<()> {
            match self.conn.execute(sql, &[]) {
                Ok(_) => Ok(()),
                Err(e) => match ora_err(e, what) {
                    e if e.db_code().is_some_and(|c| c.is_duplicate_object()) => Ok(()),
                    e => Err(e),
                },
            }
        }

        fn strings(
            &self,
            sql: &str,
            params: &[&dyn oracledb::ToDbValue],
            what: &str,
        ) -> Result<Vec<Vec<Option<String>>>> {
            let cursor = self.conn.query(sql, params).map_err(|e| ora_err(e, what))?;
            let mut out = Vec::new();
            for row in cursor {
                let row = row.map_err(|e| ora_err(e, what))?;
                let n = row.columns().len();
                out.push((0..n).map(|i| row.get::<Option<String>>(i).ok().flatten()).collect());
            }
            Ok(out)
        }

        fn exists(&self, name: &str) -> Result<bool> {
            Ok(!self
                .strings("SELECT table_name FROM user_tables WHERE table_name = :1", &[&name], "read the catalog")?
                .is_empty())
        }
    }

    impl Warehouse for Oracle {
        fn backend(&self) -> Backend {
            Backend::Oracle
        }

        fn describe(&self) -> String {
            self.shown.clone()
        }

        fn naming(&self) -> Naming {
            Naming { open: '"', close: '"', schema: None }
        }

        fn execute(&mut self, sql: &str) -> Result<()> {
            self.exec(sql.trim().trim_end_matches(';'), "run SQL")
        }

        fn query(&mut self, sql: &str, sink: &mut dyn RowSink) -> Result<u64> {
            let cursor =
                self.conn.query(sql.trim().trim_end_matches(';'), &[]).map_err(|e| ora_err(e, "run the query"))?;
            let names: Vec<String> = cursor.columns().iter().map(|m| m.name().to_string()).collect();
            sink.columns(&names)?;
            let mut n = 0;
            for row in cursor {
                let row = row.map_err(|e| ora_err(e, "read query results"))?;
                let mut texts: Vec<Option<String>> = Vec::with_capacity(names.len());
                let mut floats: Vec<Option<f64>> = Vec::with_capacity(names.len());
                for i in 0..names.len() {
                    match row.get::<Option<String>>(i) {
                        Ok(v) => {
                            texts.push(v);
                            floats.push(None);
                        }
                        Err(_) => match row.get::<Option<f64>>(i) {
                            Ok(f) => {
                                texts.push(None);
                                floats.push(f);
                            }
                            Err(_) => {
                                texts.push(
                                    row.get::<Option<oracledb::OracleTimestamp>>(i)
                                        .ok()
                                        .flatten()
                                        .map(|t| t.to_string()),
                                );
                                floats.push(None);
                            }
                        },
                    }
                }
                let vals: Vec<Val> = (0..names.len())
                    .map(|i| match (&texts[i], floats[i]) {
                        (Some(s), _) => Val::Text(s),
                        (None, Some(f)) => Val::Float(f),
                        (None, None) => Val::Null,
                    })
                    .collect();
                sink.row(&vals)?;
                n += 1;
            }
            Ok(n)
        }

        fn query_columns(&mut self, sql: &str) -> Result<Vec<Column>> {
            let q = format!("SELECT * FROM (\n{}\n) sluice_q WHERE 1 = 0", sql.trim().trim_end_matches(';'));
            let cursor = self.conn.query(&q, &[]).map_err(|e| ora_err(e, "prepare the query"))?;
            Ok(cursor
                .columns()
                .iter()
                .map(|m| {
                    let ty = column_type_of(
                        &m.data_type(),
                        Some(m.precision() as u32),
                        Some(m.scale() as i32),
                        Some(m.max_size()),
                    );
                    Column::new(m.name(), ty)
                })
                .collect())
        }

        fn table_schema(&mut self, table: &str) -> Result<Option<Schema>> {
            let rows = self.strings(
                "SELECT column_name, data_type, data_precision, data_scale, char_length, nullable FROM user_tab_columns WHERE table_name = :1 ORDER BY column_id",
                &[&table],
                &format!("read the columns of `{table}`"),
            )?;
            if rows.is_empty() {
                return Ok(None);
            }
            let num = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<i64>().ok());
            Ok(Some(Schema::new(
                rows.iter()
                    .map(|r| Column {
                        name: r[0].clone().unwrap_or_default(),
                        ty: column_type_of(
                            r[1].as_deref().unwrap_or(""),
                            num(&r[2]).map(|x| x as u32),
                            num(&r[3]).map(|x| x as i32),
                            num(&r[4]).map(|x| x as u32),
                        ),
                        nullable: r[5].as_deref() != Some("N"),
                        format: None,
                    })
                    .collect(),
            )))
        }

        fn begin_load<'a>(&'a mut self, target: &LoadTarget<'_>) -> Result<Box<dyn LoadTx + 'a>> {
            if target.track_loads {
                self.exec_if_absent(
                &format!(
                    "CREATE TABLE {} (target VARCHAR2(128) NOT NULL, object VARCHAR2(1000) NOT NULL, sha256 VARCHAR2(64), \"rows\" NUMBER(19), run_id VARCHAR2(64), loaded_at TIMESTAMP DEFAULT SYSTIMESTAMP, PRIMARY KEY (target, object))",
                    quote(LOADS_TABLE)
                ),
                "create the load records table",
                )?;
            }
            if target.quarantine {
                self.exec_if_absent(
                    &format!(
                        "CREATE TABLE {} (target VARCHAR2(128) NOT NULL, \"file\" VARCHAR2(1000), line NUMBER(19), column_name VARCHAR2(128), value VARCHAR2(4000 CHAR), error VARCHAR2(4000 CHAR), record VARCHAR2(4000 CHAR), run_id VARCHAR2(64), rejected_at TIMESTAMP DEFAULT SYSTIMESTAMP)",
                        quote(REJECTS_TABLE)
                    ),
                    "create the rejects table",
                )?;
            }
            if !self.exists(target.table)? {
                self.exec(&create_table_sql(target.table, target.schema), "create the table")?;
            } else {
                for c in target.changes {
                    let sql = match c {
                        Change::Add(col) => format!(
                            "ALTER TABLE {} ADD ({} {})",
                            quote(target.table),
                            quote(&col.name),
                            sql_type(col.ty)
                        ),
                        Change::Widen { column, to } => {
                            format!("ALTER TABLE {} MODIFY ({} {})", quote(target.table), quote(column), sql_type(*to))
                        }
                    };
                    self.exec(&sql, "change the table")?;
                }
            }
            let stage = format!("{}{NEW_SUFFIX}", target.table);
            let into = if target.mode == LoadMode::Merge {
                if !self.exists(&stage)? {
                    self.exec(
                        &format!(
                            "CREATE GLOBAL TEMPORARY TABLE {} ON COMMIT DELETE ROWS AS SELECT * FROM {} WHERE 1 = 0",
                            quote(&stage),
                            quote(target.table)
                        ),
                        "create the staging table",
                    )?;
                }
                stage
            } else {
                target.table.to_string()
            };
            if target.mode == LoadMode::Replace {
                self.exec(&format!("DELETE FROM {}", quote(target.table)), "empty the table")?;
                if self.exists(LOADS_TABLE)? {
                    self.exec(
                        &format!(
                            "DELETE FROM {} WHERE target = '{}'",
                            quote(LOADS_TABLE),
                            target.table.replace('\'', "''")
                        ),
                        "reset load records",
                    )?;
                }
            }
            Ok(Box::new(OraLoad {
                ora: self,
                table: target.table.to_string(),
                into_sql: insert_sql(&into, target.columns),
                merge_sql: (target.mode == LoadMode::Merge)
                    .then(|| merge_sql(target.table, &into, target.columns, target.key)),
                stage: quote(&into),
                run_id: target.run_id.to_string(),
                open: true,
            }))
        }

        fn loaded_objects(&mut self, table: &str) -> Result<BTreeSet<String>> {
            if !self.exists(LOADS_TABLE)? {
                return Ok(BTreeSet::new());
            }
            let sql = format!("SELECT object FROM {} WHERE target = :1", quote(LOADS_TABLE));
            Ok(self.strings(&sql, &[&table], "read loaded objects")?.into_iter().filter_map(|r| r[0].clone()).collect())
        }

        fn materialize(&mut self, name: &str, sql: &str, build: &Build<'_>) -> Result<()> {
            let body = sql.trim().trim_end_matches(';');
            if build.kind == Materialized::View {
                return self
                    .exec(&format!("CREATE OR REPLACE VIEW {} AS\n{body}", quote(name)), &format!("build {name}"));
            }
            let new = format!("{name}{NEW_SUFFIX}");
            let old = format!("{name}__sluice_old");
            for t in [&new, &old] {
                if self.exists(t)? {
                    self.exec(&format!("DROP TABLE {}", quote(t)), "drop a stale build")?;
                }
            }
            for s in build_table_sql(&OracleDialect, &quote(&new), body, build.contract) {
                self.exec(&s, &format!("build {name}"))?;
            }
            self.conn.commit().map_err(|e| ora_err(e, "commit"))?;
            if self.exists(name)? {
                self.exec(&format!("ALTER TABLE {} RENAME TO {}", quote(name), quote(&old)), "swap in the new table")?;
            }
            self.exec(&format!("ALTER TABLE {} RENAME TO {}", quote(&new), quote(name)), "swap in the new table")?;
            if self.exists(&old)? {
                self.exec(&format!("DROP TABLE {}", quote(&old)), "drop the old table")?;
            }
            if let Some(key) = build.unique_key {
                self.exec(
                    &OracleDialect.unique_index(&format!("{name}__sluice_key"), &quote(name), key),
                    "index the unique key",
                )?;
            }
            Ok(())
        }

        fn dialect(&self) -> &'static dyn Dialect {
            &OracleDialect
        }
    }

    struct OraLoad<'a> {
        ora: &'a mut Oracle,
        table: String,
        into_sql: String,
        merge_sql: Option<String>,
        /// The staging table, quoted (a merge's).
        stage: String,
        run_id: String,
        open: bool,
    }

    /// A cell as an owned bind value (text in the formats `bind_expr` converts).
    enum Bind {
        Null,
        Int(i64),
        Float(f64),
        Text(String),
    }

    fn to_bind(batch: &RowBatch, c: Cell) -> Bind {
        let mut buf = Vec::new();
        match batch.val(c) {
            Val::Null => Bind::Null,
            Val::Int(i) => Bind::Int(i),
            Val::Float(f) => Bind::Float(f),
            Val::Bool(b) => Bind::Int(i64::from(b)),
            Val::Dec(s) => Bind::Text(s.trim_start_matches('+').to_string()),
            Val::Text(s) | Val::Json(s) => Bind::Text(s.to_string()),
            Val::Date(d) => {
                crate::types::value::write_date(&mut buf, d as i64);
                Bind::Text(String::from_utf8(buf).expect("dates are ASCII"))
            }
            Val::Ts(t) => {
                crate::types::value::write_ts(&mut buf, t, b' ');
                Bind::Text(pad_fraction(String::from_utf8(buf).expect("timestamps are ASCII")))
            }
            Val::TsTz(t) => {
                crate::types::value::write_ts(&mut buf, t, b' ');
                Bind::Text(format!("{} +00:00", pad_fraction(String::from_utf8(buf).expect("timestamps are ASCII"))))
            }
        }
    }

    impl LoadTx for OraLoad<'_> {
        fn write(&mut self, batch: &RowBatch) -> Result<()> {
            let rows: Vec<Vec<Bind>> =
                (0..batch.len()).map(|r| batch.row(r).iter().map(|c| to_bind(batch, *c)).collect()).collect();
            let none: Option<String> = None;
            let refs: Vec<Vec<&dyn oracledb::ToDbValue>> = rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|b| match b {
                            Bind::Null => &none as &dyn oracledb::ToDbValue,
                            Bind::Int(i) => i as &dyn oracledb::ToDbValue,
                            Bind::Float(f) => f as &dyn oracledb::ToDbValue,
                            Bind::Text(s) => s as &dyn oracledb::ToDbValue,
                        })
                        .collect()
                })
                .collect();
            let slices: Vec<&[&dyn oracledb::ToDbValue]> = refs.iter().map(|r| r.as_slice()).collect();
            self.ora
                .conn
                .execute_batch(&self.into_sql, oracledb::BindParameters::Slice(&slices))
                .map(|_| ())
                .map_err(|e| ora_err(e, &format!("insert rows into `{}`", self.table)))
        }

        fn write_rejects(&mut self, rejects: &[RowError]) -> Result<()> {
            let sql = format!(
                "INSERT INTO {} (target, \"file\", line, column_name, value, error, record, run_id) VALUES (:1, :2, :3, :4, :5, :6, :7, :8)",
                quote(REJECTS_TABLE)
            );
            for r in rejects {
                let line = r.line as i64;
                let cut = |s: &Option<String>| s.as_ref().map(|x| x.chars().take(4000).collect::<String>());
                self.ora
                    .conn
                    .execute(
                        &sql,
                        &[
                            &self.table,
                            &r.file,
                            &line,
                            &r.column,
                            &cut(&r.value),
                            &r.reason,
                            &cut(&r.record),
                            &self.run_id,
                        ],
                    )
                    .map_err(|e| ora_err(e, "record rejected rows"))?;
            }
            Ok(())
        }

        fn end_input(&mut self, _label: &str) -> Result<()> {
            // Each input is merged on its own, so a later file wins; MERGE
            // itself refuses a key repeated within one (ORA-30926).
            if let Some(m) = &self.merge_sql {
                self.ora.exec(m, "merge the staged rows")?;
                self.ora.exec(&format!("DELETE FROM {}", self.stage), "empty the staging table")?;
            }
            Ok(())
        }

        fn commit(mut self: Box<Self>, records: &[LoadRecord]) -> Result<()> {
            for r in records {
                let rows = r.rows as i64;
                self.ora
                    .conn
                    .execute(
                        &format!(
                            "INSERT INTO {} (target, object, sha256, \"rows\", run_id) VALUES (:1, :2, :3, :4, :5)",
                            quote(LOADS_TABLE)
                        ),
                        &[&self.table, &r.object, &r.sha256, &rows, &r.run_id],
                    )
                    .map_err(|e| ora_err(e, "record the load"))?;
            }
            self.ora.conn.commit().map_err(|e| ora_err(e, "commit the load"))?;
            self.open = false;
            Ok(())
        }

        fn rollback(mut self: Box<Self>) -> Result<()> {
            self.open = false;
            self.ora.conn.rollback().map_err(|e| ora_err(e, "roll back the load"))
        }
    }

    impl Drop for OraLoad<'_> {
        fn drop(&mut self) {
            if self.open {
                let _ = self.ora.conn.rollback();
            }
        }
    }

    /// `YYYY-MM-DD HH:MM:SS` → `YYYY-MM-DD HH:MM:SS.000000` (the bind format's `FF6`).
    fn pad_fraction(s: String) -> String {
        match s.find('.') {
            Some(i) => format!("{s}{}", "0".repeat(6 - (s.len() - i - 1))),
            None => format!("{s}.000000"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<Column> {
        vec![
            Column::parse_short("id", "bigint not null").unwrap(),
            Column::parse_short("price", "decimal(12,2)").unwrap(),
            Column::parse_short("at", "timestamp").unwrap(),
            Column::parse_short("day", "date").unwrap(),
            Column::parse_short("zoned", "timestamptz").unwrap(),
            Column::parse_short("doc", "json").unwrap(),
        ]
    }

    #[test]
    fn ddl() {
        assert_eq!(
            create_table_sql("sales", &Schema::new(cols())),
            "CREATE TABLE \"sales\" (\"id\" NUMBER(19) NOT NULL, \"price\" NUMBER(12,2), \"at\" TIMESTAMP(6), \"day\" DATE, \
             \"zoned\" TIMESTAMP(6) WITH TIME ZONE, \"doc\" VARCHAR2(4000 CHAR), CHECK (\"doc\" IS JSON))"
        );
        assert_eq!(sql_type(ColumnType::Varchar(9000)), "VARCHAR2(4000 CHAR)");
    }

    #[test]
    fn inserts_convert_explicitly() {
        assert_eq!(
            insert_sql("sales", &cols()),
            "INSERT INTO \"sales\" (\"id\", \"price\", \"at\", \"day\", \"zoned\", \"doc\") VALUES (:1, \
             TO_NUMBER(:2), TO_TIMESTAMP(:3, 'YYYY-MM-DD HH24:MI:SS.FF6'), \
             TO_DATE(:4, 'YYYY-MM-DD'), TO_TIMESTAMP_TZ(:5, 'YYYY-MM-DD HH24:MI:SS.FF6 TZH:TZM'), :6)"
        );
    }

    #[test]
    fn merge_on_a_key() {
        let c = vec![Column::parse_short("id", "integer").unwrap(), Column::parse_short("name", "text").unwrap()];
        assert_eq!(
            merge_sql("t", "t__sluice_new", &c, &["id".to_string()]),
            "MERGE INTO \"t\" t USING \"t__sluice_new\" s ON (t.\"id\" = s.\"id\") WHEN MATCHED THEN UPDATE SET t.\"name\" = s.\"name\" \
             WHEN NOT MATCHED THEN INSERT (\"id\", \"name\") VALUES (s.\"id\", s.\"name\")"
        );
    }

    #[test]
    fn catalog_types() {
        assert_eq!(column_type_of("NUMBER", Some(19), Some(0), None), ColumnType::BigInt);
        assert_eq!(column_type_of("NUMBER", Some(12), Some(2), None), ColumnType::Decimal(Some((12, 2))));
        assert_eq!(column_type_of("NUMBER", Some(1), Some(0), None), ColumnType::Boolean);
        assert_eq!(column_type_of("TIMESTAMP(6) WITH TIME ZONE", None, None, None), ColumnType::TimestampTz);
        assert_eq!(column_type_of("VARCHAR2", None, None, Some(16)), ColumnType::Varchar(16));
        assert_eq!(column_type_of("NUMBER", None, None, None), ColumnType::Decimal(None));
    }
}
