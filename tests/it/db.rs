//! Test databases: a fresh PostgreSQL schema, MariaDB database or SQLite file
//! per test, dropped afterwards. Queried through the databases' own command-line
//! clients, so what a test reads back does not depend on sluice's code.

use std::path::PathBuf;
use std::process::Command;

pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const MY_BASE: &str = "mysql://root@127.0.0.1:3306";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
    Mysql,
}

pub struct TestDb {
    pub kind: Kind,
    /// Schema (PostgreSQL) or database (MariaDB) name; the file for SQLite.
    pub name: String,
    _dir: Option<tempfile::TempDir>,
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &uuid::Uuid::now_v7().simple().to_string()[20..])
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run the client: {e}"));
    assert!(
        out.status.success(),
        "{what} failed (is the server up? .ci/run starts it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl TestDb {
    pub fn new(kind: Kind) -> TestDb {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let name = dir.path().join("w.db").display().to_string();
                TestDb { kind, name, _dir: Some(dir) }
            }
            Kind::Postgres => {
                let name = unique("it");
                let db = TestDb { kind, name: name.clone(), _dir: None };
                db.exec(&format!("CREATE SCHEMA {name}"));
                db
            }
            Kind::Mysql => {
                let name = unique("it");
                let db = TestDb { kind, name: name.clone(), _dir: None };
                run(
                    Command::new("mariadb").args([
                        "-h",
                        "127.0.0.1",
                        "-u",
                        "root",
                        "-e",
                        &format!("CREATE DATABASE {name}"),
                    ]),
                    "create a database",
                );
                db
            }
        }
    }

    /// The URL sluice connects with.
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Sqlite => format!("sqlite://{}", self.name),
            Kind::Postgres => format!("{PG_BASE}?schema={}", self.name),
            Kind::Mysql => format!("{MY_BASE}/{}", self.name),
        }
    }

    /// Runs SQL through the database's own client.
    pub fn exec(&self, sql: &str) -> String {
        match self.kind {
            Kind::Sqlite => run(Command::new("sqlite3").args([&self.name, sql]), sql),
            Kind::Postgres => run(
                Command::new("psql").args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "test",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-qAt",
                    "-F",
                    "\t",
                    "-c",
                    &format!("SET search_path = {}; {sql}", self.name),
                ]),
                sql,
            ),
            Kind::Mysql => run(
                Command::new("mariadb").args([
                    "-h",
                    "127.0.0.1",
                    "-u",
                    "root",
                    "-N",
                    "-B",
                    "-D",
                    &self.name,
                    "-e",
                    sql,
                ]),
                sql,
            ),
        }
    }

    /// Rows of a query, each a list of fields (NULL shown as `NULL`).
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let sql = match self.kind {
            Kind::Postgres => sql.to_string(),
            _ => sql.to_string(),
        };
        let out = match self.kind {
            Kind::Sqlite => {
                run(Command::new("sqlite3").args(["-separator", "\t", "-nullvalue", "NULL", &self.name, &sql]), &sql)
            }
            Kind::Postgres => run(
                Command::new("psql").args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "test",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-qAt",
                    "-F",
                    "\t",
                    "-P",
                    "null=NULL",
                    "-c",
                    &format!("SET search_path = {}; {sql}", self.name),
                ]),
                &sql,
            ),
            Kind::Mysql => run(
                Command::new("mariadb").args([
                    "-h",
                    "127.0.0.1",
                    "-u",
                    "root",
                    "-N",
                    "-B",
                    "-D",
                    &self.name,
                    "-e",
                    &sql,
                ]),
                &sql,
            ),
        };
        out.lines().map(|l| l.split('\t').map(str::to_string).collect()).collect()
    }

    pub fn count(&self, table: &str) -> u64 {
        self.rows(&format!("SELECT COUNT(*) FROM {table}"))[0][0].parse().unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self.kind {
            Kind::Sqlite => {}
            Kind::Postgres => {
                let _ = Command::new("psql")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-U",
                        "postgres",
                        "-d",
                        "test",
                        "-qc",
                        &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
                    ])
                    .output();
            }
            Kind::Mysql => {
                let _ = Command::new("mariadb")
                    .args(["-h", "127.0.0.1", "-u", "root", "-e", &format!("DROP DATABASE IF EXISTS {}", self.name)])
                    .output();
            }
        }
    }
}

/// The test tools folder (copies of the team's data generator and checker).
pub fn tool(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools").join(name)
}

/// Writes `rows` rows of generated sales to `path` (dirty: with a defects manifest).
pub fn gen_sales(rows: u64, path: &std::path::Path, dirty: bool) {
    let mut c = Command::new("python3");
    c.arg(tool("gen_sales.py")).arg("-q");
    if dirty {
        c.arg("--dirty");
    }
    c.arg(rows.to_string()).arg(path);
    run(&mut c, "gen_sales.py");
}

/// The reference table definition of the benchmarks' sales data.
pub const SALES_SCHEMA: &str = "[columns]
sale_id = \"bigint not null\"
sale_ts = \"timestamp\"
store_id = \"integer\"
channel = \"varchar(16)\"
product_id = \"integer\"
product_name = \"varchar(255)\"
category = \"varchar(64)\"
quantity = \"integer\"
unit_price = \"decimal(12,2)\"
customer_email = \"varchar(255)\"
";
