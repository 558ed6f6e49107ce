//! Test databases: a fresh PostgreSQL schema, MariaDB database or SQLite file
//! per test, dropped afterwards. Queried through the databases' own command-line
//! clients, so what a test reads back does not depend on sluice's code.

use std::path::{Path, PathBuf};
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
        "{what} failed (is the server up? scripts/test.sh starts it):\n{}",
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

    /// The schema a dbt project's `generate_schema_name` makes of custom
    /// schema `custom` (the target's schema, `_`, the custom name; on SQLite
    /// the target's schema is `main`).
    pub fn custom_schema(&self, custom: &str) -> String {
        match self.kind {
            Kind::Sqlite => format!("main_{custom}"),
            _ => format!("{}_{custom}", self.name),
        }
    }

    /// `exec` of SQL that may name tables in other schemas (attached on
    /// SQLite, as in `rows_with_schemas`).
    pub fn exec_with_schemas(&self, schemas: &[&str], sql: &str) -> String {
        match self.kind {
            Kind::Sqlite => self.exec(&format!("{}{sql}", self.attach(schemas))),
            _ => self.exec(sql),
        }
    }

    /// `ATTACH` statements for schemas' files beside a SQLite database.
    fn attach(&self, schemas: &[&str]) -> String {
        let dir = std::path::Path::new(&self.name).parent().unwrap();
        schemas.iter().map(|s| format!("ATTACH '{}' AS \"{s}\"; ", dir.join(format!("{s}.db")).display())).collect()
    }

    /// Rows of a query that may name tables in other schemas as `schema.table`
    /// (on SQLite each schema is `<schema>.db` beside the database, attached
    /// here as dbt-sqlite and sluice attach it).
    pub fn rows_with_schemas(&self, schemas: &[&str], sql: &str) -> Vec<Vec<String>> {
        match self.kind {
            Kind::Sqlite => self.rows(&format!("{}{sql}", self.attach(schemas))),
            _ => self.rows(sql),
        }
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
                        // With the schemas a dbt project made beside it (`<name>_x`).
                        &format!(
                            "DO $$ DECLARE s text; BEGIN FOR s IN SELECT nspname FROM pg_namespace WHERE nspname = '{0}' OR nspname LIKE '{0}\\_%' LOOP EXECUTE format('DROP SCHEMA %I CASCADE', s); END LOOP; END $$",
                            self.name
                        ),
                    ])
                    .output();
            }
            Kind::Mysql => {
                let list = Command::new("mariadb")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-u",
                        "root",
                        "-N",
                        "-B",
                        "-e",
                        &format!(
                            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE '{}\\_%'",
                            self.name
                        ),
                    ])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let mut drop = format!("DROP DATABASE IF EXISTS {};", self.name);
                for s in list.lines().filter(|l| !l.is_empty()) {
                    drop.push_str(&format!(" DROP DATABASE IF EXISTS `{s}`;"));
                }
                let _ = Command::new("mariadb").args(["-h", "127.0.0.1", "-u", "root", "-e", &drop]).output();
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

/// A PostgreSQL server of its own, in a temporary folder, that checks
/// passwords (`scram-sha-256` for every connection): the shared server
/// trusts loopback, so it cannot tell a right password from a wrong one.
/// Stopped and removed when dropped.
pub struct PasswordPg {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

/// The superuser password of a `PasswordPg`.
pub const PASSWORD_PG_SUPERUSER: &str = "super-pw";

impl PasswordPg {
    pub fn start() -> PasswordPg {
        let bin = pg_bin();
        let dir = tempfile::tempdir().unwrap();
        // initdb and postgres refuse to run as root: run them as `postgres`.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            let out = Command::new("id").args(["-u", "postgres"]).output().expect("id runs");
            let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("a `postgres` user exists");
            let out = Command::new("id").args(["-g", "postgres"]).output().expect("id runs");
            let gid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            let c = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: chown(2) on a folder this test just created.
            assert_eq!(unsafe { libc::chown(c.as_ptr(), uid, gid) }, 0, "chown the test server's folder");
        }
        let as_owner = |program: &str| {
            let p = bin.join(program);
            let mut c = if root { Command::new("runuser") } else { Command::new(&p) };
            if root {
                c.args(["-u", "postgres", "--"]).arg(&p);
            }
            c
        };
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD_PG_SUPERUSER).unwrap();
        if root {
            let c = std::ffi::CString::new(pwfile.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: as above, on a file this test just wrote.
            let _ = unsafe { libc::chmod(c.as_ptr(), 0o644) };
        }
        let data = dir.path().join("data");
        run(
            as_owner("initdb")
                .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .arg("-D")
                .arg(&data),
            "initdb a password-checking PostgreSQL",
        );
        let port = crate::support::free_port();
        run(
            as_owner("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("log"))
                .arg("-o")
                .arg(format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=16MB",
                    dir.path().display()
                ))
                .args(["-w", "start"]),
            "start a password-checking PostgreSQL",
        );
        PasswordPg { port, dir, bin }
    }

    /// Runs SQL as the superuser (with its password).
    pub fn exec(&self, sql: &str) -> String {
        run(
            Command::new("psql")
                .env("PGPASSWORD", PASSWORD_PG_SUPERUSER)
                .env("PGCLIENTENCODING", "UTF8")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres"])
                .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql]),
            sql,
        )
    }
}

impl Drop for PasswordPg {
    fn drop(&mut self) {
        let root = unsafe { libc::geteuid() } == 0;
        let p = self.bin.join("pg_ctl");
        let mut c = if root { Command::new("runuser") } else { Command::new(&p) };
        if root {
            c.args(["-u", "postgres", "--"]).arg(&p);
        }
        let _ = c.arg("-D").arg(self.dir.path().join("data")).args(["-m", "immediate", "-w", "stop"]).output();
    }
}

/// The folder of PostgreSQL's server programs (initdb, pg_ctl).
pub fn pg_bin() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        if Path::new(dir).join("initdb").is_file() {
            return PathBuf::from(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).filter(|b| b.join("initdb").is_file()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().expect("PostgreSQL's server programs (initdb, pg_ctl) are installed")
}

/// Quotes a SQL string literal (quotes doubled; for MariaDB, backslashes too).
pub fn sql_literal(s: &str, kind: Kind) -> String {
    let s = s.replace('\'', "''");
    let s = if kind == Kind::Mysql { s.replace('\\', "\\\\") } else { s };
    format!("'{s}'")
}

/// A whole PostgreSQL database of its own (not a schema of `test`), for a
/// deployment's state store; dropped (its connections ended) afterwards.
/// `new` only names it: `create` makes it, so a test can start services
/// before their database exists.
pub struct FreshPgDb {
    pub name: String,
}

fn psql_admin(sql: &str) -> String {
    run(
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
            "-c",
            sql,
        ]),
        sql,
    )
}

impl FreshPgDb {
    pub fn new() -> FreshPgDb {
        FreshPgDb { name: unique("itdb") }
    }

    pub fn create(&self) -> &Self {
        psql_admin(&format!("CREATE DATABASE {}", self.name));
        self
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    /// Runs SQL in the database through psql.
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let out = run(
            Command::new("psql").args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                &self.name,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAt",
                "-F",
                "\t",
                "-c",
                sql,
            ]),
            sql,
        );
        out.lines().map(|l| l.split('\t').map(str::to_string).collect()).collect()
    }
}

impl Drop for FreshPgDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qAt", "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .output();
    }
}
