//! Reads for dashboards and metrics: finished tasks' outputs of one kind
//! (a clean step's quality over time), and counts by status, durations and
//! rows for `/metrics`. Read-only; the SQL is the same on both backends.

use super::db::{V, first};
use super::{State, now_us};
use crate::error::Result;

/// A finished task's step details, with when and where it ran.
#[derive(Debug, Clone)]
pub struct TaskOutput {
    pub run_id: String,
    pub pipeline: String,
    pub step: String,
    pub finished_at: i64,
    pub output: serde_json::Value,
}

/// What `/metrics` reports from the store.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// (pipeline, status, runs)
    pub runs: Vec<(String, String, i64)>,
    /// (pipeline, status, tasks)
    pub tasks: Vec<(String, String, i64)>,
    /// Finished attempts: (pipeline, kind, bucket upper bounds' counts (cumulative), count, sum of seconds).
    pub durations: Vec<(String, String, Vec<i64>, i64, f64)>,
    /// Tasks ready to run now.
    pub queue_depth: i64,
    /// How late the most overdue schedule is, in seconds (0 when none is).
    pub scheduler_lag: f64,
    /// Workers that sent a heartbeat in the last minute.
    pub workers: i64,
    /// (table, rows loaded, rows rejected) by load tasks.
    pub rows: Vec<(String, i64, i64)>,
    /// (table, latest quality score) of clean steps.
    pub quality: Vec<(String, f64)>,
}

/// Upper bounds (seconds) of the task-duration histogram's buckets.
pub const DURATION_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0];

/// A task's recorded result's step details (`{"details": …}` as stored).
fn details(text: Option<&str>) -> serde_json::Value {
    let mut v: serde_json::Value = text.and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
    match v.get_mut("details") {
        Some(d) => d.take(),
        None => v,
    }
}

impl State {
    /// The latest successful outputs of tasks of `kind`, oldest first.
    pub fn task_outputs(&self, kind: &str, limit: u32) -> Result<Vec<TaskOutput>> {
        self.db.tx(|t| {
            let rows = t.query(
                "SELECT run_id, pipeline, step, finished_at, output FROM sluice_tasks \
                 WHERE kind = $1 AND status = 'success' AND finished_at IS NOT NULL \
                 ORDER BY finished_at DESC LIMIT $2",
                &[V::from(kind), V::Int(limit as i64)],
            )?;
            let mut out: Vec<TaskOutput> = rows
                .iter()
                .map(|r| TaskOutput {
                    run_id: r[0].string(),
                    pipeline: r[1].string(),
                    step: r[2].string(),
                    finished_at: r[3].int().unwrap_or(0),
                    output: details(r[4].text()),
                })
                .collect();
            out.reverse();
            Ok(out)
        })
    }

    /// Counts for `/metrics`.
    pub fn counts(&self) -> Result<Counts> {
        let now = now_us();
        self.db.tx(|t| {
            let mut c = Counts::default();
            let triple = |rows: Vec<Vec<V>>| -> Vec<(String, String, i64)> {
                rows.iter().map(|r| (r[0].string(), r[1].string(), r[2].int().unwrap_or(0))).collect()
            };
            c.runs = triple(t.query(
                "SELECT pipeline, status, COUNT(*) FROM sluice_runs GROUP BY pipeline, status ORDER BY pipeline, status",
                &[],
            )?);
            c.tasks = triple(t.query(
                "SELECT pipeline, status, COUNT(*) FROM sluice_tasks GROUP BY pipeline, status ORDER BY pipeline, status",
                &[],
            )?);
            let mut cases = String::new();
            for (i, b) in DURATION_BUCKETS.iter().enumerate() {
                cases.push_str(&format!(
                    ", CAST(SUM(CASE WHEN a.finished_at - a.started_at <= {} THEN 1 ELSE 0 END) AS BIGINT) AS b{i}",
                    (*b * 1e6) as i64
                ));
            }
            let rows = t.query(
                &format!(
                    "SELECT t.pipeline, t.kind, COUNT(*), CAST(SUM(a.finished_at - a.started_at) AS BIGINT){cases} \
                     FROM sluice_attempts a JOIN sluice_tasks t ON t.run_id = a.run_id AND t.step = a.step \
                     WHERE a.finished_at IS NOT NULL AND a.started_at IS NOT NULL \
                     GROUP BY t.pipeline, t.kind ORDER BY t.pipeline, t.kind"
                ),
                &[],
            )?;
            c.durations = rows
                .iter()
                .map(|r| {
                    let buckets = (0..DURATION_BUCKETS.len()).map(|i| r[4 + i].int().unwrap_or(0)).collect();
                    (r[0].string(), r[1].string(), buckets, r[2].int().unwrap_or(0), r[3].int().unwrap_or(0) as f64 / 1e6)
                })
                .collect();
            c.queue_depth = first(&t.query(
                "SELECT COUNT(*) FROM sluice_tasks WHERE status = 'ready' AND next_try_at <= $1",
                &[V::Int(now)],
            )?)
            .and_then(V::int)
            .unwrap_or(0);
            let oldest = first(&t.query(
                "SELECT MIN(next_fire_at) FROM sluice_schedules WHERE next_fire_at IS NOT NULL AND next_fire_at < $1",
                &[V::Int(now)],
            )?)
            .and_then(V::int);
            c.scheduler_lag = oldest.map(|o| (now - o) as f64 / 1e6).unwrap_or(0.0);
            c.workers = first(&t.query(
                "SELECT COUNT(*) FROM sluice_workers WHERE stopped_at IS NULL AND heartbeat_at > $1",
                &[V::Int(now - 60_000_000)],
            )?)
            .and_then(V::int)
            .unwrap_or(0);
            Ok(c)
        })
        .and_then(|mut c| {
            // Rows and quality come from task outputs (JSON), read in Rust so
            // the SQL stays the same on both backends.
            let mut rows: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
            for o in self.task_outputs("load", 100_000)? {
                let table = o.output["table"].as_str().unwrap_or("").to_string();
                let e = rows.entry(table).or_default();
                e.0 += o.output["loaded"].as_i64().unwrap_or(0);
                e.1 += o.output["rejected"].as_i64().unwrap_or(0);
            }
            c.rows = rows.into_iter().map(|(k, (a, b))| (k, a, b)).collect();
            let mut quality: std::collections::BTreeMap<String, f64> = Default::default();
            for o in self.task_outputs("clean", 10_000)? {
                let q = &o.output["quality"];
                if let (Some(table), Some(score)) = (q["table"].as_str(), q["score"].as_f64()) {
                    quality.insert(table.to_string(), score);
                }
            }
            c.quality = quality.into_iter().collect();
            Ok(c)
        })
    }

    /// The number of workers alive and tasks by status, for `sluice status`.
    /// Each: id, host, slots, heartbeat, stopped, pools (`*` for every pool).
    #[allow(clippy::type_complexity)]
    pub fn workers(&self) -> Result<Vec<(String, Option<String>, i64, i64, Option<i64>, String)>> {
        self.db.tx(|t| {
            Ok(t.query(
                "SELECT id, host, slots, heartbeat_at, stopped_at, pool FROM sluice_workers ORDER BY heartbeat_at DESC LIMIT 100",
                &[],
            )?
            .iter()
            .map(|r| {
                (
                    r[0].string(),
                    r[1].text().map(str::to_string),
                    r[2].int().unwrap_or(0),
                    r[3].int().unwrap_or(0),
                    r[4].int(),
                    r[5].string(),
                )
            })
            .collect())
        })
    }
}
