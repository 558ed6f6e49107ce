//! The dbt-like commands: `sluice transform` (build models), `compile`,
//! `seed`, `snapshot` and `test`, each on a selection of the project's models.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use crate::error::{Error, Kind, Result};
use crate::plan::{NodeKind, Plan};
use crate::project::Project;
use crate::steps::data_tests::{self, Outcome};
use crate::steps::models::{
    BuildRequest, ModelResult, ModelState, WarehouseResolve, build, incremental_target, outside_run, render_node,
};
use crate::steps::nodes::{describe, failing_rows};
use crate::warehouse::{self, Warehouse};

use super::ProjectArgs;
use super::artifacts::{self, NodeRun};
use super::hooks::RunHooks;
use super::progress::format_duration;

/// Which nodes, on which connection.
#[derive(Debug, Clone, clap::Args)]
pub struct Selection {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// What to run: `name`, `name+` (and what depends on it), `+name` (and what it
    /// depends on), `tag:x`, `path:models/marts`; several are a union, `a,b` an intersection.
    #[arg(long, short = 's', num_args = 1.., value_name = "SELECTOR")]
    pub select: Vec<String>,
    /// What to leave out (same syntax as --select).
    #[arg(long, num_args = 1.., value_name = "SELECTOR")]
    pub exclude: Vec<String>,
    /// The connection to use (the project's default one otherwise).
    #[arg(long, short = 'c', value_name = "NAME")]
    pub connection: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct TransformArgs {
    #[command(flatten)]
    pub sel: Selection,
    /// Rebuild incremental models from scratch.
    #[arg(long)]
    pub full_refresh: bool,
    /// How many models to build at once ([models] threads, else 4).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub(super) fn open(sel: &Selection) -> Result<(Project, Plan)> {
    let (project, plan) = crate::plan::open_with(&sel.project.project, &sel.project.options())?;
    for w in project.warnings() {
        errln!("{w}");
    }
    Ok((project, plan))
}

/// Connects, and has Ctrl-C stop the connection's work on the server.
pub(super) fn connect(project: &Project, name: Option<&str>) -> Result<Box<dyn Warehouse>> {
    let url = project.connection_url(name)?;
    let wh = warehouse::connect(&url, &project.dir)?;
    super::cancel_on_signals().watch(wh.as_ref());
    Ok(wh)
}

/// Writes a file under the project's `target/`, whole, then renamed.
pub(super) fn write_target(project: &Project, rel: &str, bytes: &[u8]) -> Result<()> {
    let path = project.dir.join("target").join(rel);
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io("create folder", d, e))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("write", &path, e))
}

fn line(r: &ModelResult) -> String {
    let took = format_duration(r.duration);
    match &r.state {
        ModelState::Built { detail } => format!("{:<28} ok      {took:>7}  {detail}", r.name),
        ModelState::Failed(e) => {
            format!("{:<28} FAILED  {took:>7}\n  error: {}", r.name, super::indent_rest(&e.chain()))
        }
        ModelState::Skipped(dep) => format!("{:<28} skipped           (upstream `{dep}` failed)", r.name),
    }
}

pub fn transform(a: TransformArgs) -> Result<i32> {
    let started = Instant::now();
    let (project, plan) = open(&a.sel)?;
    let conn = a.sel.connection.clone();
    let connect = || connect(&project, conn.as_deref());
    let on_done = |r: &ModelResult| {
        outln!("{}", line(r));
    };
    let req = BuildRequest {
        project: &project,
        plan: &plan,
        select: a.sel.select.clone(),
        exclude: a.sel.exclude.clone(),
        full_refresh: a.full_refresh,
        threads: a.threads.or(project.config.models.threads).unwrap_or(4),
        run: outside_run(&project),
        cancel: super::cancel_on_signals(),
        connect: &connect,
        on_done: &on_done,
    };
    let mut hooks = RunHooks::start(&project, &plan, conn.as_deref(), None)?;
    let build_started = Instant::now();
    let results = if hooks.start_failed() { Vec::new() } else { build(&req)? };
    let build_wall = build_started.elapsed();
    let took = started.elapsed();
    let db: std::time::Duration = results.iter().map(|r| r.db_time).sum();
    // Sluice's own time: reading and planning the project, and each model's
    // build minus its time in the database (summed over threads).
    let own = took.saturating_sub(build_wall)
        + results.iter().map(|r| r.duration.saturating_sub(r.db_time)).sum::<std::time::Duration>();
    let built = results.iter().filter(|r| matches!(r.state, ModelState::Built { .. })).count();
    let failed = results.iter().filter(|r| matches!(r.state, ModelState::Failed(_))).count();
    let skipped = results.len() - built - failed;
    let runs: Vec<NodeRun> = results
        .iter()
        .map(|r| {
            let (status, msg) = match &r.state {
                ModelState::Built { detail } => ("success", detail.clone()),
                ModelState::Failed(e) => ("error", e.chain()),
                ModelState::Skipped(d) => ("skipped", format!("upstream `{d}` failed")),
            };
            let mut nr = NodeRun::ended(artifacts::node_id(&project, "model", &r.name), status, msg, r.duration);
            nr.extra.insert("materialized".into(), json!(r.materialized.name()));
            nr.extra.insert("database_time".into(), json!(r.db_time.as_secs_f64()));
            nr
        })
        .collect();
    let start_failed = hooks.start_failed();
    hooks.end(None, &runs)?;
    let (runs, hooks_code) = hooks.finish(runs, 0);
    let extra = json!({ "database_time": db.as_secs_f64(), "sluice_time": own.as_secs_f64(), "threads": req.threads });
    artifacts::write(&project, &plan, "transform", &runs, took, extra.as_object().cloned().unwrap_or_default())?;
    if results.is_empty() {
        if !start_failed {
            outln!("no models selected");
        }
        return Ok(hooks_code);
    }
    let mut summary = format!("{built} of {} models built in {}", results.len(), format_duration(took));
    summary.push_str(&format!(" (sluice {}, database {}", format_duration(own), format_duration(db)));
    if req.threads > 1 && db > took {
        summary.push_str(&format!(" over {} threads", req.threads));
    }
    summary.push(')');
    if failed > 0 || skipped > 0 {
        summary.push_str(&format!("; {failed} failed, {skipped} skipped"));
    }
    outln!("{summary}");
    Ok(match results.iter().find_map(|r| if let ModelState::Failed(e) = &r.state { Some(e.kind()) } else { None }) {
        Some(k) => k.exit_code(),
        None => hooks_code,
    })
}

#[derive(Debug, clap::Args)]
pub struct CompileArgs {
    #[command(flatten)]
    pub sel: Selection,
    /// Render incremental models as `transform --full-refresh` would build
    /// them (`is_incremental()` false), without asking the warehouse.
    #[arg(long)]
    pub full_refresh: bool,
}

/// Writes what `transform` would send for each selected model: rendered for
/// today in the project's zone, and with `is_incremental()` true for an
/// incremental model whose table exists (the warehouse is asked, as
/// `transform` does; not with `--full-refresh`).
pub fn compile(a: CompileArgs) -> Result<i32> {
    let (project, plan) = open(&a.sel)?;
    let url = project.connection_url(a.sel.connection.as_deref())?;
    let naming = warehouse::naming_for(&url);
    let renderer = crate::plan::renderer(&project).map_err(|(f, e)| Error::user(format!("{f}: {}", e.message)))?;
    let mut resolve = WarehouseResolve::new(&project, &plan.models, naming, outside_run(&project));
    // As dbt compile does, run_query() runs its queries.
    if crate::steps::models::uses_run_query(&project) {
        let conn = connect(&project, a.sel.connection.as_deref())
            .map_err(|e| e.context("the project calls run_query(), which needs the warehouse to compile"))?;
        resolve.queries = Some(std::sync::Mutex::new(conn));
    }
    let resolve = Arc::new(resolve);
    let chosen = crate::plan::select(&plan.models, &a.sel.select, &a.sel.exclude).map_err(Error::user)?;
    let mut wh: Option<Box<dyn Warehouse>> = None;
    let mut n = 0;
    for &i in plan.models.order.iter().filter(|i| chosen.contains(i)) {
        let node = &plan.models.nodes[i];
        if node.kind == NodeKind::Seed {
            continue;
        }
        let incremental = if node.materialized == crate::project::Materialized::Incremental && !a.full_refresh {
            let w = match wh.as_mut() {
                Some(w) => w,
                None => wh.insert(connect(&project, a.sel.connection.as_deref()).map_err(|e| {
                    e.context(format!(
                        "cannot tell whether incremental model `{}` adds to an existing table (use --full-refresh to compile it as a first build without connecting)",
                        node.name
                    ))
                })?),
            };
            incremental_target(w.as_mut(), node, false)?.is_some()
        } else {
            false
        };
        let sql = render_node(&project, &plan.models, &renderer, &resolve, i, incremental)?;
        write_target(&project, &format!("compiled/{}", node.path), sql.as_bytes())?;
        n += 1;
    }
    outln!(
        "compiled {} into {}",
        crate::steps::count(n, "file"),
        crate::project::show(&project.dir, Path::new("target/compiled"))
    );
    Ok(0)
}

pub fn seed(a: Selection) -> Result<i32> {
    let started = Instant::now();
    let (project, plan) = open(&a)?;
    let mut wh = connect(&project, a.connection.as_deref())?;
    let mut hooks = RunHooks::start(&project, &plan, a.connection.as_deref(), Some(wh.as_mut()))?;
    let run_id = uuid::Uuid::now_v7().to_string();
    let results = if hooks.start_failed() {
        Vec::new()
    } else {
        crate::steps::seeds::load_seeds(&project, &plan, wh.as_mut(), &a.select, &a.exclude, &run_id)?
    };
    let mut code = 0;
    for r in &results {
        match &r.result {
            Ok(rows) => outln!("{:<28} ok      {}", r.name, crate::steps::count(*rows, "row")),
            Err(e) => {
                outln!("{:<28} FAILED\n  error: {}", r.name, super::indent_rest(&e.chain()));
                code = e.kind().exit_code();
            }
        }
    }
    let runs: Vec<NodeRun> = results
        .iter()
        .map(|r| {
            let id = artifacts::node_id(&project, "seed", &r.name);
            match &r.result {
                Ok(rows) => NodeRun::ended(id, "success", crate::steps::count(*rows, "row"), Default::default()),
                Err(e) => NodeRun::ended(id, "error", e.chain(), Default::default()),
            }
        })
        .collect();
    hooks.end(Some(wh.as_mut()), &runs)?;
    let (runs, code) = hooks.finish(runs, code);
    artifacts::write(&project, &plan, "seed", &runs, started.elapsed(), Default::default())?;
    outln!("{} of {} seeds loaded", results.iter().filter(|r| r.result.is_ok()).count(), results.len());
    Ok(code)
}

pub fn snapshot(a: Selection) -> Result<i32> {
    let started = Instant::now();
    let (project, plan) = open(&a)?;
    let mut wh = connect(&project, a.connection.as_deref())?;
    let mut hooks = RunHooks::start(&project, &plan, a.connection.as_deref(), Some(wh.as_mut()))?;
    let now = chrono::Utc::now().timestamp_micros();
    let results = if hooks.start_failed() {
        Vec::new()
    } else {
        crate::steps::snapshots::run_snapshots(
            &project,
            &plan,
            wh.as_mut(),
            &a.select,
            &a.exclude,
            now,
            outside_run(&project),
        )?
    };
    let mut code = 0;
    for r in &results {
        match &r.result {
            Ok(what) => outln!("{:<28} ok      {what}", r.name),
            Err(e) => {
                outln!("{:<28} FAILED\n  error: {}", r.name, super::indent_rest(&e.chain()));
                code = e.kind().exit_code();
            }
        }
    }
    let runs: Vec<NodeRun> = results
        .iter()
        .map(|r| {
            let id = artifacts::node_id(&project, "snapshot", &r.name);
            match &r.result {
                Ok(what) => NodeRun::ended(id, "success", what.clone(), Default::default()),
                Err(e) => NodeRun::ended(id, "error", e.chain(), Default::default()),
            }
        })
        .collect();
    hooks.end(Some(wh.as_mut()), &runs)?;
    let (runs, code) = hooks.finish(runs, code);
    artifacts::write(&project, &plan, "snapshot", &runs, started.elapsed(), Default::default())?;
    outln!("{} of {} snapshots taken", results.iter().filter(|r| r.result.is_ok()).count(), results.len());
    Ok(code)
}

pub fn test(a: Selection) -> Result<i32> {
    let started = Instant::now();
    let (project, plan) = open(&a)?;
    let mut wh = connect(&project, a.connection.as_deref())?;
    let (_, cases) = data_tests::select_nodes_and_tests(&project, &plan, &a.select, &a.exclude)?;
    let mut hooks = RunHooks::start(&project, &plan, a.connection.as_deref(), Some(wh.as_mut()))?;
    let now = chrono::Utc::now().timestamp_micros();
    let cases = if hooks.start_failed() { Vec::new() } else { cases };
    let results = data_tests::run(&project, &plan, wh.as_mut(), cases, now, outside_run(&project))?;
    let mut runs = Vec::new();
    for r in &results {
        outln!("{}", describe(r));
        for l in failing_rows(r) {
            outln!("      {l}");
        }
        let status = match &r.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail { .. } if !r.is_error() => "warn",
            Outcome::Fail { .. } => "fail",
            Outcome::Error(_) => "error",
        };
        let failures = match &r.outcome {
            Outcome::Fail { count, .. } => *count,
            _ => 0,
        };
        let mut nr = NodeRun::ended(artifacts::test_id(&project, &r.case.name), status, describe(r), r.duration);
        nr.failures = Some(failures);
        runs.push(nr);
    }
    hooks.end(Some(wh.as_mut()), &runs)?;
    let (runs, hooks_code) = hooks.finish(runs, 0);
    artifacts::write(&project, &plan, "test", &runs, started.elapsed(), Default::default())?;
    let passed = results.iter().filter(|r| matches!(r.outcome, Outcome::Pass)).count();
    let errors = results.iter().filter(|r| r.is_error()).count();
    let warned = results.len() - passed - errors;
    outln!("tests: {passed} passed, {warned} warned, {errors} failed, in {}", format_duration(started.elapsed()));
    let sql_errors = results.iter().filter(|r| matches!(r.outcome, Outcome::Error(_))).count();
    Ok(if errors == 0 {
        hooks_code
    } else if sql_errors == errors {
        Kind::User.exit_code()
    } else {
        Kind::Data.exit_code()
    })
}
