//! `sluice build`, as `dbt build`: seeds, models and snapshots in dependency
//! order, each node's tests right after it; a node that fails, or whose
//! error-severity test fails, has what depends on it skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::error::Result;
use crate::plan::NodeKind;
use crate::steps::data_tests::{self, Case, Outcome, TestCase};
use crate::steps::models::{BuildRequest, ModelResult, ModelState, build as build_models, outside_run};
use crate::steps::nodes::{describe, failing_rows};

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
    /// Stop at the first failure: what is left is skipped.
    #[arg(long, short = 'x')]
    pub fail_fast: bool,
}

#[derive(Default)]
struct Tally {
    pass: usize,
    warn: usize,
    error: usize,
    skip: usize,
}

pub fn run(a: BuildArgs) -> Result<i32> {
    let started = Instant::now();
    let (project, plan) = open(&a.sel)?;
    let g = &plan.models;
    let (chosen, cases) = data_tests::select_nodes_and_tests(&project, &plan, &a.sel.select, &a.sel.exclude)?;
    // Each test runs after the last of the nodes it reads.
    let pos: BTreeMap<&str, usize> = g.order.iter().enumerate().map(|(k, &i)| (g.nodes[i].name.as_str(), k)).collect();
    let mut after: BTreeMap<usize, Vec<(TestCase, Vec<usize>)>> = BTreeMap::new();
    let mut loose = Vec::new();
    for c in cases {
        let on: Vec<String> = match (&c.kind, &c.model) {
            (Case::Generic(_), Some(m)) => vec![m.clone()],
            (Case::Singular(k), _) => data_tests::refs_in(&project.sources.get(project.singular_tests[*k].file).text),
            _ => vec![],
        };
        let idx: Vec<usize> = on.iter().filter_map(|n| g.nodes.iter().position(|x| &x.name == n)).collect();
        match idx.iter().filter_map(|&i| pos.get(g.nodes[i].name.as_str())).max() {
            // A test selected without its node runs at the end.
            Some(&k) if chosen.contains(&g.order[k]) => after.entry(g.order[k]).or_default().push((c, idx)),
            _ => loose.push(c),
        }
    }
    let mut wh = connect(&project, a.sel.connection.as_deref())?;
    let mut hooks = RunHooks::start(&project, &plan, a.sel.connection.as_deref(), Some(wh.as_mut()))?;
    // A failed on-run-start hook skips every node, as in dbt.
    let order: Vec<usize> = if hooks.start_failed() {
        Vec::new()
    } else {
        g.order.iter().filter(|i| chosen.contains(i)).copied().collect()
    };
    let conn = a.sel.connection.clone();
    let connect_again = || connect(&project, conn.as_deref());
    let run_vars = outside_run(&project);
    let run_id = uuid::Uuid::now_v7().to_string();
    let mut blocked: BTreeSet<usize> = BTreeSet::new();
    let mut stopped = false;
    let mut t = Tally::default();
    let mut runs: Vec<NodeRun> = Vec::new();
    let mut code = 0;
    let cancel = super::cancel_on_signals();
    let fail = |code: &mut i32, k: crate::error::Kind| {
        if *code == 0 {
            *code = k.exit_code();
        }
    };
    let run_tests = |tests: Vec<TestCase>,
                     wh: &mut dyn crate::warehouse::Warehouse,
                     t: &mut Tally,
                     runs: &mut Vec<NodeRun>|
     -> Result<bool> {
        let now = chrono::Utc::now().timestamp_micros();
        let results = data_tests::run(&project, &plan, wh, tests, now, run_vars.clone())?;
        let mut failed = false;
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
            match status {
                "pass" => t.pass += 1,
                "warn" => t.warn += 1,
                _ => {
                    t.error += 1;
                    failed = true;
                }
            }
            let mut nr = NodeRun::ended(artifacts::test_id(&project, &r.case.name), status, describe(r), r.duration);
            nr.failures = Some(match &r.outcome {
                Outcome::Fail { count, .. } => *count,
                _ => 0,
            });
            runs.push(nr);
        }
        Ok(failed)
    };
    for &i in &order {
        let n = &g.nodes[i];
        let id = artifacts::node_id(&project, n.kind.name(), &n.name);
        let tests: Vec<(TestCase, Vec<usize>)> = after.remove(&i).unwrap_or_default();
        let upstream = g.dag.deps[i].iter().find(|d| blocked.contains(d)).map(|&d| g.nodes[d].name.clone());
        if cancel.reason().is_some() {
            // Ctrl-C: nothing more starts; the command exits 130.
            break;
        }
        if stopped || upstream.is_some() {
            blocked.insert(i);
            let why = match &upstream {
                Some(d) => format!("upstream `{d}` failed"),
                None => "--fail-fast: an earlier node failed".to_string(),
            };
            outln!("{:<28} SKIP    ({why})", n.name);
            t.skip += 1 + tests.len();
            runs.push(NodeRun::ended(id, "skipped", why.clone(), Default::default()));
            for (c, _) in tests {
                runs.push(NodeRun::ended(
                    artifacts::test_id(&project, &c.name),
                    "skipped",
                    why.clone(),
                    Default::default(),
                ));
            }
            continue;
        }
        if n.kind == NodeKind::Model && n.materialized == crate::project::Materialized::Ephemeral {
            // Not built: inlined where it is used, as dbt does; its tests run after it.
            if !tests.is_empty()
                && run_tests(tests.into_iter().map(|(c, _)| c).collect(), wh.as_mut(), &mut t, &mut runs)?
            {
                blocked.insert(i);
                fail(&mut code, crate::error::Kind::Data);
                stopped = a.fail_fast;
            }
            continue;
        }
        let t0 = Instant::now();
        let ok: std::result::Result<String, crate::error::Error> = match n.kind {
            NodeKind::Seed => {
                let mut r = crate::steps::seeds::load_seeds(
                    &project,
                    &plan,
                    wh.as_mut(),
                    std::slice::from_ref(&n.name),
                    &[],
                    &run_id,
                )?;
                match r.pop() {
                    Some(s) => s.result.map(|rows| crate::steps::count(rows, "row")),
                    None => Ok("loaded".into()),
                }
            }
            NodeKind::Snapshot => {
                let now = chrono::Utc::now().timestamp_micros();
                let mut r = crate::steps::snapshots::run_snapshots(
                    &project,
                    &plan,
                    wh.as_mut(),
                    std::slice::from_ref(&n.name),
                    &[],
                    now,
                    run_vars.clone(),
                )?;
                match r.pop() {
                    Some(s) => s.result,
                    None => Ok("taken".into()),
                }
            }
            NodeKind::Model => {
                let on_done = |_: &ModelResult| {};
                let req = BuildRequest {
                    project: &project,
                    plan: &plan,
                    select: vec![n.name.clone()],
                    exclude: vec![],
                    full_refresh: a.full_refresh,
                    threads: 1,
                    run: run_vars.clone(),
                    cancel: cancel.clone(),
                    connect: &connect_again,
                    on_done: &on_done,
                };
                let mut r = build_models(&req)?;
                match r.pop().map(|m| m.state) {
                    Some(ModelState::Built { detail }) => Ok(detail),
                    Some(ModelState::Failed(e)) => Err(e),
                    Some(ModelState::Skipped(d)) => Err(crate::error::Error::user(format!("upstream `{d}` failed"))),
                    // Ephemeral models are not built: they are inlined where used.
                    None => Ok("ephemeral".into()),
                }
            }
        };
        let took = t0.elapsed();
        match ok {
            Ok(detail) => {
                outln!("{:<28} ok      {:>7}  {detail}", n.name, format_duration(took));
                t.pass += 1;
                runs.push(NodeRun::ended(id, "success", detail, took));
            }
            Err(e) => {
                outln!(
                    "{:<28} ERROR   {:>7}\n  error: {}",
                    n.name,
                    format_duration(took),
                    super::indent_rest(&e.chain())
                );
                t.error += 1;
                fail(&mut code, e.kind());
                runs.push(NodeRun::ended(id, "error", e.chain(), took));
                blocked.insert(i);
                stopped = a.fail_fast;
                // Its tests are skipped with it.
                t.skip += tests.len();
                for (c, _) in tests {
                    runs.push(NodeRun::ended(
                        artifacts::test_id(&project, &c.name),
                        "skipped",
                        format!("`{}` failed", n.name),
                        Default::default(),
                    ));
                }
                continue;
            }
        }
        // Tests on nodes that failed earlier are skipped; the rest run now.
        let (run_now, skipped): (Vec<_>, Vec<_>) =
            tests.into_iter().partition(|(_, on)| on.iter().all(|d| !blocked.contains(d) || *d == i));
        for (c, _) in skipped {
            t.skip += 1;
            outln!("{:<28} SKIP    (a node it reads failed)", c.name);
            runs.push(NodeRun::ended(
                artifacts::test_id(&project, &c.name),
                "skipped",
                "a node it reads failed".into(),
                Default::default(),
            ));
        }
        if !run_now.is_empty()
            && run_tests(run_now.into_iter().map(|(c, _)| c).collect(), wh.as_mut(), &mut t, &mut runs)?
        {
            blocked.insert(i);
            fail(&mut code, crate::error::Kind::Data);
            stopped = a.fail_fast;
        }
    }
    if !loose.is_empty() && !stopped && !hooks.start_failed() && run_tests(loose, wh.as_mut(), &mut t, &mut runs)? {
        fail(&mut code, crate::error::Kind::Data);
    }
    hooks.end(Some(wh.as_mut()), &runs)?;
    let (runs, code) = hooks.finish(runs, code);
    artifacts::write(&project, &plan, "build", &runs, started.elapsed(), Default::default())?;
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
