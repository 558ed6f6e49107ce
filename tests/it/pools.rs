//! Worker pools (issue 14) as real processes on a PostgreSQL state store: a
//! step runs only on a worker of its pool; a ready task whose pool has no
//! live worker says so in the API, `sluice status` and the scheduler's log,
//! and runs as soon as a worker of that pool starts; `dag` and `next` show
//! the pools; bad pool names are refused.

use crate::db::{Kind, TestDb};
use crate::support::{Service, TestProject, free_port, request, wait_for, wait_ready};

const PIPELINE: &str = r#"pool = "ingest"

[[triggers]]
cron = "0 3 * * *"

[[steps]]
name = "fetch_orders"
kind = "command"
command = "echo fetched"

[[steps]]
name = "combine"
kind = "empty"
pool = "default"
depends_on = ["fetch_orders"]

[[steps]]
name = "publish"
kind = "command"
pool = "fetch"
depends_on = ["combine"]
command = "echo published"
"#;

/// A token of `scope`, made with `sluice token create`.
pub fn token(p: &TestProject, scope: &str) -> String {
    let out = p.run(&["token", "create", "--scope", scope, "--name", scope]);
    out.expect_code(0);
    out.stdout.trim().to_string()
}

/// `METHOD PATH` on `addr` with a bearer token; status and JSON body.
pub fn call(addr: &str, token: &str, head: &str) -> (u16, serde_json::Value) {
    let a = request(addr, &format!("{head}\nAuthorization: Bearer {token}"), b"");
    let v = serde_json::from_str(&a.body).unwrap_or(serde_json::Value::Null);
    (a.code, v)
}

#[test]
fn steps_run_on_their_pool_and_an_unserved_pool_says_so() {
    let state = TestDb::new(Kind::Postgres);
    let p = TestProject::new();
    p.write("sluice.toml", &format!("name = \"t\"\n[state]\nurl = \"{}\"\n", state.url()));
    p.write("pipelines/p.toml", PIPELINE);

    // dag and next show the pools without a store.
    let dag = p.run(&["dag", "p"]);
    dag.expect_code(0);
    assert!(dag.stdout.contains("fetch_orders  [command: echo fetched]  (pool ingest)"), "{}", dag.stdout);
    assert!(dag.stdout.contains("publish  [command: echo published]  (pool fetch)"), "{}", dag.stdout);
    assert!(!dag.stdout.contains("(pool default)"), "{}", dag.stdout);
    let json: serde_json::Value = serde_json::from_str(&p.run(&["dag", "p", "--format", "json"]).stdout).unwrap();
    let pools: Vec<&str> = json["steps"].as_array().unwrap().iter().map(|s| s["pool"].as_str().unwrap()).collect();
    assert_eq!(pools, ["ingest", "default", "fetch"]);
    let next = p.run(&["next", "-n", "1", "--from", "2026-01-01"]);
    assert!(next.stdout.starts_with("p: cron \"0 3 * * *\""), "{}", next.stdout);
    assert!(next.stdout.lines().next().unwrap().ends_with("[pools: default, fetch, ingest]"), "{}", next.stdout);

    let trigger = token(&p, "trigger");
    let addr = format!("127.0.0.1:{}", free_port());
    let dir = p.path();
    let sched = Service::start(dir, "scheduler", &["scheduler"], &[]);
    let _wi = Service::start(dir, "worker-ingest", &["worker", "--pool", "ingest", "--id", "wi", "--slots", "1"], &[]);
    let _wd = Service::start(dir, "worker-default", &["worker", "--id", "wd", "--slots", "1"], &[]);
    let _api = Service::start(dir, "api", &["api", "--listen", &addr], &[]);
    wait_ready(&addr);
    let (code, run) = call(&addr, &trigger, "POST /api/pipelines/p/runs");
    assert_eq!(code, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_string();

    // `publish` becomes ready, and nobody serves the fetch pool.
    let mut publish = serde_json::Value::Null;
    wait_for(60, "publish to wait for a worker of the fetch pool", || {
        let (_, v) = call(&addr, &trigger, &format!("GET /api/runs/{id}/tasks"));
        publish =
            v["tasks"].as_array().and_then(|t| t.iter().find(|t| t["step"] == "publish").cloned()).unwrap_or_default();
        publish["status"] == "ready"
    });
    assert_eq!(publish["pool"], "fetch");
    assert_eq!(
        publish["note"], "waiting: no live worker serves pool `fetch` (start one: sluice worker --pool fetch)",
        "{publish}"
    );
    let status = p.run(&["status"]);
    status.expect_code(0);
    assert!(
        status.stdout.contains(
            "1 ready task(s) in pool `fetch`: no live worker serves it (start one: sluice worker --pool fetch)"
        ),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("wi") && status.stdout.contains("pool ingest"), "{}", status.stdout);
    wait_for(30, "the scheduler's warning", || {
        sched.output().contains("1 ready task(s) in pool `fetch` wait: no live worker serves it")
    });

    // A worker of the fetch pool takes it at once.
    let _wf = Service::start(dir, "worker-fetch", &["worker", "--pool", "fetch", "--id", "wf", "--slots", "1"], &[]);
    wait_for(60, "the run to succeed", || {
        call(&addr, &trigger, &format!("GET /api/runs/{id}")).1["status"] == "success"
    });
    let (_, v) = call(&addr, &trigger, &format!("GET /api/runs/{id}/tasks"));
    let ran: Vec<(String, String, String)> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert!(t["note"].is_null(), "{t}");
            (
                t["step"].as_str().unwrap().to_string(),
                t["pool"].as_str().unwrap().to_string(),
                t["attempts"][0]["worker"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = |s: &str, p: &str, w: &str| (s.to_string(), p.to_string(), w.to_string());
    assert_eq!(
        ran,
        vec![want("fetch_orders", "ingest", "wi"), want("combine", "default", "wd"), want("publish", "fetch", "wf")]
    );
    assert_eq!(state.rows("SELECT COUNT(*) FROM sluice_attempts"), vec![vec!["3"]]);
    assert!(!p.run(&["status"]).stdout.contains("no live worker serves it"));
}

#[test]
fn bad_pool_names_are_refused() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n");
    p.write("pipelines/p.toml", "pool = \"no good\"\n[[steps]]\nname = \"a\"\nkind = \"empty\"\npool = 3\n");
    let out = p.run(&["check"]);
    out.expect_code(2);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("invalid pool name \"no good\""), "{text}");
    assert!(text.contains("wrong type for `pool`: expected a string, found an integer"), "{text}");
    p.write("pipelines/p.toml", "[[steps]]\nname = \"a\"\nkind = \"empty\"\n");
    let out = p.run(&["worker", "--pool", "x y", "--state-wait", "0"]);
    out.expect_code(2);
    assert!(out.stderr.contains("invalid pool name \"x y\" for --pool"), "{}", out.stderr);
}
