//! Exit codes, through the real binary (issue 11, item 20): 0 success, 1 a
//! program the project runs failed, 2 the user's to fix, 3 bad data, 4 a
//! server or the system failed. Database errors are sorted by their code.

use crate::db::{Kind, TestDb};
use crate::support::{TestProject, free_port, run_in};

per_backend!([sqlite => Sqlite, postgres => Postgres, mariadb => Mysql] sql_errors_exit_by_their_code);

fn command_project(command: &str) -> TestProject {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n");
    p.write(
        "pipelines/p.toml",
        &format!("[[steps]]\nname = \"job\"\nkind = \"command\"\ncommand = \"{command}\"\n\n[[steps]]\nname = \"after\"\nkind = \"empty\"\ndepends_on = [\"job\"]\n"),
    );
    p
}

/// Issue 11, item 20: a `command` step exiting 1 made `run` exit 4 ("a
/// server failed"). The program's failure is the step's: exit 1, with its
/// status and last output; 75 (`EX_TEMPFAIL`) too, retried by workers.
#[test]
fn a_failing_command_step_exits_1() {
    let p = command_project("echo cannot reach the API; exit 1");
    let out = p.run(&["run"]);
    out.expect_code(1);
    assert!(
        out.stdout.contains("error: `echo cannot reach the API; exit 1` exited with status 1; its last output:\n    cannot reach the API"),
        "{}",
        out.stdout
    );
    let tasks = crate::support::query_sqlite(
        &p.file(".sluice/state.db"),
        "SELECT step, status FROM sluice_tasks ORDER BY position",
    );
    assert_eq!(tasks, vec![vec!["job", "failed"], vec!["after", "upstream_failed"]]);
    let out = command_project("exit 75").run(&["run"]);
    out.expect_code(1);
}

/// `backfill` waits for its runs and exits 1 when any failed (documented
/// with the other codes), 0 when all succeeded.
#[test]
fn backfill_exits_1_when_a_run_fails() {
    let p = command_project("test $SLUICE_LOGICAL_DATE != 2026-01-02");
    let out = p.run(&["backfill", "p", "--from", "2026-01-01", "--to", "2026-01-03"]);
    out.expect_code(1);
    assert!(out.stdout.contains("2026-01-02 failed"), "{}", out.stdout);
    assert!(out.stdout.ends_with("backfill of `p`: 3 run(s), 1 failed\n"), "{}", out.stdout);
    let out = p.run(&["backfill", "p", "--from", "2026-01-03", "--to", "2026-01-04"]);
    out.expect_code(0);
}

/// A missing column is the user's SQL (2); a unique violation is the
/// data's (3); on every backend, decided from the database's code.
fn sql_errors_exit_by_their_code(kind: Kind) {
    let db = TestDb::new(kind);
    db.exec("CREATE TABLE t (id integer)");
    db.exec("INSERT INTO t VALUES (1), (2)");
    let p = TestProject::new();
    p.write("sluice.toml", &format!("name = \"t\"\n[connections.w]\nurl = \"{}\"\n", db.url()));
    p.write("models/sources.toml", "[sources.raw]\ntables = [\"t\"]\n");
    p.write("models/missing_column.sql", "select nope from {{ source('raw', 't') }}\n");
    p.write(
        "models/duplicate_key.sql",
        "{{ config(materialized='incremental', unique_key='id') }}\nselect id from {{ source('raw', 't') }}\nunion all\nselect id from {{ source('raw', 't') }}\n",
    );
    p.write("models/fine.sql", "select id from {{ source('raw', 't') }}\n");
    let out = p.run(&["transform", "--select", "missing_column"]);
    out.expect_code(2);
    let out = p.run(&["transform", "--select", "duplicate_key"]);
    out.expect_code(3);
    p.run(&["transform", "--select", "fine"]).expect_code(0);
}

/// A server that is not there is the system's (4); bad input data is 3; a
/// mistake in the arguments is 2.
#[test]
fn servers_data_and_arguments_have_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let down = format!("postgres://postgres@127.0.0.1:{}/test", free_port());
    run_in(dir.path(), &["export", &down, "--query", "select 1", "-o", "o.tsv"], &[]).expect_code(4);
    std::fs::write(dir.path().join("bad.csv"), "id\nx\n").unwrap();
    std::fs::write(dir.path().join("s.toml"), "[columns]\nid = \"integer\"\n").unwrap();
    run_in(dir.path(), &["load", "bad.csv", "sqlite://w.db", "--table", "t", "--schema", "s.toml", "--create"], &[])
        .expect_code(3);
    run_in(dir.path(), &["export", "sqlite://w.db", "--table", "t", "--format", "xml", "-o", "o"], &[]).expect_code(2);
}
