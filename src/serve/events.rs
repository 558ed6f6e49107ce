//! Live progress as server-sent events. `GET /api/events?run=ID` sends the
//! run with its tasks whenever either changes, and ends once the run has
//! finished; without `run`, it sends the latest runs whenever they change.
//! The state store is the source (any worker's progress shows), looked at
//! twice a second per stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State as AxState;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use super::App;
use super::api::{RunOut, task_list};
use super::auth::Read;
use super::http::{ApiError, Q, blocking};
use crate::state::RunFilter;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Follow this run (else the latest runs).
    run: Option<String>,
}

const LOOK_EVERY: Duration = Duration::from_millis(500);

struct Follow {
    app: App,
    run: Option<String>,
    last: String,
    done: bool,
}

/// What changed since the last look, if anything: (event name, data, finished).
async fn look(f: &Follow) -> Result<Option<(String, String, bool)>, ApiError> {
    let app = f.app.clone();
    match f.run.clone() {
        Some(id) => {
            let a = app.clone();
            let found = blocking(move || {
                let Some(run) = a.state.run(&id)? else { return Ok(None) };
                Ok(task_list(&a, &id)?.map(|t| (run, t)))
            })
            .await?;
            let Some((run, tasks)) = found else {
                return Ok(Some(("error".into(), json!({ "error": "no such run" }).to_string(), true)));
            };
            let finished = matches!(run.status.as_str(), "success" | "failed" | "cancelled");
            let data = json!({ "run": RunOut::from(&run), "tasks": tasks }).to_string();
            Ok(if data == f.last { None } else { Some(("run".into(), data, finished)) })
        }
        None => {
            let state = app.state.clone();
            let rows =
                blocking(move || state.runs(&RunFilter { pipeline: None, status: None, limit: Some(20) })).await?;
            let data = json!({ "runs": rows.iter().map(RunOut::from).collect::<Vec<_>>() }).to_string();
            Ok(if data == f.last { None } else { Some(("runs".into(), data, false)) })
        }
    }
}

fn events_of(f: Follow) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(f, |mut f| async move {
        if f.done {
            return None;
        }
        loop {
            match look(&f).await {
                Ok(Some((name, data, finished))) => {
                    f.last = data.clone();
                    f.done = finished;
                    return Some((Ok(Event::default().event(name).data(data)), f));
                }
                Ok(None) => {}
                Err(e) => {
                    // The store did not answer: say so, and keep looking.
                    let ev = Event::default().event("error").data(json!({ "error": e.1 }).to_string());
                    tokio::time::sleep(LOOK_EVERY).await;
                    return Some((Ok(ev), f));
                }
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    })
}

/// Live progress, as server-sent events.
///
/// `run` events (a run and its tasks) while following one run, ending when
/// it finishes; `runs` events (the latest 20) otherwise.
#[utoipa::path(get, path = "/api/events", tag = "runs", security(("bearer" = []), ("session" = [])),
    params(EventsQuery),
    responses((status = 200, description = "an event stream", content_type = "text/event-stream", body = String),
        (status = 401, body = super::api::ErrorBody), (status = 404, body = super::api::ErrorBody)))]
pub async fn events(AxState(app): AxState<App>, _: Read, Q(q): Q<EventsQuery>) -> Result<Response, ApiError> {
    if let Some(id) = &q.run {
        let (state, key) = (app.state.clone(), id.clone());
        if blocking(move || state.run(&key)).await?.is_none() {
            return Err(ApiError::not_found(format!("no run `{id}`")));
        }
    }
    let f = Follow { app, run: q.run, last: String::new(), done: false };
    Ok(Sse::new(events_of(f)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}
