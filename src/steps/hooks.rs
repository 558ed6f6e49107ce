//! dbt's `on-run-start` and `on-run-end` (from `dbt_project.yml`): each
//! statement rendered with the project's Jinja (macros, `target`, `var()`,
//! `env_var()`, `run_query()`; at the end also `schemas`,
//! `database_schemas` and `results`) and run in order on one connection.
//! The first that fails ends the list. This module does not print; the
//! command line reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::project::Project;
use crate::template::{Call, Resolve};
use crate::warehouse::Warehouse;

use super::models::WarehouseResolve;

/// Which of the two lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Start,
    End,
}

impl When {
    /// The key in `dbt_project.yml`.
    pub fn key(self) -> &'static str {
        match self {
            When::Start => "on-run-start",
            When::End => "on-run-end",
        }
    }
}

/// One hook that ran (or failed).
#[derive(Debug)]
pub struct HookResult {
    /// As dbt names it: `<project>-on-run-start-0`.
    pub name: String,
    /// The SQL sent, or why it could not render or run.
    pub outcome: Result<String>,
    pub duration: Duration,
}

/// Whether the project has hooks of this kind.
pub fn any(project: &Project, when: When) -> bool {
    !hooks(project, when).is_empty()
}

/// Whether the hooks (or the macros they may call) use `run_query()`: then
/// `run` wants a connection for its queries.
pub fn uses_run_query(project: &Project, when: When) -> bool {
    hooks(project, when).iter().any(|h| h.v.contains("run_query")) || super::models::uses_run_query(project)
}

fn hooks(project: &Project, when: When) -> &[crate::project::tree::Spanned<String>] {
    match when {
        When::Start => &project.run_hooks.start,
        When::End => &project.run_hooks.end,
    }
}

/// Runs the hooks of `when` on `wh`. `results` is what the command did to
/// each node (dbt's `results`, for `on-run-end`); `queries` is the
/// connection `run_query()` uses (see `uses_run_query`).
pub fn run(
    project: &Project,
    plan: &Plan,
    wh: &mut dyn Warehouse,
    when: When,
    results: serde_json::Value,
    run: crate::template::RunVars,
    queries: Option<Box<dyn Warehouse>>,
) -> Vec<HookResult> {
    let list = hooks(project, when);
    if list.is_empty() {
        return Vec::new();
    }
    let mut renderer = match crate::plan::renderer(project) {
        Ok(r) => r,
        Err((f, e)) => {
            return vec![HookResult {
                name: format!("{}-{}-0", project.name(), when.key()),
                outcome: Err(Error::user(format!("{f}: {}", e.message))),
                duration: Duration::ZERO,
            }];
        }
    };
    let mut resolve = WarehouseResolve::new(project, &plan.models, wh.naming(), run);
    resolve.queries = queries.map(std::sync::Mutex::new);
    if when == When::End {
        // The target's schema and the nodes' own (custom schemas).
        let (schema, database) =
            project.dbt.as_ref().map(|t| (t.schema.clone(), t.database.clone())).unwrap_or_default();
        let mut schemas = vec![schema];
        schemas.extend(resolve.schemas.iter().filter(|s| !schemas.contains(s)).cloned().collect::<Vec<_>>());
        let pairs: Vec<[&str; 2]> = schemas.iter().map(|s| [database.as_str(), s.as_str()]).collect();
        renderer.add_global("database_schemas", serde_json::json!(pairs));
        renderer.add_global("schemas", serde_json::json!(schemas));
        renderer.add_global("results", results);
    }
    let mut out = Vec::new();
    // As dbt, the nodes' schemas exist before on-run-start (and are there
    // to read, attached, on SQLite).
    if !resolve.schemas.is_empty()
        && let Err(e) = resolve.use_schema(wh, None)
    {
        out.push(HookResult {
            name: format!("{}-{}-0", project.name(), when.key()),
            outcome: Err(e.context("prepare the nodes' schemas for the hooks")),
            duration: Duration::ZERO,
        });
        return out;
    }
    let resolve: Arc<dyn Resolve> = Arc::new(resolve);
    for (i, hook) in list.iter().enumerate() {
        let t0 = Instant::now();
        let pos = project.sources.position(&hook.loc);
        let call =
            Call { resolve: resolve.clone(), this: String::new(), is_incremental: false, config: Default::default() };
        let outcome = renderer
            .render(crate::project::dbt::DBT_PROJECT_FILE, &hook.v, &call)
            .map_err(|e| Error::user(format!("{pos}: {} hook: {}", when.key(), e.message)))
            .and_then(|r| {
                let sql = r.sql.trim().to_string();
                if !sql.is_empty() {
                    wh.execute(&sql).map_err(|e| e.context(format!("{} hook ({pos}) `{sql}`", when.key())))?;
                }
                Ok(sql)
            });
        let failed = outcome.is_err();
        out.push(HookResult {
            name: format!("{}-{}-{i}", project.name(), when.key()),
            outcome,
            duration: t0.elapsed(),
        });
        if failed {
            break;
        }
    }
    out
}
