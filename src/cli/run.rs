//! `sluice run [PIPELINE]`: runs a pipeline in this process.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::orchestrate::local::{Observer, RunRequest, StepResult, StepState, run_pipeline};
use crate::orchestrate::runs::{datasets_updated, new_run, open_state};
use crate::project::StepConfig;
use crate::state::{Outcome, State};
use crate::storage;

use super::ProjectArgs;
use super::progress::{Screen, format_duration};

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
}

pub fn run(a: Args) -> Result<i32> {
    let (project, plan) = crate::plan::open(&a.project.project)?;
    for w in project.warnings() {
        eprintln!("{w}");
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
    // The run is recorded in the state store, where the API and the
    // dashboard see it; a store that cannot be reached does not stop the run.
    let state = (|| -> Result<State> {
        let st = open_state(&project, None)?;
        let mut run =
            new_run(&project, &pipeline, "cli", logical_date.clone(), None, serde_json::json!({}), a.full_refresh)?;
        if !a.steps.is_empty() {
            run.tasks.retain(|t| a.steps.contains(&t.step));
            for t in &mut run.tasks {
                t.deps.retain(|d| a.steps.contains(d));
            }
        }
        st.begin_local(&run_id, &run)?;
        Ok(st)
    })();
    let state = match state {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("warning: this run is not recorded in the state store: {}", e.chain());
            None
        }
    };
    let recorder =
        Recorder { screen: screen.as_ref(), state: state.as_ref(), run_id: &run_id, warned: AtomicBool::new(false) };
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
        },
        &recorder,
    )?;
    let failed = summary.steps.iter().filter(|s| matches!(s.state, StepState::Failed(_))).count();
    let skipped = summary.steps.iter().filter(|s| matches!(s.state, StepState::UpstreamFailed(_))).count();
    let n = summary.steps.len();
    let took = format_duration(summary.duration);
    if let Some(st) = &state {
        let err = summary.first_error().map(|e| e.chain());
        recorder.note(st.end_local(&summary.run_id, summary.ok(), err.as_deref()));
    }
    if summary.ok() {
        println!("pipeline `{}` succeeded: {n} step{} in {took} (run {})", summary.pipeline, plural(n), summary.run_id);
        Ok(0)
    } else {
        let mut what = format!("{failed} of {n} step{} failed", plural(n));
        if skipped > 0 {
            what.push_str(&format!(", {skipped} skipped"));
        }
        println!("pipeline `{}` failed: {what} (run {})", summary.pipeline, summary.run_id);
        Ok(summary.first_error().map(|e| e.kind().exit_code()).unwrap_or(1))
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
    warned: AtomicBool,
}

impl Recorder<'_> {
    fn note(&self, r: Result<()>) {
        if let Err(e) = r
            && !self.warned.swap(true, Ordering::SeqCst)
        {
            eprintln!("warning: cannot record the run in the state store: {}", e.chain());
        }
    }
}

impl Observer for Recorder<'_> {
    fn started(&self, step: &StepConfig) {
        self.screen.started(step);
        if let Some(st) = self.state {
            self.note(st.local_started(self.run_id, &step.name.v));
        }
    }

    fn finished(&self, step: &StepConfig, r: &StepResult) {
        self.screen.finished(step, r);
        let Some(st) = self.state else { return };
        let (status, outcome) = match &r.state {
            StepState::Success(o) => (
                "success",
                Some(Outcome::Success {
                    summary: o.summary.clone(),
                    output: serde_json::to_value(o).unwrap_or_default(),
                    datasets: datasets_updated(step, o),
                }),
            ),
            StepState::Failed(e) => {
                let e = match e {
                    Error::Context { context, source } if context.starts_with("step `") => source.as_ref(),
                    e => e,
                };
                ("failed", Some(Outcome::Failure { error: e.chain(), retryable: e.retryable() }))
            }
            StepState::UpstreamFailed(_) => ("upstream_failed", None),
        };
        self.note(st.local_finished(self.run_id, &step.name.v, status, outcome.as_ref()));
    }
}
