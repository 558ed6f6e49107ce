//! Versioned schema migrations of the state store, applied at start-up. Each
//! process that opens the store runs `migrate`; concurrent starts are safe:
//! PostgreSQL serializes them with a transaction-level advisory lock, SQLite
//! with `BEGIN IMMEDIATE`. A store newer than this binary is refused.

use super::db::{Db, Tx, V, first};
use crate::error::{Error, Result};

/// Advisory lock key of migrations ("sluice-migrate").
const LOCK: i64 = 0x736c_7569_6365_6d67;

/// The migrations, in order. `{id}` is an auto-increment primary key.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "runs, tasks, attempts, logs, datasets, schedules, workers",
        "
CREATE TABLE sluice_pipelines (
    name TEXT PRIMARY KEY,
    definition_hash TEXT NOT NULL,
    max_active_runs BIGINT,
    concurrency BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE TABLE sluice_runs (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    trigger TEXT NOT NULL,
    logical_date TEXT NOT NULL,
    scheduled_for BIGINT,
    queued_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    error TEXT,
    params TEXT,
    full_refresh BIGINT NOT NULL DEFAULT 0,
    definition_hash TEXT
);
CREATE UNIQUE INDEX sluice_runs_fire ON sluice_runs (pipeline, trigger, scheduled_for);
CREATE INDEX sluice_runs_pipeline ON sluice_runs (pipeline, status, queued_at);
CREATE INDEX sluice_runs_status ON sluice_runs (status, queued_at);
CREATE TABLE sluice_tasks (
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    kind TEXT NOT NULL,
    position BIGINT NOT NULL,
    deps TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0,
    lost BIGINT NOT NULL DEFAULT 0,
    retries BIGINT NOT NULL,
    retry_delay_ms BIGINT NOT NULL,
    retry_on TEXT NOT NULL,
    timeout_ms BIGINT,
    next_try_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    started_at BIGINT,
    finished_at BIGINT,
    error TEXT,
    summary TEXT,
    output TEXT,
    PRIMARY KEY (run_id, step)
);
CREATE INDEX sluice_tasks_ready ON sluice_tasks (status, next_try_at);
CREATE INDEX sluice_tasks_pipeline ON sluice_tasks (pipeline, status);
CREATE TABLE sluice_attempts (
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    worker TEXT,
    started_at BIGINT,
    finished_at BIGINT,
    status TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (run_id, step, attempt)
);
CREATE TABLE sluice_task_logs (
    id {id},
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX sluice_task_logs_task ON sluice_task_logs (run_id, step, id);
CREATE TABLE sluice_dataset_events (
    id {id},
    dataset TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE TABLE sluice_schedules (
    pipeline TEXT NOT NULL,
    trigger_key TEXT NOT NULL,
    next_fire_at BIGINT,
    last_fire_at BIGINT,
    cursor BIGINT,
    PRIMARY KEY (pipeline, trigger_key)
);
CREATE TABLE sluice_objects_seen (
    pipeline TEXT NOT NULL,
    trigger_key TEXT NOT NULL,
    object TEXT NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (pipeline, trigger_key, object)
);
CREATE TABLE sluice_workers (
    id TEXT PRIMARY KEY,
    host TEXT,
    pid BIGINT,
    slots BIGINT,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped_at BIGINT
);
CREATE TABLE sluice_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);
",
    ),
    (
        2,
        "API tokens and dashboard sessions",
        "
CREATE TABLE sluice_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE TABLE sluice_sessions (
    hash TEXT PRIMARY KEY,
    token_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
",
    ),
    (
        3,
        "worker pools: a task's pool, the pools a worker claims from",
        "
ALTER TABLE sluice_tasks ADD COLUMN pool TEXT NOT NULL DEFAULT 'default';
ALTER TABLE sluice_workers ADD COLUMN pool TEXT NOT NULL DEFAULT 'default';
CREATE INDEX sluice_tasks_pool ON sluice_tasks (pool, status)
",
    ),
    (
        4,
        "claiming reads ready tasks in claim order from an index of ready tasks only",
        // The claim's `ORDER BY next_try_at, run_id, position LIMIT 1` is
        // served in order by this index (the claim turns sorting off), so a
        // claim reads the first ready task it may take and stops, whatever
        // the planner estimates from statistics taken before a burst of
        // runs; it used to read and sort every ready task for each claim.
        // The (pool, status) index served no query and cost every update.
        "
DROP INDEX sluice_tasks_pool;
CREATE INDEX sluice_tasks_claim ON sluice_tasks (next_try_at, run_id, position) WHERE status = 'ready'
",
    ),
];

/// The schema version this binary writes.
pub fn latest() -> i64 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// Brings the store to the latest version; returns the versions applied.
pub fn migrate(db: &Db) -> Result<Vec<i64>> {
    let pg = db.is_postgres();
    db.tx(|t| {
        if pg {
            t.exec("SELECT pg_advisory_xact_lock($1)", &[V::Int(LOCK)])?;
        }
        t.exec(
            "CREATE TABLE IF NOT EXISTS sluice_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            &[],
        )?;
        let current =
            first(&t.query("SELECT COALESCE(MAX(version), 0) FROM sluice_schema", &[])?).and_then(V::int).unwrap_or(0);
        if current > latest() {
            return Err(Error::user(format!(
                "the state store {} is at schema version {current}, newer than this sluice knows ({}); upgrade sluice",
                db.describe(),
                latest()
            )));
        }
        let mut applied = Vec::new();
        for (version, _what, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            apply(t, sql, pg)?;
            t.exec(
                "INSERT INTO sluice_schema (version, applied_at) VALUES ($1, $2)",
                &[V::Int(*version), V::Int(super::now_us())],
            )?;
            applied.push(*version);
        }
        Ok(applied)
    })
}

fn apply(t: &mut dyn Tx, sql: &str, pg: bool) -> Result<()> {
    let id = if pg { "BIGSERIAL PRIMARY KEY" } else { "INTEGER PRIMARY KEY AUTOINCREMENT" };
    for stmt in sql.replace("{id}", id).split(';').map(str::trim).filter(|s| !s.is_empty()) {
        t.exec(stmt, &[])?;
    }
    Ok(())
}
