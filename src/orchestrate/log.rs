//! Service logs: one line per event on stderr, as text or, with
//! `SLUICE_LOG_FORMAT=json`, as JSON objects (`ts`, `level`, `component`,
//! `msg`, and `run_id`/`task` when about a task) for central log collection.

use std::io::Write;
use std::sync::OnceLock;

fn json() -> bool {
    static J: OnceLock<bool> = OnceLock::new();
    *J.get_or_init(|| std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json")))
}

/// Logs `msg` from `component` (`scheduler`, `worker w-1`, `api`).
pub fn log(level: &str, component: &str, msg: &str) {
    log_task(level, component, None, msg)
}

/// Logs about one task of a run.
pub fn log_task(level: &str, component: &str, task: Option<(&str, &str)>, msg: &str) {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let line = if json() {
        let mut v = serde_json::json!({ "ts": ts, "level": level, "component": component, "msg": msg });
        if let Some((run, step)) = task {
            v["run_id"] = run.into();
            v["task"] = step.into();
        }
        v.to_string()
    } else {
        match task {
            Some((run, step)) => format!("{ts} {:<5} {component}: [{run} {step}] {msg}", level.to_uppercase()),
            None => format!("{ts} {:<5} {component}: {msg}", level.to_uppercase()),
        }
    };
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
