//! A dbt project's `on-run-start` and `on-run-end` around the commands that
//! run nodes (`build`, `transform`, `seed`, `snapshot`, `test`, `source
//! freshness`), as dbt runs them: a line for each hook, an `operation.…`
//! result in `run_results.json`, and when an `on-run-start` hook fails the
//! command's nodes are skipped (`on-run-end` still runs) and it fails.

use std::time::Instant;

use serde_json::json;

use crate::error::Result;
use crate::plan::Plan;
use crate::project::Project;
use crate::steps::hooks::{self, When};
use crate::steps::models::outside_run;
use crate::warehouse::Warehouse;

use super::artifacts::NodeRun;
use super::progress::format_duration;

/// The hooks of one command: what they did, and the exit code they ask for.
pub(super) struct RunHooks<'a> {
    project: &'a Project,
    plan: &'a Plan,
    connection: Option<String>,
    start: Vec<NodeRun>,
    end: Vec<NodeRun>,
    /// Non-zero once a hook failed.
    pub code: i32,
}

impl<'a> RunHooks<'a> {
    /// Runs `on-run-start` on `wh` (or on a connection of its own when
    /// `None`; none is opened when there are no hooks).
    pub fn start(
        project: &'a Project,
        plan: &'a Plan,
        connection: Option<&str>,
        wh: Option<&mut dyn Warehouse>,
    ) -> Result<Self> {
        let mut h = RunHooks {
            project,
            plan,
            connection: connection.map(str::to_string),
            start: Vec::new(),
            end: Vec::new(),
            code: 0,
        };
        h.start = h.run(When::Start, wh, serde_json::Value::Array(Vec::new()))?;
        Ok(h)
    }

    /// Whether an `on-run-start` hook failed: the command's nodes are then skipped.
    pub fn start_failed(&self) -> bool {
        self.code != 0
    }

    /// Runs `on-run-end`, which sees what the command did (`results`).
    pub fn end(&mut self, wh: Option<&mut dyn Warehouse>, done: &[NodeRun]) -> Result<()> {
        let results: Vec<serde_json::Value> = done
            .iter()
            .map(|r| {
                let mut parts = r.unique_id.splitn(3, '.');
                let kind = parts.next().unwrap_or_default();
                let name = r.unique_id.rsplit('.').next().unwrap_or_default();
                json!({
                    "unique_id": r.unique_id,
                    "status": r.status,
                    "message": r.message,
                    "failures": r.failures,
                    "execution_time": r.took.as_secs_f64(),
                    "node": { "unique_id": r.unique_id, "name": name, "resource_type": kind },
                })
            })
            .collect();
        self.end = self.run(When::End, wh, serde_json::Value::Array(results))?;
        Ok(())
    }

    /// The hooks' results around the nodes', in the order they ran, and the
    /// command's exit code (the nodes' `code`, else the hooks').
    pub fn finish(self, nodes: Vec<NodeRun>, code: i32) -> (Vec<NodeRun>, i32) {
        let mut all = self.start;
        all.extend(nodes);
        all.extend(self.end);
        (all, if code != 0 { code } else { self.code })
    }

    fn run(&mut self, when: When, wh: Option<&mut dyn Warehouse>, results: serde_json::Value) -> Result<Vec<NodeRun>> {
        if !hooks::any(self.project, when) {
            return Ok(Vec::new());
        }
        let mut own;
        let wh: &mut dyn Warehouse = match wh {
            Some(w) => w,
            None => {
                own = super::models::connect(self.project, self.connection.as_deref())?;
                own.as_mut()
            }
        };
        let queries = if hooks::uses_run_query(self.project, when) {
            Some(super::models::connect(self.project, self.connection.as_deref())?)
        } else {
            None
        };
        let t0 = Instant::now();
        let done = hooks::run(self.project, self.plan, wh, when, results, outside_run(self.project), queries);
        let mut runs = Vec::new();
        for h in done {
            let id = format!("operation.{}.{}", self.project.name(), h.name);
            let took = format_duration(h.duration);
            match h.outcome {
                Ok(sql) => {
                    outln!("{:<28} ok      {took:>7}", h.name);
                    runs.push(NodeRun::ended(id, "success", sql, h.duration));
                }
                Err(e) => {
                    outln!("{:<28} ERROR   {took:>7}\n  error: {}", h.name, super::indent_rest(&e.chain()));
                    if self.code == 0 {
                        self.code = e.kind().exit_code();
                    }
                    runs.push(NodeRun::ended(id, "error", e.chain(), h.duration));
                }
            }
        }
        if when == When::Start && self.code != 0 {
            outln!("skipping every node: an on-run-start hook failed");
        }
        tracing::debug!(took = ?t0.elapsed(), hooks = runs.len(), "{} hooks ran", when.key());
        Ok(runs)
    }
}
