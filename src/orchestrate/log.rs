//! Service logs through `tracing`: one line per event on stderr, as text
//! (`2026-11-30T10:00:00.000Z INFO  worker w1: [RUN STEP] message`) or, with
//! `--log-format json` / `SLUICE_LOG_FORMAT=json`, as JSON objects (`ts`,
//! `level`, `component`, `msg`, and `run_id`/`task`/`pipeline` when about a
//! task) for log collectors. Every service (scheduler, worker, API, the
//! state store's retries) logs through here, so they all look alike.
//! `SLUICE_LOG` filters (`warn`, `info` (the default), `debug`, or
//! `tracing` directives such as `info,api=debug`).

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Logs `msg` from `component` (`scheduler`, `worker w-1`, `api`).
pub fn log(level: &str, component: &str, msg: &str) {
    log_task(level, component, None, msg)
}

macro_rules! at_level {
    ($level:expr, $($rest:tt)*) => {
        match $level {
            "error" => tracing::error!($($rest)*),
            "warn" => tracing::warn!($($rest)*),
            "debug" => tracing::debug!($($rest)*),
            _ => tracing::info!($($rest)*),
        }
    };
}

/// Logs about one task of a run.
pub fn log_task(level: &str, component: &str, task: Option<(&str, &str)>, msg: &str) {
    match task {
        Some((run, step)) => at_level!(level, component, run_id = run, task = step, "{msg}"),
        None => at_level!(level, component, "{msg}"),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Installs the process's log output (once; later calls do nothing).
pub fn init(format: Format) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(Lines(format))
        .try_init();
}

/// The format from `SLUICE_LOG_FORMAT` (`json` or `text`).
pub fn format_from_env() -> Format {
    match std::env::var("SLUICE_LOG_FORMAT") {
        Ok(v) if v.eq_ignore_ascii_case("json") => Format::Json,
        _ => Format::Text,
    }
}

struct Lines(Format);

#[derive(Default)]
struct Fields {
    msg: String,
    component: Option<String>,
    run_id: Option<String>,
    task: Option<String>,
    pipeline: Option<String>,
    other: serde_json::Map<String, serde_json::Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, f: &Field, v: &str) {
        match f.name() {
            "message" => self.msg = v.to_string(),
            "component" => self.component = Some(v.to_string()),
            "run_id" => self.run_id = Some(v.to_string()),
            "task" => self.task = Some(v.to_string()),
            "pipeline" => self.pipeline = Some(v.to_string()),
            n => {
                self.other.insert(n.to_string(), v.into());
            }
        }
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.other.insert(f.name().to_string(), v.into());
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.other.insert(f.name().to_string(), v.into());
    }
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.other.insert(f.name().to_string(), v.into());
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.other.insert(f.name().to_string(), v.into());
    }
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        let s = format!("{v:?}");
        if f.name() == "message" {
            self.msg = s;
        } else {
            self.record_str(f, s.trim_matches('"'));
        }
    }
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        let meta = event.metadata();
        let component = f.component.clone().unwrap_or_else(|| {
            let t = meta.target();
            t.strip_prefix("sluice::").unwrap_or(t).to_string()
        });
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let level = meta.level().as_str();
        match self.0 {
            Format::Json => {
                let mut v = serde_json::json!({ "ts": ts, "level": level.to_ascii_lowercase(), "component": component, "msg": f.msg });
                for (k, x) in [("run_id", &f.run_id), ("task", &f.task), ("pipeline", &f.pipeline)] {
                    if let Some(x) = x {
                        v[k] = x.clone().into();
                    }
                }
                for (k, x) in f.other {
                    v[k] = x;
                }
                writeln!(w, "{v}")
            }
            Format::Text => {
                let task = match (&f.run_id, &f.task) {
                    (Some(r), Some(t)) => format!("[{r} {t}] "),
                    _ => String::new(),
                };
                let extra: String = f.other.iter().map(|(k, v)| format!(" {k}={v}")).collect();
                writeln!(w, "{ts} {level:<5} {component}: {task}{}{extra}", f.msg)
            }
        }
    }
}
