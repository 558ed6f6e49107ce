//! `sql`: builds the selected models in dependency order (see `models`). A
//! model's SQL error names the model file and shows the database's message.

use serde_json::json;

use super::models::{BuildRequest, ModelState, build};
use super::{DatasetKind, DatasetUpdate, RunCtx, StepOutput};
use crate::error::Result;
use crate::project::SqlStep;

pub fn run(ctx: &RunCtx, cfg: &SqlStep) -> Result<StepOutput> {
    let mut select: Vec<String> = cfg.select.clone();
    if let Some(ms) = &cfg.models {
        select.extend(ms.iter().map(|m| m.v.clone()));
    }
    let connection = cfg.connection.as_ref().map(|c| c.v.clone());
    let meter = ctx.meter("building models", None);
    let done = std::sync::atomic::AtomicU64::new(0);
    let on_done = |r: &super::models::ModelResult| {
        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        meter.message(&r.name);
        meter.update(0, n);
    };
    let connect = || ctx.warehouse(connection.as_deref());
    let threads = cfg.threads.or(ctx.project.config.models.threads).unwrap_or(4);
    let req = BuildRequest {
        project: ctx.project,
        plan: ctx.plan,
        select,
        exclude: cfg.exclude.clone(),
        full_refresh: ctx.full_refresh,
        threads,
        run: ctx.run_vars(),
        cancel: ctx.cancel.clone(),
        connect: &connect,
        on_done: &on_done,
    };
    let results = build(&req)?;
    if results.is_empty() {
        return Ok(StepOutput { summary: "no models to build".into(), ..Default::default() });
    }
    let built: Vec<&str> =
        results.iter().filter(|r| matches!(r.state, ModelState::Built { .. })).map(|r| r.name.as_str()).collect();
    let details: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            let (status, detail) = match &r.state {
                ModelState::Built { detail } => ("success", detail.clone()),
                ModelState::Failed(e) => ("error", e.chain()),
                ModelState::Skipped(dep) => ("skipped", format!("upstream `{dep}` failed")),
            };
            json!({ "model": r.name, "status": status, "detail": detail, "seconds": r.duration.as_secs_f64(), "db_seconds": r.db_time.as_secs_f64() })
        })
        .collect();
    let failed = results.iter().filter(|r| matches!(r.state, ModelState::Failed(_))).count();
    if failed > 0 {
        let skipped = results.iter().filter(|r| matches!(r.state, ModelState::Skipped(_))).count();
        let mut msg = format!("{failed} of {} models failed", results.len());
        if skipped > 0 {
            msg.push_str(&format!(", {skipped} skipped"));
        }
        if !built.is_empty() {
            msg.push_str(&format!(" ({} built)", built.len()));
        }
        // The first failure, whole (its kind and database code decide the
        // exit code and whether a retry may help), under the step's summary.
        let first = results
            .into_iter()
            .find_map(|r| match r.state {
                ModelState::Failed(e) => Some(e),
                _ => None,
            })
            .expect("a model failed");
        return Err(first.context(msg));
    }
    let s = if built.len() == 1 { "" } else { "s" };
    Ok(StepOutput {
        summary: format!("built {} model{s}: {}", built.len(), built.join(", ")),
        rows: None,
        bytes: None,
        details: json!({ "models": details }),
        datasets: built.iter().map(|m| DatasetUpdate::new(*m, DatasetKind::Model)).collect(),
        objects: None,
    })
}
