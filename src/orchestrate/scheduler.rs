//! The scheduler: turns triggers into queued runs. One scheduler leads at a
//! time: on PostgreSQL it holds a session advisory lock (a second scheduler
//! is a hot standby that takes over when the leader's connection goes); on
//! SQLite it holds a lease row it renews. Each fire enqueues at most one run
//! even if two schedulers ever acted at once: a run records its trigger and
//! fire time under a unique index.
//!
//! - `cron` and `every` fire at their times (`schedule`), catching up on fires
//!   missed while no scheduler ran as the trigger's `catchup` says;
//! - `on_dataset` fires when a step of any pipeline updated the dataset (one
//!   run for all the events seen at once);
//! - `on_new_objects` fires when files appear under a folder of the project
//!   (one run for all the new files; they are listed in the run's `params`).
//!
//! Run starts are bounded by each pipeline's `max_active_runs` in the store.

use std::sync::Arc;
use std::time::Duration;

use super::log::log;
use super::runs::{Shared, new_run, pipeline_def};
use super::schedule::{Timing, due, rfc3339};
use super::worker::Shutdown;
use crate::error::Result;
use crate::project::{Catchup, TriggerKind};
use crate::state::{State, now_us};

/// Advisory lock key of the scheduler ("sluice-sched").
const LEADER_LOCK: i64 = 0x736c_7569_6365_7363;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub id: String,
    /// The longest the scheduler sleeps between looks.
    pub tick: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig { id: super::worker::default_id(), tick: Duration::from_secs(1) }
    }
}

/// Leadership, held while this scheduler may fire.
enum Leader {
    None,
    Advisory(crate::state::db::AdvisoryLock),
    Lease,
}

/// Runs the scheduler until `shutdown`.
pub fn run_scheduler(state: Arc<State>, project: Arc<Shared>, cfg: SchedulerConfig, shutdown: Shutdown) -> Result<()> {
    let who = format!("scheduler {}", cfg.id);
    log("info", &who, &format!("started on {}", state.describe()));
    let mut leader = Leader::None;
    let lease_ms = (cfg.tick.as_millis() as i64 * 10).max(5_000);
    while !shutdown.is_set() {
        // Leadership.
        let was = !matches!(leader, Leader::None);
        leader = match leader {
            Leader::Advisory(l) if l.held() => Leader::Advisory(l),
            Leader::Lease | Leader::None | Leader::Advisory(_) => match &state.db {
                crate::state::db::Db::Postgres(pg) => match pg.try_advisory_lock(LEADER_LOCK) {
                    Ok(Some(l)) => Leader::Advisory(l),
                    Ok(None) => Leader::None,
                    Err(e) => {
                        log("warn", &who, &format!("cannot reach the state store: {}", e.chain()));
                        Leader::None
                    }
                },
                crate::state::db::Db::Sqlite(_) => match state.try_lease("scheduler", &cfg.id, lease_ms) {
                    Ok(true) => Leader::Lease,
                    Ok(false) => Leader::None,
                    Err(e) => {
                        log("warn", &who, &format!("cannot reach the state store: {}", e.chain()));
                        Leader::None
                    }
                },
            },
        };
        let is = !matches!(leader, Leader::None);
        if is && !was {
            log("info", &who, "leading: this scheduler fires the triggers");
        } else if was && !is {
            log("warn", &who, "lost the lead; standing by");
        }
        let mut wait = cfg.tick;
        if is {
            if let Err(e) = project.refresh() {
                log("error", &who, &format!("the project has errors; keeping the previous version:\n{}", e.chain()));
            }
            match tick(&state, &project, now_us(), &who) {
                Ok(next) => {
                    if let Some(n) = next {
                        let until = (n - now_us()).max(0) as u64;
                        wait = wait.min(Duration::from_micros(until));
                    }
                }
                Err(e) => log("error", &who, &e.chain()),
            }
            if let Err(e) = state.reap() {
                log("warn", &who, &format!("cannot look for lost tasks: {}", e.chain()));
            }
        }
        shutdown.sleep(wait.max(Duration::from_millis(5)));
    }
    if matches!(leader, Leader::Lease) {
        let _ = state.release_lease("scheduler", &cfg.id);
    }
    log("info", &who, "stopped");
    Ok(())
}

/// One look at every trigger at time `now`; returns the earliest next fire.
pub fn tick(state: &State, project: &Shared, now: i64, who: &str) -> Result<Option<i64>> {
    let loaded = project.get();
    let p = &loaded.project;
    let defs: Vec<_> = p.pipelines.iter().map(|pl| pipeline_def(p, pl)).collect();
    state.sync_pipelines(&defs)?;
    let tz = p.timezone();
    let mut earliest: Option<i64> = None;
    for pl in &p.pipelines {
        for (i, trig) in pl.triggers.iter().enumerate() {
            let name = &pl.name.v;
            if let Some(timing) = Timing::of(trig, tz) {
                let timing = timing?;
                let key = timing.key(i);
                let next = state.schedule(name, &key)?.and_then(|s| s.0);
                let Some(next) = next else {
                    // A new schedule starts from now: nothing in the past fires.
                    let n = timing.next_after(now);
                    state.set_schedule(name, &key, n, None, None)?;
                    earliest = min(earliest, n);
                    continue;
                };
                let catchup = trig.catchup.unwrap_or(Catchup::Latest);
                let (fires, new_next) = due(&timing, next, now, catchup);
                let kind = match trig.kind {
                    TriggerKind::Cron { .. } => "cron",
                    _ => "every",
                };
                for f in &fires {
                    let run =
                        new_run(p, name, kind, timing.logical_date(*f, tz), Some(*f), serde_json::json!({}), false)?;
                    match state.enqueue(&run)? {
                        Some(id) => log("info", who, &format!("{name}: {kind} fire {} queued run {id}", rfc3339(*f))),
                        None => log("info", who, &format!("{name}: fire {} already has a run", rfc3339(*f))),
                    }
                }
                if next <= now && fires.is_empty() {
                    log("info", who, &format!("{name}: missed fires skipped (catchup = \"none\")"));
                }
                if new_next != Some(next) || !fires.is_empty() {
                    state.set_schedule(name, &key, new_next, fires.last().copied(), None)?;
                }
                earliest = min(earliest, new_next);
                continue;
            }
            match &trig.kind {
                TriggerKind::OnDataset(ds) => {
                    let key = format!("{i}:dataset:{}", ds.v);
                    let cursor = match state.schedule(name, &key)?.and_then(|s| s.1) {
                        Some(c) => c,
                        None => {
                            // Events before the trigger existed do not fire it.
                            let c = state.last_dataset_event()?;
                            state.set_schedule(name, &key, None, None, Some(c))?;
                            c
                        }
                    };
                    let events = state.dataset_events(cursor, &ds.v)?;
                    if let Some(last) = events.last().map(|e| e.0) {
                        let runs: Vec<&str> = events.iter().map(|e| e.2.as_str()).collect();
                        let params = serde_json::json!({ "dataset": ds.v, "updated_by_runs": runs });
                        let run = new_run(p, name, "dataset", super::runs::today(p), Some(last), params, false)?;
                        if let Some(id) = state.enqueue(&run)? {
                            log("info", who, &format!("{name}: dataset `{}` updated; queued run {id}", ds.v));
                        }
                        state.set_schedule(name, &key, None, Some(now), Some(last))?;
                    }
                }
                TriggerKind::OnNewObjects(url) if url.v.starts_with("s3://") => {
                    let poll = trig.poll.as_ref().map(|d| d.v.0).unwrap_or(DEFAULT_S3_POLL);
                    let n = s3_objects(state, p, name, i, &url.v, poll, now, who)?;
                    earliest = min(earliest, Some(n));
                }
                TriggerKind::OnNewObjects(prefix) => {
                    let key = format!("{i}:objects:{}", prefix.v);
                    let objects = list_objects(&p.dir, &prefix.v);
                    let fresh = state.new_objects(name, &key, &objects)?;
                    if !fresh.is_empty() {
                        let params = serde_json::json!({ "prefix": prefix.v, "objects": fresh });
                        let run = new_run(p, name, "objects", super::runs::today(p), None, params, false)?;
                        if let Some(id) = state.enqueue(&run)? {
                            log(
                                "info",
                                who,
                                &format!("{name}: {} new object(s) under {}; queued run {id}", fresh.len(), prefix.v),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(earliest)
}

/// How often an `on_new_objects` trigger lists an S3 prefix unless `poll` says.
pub const DEFAULT_S3_POLL: Duration = Duration::from_secs(60);

/// One look at an `on_new_objects` trigger on an S3 prefix: lists it when
/// its poll is due and queues one run for the objects (keys, or keys whose
/// ETag changed) it has not seen before. Returns when to list next. A
/// listing that fails is logged and tried at the next poll.
#[allow(clippy::too_many_arguments)]
fn s3_objects(
    state: &State,
    p: &crate::project::Project,
    name: &str,
    i: usize,
    url: &str,
    poll: Duration,
    now: i64,
    who: &str,
) -> Result<i64> {
    let shown = crate::secret::redact_url(url);
    let key = format!("{i}:objects:{shown}");
    let next = state.schedule(name, &key)?.and_then(|s| s.0);
    if let Some(n) = next
        && n > now
    {
        return Ok(n);
    }
    let next = now + poll.as_micros() as i64;
    let listed = match crate::sources::s3::list(url) {
        Ok(l) => l,
        Err(e) => {
            log("warn", who, &format!("{name}: cannot list {shown}: {}", e.chain()));
            state.set_schedule(name, &key, Some(next), None, None)?;
            return Ok(next);
        }
    };
    let (store, _, listed) = listed;
    let base = format!("s3://{}/{}", store.bucket(), store.prefix());
    let seen: Vec<String> = listed
        .iter()
        .map(|l| match &l.etag {
            Some(e) => format!("{base}{} {e}", l.key),
            None => format!("{base}{} {} {}", l.key, l.size, l.last_modified),
        })
        .collect();
    let fresh = state.new_objects(name, &key, &seen)?;
    let mut fired = None;
    if !fresh.is_empty() {
        let objects: Vec<&str> = fresh.iter().map(|o| o.split(' ').next().unwrap_or(o)).collect();
        let params = serde_json::json!({ "prefix": shown, "objects": objects });
        let run = new_run(p, name, "objects", super::runs::today(p), None, params, false)?;
        if let Some(id) = state.enqueue(&run)? {
            log("info", who, &format!("{name}: {} new object(s) under {shown}; queued run {id}", fresh.len()));
        }
        fired = Some(now);
    }
    state.set_schedule(name, &key, Some(next), fired, None)?;
    Ok(next)
}

fn min(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Files under a prefix of the project folder (`incoming/` or
/// `incoming/sales_`), relative to the project, sorted; hidden and
/// temporary files are left out (a file still being written is usually one).
pub fn list_objects(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    let (folder, stem) = match prefix.rfind('/') {
        Some(i) => (&prefix[..i], &prefix[i + 1..]),
        None => ("", prefix),
    };
    let base = dir.join(folder);
    let mut out = Vec::new();
    fn walk(d: &std::path::Path, rel: &str, out: &mut Vec<String>, depth: usize) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with('.') || n.ends_with(".tmp") || n.ends_with(".part") {
                continue;
            }
            let r = if rel.is_empty() { n.clone() } else { format!("{rel}/{n}") };
            match e.file_type() {
                Ok(t) if t.is_dir() && depth < 16 => walk(&e.path(), &r, out, depth + 1),
                Ok(t) if t.is_file() => out.push(r),
                _ => {}
            }
        }
    }
    walk(&base, folder, &mut out, 0);
    out.retain(|o| {
        let name = o.strip_prefix(folder).map(|x| x.trim_start_matches('/')).unwrap_or(o);
        name.starts_with(stem)
    });
    out.sort();
    out
}
