//! The long-running services and the scheduling commands: `serve`,
//! `scheduler`, `worker`, `api`, `next`, `backfill`.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::orchestrate::log::log;
use crate::orchestrate::runs::{Shared, new_run, open_state, open_state_pending, wait_for_state};
use crate::orchestrate::schedule::{Timing, backfill_fires, parse_time, rfc3339, show_in};
use crate::orchestrate::scheduler::{SchedulerConfig, run_scheduler};
use crate::orchestrate::worker::{Shutdown, WorkerConfig, default_id, run_worker};
use crate::project::TriggerKind;
use crate::state::{DEFAULT_POOL, Pools, RunFilter, State};

use super::ProjectArgs;

/// Where the state store is.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// The state store: sqlite://PATH or postgres://… ([state] url in sluice.toml, else .sluice/state.db).
    #[arg(long = "state", env = "SLUICE_STATE_URL", value_name = "URL", hide_env_values = true)]
    pub state: Option<String>,
}

/// How long a service waits for a state store that does not answer yet.
#[derive(Debug, Clone, clap::Args)]
pub struct StateWaitArgs {
    /// How long to wait for the state store at start (a server still
    /// starting, a database not created yet), trying again with backoff;
    /// 0 fails at once.
    #[arg(long = "state-wait", env = "SLUICE_STATE_WAIT", default_value = "5m", value_parser = parse_wait, value_name = "DURATION")]
    pub state_wait: Duration,
}

fn parse_wait(s: &str) -> std::result::Result<Duration, String> {
    if s.trim() == "0" { Ok(Duration::ZERO) } else { parse_dur(s) }
}

/// The health listener of the scheduler and worker roles.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// Answer GET /healthz (alive) and /readyz (the state store answers) on
    /// this address, for container health checks and Kubernetes probes
    /// (off when not given; the API role has both on --listen).
    #[arg(long = "health-addr", env = "SLUICE_HEALTH_ADDR", value_name = "HOST:PORT")]
    pub health_addr: Option<String>,
}

impl HealthArgs {
    fn start(&self, state: &Arc<State>, shutdown: &Shutdown, who: &str) -> Result<()> {
        match &self.health_addr {
            Some(addr) => crate::orchestrate::health::listen(addr, state.clone(), shutdown.clone(), who),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// The address the API listens on.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub listen: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Tasks this worker runs at once.
    #[arg(long, env = "SLUICE_WORKER_SLOTS", default_value_t = 4)]
    pub slots: usize,
    /// How long a claimed task is held without a heartbeat; a task of a worker
    /// that died is retried elsewhere after this.
    #[arg(long, env = "SLUICE_LEASE", default_value = "30s", value_parser = parse_dur)]
    pub lease: Duration,
    /// On SIGTERM, how long running tasks get to finish before they are handed back.
    #[arg(long, default_value = "30s", value_parser = parse_dur)]
    pub grace: Duration,
    /// This worker's id (default: host, process id and a random suffix).
    #[arg(long, env = "SLUICE_WORKER_ID")]
    pub id: Option<String>,
    /// The worker pool(s) whose tasks it claims (a step's or pipeline's
    /// `pool`); repeat or separate with commas. `sluice worker` claims the
    /// `default` pool when left out, `sluice serve` every pool.
    #[arg(long = "pool", env = "SLUICE_WORKER_POOL", value_delimiter = ',', value_name = "NAME")]
    pub pools: Vec<String>,
}

impl WorkerArgs {
    /// The worker's settings; `all` when no `--pool` is given claims every
    /// pool (the all-in-one `serve`), else the `default` pool.
    fn config(&self, all: bool) -> Result<WorkerConfig> {
        let mut c = WorkerConfig::new(self.id.clone().unwrap_or_else(default_id), self.slots);
        c.lease = self.lease;
        c.grace = self.grace;
        let pools: Vec<String> = self.pools.iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
        for p in &pools {
            if !crate::project::valid_name(p) {
                return Err(Error::user(format!(
                    "invalid pool name \"{p}\" for --pool: {}",
                    crate::project::NAME_RULE
                )));
            }
        }
        c.pools = if !pools.is_empty() {
            Pools::Only(pools)
        } else if all {
            Pools::All
        } else {
            Pools::Only(vec![DEFAULT_POOL.to_string()])
        };
        Ok(c)
    }
}

fn parse_dur(s: &str) -> std::result::Result<Duration, String> {
    crate::project::tree::parse_duration(s)
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub wait: StateWaitArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub wait: StateWaitArgs,
    /// The longest the scheduler sleeps between looks at the triggers.
    #[arg(long, default_value = "1s", value_parser = parse_dur)]
    pub tick: Duration,
    #[command(flatten)]
    pub health: HealthArgs,
}

#[derive(Debug, clap::Args)]
pub struct WorkerCmdArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub wait: StateWaitArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub health: HealthArgs,
}

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub state: StateArgs,
    #[command(flatten)]
    pub wait: StateWaitArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
}

#[derive(Debug, clap::Args)]
pub struct NextArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Only this pipeline's schedules.
    pub pipeline: Option<String>,
    /// Count from this time (YYYY-MM-DD[ HH:MM[:SS]] in the project's zone, or RFC 3339); now by default.
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// How many fires to show per schedule.
    #[arg(short = 'n', long, default_value_t = 5)]
    pub count: usize,
}

#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// The pipeline to backfill.
    pub pipeline: String,
    /// The first date (YYYY-MM-DD, in the project's zone).
    #[arg(long, value_name = "DATE")]
    pub from: String,
    /// The last date, included.
    #[arg(long, value_name = "DATE")]
    pub to: String,
    /// Only queue the runs (for running workers); do not run them here.
    #[arg(long)]
    pub no_wait: bool,
    /// Tasks run at once by the in-process worker.
    #[arg(long, default_value_t = 2)]
    pub slots: usize,
}

/// Stops `shutdown` on SIGTERM or SIGINT; a second signal exits at once.
fn on_signals(shutdown: Shutdown) {
    super::on_signals(
        move || {
            log("info", "sluice", "stopping (a second signal stops at once)");
            shutdown.begin();
        },
        || {},
    );
}

fn open(project: &ProjectArgs, state: &StateArgs) -> Result<(Arc<Shared>, Arc<State>)> {
    let shared = Shared::open(&project.project)?;
    let st = open_state(&shared.get().project, state.state.as_deref())?;
    Ok((Arc::new(shared), Arc::new(st)))
}

/// The project and the state store of a service, the store not reached yet.
fn open_service(project: &ProjectArgs, state: &StateArgs) -> Result<(Arc<Shared>, Arc<State>)> {
    let shared = Shared::open(&project.project)?;
    let st = open_state_pending(&shared.get().project, state.state.as_deref())?;
    Ok((Arc::new(shared), Arc::new(st)))
}

pub fn serve(a: ServeArgs) -> Result<i32> {
    let (project, state) = open_service(&a.project, &a.state)?;
    let shutdown = Shutdown::default();
    on_signals(shutdown.clone());
    let wcfg = a.worker.config(true)?;
    let res = std::thread::scope(|s| {
        // The API answers at once (/healthz, and /readyz 503 until the state
        // store does); the scheduler and the worker start once it answers.
        let work = {
            let (state, project, shutdown) = (state.clone(), project.clone(), shutdown.clone());
            s.spawn(move || -> Result<()> {
                let waited = wait_for_state(&state, a.wait.state_wait, "sluice", &shutdown);
                if waited.is_err() || shutdown.is_set() {
                    shutdown.begin();
                    return waited;
                }
                std::thread::scope(|s| {
                    let sched = {
                        let (state, project, shutdown) = (state.clone(), project.clone(), shutdown.clone());
                        s.spawn(move || run_scheduler(state, project, SchedulerConfig::default(), shutdown))
                    };
                    let worker = {
                        let (state, project, shutdown) = (state.clone(), project.clone(), shutdown.clone());
                        s.spawn(move || run_worker(state, project, wcfg, shutdown))
                    };
                    let w = worker.join().unwrap_or_else(|_| Err(Error::internal("the worker panicked")));
                    let sc = sched.join().unwrap_or_else(|_| Err(Error::internal("the scheduler panicked")));
                    w.and(sc)
                })
            })
        };
        let api = crate::serve::serve(state.clone(), project.clone(), &a.listen.listen, shutdown.clone());
        // The API returns on shutdown, or at once when it cannot listen.
        shutdown.begin();
        let w = work.join().unwrap_or_else(|_| Err(Error::internal("the scheduler or the worker panicked")));
        api.and(w)
    });
    res.map(|_| 0)
}

/// Waits for the state store, then runs `f`; the service ends quietly when
/// stopped while it waits.
fn when_ready(
    state: &State,
    wait: &StateWaitArgs,
    who: &str,
    shutdown: &Shutdown,
    f: impl FnOnce() -> Result<()>,
) -> Result<i32> {
    wait_for_state(state, wait.state_wait, who, shutdown)?;
    if shutdown.is_set() {
        return Ok(0);
    }
    f().map(|_| 0)
}

pub fn scheduler(a: SchedulerArgs) -> Result<i32> {
    let (project, state) = open_service(&a.project, &a.state)?;
    let shutdown = Shutdown::default();
    on_signals(shutdown.clone());
    let cfg = SchedulerConfig { tick: a.tick, ..SchedulerConfig::default() };
    a.health.start(&state, &shutdown, "scheduler")?;
    let st = state.clone();
    when_ready(&st, &a.wait, "scheduler", &shutdown.clone(), move || run_scheduler(state, project, cfg, shutdown))
}

pub fn worker(a: WorkerCmdArgs) -> Result<i32> {
    let (project, state) = open_service(&a.project, &a.state)?;
    let shutdown = Shutdown::default();
    on_signals(shutdown.clone());
    let st = state.clone();
    let cfg = a.worker.config(false)?;
    a.health.start(&state, &shutdown, "worker")?;
    when_ready(&st, &a.wait, "worker", &shutdown.clone(), move || run_worker(state, project, cfg, shutdown))
}

pub fn api(a: ApiArgs) -> Result<i32> {
    let (project, state) = open_service(&a.project, &a.state)?;
    let shutdown = Shutdown::default();
    on_signals(shutdown.clone());
    std::thread::scope(|s| {
        // The API answers at once; /readyz says 503 until the store answers,
        // and the API stops if it does not within the limit.
        let waiter = {
            let (state, shutdown) = (state.clone(), shutdown.clone());
            s.spawn(move || {
                let r = wait_for_state(&state, a.wait.state_wait, "api", &shutdown);
                if r.is_err() {
                    shutdown.begin();
                }
                r
            })
        };
        let served = crate::serve::serve(state.clone(), project, &a.listen.listen, shutdown.clone());
        shutdown.begin();
        let waited = waiter.join().unwrap_or_else(|_| Err(Error::internal("the wait for the state store panicked")));
        waited.and(served).map(|_| 0)
    })
}

pub fn next(a: NextArgs) -> Result<i32> {
    let (project, _) = crate::plan::open_with(&a.project.project, &a.project.options())?;
    let tz = project.timezone();
    let from = match &a.from {
        Some(f) => parse_time(f, tz)?,
        None => crate::state::now_us(),
    };
    let pipelines: Vec<_> = match &a.pipeline {
        Some(p) => vec![project.pipeline(p)?],
        None => project.pipelines.iter().collect(),
    };
    let mut any = false;
    for pl in pipelines {
        // Where its runs' steps go, when that is not only the default pool.
        let mut pools: Vec<&str> = pl.steps.iter().map(|s| crate::orchestrate::runs::pool_of(pl, s)).collect();
        pools.sort();
        pools.dedup();
        let pools = if pools == [DEFAULT_POOL] { String::new() } else { format!(" [pools: {}]", pools.join(", ")) };
        for t in &pl.triggers {
            any = true;
            match Timing::of(t, tz) {
                Some(timing) => {
                    let timing = timing?;
                    outln!("{}: {}{pools}", pl.name.v, timing.describe());
                    let mut at = from;
                    for _ in 0..a.count {
                        match timing.next_after(at) {
                            Some(n) => {
                                outln!("  {}  {}", rfc3339(n), show_in(n, timing.zone()));
                                at = n;
                            }
                            None => {
                                outln!("  (no more fires)");
                                break;
                            }
                        }
                    }
                }
                None => match &t.kind {
                    TriggerKind::OnDataset(d) => {
                        outln!("{}: when dataset `{}` is updated (by any pipeline's step){pools}", pl.name.v, d.v)
                    }
                    TriggerKind::OnNewObjects(o) => {
                        outln!(
                            "{}: when new files appear under `{}`{pools}",
                            pl.name.v,
                            crate::secret::redact_url(&o.v)
                        )
                    }
                    _ => {}
                },
            }
        }
    }
    if !any {
        outln!("no triggers: pipelines run when started (sluice run, the API or the dashboard)");
    }
    Ok(0)
}

pub fn backfill(a: BackfillArgs) -> Result<i32> {
    let (project, state) = open(&a.project, &a.state)?;
    let loaded = project.get();
    let p = &loaded.project;
    let tz = p.timezone();
    let pl = p.pipeline(&a.pipeline)?;
    let day = |flag: &str, s: &str| {
        crate::orchestrate::runs::parse_logical_date(s).map_err(|e| Error::user(format!("invalid {flag} {e}")))
    };
    let (from, to) = (day("--from", &a.from)?, day("--to", &a.to)?);
    if to < from {
        return Err(Error::user(format!("--to {to} is before --from {from}")));
    }
    // The fires of the pipeline's first time-based trigger whose logical
    // dates are in the range; without one, one run a day.
    let timing = pl.triggers.iter().find_map(|t| Timing::of(t, tz)).transpose()?;
    let fires: Vec<(i64, String)> = match &timing {
        Some(t) => backfill_fires(t, from, to, tz, 100_000),
        None => from
            .iter_days()
            .take_while(|d| *d <= to)
            .map(|d| Ok((parse_time(&d.to_string(), tz)?, d.to_string())))
            .collect::<Result<_>>()?,
    };
    if fires.is_empty() {
        outln!("no fires of `{}` between {from} and {to}", pl.name.v);
        return Ok(0);
    }
    let mut ids = Vec::new();
    for (f, date) in &fires {
        let run = new_run(p, &pl.name.v, "backfill", date.clone(), Some(*f), serde_json::json!({}), false)?;
        if let Some(id) = state.enqueue(&run)? {
            ids.push(id);
        }
    }
    let limit = pl.max_active_runs.map(|n| format!(", at most {n} at a time")).unwrap_or_default();
    outln!(
        "queued {} run(s) of `{}` for {from} … {to}{limit} ({} already queued before)",
        ids.len(),
        pl.name.v,
        fires.len() - ids.len()
    );
    if a.no_wait || ids.is_empty() {
        return Ok(0);
    }
    // Run them here with a worker of our own, until each has finished.
    let shutdown = Shutdown::default();
    on_signals(shutdown.clone());
    let mut cfg = WorkerConfig::new(default_id(), a.slots);
    cfg.poll = Duration::from_millis(200);
    cfg.pools = Pools::All;
    let failed = std::thread::scope(|s| -> Result<usize> {
        let w = {
            let (state, project, shutdown) = (state.clone(), project.clone(), shutdown.clone());
            s.spawn(move || run_worker(state, project, cfg, shutdown))
        };
        let mut reported = std::collections::BTreeSet::new();
        let mut failed = 0;
        while reported.len() < ids.len() && !shutdown.is_set() {
            let rows =
                state.runs(&RunFilter { pipeline: Some(pl.name.v.clone()), status: None, limit: Some(10_000) })?;
            for r in rows.iter().filter(|r| ids.contains(&r.id)) {
                if matches!(r.status.as_str(), "success" | "failed" | "cancelled") && reported.insert(r.id.clone()) {
                    if r.status != "success" {
                        failed += 1;
                    }
                    let err = r.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
                    outln!("{} {:<9} run {}{err}", r.logical_date, r.status, r.id);
                }
            }
            shutdown.sleep(Duration::from_millis(200));
        }
        shutdown.begin();
        w.join().unwrap_or_else(|_| Err(Error::internal("the worker panicked")))?;
        Ok(failed)
    })?;
    outln!("backfill of `{}`: {} run(s), {failed} failed", pl.name.v, ids.len());
    Ok(if failed == 0 { 0 } else { 1 })
}
