//! `sluice build`, as `dbt build`: seeds, models and snapshots in dependency
//! order, each node's tests right after it; a node that fails, or whose
//! error-severity test fails, has what depends on it skipped.
//!
//! Independent nodes run at once on up to `threads` threads (`--threads`,
//! the dbt profile's or `[models] threads`, else 4; SQLite always 1), each
//! with its own connection. A node starts once every selected node it
//! depends on, directly or through unselected ones, has ended with its
//! tests, and once the other nodes its tests read have ended too (and a
//! node reading a `source()` whose table is a seed or model of this run,
//! once that one has). Among the nodes ready at once, the one first in the project's order starts
//! first, so one thread runs them exactly in that order. Lines are printed
//! and results recorded (`run_results.json`) as nodes end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;

use crate::error::{Error, Kind, Result};
use crate::plan::{NodeKind, Plan};
use crate::project::{Project, TestKind};
use crate::steps::Cancel;
use crate::steps::data_tests::{self, Case, Outcome, TestCase};
use crate::steps::models::{BuildRequest, ModelResult, ModelState, build as build_models, outside_run};
use crate::steps::nodes::{describe, failing_rows};
use crate::template::RunVars;
use crate::warehouse::{Backend, Warehouse};

use super::artifacts::{self, NodeRun};
use super::hooks::RunHooks;
use super::models::{Selection, connect, open};
use super::progress::format_duration;

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub sel: Selection,
    /// Rebuild incremental models from scratch.
    #[arg(long)]
    pub full_refresh: bool,
    /// Stop at the first failure: what has not started yet is skipped.
    #[arg(long, short = 'x')]
    pub fail_fast: bool,
    /// How many nodes to run at once (the dbt profile's threads or [models]
    /// threads, else 4; always 1 on SQLite).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Default)]
struct Tally {
    pass: usize,
    warn: usize,
    error: usize,
    skip: usize,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.pass += o.pass;
        self.warn += o.warn;
        self.error += o.error;
        self.skip += o.skip;
    }
}

/// What a thread needs to run nodes and tests.
struct Ctx<'a> {
    project: &'a Project,
    plan: &'a Plan,
    run_vars: RunVars,
    run_id: String,
    full_refresh: bool,
    cancel: Cancel,
    connect: &'a (dyn Fn() -> Result<Box<dyn Warehouse>> + Sync),
}

/// One node for a thread: build it (unless ephemeral), then run `tests`;
/// `skipped` are its tests that read a node that failed.
struct Job {
    i: usize,
    tests: Vec<TestCase>,
    skipped: Vec<TestCase>,
}

/// How one node ended, with its tests.
struct Report {
    i: usize,
    /// Printed together, as the node ends.
    lines: Vec<String>,
    /// The node's result, then its tests'.
    runs: Vec<NodeRun>,
    tally: Tally,
    /// The node failed, or an error-severity test on it did (with the
    /// kind that sets the exit code): what depends on it is skipped.
    failed: Option<Kind>,
}

pub fn run(a: BuildArgs) -> Result<i32> {
    let started = Instant::now();
    let (project, plan) = open(&a.sel)?;
    let g = &plan.models;
    let (chosen, cases) = data_tests::select_nodes_and_tests(&project, &plan, &a.sel.select, &a.sel.exclude)?;
    // Each test runs after the last of the selected nodes it reads (a
    // relationships test reads its `to` model too).
    let pos: BTreeMap<&str, usize> = g.order.iter().enumerate().map(|(k, &i)| (g.nodes[i].name.as_str(), k)).collect();
    let mut after: BTreeMap<usize, Vec<(TestCase, Vec<usize>)>> = BTreeMap::new();
    let mut loose = Vec::new();
    for c in cases {
        let on: Vec<String> = match (&c.kind, &c.model) {
            (Case::Generic(TestKind::Relationships { to, .. }), Some(m)) => vec![m.clone(), to.clone()],
            (Case::Generic(_), Some(m)) => vec![m.clone()],
            (Case::Singular(k), _) => data_tests::refs_in(&project.sources.get(project.singular_tests[*k].file).text),
            _ => vec![],
        };
        let idx: Vec<usize> = on.iter().filter_map(|n| g.nodes.iter().position(|x| &x.name == n)).collect();
        let last = idx.iter().filter(|i| chosen.contains(i)).filter_map(|&i| pos.get(g.nodes[i].name.as_str())).max();
        match last {
            Some(&k) => after.entry(g.order[k]).or_default().push((c, idx)),
            // A test selected without the nodes it reads runs at the end.
            None => loose.push(c),
        }
    }
    let mut wh = connect(&project, a.sel.connection.as_deref())?;
    let mut hooks = RunHooks::start(&project, &plan, a.sel.connection.as_deref(), Some(wh.as_mut()))?;
    let threads = match wh.backend() {
        Backend::Sqlite => 1,
        _ => a.threads.or(project.config.models.threads).unwrap_or(4).max(1),
    };
    let conn = a.sel.connection.clone();
    let connect_again = || connect(&project, conn.as_deref());
    let ctx = Ctx {
        project: &project,
        plan: &plan,
        run_vars: outside_run(&project),
        run_id: uuid::Uuid::now_v7().to_string(),
        full_refresh: a.full_refresh,
        cancel: super::cancel_on_signals(),
        connect: &connect_again,
    };

    // The selected nodes in the project's order, and what each waits for:
    // the selected nodes it depends on (also through unselected ones), the
    // other nodes its tests read, and nodes whose table it reads as a source.
    // Every wait is on a node earlier in the order, so none is circular.
    // A failed on-run-start hook skips every node, as in dbt.
    let todo: Vec<usize> = if hooks.start_failed() {
        Vec::new()
    } else {
        g.order.iter().copied().filter(|i| chosen.contains(i)).collect()
    };
    let at: BTreeMap<usize, usize> = todo.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let mut ancestors: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    let mut waiters: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut left: BTreeMap<usize, usize> = BTreeMap::new();
    for (k, &i) in todo.iter().enumerate() {
        let anc: BTreeSet<usize> = g.dag.ancestors(i).into_iter().filter(|d| at.contains_key(d)).collect();
        let mut w = anc.clone();
        for (_, on) in after.get(&i).into_iter().flatten() {
            w.extend(on.iter().copied().filter(|d| *d != i && at.contains_key(d)));
        }
        // A source whose table is a node built earlier in this run (a seed
        // loaded as a source's table) is read after it, as when one node ran
        // at a time; it is no edge of the graph, so a failure there skips
        // nothing.
        for (src, table) in &g.nodes[i].sources {
            let Some(meta) = project.meta.sources.iter().find(|s| &s.name.v == src) else { continue };
            let ident = meta.identifier(table);
            w.extend(todo[..k].iter().copied().filter(|&j| g.nodes[j].name == ident));
        }
        for d in &w {
            waiters.entry(*d).or_default().push(i);
        }
        left.insert(i, w.len());
        ancestors.insert(i, anc);
    }
    // Nodes whose waits are over, by their place in the order.
    let mut ready: BTreeSet<(usize, usize)> =
        left.iter().filter(|(_, n)| **n == 0).map(|(&i, _)| (at[&i], i)).collect();
    let end = |i: usize, ready: &mut BTreeSet<(usize, usize)>, left: &mut BTreeMap<usize, usize>| {
        for &w in waiters.get(&i).into_iter().flatten() {
            let n = left.get_mut(&w).expect("every waiter is a selected node");
            *n -= 1;
            if *n == 0 {
                ready.insert((at[&w], w));
            }
        }
    };

    let mut t = Tally::default();
    let mut runs: Vec<NodeRun> = Vec::new();
    let mut code = 0;
    let fail = |code: &mut i32, k: Kind| {
        if *code == 0 {
            *code = k.exit_code();
        }
    };
    let mut stopped = false;
    let mut blocked: BTreeSet<usize> = BTreeSet::new();
    let mut ended = 0usize;
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<Result<Report>>();
    let threads = threads.min(todo.len()).max(1);
    let mut wh = std::thread::scope(|s| -> Result<Box<dyn Warehouse>> {
        let mut first = Some(wh);
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                let (job_rx, done_tx, ctx) = (job_rx.clone(), done_tx.clone(), &ctx);
                let mut conn = first.take();
                s.spawn(move || {
                    let name = format!("Thread-{}", k + 1);
                    loop {
                        let next = job_rx.lock().expect("job queue").recv();
                        let Ok(job) = next else { break };
                        let report = match conn.as_mut() {
                            Some(w) => Ok(w),
                            None => (ctx.connect)().map(|w| conn.insert(w)),
                        }
                        .and_then(|wh| work(ctx, wh.as_mut(), job, &name));
                        if done_tx.send(report).is_err() {
                            break;
                        }
                    }
                    conn
                })
            })
            .collect();
        drop(done_tx);
        let mut running = 0usize;
        loop {
            // Start what is ready, first in the order first; skip what
            // cannot run. After Ctrl-C nothing more starts (exit 130).
            while let Some(&(k, i)) = ready.first() {
                if ctx.cancel.reason().is_some() {
                    break;
                }
                let n = &g.nodes[i];
                // A node it depends on directly first, else one further up.
                let upstream = g.dag.deps[i]
                    .iter()
                    .find(|d| blocked.contains(d))
                    .or_else(|| ancestors[&i].iter().find(|d| blocked.contains(d)))
                    .map(|&d| g.nodes[d].name.clone());
                if stopped || upstream.is_some() {
                    let why = match &upstream {
                        Some(d) => format!("upstream `{d}` failed"),
                        None => "--fail-fast: an earlier node failed".to_string(),
                    };
                    outln!("{:<28} SKIP    ({why})", n.name);
                    let tests = after.remove(&i).unwrap_or_default();
                    t.skip += 1 + tests.len();
                    runs.push(NodeRun::ended(node_id(&project, n), "skipped", why.clone(), Default::default()));
                    for (c, _) in tests {
                        let id = artifacts::test_id(&project, &c.name);
                        runs.push(NodeRun::ended(id, "skipped", why.clone(), Default::default()));
                    }
                    blocked.insert(i);
                    ready.remove(&(k, i));
                    ended += 1;
                    end(i, &mut ready, &mut left);
                    continue;
                }
                if running == threads {
                    break;
                }
                // Tests reading a node that failed are skipped; the rest run after it.
                let (run_now, skipped): (Vec<_>, Vec<_>) = after
                    .remove(&i)
                    .unwrap_or_default()
                    .into_iter()
                    .partition(|(_, on)| on.iter().all(|d| !blocked.contains(d) || *d == i));
                let job = Job {
                    i,
                    tests: run_now.into_iter().map(|(c, _)| c).collect(),
                    skipped: skipped.into_iter().map(|(c, _)| c).collect(),
                };
                job_tx.send(job).map_err(|_| Error::internal("the build threads stopped"))?;
                ready.remove(&(k, i));
                running += 1;
            }
            if running == 0 {
                if ended < todo.len() && ctx.cancel.reason().is_none() {
                    return Err(Error::internal("sluice build: nodes left that wait for each other"));
                }
                break;
            }
            let r = done_rx.recv().map_err(|_| Error::internal("the build threads stopped"))??;
            running -= 1;
            for l in &r.lines {
                outln!("{l}");
            }
            t.add(&r.tally);
            runs.extend(r.runs);
            if let Some(kind) = r.failed {
                blocked.insert(r.i);
                fail(&mut code, kind);
                stopped = a.fail_fast;
            }
            ended += 1;
            end(r.i, &mut ready, &mut left);
        }
        drop(job_tx);
        let mut conns = handles.into_iter().filter_map(|h| h.join().ok().flatten());
        match conns.next() {
            Some(c) => Ok(c),
            None => connect_again(),
        }
    })?;
    if !loose.is_empty() && !stopped && !hooks.start_failed() && ctx.cancel.reason().is_none() {
        let results = data_tests::run(&project, &plan, wh.as_mut(), loose, now(), ctx.run_vars.clone())?;
        let mut r = Report { i: 0, lines: Vec::new(), runs: Vec::new(), tally: Tally::default(), failed: None };
        tests_ended(&project, &results, &mut r, "Thread-1");
        for l in &r.lines {
            outln!("{l}");
        }
        t.add(&r.tally);
        runs.extend(r.runs);
        if let Some(kind) = r.failed {
            fail(&mut code, kind);
        }
    }
    hooks.end(Some(wh.as_mut()), &runs)?;
    let (runs, code) = hooks.finish(runs, code);
    let extra = json!({ "threads": threads });
    let extra = extra.as_object().cloned().unwrap_or_default();
    artifacts::write(&project, &plan, "build", &runs, started.elapsed(), extra)?;
    let total = t.pass + t.warn + t.error + t.skip;
    outln!(
        "Done in {}. PASS={} WARN={} ERROR={} SKIP={} TOTAL={total}",
        format_duration(started.elapsed()),
        t.pass,
        t.warn,
        t.error,
        t.skip
    );
    Ok(code)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn node_id(project: &Project, n: &crate::plan::ModelNode) -> String {
    artifacts::node_id(project, n.kind.name(), &n.name)
}

/// `run` marked with the thread that ran it, as dbt's `thread_id`.
fn on_thread(mut run: NodeRun, thread: &str) -> NodeRun {
    run.extra.insert("thread_id".into(), json!(thread));
    run
}

/// Builds node `job.i` on `wh`, then runs its tests there.
fn work(ctx: &Ctx, wh: &mut dyn Warehouse, job: Job, thread: &str) -> Result<Report> {
    let (project, plan) = (ctx.project, ctx.plan);
    let n = &plan.models.nodes[job.i];
    let mut r = Report { i: job.i, lines: Vec::new(), runs: Vec::new(), tally: Tally::default(), failed: None };
    // Ephemeral models are not built: inlined where they are used, as dbt
    // does; their tests run all the same.
    let ephemeral = n.kind == NodeKind::Model && n.materialized == crate::project::Materialized::Ephemeral;
    if !ephemeral {
        let t0 = Instant::now();
        let built = build_node(ctx, wh, job.i)?;
        let took = t0.elapsed();
        match built {
            Ok(detail) => {
                r.lines.push(format!("{:<28} ok      {:>7}  {detail}", n.name, format_duration(took)));
                r.tally.pass += 1;
                r.runs.push(on_thread(NodeRun::ended(node_id(project, n), "success", detail, took), thread));
            }
            Err(e) => {
                r.lines.push(format!(
                    "{:<28} ERROR   {:>7}\n  error: {}",
                    n.name,
                    format_duration(took),
                    super::indent_rest(&e.chain())
                ));
                r.tally.error += 1;
                r.failed = Some(e.kind());
                r.runs.push(on_thread(NodeRun::ended(node_id(project, n), "error", e.chain(), took), thread));
                // Its tests are skipped with it.
                r.tally.skip += job.tests.len() + job.skipped.len();
                for c in job.tests.iter().chain(&job.skipped) {
                    let why = format!("`{}` failed", n.name);
                    r.runs.push(NodeRun::ended(
                        artifacts::test_id(project, &c.name),
                        "skipped",
                        why,
                        Default::default(),
                    ));
                }
                return Ok(r);
            }
        }
    }
    for c in job.skipped {
        r.tally.skip += 1;
        r.lines.push(format!("{:<28} SKIP    (a node it reads failed)", c.name));
        let why = "a node it reads failed".to_string();
        r.runs.push(NodeRun::ended(artifacts::test_id(project, &c.name), "skipped", why, Default::default()));
    }
    if !job.tests.is_empty() {
        let results = data_tests::run(project, plan, wh, job.tests, now(), ctx.run_vars.clone())?;
        tests_ended(project, &results, &mut r, thread);
    }
    Ok(r)
}

/// Records test results into `r`: their lines, results and tally; an
/// error-severity failure marks `r` failed.
fn tests_ended(project: &Project, results: &[data_tests::TestResult], r: &mut Report, thread: &str) {
    for res in results {
        r.lines.push(describe(res));
        for l in failing_rows(res) {
            r.lines.push(format!("      {l}"));
        }
        let status = match &res.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail { .. } if !res.is_error() => "warn",
            Outcome::Fail { .. } => "fail",
            Outcome::Error(_) => "error",
        };
        match status {
            "pass" => r.tally.pass += 1,
            "warn" => r.tally.warn += 1,
            _ => {
                r.tally.error += 1;
                r.failed = Some(Kind::Data);
            }
        }
        let mut nr = NodeRun::ended(artifacts::test_id(project, &res.case.name), status, describe(res), res.duration);
        nr.failures = Some(match &res.outcome {
            Outcome::Fail { count, .. } => *count,
            _ => 0,
        });
        r.runs.push(on_thread(nr, thread));
    }
}

/// Builds one seed, snapshot or model: `Ok(Err(e))` when the node failed
/// (its descendants are skipped), `Err` when the build cannot go on.
fn build_node(ctx: &Ctx, wh: &mut dyn Warehouse, i: usize) -> Result<std::result::Result<String, Error>> {
    let (project, plan) = (ctx.project, ctx.plan);
    let n = &plan.models.nodes[i];
    Ok(match n.kind {
        NodeKind::Seed => {
            let mut r =
                crate::steps::seeds::load_seeds(project, plan, wh, std::slice::from_ref(&n.name), &[], &ctx.run_id)?;
            match r.pop() {
                Some(s) => s.result.map(|rows| crate::steps::count(rows, "row")),
                None => Ok("loaded".into()),
            }
        }
        NodeKind::Snapshot => {
            let mut r = crate::steps::snapshots::run_snapshots(
                project,
                plan,
                wh,
                std::slice::from_ref(&n.name),
                &[],
                now(),
                ctx.run_vars.clone(),
            )?;
            match r.pop() {
                Some(s) => s.result,
                None => Ok("taken".into()),
            }
        }
        NodeKind::Model => {
            let on_done = |_: &ModelResult| {};
            let req = BuildRequest {
                project,
                plan,
                select: vec![n.name.clone()],
                exclude: vec![],
                full_refresh: ctx.full_refresh,
                threads: 1,
                run: ctx.run_vars.clone(),
                cancel: ctx.cancel.clone(),
                connect: ctx.connect,
                on_done: &on_done,
            };
            let mut r = build_models(&req)?;
            match r.pop().map(|m| m.state) {
                Some(ModelState::Built { detail }) => Ok(detail),
                Some(ModelState::Failed(e)) => Err(e),
                Some(ModelState::Skipped(d)) => Err(Error::user(format!("upstream `{d}` failed"))),
                // Ephemeral models are not built: they are inlined where used.
                None => Ok("ephemeral".into()),
            }
        }
    })
}
