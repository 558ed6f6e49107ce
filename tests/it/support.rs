//! Helpers: temporary projects, running the real binary, reading SQLite tables.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What a run of the binary printed and returned.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Fails the test with everything printed when the exit code differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.env("SLUICE_NO_PROGRESS", "1");
    c.env_remove("SLUICE_PROJECT");
    c
}

/// Runs the binary with `args` in `cwd`.
pub fn run_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut c = bin();
    c.current_dir(cwd).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("the sluice binary runs");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A project in a temporary folder.
pub struct TestProject {
    pub dir: tempfile::TempDir,
}

impl TestProject {
    pub fn new() -> Self {
        TestProject { dir: tempfile::tempdir().expect("a temp dir") }
    }

    /// A copy of a folder of the repository (without run outputs).
    pub fn copy_of(rel: &str) -> Self {
        let p = TestProject::new();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        copy_dir(&src, p.path());
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> &Self {
        self.write_bytes(rel, text.as_bytes())
    }

    pub fn write_bytes(&self, rel: &str, bytes: &[u8]) -> &Self {
        let p = self.file(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
        self
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.file(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// Runs `sluice ARGS` inside the project folder.
    pub fn run(&self, args: &[&str]) -> Out {
        run_in(self.path(), args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        run_in(self.path(), args, env)
    }

    /// Rows of a query on the project's default SQLite warehouse, as text.
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        query_sqlite(&self.file(".sluice/warehouse.db"), sql)
    }
}

pub fn query_sqlite(db: &Path, sql: &str) -> Vec<Vec<String>> {
    let c = rusqlite::Connection::open(db).unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let mut st = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = st.column_count();
    let rows = st
        .query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => "NULL".to_string(),
                        rusqlite::types::ValueRef::Integer(x) => x.to_string(),
                        rusqlite::types::ValueRef::Real(x) => x.to_string(),
                        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                        rusqlite::types::ValueRef::Blob(b) => format!("{b:?}"),
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == ".sluice" || name == "output" || name == "target" {
            continue;
        }
        let to = dst.join(&name);
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

/// A project with one pipeline that lands `data/in.csv`, loads it into `t`
/// with the given columns, and exports `t` to `out/t.tsv`.
pub fn simple_project(columns: &str, csv: &[u8]) -> TestProject {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n");
    p.write(
        "pipelines/p.toml",
        &format!(
            r#"[[steps]]
name = "ingest"
kind = "ingest"
source = "data/in.csv"

[[steps]]
name = "load"
kind = "load"
from = "ingest"
table = "t"
mode = "replace"
[steps.columns]
{columns}

[[steps]]
name = "export"
kind = "export"
depends_on = ["load"]
table = "t"
path = "out/t.tsv"
"#
        ),
    );
    p.write_bytes("data/in.csv", csv);
    p
}
