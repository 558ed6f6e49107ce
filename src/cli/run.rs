//! `sluice run [PIPELINE]`: runs a pipeline in this process.

use crate::error::{Error, Result};
use crate::orchestrate::local::{RunRequest, StepState, run_pipeline};
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
        Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|_| Error::user(format!("invalid --date \"{d}\": expected YYYY-MM-DD")))?
            .to_string(),
        None => chrono::Utc::now().with_timezone(&project.timezone()).date_naive().to_string(),
    };
    let store = storage::open(&project.storage_url()?, &project.dir)?;
    let screen = Screen::new();
    let run_id = uuid::Uuid::now_v7().to_string();
    let summary = run_pipeline(
        RunRequest {
            project: &project,
            plan: &plan,
            pipeline: &pipeline,
            only: a.steps.clone(),
            store,
            meters: screen.meters(),
            run_id,
            logical_date,
            full_refresh: a.full_refresh,
        },
        screen.as_ref(),
    )?;
    let failed = summary.steps.iter().filter(|s| matches!(s.state, StepState::Failed(_))).count();
    let skipped = summary.steps.iter().filter(|s| matches!(s.state, StepState::UpstreamFailed(_))).count();
    let n = summary.steps.len();
    let took = format_duration(summary.duration);
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
