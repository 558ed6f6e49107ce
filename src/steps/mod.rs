//! The step kinds a pipeline is made of: ingest, load, sql, export. Each step
//! runs to completion on the calling (blocking) thread and is safe to run twice:
//! landing is idempotent by hash, loads publish in one transaction and record
//! what they loaded, models are rebuilt whole, exports are renamed into place.
//! Steps report progress through a `Meter`; they print nothing themselves.

pub mod clean;
pub mod command;
pub mod data_tests;
pub mod export;
pub mod ingest;
pub mod load;
pub mod models;
pub mod nodes;
pub mod seeds;
pub mod snapshots;
pub mod sql;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, ResultExt};
use crate::plan::Plan;
use crate::project::{Project, StepConfig, StepKind};
use crate::storage::Store;
use crate::warehouse::{self, Warehouse};

/// Progress of one long step: bytes and rows done so far.
pub trait Meter: Send + Sync {
    fn update(&self, bytes: u64, rows: u64);
    /// Says what is being worked on now (a file name).
    fn message(&self, _msg: &str) {}
}

/// A meter that shows nothing.
pub struct NoMeter;

impl Meter for NoMeter {
    fn update(&self, _bytes: u64, _rows: u64) {}
}

/// Makes a meter for a step, given what it works on and its total size if known.
pub type MeterFactory = Arc<dyn Fn(&str, Option<u64>) -> Arc<dyn Meter> + Send + Sync>;

/// Why a step is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled = 1,
    TimedOut = 2,
    ShuttingDown = 3,
}

/// A flag a running step checks between units of work (batches, models,
/// a child process's polls); set by the worker on cancel, timeout or shutdown.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<std::sync::atomic::AtomicU8>);

impl Cancel {
    pub fn stop(&self, why: StopReason) {
        let _ = self.0.compare_exchange(
            0,
            why as u8,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    pub fn reason(&self) -> Option<StopReason> {
        match self.0.load(std::sync::atomic::Ordering::SeqCst) {
            1 => Some(StopReason::Cancelled),
            2 => Some(StopReason::TimedOut),
            3 => Some(StopReason::ShuttingDown),
            _ => None,
        }
    }

    /// An error when the step should stop: a timeout and a shutdown may pass
    /// on a retry; a cancel is final.
    pub fn check(&self) -> Result<()> {
        match self.reason() {
            None => Ok(()),
            Some(StopReason::Cancelled) => Err(Error::user("stopped: the run was cancelled")),
            Some(StopReason::TimedOut) => Err(Error::external("stopped: the step ran past its timeout", true)),
            Some(StopReason::ShuttingDown) => Err(Error::external("stopped: the worker is shutting down", true)),
        }
    }
}

/// Everything a step needs from the run it belongs to.
pub struct RunCtx<'a> {
    pub project: &'a Project,
    pub plan: &'a Plan,
    pub run_id: String,
    /// The date the run is for (YYYY-MM-DD), in the project's time zone.
    pub logical_date: String,
    pub store: Store,
    pub meters: MeterFactory,
    /// Rebuild incremental models from scratch.
    pub full_refresh: bool,
    /// Set when the step should stop early.
    pub cancel: Cancel,
}

impl RunCtx<'_> {
    /// Connects to a step's warehouse (`None`: the project's default).
    pub fn warehouse(&self, connection: Option<&str>) -> Result<Box<dyn Warehouse>> {
        let name = connection.map(str::to_string).unwrap_or_else(|| self.project.default_connection());
        let url = self.project.connection_url(Some(&name))?;
        warehouse::connect(&url, &self.project.dir).with_context(|| format!("connection `{name}` ({url})"))
    }

    /// What templates rendered for this run see.
    pub fn run_vars(&self) -> crate::template::RunVars {
        crate::template::RunVars { logical_date: self.logical_date.clone(), run_id: self.run_id.clone() }
    }

    pub fn meter(&self, what: &str, total: Option<u64>) -> Arc<dyn Meter> {
        (self.meters)(what, total)
    }
}

/// What a step did, for the summary line and the run record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StepOutput {
    /// One line for people: "loaded 1,000 rows into sales".
    pub summary: String,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    /// Step-specific facts (objects landed, models built, files written).
    pub details: serde_json::Value,
}

/// Runs one step of a pipeline.
pub fn run_step(ctx: &RunCtx, pipeline: &str, step: &StepConfig) -> Result<StepOutput> {
    let res = match &step.kind {
        StepKind::Ingest(c) => ingest::run(ctx, step, c),
        StepKind::Load(c) => {
            let pl = ctx.project.pipeline(pipeline)?;
            load::run(ctx, pl, c)
        }
        StepKind::Sql(c) => sql::run(ctx, c),
        StepKind::Export(c) => export::run(ctx, c),
        StepKind::Seed(c) => nodes::seed(ctx, c),
        StepKind::Snapshot(c) => nodes::snapshot(ctx, c),
        StepKind::Test(c) => nodes::test(ctx, c),
        StepKind::Clean(c) => clean::run(ctx, c),
        StepKind::Command(c) => command::run(ctx, pipeline, step, c),
        StepKind::Empty => Ok(StepOutput { summary: "nothing to do".into(), ..Default::default() }),
    };
    res.map_err(|e: Error| e.context(format!("step `{}`", step.name.v)))
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 row`, `1,000 rows`.
pub fn count(n: u64, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{} {what}s", thousands(n)) }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 B");
    }
}
