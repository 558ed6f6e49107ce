//! The control API: pipelines, runs, tasks and their logs, tokens, and the
//! extra routes `[[routes]]` declares. JSON in and out; each handler's
//! OpenAPI description is written on it, and the document served at
//! `/api/openapi.json` is generated from them.

use axum::Json;
use axum::extract::{Request, State as AxState};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::App;
use super::auth::{Admin, Caller, Read, Trigger, require};
use super::http::{ApiError, ApiResult, P, Q, blocking};
use crate::orchestrate::runs::{deps_of, new_run, parse_logical_date, today};
use crate::orchestrate::schedule::{Timing, rfc3339};
use crate::project::{RouteTarget, Scope};
use crate::state::{RUN_STATUSES, RunFilter, RunRow, now_us};

/// Every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do.
    pub error: String,
}

/// A run.
#[derive(Serialize, ToSchema, Clone)]
pub struct RunOut {
    pub id: String,
    pub pipeline: String,
    /// `queued`, `running`, `success`, `failed` or `cancelled`.
    pub status: String,
    /// `api`, `cli`, `cron`, `every`, `dataset`, `objects`, `backfill`, …
    pub trigger: String,
    /// YYYY-MM-DD.
    pub logical_date: String,
    /// The fire time of a scheduled run (RFC 3339).
    pub scheduled_for: Option<String>,
    pub queued_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_seconds: Option<f64>,
    pub error: Option<String>,
    #[schema(value_type = Object)]
    pub params: Value,
}

impl From<&RunRow> for RunOut {
    fn from(r: &RunRow) -> RunOut {
        let t = |v: Option<i64>| v.map(rfc3339);
        // Event-triggered runs keep their event's id there; it is not a time.
        let timed = matches!(r.trigger.as_str(), "cron" | "every" | "backfill");
        RunOut {
            id: r.id.clone(),
            pipeline: r.pipeline.clone(),
            status: r.status.clone(),
            trigger: r.trigger.clone(),
            logical_date: r.logical_date.clone(),
            scheduled_for: if timed { t(r.scheduled_for) } else { None },
            queued_at: rfc3339(r.queued_at),
            started_at: t(r.started_at),
            finished_at: t(r.finished_at),
            duration_seconds: match (r.started_at, r.finished_at) {
                (Some(s), Some(f)) => Some((f - s) as f64 / 1e6),
                _ => None,
            },
            error: r.error.clone(),
            params: if r.params.is_null() { serde_json::json!({}) } else { r.params.clone() },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunOut>,
}

#[derive(Serialize, ToSchema)]
pub struct StepOut {
    pub name: String,
    pub kind: String,
    pub depends_on: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TriggerOut {
    /// A time trigger, described (`cron "0 0 * * *" in Europe/Helsinki (At 00:00.)`).
    pub schedule: Option<String>,
    pub next_fire: Option<String>,
    pub timezone: Option<String>,
    pub on_dataset: Option<String>,
    pub on_new_objects: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PipelineOut {
    pub name: String,
    pub description: Option<String>,
    pub steps: Vec<StepOut>,
    pub triggers: Vec<TriggerOut>,
    pub max_active_runs: Option<u32>,
    pub concurrency: Option<u32>,
    pub last_run: Option<RunOut>,
}

#[derive(Serialize, ToSchema)]
pub struct PipelineList {
    pub pipelines: Vec<PipelineOut>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptOut {
    pub attempt: i64,
    pub worker: Option<String>,
    /// `running`, `success`, `failed`, `lost`, `abandoned`, `handed_back`.
    pub status: String,
    pub error: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TaskOut {
    pub step: String,
    pub kind: String,
    /// `waiting`, `ready`, `running`, `success`, `failed`, `upstream_failed`, `cancelled`.
    pub status: String,
    pub depends_on: Vec<String>,
    pub attempts: Vec<AttemptOut>,
    pub worker: Option<String>,
    pub next_try_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub summary: Option<String>,
    /// The step's details (rows loaded and rejected, models built, a command's output, quality scores).
    #[schema(value_type = Object)]
    pub output: Value,
}

#[derive(Serialize, ToSchema)]
pub struct TaskList {
    pub run_id: String,
    pub tasks: Vec<TaskOut>,
}

#[derive(Serialize, ToSchema)]
pub struct LogLine {
    pub id: i64,
    pub attempt: i64,
    pub at: String,
    pub level: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct LogList {
    pub run_id: String,
    pub task: String,
    pub logs: Vec<LogLine>,
}

/// 200 while the process runs (also while it waits for the state store).
#[utoipa::path(get, path = "/healthz", tag = "ops", security(()),
    responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// `ok`, or why the state store does not answer.
    pub state_store: String,
}

/// 200 when the state store answers, else 503.
#[utoipa::path(get, path = "/readyz", tag = "ops", security(()),
    responses(
        (status = 200, description = "ready", body = Ready),
        (status = 503, description = "the state store does not answer", body = Ready)))]
pub async fn readyz(AxState(app): AxState<App>) -> Response {
    if !app.state.is_ready() {
        let why = app.state.last_error().unwrap_or_else(|| "not reached yet".into());
        return (StatusCode::SERVICE_UNAVAILABLE, Json(Ready { state_store: why })).into_response();
    }
    let state = app.state.clone();
    match blocking(move || state.pipelines()).await {
        Ok(_) => Json(Ready { state_store: "ok".into() }).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(Ready { state_store: e.1 })).into_response(),
    }
}

/// The OpenAPI document of this API.
pub async fn openapi(AxState(app): AxState<App>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], app.openapi.clone()).into_response()
}

/// The pipelines, their steps, triggers (with the next fire) and last run.
#[utoipa::path(get, path = "/api/pipelines", tag = "runs", security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, body = PipelineList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn pipelines(AxState(app): AxState<App>, _: Read) -> ApiResult {
    let state = app.state.clone();
    let rows = blocking(move || state.pipelines()).await?;
    let loaded = app.project.get();
    let p = &loaded.project;
    let now = now_us();
    let out = p
        .pipelines
        .iter()
        .map(|pl| {
            let row = rows.iter().find(|r| r.name == pl.name.v);
            let triggers = pl
                .triggers
                .iter()
                .map(|t| {
                    let mut o = TriggerOut {
                        schedule: None,
                        next_fire: None,
                        timezone: None,
                        on_dataset: None,
                        on_new_objects: None,
                    };
                    match Timing::of(t, p.timezone()) {
                        Some(Ok(timing)) => {
                            o.schedule = Some(timing.describe());
                            o.next_fire = timing.next_after(now).map(rfc3339);
                            o.timezone = Some(timing.zone().name().to_string());
                        }
                        _ => match &t.kind {
                            crate::project::TriggerKind::OnDataset(d) => o.on_dataset = Some(d.v.clone()),
                            crate::project::TriggerKind::OnNewObjects(x) => {
                                o.on_new_objects = Some(crate::secret::redact_url(&x.v))
                            }
                            _ => {}
                        },
                    }
                    o
                })
                .collect();
            PipelineOut {
                name: pl.name.v.clone(),
                description: pl.description.clone(),
                steps: pl
                    .steps
                    .iter()
                    .map(|s| StepOut { name: s.name.v.clone(), kind: s.kind.name().into(), depends_on: deps_of(pl, s) })
                    .collect(),
                triggers,
                max_active_runs: pl.max_active_runs,
                concurrency: pl.concurrency,
                last_run: row.and_then(|r| r.last_run.as_ref()).map(RunOut::from),
            }
        })
        .collect();
    Ok(Json(PipelineList { pipelines: out }).into_response())
}

/// The optional body of a trigger.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// YYYY-MM-DD, from 1000-01-01 to 9999-12-31 (today in the project's zone by default).
    pub logical_date: Option<String>,
    /// Rebuild incremental models from scratch.
    #[serde(default)]
    pub full_refresh: bool,
}

/// Starts a run of a pipeline.
#[utoipa::path(post, path = "/api/pipelines/{name}/runs", tag = "runs", security(("bearer" = []), ("session" = [])),
    params(("name" = String, Path, description = "the pipeline")),
    request_body(content = Option<TriggerBody>, content_type = "application/json"),
    responses(
        (status = 201, description = "the run, queued or running", body = RunOut),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "no such pipeline", body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn trigger(AxState(app): AxState<App>, _: Trigger, P(name): P<String>, body: axum::body::Bytes) -> ApiResult {
    start_run(&app, &name, "api", &body).await
}

/// Starts a run of `name` from a trigger request's body.
pub async fn start_run(app: &App, name: &str, trigger: &str, body: &[u8]) -> ApiResult {
    let req: TriggerBody = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?
    };
    let loaded = app.project.get();
    let p = &loaded.project;
    if p.pipeline(name).is_err() {
        let names: Vec<&str> = p.pipelines.iter().map(|x| x.name.v.as_str()).collect();
        return Err(ApiError::not_found(format!("no pipeline named `{name}` (pipelines: {})", names.join(", "))));
    }
    let date = match req.logical_date {
        Some(d) => {
            parse_logical_date(&d).map_err(|e| ApiError::bad_request(format!("invalid logical_date {e}")))?.to_string()
        }
        None => today(p),
    };
    let run = new_run(p, name, trigger, date, None, serde_json::json!({}), req.full_refresh)?;
    let state = app.state.clone();
    let row = blocking(move || {
        let id = state.enqueue(&run)?.expect("manual runs are never duplicates");
        state.run(&id)
    })
    .await?;
    let body = row.as_ref().map(RunOut::from);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only this pipeline's runs.
    pipeline: Option<String>,
    /// `queued`, `running`, `success`, `failed` or `cancelled`.
    status: Option<String>,
    /// At most this many (default 100, at most 10000).
    #[param(maximum = 10000)]
    limit: Option<u32>,
}

/// Runs, newest first.
#[utoipa::path(get, path = "/api/runs", tag = "runs", security(("bearer" = []), ("session" = [])),
    params(RunsQuery),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn runs(AxState(app): AxState<App>, _: Read, Q(q): Q<RunsQuery>) -> ApiResult {
    if let Some(s) = &q.status
        && !RUN_STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!("invalid status \"{s}\": one of {}", RUN_STATUSES.join(", "))));
    }
    if q.limit.is_some_and(|l| l > 10_000) {
        return Err(ApiError::bad_request("invalid limit: at most 10000"));
    }
    let f = RunFilter { pipeline: q.pipeline, status: q.status, limit: q.limit };
    let state = app.state.clone();
    let rows = blocking(move || state.runs(&f)).await?;
    Ok(Json(RunList { runs: rows.iter().map(RunOut::from).collect() }).into_response())
}

/// One run.
#[utoipa::path(get, path = "/api/runs/{id}", tag = "runs", security(("bearer" = []), ("session" = [])),
    params(("id" = String, Path, description = "the run's id")),
    responses((status = 200, body = RunOut), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn run(AxState(app): AxState<App>, _: Read, P(id): P<String>) -> ApiResult {
    let (state, key) = (app.state.clone(), id.clone());
    match blocking(move || state.run(&key)).await? {
        Some(r) => Ok(Json(RunOut::from(&r)).into_response()),
        None => Err(ApiError::not_found(format!("no run `{id}`"))),
    }
}

/// A run's tasks, each with its attempts.
pub fn task_list(app: &App, id: &str) -> crate::error::Result<Option<Vec<TaskOut>>> {
    let state = &app.state;
    let Some(_) = state.run(id)? else { return Ok(None) };
    let mut out = Vec::new();
    for t in state.tasks(id)? {
        let attempts = state.attempts(id, &t.step)?;
        let t_ = |v: Option<i64>| v.map(rfc3339);
        out.push(TaskOut {
            attempts: attempts
                .iter()
                .map(|a| AttemptOut {
                    attempt: a.attempt,
                    worker: a.worker.clone(),
                    status: a.status.clone(),
                    error: a.error.clone(),
                    started_at: t_(a.started_at),
                    finished_at: t_(a.finished_at),
                })
                .collect(),
            step: t.step,
            kind: t.kind,
            status: t.status,
            depends_on: t.deps,
            worker: t.worker,
            next_try_at: t_(t.next_try_at),
            started_at: t_(t.started_at),
            finished_at: t_(t.finished_at),
            error: t.error,
            summary: t.summary,
            output: if t.output.is_null() { serde_json::json!({}) } else { t.output },
        });
    }
    Ok(Some(out))
}

/// A run's tasks, with their attempts, errors, summaries and outputs.
#[utoipa::path(get, path = "/api/runs/{id}/tasks", tag = "runs", security(("bearer" = []), ("session" = [])),
    params(("id" = String, Path, description = "the run's id")),
    responses((status = 200, body = TaskList), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn tasks(AxState(app): AxState<App>, _: Read, P(id): P<String>) -> ApiResult {
    let (a, key) = (app.clone(), id.clone());
    match blocking(move || task_list(&a, &key)).await? {
        Some(tasks) => Ok(Json(TaskList { run_id: id, tasks }).into_response()),
        None => Err(ApiError::not_found(format!("no run `{id}`"))),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only lines after this line id (for following a task).
    after: Option<i64>,
}

/// A task's log lines.
#[utoipa::path(get, path = "/api/runs/{id}/tasks/{task}/logs", tag = "runs",
    security(("bearer" = []), ("session" = [])),
    params(("id" = String, Path, description = "the run's id"), ("task" = String, Path, description = "the step"), LogsQuery),
    responses((status = 200, body = LogList), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn logs(
    AxState(app): AxState<App>,
    _: Read,
    P((id, task)): P<(String, String)>,
    Q(q): Q<LogsQuery>,
) -> ApiResult {
    let (state, key, step) = (app.state.clone(), id.clone(), task.clone());
    let found = blocking(move || {
        if !state.tasks(&key)?.iter().any(|t| t.step == step) {
            return Ok(None);
        }
        state.logs(&key, &step, q.after.unwrap_or(0)).map(Some)
    })
    .await?;
    match found {
        None => Err(ApiError::not_found(format!("run `{id}` has no task `{task}`"))),
        Some(lines) => {
            let logs = lines
                .iter()
                .map(|l| LogLine {
                    id: l.id,
                    attempt: l.attempt,
                    at: rfc3339(l.at),
                    level: l.level.clone(),
                    message: l.message.clone(),
                })
                .collect();
            Ok(Json(LogList { run_id: id, task, logs }).into_response())
        }
    }
}

/// Cancels a run: waiting tasks are cancelled, running ones asked to stop.
#[utoipa::path(post, path = "/api/runs/{id}/cancel", tag = "runs", security(("bearer" = []), ("session" = [])),
    params(("id" = String, Path, description = "the run's id")),
    responses(
        (status = 200, description = "the cancelled run", body = RunOut),
        (status = 404, body = ErrorBody), (status = 409, description = "the run had finished", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn cancel(AxState(app): AxState<App>, _: Trigger, P(id): P<String>) -> ApiResult {
    let (state, key) = (app.state.clone(), id.clone());
    let res = blocking(move || {
        let c = state.cancel(&key)?;
        Ok((c, state.run(&key)?))
    })
    .await?;
    match res {
        (None, _) => Err(ApiError::not_found(format!("no run `{id}`"))),
        (Some(false), _) => Err(ApiError(StatusCode::CONFLICT, format!("run `{id}` has already finished"))),
        (Some(true), row) => Ok(Json(row.as_ref().map(RunOut::from)).into_response()),
    }
}

/// A token's record (never the token itself).
#[derive(Serialize, ToSchema)]
pub struct TokenOut {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<&crate::state::tokens::TokenRow> for TokenOut {
    fn from(t: &crate::state::tokens::TokenRow) -> TokenOut {
        TokenOut {
            id: t.id.clone(),
            name: t.name.clone(),
            scope: t.scope.clone(),
            created_at: rfc3339(t.created_at),
            expires_at: t.expires_at.map(rfc3339),
            last_used_at: t.last_used_at.map(rfc3339),
            revoked_at: t.revoked_at.map(rfc3339),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenOut>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// A name to know it by.
    pub name: String,
    /// `read`, `trigger` or `admin`.
    pub scope: String,
    /// How long it lasts (`30d`, `12h`); forever by default.
    pub expires_in: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token: shown this once, stored only hashed.
    pub token: String,
    #[serde(flatten)]
    pub record: TokenOut,
}

/// The tokens (their records; tokens are stored hashed).
#[utoipa::path(get, path = "/api/tokens", tag = "auth", security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = TokenList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn tokens(AxState(app): AxState<App>, _: Admin) -> ApiResult {
    let state = app.state.clone();
    let rows = blocking(move || state.tokens()).await?;
    Ok(Json(TokenList { tokens: rows.iter().map(TokenOut::from).collect() }).into_response())
}

/// Creates a token; the answer holds it, once.
#[utoipa::path(post, path = "/api/tokens", tag = "auth", security(("bearer" = []), ("session" = [])),
    request_body(content = NewToken, content_type = "application/json"),
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn create_token(AxState(app): AxState<App>, _: Admin, body: axum::body::Bytes) -> ApiResult {
    let req: NewToken =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let (name, scope, expires_at) =
        check_new_token(&req.name, &req.scope, req.expires_in.as_deref()).map_err(ApiError::bad_request)?;
    let state = app.state.clone();
    let (row, token) = blocking(move || state.create_token(&name, scope.name(), expires_at)).await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, record: TokenOut::from(&row) })).into_response())
}

/// Checks a new token's name, scope and lifetime (the CLI and the API alike).
pub fn check_new_token(
    name: &str,
    scope: &str,
    expires_in: Option<&str>,
) -> std::result::Result<(String, Scope, Option<i64>), String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err("invalid token name: 1 to 100 characters, no control characters".into());
    }
    let scope = Scope::parse(scope)
        .ok_or_else(|| format!("invalid scope \"{}\": read, trigger or admin", scope.escape_debug()))?;
    let expires_at = match expires_in {
        None => None,
        Some(d) => {
            let d = crate::project::tree::parse_duration(d)?;
            if d.is_zero() || d.as_secs() > 100 * 365 * 86400 {
                return Err("invalid expires_in: more than nothing and at most 100 years".into());
            }
            Some(now_us() + d.as_micros() as i64)
        }
    };
    Ok((name.to_string(), scope, expires_at))
}

/// Revokes a token (by id or name) and ends its sessions.
#[utoipa::path(post, path = "/api/tokens/{id}/revoke", tag = "auth", security(("bearer" = []), ("session" = [])),
    params(("id" = String, Path, description = "the token's id or name")),
    responses((status = 200, body = TokenList), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn revoke_token(AxState(app): AxState<App>, _: Admin, P(id): P<String>) -> ApiResult {
    let (state, key) = (app.state.clone(), id.clone());
    let rows = blocking(move || state.revoke_token(&key)).await?;
    app.auth.forget();
    if rows.is_empty() {
        return Err(ApiError::not_found(format!("no live token `{id}`")));
    }
    Ok(Json(TokenList { tokens: rows.iter().map(TokenOut::from).collect() }).into_response())
}

/// What no route matched: a `[[routes]]` path, else 404.
pub async fn fallback(AxState(app): AxState<App>, Caller(p): Caller, req: Request) -> ApiResult {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let route = app.project.get().project.config.serve.routes.iter().find(|r| r.path.v == path).cloned();
    let Some(route) = route else {
        return Err(ApiError::not_found("no such endpoint"));
    };
    let method = req.method().clone();
    match &route.target {
        RouteTarget::Model(m) if method == Method::GET || method == Method::HEAD => {
            require(&p, Scope::Read)?;
            let (parts, _) = req.into_parts();
            super::data::serve_model(&app, &m.v, &parts).await
        }
        RouteTarget::Pipeline(pl) if method == Method::POST => {
            require(&p, Scope::Trigger)?;
            let body = axum::body::to_bytes(req.into_body(), app.limits.body)
                .await
                .map_err(|_| ApiError(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large".into()))?;
            start_run(&app, &pl.v, "api", &body).await
        }
        _ => Err(ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed on {path} (allowed: {})", route.method()),
        )),
    }
}
