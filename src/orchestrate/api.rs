//! The control API: JSON over HTTP, served by axum on its own small runtime.
//! Handlers read and write the state store on blocking threads.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz` | 200 while the process runs (also while it waits for the state store) |
//! | GET | `/readyz` | 200 when the state store answers, else 503 |
//! | GET | `/api/pipelines` | the pipelines, their steps, triggers (with the next fire) and last run |
//! | POST | `/api/pipelines/{name}/runs` | 201 and the queued run (`id`); body optional: `{"logical_date": "YYYY-MM-DD", "full_refresh": true}` |
//! | GET | `/api/runs?pipeline=&status=&limit=` | runs, newest first |
//! | GET | `/api/runs/{id}` | one run, with its `status` |
//! | GET | `/api/runs/{id}/tasks` | its tasks and their attempts |
//! | GET | `/api/runs/{id}/tasks/{task}/logs?after=` | a task's log lines (after a line id) |
//! | POST | `/api/runs/{id}/cancel` | 200 when cancelled, 409 when it had finished |

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::log::log;
use super::runs::{Shared, new_run, today};
use super::schedule::{Timing, rfc3339};
use super::worker::Shutdown;
use crate::error::{Error, Kind, Result};
use crate::state::{RUN_STATUSES, RunFilter, State, now_us, run_json};

#[derive(Clone)]
struct App {
    state: Arc<State>,
    project: Arc<Shared>,
}

/// An error answer: `{"error": "…"}` with a status.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let code = match e.kind() {
            Kind::User => StatusCode::BAD_REQUEST,
            Kind::External => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.chain())
    }
}

type ApiResult = std::result::Result<Response, ApiError>;

/// Runs `f` on a blocking thread (the state store's calls block).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("a request handler failed: {e}")))?
        .map_err(ApiError::from)
}

fn not_found(what: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, what)
}

/// The router of the control API (the dashboard adds its own routes).
pub fn router(state: Arc<State>, project: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/pipelines", get(pipelines))
        .route("/api/pipelines/{name}/runs", post(trigger))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/tasks", get(tasks))
        .route("/api/runs/{id}/tasks/{task}/logs", get(logs))
        .route("/api/runs/{id}/cancel", post(cancel))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(axum::middleware::from_fn_with_state(state.clone(), until_ready))
        .with_state(App { state, project })
}

/// Until the state store has answered once (a service that started before
/// it), every route but `/healthz` and `/readyz` answers 503 with why.
async fn until_ready(
    AxState(state): AxState<Arc<State>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    if state.is_ready() || path == "/healthz" || path == "/readyz" {
        return next.run(req).await;
    }
    let why = state.last_error().map(|e| format!(": {e}")).unwrap_or_default();
    ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("the state store {} is not ready yet{why}", state.describe()))
        .into_response()
}

/// Serves the API on `listen` until `shutdown`. Fails at once when the
/// address cannot be bound.
pub fn serve(state: Arc<State>, project: Arc<Shared>, listen: &str, shutdown: Shutdown) -> Result<()> {
    let addr: SocketAddr = listen.parse().map_err(|_| {
        Error::user(format!("invalid listening address \"{listen}\": expected HOST:PORT, e.g. 127.0.0.1:8080"))
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sluice-api")
        .enable_all()
        .build()
        .map_err(|e| Error::external(format!("cannot start the API runtime: {e}"), false))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::external(format!("cannot listen on {addr}: {e}"), false))?;
        let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.to_string());
        log("info", "api", &format!("listening on http://{bound}"));
        let app = router(state, project);
        let stop = async move {
            while !shutdown.is_set() {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
            .map_err(|e| Error::external(format!("the API server failed: {e}"), false))?;
        log("info", "api", "stopped");
        Ok(())
    })
}

async fn readyz(AxState(app): AxState<App>) -> Response {
    if !app.state.is_ready() {
        let why = app.state.last_error().unwrap_or_else(|| "not reached yet".into());
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "state_store": why }))).into_response();
    }
    match blocking(move || app.state.pipelines()).await {
        Ok(_) => Json(json!({ "state_store": "ok" })).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "state_store": e.1 }))).into_response(),
    }
}

async fn pipelines(AxState(app): AxState<App>) -> ApiResult {
    let state = app.state.clone();
    let rows = blocking(move || state.pipelines()).await?;
    let loaded = app.project.get();
    let p = &loaded.project;
    let now = now_us();
    let out: Vec<Value> = p
        .pipelines
        .iter()
        .map(|pl| {
            let row = rows.iter().find(|r| r.name == pl.name.v);
            let triggers: Vec<Value> = pl
                .triggers
                .iter()
                .map(|t| match Timing::of(t, p.timezone()) {
                    Some(Ok(timing)) => json!({
                        "schedule": timing.describe(),
                        "next_fire": timing.next_after(now).map(rfc3339),
                        "timezone": timing.zone().name(),
                    }),
                    _ => match &t.kind {
                        crate::project::TriggerKind::OnDataset(d) => json!({ "on_dataset": d.v }),
                        crate::project::TriggerKind::OnNewObjects(o) => json!({ "on_new_objects": o.v }),
                        _ => json!({}),
                    },
                })
                .collect();
            let steps: Vec<Value> = pl
                .steps
                .iter()
                .map(|s| json!({ "name": s.name.v, "kind": s.kind.name(), "depends_on": super::runs::deps_of(pl, s) }))
                .collect();
            json!({
                "name": pl.name.v,
                "description": pl.description,
                "steps": steps,
                "triggers": triggers,
                "max_active_runs": pl.max_active_runs,
                "concurrency": pl.concurrency,
                "last_run": row.and_then(|r| r.last_run.as_ref()).map(run_json),
            })
        })
        .collect();
    Ok(Json(json!({ "pipelines": out })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    logical_date: Option<String>,
    #[serde(default)]
    full_refresh: bool,
}

async fn trigger(AxState(app): AxState<App>, Path(name): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let req: TriggerBody = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid request body: {e}")))?
    };
    let loaded = app.project.get();
    let p = &loaded.project;
    if p.pipeline(&name).is_err() {
        let names: Vec<&str> = p.pipelines.iter().map(|x| x.name.v.as_str()).collect();
        return Err(not_found(format!("no pipeline named `{name}` (pipelines: {})", names.join(", "))));
    }
    let date = match req.logical_date {
        Some(d) => chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d")
            .map_err(|_| {
                ApiError(StatusCode::BAD_REQUEST, format!("invalid logical_date \"{d}\": expected YYYY-MM-DD"))
            })?
            .to_string(),
        None => today(p),
    };
    let run = new_run(p, &name, "api", date, None, json!({}), req.full_refresh)?;
    let state = app.state.clone();
    let id = blocking(move || state.enqueue(&run)).await?.expect("manual runs are never duplicates");
    let state = app.state.clone();
    let row = blocking(move || state.run(&id)).await?;
    let body = row.as_ref().map(run_json).unwrap_or_default();
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
struct RunsQuery {
    pipeline: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

async fn runs(AxState(app): AxState<App>, Query(q): Query<RunsQuery>) -> ApiResult {
    if let Some(s) = &q.status
        && !RUN_STATUSES.contains(&s.as_str())
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid status \"{s}\": one of {}", RUN_STATUSES.join(", ")),
        ));
    }
    let f = RunFilter { pipeline: q.pipeline, status: q.status, limit: q.limit };
    let rows = blocking(move || app.state.runs(&f)).await?;
    Ok(Json(json!({ "runs": rows.iter().map(run_json).collect::<Vec<_>>() })).into_response())
}

async fn run(AxState(app): AxState<App>, Path(id): Path<String>) -> ApiResult {
    let key = id.clone();
    match blocking(move || app.state.run(&key)).await? {
        Some(r) => Ok(Json(run_json(&r)).into_response()),
        None => Err(not_found(format!("no run `{id}`"))),
    }
}

async fn tasks(AxState(app): AxState<App>, Path(id): Path<String>) -> ApiResult {
    let key = id.clone();
    let state = app.state.clone();
    let found = blocking(move || {
        let Some(_) = state.run(&key)? else { return Ok(None) };
        let tasks = state.tasks(&key)?;
        let mut out = Vec::new();
        for t in tasks {
            let attempts = state.attempts(&key, &t.step)?;
            let t_ = |v: Option<i64>| v.map(rfc3339);
            out.push(json!({
                "step": t.step,
                "kind": t.kind,
                "status": t.status,
                "depends_on": t.deps,
                "attempts": attempts.iter().map(|a| json!({
                    "attempt": a.attempt, "worker": a.worker, "status": a.status, "error": a.error,
                    "started_at": t_(a.started_at), "finished_at": t_(a.finished_at),
                })).collect::<Vec<_>>(),
                "worker": t.worker,
                "next_try_at": t_(t.next_try_at),
                "started_at": t_(t.started_at),
                "finished_at": t_(t.finished_at),
                "error": t.error,
                "summary": t.summary,
                "output": t.output,
            }));
        }
        Ok(Some(out))
    })
    .await?;
    match found {
        Some(ts) => Ok(Json(json!({ "run_id": id, "tasks": ts })).into_response()),
        None => Err(not_found(format!("no run `{id}`"))),
    }
}

#[derive(Deserialize)]
struct LogsQuery {
    after: Option<i64>,
}

async fn logs(
    AxState(app): AxState<App>,
    Path((id, task)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> ApiResult {
    let (key, step) = (id.clone(), task.clone());
    let found = blocking(move || {
        if !app.state.tasks(&key)?.iter().any(|t| t.step == step) {
            return Ok(None);
        }
        app.state.logs(&key, &step, q.after.unwrap_or(0)).map(Some)
    })
    .await?;
    match found {
        None => Err(not_found(format!("run `{id}` has no task `{task}`"))),
        Some(lines) => {
            let lines: Vec<Value> = lines
                .iter()
                .map(|l| json!({ "id": l.id, "attempt": l.attempt, "at": rfc3339(l.at), "level": l.level, "message": l.message }))
                .collect();
            Ok(Json(json!({ "run_id": id, "task": task, "logs": lines })).into_response())
        }
    }
}

async fn cancel(AxState(app): AxState<App>, Path(id): Path<String>) -> ApiResult {
    let key = id.clone();
    let state = app.state.clone();
    match blocking(move || state.cancel(&key)).await? {
        None => Err(not_found(format!("no run `{id}`"))),
        Some(false) => Err(ApiError(StatusCode::CONFLICT, format!("run `{id}` has already finished"))),
        Some(true) => {
            let key = id.clone();
            let row = blocking(move || app.state.run(&key)).await?;
            Ok(Json(row.as_ref().map(run_json).unwrap_or_default()).into_response())
        }
    }
}
