//! The state store: the one source of truth for runs, tasks, attempts, task
//! logs, dataset events, schedules and workers. Embedded: a SQLite file
//! (`.sluice/state.db`); distributed: PostgreSQL, where workers claim tasks
//! with `FOR UPDATE SKIP LOCKED` and are woken by `NOTIFY`.
//!
//! A **run** is one execution of a pipeline (`queued` → `running` →
//! `success | failed | cancelled`); a **task** is one step of a run
//! (`waiting` → `ready` → `running` → `success | failed | upstream_failed |
//! cancelled`), tried in **attempts**. A queued run starts when its
//! pipeline has fewer than `max_active_runs` running; its tasks become ready
//! as their dependencies succeed. A worker holds a task under a lease it
//! renews; a task whose lease expires (its worker died) is handed to another
//! worker. All of it happens in transactions, so two workers never run the
//! same attempt and a run finishes exactly once.

pub mod db;
pub mod migrations;
pub mod reads;
pub mod tokens;

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};

use serde::Serialize;
use serde_json::json;

use crate::error::{Error, Result};
use crate::project::RetryOn;
use db::{Db, Row, Tx, V, first};

/// Microseconds since the epoch, now.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The lease a `sluice run` process holds on its run is `sluice_leases` row
/// `run:<run id>`.
const LOCAL_LEASE: &str = "run:";

/// How often a worker that lost its worker may lose a task before the task
/// fails (a crash is not the task's fault, so it does not use up `retries`).
pub const MAX_LOST: i64 = 3;

/// After this process could not reach the store, or the store answered it
/// slowly, it takes nobody's tasks for this long: a worker that was cut off
/// with it (the store was down, or the network to it) is alive and renews
/// its leases within a second of the store coming back, before anyone
/// decides it died.
pub const REAP_QUIET_US: i64 = 10_000_000;

/// A transaction slower than this counts as the store being unreachable.
const SLOW_TX_US: i64 = 2_000_000;

/// The state store.
pub struct State {
    pub db: Db,
    /// Set once the store has answered and its schema is up to date.
    ready: std::sync::OnceLock<()>,
    /// Why the store did not answer the last time it was tried.
    last_error: std::sync::Mutex<Option<String>>,
    /// When a transaction of this process last failed to reach the store
    /// (or was slow), in microseconds since the epoch.
    trouble: std::sync::atomic::AtomicI64,
}

/// A pipeline as the scheduler and workers know it.
#[derive(Debug, Clone)]
pub struct PipelineDef {
    pub name: String,
    pub hash: String,
    pub max_active_runs: Option<u32>,
    pub concurrency: Option<u32>,
}

/// A task to create with a run.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub step: String,
    pub kind: String,
    pub deps: Vec<String>,
    pub retries: u32,
    pub retry_delay_ms: i64,
    pub retry_on: RetryOn,
    pub timeout_ms: Option<i64>,
    /// The worker pool that runs it (`default` unless the step or its
    /// pipeline names one).
    pub pool: String,
}

/// The pool of steps that name none.
pub const DEFAULT_POOL: &str = "default";

/// A worker whose heartbeat is older than this is not counted as live.
pub const LIVE_WORKER_US: i64 = 15_000_000;

/// Which pools a worker claims tasks from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pools {
    /// Every pool: `sluice serve` and `sluice backfill`, which run
    /// everything in one process.
    All,
    /// Only these (`sluice worker --pool NAME`, `default` otherwise).
    Only(Vec<String>),
}

impl Pools {
    /// How the worker's pools are recorded in `sluice_workers.pool`: `*`
    /// for every pool, else the names joined by commas.
    pub fn stored(&self) -> String {
        match self {
            Pools::All => "*".into(),
            Pools::Only(p) => p.join(","),
        }
    }
    pub fn serves(&self, pool: &str) -> bool {
        match self {
            Pools::All => true,
            Pools::Only(p) => p.iter().any(|x| x == pool),
        }
    }
    /// The reverse of `stored`.
    pub fn parse_stored(s: &str) -> Pools {
        if s == "*" { Pools::All } else { Pools::Only(s.split(',').map(str::to_string).collect()) }
    }
}

/// Ready tasks of a pool that no live worker serves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unserved {
    pub pool: String,
    pub ready: i64,
}

/// What a ready task whose pool has no live worker says.
pub fn no_worker_note(pool: &str) -> String {
    format!("waiting: no live worker serves pool `{pool}` (start one: sluice worker --pool {pool})")
}

/// A run to enqueue.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub pipeline: PipelineDef,
    /// `manual`, `api`, `cron`, `every`, `dataset`, `objects`, `backfill`.
    pub trigger: String,
    pub logical_date: String,
    /// The fire time of a scheduled run: at most one run per pipeline,
    /// trigger and fire time.
    pub scheduled_for: Option<i64>,
    pub params: serde_json::Value,
    pub full_refresh: bool,
    pub tasks: Vec<NewTask>,
}

/// A task a worker claimed.
#[derive(Debug, Clone)]
pub struct Claim {
    pub run_id: String,
    pub step: String,
    pub pipeline: String,
    pub kind: String,
    pub attempt: i64,
    pub worker: String,
    pub timeout_ms: Option<i64>,
    pub logical_date: String,
    pub full_refresh: bool,
    pub definition_hash: String,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Success {
        summary: String,
        output: serde_json::Value,
        datasets: Vec<String>,
    },
    Failure {
        error: String,
        retryable: bool,
    },
    /// The run was cancelled while the step ran, and the step stopped.
    Cancelled {
        why: String,
    },
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub pipeline: String,
    pub status: String,
    pub trigger: String,
    pub logical_date: String,
    pub scheduled_for: Option<i64>,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    pub params: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskRow {
    pub run_id: String,
    pub step: String,
    pub kind: String,
    pub status: String,
    pub deps: Vec<String>,
    pub attempts: i64,
    pub worker: Option<String>,
    pub next_try_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    pub summary: Option<String>,
    pub output: serde_json::Value,
    /// The worker pool that runs the task.
    pub pool: String,
    /// Why a ready task is not running: no live worker serves its pool.
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttemptRow {
    pub attempt: i64,
    pub worker: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub status: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogRow {
    pub id: i64,
    pub attempt: i64,
    pub at: i64,
    pub level: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PipelineRow {
    pub name: String,
    pub definition_hash: String,
    pub max_active_runs: Option<i64>,
    pub concurrency: Option<i64>,
    pub last_run: Option<RunRow>,
}

/// Filters of `runs`.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub pipeline: Option<String>,
    pub status: Option<String>,
    pub limit: Option<u32>,
}

pub const RUN_STATUSES: &[&str] = &["queued", "running", "success", "failed", "cancelled"];
const TERMINAL: &[&str] = &["success", "failed", "upstream_failed", "cancelled"];

fn opt_i(v: &V) -> Option<i64> {
    v.int()
}
fn opt_s(v: &V) -> Option<String> {
    match v {
        V::Null => None,
        v => Some(v.string()),
    }
}
fn json_of(v: &V) -> serde_json::Value {
    v.text().and_then(|t| serde_json::from_str(t).ok()).unwrap_or(serde_json::Value::Null)
}

const RUN_COLS: &str =
    "id, pipeline, status, trigger, logical_date, scheduled_for, queued_at, started_at, finished_at, error, params";

fn run_row(r: &Row) -> RunRow {
    RunRow {
        id: r[0].string(),
        pipeline: r[1].string(),
        status: r[2].string(),
        trigger: r[3].string(),
        logical_date: r[4].string(),
        scheduled_for: opt_i(&r[5]),
        queued_at: r[6].int().unwrap_or(0),
        started_at: opt_i(&r[7]),
        finished_at: opt_i(&r[8]),
        error: opt_s(&r[9]),
        params: json_of(&r[10]),
    }
}

/// A delay of `base × 2^(n−1)`, capped at an hour, with "equal jitter" (a
/// random point in its upper half), so retries of many tasks spread out.
pub fn backoff_ms(base_ms: i64, failures: i64, seed: &str) -> i64 {
    let exp = (failures - 1).clamp(0, 20) as u32;
    let d = base_ms.max(1).saturating_mul(1i64 << exp).min(3_600_000);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(seed.as_bytes());
    h.write_i64(now_us());
    let r = (h.finish() % 1_000_000) as i64;
    d / 2 + (d - d / 2) * r / 1_000_000
}

impl State {
    /// Opens the store at `url` (relative SQLite paths are under `base`) and
    /// brings its schema up to date.
    pub fn open(url: &str, base: &std::path::Path) -> Result<State> {
        let st = State::with(Db::open(url, base)?);
        st.ready()?;
        Ok(st)
    }

    /// The store at `url`, not reached yet (a PostgreSQL server may still be
    /// starting): nothing is connected or migrated until `ready` succeeds.
    pub fn pending(url: &str, base: &std::path::Path) -> Result<State> {
        Ok(State::with(Db::pending(url, base)?))
    }

    fn with(db: Db) -> State {
        State {
            db,
            ready: std::sync::OnceLock::new(),
            last_error: std::sync::Mutex::new(None),
            trouble: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Reaches the store and brings its schema up to date (once); an error
    /// when it does not answer.
    pub fn ready(&self) -> Result<()> {
        if self.is_ready() {
            return Ok(());
        }
        match migrations::migrate(&self.db) {
            Ok(_) => {
                let _ = self.ready.set(());
                *self.last_error.lock().expect("last error") = None;
                Ok(())
            }
            Err(e) => {
                *self.last_error.lock().expect("last error") = Some(e.chain());
                // A service that waited for the store reaps nothing at first.
                self.trouble.store(now_us(), std::sync::atomic::Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// Whether the store has answered and its schema is up to date.
    pub fn is_ready(&self) -> bool {
        self.ready.get().is_some()
    }

    /// Why the store did not answer the last time it was tried.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("last error").clone()
    }

    /// One transaction (see `Db::tx`), noting when the store could not be
    /// reached or answered slowly.
    fn tx<T>(&self, f: impl FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        let t0 = now_us();
        let r = self.db.tx(f);
        let end = now_us();
        if end - t0 > SLOW_TX_US || matches!(&r, Err(e) if e.kind() == crate::error::Kind::External) {
            self.trouble.store(end, std::sync::atomic::Ordering::SeqCst);
        }
        r
    }

    /// Single-statement reads without a transaction (see `Db::read`),
    /// noting trouble as `tx` does.
    fn read<T>(&self, f: impl FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        let t0 = now_us();
        let r = self.db.read(f);
        let end = now_us();
        if end - t0 > SLOW_TX_US || matches!(&r, Err(e) if e.kind() == crate::error::Kind::External) {
            self.trouble.store(end, std::sync::atomic::Ordering::SeqCst);
        }
        r
    }

    /// Whether this process reached the store without trouble for the last
    /// `REAP_QUIET_US`.
    fn steady(&self, now: i64) -> bool {
        now - self.trouble.load(std::sync::atomic::Ordering::SeqCst) >= REAP_QUIET_US
    }

    pub fn describe(&self) -> String {
        self.db.describe()
    }

    /// Waits until work may be ready (a notification) or `timeout`.
    pub fn wait(&self, seen: u64, timeout: std::time::Duration) -> u64 {
        self.db.bell().wait(seen, timeout)
    }

    pub fn bell_count(&self) -> u64 {
        self.db.bell().count()
    }

    /// Records the pipelines a project has (their definitions' hashes and limits).
    pub fn sync_pipelines(&self, defs: &[PipelineDef]) -> Result<()> {
        let now = now_us();
        self.tx(|t| {
            for d in defs {
                upsert_pipeline(t, d, now)?;
            }
            Ok(())
        })
    }

    /// Enqueues a run; `None` when a run for the same scheduled fire exists.
    pub fn enqueue(&self, run: &NewRun) -> Result<Option<String>> {
        let now = now_us();
        let id = uuid::Uuid::now_v7().to_string();
        self.tx(|t| {
            upsert_pipeline(t, &run.pipeline, now)?;
            let n = t.exec(
                "INSERT INTO sluice_runs (id, pipeline, status, trigger, logical_date, scheduled_for, queued_at, params, full_refresh, definition_hash) \
                     VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                &[
                    V::from(&id),
                    V::from(&run.pipeline.name),
                    V::from(&run.trigger),
                    V::from(&run.logical_date),
                    V::from(run.scheduled_for),
                    V::Int(now),
                    V::Text(run.params.to_string()),
                    V::Int(run.full_refresh as i64),
                    V::from(&run.pipeline.hash),
                ],
            )?;
            if n == 0 {
                return Ok(None);
            }
            for (i, task) in run.tasks.iter().enumerate() {
                t.exec(
                    "INSERT INTO sluice_tasks (run_id, step, pipeline, kind, position, deps, status, retries, retry_delay_ms, retry_on, timeout_ms, pool) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'waiting', $7, $8, $9, $10, $11)",
                    &[
                        V::from(&id),
                        V::from(&task.step),
                        V::from(&run.pipeline.name),
                        V::from(&task.kind),
                        V::Int(i as i64),
                        V::Text(serde_json::to_string(&task.deps).expect("JSON")),
                        V::from(task.retries),
                        V::Int(task.retry_delay_ms),
                        V::from(task.retry_on.name()),
                        V::from(task.timeout_ms),
                        V::from(&task.pool),
                    ],
                )?;
            }
            promote(t, &run.pipeline.name, now)?;
            Ok(Some(id.clone()))
        })
    }

    /// Claims the next ready task for `worker`, holding it for `lease_ms`.
    pub fn claim(&self, worker: &str, pools: &Pools, lease_ms: i64) -> Result<Option<Claim>> {
        let now = now_us();
        self.tx(|t| {
            let pg = t.is_postgres();
            // The pools' parameters come after the others: from $4 in
            // PostgreSQL's one statement, from $2 in SQLite's pick. A plain
            // `IN` keeps the planner's estimate of ready tasks right (a
            // pattern built from the column is guessed to match 0.5% of
            // rows, which tipped it into sorting every ready task).
            // `Only` with no names claims nothing (an empty `IN` is no SQL).
            let pool_params: Vec<V> = match pools {
                Pools::All => Vec::new(),
                Pools::Only(p) if p.is_empty() => vec![V::Null],
                Pools::Only(p) => p.iter().map(V::from).collect(),
            };
            let pool_filter = if pool_params.is_empty() {
                String::new()
            } else {
                let from = if pg { 4 } else { 2 };
                let ps: Vec<String> = (0..pool_params.len()).map(|k| format!("${}", from + k)).collect();
                format!("AND c.pool IN ({}) ", ps.join(", "))
            };
            let pick = format!(
                "SELECT c.run_id, c.step FROM sluice_tasks c \
                 WHERE c.status = 'ready' AND c.next_try_at <= $1 {pool_filter}\
                   AND NOT EXISTS (SELECT 1 FROM sluice_pipelines p WHERE p.name = c.pipeline AND p.concurrency IS NOT NULL \
                       AND p.concurrency <= (SELECT COUNT(*) FROM sluice_tasks r WHERE r.pipeline = c.pipeline AND r.status = 'running')) \
                 ORDER BY c.next_try_at, c.run_id, c.position LIMIT 1 {}",
                if pg { "FOR UPDATE OF c SKIP LOCKED" } else { "" }
            );
            let set = "SET status = 'running', attempts = attempts + 1, lease_owner = $2, lease_until = $3, started_at = $1";
            let mut params = vec![V::Int(now), V::from(worker), V::Int(now + lease_ms * 1000)];
            params.extend(pool_params.iter().cloned());
            // One statement on PostgreSQL: pick (skipping rows other workers
            // hold), take, and read what the worker needs.
            let r = if pg {
                // Walk the ready tasks in claim order (`sluice_tasks_claim`)
                // and stop at the first one free. Statistics taken before a
                // burst of runs make the planner expect a few ready tasks
                // and prefer fetching them all and sorting: with thousands
                // ready that is every ready task read and checked per claim.
                t.exec("SET LOCAL enable_sort = off", &[])?;
                let rows = t.query(
                    &format!(
                        "UPDATE sluice_tasks t {set} FROM sluice_runs r LEFT JOIN sluice_pipelines p ON p.name = r.pipeline \
                         WHERE r.id = t.run_id AND (t.run_id, t.step) = ({pick}) \
                         RETURNING t.run_id, t.step, t.pipeline, t.attempts, t.kind, t.timeout_ms, r.logical_date, r.full_refresh, \
                         r.definition_hash, p.concurrency"
                    ),
                    &params,
                )?;
                let Some(r) = rows.into_iter().next() else { return Ok(None) };
                // A concurrency limit is checked again under the pipeline's
                // row lock: two workers claiming at once cannot both take
                // the last slot.
                if let Some(limit) = r[9].int() {
                    t.exec("SELECT 1 FROM sluice_pipelines WHERE name = $1 FOR UPDATE", &[r[2].clone()])?;
                    let running = first(&t.query(
                        "SELECT COUNT(*) FROM sluice_tasks WHERE pipeline = $1 AND status = 'running'",
                        &[r[2].clone()],
                    )?)
                    .and_then(V::int)
                    .unwrap_or(0);
                    if running > limit {
                        t.abort();
                        return Ok(None);
                    }
                }
                r
            } else {
                let mut pick_params = vec![V::Int(now)];
                pick_params.extend(pool_params.iter().cloned());
                let picked = t.query(&pick, &pick_params)?;
                let Some(p) = picked.first() else { return Ok(None) };
                t.exec(&format!("UPDATE sluice_tasks {set} WHERE run_id = $4 AND step = $5"), &[params[0].clone(), params[1].clone(), params[2].clone(), p[0].clone(), p[1].clone()])?;
                let rows = t.query(
                    "SELECT t.run_id, t.step, t.pipeline, t.attempts, t.kind, t.timeout_ms, r.logical_date, r.full_refresh, r.definition_hash \
                     FROM sluice_tasks t JOIN sluice_runs r ON r.id = t.run_id WHERE t.run_id = $1 AND t.step = $2",
                    &[p[0].clone(), p[1].clone()],
                )?;
                rows.into_iter().next().expect("the task just taken")
            };
            let attempt = r[3].int().unwrap_or(1);
            t.exec(
                "INSERT INTO sluice_attempts (run_id, step, attempt, worker, started_at, status) VALUES ($1, $2, $3, $4, $5, 'running')",
                &[r[0].clone(), r[1].clone(), V::Int(attempt), V::from(worker), V::Int(now)],
            )?;
            Ok(Some(Claim {
                run_id: r[0].string(),
                step: r[1].string(),
                pipeline: r[2].string(),
                kind: r[4].string(),
                attempt,
                worker: worker.to_string(),
                timeout_ms: r[5].int(),
                logical_date: r[6].string(),
                full_refresh: r[7].int() == Some(1),
                definition_hash: r[8].string(),
            }))
        })
    }

    /// Renews the leases of `worker`'s running tasks and its heartbeat;
    /// returns the tasks it runs whose run was cancelled.
    pub fn renew(&self, worker: &str, lease_ms: i64) -> Result<Vec<(String, String)>> {
        let now = now_us();
        self.tx(|t| {
            t.exec(
                "UPDATE sluice_tasks SET lease_until = $2 WHERE lease_owner = $1 AND status = 'running'",
                &[V::from(worker), V::Int(now + lease_ms * 1000)],
            )?;
            t.exec("UPDATE sluice_workers SET heartbeat_at = $2 WHERE id = $1", &[V::from(worker), V::Int(now)])?;
            let rows = t.query(
                "SELECT t.run_id, t.step FROM sluice_tasks t JOIN sluice_runs r ON r.id = t.run_id \
                 WHERE t.lease_owner = $1 AND t.status = 'running' AND r.status = 'cancelled'",
                &[V::from(worker)],
            )?;
            Ok(rows.iter().map(|r| (r[0].string(), r[1].string())).collect())
        })
    }

    /// Records how a claimed attempt ended and moves the run on: dependents
    /// become ready, a failure is retried (after a backoff) or fails the
    /// task and marks what depends on it, and a run whose tasks are all done
    /// finishes. `false` when the attempt no longer held the task (its
    /// lease expired and another worker took it): nothing is recorded then
    /// but the attempt's end.
    pub fn finish(&self, c: &Claim, outcome: &Outcome) -> Result<bool> {
        let now = now_us();
        self.tx(|t| {
            // The run's row is locked too: tasks of one run finishing at
            // once take turns, so exactly one of them finishes the run.
            let lock = if t.is_postgres() { "FOR UPDATE OF t, r" } else { "" };
            let rows = t.query(
                &format!(
                    "SELECT t.status, t.lease_owner, t.attempts, t.failures, t.retries, t.retry_delay_ms, t.retry_on, r.status \
                     FROM sluice_tasks t JOIN sluice_runs r ON r.id = t.run_id WHERE t.run_id = $1 AND t.step = $2 {lock}"
                ),
                &[V::from(&c.run_id), V::from(&c.step)],
            )?;
            let Some(r) = rows.first() else { return Ok(false) };
            let held = r[0].text() == Some("running") && r[1].text() == Some(c.worker.as_str()) && r[2].int() == Some(c.attempt);
            // Its lease ran out while the worker could not reach the store,
            // and nobody has taken the task since (a claim counts a new
            // attempt): the worker is alive and its result stands.
            let late = !held
                && r[0].text() == Some("ready")
                && r[2].int() == Some(c.attempt)
                && first(&t.query(
                    "SELECT status FROM sluice_attempts WHERE run_id = $1 AND step = $2 AND attempt = $3",
                    &[V::from(&c.run_id), V::from(&c.step), V::Int(c.attempt)],
                )?)
                .and_then(V::text)
                    == Some("lost");
            if late {
                t.exec(
                    "UPDATE sluice_tasks SET status = 'running', lost = lost - 1, lease_owner = $3 WHERE run_id = $1 AND step = $2",
                    &[V::from(&c.run_id), V::from(&c.step), V::from(&c.worker)],
                )?;
                log_tx(
                    t,
                    &c.run_id,
                    &c.step,
                    c.attempt,
                    "warn",
                    &format!("worker {} came back with the result before another worker took the task; the result is used", c.worker),
                    now,
                )?;
            }
            if !held && !late {
                t.exec(
                    "UPDATE sluice_attempts SET status = 'abandoned', finished_at = $4, error = $5 \
                     WHERE run_id = $1 AND step = $2 AND attempt = $3 AND status = 'running'",
                    &[
                        V::from(&c.run_id),
                        V::from(&c.step),
                        V::Int(c.attempt),
                        V::Int(now),
                        V::from("the worker lost its lease before the attempt ended; its result was not used"),
                    ],
                )?;
                return Ok(false);
            }
            let (failures, retries, delay, retry_on, run_status) =
                (r[3].int().unwrap_or(0), r[4].int().unwrap_or(0), r[5].int().unwrap_or(0), r[6].string(), r[7].string());
            let running = run_status == "running";
            let mut failed_step = None;
            match outcome {
                Outcome::Success { summary, output, datasets } => {
                    t.exec(
                        "UPDATE sluice_tasks SET status = 'success', finished_at = $3, lease_owner = NULL, lease_until = NULL, \
                         summary = $4, output = $5, error = NULL WHERE run_id = $1 AND step = $2",
                        &[V::from(&c.run_id), V::from(&c.step), V::Int(now), V::from(summary), V::Text(output.to_string())],
                    )?;
                    end_attempt(t, c, now, "success", None)?;
                    log_tx(t, &c.run_id, &c.step, c.attempt, "info", summary, now)?;
                    for ds in datasets {
                        t.exec(
                            "INSERT INTO sluice_dataset_events (dataset, pipeline, run_id, step, at) VALUES ($1, $2, $3, $4, $5)",
                            &[V::from(ds), V::from(&c.pipeline), V::from(&c.run_id), V::from(&c.step), V::Int(now)],
                        )?;
                    }
                }
                Outcome::Failure { error, retryable } => {
                    let failures = failures + 1;
                    let allowed = *retryable || retry_on == "any";
                    end_attempt(t, c, now, "failed", Some(error))?;
                    log_tx(t, &c.run_id, &c.step, c.attempt, "error", error, now)?;
                    if allowed && failures <= retries && running {
                        let wait = backoff_ms(delay, failures, &format!("{}{}", c.run_id, c.step));
                        t.exec(
                            "UPDATE sluice_tasks SET status = 'ready', failures = $3, next_try_at = $4, lease_owner = NULL, \
                             lease_until = NULL, error = $5 WHERE run_id = $1 AND step = $2",
                            &[V::from(&c.run_id), V::from(&c.step), V::Int(failures), V::Int(now + wait * 1000), V::from(error)],
                        )?;
                        log_tx(
                            t,
                            &c.run_id,
                            &c.step,
                            c.attempt,
                            "warn",
                            &format!("retry {failures} of {retries} in {:.1}s", wait as f64 / 1000.0),
                            now,
                        )?;
                        t.notify()?;
                    } else {
                        if !allowed && failures <= retries {
                            log_tx(t, &c.run_id, &c.step, c.attempt, "info", "not retried: the error is not transient (retry_on = \"transient\")", now)?;
                        }
                        t.exec(
                            "UPDATE sluice_tasks SET status = 'failed', failures = $3, finished_at = $4, lease_owner = NULL, \
                             lease_until = NULL, error = $5 WHERE run_id = $1 AND step = $2",
                            &[V::from(&c.run_id), V::from(&c.step), V::Int(failures), V::Int(now), V::from(error)],
                        )?;
                        failed_step = Some(c.step.as_str());
                    }
                }
                Outcome::Cancelled { why } => {
                    t.exec(
                        "UPDATE sluice_tasks SET status = 'cancelled', finished_at = $3, lease_owner = NULL, \
                         lease_until = NULL, error = $4 WHERE run_id = $1 AND step = $2",
                        &[V::from(&c.run_id), V::from(&c.step), V::Int(now), V::from(why)],
                    )?;
                    end_attempt(t, c, now, "cancelled", Some(why))?;
                    log_tx(t, &c.run_id, &c.step, c.attempt, "warn", why, now)?;
                }
            }
            advance(t, &c.run_id, &c.pipeline, failed_step, running, now)?;
            Ok(true)
        })
    }

    /// Gives a running task back (a worker shutting down): another worker
    /// takes it at once; the attempt does not count as a failure.
    pub fn hand_back(&self, c: &Claim, why: &str) -> Result<()> {
        let now = now_us();
        self.tx(|t| {
            let n = t.exec(
                "UPDATE sluice_tasks SET status = 'ready', next_try_at = $5, lease_owner = NULL, lease_until = NULL \
                 WHERE run_id = $1 AND step = $2 AND lease_owner = $3 AND attempts = $4 AND status = 'running'",
                &[V::from(&c.run_id), V::from(&c.step), V::from(&c.worker), V::Int(c.attempt), V::Int(now)],
            )?;
            if n > 0 {
                end_attempt(t, c, now, "handed_back", Some(why))?;
                log_tx(t, &c.run_id, &c.step, c.attempt, "warn", &format!("handed back: {why}"), now)?;
                t.notify()?;
            }
            Ok(())
        })
    }

    /// Tasks whose lease expired (their worker died or was cut off) are
    /// made ready for another worker, up to `MAX_LOST` times; returns how many.
    pub fn reap(&self) -> Result<usize> {
        let now = now_us();
        if !self.steady(now) {
            return Ok(0);
        }
        let local = self.reap_local(now)?;
        self.tx(|t| {
            let lock = if t.is_postgres() { "FOR UPDATE SKIP LOCKED" } else { "" };
            let rows = t.query(
                &format!(
                    "SELECT run_id, step, pipeline, lease_owner, attempts, lost FROM sluice_tasks \
                     WHERE status = 'running' AND lease_until < $1 LIMIT 100 {lock}"
                ),
                &[V::Int(now)],
            )?;
            for r in &rows {
                let (run_id, step, pipeline, owner, attempt, lost) =
                    (r[0].string(), r[1].string(), r[2].string(), r[3].string(), r[4].int().unwrap_or(0), r[5].int().unwrap_or(0) + 1);
                let msg = format!("worker {owner} stopped renewing its lease (killed, or cut off from the state store)");
                t.exec(
                    "UPDATE sluice_attempts SET status = 'lost', finished_at = $4, error = $5 WHERE run_id = $1 AND step = $2 AND attempt = $3",
                    &[V::from(&run_id), V::from(&step), V::Int(attempt), V::Int(now), V::from(&msg)],
                )?;
                let lock = if t.is_postgres() { "FOR UPDATE" } else { "" };
                let run_status =
                    first(&t.query(&format!("SELECT status FROM sluice_runs WHERE id = $1 {lock}"), &[V::from(&run_id)])?)
                        .map(V::string)
                        .unwrap_or_default();
                if lost <= MAX_LOST && run_status == "running" {
                    t.exec(
                        "UPDATE sluice_tasks SET status = 'ready', lost = $3, next_try_at = $4, lease_owner = NULL, lease_until = NULL, \
                         error = $5 WHERE run_id = $1 AND step = $2",
                        &[V::from(&run_id), V::from(&step), V::Int(lost), V::Int(now), V::from(&msg)],
                    )?;
                    log_tx(t, &run_id, &step, attempt, "warn", &format!("{msg}; tried again on another worker"), now)?;
                    t.notify()?;
                } else {
                    let why = if run_status == "running" { format!("{msg}, {lost} times") } else { msg.clone() };
                    t.exec(
                        "UPDATE sluice_tasks SET status = 'failed', lost = $3, finished_at = $4, lease_owner = NULL, lease_until = NULL, \
                         error = $5 WHERE run_id = $1 AND step = $2",
                        &[V::from(&run_id), V::from(&step), V::Int(lost), V::Int(now), V::from(&why)],
                    )?;
                    log_tx(t, &run_id, &step, attempt, "error", &why, now)?;
                    advance(t, &run_id, &pipeline, Some(&step), run_status == "running", now)?;
                }
            }
            Ok(rows.len() + local)
        })
    }

    /// Runs of `sluice run` whose process stopped renewing their lease (or
    /// that a Sluice without leases left running) end `failed`: nobody else
    /// runs a command-line run's steps. Their running steps fail (the
    /// attempt is `lost`), the rest are cancelled, and the pipeline's queued
    /// runs may start.
    fn reap_local(&self, now: i64) -> Result<usize> {
        self.tx(|t| {
            let mut dead: Vec<(String, String)> = t
                .query(
                    &format!("SELECT substr(name, 5), holder FROM sluice_leases WHERE name LIKE '{LOCAL_LEASE}%' AND lease_until < $1 LIMIT 100"),
                    &[V::Int(now)],
                )?
                .iter()
                .map(|r| (r[0].string(), r[1].string()))
                .collect();
            dead.extend(
                t.query(
                    &format!(
                        "SELECT r.id FROM sluice_runs r WHERE r.status = 'running' AND r.trigger = 'cli' \
                         AND NOT EXISTS (SELECT 1 FROM sluice_leases l WHERE l.name = '{LOCAL_LEASE}' || r.id) LIMIT 100"
                    ),
                    &[],
                )?
                .iter()
                .map(|r| (r[0].string(), "an earlier sluice".to_string())),
            );
            let mut ended = 0;
            for (run_id, holder) in &dead {
                let lock = if t.is_postgres() { "FOR UPDATE" } else { "" };
                let rows = t.query(&format!("SELECT status, pipeline FROM sluice_runs WHERE id = $1 {lock}"), &[V::from(run_id)])?;
                t.exec("DELETE FROM sluice_leases WHERE name = $1", &[V::Text(format!("{LOCAL_LEASE}{run_id}"))])?;
                let Some(r) = rows.first() else { continue };
                // A run cancelled through the API after its process died:
                // its step was stopped with it.
                let run_running = r[0].text() == Some("running");
                let ends = if run_running { "failed" } else { "cancelled" };
                let pipeline = r[1].string();
                let msg = format!(
                    "`sluice run` ({holder}) stopped without ending its run (killed, or cut off from the state store for longer than its lease)"
                );
                let running = t.query(
                    "SELECT step, attempts FROM sluice_tasks WHERE run_id = $1 AND status = 'running'",
                    &[V::from(run_id)],
                )?;
                for task in &running {
                    let (step, attempt) = (task[0].string(), task[1].int().unwrap_or(1));
                    t.exec(
                        "UPDATE sluice_attempts SET status = 'lost', finished_at = $4, error = $5 WHERE run_id = $1 AND step = $2 AND attempt = $3",
                        &[V::from(run_id), V::from(&step), V::Int(attempt), V::Int(now), V::from(&msg)],
                    )?;
                    t.exec(
                        "UPDATE sluice_tasks SET status = $5, lost = lost + 1, finished_at = $3, lease_owner = NULL, lease_until = NULL, \
                         error = $4 WHERE run_id = $1 AND step = $2",
                        &[V::from(run_id), V::from(&step), V::Int(now), V::from(&msg), V::from(ends)],
                    )?;
                    log_tx(t, run_id, &step, attempt, "error", &msg, now)?;
                    ended += 1;
                }
                if !run_running {
                    continue;
                }
                ended += 1;
                t.exec(
                    "UPDATE sluice_tasks SET status = 'cancelled', finished_at = $2 WHERE run_id = $1 AND status IN ('waiting', 'ready')",
                    &[V::from(run_id), V::Int(now)],
                )?;
                t.exec(
                    "UPDATE sluice_runs SET status = 'failed', finished_at = $2, error = $3 WHERE id = $1",
                    &[V::from(run_id), V::Int(now), V::from(&msg)],
                )?;
                promote(t, &pipeline, now)?;
            }
            Ok(ended)
        })
    }

    /// Cancels a run: waiting and ready tasks are cancelled, running ones are
    /// asked to stop. `Ok(false)` when the run had already finished.
    pub fn cancel(&self, run_id: &str) -> Result<Option<bool>> {
        let now = now_us();
        self.tx(|t| {
            let lock = if t.is_postgres() { "FOR UPDATE" } else { "" };
            let rows = t.query(&format!("SELECT status, pipeline FROM sluice_runs WHERE id = $1 {lock}"), &[V::from(run_id)])?;
            let Some(r) = rows.first() else { return Ok(None) };
            let (status, pipeline) = (r[0].string(), r[1].string());
            if !matches!(status.as_str(), "queued" | "running") {
                return Ok(Some(false));
            }
            t.exec(
                "UPDATE sluice_runs SET status = 'cancelled', finished_at = $2, error = 'cancelled' WHERE id = $1",
                &[V::from(run_id), V::Int(now)],
            )?;
            t.exec(
                "UPDATE sluice_tasks SET status = 'cancelled', finished_at = $2 WHERE run_id = $1 AND status IN ('waiting', 'ready')",
                &[V::from(run_id), V::Int(now)],
            )?;
            promote(t, &pipeline, now)?;
            Ok(Some(true))
        })
    }

    /// Records a run that `sluice run` executes in its own process: the run
    /// is `running` at once, its tasks are never offered to workers, and it
    /// is held by `owner` under a lease of `lease_ms` that the process
    /// renews (`renew_local`); a run whose lease runs out is ended by `reap`.
    pub fn begin_local(&self, id: &str, run: &NewRun, owner: &str, lease_ms: i64) -> Result<()> {
        let now = now_us();
        self.tx(|t| {
            upsert_pipeline(t, &run.pipeline, now)?;
            t.exec(
                "INSERT INTO sluice_runs (id, pipeline, status, trigger, logical_date, queued_at, started_at, params, full_refresh, definition_hash) \
                 VALUES ($1, $2, 'running', $3, $4, $5, $5, $6, $7, $8)",
                &[
                    V::from(id),
                    V::from(&run.pipeline.name),
                    V::from(&run.trigger),
                    V::from(&run.logical_date),
                    V::Int(now),
                    V::Text(run.params.to_string()),
                    V::Int(run.full_refresh as i64),
                    V::from(&run.pipeline.hash),
                ],
            )?;
            t.exec(
                "INSERT INTO sluice_leases (name, holder, lease_until) VALUES ($1, $2, $3)",
                &[V::Text(format!("{LOCAL_LEASE}{id}")), V::from(owner), V::Int(now + lease_ms * 1000)],
            )?;
            for (i, task) in run.tasks.iter().enumerate() {
                t.exec(
                    "INSERT INTO sluice_tasks (run_id, step, pipeline, kind, position, deps, status, retries, retry_delay_ms, retry_on, timeout_ms, pool) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'waiting', 0, 0, 'transient', $7, $8)",
                    &[
                        V::from(id),
                        V::from(&task.step),
                        V::from(&run.pipeline.name),
                        V::from(&task.kind),
                        V::Int(i as i64),
                        V::Text(serde_json::to_string(&task.deps).expect("JSON")),
                        V::from(task.timeout_ms),
                        V::from(&task.pool),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Renews a local run's lease; returns the run's status (`cancelled`
    /// when the API cancelled it), or `None` when the run is not held by
    /// `owner` any more.
    pub fn renew_local(&self, id: &str, owner: &str, lease_ms: i64) -> Result<Option<String>> {
        let now = now_us();
        self.tx(|t| {
            let n = t.exec(
                "UPDATE sluice_leases SET lease_until = $3 WHERE name = $1 AND holder = $2",
                &[V::Text(format!("{LOCAL_LEASE}{id}")), V::from(owner), V::Int(now + lease_ms * 1000)],
            )?;
            if n == 0 {
                return Ok(None);
            }
            Ok(first(&t.query("SELECT status FROM sluice_runs WHERE id = $1", &[V::from(id)])?).map(V::string))
        })
    }

    /// A step of a local run started.
    pub fn local_started(&self, run_id: &str, step: &str, owner: &str) -> Result<()> {
        let now = now_us();
        self.tx(|t| {
            t.exec(
                "UPDATE sluice_tasks SET status = 'running', attempts = 1, lease_owner = $3, started_at = $4 WHERE run_id = $1 AND step = $2",
                &[V::from(run_id), V::from(step), V::from(owner), V::Int(now)],
            )?;
            t.exec(
                "INSERT INTO sluice_attempts (run_id, step, attempt, worker, started_at, status) VALUES ($1, $2, 1, $3, $4, 'running')",
                &[V::from(run_id), V::from(step), V::from(owner), V::Int(now)],
            )?;
            Ok(())
        })
    }

    /// A step of a local run ended: `success`, `failed`, `upstream_failed`
    /// or `cancelled`.
    pub fn local_finished(&self, run_id: &str, step: &str, status: &str, outcome: Option<&Outcome>) -> Result<()> {
        let now = now_us();
        self.tx(|t| {
            let (summary, output, error) = match outcome {
                Some(Outcome::Success { summary, output, .. }) => (Some(summary.clone()), Some(output.to_string()), None),
                Some(Outcome::Failure { error, .. }) | Some(Outcome::Cancelled { why: error }) => {
                    (None, None, Some(error.clone()))
                }
                None => (None, None, None),
            };
            t.exec(
                "UPDATE sluice_tasks SET status = $3, lease_owner = NULL, finished_at = $4, summary = $5, output = $6, error = $7 \
                 WHERE run_id = $1 AND step = $2",
                &[V::from(run_id), V::from(step), V::from(status), V::Int(now), V::from(summary.clone()), V::from(output), V::from(error.clone())],
            )?;
            t.exec(
                "UPDATE sluice_attempts SET status = $3, finished_at = $4, error = $5 WHERE run_id = $1 AND step = $2 AND attempt = 1",
                &[V::from(run_id), V::from(step), V::from(status), V::Int(now), V::from(error.clone())],
            )?;
            if let Some(Outcome::Success { datasets, .. }) = outcome {
                let pipeline = first(&t.query("SELECT pipeline FROM sluice_runs WHERE id = $1", &[V::from(run_id)])?)
                    .map(V::string)
                    .unwrap_or_default();
                for ds in datasets {
                    t.exec(
                        "INSERT INTO sluice_dataset_events (dataset, pipeline, run_id, step, at) VALUES ($1, $2, $3, $4, $5)",
                        &[V::from(ds), V::from(&pipeline), V::from(run_id), V::from(step), V::Int(now)],
                    )?;
                }
            }
            let (level, msg) = match (&summary, &error) {
                (Some(s), _) => ("info", s.clone()),
                (_, Some(e)) => ("error", e.clone()),
                _ => ("warn", format!("not run: {status}")),
            };
            log_tx(t, run_id, step, 1, level, &msg, now)
        })
    }

    /// A local run ended (`success`, `failed` or `cancelled`): its lease is
    /// released, and the pipeline's queued runs may start. Its own process
    /// knows best how it ended, so this is recorded even if the run was
    /// ended meanwhile by another process that took it for dead.
    pub fn end_local(&self, run_id: &str, status: &str, error: Option<&str>) -> Result<()> {
        let now = now_us();
        self.tx(|t| {
            let lock = if t.is_postgres() { "FOR UPDATE" } else { "" };
            let pipeline = first(&t.query(&format!("SELECT pipeline FROM sluice_runs WHERE id = $1 {lock}"), &[V::from(run_id)])?)
                .map(V::string)
                .unwrap_or_default();
            t.exec(
                "UPDATE sluice_tasks SET status = 'cancelled', finished_at = $2, lease_owner = NULL WHERE run_id = $1 AND status IN ('waiting', 'ready', 'running')",
                &[V::from(run_id), V::Int(now)],
            )?;
            t.exec(
                "UPDATE sluice_runs SET status = $2, finished_at = $3, error = $4 WHERE id = $1",
                &[V::from(run_id), V::from(status), V::Int(now), V::from(error)],
            )?;
            t.exec("DELETE FROM sluice_leases WHERE name = $1", &[V::Text(format!("{LOCAL_LEASE}{run_id}"))])?;
            promote(t, &pipeline, now)?;
            Ok(())
        })
    }

    /// Appends a line to a task's log.
    pub fn log(&self, run_id: &str, step: &str, attempt: i64, level: &str, message: &str) -> Result<()> {
        let now = now_us();
        self.tx(|t| log_tx(t, run_id, step, attempt, level, message, now))
    }

    pub fn register_worker(&self, id: &str, slots: u32, pools: &Pools) -> Result<()> {
        let now = now_us();
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        self.tx(|t| {
            t.exec(
                "INSERT INTO sluice_workers (id, host, pid, slots, started_at, heartbeat_at, pool) VALUES ($1, $2, $3, $4, $5, $5, $6)",
                &[
                    V::from(id),
                    V::from(&host),
                    V::Int(std::process::id() as i64),
                    V::from(slots),
                    V::Int(now),
                    V::Text(pools.stored()),
                ],
            )
        })?;
        Ok(())
    }

    /// The pools of the live workers (a heartbeat within `LIVE_WORKER_US`).
    fn live_pools(t: &mut dyn Tx, now: i64) -> Result<Vec<Pools>> {
        let rows = t.query(
            "SELECT DISTINCT pool FROM sluice_workers WHERE stopped_at IS NULL AND heartbeat_at > $1",
            &[V::Int(now - LIVE_WORKER_US)],
        )?;
        Ok(rows.iter().map(|r| Pools::parse_stored(&r[0].string())).collect())
    }

    /// The pools that have ready tasks and no live worker to run them.
    pub fn unserved_pools(&self) -> Result<Vec<Unserved>> {
        let now = now_us();
        self.tx(|t| {
            let live = Self::live_pools(t, now)?;
            let rows = t.query(
                "SELECT pool, COUNT(*) FROM sluice_tasks WHERE status = 'ready' GROUP BY pool ORDER BY pool",
                &[],
            )?;
            Ok(rows
                .iter()
                .map(|r| Unserved { pool: r[0].string(), ready: r[1].int().unwrap_or(0) })
                .filter(|u| !live.iter().any(|p| p.serves(&u.pool)))
                .collect())
        })
    }

    pub fn worker_stopped(&self, id: &str) -> Result<()> {
        let now = now_us();
        self.db
            .tx(|t| t.exec("UPDATE sluice_workers SET stopped_at = $2 WHERE id = $1", &[V::from(id), V::Int(now)]))?;
        Ok(())
    }

    /// Takes or renews the lease called `name` for `holder`; `false` when
    /// another holder's lease is still valid.
    pub fn try_lease(&self, name: &str, holder: &str, lease_ms: i64) -> Result<bool> {
        let now = now_us();
        self.tx(|t| {
            let n = t.exec(
                "UPDATE sluice_leases SET holder = $2, lease_until = $3 WHERE name = $1 AND (holder = $2 OR lease_until < $4)",
                &[V::from(name), V::from(holder), V::Int(now + lease_ms * 1000), V::Int(now)],
            )?;
            if n > 0 {
                return Ok(true);
            }
            let n = t.exec(
                "INSERT INTO sluice_leases (name, holder, lease_until) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[V::from(name), V::from(holder), V::Int(now + lease_ms * 1000)],
            )?;
            Ok(n > 0)
        })
    }

    pub fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.tx(|t| {
            t.exec("DELETE FROM sluice_leases WHERE name = $1 AND holder = $2", &[V::from(name), V::from(holder)])
        })?;
        Ok(())
    }

    /// A schedule's planned next fire and its event cursor.
    pub fn schedule(&self, pipeline: &str, key: &str) -> Result<Option<(Option<i64>, Option<i64>)>> {
        self.tx(|t| {
            let rows = t.query(
                "SELECT next_fire_at, cursor FROM sluice_schedules WHERE pipeline = $1 AND trigger_key = $2",
                &[V::from(pipeline), V::from(key)],
            )?;
            Ok(rows.first().map(|r| (r[0].int(), r[1].int())))
        })
    }

    pub fn set_schedule(
        &self,
        pipeline: &str,
        key: &str,
        next: Option<i64>,
        last: Option<i64>,
        cursor: Option<i64>,
    ) -> Result<()> {
        self.tx(|t| {
            t.exec(
                "INSERT INTO sluice_schedules (pipeline, trigger_key, next_fire_at, last_fire_at, cursor) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (pipeline, trigger_key) DO UPDATE SET next_fire_at = $3, last_fire_at = COALESCE($4, sluice_schedules.last_fire_at), cursor = $5",
                &[V::from(pipeline), V::from(key), V::from(next), V::from(last), V::from(cursor)],
            )
        })?;
        Ok(())
    }

    /// Dataset events after `cursor`: (id, dataset, pipeline, run).
    pub fn dataset_events(&self, after: i64, dataset: &str) -> Result<Vec<(i64, String, String)>> {
        self.tx(|t| {
            let rows = t.query(
                "SELECT id, pipeline, run_id FROM sluice_dataset_events WHERE id > $1 AND dataset = $2 ORDER BY id LIMIT 1000",
                &[V::Int(after), V::from(dataset)],
            )?;
            Ok(rows.iter().map(|r| (r[0].int().unwrap_or(0), r[1].string(), r[2].string())).collect())
        })
    }

    pub fn last_dataset_event(&self) -> Result<i64> {
        self.tx(|t| {
            Ok(first(&t.query("SELECT COALESCE(MAX(id), 0) FROM sluice_dataset_events", &[])?)
                .and_then(V::int)
                .unwrap_or(0))
        })
    }

    /// Of `objects`, those not seen before by this trigger; marks them seen.
    pub fn new_objects(&self, pipeline: &str, key: &str, objects: &[String]) -> Result<Vec<String>> {
        let now = now_us();
        self.tx(|t| {
            let mut fresh = Vec::new();
            for o in objects {
                let n = t.exec(
                    "INSERT INTO sluice_objects_seen (pipeline, trigger_key, object, seen_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[V::from(pipeline), V::from(key), V::from(o), V::Int(now)],
                )?;
                if n > 0 {
                    fresh.push(o.clone());
                }
            }
            Ok(fresh)
        })
    }

    pub fn pipelines(&self) -> Result<Vec<PipelineRow>> {
        self.tx(|t| {
            let rows = t.query("SELECT name, definition_hash, max_active_runs, concurrency FROM sluice_pipelines ORDER BY name", &[])?;
            let mut out = Vec::new();
            for r in rows {
                let last = t.query(
                    &format!("SELECT {RUN_COLS} FROM sluice_runs WHERE pipeline = $1 ORDER BY queued_at DESC, id DESC LIMIT 1"),
                    &[r[0].clone()],
                )?;
                out.push(PipelineRow {
                    name: r[0].string(),
                    definition_hash: r[1].string(),
                    max_active_runs: r[2].int(),
                    concurrency: r[3].int(),
                    last_run: last.first().map(run_row),
                });
            }
            Ok(out)
        })
    }

    pub fn runs(&self, f: &RunFilter) -> Result<Vec<RunRow>> {
        self.read(|t| {
            let mut sql = format!("SELECT {RUN_COLS} FROM sluice_runs WHERE 1 = 1");
            let mut ps = Vec::new();
            if let Some(p) = &f.pipeline {
                ps.push(V::from(p));
                sql.push_str(&format!(" AND pipeline = ${}", ps.len()));
            }
            if let Some(s) = &f.status {
                ps.push(V::from(s));
                sql.push_str(&format!(" AND status = ${}", ps.len()));
            }
            ps.push(V::Int(f.limit.unwrap_or(100).min(10_000) as i64));
            sql.push_str(&format!(" ORDER BY queued_at DESC, id DESC LIMIT ${}", ps.len()));
            Ok(t.query(&sql, &ps)?.iter().map(run_row).collect())
        })
    }

    pub fn run(&self, id: &str) -> Result<Option<RunRow>> {
        self.read(|t| {
            Ok(t.query(&format!("SELECT {RUN_COLS} FROM sluice_runs WHERE id = $1"), &[V::from(id)])?
                .first()
                .map(run_row))
        })
    }

    pub fn tasks(&self, run_id: &str) -> Result<Vec<TaskRow>> {
        self.tx(|t| {
            let rows = t.query(
                "SELECT run_id, step, kind, status, deps, attempts, lease_owner, next_try_at, started_at, finished_at, error, summary, output, pool \
                 FROM sluice_tasks WHERE run_id = $1 ORDER BY position",
                &[V::from(run_id)],
            )?;
            let live = if rows.iter().any(|r| r[3].text() == Some("ready")) {
                Self::live_pools(t, now_us())?
            } else {
                Vec::new()
            };
            Ok(rows
                .iter()
                .map(|r| TaskRow {
                    pool: r[13].string(),
                    note: (r[3].text() == Some("ready") && !live.iter().any(|p| p.serves(&r[13].string())))
                        .then(|| no_worker_note(&r[13].string())),
                    run_id: r[0].string(),
                    step: r[1].string(),
                    kind: r[2].string(),
                    status: r[3].string(),
                    deps: r[4].text().and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default(),
                    attempts: r[5].int().unwrap_or(0),
                    worker: opt_s(&r[6]),
                    next_try_at: if r[3].text() == Some("ready") { opt_i(&r[7]) } else { None },
                    started_at: opt_i(&r[8]),
                    finished_at: opt_i(&r[9]),
                    error: opt_s(&r[10]),
                    summary: opt_s(&r[11]),
                    output: json_of(&r[12]),
                })
                .collect())
        })
    }

    pub fn attempts(&self, run_id: &str, step: &str) -> Result<Vec<AttemptRow>> {
        self.tx(|t| {
            let rows = t.query(
                "SELECT attempt, worker, started_at, finished_at, status, error FROM sluice_attempts WHERE run_id = $1 AND step = $2 ORDER BY attempt",
                &[V::from(run_id), V::from(step)],
            )?;
            Ok(rows
                .iter()
                .map(|r| AttemptRow {
                    attempt: r[0].int().unwrap_or(0),
                    worker: opt_s(&r[1]),
                    started_at: opt_i(&r[2]),
                    finished_at: opt_i(&r[3]),
                    status: r[4].string(),
                    error: opt_s(&r[5]),
                })
                .collect())
        })
    }

    pub fn logs(&self, run_id: &str, step: &str, after: i64) -> Result<Vec<LogRow>> {
        self.tx(|t| {
            let rows = t.query(
                "SELECT id, attempt, at, level, message FROM sluice_task_logs WHERE run_id = $1 AND step = $2 AND id > $3 ORDER BY id LIMIT 10000",
                &[V::from(run_id), V::from(step), V::Int(after)],
            )?;
            Ok(rows
                .iter()
                .map(|r| LogRow {
                    id: r[0].int().unwrap_or(0),
                    attempt: r[1].int().unwrap_or(0),
                    at: r[2].int().unwrap_or(0),
                    level: r[3].string(),
                    message: r[4].string(),
                })
                .collect())
        })
    }

    /// Runs of `pipeline` that are queued or running.
    pub fn active_runs(&self, pipeline: &str) -> Result<i64> {
        self.tx(|t| {
            Ok(first(&t.query(
                "SELECT COUNT(*) FROM sluice_runs WHERE pipeline = $1 AND status IN ('queued', 'running')",
                &[V::from(pipeline)],
            )?)
            .and_then(V::int)
            .unwrap_or(0))
        })
    }
}

fn upsert_pipeline(t: &mut dyn Tx, d: &PipelineDef, now: i64) -> Result<u64> {
    t.exec(
        "INSERT INTO sluice_pipelines (name, definition_hash, max_active_runs, concurrency, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (name) DO UPDATE SET definition_hash = $2, max_active_runs = $3, concurrency = $4, updated_at = $5",
        &[V::from(&d.name), V::from(&d.hash), V::from(d.max_active_runs), V::from(d.concurrency), V::Int(now)],
    )
}

fn log_tx(t: &mut dyn Tx, run_id: &str, step: &str, attempt: i64, level: &str, message: &str, now: i64) -> Result<()> {
    t.exec(
        "INSERT INTO sluice_task_logs (run_id, step, attempt, at, level, message) VALUES ($1, $2, $3, $4, $5, $6)",
        &[V::from(run_id), V::from(step), V::Int(attempt), V::Int(now), V::from(level), V::from(message)],
    )?;
    Ok(())
}

fn end_attempt(t: &mut dyn Tx, c: &Claim, now: i64, status: &str, error: Option<&str>) -> Result<()> {
    t.exec(
        "UPDATE sluice_attempts SET status = $4, finished_at = $5, error = $6 WHERE run_id = $1 AND step = $2 AND attempt = $3",
        &[V::from(&c.run_id), V::from(&c.step), V::Int(c.attempt), V::from(status), V::Int(now), V::from(error)],
    )?;
    Ok(())
}

/// Starts queued runs of `pipeline` while it has fewer than its
/// `max_active_runs` running; their tasks without dependencies become ready.
fn promote(t: &mut dyn Tx, pipeline: &str, now: i64) -> Result<()> {
    let lock = if t.is_postgres() { "FOR UPDATE" } else { "" };
    let limit = t
        .query(&format!("SELECT max_active_runs FROM sluice_pipelines WHERE name = $1 {lock}"), &[V::from(pipeline)])?
        .first()
        .and_then(|r| r[0].int());
    let room = match limit {
        None => 1_000_000,
        Some(l) => {
            let running = first(&t.query(
                "SELECT COUNT(*) FROM sluice_runs WHERE pipeline = $1 AND status = 'running'",
                &[V::from(pipeline)],
            )?)
            .and_then(V::int)
            .unwrap_or(0);
            (l - running).max(0)
        }
    };
    if room == 0 {
        return Ok(());
    }
    let queued = t.query(
        "SELECT id FROM sluice_runs WHERE pipeline = $1 AND status = 'queued' ORDER BY queued_at, id LIMIT $2",
        &[V::from(pipeline), V::Int(room)],
    )?;
    for r in &queued {
        let id = r[0].string();
        t.exec(
            "UPDATE sluice_runs SET status = 'running', started_at = $2 WHERE id = $1",
            &[V::from(&id), V::Int(now)],
        )?;
        t.exec(
            "UPDATE sluice_tasks SET status = 'ready', next_try_at = $2 WHERE run_id = $1 AND status = 'waiting' AND deps = '[]'",
            &[V::from(&id), V::Int(now)],
        )?;
    }
    if !queued.is_empty() {
        t.notify()?;
    }
    Ok(())
}

/// Moves a run on after one of its tasks changed: what depends on a failed
/// step is `upstream_failed`; waiting tasks whose dependencies all succeeded
/// become ready (while the run runs); a run whose tasks are all done gets
/// its final status, once, and the pipeline's next queued run may start.
/// The caller holds the run's row lock.
fn advance(t: &mut dyn Tx, run_id: &str, pipeline: &str, failed: Option<&str>, running: bool, now: i64) -> Result<()> {
    struct Task {
        step: String,
        status: String,
        deps: Vec<String>,
        error: Option<String>,
    }
    let mut tasks: Vec<Task> = t
        .query(
            "SELECT step, status, deps, error FROM sluice_tasks WHERE run_id = $1 ORDER BY position",
            &[V::from(run_id)],
        )?
        .iter()
        .map(|r| Task {
            step: r[0].string(),
            status: r[1].string(),
            deps: r[2].text().and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default(),
            error: opt_s(&r[3]),
        })
        .collect();
    if let Some(f) = failed {
        let mut down: BTreeSet<String> = BTreeSet::new();
        let mut frontier = vec![f.to_string()];
        while let Some(x) = frontier.pop() {
            for task in &tasks {
                if task.deps.contains(&x) && down.insert(task.step.clone()) {
                    frontier.push(task.step.clone());
                }
            }
        }
        let msg = format!("upstream step `{f}` failed");
        for task in
            tasks.iter_mut().filter(|x| down.contains(&x.step) && (x.status == "waiting" || x.status == "ready"))
        {
            t.exec(
                "UPDATE sluice_tasks SET status = 'upstream_failed', finished_at = $3, error = $4 WHERE run_id = $1 AND step = $2",
                &[V::from(run_id), V::from(&task.step), V::Int(now), V::from(&msg)],
            )?;
            task.status = "upstream_failed".into();
            task.error = Some(msg.clone());
        }
    }
    if running {
        let done: BTreeSet<String> = tasks.iter().filter(|x| x.status == "success").map(|x| x.step.clone()).collect();
        let mut any = false;
        for task in tasks.iter_mut().filter(|x| x.status == "waiting" && x.deps.iter().all(|d| done.contains(d))) {
            t.exec(
                "UPDATE sluice_tasks SET status = 'ready', next_try_at = $3 WHERE run_id = $1 AND step = $2 AND status = 'waiting'",
                &[V::from(run_id), V::from(&task.step), V::Int(now)],
            )?;
            task.status = "ready".into();
            any = true;
        }
        if any {
            t.notify()?;
        }
    }
    if tasks.iter().any(|x| !TERMINAL.contains(&x.status.as_str())) {
        return Ok(());
    }
    let (status, error) = match tasks.iter().find(|x| x.status == "failed") {
        Some(x) => ("failed", Some(format!("step `{}`: {}", x.step, x.error.clone().unwrap_or_default()))),
        None if tasks.iter().all(|x| x.status == "success") => ("success", None),
        None => ("failed", Some("a step did not run".to_string())),
    };
    let n = t.exec(
        "UPDATE sluice_runs SET status = $2, finished_at = $3, error = $4 WHERE id = $1 AND status IN ('queued', 'running')",
        &[V::from(run_id), V::from(status), V::Int(now), V::from(error)],
    )?;
    if n > 0 {
        promote(t, pipeline, now)?;
    }
    Ok(())
}

/// A run as JSON for the API.
pub fn run_json(r: &RunRow) -> serde_json::Value {
    use crate::orchestrate::schedule::rfc3339;
    let t = |v: Option<i64>| v.map(rfc3339);
    // Event-triggered runs keep their event's id there (one run per event
    // batch); it is not a time.
    let timed = matches!(r.trigger.as_str(), "cron" | "every" | "backfill");
    let duration = match (r.started_at, r.finished_at) {
        (Some(s), Some(f)) => Some((f - s) as f64 / 1e6),
        _ => None,
    };
    json!({
        "id": r.id,
        "pipeline": r.pipeline,
        "status": r.status,
        "trigger": r.trigger,
        "logical_date": r.logical_date,
        "scheduled_for": if timed { t(r.scheduled_for) } else { None },
        "queued_at": rfc3339(r.queued_at),
        "started_at": t(r.started_at),
        "finished_at": t(r.finished_at),
        "duration_seconds": duration,
        "error": r.error,
        "params": r.params,
    })
}

impl From<Error> for Outcome {
    fn from(e: Error) -> Outcome {
        Outcome::Failure { error: e.chain(), retryable: e.retryable() }
    }
}
