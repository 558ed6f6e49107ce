//! The control plane as real processes on loopback: a scheduler, workers and
//! the API as separate services on a PostgreSQL state store; `sluice serve`
//! on the embedded default; retries, cancel, shutdown, backfill and `next`.

use crate::db::{Kind, TestDb};
use crate::support::{Service, TestProject, free_port, http, wait_for};

const ORDERS: &str =
    "id,amount\n1,10.00\n2,20.00\n3,30.00\n4,40.00\n5,50.00\n6,60.00\n7,70.00\n8,80.00\n9,90.00\n10,100.00\n";

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Two workers, a scheduler and the API as separate processes on a
/// PostgreSQL state store: 50 runs of a 5-step DAG each complete exactly once;
/// a worker killed (-9) in the middle of a task loses it to the other worker
/// once its lease runs out, and the target holds every row exactly once.
#[test]
fn separate_services_run_fifty_runs_once_each_and_survive_a_killed_worker() {
    let state = TestDb::new(Kind::Postgres);
    let wh = TestDb::new(Kind::Postgres);
    let p = TestProject::new();
    p.write(
        "sluice.toml",
        &format!("name = \"t\"\n[connections.w]\nurl = \"{}\"\n[state]\nurl = \"{}\"\n", wh.url(), state.url()),
    );
    p.write("data/orders.csv", ORDERS);
    p.write("models/order_totals.sql", "select count(*) as n, sum(amount) as total from {{ ref('orders') }}\n");
    // The first `slow` task to run sleeps until its worker is killed; every
    // other one (and the retry) passes at once.
    p.write(
        "pipelines/p.toml",
        r#"[[steps]]
name = "land"
kind = "ingest"
source = "data/orders.csv"

[[steps]]
name = "load"
kind = "load"
from = "land"
table = "orders"
columns = { id = "integer not null", amount = "decimal(8,2)" }

[[steps]]
name = "slow"
kind = "command"
depends_on = ["load"]
command = "if mkdir slow.claimed 2>/dev/null; then echo $$ > slow.pid; exec sleep 120; fi"

[[steps]]
name = "model"
kind = "sql"
depends_on = ["slow"]

[[steps]]
name = "export"
kind = "export"
depends_on = ["model"]
table = "order_totals"
path = "output/totals.tsv"
"#,
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let dir = p.path();
    let _sched = Service::start(dir, "scheduler", &["scheduler"], &[]);
    let mut w1 = Service::start(dir, "worker1", &["worker", "--slots", "2", "--lease", "2s", "--id", "w1"], &[]);
    let mut w2 = Service::start(dir, "worker2", &["worker", "--slots", "2", "--lease", "2s", "--id", "w2"], &[]);
    let mut api = Service::start(dir, "api", &["api", "--listen", &addr], &[]);
    crate::support::wait_ready(&addr);
    let mut ids = Vec::new();
    for _ in 0..50 {
        let (code, body) = http("POST", &addr, "/api/pipelines/p/runs", None);
        assert_eq!(code, 201, "{body}");
        let v = json(&body);
        assert_eq!(v["status"], "running", "{body}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // Kill the worker that holds the sleeping task.
    wait_for(60, "the slow task to start", || p.file("slow.pid").exists());
    let owner = {
        let mut owner = String::new();
        wait_for(30, "the slow task's owner", || {
            let rows = state.rows(
                "SELECT lease_owner FROM sluice_tasks WHERE step = 'slow' AND status = 'running' \
                 AND started_at < (extract(epoch from now()) * 1000000)::bigint - 300000",
            );
            owner = rows.first().map(|r| r[0].clone()).unwrap_or_default();
            !owner.is_empty()
        });
        owner
    };
    let sleeper: u32 = p.read("slow.pid").trim().parse().unwrap();
    let (killed, survivor) = if owner == "w1" { (&mut w1, "w2") } else { (&mut w2, "w1") };
    killed.kill9();
    // The killed worker's command ends with it, not when its lease runs out.
    wait_for(30, "the killed worker's command to end", || !crate::support::alive(sleeper));
    wait_for(90, "all 50 runs to finish", || {
        let (_, body) = http("GET", &addr, "/api/runs?pipeline=p&limit=100", None);
        let v = json(&body);
        let runs = v["runs"].as_array().unwrap();
        runs.len() == 50 && runs.iter().all(|r| r["status"] != "running" && r["status"] != "queued")
    });
    let (_, body) = http("GET", &addr, "/api/runs?pipeline=p&status=success&limit=100", None);
    assert_eq!(json(&body)["runs"].as_array().unwrap().len(), 50, "every run succeeds");
    // Each task of each run succeeded exactly once.
    assert_eq!(
        state.rows("SELECT COUNT(*), COUNT(DISTINCT (run_id, step)) FROM sluice_attempts WHERE status = 'success'"),
        vec![vec!["250", "250"]]
    );
    assert_eq!(state.rows("SELECT COUNT(*) FROM sluice_runs"), vec![vec!["50"]]);
    // The killed worker's tasks (the sleeping one, and whatever its other
    // slot was running at that moment) went to the other worker.
    let lost = state.rows("SELECT run_id, step, worker FROM sluice_attempts WHERE status = 'lost'");
    assert!((1..=2).contains(&lost.len()), "{lost:?}");
    assert!(lost.iter().any(|l| l[1] == "slow"), "{lost:?}");
    for l in &lost {
        assert_eq!(l[2], owner, "{lost:?}");
        let retried = state.rows(&format!(
            "SELECT attempt, worker, status FROM sluice_attempts WHERE run_id = '{}' AND step = '{}' ORDER BY attempt",
            l[0], l[1]
        ));
        assert_eq!(
            retried,
            vec![
                vec!["1".to_string(), owner.clone(), "lost".into()],
                vec!["2".into(), survivor.into(), "success".into()]
            ]
        );
        let (_, body) = http("GET", &addr, &format!("/api/runs/{}/tasks/{}/logs", l[0], l[1]), None);
        assert!(body.contains("stopped renewing its lease"), "{body}");
    }
    // No duplicated rows: the file was landed and loaded once.
    assert_eq!(wh.count("orders"), 10);
    assert_eq!(wh.rows("SELECT n, total FROM order_totals"), vec![vec!["10", "550.00"]]);
    assert_eq!(p.read("output/totals.tsv"), "n\ttotal\n10\t550.00\n");
    assert!(ids.iter().all(|id| id.len() == 36));
    // SIGTERM: the API stops cleanly.
    assert_eq!(api.stop(10), Some(0), "{}", api.output());
}

/// Two schedulers on one PostgreSQL state store: one leads, the other stands
/// by; each due fire has exactly one run, also across a change of leader.
#[test]
fn two_schedulers_fire_each_time_once() {
    let state = TestDb::new(Kind::Postgres);
    let p = TestProject::new();
    p.write("sluice.toml", &format!("name = \"t\"\n[state]\nurl = \"{}\"\n", state.url()));
    p.write(
        "pipelines/tick.toml",
        "[[triggers]]\nevery = \"1s\"\ncatchup = \"all\"\n\n[[steps]]\nname = \"a\"\nkind = \"empty\"\n",
    );
    let dir = p.path();
    let mut s1 = Service::start(dir, "scheduler1", &["scheduler", "--tick", "200ms"], &[]);
    let mut s2 = Service::start(dir, "scheduler2", &["scheduler", "--tick", "200ms"], &[]);
    wait_for(30, "the state store's tables", || {
        state.rows("SELECT to_regclass('sluice_runs') IS NOT NULL")[0][0] == "t"
    });
    let fires = || state.rows("SELECT COUNT(*) FROM sluice_runs")[0][0].parse::<u64>().unwrap();
    wait_for(30, "three fires", || fires() >= 3);
    // Stop the leader; the standby takes over.
    let leader_is_1 = s1.output().contains("leading");
    let (leader, standby) = if leader_is_1 { (&mut s1, &mut s2) } else { (&mut s2, &mut s1) };
    assert!(!standby.output().contains("leading"), "only one scheduler leads");
    assert_eq!(leader.stop(10), Some(0));
    let before = fires();
    wait_for(30, "the standby to fire", || fires() >= before + 3);
    assert!(standby.output().contains("leading"), "{}", standby.output());
    standby.stop(10);
    let rows = state.rows(
        "SELECT COUNT(*), COUNT(DISTINCT scheduled_for), (MAX(scheduled_for) - MIN(scheduled_for)) / 1000000 + 1 FROM sluice_runs",
    );
    let (n, distinct, span) = (&rows[0][0], &rows[0][1], &rows[0][2]);
    assert_eq!(n, distinct, "a fire was enqueued twice");
    assert_eq!(n, span, "every second from the first fire to the last has exactly one run");
}

/// `sluice serve` on the embedded default: the API triggers a run; a step
/// that cannot connect is retried with growing waits, then fails the run
/// with its error, and what depends on it is `upstream_failed`. Cancel, the
/// API's errors, and a clean shutdown that hands a running task back.
#[test]
fn serve_retries_then_fails_and_answers_the_api() {
    let p = TestProject::new();
    p.write(
        "sluice.toml",
        "name = \"t\"\n[connections.down]\nurl = \"postgres://postgres@127.0.0.1:1/test\"\n[connections.local]\nurl = \"sqlite://.sluice/w.db\"\n",
    );
    p.write(
        "pipelines/flaky.toml",
        r#"[[steps]]
name = "extract"
kind = "export"
connection = "down"
query = "select 1"
path = "output/x.tsv"
retries = 2
retry_delay = "200ms"

[[steps]]
name = "report"
kind = "empty"
depends_on = ["extract"]

[[steps]]
name = "typo"
kind = "export"
connection = "local"
query = "selec 1"
path = "output/y.tsv"
retries = 3
"#,
    );
    p.write(
        "pipelines/sleepy.toml",
        "[[steps]]\nname = \"nap\"\nkind = \"command\"\ncommand = [\"sleep\", \"30\"]\n\n[[steps]]\nname = \"after\"\nkind = \"empty\"\ndepends_on = [\"nap\"]\n",
    );
    p.write(
        "pipelines/slowpoke.toml",
        "[[steps]]\nname = \"nap\"\nkind = \"command\"\ncommand = [\"sleep\", \"30\"]\ntimeout = \"500ms\"\n",
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let mut serve = Service::start(p.path(), "serve", &["serve", "--listen", &addr, "--grace", "1s"], &[]);
    crate::support::wait_ready(&addr);
    assert_eq!(http("GET", &addr, "/healthz", None), (200, "ok\n".into()));
    assert_eq!(http("GET", &addr, "/readyz", None).0, 200);
    // The API's errors.
    let (code, body) = http("POST", &addr, "/api/pipelines/flakey/runs", None);
    assert_eq!(code, 404);
    assert_eq!(json(&body)["error"], "no pipeline named `flakey` (pipelines: flaky, sleepy, slowpoke)");
    let (code, body) = http("POST", &addr, "/api/pipelines/flaky/runs", Some("{\"logical_date\": \"yesterday\"}"));
    assert_eq!(
        (code, json(&body)["error"].as_str().unwrap()),
        (400, "invalid logical_date \"yesterday\": expected YYYY-MM-DD")
    );
    let (code, _) = http("GET", &addr, "/api/runs?status=done", None);
    assert_eq!(code, 400);
    assert_eq!(http("GET", &addr, "/api/runs/nope", None).0, 404);

    let (code, body) = http("POST", &addr, "/api/pipelines/flaky/runs", Some("{\"logical_date\": \"2026-01-31\"}"));
    assert_eq!(code, 201, "{body}");
    let id = json(&body)["id"].as_str().unwrap().to_string();
    wait_for(60, "the flaky run to finish", || {
        json(&http("GET", &addr, &format!("/api/runs/{id}"), None).1)["status"] == "failed"
    });
    let run = json(&http("GET", &addr, &format!("/api/runs/{id}"), None).1);
    assert_eq!(run["logical_date"], "2026-01-31");
    let err = run["error"].as_str().unwrap();
    assert!(err.starts_with("step `extract`: "), "{err}");
    assert!(err.contains("Connection refused") || err.contains("connection refused"), "{err}");
    let tasks = json(&http("GET", &addr, &format!("/api/runs/{id}/tasks"), None).1);
    let by = |name: &str| tasks["tasks"].as_array().unwrap().iter().find(|t| t["step"] == name).unwrap().clone();
    assert_eq!(by("extract")["status"], "failed");
    assert_eq!(by("report")["status"], "upstream_failed");
    assert_eq!(by("report")["error"], "upstream step `extract` failed");
    // Three attempts, the waits between them growing: 100–200 ms, then 200–400 ms.
    let attempts = by("extract")["attempts"].as_array().unwrap().clone();
    assert_eq!(attempts.len(), 3);
    let t = |a: &serde_json::Value, k: &str| {
        chrono::DateTime::parse_from_rfc3339(a[k].as_str().unwrap()).unwrap().timestamp_millis()
    };
    let gap1 = t(&attempts[1], "started_at") - t(&attempts[0], "finished_at");
    let gap2 = t(&attempts[2], "started_at") - t(&attempts[1], "finished_at");
    assert!(gap1 >= 99 && gap2 >= 199, "waits {gap1} ms and {gap2} ms");
    // A SQL error is not transient: one attempt despite retries = 3.
    assert_eq!(by("typo")["status"], "failed");
    assert_eq!(by("typo")["attempts"].as_array().unwrap().len(), 1);
    let logs = json(&http("GET", &addr, &format!("/api/runs/{id}/tasks/extract/logs"), None).1);
    let lines: Vec<&str> = logs["logs"].as_array().unwrap().iter().map(|l| l["message"].as_str().unwrap()).collect();
    assert!(lines.iter().any(|l| l.starts_with("retry 1 of 2 in ")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("retry 2 of 2 in ")), "{lines:?}");
    assert_eq!(http("GET", &addr, &format!("/api/runs/{id}/tasks/nope/logs"), None).0, 404);

    // A step past its timeout is stopped and fails (a transient failure;
    // this step has no retries).
    let (_, body) = http("POST", &addr, "/api/pipelines/slowpoke/runs", None);
    let id4 = json(&body)["id"].as_str().unwrap().to_string();
    wait_for(30, "the timed-out run to fail", || {
        json(&http("GET", &addr, &format!("/api/runs/{id4}"), None).1)["status"] == "failed"
    });
    let run = json(&http("GET", &addr, &format!("/api/runs/{id4}"), None).1);
    assert_eq!(run["error"], "step `nap`: timed out after 0.5s (the step's timeout)");

    // Cancel a run whose step is running: the command is stopped.
    let (_, body) = http("POST", &addr, "/api/pipelines/sleepy/runs", None);
    let id2 = json(&body)["id"].as_str().unwrap().to_string();
    wait_for(30, "the nap to start", || {
        json(&http("GET", &addr, &format!("/api/runs/{id2}/tasks"), None).1)["tasks"][0]["status"] == "running"
    });
    let (code, body) = http("POST", &addr, &format!("/api/runs/{id2}/cancel"), None);
    assert_eq!((code, json(&body)["status"].as_str().unwrap()), (200, "cancelled"));
    wait_for(30, "the nap to stop", || {
        json(&http("GET", &addr, &format!("/api/runs/{id2}/tasks"), None).1)["tasks"][0]["status"] != "running"
    });
    let tasks = json(&http("GET", &addr, &format!("/api/runs/{id2}/tasks"), None).1);
    assert_eq!(tasks["tasks"][0]["error"], "stopped: the run was cancelled");
    // Issue 11, item 23: the running task ends cancelled, as the docs say, not failed.
    assert_eq!(tasks["tasks"][0]["status"], "cancelled", "{tasks}");
    assert_eq!(tasks["tasks"][0]["attempts"][0]["status"], "cancelled", "{tasks}");
    assert_eq!(tasks["tasks"][1]["status"], "cancelled");
    assert_eq!(http("POST", &addr, &format!("/api/runs/{id2}/cancel"), None).0, 409);

    // SIGTERM with a task running: after the grace period it is handed back.
    let (_, body) = http("POST", &addr, "/api/pipelines/sleepy/runs", None);
    let id3 = json(&body)["id"].as_str().unwrap().to_string();
    wait_for(30, "the second nap to start", || {
        json(&http("GET", &addr, &format!("/api/runs/{id3}/tasks"), None).1)["tasks"][0]["status"] == "running"
    });
    assert_eq!(serve.stop(20), Some(0), "{}", serve.output());
    let rows = crate::support::query_sqlite(
        &p.file(".sluice/state.db"),
        &format!(
            "SELECT t.status, a.status FROM sluice_tasks t JOIN sluice_attempts a ON a.run_id = t.run_id AND a.step = t.step WHERE t.run_id = '{id3}' AND t.step = 'nap'"
        ),
    );
    assert_eq!(rows, vec![vec!["ready", "handed_back"]], "the task waits for the next worker");
}

/// `sluice backfill` runs the fires of a past range with their own logical
/// dates (in templates and in the environment), bounded by max_active_runs.
#[test]
fn backfill_runs_each_past_day_with_its_own_date() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n[defaults]\ntimezone = \"Europe/Helsinki\"\n");
    p.write("models/day.sql", "select '{{ logical_date }}' as d\n");
    p.write(
        "pipelines/daily.toml",
        r#"max_active_runs = 1

[[triggers]]
cron = "30 0 * * *"

[[steps]]
name = "note"
kind = "command"
command = "echo $SLUICE_LOGICAL_DATE >> dates.txt"

[[steps]]
name = "build"
kind = "sql"
depends_on = ["note"]

[[steps]]
name = "export"
kind = "export"
depends_on = ["build"]
query = "select d, '{{ logical_date }}' as e from {{ ref('day') }}"
path = "output/day.tsv"
"#,
    );
    let out = p.run(&["backfill", "daily", "--from", "2026-03-28", "--to", "2026-03-30"]);
    out.expect_code(0);
    assert!(
        out.stdout.starts_with("queued 3 run(s) of `daily` for 2026-03-28 … 2026-03-30, at most 1 at a time"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.ends_with("backfill of `daily`: 3 run(s), 0 failed\n"), "{}", out.stdout);
    // max_active_runs = 1: the runs went one after another, in order.
    assert_eq!(p.read("dates.txt"), "2026-03-28\n2026-03-29\n2026-03-30\n");
    assert_eq!(p.read("output/day.tsv"), "d\te\n2026-03-30\t2026-03-30\n");
    // Again: those fires already have runs.
    let out = p.run(&["backfill", "daily", "--from", "2026-03-28", "--to", "2026-03-30"]);
    out.expect_code(0);
    assert!(
        out.stdout.starts_with(
            "queued 0 run(s) of `daily` for 2026-03-28 … 2026-03-30, at most 1 at a time (3 already queued before)"
        ),
        "{}",
        out.stdout
    );
    let out = p.run(&["backfill", "daily", "--from", "2026-03-30", "--to", "2026-03-28"]);
    out.expect_code(2);
    assert_eq!(out.stderr, "error: --to 2026-03-28 is before --from 2026-03-30\n");
}

/// Issue 11, item 16: `--from`/`--to` name logical dates, which are dates in
/// the trigger's zone: a project in New York backfilling a schedule in
/// Helsinki for 2026-11-02 … 2026-11-04 queues those three dates.
#[test]
fn backfill_queues_the_logical_dates_it_names_whatever_the_zones() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n[defaults]\ntimezone = \"America/New_York\"\n");
    p.write(
        "pipelines/nightly.toml",
        "[[triggers]]\ncron = \"30 0 * * *\"\ntimezone = \"Europe/Helsinki\"\n\n[[steps]]\nname = \"a\"\nkind = \"empty\"\n",
    );
    let out = p.run(&["backfill", "nightly", "--from", "2026-11-02", "--to", "2026-11-04", "--no-wait"]);
    out.expect_code(0);
    assert_eq!(
        crate::support::query_sqlite(
            &p.file(".sluice/state.db"),
            "SELECT logical_date, scheduled_for FROM sluice_runs ORDER BY logical_date"
        ),
        vec![
            // 00:30 in Helsinki (EET, +02:00) is 22:30 UTC the day before.
            vec!["2026-11-02".to_string(), "1793572200000000".to_string()],
            vec!["2026-11-03".into(), "1793658600000000".into()],
            vec!["2026-11-04".into(), "1793745000000000".into()],
        ]
    );
}

/// `sluice next` shows fire times in UTC and in the schedule's zone, across
/// a daylight-saving change.
#[test]
fn next_shows_fires_in_utc_and_the_zone() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n");
    p.write(
        "pipelines/nightly.toml",
        "[[triggers]]\ncron = \"30 3 * * *\"\ntimezone = \"Europe/Helsinki\"\n\n[[triggers]]\non_dataset = \"x\"\n\n[[steps]]\nname = \"x\"\nkind = \"ingest\"\nsource = \"a.csv\"\n",
    );
    p.write("a.csv", "a\n1\n");
    let out = p.run(&["next", "-n", "3", "--from", "2026-03-28 12:00"]);
    out.expect_code(0);
    assert_eq!(
        out.stdout,
        "nightly: cron \"30 3 * * *\" in Europe/Helsinki (At 03:30.)
  2026-03-29T01:00:00.000Z  2026-03-29 04:00:00 EEST (+03:00)
  2026-03-30T00:30:00.000Z  2026-03-30 03:30:00 EEST (+03:00)
  2026-03-31T00:30:00.000Z  2026-03-31 03:30:00 EEST (+03:00)
nightly: when dataset `x` is updated (by any pipeline's step)
"
    );
}
