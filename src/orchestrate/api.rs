//! The control API: JSON over HTTP, served by axum on its own small runtime.
//! Handlers read and write the state store on blocking threads.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz` | 200 while the process runs |
//! | GET | `/readyz` | 200 when the state store answers, else 503 |
//! | GET | `/api/pipelines` | the pipelines, their steps, triggers (with the next fire) and last run |
//! | POST | `/api/pipelines/{name}/runs` | 201 and the queued run (`id`); body optional: `{"logical_date": "YYYY-MM-DD", "full_refresh": true}` |
//! | GET | `/api/runs?pipeline=&status=&limit=` | runs, newest first |
//! | GET | `/api/runs/{id}` | one run, with its `status` |
//! | GET | `/api/runs/{id}/tasks` | its tasks and their attempts |
//! | GET | `/api/runs/{id}/tasks/{task}/logs?after=` | a task's log lines (after a line id) |
//! | POST | `/api/runs/{id}/cancel` | 200 when cancelled, 409 when it had finished |
//!
//! Every error is `{"error": "…"}` JSON, whoever produced it (a handler, an
//! extractor's rejection, the router's 404 or 405): `json_errors` rewrites
//! any other error body. Until the API authenticates, `guard` keeps web
//! pages from using it through a visitor's browser: writes must be JSON (a
//! page can send `text/plain` or a form to any address without asking),
//! a request from another origin is refused, and on loopback the `Host`
//! must be a loopback name or an IP address (DNS rebinding).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, Request, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::log::log;
use super::runs::{Shared, new_run, parse_logical_date, today};
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
            // A value from the request that the store refused.
            Kind::User | Kind::Data => StatusCode::BAD_REQUEST,
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

/// A query string decoded into `T`; a bad one is a 400 with the reason.
struct Q<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Q(v)),
            Err(e) => {
                let text = e.body_text();
                let why = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
                Err(ApiError(StatusCode::BAD_REQUEST, format!("invalid query string: {why}")))
            }
        }
    }
}

/// Path parameters decoded into `T`; a bad one is a 400 with the reason.
struct P<T>(T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(P(v)),
            Err(e) => Err(ApiError(StatusCode::BAD_REQUEST, format!("invalid path: {}", lower_first(&e.body_text())))),
        }
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Who may call the API, until it authenticates requests.
#[derive(Debug, Clone)]
pub struct Access {
    /// The API listens on a loopback address: requests must be addressed to
    /// a loopback name or an IP address.
    pub loopback: bool,
}

impl Access {
    /// The rules for an API listening on `addr`.
    pub fn for_listen(addr: &SocketAddr) -> Access {
        Access { loopback: addr.ip().is_loopback() }
    }
}

/// Whether a `Host` header's host (no port) may reach a loopback API: an IP
/// address (which no DNS rebinding can produce) or `localhost`.
fn loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok()
}

/// Splits `host[:port]` (IPv6 in brackets) into the host and the port.
fn split_authority(a: &str) -> (&str, Option<&str>) {
    if let Some(rest) = a.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (a, None),
        };
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (a, None),
    }
}

/// Refuses what a web page could make a visitor's browser send: requests
/// addressed to a foreign host name on a loopback API (DNS rebinding),
/// writes from another origin, and writes whose body is not JSON.
fn check_access(access: &Access, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if access.loopback && !host.is_empty() && !loopback_host(split_authority(host).0) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "requests to this API must be addressed to localhost or an IP address, not \"{host}\" \
                 (it listens on loopback and refuses other host names against DNS rebinding)"
            ),
        ));
    }
    let unsafe_method = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !unsafe_method {
        return Ok(());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin.split_once("://").map(|(_, a)| a).unwrap_or("");
        if origin == "null" || authority.is_empty() || !authority.eq_ignore_ascii_case(host) {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "cross-origin request refused: a page from {origin} may not change anything here \
                     (only this API's own origin, http://{host}, or clients that send no Origin)"
                ),
            ));
        }
    }
    let ctype = headers.get(header::CONTENT_TYPE).map(|c| c.to_str().unwrap_or("?"));
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).and_then(|l| l.to_str().ok()).is_some_and(|l| l.trim() != "0");
    let json =
        ctype.is_some_and(|c| c.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if (has_body || ctype.is_some()) && !json {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "send the request body as JSON with Content-Type: application/json (got {})",
                ctype.map(|c| format!("Content-Type: {c}")).unwrap_or_else(|| "no Content-Type".into())
            ),
        ));
    }
    Ok(())
}

async fn guard(AxState(access): AxState<Access>, req: Request, next: Next) -> Response {
    if let Err(e) = check_access(&access, req.method(), req.headers()) {
        return e.into_response();
    }
    // Percent-decoded, the path and the query must be UTF-8 without a NUL
    // (no store or warehouse can hold one).
    let uri = req.uri();
    for (what, raw) in [("path", uri.path()), ("query string", uri.query().unwrap_or(""))] {
        let bytes: Vec<u8> = percent_decode(raw);
        match std::str::from_utf8(&bytes) {
            Err(_) => {
                return ApiError(StatusCode::BAD_REQUEST, format!("invalid {what}: it is not UTF-8 once decoded"))
                    .into_response();
            }
            Ok(t) if t.contains('\0') => {
                return ApiError(StatusCode::BAD_REQUEST, format!("invalid {what}: it holds a NUL character (%00)"))
                    .into_response();
            }
            Ok(_) => {}
        }
    }
    next.run(req).await
}

/// `%XX` escapes decoded (and `+` kept, as paths have it).
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c)))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Makes every error answer `{"error": "…"}` JSON: extractors' rejections,
/// the router's 405, a body limit's 413 — whatever wrote plain text or
/// nothing.
async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let msg = if status == StatusCode::METHOD_NOT_ALLOWED {
        match parts.headers.get(header::ALLOW).and_then(|a| a.to_str().ok()).filter(|a| !a.is_empty()) {
            Some(allow) => format!("method {method} is not allowed on {path} (allowed: {allow})"),
            None => format!("method {method} is not allowed on {path}"),
        }
    } else if text.is_empty() {
        lower_first(status.canonical_reason().unwrap_or("error"))
    } else {
        lower_first(&text)
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    Response::from_parts(parts, axum::body::Body::from(json!({ "error": msg }).to_string()))
}

/// The router of the control API (the dashboard adds its own routes).
pub fn router(state: Arc<State>, project: Arc<Shared>, access: Access) -> axum::Router {
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
        .with_state(App { state, project })
        .layer(axum::middleware::from_fn_with_state(access, guard))
        .layer(axum::middleware::from_fn(json_errors))
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
        let access = Access::for_listen(&addr);
        if !access.loopback {
            for line in [
                format!("the API listens on {bound}, beyond this machine, and it has NO AUTHENTICATION:"),
                "anyone who can reach this address can read every run and start and cancel pipelines.".into(),
                "Listen on 127.0.0.1 (the default) or put an authenticating proxy in front of it.".into(),
            ] {
                log("warn", "api", &line);
            }
        }
        let app = router(state, project, access);
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

async fn trigger(AxState(app): AxState<App>, P(name): P<String>, body: axum::body::Bytes) -> ApiResult {
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
        Some(d) => parse_logical_date(&d)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid logical_date {e}")))?
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
#[serde(deny_unknown_fields)]
struct RunsQuery {
    pipeline: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

async fn runs(AxState(app): AxState<App>, Q(q): Q<RunsQuery>) -> ApiResult {
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

async fn run(AxState(app): AxState<App>, P(id): P<String>) -> ApiResult {
    let key = id.clone();
    match blocking(move || app.state.run(&key)).await? {
        Some(r) => Ok(Json(run_json(&r)).into_response()),
        None => Err(not_found(format!("no run `{id}`"))),
    }
}

async fn tasks(AxState(app): AxState<App>, P(id): P<String>) -> ApiResult {
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
#[serde(deny_unknown_fields)]
struct LogsQuery {
    after: Option<i64>,
}

async fn logs(AxState(app): AxState<App>, P((id, task)): P<(String, String)>, Q(q): Q<LogsQuery>) -> ApiResult {
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

async fn cancel(AxState(app): AxState<App>, P(id): P<String>) -> ApiResult {
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
