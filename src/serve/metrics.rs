//! `/metrics` in the Prometheus text format: what the state store knows
//! (runs and tasks by status, task durations, rows loaded and rejected,
//! quality scores, queue depth, scheduler lag, live workers), so any API
//! process reports the whole deployment, and this process's HTTP requests.
//! Every metric has HELP and TYPE lines (`promtool check metrics` passes).
//! The store is read at most every few seconds, however often it is scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State as AxState};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::App;
use super::auth::Read;
use super::http::{ApiResult, blocking};
use crate::state::reads::{Counts, DURATION_BUCKETS};

/// Upper bounds (seconds) of the HTTP latency histogram's buckets.
const HTTP_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How long the store's counts are reused.
const COUNTS_FOR: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

/// This process's HTTP requests, and the store's counts last read.
#[derive(Default)]
pub struct Http {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    counts: Mutex<Option<(Instant, Counts)>>,
}

impl Http {
    fn record(&self, route: &str, method: &str, status: u16, secs: f64) {
        *self.requests.lock().expect("metrics").entry((route.to_string(), method.to_string(), status)).or_default() +=
            1;
        let mut l = self.latency.lock().expect("metrics");
        let h = l.entry(route.to_string()).or_insert_with(|| Histogram {
            buckets: vec![0; HTTP_BUCKETS.len()],
            count: 0,
            sum: 0.0,
        });
        for (i, b) in HTTP_BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }
}

/// Counts each request by its route (the template, not the path, so the
/// labels stay few), method and status, and times it.
pub async fn track(AxState(app): AxState<App>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "other".into());
    let method = req.method().as_str().to_string();
    let t0 = Instant::now();
    let res = next.run(req).await;
    app.metrics.record(&route, &method, res.status().as_u16(), t0.elapsed().as_secs_f64());
    res
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn num(v: f64) -> String {
    if v.is_finite() { format!("{v}") } else { "NaN".into() }
}

/// The text of `/metrics`.
pub fn render(c: &Counts, http: &Http) -> String {
    let mut o = String::with_capacity(4096);
    head(&mut o, "sluice_build_info", "gauge", "Always 1; the labels say which sluice this is.");
    let _ = writeln!(o, "sluice_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    head(&mut o, "sluice_runs", "gauge", "Runs in the state store, by pipeline and status.");
    for (p, s, n) in &c.runs {
        let _ = writeln!(o, "sluice_runs{{pipeline=\"{}\",status=\"{}\"}} {n}", label(p), label(s));
    }
    head(&mut o, "sluice_tasks", "gauge", "Tasks (steps of runs) in the state store, by pipeline and status.");
    for (p, s, n) in &c.tasks {
        let _ = writeln!(o, "sluice_tasks{{pipeline=\"{}\",status=\"{}\"}} {n}", label(p), label(s));
    }
    head(
        &mut o,
        "sluice_task_duration_seconds",
        "histogram",
        "How long finished task attempts took, by pipeline and step kind.",
    );
    for (p, k, buckets, count, sum) in &c.durations {
        let l = format!("pipeline=\"{}\",kind=\"{}\"", label(p), label(k));
        for (b, n) in DURATION_BUCKETS.iter().zip(buckets) {
            let _ = writeln!(o, "sluice_task_duration_seconds_bucket{{{l},le=\"{b}\"}} {n}");
        }
        let _ = writeln!(o, "sluice_task_duration_seconds_bucket{{{l},le=\"+Inf\"}} {count}");
        let _ = writeln!(o, "sluice_task_duration_seconds_sum{{{l}}} {}", num(*sum));
        let _ = writeln!(o, "sluice_task_duration_seconds_count{{{l}}} {count}");
    }
    head(&mut o, "sluice_rows_loaded_total", "counter", "Rows load steps published, by table.");
    for (t, loaded, _) in &c.rows {
        let _ = writeln!(o, "sluice_rows_loaded_total{{table=\"{}\"}} {loaded}", label(t));
    }
    head(
        &mut o,
        "sluice_rows_rejected_total",
        "counter",
        "Rows load steps rejected (skipped or quarantined), by table.",
    );
    for (t, _, rejected) in &c.rows {
        let _ = writeln!(o, "sluice_rows_rejected_total{{table=\"{}\"}} {rejected}", label(t));
    }
    head(&mut o, "sluice_data_quality_score", "gauge", "The latest quality score (0-100) of each cleaned table.");
    for (t, s) in &c.quality {
        let _ = writeln!(o, "sluice_data_quality_score{{table=\"{}\"}} {}", label(t), num(*s));
    }
    head(&mut o, "sluice_queue_depth", "gauge", "Tasks ready to run now, waiting for a worker.");
    let _ = writeln!(o, "sluice_queue_depth {}", c.queue_depth);
    head(&mut o, "sluice_scheduler_lag_seconds", "gauge", "How late the most overdue schedule is (0 when none is).");
    let _ = writeln!(o, "sluice_scheduler_lag_seconds {}", num(c.scheduler_lag));
    head(&mut o, "sluice_workers", "gauge", "Workers that sent a heartbeat in the last minute.");
    let _ = writeln!(o, "sluice_workers {}", c.workers);
    head(
        &mut o,
        "sluice_http_requests_total",
        "counter",
        "HTTP requests this API process answered, by route, method and status.",
    );
    for ((route, method, status), n) in http.requests.lock().expect("metrics").iter() {
        let _ = writeln!(
            o,
            "sluice_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
            label(route),
            label(method)
        );
    }
    head(
        &mut o,
        "sluice_http_request_duration_seconds",
        "histogram",
        "How long this API process took to answer, by route.",
    );
    for (route, h) in http.latency.lock().expect("metrics").iter() {
        let l = format!("route=\"{}\"", label(route));
        for (b, n) in HTTP_BUCKETS.iter().zip(&h.buckets) {
            let _ = writeln!(o, "sluice_http_request_duration_seconds_bucket{{{l},le=\"{b}\"}} {n}");
        }
        let _ = writeln!(o, "sluice_http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(o, "sluice_http_request_duration_seconds_sum{{{l}}} {}", num(h.sum));
        let _ = writeln!(o, "sluice_http_request_duration_seconds_count{{{l}}} {}", h.count);
    }
    o
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", security(("bearer" = []), ("session" = [])),
    responses((status = 200, description = "the Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, body = super::api::ErrorBody)))]
pub async fn metrics(AxState(app): AxState<App>, _: Read) -> ApiResult {
    let cached = app
        .metrics
        .counts
        .lock()
        .expect("metrics")
        .as_ref()
        .filter(|(at, _)| at.elapsed() < COUNTS_FOR)
        .map(|(_, c)| c.clone());
    let counts = match cached {
        Some(c) => c,
        None => {
            let state = app.state.clone();
            let c = blocking(move || state.counts()).await?;
            *app.metrics.counts.lock().expect("metrics") = Some((Instant::now(), c.clone()));
            c
        }
    };
    let text = render(&counts, &app.metrics);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_and_type() {
        let c = Counts {
            runs: vec![("p\"x".into(), "success".into(), 2)],
            durations: vec![("p".into(), "load".into(), vec![1; DURATION_BUCKETS.len()], 1, 0.05)],
            ..Counts::default()
        };
        let h = Http::default();
        h.record("/api/runs", "GET", 200, 0.002);
        let text = render(&c, &h);
        assert!(text.contains("sluice_runs{pipeline=\"p\\\"x\",status=\"success\"} 2"), "{text}");
        assert!(text.contains("sluice_http_request_duration_seconds_bucket{route=\"/api/runs\",le=\"0.0025\"} 1"));
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(helps, types);
        assert_eq!(helps, 12);
    }
}
