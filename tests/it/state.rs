//! The state store's rules on SQLite and PostgreSQL, through the library: a
//! run's tasks follow its DAG; failures retry with backoff, then fail the run
//! and mark what depends on them; a lost lease hands a task to another
//! worker and the late result is not used; max_active_runs and concurrency
//! limits hold; a scheduled fire has one run; cancel; migrations from several
//! processes at once. And the scheduler's tick, with time injected.

use std::time::Duration;

use sluice::project::RetryOn;
use sluice::state::{Claim, NewRun, NewTask, Outcome, PipelineDef, Pools, RunFilter, State};

use crate::db::{Kind, TestDb};
use crate::support::TestProject;

per_backend!(
    [sqlite => Sqlite, postgres => Postgres]
    tasks_follow_the_dag_and_the_run_succeeds_once,
    failures_retry_with_backoff_then_fail_what_depends_on_them,
    errors_that_are_not_transient_are_not_retried,
    a_lost_lease_hands_the_task_to_another_worker,
    max_active_runs_and_concurrency_hold,
    a_fire_has_one_run_and_cancel_stops_the_rest,
    migrations_are_safe_when_processes_start_together,
    the_scheduler_fires_each_due_time_once,
    event_triggers_fire_once_per_batch_of_events,
    a_late_result_is_used_when_nobody_took_the_task,
    a_dead_local_run_is_ended_and_the_queued_run_starts,
);

/// A store of its own: a SQLite file, or a PostgreSQL schema.
struct Store {
    _db: TestDb,
    url: String,
    _dir: tempfile::TempDir,
}

impl Store {
    fn new(kind: Kind) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(if kind == Kind::Sqlite { Kind::Sqlite } else { Kind::Postgres });
        let url = match kind {
            Kind::Sqlite => format!("sqlite://{}", dir.path().join("state.db").display()),
            _ => db.url(),
        };
        Store { _db: db, url, _dir: dir }
    }
    fn open(&self) -> State {
        State::open(&self.url, std::path::Path::new("/")).expect("the state store opens")
    }
}

fn pipeline(name: &str, max_active_runs: Option<u32>, concurrency: Option<u32>) -> PipelineDef {
    PipelineDef { name: name.into(), hash: "h1".into(), max_active_runs, concurrency }
}

fn task(step: &str, deps: &[&str], retries: u32) -> NewTask {
    NewTask {
        step: step.into(),
        kind: "empty".into(),
        deps: deps.iter().map(|d| d.to_string()).collect(),
        retries,
        retry_delay_ms: 20,
        retry_on: RetryOn::Transient,
        timeout_ms: None,
        pool: "default".into(),
    }
}

fn run(p: PipelineDef, tasks: Vec<NewTask>, fire: Option<i64>) -> NewRun {
    NewRun {
        pipeline: p,
        trigger: if fire.is_some() { "cron".into() } else { "api".into() },
        logical_date: "2026-01-01".into(),
        scheduled_for: fire,
        params: serde_json::json!({}),
        full_refresh: false,
        tasks,
    }
}

fn ok(summary: &str) -> Outcome {
    Outcome::Success { summary: summary.into(), output: serde_json::json!({}), datasets: vec!["sales".into()] }
}

fn fail(msg: &str, retryable: bool) -> Outcome {
    Outcome::Failure { error: msg.into(), retryable }
}

/// Claims until something is ready (retries wait out their backoff).
fn claim_within(st: &State, worker: &str, within: Duration) -> Option<Claim> {
    let end = std::time::Instant::now() + within;
    loop {
        if let Some(c) = st.claim(worker, &Pools::All, 30_000).unwrap() {
            return Some(c);
        }
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn statuses(st: &State, run_id: &str) -> Vec<(String, String)> {
    st.tasks(run_id).unwrap().into_iter().map(|t| (t.step, t.status)).collect()
}

fn s(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn tasks_follow_the_dag_and_the_run_succeeds_once(kind: Kind) {
    let store = Store::new(kind);
    let st = store.open();
    // a → (b, c) → d
    let id = st
        .enqueue(&run(
            pipeline("p", None, None),
            vec![task("a", &[], 0), task("b", &["a"], 0), task("c", &["a"], 0), task("d", &["b", "c"], 0)],
            None,
        ))
        .unwrap()
        .unwrap();
    assert_eq!(st.run(&id).unwrap().unwrap().status, "running");
    let a = st.claim("w1", &Pools::All, 30_000).unwrap().expect("a is ready");
    assert_eq!((a.step.as_str(), a.attempt), ("a", 1));
    assert!(st.claim("w2", &Pools::All, 30_000).unwrap().is_none(), "b and c wait for a");
    assert!(st.finish(&a, &ok("did a")).unwrap());
    let b = st.claim("w1", &Pools::All, 30_000).unwrap().unwrap();
    let c = st.claim("w2", &Pools::All, 30_000).unwrap().unwrap();
    assert_eq!([b.step.as_str(), c.step.as_str()], ["b", "c"]);
    assert!(st.claim("w3", &Pools::All, 30_000).unwrap().is_none(), "d waits for b and c");
    st.finish(&b, &ok("did b")).unwrap();
    assert!(st.claim("w3", &Pools::All, 30_000).unwrap().is_none(), "d still waits for c");
    st.finish(&c, &ok("did c")).unwrap();
    let d = st.claim("w3", &Pools::All, 30_000).unwrap().unwrap();
    assert_eq!(st.run(&id).unwrap().unwrap().status, "running");
    st.finish(&d, &ok("did d")).unwrap();
    let r = st.run(&id).unwrap().unwrap();
    assert_eq!((r.status.as_str(), r.error.as_deref()), ("success", None));
    assert!(r.finished_at.is_some());
    assert_eq!(statuses(&st, &id), s(&[("a", "success"), ("b", "success"), ("c", "success"), ("d", "success")]));
    // A late second result changes nothing.
    assert!(!st.finish(&d, &fail("late", false)).unwrap());
    assert_eq!(st.run(&id).unwrap().unwrap().status, "success");
    let logs = st.logs(&id, "b", 0).unwrap();
    assert_eq!(logs.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(), ["did b"]);
}

fn failures_retry_with_backoff_then_fail_what_depends_on_them(kind: Kind) {
    let store = Store::new(kind);
    let st = store.open();
    let id = st
        .enqueue(&run(
            pipeline("p", None, None),
            vec![task("a", &[], 2), task("b", &["a"], 0), task("c", &["b"], 0)],
            None,
        ))
        .unwrap()
        .unwrap();
    let mut waits = Vec::new();
    for attempt in 1..=3 {
        let c = claim_within(&st, "w", Duration::from_secs(5)).expect("a is tried again");
        assert_eq!((c.step.as_str(), c.attempt), ("a", attempt));
        st.finish(&c, &fail("cannot connect to db:5432: connection refused", true)).unwrap();
        if attempt < 3 {
            let t = &st.tasks(&id).unwrap()[0];
            assert_eq!(t.status, "ready");
            let wait = t.next_try_at.unwrap() - sluice::state::now_us();
            waits.push(wait);
            assert!(st.claim("w", &Pools::All, 30_000).unwrap().is_none(), "not before its backoff");
        }
    }
    // Exponential with jitter: the first retry waits 10–20 ms, the second 20–40 ms.
    assert!(waits[0] <= 20_000 && waits[1] > 10_000 && waits[1] <= 40_000, "waits {waits:?}");
    let r = st.run(&id).unwrap().unwrap();
    assert_eq!(r.status, "failed");
    assert_eq!(r.error.as_deref(), Some("step `a`: cannot connect to db:5432: connection refused"));
    assert_eq!(statuses(&st, &id), s(&[("a", "failed"), ("b", "upstream_failed"), ("c", "upstream_failed")]));
    let tasks = st.tasks(&id).unwrap();
    assert_eq!(tasks[2].error.as_deref(), Some("upstream step `a` failed"));
    let attempts = st.attempts(&id, "a").unwrap();
    assert_eq!(attempts.iter().map(|a| a.status.as_str()).collect::<Vec<_>>(), ["failed", "failed", "failed"]);
    let logs: Vec<String> = st.logs(&id, "a", 0).unwrap().into_iter().map(|l| l.message).collect();
    assert!(logs.iter().any(|l| l.starts_with("retry 1 of 2 in ")), "{logs:?}");
    assert!(logs.iter().any(|l| l.starts_with("retry 2 of 2 in ")), "{logs:?}");
}

fn errors_that_are_not_transient_are_not_retried(kind: Kind) {
    let store = Store::new(kind);
    let st = store.open();
    let mut any = task("b", &[], 1);
    any.retry_on = RetryOn::Any;
    let id = st.enqueue(&run(pipeline("p", None, None), vec![task("a", &[], 3), any], None)).unwrap().unwrap();
    let a = st.claim("w", &Pools::All, 30_000).unwrap().unwrap();
    let b = st.claim("w", &Pools::All, 30_000).unwrap().unwrap();
    st.finish(&a, &fail("syntax error at or near \"selec\"", false)).unwrap();
    st.finish(&b, &fail("bad rows", false)).unwrap();
    let tasks = st.tasks(&id).unwrap();
    assert_eq!(tasks[0].status, "failed", "a SQL error is not retried");
    assert_eq!(st.attempts(&id, "a").unwrap().len(), 1);
    assert_eq!(tasks[1].status, "ready", "retry_on = any retries every failure");
    let b2 = claim_within(&st, "w", Duration::from_secs(5)).unwrap();
    st.finish(&b2, &ok("fine")).unwrap();
    assert_eq!(st.run(&id).unwrap().unwrap().status, "failed");
}

fn a_lost_lease_hands_the_task_to_another_worker(kind: Kind) {
    let store = Store::new(kind);
    let st = store.open();
    let id = st.enqueue(&run(pipeline("p", None, None), vec![task("a", &[], 0)], None)).unwrap().unwrap();
    // w1 claims with a short lease and then goes silent (killed).
    let lost = st.claim("w1", &Pools::All, 50).unwrap().unwrap();
    assert_eq!(st.reap().unwrap(), 0, "the lease is still valid");
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(st.reap().unwrap(), 1);
    let c = st.claim("w2", &Pools::All, 30_000).unwrap().expect("another worker takes it");
    assert_eq!((c.attempt, c.worker.as_str()), (2, "w2"));
    // The first worker's late result is not used.
    assert!(!st.finish(&lost, &ok("late")).unwrap());
    assert!(st.finish(&c, &ok("done")).unwrap());
    assert_eq!(st.run(&id).unwrap().unwrap().status, "success");
    let attempts = st.attempts(&id, "a").unwrap();
    assert_eq!(
        attempts.iter().map(|a| (a.worker.as_deref().unwrap(), a.status.as_str())).collect::<Vec<_>>(),
        [("w1", "lost"), ("w2", "success")]
    );
    // Renewal keeps a lease alive.
    let id2 = st.enqueue(&run(pipeline("p", None, None), vec![task("a", &[], 0)], None)).unwrap().unwrap();
    // (Kept alive for 480 ms on a 200 ms lease; a renewal up to 140 ms late
    // on a busy machine still holds it.)
    let c = st.claim("w3", &Pools::All, 200).unwrap().unwrap();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(60));
        st.renew("w3", 200).unwrap();
        assert_eq!(st.reap().unwrap(), 0);
    }
    st.finish(&c, &ok("done")).unwrap();
    assert_eq!(st.run(&id2).unwrap().unwrap().status, "success");
}

fn max_active_runs_and_concurrency_hold(kind: Kind) {
    let store = Store::new(kind);
    let st = store.open();
    let one = pipeline("one", Some(1), None);
    let r1 = st.enqueue(&run(one.clone(), vec![task("a", &[], 0)], None)).unwrap().unwrap();
    let r2 = st.enqueue(&run(one.clone(), vec![task("a", &[], 0)], None)).unwrap().unwrap();
    assert_eq!(st.run(&r1).unwrap().unwrap().status, "running");
    assert_eq!(st.run(&r2).unwrap().unwrap().status, "queued");
    let c = st.claim("w", &Pools::All, 30_000).unwrap().unwrap();
    assert_eq!(c.run_id, r1);
    assert!(st.claim("w", &Pools::All, 30_000).unwrap().is_none(), "the second run waits");
    st.finish(&c, &ok("done")).unwrap();
    assert_eq!(st.run(&r2).unwrap().unwrap().status, "running");
    let c = st.claim("w", &Pools::All, 30_000).unwrap().unwrap();
    assert_eq!(c.run_id, r2);
    st.finish(&c, &ok("done")).unwrap();
    // concurrency = 1: independent tasks of the pipeline run one at a time.
    let lim = pipeline("lim", None, Some(1));
    let r3 = st.enqueue(&run(lim, vec![task("a", &[], 0), task("b", &[], 0)], None)).unwrap().unwrap();
    let a = st.claim("w1", &Pools::All, 30_000).unwrap().unwrap();
    assert!(st.claim("w2", &Pools::All, 30_000).unwrap().is_none(), "the pipeline's one slot is taken");
    st.finish(&a, &ok("done")).unwrap();
    let b = st.claim("w2", &Pools::All, 30_000).unwrap().unwrap();
    st.finish(&b, &ok("done")).unwrap();
    assert_eq!(st.run(&r3).unwrap().unwrap().status, "success");
}

fn a_fire_has_one_run_and_cancel_stops_the_rest(kind: Kind) {
    let store = Store::new(kind);
    let st = store.open();
    let fire = 1_767_225_600_000_000;
    let first = st.enqueue(&run(pipeline("p", None, None), vec![task("a", &[], 0)], Some(fire))).unwrap();
    let again = st.enqueue(&run(pipeline("p", None, None), vec![task("a", &[], 0)], Some(fire))).unwrap();
    assert!(first.is_some());
    assert!(again.is_none(), "the same fire does not make a second run");
    let id = st
        .enqueue(&run(pipeline("p", None, None), vec![task("x", &[], 0), task("y", &["x"], 0)], None))
        .unwrap()
        .unwrap();
    let c = st.claim("w", &Pools::All, 30_000).unwrap().unwrap();
    let x = if c.run_id == id { c } else { st.claim("w", &Pools::All, 30_000).unwrap().unwrap() };
    assert_eq!(st.cancel(&id).unwrap(), Some(true));
    assert_eq!(st.run(&id).unwrap().unwrap().status, "cancelled");
    // The worker hears of it at its next heartbeat.
    assert_eq!(st.renew("w", 30_000).unwrap(), vec![(id.clone(), "x".to_string())]);
    st.finish(&x, &fail("stopped: the run was cancelled", false)).unwrap();
    assert_eq!(statuses(&st, &id), s(&[("x", "failed"), ("y", "cancelled")]));
    assert_eq!(st.run(&id).unwrap().unwrap().status, "cancelled");
    assert_eq!(st.cancel(&id).unwrap(), Some(false), "already finished");
    assert_eq!(st.cancel("nope").unwrap(), None);
    let cancelled = st.runs(&RunFilter { status: Some("cancelled".into()), ..Default::default() }).unwrap();
    assert_eq!(cancelled.len(), 1);
}

fn migrations_are_safe_when_processes_start_together(kind: Kind) {
    let store = Store::new(kind);
    let url = store.url.clone();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || State::open(&url, std::path::Path::new("/")).map(|_| ()))
        })
        .collect();
    for h in handles {
        h.join().unwrap().expect("every process opens the store");
    }
    let st = store.open();
    let n =
        st.db
            .tx(|t| {
                Ok(sluice::state::db::first(&t.query("SELECT COUNT(*) FROM sluice_schema", &[])?).and_then(|v| v.int()))
            })
            .unwrap();
    assert_eq!(n, Some(sluice::state::migrations::latest()));
}

fn the_scheduler_fires_each_due_time_once(kind: Kind) {
    let store = Store::new(kind);
    let st = store.open();
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n");
    p.write(
        "pipelines/hourly.toml",
        "[[triggers]]\ncron = \"0 * * * *\"\ntimezone = \"Europe/Helsinki\"\ncatchup = \"all\"\n[[steps]]\nname = \"a\"\nkind = \"empty\"\n",
    );
    p.write("pipelines/latest.toml", "[[triggers]]\nevery = \"15m\"\n[[steps]]\nname = \"a\"\nkind = \"empty\"\n");
    let shared = sluice::orchestrate::runs::Shared::open(p.path()).unwrap();
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros();
    let tick = |t: &str| sluice::orchestrate::scheduler::tick(&st, &shared, at(t), "test").unwrap();
    // First look: schedules start from now; nothing fires.
    tick("2026-03-28T21:10:00Z");
    assert!(st.runs(&RunFilter::default()).unwrap().is_empty());
    // Down for 3 hours across Helsinki's spring-forward: every missed hour
    // fires once (catchup = "all"); the every-15m pipeline only its latest.
    tick("2026-03-29T00:20:00Z");
    // Two schedulers looking at the same moment enqueue nothing twice.
    tick("2026-03-29T00:20:00Z");
    let runs = st.runs(&RunFilter { pipeline: Some("hourly".into()), ..Default::default() }).unwrap();
    let mut fires: Vec<String> =
        runs.iter().map(|r| sluice::orchestrate::schedule::rfc3339(r.scheduled_for.unwrap())).collect();
    fires.sort();
    assert_eq!(fires, ["2026-03-28T22:00:00.000Z", "2026-03-28T23:00:00.000Z", "2026-03-29T00:00:00.000Z"]);
    // The logical date is the fire's date in the trigger's zone.
    let dates: Vec<&str> = runs.iter().rev().map(|r| r.logical_date.as_str()).collect();
    assert_eq!(dates, ["2026-03-29", "2026-03-29", "2026-03-29"]);
    let latest = st.runs(&RunFilter { pipeline: Some("latest".into()), ..Default::default() }).unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(sluice::orchestrate::schedule::rfc3339(latest[0].scheduled_for.unwrap()), "2026-03-29T00:15:00.000Z");
    // Running on: the 01:00Z fire (04:00 EEST, the first hour after the gap).
    tick("2026-03-29T01:00:00.5Z");
    let runs = st.runs(&RunFilter { pipeline: Some("hourly".into()), ..Default::default() }).unwrap();
    assert_eq!(runs.len(), 4);
}

fn event_triggers_fire_once_per_batch_of_events(kind: Kind) {
    let store = Store::new(kind);
    let st = store.open();
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n");
    p.write("data/sales.csv", "a\n1\n");
    p.write(
        "pipelines/producer.toml",
        "[[steps]]\nname = \"land\"\nkind = \"ingest\"\nsource = \"data/sales.csv\"\ndataset = \"sales\"\n",
    );
    p.write(
        "pipelines/consumer.toml",
        "[[triggers]]\non_dataset = \"sales\"\n[[steps]]\nname = \"a\"\nkind = \"empty\"\n",
    );
    p.write(
        "pipelines/watcher.toml",
        "[[triggers]]\non_new_objects = \"incoming/\"\n[[steps]]\nname = \"a\"\nkind = \"empty\"\n",
    );
    let shared = sluice::orchestrate::runs::Shared::open(p.path()).unwrap();
    let tick = || sluice::orchestrate::scheduler::tick(&st, &shared, sluice::state::now_us(), "test").unwrap();
    let runs_of = |name: &str| st.runs(&RunFilter { pipeline: Some(name.into()), ..Default::default() }).unwrap();
    tick();
    assert!(runs_of("consumer").is_empty() && runs_of("watcher").is_empty());
    // The producer's step updates `sales` (twice: one run is queued for both).
    for _ in 0..2 {
        let project = &shared.get().project;
        let run = sluice::orchestrate::runs::new_run(
            project,
            "producer",
            "api",
            "2026-01-01".into(),
            None,
            serde_json::json!({}),
            false,
        )
        .unwrap();
        st.enqueue(&run).unwrap();
        let c = st.claim("w", &Pools::All, 30_000).unwrap().unwrap();
        st.finish(&c, &ok("landed")).unwrap();
    }
    tick();
    tick();
    let consumer = runs_of("consumer");
    assert_eq!(consumer.len(), 1);
    assert_eq!(consumer[0].trigger, "dataset");
    assert_eq!(consumer[0].params["dataset"], "sales");
    assert_eq!(consumer[0].params["updated_by_runs"].as_array().unwrap().len(), 2);
    // New files: one run for those seen at one look; hidden and temporary
    // files are not picked up.
    p.write("incoming/a.csv", "x\n");
    p.write("incoming/b.csv", "x\n");
    p.write("incoming/.c.csv", "x\n");
    p.write("incoming/d.csv.tmp", "x\n");
    tick();
    tick();
    let w = runs_of("watcher");
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].params["objects"], serde_json::json!(["incoming/a.csv", "incoming/b.csv"]));
    p.write("incoming/sub/e.csv", "x\n");
    tick();
    let w = runs_of("watcher");
    assert_eq!(w.len(), 2);
    assert_eq!(w[0].params["objects"], serde_json::json!(["incoming/sub/e.csv"]));
}

/// Issue 11, item 13: a worker cut off from the store past its lease comes
/// back with its result; nobody took the task meanwhile, so the result is
/// used (not thrown away and the step run again).
fn a_late_result_is_used_when_nobody_took_the_task(kind: Kind) {
    let store = Store::new(kind);
    let st = store.open();
    let id = st
        .enqueue(&run(pipeline("p", None, None), vec![task("a", &[], 0), task("b", &["a"], 0)], None))
        .unwrap()
        .unwrap();
    let late = st.claim("w1", &Pools::All, 50).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(st.reap().unwrap(), 1, "the lease ran out");
    assert_eq!(statuses(&st, &id), s(&[("a", "ready"), ("b", "waiting")]));
    assert!(st.finish(&late, &ok("done late")).unwrap(), "the result is used");
    assert_eq!(statuses(&st, &id), s(&[("a", "success"), ("b", "ready")]));
    let attempts = st.attempts(&id, "a").unwrap();
    assert_eq!(
        attempts.iter().map(|a| (a.worker.as_deref().unwrap(), a.status.as_str())).collect::<Vec<_>>(),
        [("w1", "success")]
    );
    let b = st.claim("w2", &Pools::All, 30_000).unwrap().expect("b is next");
    assert_eq!(b.step, "b");
    st.finish(&b, &ok("b")).unwrap();
    assert_eq!(st.run(&id).unwrap().unwrap().status, "success");
    let logs: Vec<String> = st.logs(&id, "a", 0).unwrap().into_iter().map(|l| l.message).collect();
    assert!(logs.iter().any(|l| l.contains("came back with the result")), "{logs:?}");
}

/// Issue 11, item 11: a run of `sluice run` is held under a lease; when its
/// process stops renewing it, the next process that looks ends it `failed`
/// (its running step's attempt `lost`, the rest cancelled) and the
/// pipeline's queued run starts. A renewed run is left alone, and a cancel
/// through the API reaches its process through the renewal.
fn a_dead_local_run_is_ended_and_the_queued_run_starts(kind: Kind) {
    let store = Store::new(kind);
    let st = store.open();
    let one = pipeline("one", Some(1), None);
    let mut local = run(one.clone(), vec![task("a", &[], 0), task("b", &["a"], 0)], None);
    local.trigger = "cli".into();
    st.begin_local("local-1", &local, "sluice run host-1", 50).unwrap();
    st.local_started("local-1", "a", "sluice run host-1").unwrap();
    let queued = st.enqueue(&run(one.clone(), vec![task("x", &[], 0)], None)).unwrap().unwrap();
    assert_eq!(st.run(&queued).unwrap().unwrap().status, "queued", "max_active_runs = 1");
    assert_eq!(st.reap().unwrap(), 0, "the lease is still valid");
    std::thread::sleep(Duration::from_millis(80));
    assert!(st.reap().unwrap() >= 1);
    let dead = st.run("local-1").unwrap().unwrap();
    assert_eq!(dead.status, "failed");
    assert!(
        dead.error.as_deref().unwrap().contains("`sluice run` (sluice run host-1) stopped without ending its run"),
        "{dead:?}"
    );
    assert_eq!(statuses(&st, "local-1"), s(&[("a", "failed"), ("b", "cancelled")]));
    assert_eq!(st.attempts("local-1", "a").unwrap()[0].status, "lost");
    assert_eq!(st.run(&queued).unwrap().unwrap().status, "running", "the queued run starts");
    let x = st.claim("w", &Pools::All, 30_000).unwrap().expect("its task is ready");
    st.finish(&x, &ok("x")).unwrap();

    // Renewed: left alone; cancelled through the API: the renewal says so.
    st.begin_local("local-2", &local, "sluice run host-2", 50).unwrap();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(st.renew_local("local-2", "sluice run host-2", 50).unwrap().as_deref(), Some("running"));
        st.reap().unwrap();
    }
    assert_eq!(st.run("local-2").unwrap().unwrap().status, "running");
    st.cancel("local-2").unwrap();
    assert_eq!(st.renew_local("local-2", "sluice run host-2", 50).unwrap().as_deref(), Some("cancelled"));
    st.end_local("local-2", "cancelled", Some("cancelled")).unwrap();
    assert_eq!(st.run("local-2").unwrap().unwrap().status, "cancelled");
    assert_eq!(st.renew_local("local-2", "sluice run host-2", 50).unwrap(), None, "the lease is released");
}

/// Issue 11, item 13: after this process could not reach the store for
/// longer than a lease, it takes nobody's task at once: the owner, cut off
/// with it, renews first and records its result.
#[test]
fn no_task_is_taken_right_after_the_store_was_unreachable() {
    let db = TestDb::new(Kind::Postgres);
    let proxy = crate::support::Proxy::start("127.0.0.1:5432");
    let url = format!("postgres://postgres@127.0.0.1:{}/test?schema={}", proxy.port, db.name);
    let st = State::open(&url, std::path::Path::new("/")).unwrap();
    let id = st.enqueue(&run(pipeline("p", None, None), vec![task("a", &[], 0)], None)).unwrap().unwrap();
    let c = st.claim("w1", &Pools::All, 300).unwrap().unwrap();
    proxy.down();
    std::thread::sleep(Duration::from_millis(500));
    assert!(st.reap().is_err(), "the store is unreachable");
    proxy.up();
    assert_eq!(st.reap().unwrap(), 0, "no task is taken right after the store comes back");
    st.renew("w1", 300).unwrap();
    assert!(st.finish(&c, &ok("done")).unwrap());
    assert_eq!(st.run(&id).unwrap().unwrap().status, "success");
}
