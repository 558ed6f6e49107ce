//! What the control plane needs to know about a project: each pipeline's
//! definition hash and limits, the tasks a run of it has, the datasets a step
//! updated, and the project itself, loaded once and shared by threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::project::{PipelineConfig, Project, RetryOn, StepConfig, StepKind};
use crate::state::{NewRun, NewTask, PipelineDef, State};
use crate::steps::StepOutput;
use crate::storage::Store;

use super::log::log;
use super::worker::Shutdown;

/// The first retry's delay when a step names none.
pub const DEFAULT_RETRY_DELAY_MS: i64 = 10_000;

/// A project read and validated, with its object store.
pub struct Loaded {
    pub project: Project,
    pub plan: Plan,
    pub store: Store,
}

impl Loaded {
    pub fn open(dir: &Path) -> Result<Loaded> {
        let (project, plan) = crate::plan::open(dir)?;
        let store = crate::storage::open(&project.storage_url()?, &project.dir)?;
        Ok(Loaded { project, plan, store })
    }
}

/// The loaded project, replaced when its files change.
pub struct Shared {
    pub dir: PathBuf,
    current: RwLock<Arc<Loaded>>,
    stamp: RwLock<u64>,
}

impl Shared {
    pub fn open(dir: &Path) -> Result<Shared> {
        let loaded = Loaded::open(dir)?;
        Ok(Shared { dir: dir.to_path_buf(), current: RwLock::new(Arc::new(loaded)), stamp: RwLock::new(stamp(dir)) })
    }

    pub fn get(&self) -> Arc<Loaded> {
        self.current.read().expect("project lock").clone()
    }

    /// Reads the project again if a file changed; a project that no longer
    /// validates is reported and the previous one kept. `true` when reloaded.
    pub fn refresh(&self) -> Result<bool> {
        let now = stamp(&self.dir);
        if now == *self.stamp.read().expect("stamp") {
            return Ok(false);
        }
        *self.stamp.write().expect("stamp") = now;
        let loaded = Loaded::open(&self.dir)?;
        *self.current.write().expect("project lock") = Arc::new(loaded);
        Ok(true)
    }
}

/// A cheap fingerprint of the project's files: their paths, sizes and times.
fn stamp(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    fn walk(d: &Path, h: &mut std::collections::hash_map::DefaultHasher, depth: usize) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let n = name.to_string_lossy();
            if n.starts_with('.') || n == "target" || n == "output" || n == "data" {
                continue;
            }
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                if depth < 8 {
                    walk(&e.path(), h, depth + 1);
                }
            } else if n.ends_with(".toml") || n.ends_with(".sql") || n.ends_with(".csv") || n == ".env" {
                n.hash(h);
                md.len().hash(h);
                md.modified().ok().hash(h);
            }
        }
    }
    walk(dir, &mut h, 0);
    std::fs::metadata(dir.join(".env")).ok().and_then(|m| m.modified().ok()).hash(&mut h);
    h.finish()
}

/// A hash of a pipeline's file, so a run records which definition it ran.
pub fn pipeline_hash(project: &Project, pl: &PipelineConfig) -> String {
    let text = &project.sources.get(pl.file).text;
    let d = Sha256::digest(text.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

pub fn pipeline_def(project: &Project, pl: &PipelineConfig) -> PipelineDef {
    PipelineDef {
        name: pl.name.v.clone(),
        hash: pipeline_hash(project, pl),
        max_active_runs: pl.max_active_runs.filter(|n| *n > 0),
        concurrency: pl.concurrency,
    }
}

/// The tasks of a run of `pl`: every step, with its retry settings.
pub fn tasks_of(project: &Project, pl: &PipelineConfig) -> Vec<NewTask> {
    let d = &project.config.defaults;
    pl.steps
        .iter()
        .map(|s| NewTask {
            step: s.name.v.clone(),
            kind: s.kind.name().to_string(),
            deps: deps_of(pl, s),
            retries: s.retries.or(d.retries).unwrap_or(0),
            retry_delay_ms: s
                .retry_delay
                .as_ref()
                .or(d.retry_delay.as_ref())
                .map(|x| x.0.as_millis() as i64)
                .unwrap_or(DEFAULT_RETRY_DELAY_MS),
            retry_on: s.retry_on.unwrap_or(RetryOn::Transient),
            timeout_ms: s.timeout.as_ref().map(|t| t.0.as_millis() as i64),
        })
        .collect()
}

/// A step's dependencies: `depends_on`, and a load's ingest step.
pub fn deps_of(pl: &PipelineConfig, s: &StepConfig) -> Vec<String> {
    let mut deps: Vec<String> = s.depends_on.iter().map(|d| d.v.clone()).collect();
    if let StepKind::Load(l) = &s.kind
        && !deps.contains(&l.from.v)
        && pl.steps.iter().any(|x| x.name.v == l.from.v)
    {
        deps.push(l.from.v.clone());
    }
    deps
}

/// A run of a pipeline, ready to enqueue.
pub fn new_run(
    project: &Project,
    pipeline: &str,
    trigger: &str,
    logical_date: String,
    scheduled_for: Option<i64>,
    params: serde_json::Value,
    full_refresh: bool,
) -> Result<NewRun> {
    let pl = project.pipeline(pipeline)?;
    Ok(NewRun {
        pipeline: pipeline_def(project, pl),
        trigger: trigger.to_string(),
        logical_date,
        scheduled_for,
        params,
        full_refresh,
        tasks: tasks_of(project, pl),
    })
}

/// The earliest and latest logical dates: the range every warehouse's `DATE`
/// holds (MySQL's, 1000-01-01 to 9999-12-31, is the narrowest), since a
/// logical date reaches models, file paths and tables.
pub const LOGICAL_DATES: (chrono::NaiveDate, chrono::NaiveDate) = (
    chrono::NaiveDate::from_ymd_opt(1000, 1, 1).expect("a valid date"),
    chrono::NaiveDate::from_ymd_opt(9999, 12, 31).expect("a valid date"),
);

/// Parses a logical date given by a person or a client: exactly
/// `YYYY-MM-DD`, a real day, within [`LOGICAL_DATES`]. The error says what
/// was wrong (the caller names where the value came from).
pub fn parse_logical_date(s: &str) -> std::result::Result<chrono::NaiveDate, String> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    let date = shape.then(|| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()).flatten();
    match date {
        None => Err(format!("\"{}\": expected a date as YYYY-MM-DD", s.escape_debug())),
        Some(d) if d < LOGICAL_DATES.0 || d > LOGICAL_DATES.1 => {
            Err(format!("\"{s}\" is out of range: logical dates go from {} to {}", LOGICAL_DATES.0, LOGICAL_DATES.1))
        }
        Some(d) => Ok(d),
    }
}

/// Today in the project's time zone.
pub fn today(project: &Project) -> String {
    chrono::Utc::now().with_timezone(&project.timezone()).date_naive().to_string()
}

/// The datasets a step updated (an ingest's dataset when it published a
/// landing, a load's table when it loaded objects, the models, seeds and
/// snapshots built, a clean step's output), as each step reports them.
pub fn datasets_updated(out: &StepOutput) -> Vec<String> {
    out.dataset_names()
}

/// The state store's URL: `--state`/`SLUICE_STATE_URL`, else `[state] url`,
/// else `.sluice/state.db` in the project.
fn state_url(project: &Project, url: Option<&str>) -> Result<String> {
    Ok(match url {
        Some(u) => u.to_string(),
        None => project.state_url()?.expose().to_string(),
    })
}

fn in_context(e: Error, url: &str) -> Error {
    if let Error::User(_) = e { e } else { e.context(format!("state store {}", crate::secret::redact_url(url))) }
}

/// Opens the state store: `--state`/`SLUICE_STATE_URL`, else `[state] url`,
/// else `.sluice/state.db` in the project.
pub fn open_state(project: &Project, url: Option<&str>) -> Result<State> {
    let url = state_url(project, url)?;
    State::open(&url, &project.dir).map_err(|e| in_context(e, &url))
}

/// The state store for a service, not reached yet (see `wait_for_state`).
pub fn open_state_pending(project: &Project, url: Option<&str>) -> Result<State> {
    let url = state_url(project, url)?;
    State::pending(&url, &project.dir).map_err(|e| in_context(e, &url))
}

/// How long services wait for the state store by default.
pub const DEFAULT_STATE_WAIT: Duration = Duration::from_secs(300);

/// Whether a service should wait for a store that failed this way: it is
/// unreachable, starting, shutting down or busy, or its database does not
/// exist yet (being created by whoever starts the server).
pub fn worth_waiting(e: &Error) -> bool {
    e.retryable() || e.db_code().and_then(|c| c.sqlstate()).is_some_and(|s| s == "3D000")
}

/// Waits until the state store answers (and its schema is up to date),
/// trying again with exponential backoff (0.5 s doubling up to 10 s) and
/// logging each wait, for at most `limit`. A store that refuses for good (a
/// wrong URL, a wrong password) fails at once; one that is still not there
/// after `limit` fails with the last error. Stops early (with `Ok`) on
/// shutdown; the caller checks `shutdown`.
pub fn wait_for_state(state: &State, limit: Duration, who: &str, shutdown: &Shutdown) -> Result<()> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(500);
    let mut waited = false;
    loop {
        let e = match state.ready() {
            Ok(()) => {
                if waited {
                    log("info", who, &format!("the state store {} answers", state.describe()));
                }
                return Ok(());
            }
            Err(e) => e,
        };
        let elapsed = started.elapsed();
        if !worth_waiting(&e) {
            return Err(e.context(format!("state store {}", state.describe())));
        }
        if elapsed >= limit {
            return Err(Error::external(
                format!(
                    "the state store {} did not answer within {} (--state-wait / SLUICE_STATE_WAIT): {}",
                    state.describe(),
                    show_duration(limit),
                    e.chain()
                ),
                true,
            ));
        }
        let wait = delay.min(limit - elapsed);
        log(
            "warn",
            who,
            &format!(
                "waiting for the state store {} ({}); trying again in {} (giving up after {})",
                state.describe(),
                e.chain(),
                show_duration(wait),
                show_duration(limit)
            ),
        );
        waited = true;
        shutdown.sleep(wait);
        if shutdown.is_set() {
            return Ok(());
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// `1.5s`, `2m`, `5m30s`.
fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 60_000 {
        let s = d.as_secs_f64();
        if s.fract() == 0.0 { format!("{s:.0}s") } else { format!("{s:.1}s") }
    } else if (ms / 1000).is_multiple_of(60) {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}m{}s", ms / 60_000, (ms / 1000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_logical_date;

    #[test]
    fn logical_dates_are_real_days_within_every_warehouses_range() {
        assert_eq!(parse_logical_date("2026-01-31").unwrap().to_string(), "2026-01-31");
        assert_eq!(parse_logical_date("1000-01-01").unwrap().to_string(), "1000-01-01");
        assert_eq!(parse_logical_date("9999-12-31").unwrap().to_string(), "9999-12-31");
        assert_eq!(
            parse_logical_date("0000-01-01").unwrap_err(),
            "\"0000-01-01\" is out of range: logical dates go from 1000-01-01 to 9999-12-31"
        );
        assert_eq!(
            parse_logical_date("0999-12-31").unwrap_err(),
            "\"0999-12-31\" is out of range: logical dates go from 1000-01-01 to 9999-12-31"
        );
        for bad in
            ["2026-02-30", "2026-1-5", "+2026-01-01", "20260101", "2026-01-01T00:00", "", "yesterday", "2026-01-3\u{0}"]
        {
            assert!(parse_logical_date(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_logical_date("a\u{0}b").unwrap_err(), "\"a\\0b\": expected a date as YYYY-MM-DD");
    }
}
