//! Processes that die, stop or hang (issue 11, items 11–13), as real
//! processes: `sluice run` killed with -9 or stopped with Ctrl-C/SIGTERM,
//! readers that close their pipe early, queries past a step's timeout on
//! each warehouse, a worker killed under a running command, and a state
//! store that goes away while a step runs.

use std::io::BufRead;
use std::process::Stdio;

use crate::db::{Kind, TestDb};
use crate::support::{
    Proxy, Service, TestProject, alive, bin, free_port, http, pid_in, query_sqlite, signal, wait_for,
};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Rows of a query on a project's embedded state store.
fn state_rows(p: &TestProject, sql: &str) -> Vec<Vec<String>> {
    query_sqlite(&p.file(".sluice/state.db"), sql)
}

/// Waits for a service to exit (up to `secs`); its exit code, or `None`
/// when it is still running or was killed by a signal.
fn exit_code(s: &mut Service, secs: u64) -> Option<i32> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            return st.code();
        }
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

const NAP: &str = r#"max_active_runs = 1

[[steps]]
name = "nap"
kind = "command"
command = "if mkdir nap.claimed 2>/dev/null; then echo $$ > nap.pid; exec sleep 120; fi"

[[steps]]
name = "after"
kind = "empty"
depends_on = ["nap"]
"#;

/// Issue 11, item 11: a `sluice run` killed with -9 in the middle of a step
/// does not leave its run `running`: its command ends with it, and once its
/// lease runs out the run is ended (`failed`, the step's attempt `lost`),
/// so a run of the same pipeline queued behind it (max_active_runs = 1)
/// starts and succeeds.
#[test]
fn a_killed_run_is_ended_and_does_not_block_its_pipeline() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n");
    p.write("pipelines/p.toml", NAP);
    let mut run = Service::start(p.path(), "run", &["run", "p"], &[("SLUICE_LEASE", "2s")]);
    let nap = pid_in(&p.file("nap.pid"));
    run.kill9();
    let addr = format!("127.0.0.1:{}", free_port());
    let _serve = Service::start(p.path(), "serve", &["serve", "--listen", &addr], &[]);
    wait_for(30, "the API", || std::net::TcpStream::connect(&addr).is_ok());
    let (code, body) = http("POST", &addr, "/api/pipelines/p/runs", None);
    assert_eq!(code, 201, "{body}");
    let id = json(&body)["id"].as_str().unwrap().to_string();
    wait_for(60, "the run queued behind the killed one to succeed", || {
        json(&http("GET", &addr, &format!("/api/runs/{id}"), None).1)["status"] == "success"
    });
    let killed = state_rows(&p, "SELECT id, status, error FROM sluice_runs WHERE trigger = 'cli'");
    assert_eq!(killed.len(), 1);
    assert_eq!(killed[0][1], "failed");
    assert!(killed[0][2].contains("stopped without ending its run"), "{:?}", killed[0]);
    assert_eq!(
        state_rows(
            &p,
            &format!("SELECT step, status FROM sluice_tasks WHERE run_id = '{}' ORDER BY position", killed[0][0])
        ),
        vec![vec!["nap", "failed"], vec!["after", "cancelled"]]
    );
    assert_eq!(
        state_rows(&p, &format!("SELECT status FROM sluice_attempts WHERE run_id = '{}'", killed[0][0])),
        vec![vec!["lost"]]
    );
    // The step's command did not outlive the process that started it.
    wait_for(30, "the killed run's command to end", || !alive(nap));
}

/// Issue 11, item 11: Ctrl-C (SIGINT) or SIGTERM stops `sluice run`'s
/// running step and ends its run `cancelled`, exit status 130.
#[test]
fn ctrl_c_or_sigterm_ends_a_run_cancelled() {
    for sig in ["INT", "TERM"] {
        let p = TestProject::new();
        p.write("sluice.toml", "name = \"t\"\n");
        p.write("pipelines/p.toml", NAP);
        let mut run = Service::start(p.path(), "run", &["run"], &[]);
        let nap = pid_in(&p.file("nap.pid"));
        signal(run.pid(), sig);
        assert_eq!(exit_code(&mut run, 30), Some(130), "SIG{sig}:\n{}", run.output());
        assert!(run.output().contains("pipeline `p` cancelled: 0 of 2 steps succeeded"), "{}", run.output());
        assert!(!alive(nap), "the step's command is stopped");
        assert_eq!(state_rows(&p, "SELECT status, error FROM sluice_runs"), vec![vec!["cancelled", "cancelled"]]);
        assert_eq!(
            state_rows(&p, "SELECT step, status, COALESCE(error, '') FROM sluice_tasks ORDER BY position"),
            vec![vec!["nap", "cancelled", "stopped: the run was cancelled"], vec!["after", "cancelled", ""]]
        );
    }
}

/// Runs `sluice ARGS` with stdout on a pipe, reads one line and closes the
/// pipe (as `| head -1` does), then calls `then`; returns the first line,
/// the exit code and stderr.
fn first_line_then_close(p: &TestProject, args: &[&str], then: impl FnOnce()) -> (String, Option<i32>, String) {
    let err_file = p.file("stderr.txt");
    let mut c = bin();
    c.current_dir(p.path()).args(args).stdout(Stdio::piped()).stderr(std::fs::File::create(&err_file).unwrap());
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    {
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
    }
    then();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (line, code, std::fs::read_to_string(&err_file).unwrap())
}

/// Issue 11, item 12: anything that prints survives a reader that goes
/// away (`| head -1`) and exits 0, with no panic; `sluice run` finishes its
/// run and records it.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n");
    // The middle step waits until the test has closed the pipe, so the
    // lines after it are written to a pipe nobody reads.
    p.write(
        "pipelines/p.toml",
        r#"[[triggers]]
cron = "*/5 * * * *"

[[steps]]
name = "first"
kind = "empty"

[[steps]]
name = "gate"
kind = "command"
command = "while [ ! -e go ]; do sleep 0.05; done"
depends_on = ["first"]

[[steps]]
name = "last"
kind = "empty"
depends_on = ["gate"]
"#,
    );
    let (line, code, err) = first_line_then_close(&p, &["run", "p"], || {
        p.write("go", "");
    });
    assert!(line.starts_with("first "), "{line}");
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(state_rows(&p, "SELECT status FROM sluice_runs"), vec![vec!["success"]]);

    // More than a pipe holds (64 KiB), so the writer meets the closed pipe.
    let mut many = String::new();
    for i in 0..3000 {
        many.push_str(&format!("[[steps]]\nname = \"a_step_with_a_rather_long_name_{i:05}\"\nkind = \"empty\"\n\n"));
    }
    p.write("pipelines/many.toml", &many);
    for args in [&["dag", "many"][..], &["dag", "many", "--format", "json"], &["next", "p", "-n", "5000"]] {
        let (line, code, err) = first_line_then_close(&p, args, || {});
        assert!(!line.is_empty(), "{args:?}");
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let db = p.file("w.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE big AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000) \
         SELECT i, 'some text to make the rows longer' AS t FROM n",
    )
    .unwrap();
    let url = format!("sqlite://{}", db.display());
    let (line, code, err) = first_line_then_close(&p, &["export", &url, "--table", "big"], || {});
    assert_eq!(line, "i\tt\n");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
}

/// Queries on the warehouse's server that run the slow model (other than
/// the one asking).
fn slow_queries(wh: &TestDb) -> u64 {
    match wh.kind {
        Kind::Postgres => wh.rows(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query LIKE '%pg_sleep(90)%'",
        )[0][0]
            .parse()
            .unwrap(),
        Kind::Mysql => wh.rows(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE id <> CONNECTION_ID() AND info LIKE '%sleep(90)%'",
        )[0][0]
            .parse()
            .unwrap(),
        // SQLite has no list of queries: a statement still running holds
        // the database's write lock, so a write that does not wait fails.
        Kind::Sqlite => {
            let c = rusqlite::Connection::open(&wh.name).unwrap();
            c.busy_timeout(std::time::Duration::ZERO).unwrap();
            match c.execute_batch("CREATE TABLE probe (x INTEGER); DROP TABLE probe") {
                Ok(()) => 0,
                Err(_) => 1,
            }
        }
    }
}

/// Stops what is left of the slow model on the server (after a failure).
fn kill_slow_queries(wh: &TestDb) {
    match wh.kind {
        Kind::Postgres => {
            wh.rows(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query LIKE '%pg_sleep(90)%'",
            );
        }
        Kind::Mysql => {
            for r in wh.rows(
                "SELECT id FROM information_schema.processlist WHERE id <> CONNECTION_ID() AND info LIKE '%sleep(90)%'",
            ) {
                let _ = std::process::Command::new("mariadb")
                    .args(["-h", "127.0.0.1", "-u", "root", "-e", &format!("KILL QUERY {}", r[0])])
                    .output();
            }
        }
        Kind::Sqlite => {}
    }
}

/// A model that runs for 90 seconds (for ever on SQLite).
fn slow_model(kind: Kind) -> &'static str {
    match kind {
        Kind::Postgres => "select 1 as x from pg_sleep(90)\n",
        Kind::Mysql => "select sleep(90) as x\n",
        // Counts for ever: only an interrupt ends it.
        Kind::Sqlite => "with recursive c(i) as (select 1 union all select i + 1 from c) select count(*) as x from c\n",
    }
}

/// Waits until the slow model is gone from the server, up to a generous
/// bound far shorter than it runs by itself.
fn wait_until_stopped(wh: &TestDb, after: &str) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(45);
    while slow_queries(wh) > 0 {
        if std::time::Instant::now() > end {
            kill_slow_queries(wh);
            panic!("the slow model still runs on the server 45 s after {after}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

per_backend!(
    [sqlite => Sqlite, postgres => Postgres, mysql => Mysql]
    a_timed_out_query_is_stopped_on_the_server,
    ctrl_c_stops_a_transform_on_the_server,
);

/// Issue 11, item 13: Ctrl-C on `sluice transform` stops the model being
/// built on the database server too, and exits 130.
fn ctrl_c_stops_a_transform_on_the_server(kind: Kind) {
    let wh = TestDb::new(kind);
    let p = TestProject::new();
    p.write("sluice.toml", &format!("name = \"t\"\n[connections.w]\nurl = \"{}\"\n", wh.url()));
    p.write("models/slow.sql", slow_model(kind));
    let mut t = Service::start(p.path(), "transform", &["transform"], &[]);
    wait_for(60, "the model to run on the server", || slow_queries(&wh) > 0);
    signal(t.pid(), "INT");
    let code = exit_code(&mut t, 30);
    wait_until_stopped(&wh, "Ctrl-C");
    assert_eq!(code, Some(130), "{}", t.output());
}

/// Issue 11, item 13: a model past its step's timeout is stopped on the
/// database server (PostgreSQL's cancel request, MariaDB's KILL QUERY,
/// SQLite's interrupt), not left running while the attempt is retried.
fn a_timed_out_query_is_stopped_on_the_server(kind: Kind) {
    let wh = TestDb::new(kind);
    let p = TestProject::new();
    p.write("sluice.toml", &format!("name = \"t\"\n[connections.w]\nurl = \"{}\"\n", wh.url()));
    p.write("models/slow.sql", slow_model(kind));
    p.write(
        "pipelines/p.toml",
        "[[steps]]\nname = \"build\"\nkind = \"sql\"\ntimeout = \"1s\"\nretries = 1\nretry_delay = \"100ms\"\n",
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let _serve = Service::start(p.path(), "serve", &["serve", "--listen", &addr, "--grace", "1s"], &[]);
    wait_for(30, "the API", || std::net::TcpStream::connect(&addr).is_ok());
    let (code, body) = http("POST", &addr, "/api/pipelines/p/runs", None);
    assert_eq!(code, 201, "{body}");
    let id = json(&body)["id"].as_str().unwrap().to_string();
    wait_for(60, "the run to fail", || {
        json(&http("GET", &addr, &format!("/api/runs/{id}"), None).1)["status"] == "failed"
    });
    let run = json(&http("GET", &addr, &format!("/api/runs/{id}"), None).1);
    assert_eq!(run["error"], "step `build`: timed out after 1s (the step's timeout)");
    // Both attempts' queries are gone from the server, long before they
    // would have ended by themselves.
    wait_until_stopped(&wh, "its run failed");
    let tasks = json(&http("GET", &addr, &format!("/api/runs/{id}/tasks"), None).1);
    let attempts = tasks["tasks"][0]["attempts"].as_array().unwrap().clone();
    assert_eq!(attempts.len(), 2, "{tasks}");
}

/// Issue 11, item 13: a worker killed with -9 does not leave its task's
/// command running (nor what the command started in the background), so
/// the task is not still running when another worker takes it.
#[test]
fn a_killed_workers_command_ends_with_it() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n");
    p.write(
        "pipelines/p.toml",
        "[[steps]]\nname = \"nap\"\nkind = \"command\"\ncommand = \"sleep 120 & echo $! > bg.pid; echo $$ > sh.pid; wait\"\n",
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let mut serve = Service::start(p.path(), "serve", &["serve", "--listen", &addr], &[]);
    wait_for(30, "the API", || std::net::TcpStream::connect(&addr).is_ok());
    assert_eq!(http("POST", &addr, "/api/pipelines/p/runs", None).0, 201);
    let (sh, bg) = (pid_in(&p.file("sh.pid")), pid_in(&p.file("bg.pid")));
    assert!(alive(sh) && alive(bg));
    serve.kill9();
    wait_for(30, "the command and its background job to end", || !alive(sh) && !alive(bg));
}

/// Issue 11, item 13: a step that succeeds while its worker cannot reach
/// the state store for longer than the lease is not run again: the
/// scheduler, which still reaches the store, takes the task for lost, but
/// nobody has taken it when the worker comes back with the result, so the
/// result is recorded and the run goes on.
#[test]
fn a_result_is_recorded_when_the_state_store_comes_back() {
    let state = TestDb::new(Kind::Postgres);
    let proxy = Proxy::start("127.0.0.1:5432");
    let url = format!("postgres://postgres@127.0.0.1:{}/test?schema={}", proxy.port, state.name);
    let direct = state.url();
    let p = TestProject::new();
    p.write("sluice.toml", &format!("name = \"t\"\n[state]\nurl = \"{url}\"\n"));
    p.write(
        "pipelines/p.toml",
        r#"[[steps]]
name = "work"
kind = "command"
command = "echo ran >> ran.txt; while [ ! -e go ]; do sleep 0.05; done"

[[steps]]
name = "after"
kind = "empty"
depends_on = ["work"]
"#,
    );
    // The worker reaches the store through the proxy; the scheduler does not.
    let _sched = Service::start(p.path(), "scheduler", &["scheduler", "--tick", "200ms", "--state", &direct], &[]);
    let _worker = Service::start(p.path(), "worker", &["worker", "--slots", "2", "--lease", "2s"], &[]);
    p.run(&["backfill", "p", "--from", "2026-01-01", "--to", "2026-01-01", "--no-wait"]).expect_code(0);
    wait_for(60, "the step to start", || p.file("ran.txt").exists());
    proxy.down();
    // The step succeeds while its lease runs out and the scheduler takes it for lost.
    p.write("go", "");
    wait_for(60, "the scheduler to take the task for lost", || {
        state.rows("SELECT status FROM sluice_attempts WHERE step = 'work'") == vec![vec!["lost"]]
    });
    proxy.up();
    wait_for(60, "the run to finish", || state.rows("SELECT status FROM sluice_runs")[0][0] != "running");
    assert_eq!(state.rows("SELECT status FROM sluice_runs"), vec![vec!["success"]]);
    assert_eq!(p.read("ran.txt"), "ran\n", "the step ran once");
    assert_eq!(
        state.rows("SELECT step, attempt, status FROM sluice_attempts ORDER BY step, attempt"),
        vec![vec!["after", "1", "success"], vec!["work", "1", "success"]]
    );
    let logs = state.rows("SELECT message FROM sluice_task_logs WHERE step = 'work' ORDER BY id");
    assert!(logs.iter().any(|l| l[0].contains("came back with the result")), "{logs:?}");
}
