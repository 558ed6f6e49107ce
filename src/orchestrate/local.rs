//! Runs one pipeline in this process: each step in the plan's order, a step
//! only when everything it depends on succeeded. A step past its `timeout`
//! is asked to stop, as on a worker; a cancelled run stops its running step
//! and starts no more. `LocalLease` holds the run's record in the state
//! store while the process lives, so a killed `sluice run` does not leave
//! its run `running` for ever.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::plan::Plan;
use crate::project::{Project, StepConfig};
use crate::state::State;
use crate::steps::{self, Cancel, MeterFactory, RunCtx, StepOutput, StopReason};
use crate::storage::Store;

/// How a step ended.
#[derive(Debug)]
pub enum StepState {
    Success(StepOutput),
    Failed(Error),
    /// Not run because a step it depends on did not succeed.
    UpstreamFailed(String),
    /// The run was cancelled: the step was stopped (with what it said
    /// then), or never started.
    Cancelled(Option<Error>),
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

    pub fn cancelled(&self) -> bool {
        self.steps.iter().any(|s| matches!(s.state, StepState::Cancelled(_)))
    }

    /// The run's final status: `success`, `failed` or `cancelled`.
    pub fn status(&self) -> &'static str {
        if self.cancelled() {
            "cancelled"
        } else if self.ok() {
            "success"
        } else {
            "failed"
        }
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
    /// Stops the run (Ctrl-C, SIGTERM, a cancel through the API).
    pub cancel: Cancel,
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
            _ if req.cancel.reason().is_some() => StepState::Cancelled(None),
            Some(dep) => StepState::UpstreamFailed(dep),
            None => {
                observer.started(step);
                run_one(&req, step)
            }
        };
        results[i] = Some(matches!(state, StepState::Success(_)));
        let r = StepResult { name: step.name.v.clone(), kind: step.kind.name(), state, duration: t0.elapsed() };
        observer.finished(step, &r);
        out.push(r);
    }
    Ok(RunSummary { run_id: req.run_id, pipeline: pl.name.v.clone(), steps: out, duration: started.elapsed() })
}

/// Runs one step on this thread while another watches it: a cancel of the
/// run, or the step's timeout, asks it to stop (and interrupts its queries
/// on their servers, again every second until it returns).
fn run_one(req: &RunRequest<'_>, step: &StepConfig) -> StepState {
    let cancel = Cancel::default();
    let ctx = RunCtx {
        project: req.project,
        plan: req.plan,
        run_id: req.run_id.clone(),
        logical_date: req.logical_date.clone(),
        store: req.store.clone(),
        meters: req.meters.clone(),
        full_refresh: req.full_refresh,
        cancel: cancel.clone(),
    };
    let timeout = step.timeout.as_ref().map(|t| t.0);
    let deadline = timeout.map(|t| Instant::now() + t);
    let done = AtomicBool::new(false);
    let res = std::thread::scope(|s| {
        s.spawn(|| {
            let mut stopped_at: Option<Instant> = None;
            let mut interrupts = 0u32;
            while !done.load(Ordering::SeqCst) {
                if let Some(why) = req.cancel.reason() {
                    cancel.stop(why);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    cancel.stop(StopReason::TimedOut);
                }
                if cancel.reason().is_some() {
                    let t = *stopped_at.get_or_insert_with(Instant::now);
                    if t.elapsed() >= Duration::from_secs(1) * (interrupts + 1) {
                        interrupts += 1;
                        cancel.interrupt();
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let r = steps::run_step(&ctx, req.pipeline, step);
        done.store(true, Ordering::SeqCst);
        r
    });
    match (res, cancel.reason()) {
        // A step that ran past its timeout failed, whatever it returned.
        (_, Some(StopReason::TimedOut)) => {
            StepState::Failed(steps::timed_out(timeout.unwrap_or_default()).context(format!("step `{}`", step.name.v)))
        }
        (Ok(o), _) => StepState::Success(o),
        (Err(e), Some(StopReason::Cancelled)) => StepState::Cancelled(Some(e)),
        (Err(e), _) => StepState::Failed(e),
    }
}

/// A local run's hold on its record in the state store: a thread renews
/// the run's lease (and passes on a cancel made through the API) and, like
/// every worker, ends the runs and tasks of processes that died. Dropping it
/// stops the thread.
pub struct LocalLease {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalLease {
    /// Holds run `run_id` for `owner`, renewing every third of `lease` (at
    /// most every second); `on_error` is told when the store cannot be reached.
    pub fn start(
        state: Arc<State>,
        run_id: String,
        owner: String,
        lease: Duration,
        cancel: Cancel,
        on_error: impl Fn(&Error) + Send + 'static,
    ) -> LocalLease {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("run-lease".into())
            .spawn(move || {
                let every = (lease / 3).clamp(Duration::from_millis(50), Duration::from_secs(1));
                while !flag.load(Ordering::SeqCst) {
                    match state.renew_local(&run_id, &owner, lease.as_millis() as i64) {
                        Ok(Some(status)) if status == "cancelled" => cancel.stop(StopReason::Cancelled),
                        Ok(_) => {}
                        Err(e) => on_error(&e),
                    }
                    let _ = state.reap();
                    let end = Instant::now() + every;
                    while Instant::now() < end && !flag.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
            .ok();
        LocalLease { stop, thread }
    }
}

impl Drop for LocalLease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
