//! `sluice run [PIPELINE]`: runs a pipeline in this process. The run is
//! recorded in the state store and held there under a lease the process
//! renews, so a killed `sluice run` is ended (`failed`) by the next process
//! that looks (a worker, the scheduler, another `sluice run`). Ctrl-C or
//! SIGTERM stops the running step and ends the run `cancelled` (exit 130);
//! a second signal exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::orchestrate::local::{LocalLease, Observer, RunRequest, StepResult, StepState, run_pipeline};
use crate::orchestrate::runs::{datasets_updated, new_run, open_state};
use crate::project::StepConfig;
use crate::state::{Outcome, State};
use crate::steps::{Cancel, StopReason};
use crate::storage;

use super::ProjectArgs;
use super::progress::{Screen, format_duration};

/// The exit status of a cancelled run (as for Ctrl-C).
pub const CANCELLED: i32 = 130;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// The pipeline to run (may be left out when the project has only one).
    pub pipeline: Option<String>,
    /// Run only this step (repeat for several); its dependencies must have run before.
    #[arg(long = "step", value_name = "STEP")]
    pub steps: Vec<String>,
    /// The date the run is for (YYYY-MM-DD); today in the project's time zone by default.
    #[arg(long, value_name = "DATE")]
    pub date: Option<String>,
    /// Rebuild incremental models from scratch.
    #[arg(long)]
    pub full_refresh: bool,
    /// How long the run's record is held without a heartbeat: if this process
    /// is killed, the run is ended as failed after this.
    #[arg(long, env = "SLUICE_LEASE", default_value = "30s", value_parser = crate::project::tree::parse_duration)]
    pub lease: Duration,
}

pub fn run(a: Args) -> Result<i32> {
    let (project, plan) = crate::plan::open_with(&a.project.project, &a.project.options())?;
    for w in project.warnings() {
        errln!("{w}");
    }
    let pipeline = match &a.pipeline {
        Some(p) => project.pipeline(p)?.name.v.clone(),
        None => project.only_pipeline()?.name.v.clone(),
    };
    let logical_date = match &a.date {
        Some(d) => crate::orchestrate::runs::parse_logical_date(d)
            .map_err(|e| Error::user(format!("invalid --date {e}")))?
            .to_string(),
        None => chrono::Utc::now().with_timezone(&project.timezone()).date_naive().to_string(),
    };
    let store = storage::open(&project.storage_url()?, &project.dir)?;
    let screen = Screen::new();
    let run_id = uuid::Uuid::now_v7().to_string();
    let owner = format!("sluice run {}", crate::orchestrate::worker::default_id());
    // The run is recorded in the state store, where the API and the
    // dashboard see it; a store that cannot be reached does not stop the run.
    let state = (|| -> Result<State> {
        let st = open_state(&project, None)?;
        // Runs of processes that died are ended before this one starts.
        let _ = st.reap();
        let mut run =
            new_run(&project, &pipeline, "cli", logical_date.clone(), None, serde_json::json!({}), a.full_refresh)?;
        if !a.steps.is_empty() {
            run.tasks.retain(|t| a.steps.contains(&t.step));
            for t in &mut run.tasks {
                t.deps.retain(|d| a.steps.contains(d));
            }
        }
        st.begin_local(&run_id, &run, &owner, a.lease.as_millis() as i64)?;
        Ok(st)
    })();
    let state = match state {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            errln!("warning: this run is not recorded in the state store: {}", e.chain());
            None
        }
    };
    let cancel = Cancel::default();
    {
        let (cancel, state, run_id) = (cancel.clone(), state.clone(), run_id.clone());
        super::on_signals(
            move || {
                errln!("stopping: the run is cancelled (a second Ctrl-C stops at once)");
                cancel.stop(StopReason::Cancelled);
            },
            move || {
                // Record the cancel if the store answers at once; the
                // lease ends the run otherwise.
                if let Some(st) = state {
                    let (tx, rx) = std::sync::mpsc::channel();
                    std::thread::spawn(move || {
                        let _ = tx.send(st.end_local(
                            &run_id,
                            "cancelled",
                            Some("cancelled; stopped at once by a second signal"),
                        ));
                    });
                    let _ = rx.recv_timeout(Duration::from_millis(500));
                }
            },
        );
    }
    let warned = Arc::new(AtomicBool::new(false));
    let warn = {
        let warned = warned.clone();
        move |e: &Error| {
            if !warned.swap(true, Ordering::SeqCst) {
                errln!("warning: cannot record the run in the state store: {}", e.chain());
            }
        }
    };
    let _lease = state
        .as_ref()
        .map(|st| LocalLease::start(st.clone(), run_id.clone(), owner.clone(), a.lease, cancel.clone(), warn.clone()));
    // Whatever happens below (a bug included), the run does not stay `running`.
    let mut guard = EndGuard { state: state.as_deref(), run_id: &run_id, ended: false };
    let recorder =
        Recorder { screen: screen.as_ref(), state: state.as_deref(), run_id: &run_id, owner: &owner, warn: &warn };
    let summary = run_pipeline(
        RunRequest {
            project: &project,
            plan: &plan,
            pipeline: &pipeline,
            only: a.steps.clone(),
            store,
            meters: screen.meters(),
            run_id: run_id.clone(),
            logical_date,
            full_refresh: a.full_refresh,
            cancel: cancel.clone(),
        },
        &recorder,
    );
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            if let Some(st) = &state {
                recorder.note(st.end_local(&run_id, "failed", Some(&e.chain())));
            }
            guard.ended = true;
            return Err(e);
        }
    };
    let failed = summary.steps.iter().filter(|s| matches!(s.state, StepState::Failed(_))).count();
    let skipped = summary.steps.iter().filter(|s| matches!(s.state, StepState::UpstreamFailed(_))).count();
    let n = summary.steps.len();
    let took = format_duration(summary.duration);
    if let Some(st) = &state {
        let err = match summary.status() {
            "cancelled" => Some("cancelled".to_string()),
            _ => summary.first_error().map(|e| e.chain()),
        };
        recorder.note(st.end_local(&summary.run_id, summary.status(), err.as_deref()));
    }
    guard.ended = true;
    if summary.cancelled() {
        let ran = summary.steps.iter().filter(|s| matches!(s.state, StepState::Success(_))).count();
        outln!(
            "pipeline `{}` cancelled: {ran} of {n} step{} succeeded (run {})",
            summary.pipeline,
            plural(n),
            summary.run_id
        );
        Ok(CANCELLED)
    } else if summary.ok() {
        outln!("pipeline `{}` succeeded: {n} step{} in {took} (run {})", summary.pipeline, plural(n), summary.run_id);
        Ok(0)
    } else {
        let mut what = format!("{failed} of {n} step{} failed", plural(n));
        if skipped > 0 {
            what.push_str(&format!(", {skipped} skipped"));
        }
        outln!("pipeline `{}` failed: {what} (run {})", summary.pipeline, summary.run_id);
        Ok(summary.first_error().map(|e| e.kind().exit_code()).unwrap_or(1))
    }
}

/// Ends the run `failed` if `run` returns (or unwinds) without ending it.
struct EndGuard<'a> {
    state: Option<&'a State>,
    run_id: &'a str,
    ended: bool,
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        if !self.ended
            && let Some(st) = self.state
        {
            let _ = st.end_local(self.run_id, "failed", Some("sluice run stopped unexpectedly (a bug in sluice)"));
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Shows the run on the screen and records it in the state store.
struct Recorder<'a> {
    screen: &'a dyn Observer,
    state: Option<&'a State>,
    run_id: &'a str,
    owner: &'a str,
    warn: &'a dyn Fn(&Error),
}

impl Recorder<'_> {
    fn note(&self, r: Result<()>) {
        if let Err(e) = r {
            (self.warn)(&e);
        }
    }
}

impl Observer for Recorder<'_> {
    fn started(&self, step: &StepConfig) {
        self.screen.started(step);
        if let Some(st) = self.state {
            self.note(st.local_started(self.run_id, &step.name.v, self.owner));
        }
    }

    fn finished(&self, step: &StepConfig, r: &StepResult) {
        self.screen.finished(step, r);
        let Some(st) = self.state else { return };
        let failure = |e: &Error| {
            let e = match e {
                Error::Context { context, source } if context.starts_with("step `") => source.as_ref(),
                e => e,
            };
            Outcome::Failure { error: e.chain(), retryable: e.retryable() }
        };
        let (status, outcome) = match &r.state {
            StepState::Success(o) => (
                "success",
                Some(Outcome::Success {
                    summary: o.summary.clone(),
                    output: serde_json::to_value(o).unwrap_or_default(),
                    datasets: datasets_updated(o),
                }),
            ),
            StepState::Failed(e) => ("failed", Some(failure(e))),
            StepState::UpstreamFailed(_) => ("upstream_failed", None),
            StepState::Cancelled(e) => ("cancelled", e.as_ref().map(failure)),
        };
        self.note(st.local_finished(self.run_id, &step.name.v, status, outcome.as_ref()));
    }
}
