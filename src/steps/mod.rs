//! The step kinds a pipeline is made of: ingest, load, sql, export. Each step
//! runs to completion on the calling (blocking) thread and is safe to run twice:
//! landing is idempotent by hash, loads publish in one transaction and record
//! what they loaded, models are rebuilt whole, exports are renamed into place.
//! Steps report progress through a `Meter`; they print nothing themselves.

pub mod clean;
pub mod command;
pub mod data_tests;
pub mod export;
pub mod freshness;
pub mod hooks;
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
use crate::warehouse::{self, Interrupt, Warehouse};

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
/// Work that waits on a server is stopped there too: each warehouse
/// connection a step opens is watched (`watch`), and stopping interrupts
/// what it runs on the server (PostgreSQL's cancel request, MariaDB's
/// `KILL QUERY`, SQLite's interrupt), so a stopped step ends at once instead
/// of after its query.
#[derive(Clone, Default)]
pub struct Cancel(Arc<CancelInner>);

#[derive(Default)]
struct CancelInner {
    why: std::sync::atomic::AtomicU8,
    /// The connections to interrupt; a connection that was dropped is gone.
    watched: std::sync::Mutex<Vec<std::sync::Weak<dyn Interrupt>>>,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Cancel").field(&self.reason()).finish()
    }
}

impl Cancel {
    /// Asks the step to stop (the first reason given is kept) and interrupts
    /// what its connections are running.
    pub fn stop(&self, why: StopReason) {
        let first = self
            .0
            .why
            .compare_exchange(0, why as u8, std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst)
            .is_ok();
        if first {
            self.interrupt();
        }
    }

    pub fn reason(&self) -> Option<StopReason> {
        match self.0.why.load(std::sync::atomic::Ordering::SeqCst) {
            1 => Some(StopReason::Cancelled),
            2 => Some(StopReason::TimedOut),
            3 => Some(StopReason::ShuttingDown),
            _ => None,
        }
    }

    /// Interrupts whatever each watched connection runs on its server now.
    /// Whoever stopped a step calls this again while the step has not
    /// returned: a query sent just after the first interrupt is stopped too.
    pub fn interrupt(&self) {
        let live: Vec<Arc<dyn Interrupt>> = {
            let mut w = self.0.watched.lock().expect("cancel lock");
            w.retain(|x| x.strong_count() > 0);
            w.iter().filter_map(|x| x.upgrade()).collect()
        };
        for i in live {
            i.interrupt();
        }
    }

    /// Watches a connection: stopping interrupts its work on the server. A
    /// connection opened after the stop is interrupted at once.
    pub fn watch(&self, conn: &dyn Warehouse) {
        let Some(i) = conn.interrupter() else { return };
        {
            let mut w = self.0.watched.lock().expect("cancel lock");
            w.retain(|x| x.strong_count() > 0);
            w.push(Arc::downgrade(&i));
        }
        if self.reason().is_some() {
            i.interrupt();
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

/// The error of a step stopped at its timeout (transient: a retry may pass).
pub fn timed_out(after: std::time::Duration) -> Error {
    Error::external(format!("timed out after {}s (the step's timeout)", after.as_secs_f64()), true)
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
        let wh = warehouse::connect(&url, &self.project.dir).with_context(|| format!("connection `{name}` ({url})"))?;
        self.cancel.watch(wh.as_ref());
        Ok(wh)
    }

    /// What templates rendered for this run see.
    pub fn run_vars(&self) -> crate::template::RunVars {
        crate::template::RunVars { logical_date: self.logical_date.clone(), run_id: self.run_id.clone() }
    }

    pub fn meter(&self, what: &str, total: Option<u64>) -> Arc<dyn Meter> {
        (self.meters)(what, total)
    }
}

/// What a step did, for the summary line and the run record. The typed
/// fields are what code acts on (`datasets` feed triggers and the run
/// record); `details` is for people and is never read back by key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StepOutput {
    /// One line for people: "loaded 1,000 rows into sales".
    pub summary: String,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    /// Step-specific facts (objects landed, models built, files written), for display.
    pub details: serde_json::Value,
    /// The datasets the step updated, in the order it updated them (not
    /// stored with the output: the run record keeps their names apart).
    #[serde(skip)]
    pub datasets: Vec<DatasetUpdate>,
    /// How many objects (files) the step landed, loaded or wrote, when it deals in objects.
    #[serde(skip)]
    pub objects: Option<u64>,
}

impl StepOutput {
    /// The names of the datasets the step updated.
    pub fn dataset_names(&self) -> Vec<String> {
        self.datasets.iter().map(|d| d.name.clone()).collect()
    }
}

/// A dataset a step updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetUpdate {
    pub name: String,
    pub kind: DatasetKind,
}

impl DatasetUpdate {
    pub fn new(name: impl Into<String>, kind: DatasetKind) -> Self {
        DatasetUpdate { name: name.into(), kind }
    }
}

/// What kind of dataset a step updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    /// A raw dataset in the object store: a published landing.
    Raw,
    /// A warehouse table written by a step (a load, a seed, a snapshot, a clean step's output).
    Table,
    /// A SQL model built in the warehouse.
    Model,
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
    // A step that was stopped fails because it was stopped, whatever its
    // interrupted query or child process said.
    let res = match res {
        Err(e) if ctx.cancel.reason().is_some() => Err(ctx.cancel.check().err().unwrap_or(e)),
        res => res,
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
