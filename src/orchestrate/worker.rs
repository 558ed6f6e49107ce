//! Workers: claim ready tasks from the state store and run them, `slots` at a
//! time. Each claimed task is held under a lease the worker renews with a
//! heartbeat; a worker that dies stops renewing, and the task goes to another
//! worker when the lease runs out. A step runs on its own thread so the slot
//! can enforce the step's `timeout` and pass on a cancel: the step is asked to
//! stop (between batches, between models; a command's process group gets
//! SIGTERM), and its attempt ends as timed out or cancelled.
//!
//! Shutdown (SIGTERM, SIGINT): the worker stops claiming, gives running tasks
//! `grace` to finish, then asks them to stop and hands them back to the store
//! so another worker picks them up at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::log::{log, log_task};
use super::runs::{Shared, datasets_updated};
use crate::error::{Error, Result};
use crate::state::{Claim, Outcome, State};
use crate::steps::{Cancel, RunCtx, StopReason};

/// How a worker works.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub id: String,
    pub slots: usize,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    /// How long running tasks get to finish on shutdown.
    pub grace: Duration,
    /// The longest an idle slot waits before looking for work again (a
    /// notification usually wakes it sooner).
    pub poll: Duration,
}

impl WorkerConfig {
    pub fn new(id: String, slots: usize) -> WorkerConfig {
        WorkerConfig {
            id,
            slots: slots.max(1),
            lease: Duration::from_secs(30),
            grace: Duration::from_secs(30),
            poll: Duration::from_secs(2),
        }
    }
}

/// A worker id: host name and process id, unique enough to tell workers apart.
pub fn default_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host = if host.is_empty() { "worker".to_string() } else { host };
    format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::now_v7().simple().to_string()[24..])
}

/// Asks long-running services to stop.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn begin(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// Sleeps up to `d`, waking early on shutdown.
    pub fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.is_set() {
            let now = Instant::now();
            if now >= end {
                break;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}

/// What runs on the worker now: a claim and its stop flag.
type Running = Arc<Mutex<HashMap<(String, String), (Claim, Cancel)>>>;

/// Results of this worker waiting for the store to answer again: while
/// there are some, its slots claim nothing new, so a result that comes back
/// is recorded before the worker takes more work.
type Unrecorded = Arc<std::sync::atomic::AtomicUsize>;

/// Runs an operation that must not be lost (a task's result, a hand-back):
/// while the store cannot be reached, tries again, waiting up to 5 seconds
/// between tries, for as long as it takes, counted in `waiting` meanwhile.
/// The store accepts a late result as long as nobody took the task
/// meanwhile (see `State::finish`).
fn persist<T>(who: &str, what: &str, waiting: &Unrecorded, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut delay = Duration::from_millis(100);
    let mut tries = 0u64;
    loop {
        match f() {
            Ok(v) => {
                if tries > 0 {
                    waiting.fetch_sub(1, Ordering::SeqCst);
                    log("info", who, &format!("the state store answers again: did {what}"));
                }
                return Ok(v);
            }
            Err(e) if e.retryable() => {
                if tries == 0 {
                    waiting.fetch_add(1, Ordering::SeqCst);
                }
                tries += 1;
                // Said at first, then about once a minute.
                if tries <= 3 || tries.is_multiple_of(12) {
                    log(
                        "warn",
                        who,
                        &format!("cannot {what} ({}); trying again until the state store answers", e.chain()),
                    );
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                if tries > 0 {
                    waiting.fetch_sub(1, Ordering::SeqCst);
                }
                return Err(e.context(format!("cannot {what}")));
            }
        }
    }
}

/// Runs a worker until `shutdown`; returns when every slot has stopped.
pub fn run_worker(state: Arc<State>, project: Arc<Shared>, cfg: WorkerConfig, shutdown: Shutdown) -> Result<()> {
    state.register_worker(&cfg.id, cfg.slots as u32)?;
    if let crate::state::db::Db::Postgres(pg) = &state.db {
        pg.listen(state.db.bell().clone())?;
    }
    let who = format!("worker {}", cfg.id);
    log("info", &who, &format!("started with {} slots on {}", cfg.slots, state.describe()));
    let running: Running = Arc::new(Mutex::new(HashMap::new()));
    let unrecorded: Unrecorded = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        // Heartbeat: renew leases, pass on cancels, pick up tasks of dead workers.
        let hb = {
            let (state, running, cfg, done, who) =
                (state.clone(), running.clone(), cfg.clone(), done.clone(), who.clone());
            s.spawn(move || {
                // Often enough that a cancel reaches a running step within a second.
                let every = (cfg.lease / 3).clamp(Duration::from_millis(50), Duration::from_secs(1));
                let mut last_reap = Instant::now();
                while !done.load(Ordering::SeqCst) {
                    match state.renew(&cfg.id, cfg.lease.as_millis() as i64) {
                        Ok(cancelled) => {
                            let r = running.lock().expect("running");
                            for key in cancelled {
                                if let Some((_, c)) = r.get(&key) {
                                    c.stop(StopReason::Cancelled);
                                }
                            }
                        }
                        Err(e) => log("warn", &who, &format!("cannot renew leases: {}", e.chain())),
                    }
                    if last_reap.elapsed() >= every {
                        last_reap = Instant::now();
                        match state.reap() {
                            Ok(0) => {}
                            Ok(n) => log("warn", &who, &format!("{n} task(s) of stopped workers made ready again")),
                            Err(e) => log("warn", &who, &format!("cannot look for lost tasks: {}", e.chain())),
                        }
                    }
                    let end = Instant::now() + every;
                    while Instant::now() < end && !done.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        };
        let slots: Vec<_> = (0..cfg.slots)
            .map(|_| {
                let (state, project, cfg, shutdown, running, who, unrecorded) = (
                    state.clone(),
                    project.clone(),
                    cfg.clone(),
                    shutdown.clone(),
                    running.clone(),
                    who.clone(),
                    unrecorded.clone(),
                );
                s.spawn(move || slot(&state, &project, &cfg, &shutdown, &running, &unrecorded, &who))
            })
            .collect();
        // Shutdown: after the grace period, ask what still runs to stop.
        let watcher = {
            let (running, cfg, shutdown, done) = (running.clone(), cfg.clone(), shutdown.clone(), done.clone());
            s.spawn(move || {
                while !shutdown.is_set() && !done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let deadline = Instant::now() + cfg.grace;
                while Instant::now() < deadline && !done.load(Ordering::SeqCst) {
                    if running.lock().expect("running").is_empty() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                for (_, (_, c)) in running.lock().expect("running").iter() {
                    c.stop(StopReason::ShuttingDown);
                }
            })
        };
        for sl in slots {
            let _ = sl.join();
        }
        done.store(true, Ordering::SeqCst);
        let _ = watcher.join();
        let _ = hb.join();
    });
    let _ = state.worker_stopped(&cfg.id);
    log("info", &who, "stopped");
    Ok(())
}

/// One slot: claim, run, record; until shutdown.
fn slot(
    state: &State,
    project: &Shared,
    cfg: &WorkerConfig,
    shutdown: &Shutdown,
    running: &Running,
    unrecorded: &Unrecorded,
    who: &str,
) {
    while !shutdown.is_set() {
        if unrecorded.load(Ordering::SeqCst) > 0 {
            shutdown.sleep(Duration::from_millis(100));
            continue;
        }
        let seen = state.bell_count();
        match state.claim(&cfg.id, cfg.lease.as_millis() as i64) {
            Ok(Some(c)) => run_task(state, project, cfg, running, unrecorded, who, c),
            Ok(None) => {
                // Wake on a notification, or look again after `poll`.
                let _ = state.wait(seen, cfg.poll);
            }
            Err(e) => {
                log("warn", who, &format!("cannot claim tasks: {}", e.chain()));
                shutdown.sleep(Duration::from_secs(1));
            }
        }
    }
}

fn run_task(
    state: &State,
    project: &Shared,
    cfg: &WorkerConfig,
    running: &Running,
    unrecorded: &Unrecorded,
    who: &str,
    c: Claim,
) {
    let key = (c.run_id.clone(), c.step.clone());
    let cancel = Cancel::default();
    running.lock().expect("running").insert(key.clone(), (c.clone(), cancel.clone()));
    log_task("info", who, Some((&c.run_id, &c.step)), &format!("attempt {} started", c.attempt));
    let started = Instant::now();
    let result = execute(project, &c, &cancel, cfg);
    running.lock().expect("running").remove(&key);
    let took = started.elapsed();
    let task = Some((c.run_id.as_str(), c.step.as_str()));
    // A task stopped by a shutdown goes back to the store for another worker.
    if cancel.reason() == Some(StopReason::ShuttingDown) && result.is_err() {
        log_task("warn", who, task, "handed back: the worker is shutting down");
        if let Err(e) = persist(who, "hand a task back", unrecorded, || state.hand_back(&c, "the worker shut down")) {
            log_task("error", who, task, &e.chain());
        }
        return;
    }
    let outcome = match result {
        Ok((summary, output, datasets)) => Outcome::Success { summary, output, datasets },
        // Stopped because its run was cancelled: the task is cancelled, not failed.
        Err(_) if cancel.reason() == Some(StopReason::Cancelled) => {
            Outcome::Cancelled { why: "stopped: the run was cancelled".into() }
        }
        // The task is the step: its name in front of the error says nothing more.
        Err(Error::Context { context, source }) if context.starts_with("step `") => Outcome::from(*source),
        Err(e) => Outcome::from(e),
    };
    match &outcome {
        Outcome::Success { summary, .. } => {
            log_task("info", who, task, &format!("succeeded in {:.3}s: {summary}", took.as_secs_f64()))
        }
        Outcome::Failure { error, .. } => log_task("error", who, task, &format!("failed: {error}")),
        Outcome::Cancelled { why } => log_task("warn", who, task, why),
    }
    match persist(who, "record a task's result", unrecorded, || state.finish(&c, &outcome)) {
        Ok(true) => {}
        Ok(false) => log_task("warn", who, task, "the lease expired before the task ended; its result was not used"),
        Err(e) => log_task("error", who, task, &e.chain()),
    }
}

/// The step's summary, output and updated datasets.
type Done = (String, serde_json::Value, Vec<String>);

/// Runs the claimed step on its own thread, enforcing its timeout.
fn execute(project: &Shared, c: &Claim, cancel: &Cancel, cfg: &WorkerConfig) -> Result<Done> {
    let loaded = {
        let mut l = project.get();
        let stale = l
            .project
            .pipeline(&c.pipeline)
            .map(|pl| super::runs::pipeline_hash(&l.project, pl) != c.definition_hash)
            .unwrap_or(true);
        if stale && project.refresh().unwrap_or(false) {
            l = project.get();
        }
        l
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let (claim, stop) = (c.clone(), cancel.clone());
    let thread = std::thread::Builder::new().name(format!("task-{}", c.step)).spawn(move || {
        let res = (|| -> Result<Done> {
            let pl = loaded.project.pipeline(&claim.pipeline)?;
            let step = pl.steps.iter().find(|s| s.name.v == claim.step).ok_or_else(|| {
                Error::user(format!("pipeline `{}` has no step `{}` any more", claim.pipeline, claim.step))
            })?;
            let ctx = RunCtx {
                project: &loaded.project,
                plan: &loaded.plan,
                run_id: claim.run_id.clone(),
                logical_date: claim.logical_date.clone(),
                store: loaded.store.clone(),
                meters: std::sync::Arc::new(|_: &str, _: Option<u64>| {
                    std::sync::Arc::new(crate::steps::NoMeter) as std::sync::Arc<dyn crate::steps::Meter>
                }),
                full_refresh: claim.full_refresh,
                cancel: stop.clone(),
            };
            stop.check()?;
            let out = crate::steps::run_step(&ctx, &claim.pipeline, step)?;
            let datasets = datasets_updated(&out);
            let output = serde_json::to_value(&out).unwrap_or_default();
            Ok((out.summary, output, datasets))
        })();
        let _ = tx.send(res);
    });
    if let Err(e) = thread {
        return Err(Error::external(format!("cannot start a thread for the task: {e}"), true));
    }
    let deadline = c.timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms.max(0) as u64));
    let mut stopped_at: Option<Instant> = None;
    let mut interrupts = 0u32;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(res) => {
                // A step that ran past its timeout failed, whatever it returned.
                return match cancel.reason() {
                    Some(StopReason::TimedOut) => Err(timed_out(c)),
                    _ => res,
                };
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::internal("the task's thread ended without a result"));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(d) = deadline
            && Instant::now() >= d
            && cancel.reason().is_none()
        {
            cancel.stop(StopReason::TimedOut);
        }
        if cancel.reason().is_some() {
            let t = *stopped_at.get_or_insert_with(Instant::now);
            // Again every second: a query the step sent just after the first
            // interrupt is stopped too.
            if t.elapsed() >= Duration::from_secs(1) * (interrupts + 1) {
                interrupts += 1;
                cancel.interrupt();
            }
            // A step that does not stop within the grace period is left
            // behind; its attempt ends now.
            if t.elapsed() > cfg.grace.max(Duration::from_secs(5)) {
                return Err(match cancel.reason() {
                    Some(StopReason::TimedOut) => timed_out(c),
                    _ => cancel.check().expect_err("stopped"),
                });
            }
        }
    }
}

fn timed_out(c: &Claim) -> Error {
    crate::steps::timed_out(Duration::from_millis(c.timeout_ms.unwrap_or(0).max(0) as u64))
}
