//! The `seed`, `snapshot` and `test` pipeline steps.

use serde_json::json;

use super::data_tests::{Outcome, TestResult};
use super::{DatasetKind, DatasetUpdate, RunCtx, StepOutput, count};
use crate::error::{Error, Kind, Result};
use crate::project::NodeStep;

pub fn seed(ctx: &RunCtx, cfg: &NodeStep) -> Result<StepOutput> {
    let mut wh = ctx.warehouse(cfg.connection.as_ref().map(|c| c.v.as_str()))?;
    let results = super::seeds::load_seeds(ctx.project, ctx.plan, wh.as_mut(), &cfg.select, &cfg.exclude, &ctx.run_id)?;
    let mut rows = 0;
    let mut names = Vec::new();
    for r in results {
        rows += r.result?;
        names.push(r.name);
    }
    Ok(StepOutput {
        summary: format!("loaded {} ({})", count(names.len() as u64, "seed"), count(rows, "row")),
        rows: Some(rows),
        bytes: None,
        datasets: names.iter().map(|n| DatasetUpdate::new(n.clone(), DatasetKind::Table)).collect(),
        details: json!({ "seeds": names }),
        objects: None,
    })
}

pub fn snapshot(ctx: &RunCtx, cfg: &NodeStep) -> Result<StepOutput> {
    let mut wh = ctx.warehouse(cfg.connection.as_ref().map(|c| c.v.as_str()))?;
    let now = chrono::Utc::now().timestamp_micros();
    let results = super::snapshots::run_snapshots(
        ctx.project,
        ctx.plan,
        wh.as_mut(),
        &cfg.select,
        &cfg.exclude,
        now,
        ctx.run_vars(),
    )?;
    let mut done = Vec::new();
    let mut datasets = Vec::new();
    for r in results {
        let what = r.result?;
        done.push(json!({ "snapshot": r.name, "detail": what }));
        datasets.push(DatasetUpdate::new(r.name, DatasetKind::Table));
    }
    Ok(StepOutput {
        summary: format!("took {}", count(done.len() as u64, "snapshot")),
        rows: None,
        bytes: None,
        details: json!(done),
        datasets,
        objects: None,
    })
}

/// One line per test result, for summaries and logs.
pub fn describe(r: &TestResult) -> String {
    let on = match (&r.case.model, &r.case.column) {
        (Some(m), Some(c)) => format!(" ({m}.{c})"),
        (Some(m), None) => format!(" ({m})"),
        _ => String::new(),
    };
    match &r.outcome {
        Outcome::Pass => format!("PASS  {}{on}", r.case.name),
        Outcome::Fail { count: n, detail, .. } => {
            let tag = if r.case.severity == crate::project::TestSeverity::Warn { "WARN" } else { "FAIL" };
            match detail {
                Some(d) => format!("{tag}  {}{on}: {d}", r.case.name),
                None => format!("{tag}  {}{on}: {}", r.case.name, count(*n, "failing row")),
            }
        }
        Outcome::Error(e) => format!("ERROR {}{on}: {}", r.case.name, e.chain()),
    }
}

/// The failing rows of a result, as an indented table.
pub fn failing_rows(r: &TestResult) -> Vec<String> {
    let Outcome::Fail { columns, rows, .. } = &r.outcome else { return Vec::new() };
    if rows.is_empty() {
        return Vec::new();
    }
    let mut out = vec![columns.join(" | ")];
    out.extend(rows.iter().map(|row| row.join(" | ")));
    out
}

pub fn test(ctx: &RunCtx, cfg: &NodeStep) -> Result<StepOutput> {
    let mut wh = ctx.warehouse(cfg.connection.as_ref().map(|c| c.v.as_str()))?;
    let cases = super::data_tests::collect(ctx.project, ctx.plan, &cfg.select, &cfg.exclude)?;
    let now = chrono::Utc::now().timestamp_micros();
    let results = super::data_tests::run(ctx.project, ctx.plan, wh.as_mut(), cases, now, ctx.run_vars())?;
    let passed = results.iter().filter(|r| matches!(r.outcome, Outcome::Pass)).count();
    let warned = results.iter().filter(|r| !r.is_error() && !matches!(r.outcome, Outcome::Pass)).count();
    let failed: Vec<&TestResult> = results.iter().filter(|r| r.is_error()).collect();
    let details: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            let (status, n) = match &r.outcome {
                Outcome::Pass => ("pass", 0),
                Outcome::Fail { count, .. } if r.case.severity == crate::project::TestSeverity::Warn => ("warn", *count),
                Outcome::Fail { count, .. } => ("fail", *count),
                Outcome::Error(_) => ("error", 0),
            };
            json!({ "test": r.case.name, "model": r.case.model, "column": r.case.column, "status": status, "failing_rows": n, "line": describe(r) })
        })
        .collect();
    let summary = format!("{} passed, {} warned, {} failed", passed, warned, failed.len());
    if !failed.is_empty() {
        let mut msg = format!("data tests failed: {summary}");
        for r in &failed {
            msg.push('\n');
            msg.push_str(&describe(r));
            for l in failing_rows(r) {
                msg.push_str("\n    ");
                msg.push_str(&l);
            }
        }
        let only_sql_errors = failed.iter().all(|r| matches!(r.outcome, Outcome::Error(_)));
        return Err(if only_sql_errors {
            match &failed[0].outcome {
                Outcome::Error(e) if e.kind() == Kind::External => Error::external(msg, e.retryable()),
                _ => Error::user(msg),
            }
        } else {
            Error::DataMsg(msg)
        });
    }
    Ok(StepOutput {
        summary: format!("tests: {summary}"),
        rows: None,
        bytes: None,
        details: json!({ "tests": details }),
        ..Default::default()
    })
}
