//! Runs one pipeline in this process: each step in the plan's order, a step
//! only when everything it depends on succeeded.

use std::time::{Duration, Instant};

use crate::error::Error;
use crate::plan::Plan;
use crate::project::{Project, StepConfig};
use crate::steps::{self, MeterFactory, RunCtx, StepOutput};
use crate::storage::Store;

/// How a step ended.
#[derive(Debug)]
pub enum StepState {
    Success(StepOutput),
    Failed(Error),
    /// Not run because a step it depends on did not succeed.
    UpstreamFailed(String),
}

#[derive(Debug)]
pub struct StepResult {
    pub name: String,
    pub kind: &'static str,
    pub state: StepState,
    pub duration: Duration,
}

/// Told about each step as the run goes.
pub trait Observer {
    fn started(&self, _step: &StepConfig) {}
    fn finished(&self, step: &StepConfig, result: &StepResult);
}

/// The outcome of a run.
#[derive(Debug)]
pub struct RunSummary {
    pub run_id: String,
    pub pipeline: String,
    pub steps: Vec<StepResult>,
    pub duration: Duration,
}

impl RunSummary {
    pub fn ok(&self) -> bool {
        self.steps.iter().all(|s| matches!(s.state, StepState::Success(_)))
    }

    /// The first failure, for the exit code.
    pub fn first_error(&self) -> Option<&Error> {
        self.steps.iter().find_map(|s| match &s.state {
            StepState::Failed(e) => Some(e),
            _ => None,
        })
    }
}

/// What to run.
pub struct RunRequest<'a> {
    pub project: &'a Project,
    pub plan: &'a Plan,
    pub pipeline: &'a str,
    /// Run only these steps (in plan order); all when empty.
    pub only: Vec<String>,
    pub store: Store,
    pub meters: MeterFactory,
    pub run_id: String,
    pub logical_date: String,
    pub full_refresh: bool,
}

pub fn run_pipeline(req: RunRequest<'_>, observer: &dyn Observer) -> Result<RunSummary, Error> {
    let started = Instant::now();
    let pl = req.project.pipeline(req.pipeline)?;
    let graph = req.plan.pipeline(req.project, req.pipeline).expect("every pipeline has a graph");
    for s in &req.only {
        if !pl.steps.iter().any(|x| x.name.v == *s) {
            let names: Vec<&str> = pl.steps.iter().map(|x| x.name.v.as_str()).collect();
            let hint = crate::error::suggest(s, &names).map(|h| format!("; {h}")).unwrap_or_default();
            return Err(Error::user(format!("pipeline `{}` has no step `{s}`{hint}", pl.name.v)));
        }
    }
    let ctx = RunCtx {
        project: req.project,
        plan: req.plan,
        run_id: req.run_id.clone(),
        logical_date: req.logical_date.clone(),
        store: req.store.clone(),
        meters: req.meters.clone(),
        full_refresh: req.full_refresh,
        cancel: steps::Cancel::default(),
    };
    let mut results: Vec<Option<bool>> = vec![None; pl.steps.len()];
    let mut out = Vec::new();
    for &i in &graph.order {
        let step = &pl.steps[i];
        if !req.only.is_empty() && !req.only.contains(&step.name.v) {
            continue;
        }
        let blocked =
            graph.dag.deps[i].iter().find(|&&d| results[d] == Some(false)).map(|&d| pl.steps[d].name.v.clone());
        let t0 = Instant::now();
        let state = match blocked {
            Some(dep) => StepState::UpstreamFailed(dep),
            None => {
                observer.started(step);
                match steps::run_step(&ctx, req.pipeline, step) {
                    Ok(o) => StepState::Success(o),
                    Err(e) => StepState::Failed(e),
                }
            }
        };
        results[i] = Some(matches!(state, StepState::Success(_)));
        let r = StepResult { name: step.name.v.clone(), kind: step.kind.name(), state, duration: t0.elapsed() };
        observer.finished(step, &r);
        out.push(r);
    }
    Ok(RunSummary { run_id: req.run_id, pipeline: pl.name.v.clone(), steps: out, duration: started.elapsed() })
}
