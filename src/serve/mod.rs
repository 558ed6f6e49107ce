//! The HTTP layer: the control API, published data, the dashboard, the
//! `sluice docs` site, metrics and the OpenAPI document, served by axum on
//! a small runtime of its own. It sits above `orchestrate` (runs, triggers)
//! and below `cli`. Handlers never block the runtime: the state store and
//! the warehouses are called on blocking threads (`http::blocking`).
//!
//! Every request passes, outermost first: `json_errors` (every error is
//! `{"error": …}` JSON), the request metrics, `cors`, `guard` (header limit,
//! browser rules, NUL/UTF-8 checks), `until_ready` (503 until the state
//! store has answered once), `authenticate` (token, session or
//! anonymous; rate limit), the body limit, then its route. Routes declare
//! the scope they need in their signature (`auth::Read` …).

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod data;
pub mod docs;
pub mod events;
pub mod http;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Error, Result};
use crate::orchestrate::runs::Shared;
use crate::orchestrate::worker::Shutdown;
use crate::project::serve::Limits;
use crate::state::State;
pub use http::Access;

/// What every handler shares.
pub struct Inner {
    pub state: Arc<State>,
    pub project: Arc<Shared>,
    pub access: Access,
    /// Fixed at start (`[limits]`: a change needs a restart).
    pub limits: Limits,
    pub auth: auth::Auth,
    pub data: data::Data,
    pub metrics: metrics::Http,
    /// The OpenAPI document, rendered once.
    pub openapi: String,
}

#[derive(Clone)]
pub struct App(Arc<Inner>);

impl std::ops::Deref for App {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice",
        description = "The control API of Sluice: pipelines, runs, tasks and their logs, published models' data, tokens. \
Authenticate with `Authorization: Bearer <token>` (`sluice token create --scope read|trigger|admin`); every error is `{\"error\": \"…\"}`."
    ),
    modifiers(&Security),
    tags(
        (name = "runs", description = "pipelines, runs, tasks, logs"),
        (name = "data", description = "published models"),
        (name = "auth", description = "tokens and the dashboard's login"),
        (name = "ops", description = "health and metrics")
    )
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("sluice_…").build()),
        );
        c.add_security_scheme("session", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::COOKIE))));
    }
}

/// The routes and the OpenAPI document generated from them.
fn routes() -> (axum::Router<App>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::healthz))
        .routes(routes!(api::readyz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(api::pipelines))
        .routes(routes!(api::trigger))
        .routes(routes!(api::runs))
        .routes(routes!(api::run))
        .routes(routes!(api::tasks))
        .routes(routes!(api::logs))
        .routes(routes!(api::cancel))
        .routes(routes!(events::events))
        .routes(routes!(data::models))
        .routes(routes!(data::data))
        .routes(routes!(data::quality))
        .routes(routes!(api::tokens, api::create_token))
        .routes(routes!(api::revoke_token))
        .routes(routes!(auth::session))
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .split_for_parts()
}

/// The OpenAPI document of this API, as JSON.
pub fn openapi_json() -> String {
    routes().1.to_pretty_json().expect("the OpenAPI document serializes")
}

/// The whole application: routes, the dashboard, and the layers every
/// request passes.
pub fn router(state: Arc<State>, project: Arc<Shared>, access: Access) -> axum::Router {
    let limits = project.get().project.config.serve.limits.clone();
    let (api, doc) = routes();
    let openapi = doc.to_pretty_json().expect("the OpenAPI document serializes");
    let app = App(Arc::new(Inner {
        state,
        project,
        access,
        limits: limits.clone(),
        auth: auth::Auth::default(),
        data: data::Data::default(),
        metrics: metrics::Http::default(),
        openapi,
    }));
    api.route("/api/openapi.json", get(api::openapi))
        .route("/", get(dashboard::root))
        .route("/ui", get(dashboard::index))
        .route("/ui/", get(dashboard::index))
        .route("/assets/{*file}", get(dashboard::asset))
        .route("/docs", get(docs::redirect))
        .route("/docs/", get(docs::index))
        .route("/docs/{*path}", get(docs::page))
        .fallback(api::fallback)
        .layer(axum::extract::DefaultBodyLimit::max(limits.body))
        .layer(axum::middleware::from_fn_with_state(app.clone(), auth::authenticate))
        .layer(axum::middleware::from_fn_with_state(app.clone(), http::until_ready))
        .layer(axum::middleware::from_fn_with_state(app.clone(), http::guard))
        .layer(axum::middleware::from_fn_with_state(app.clone(), http::cors))
        .layer(axum::middleware::from_fn_with_state(app.clone(), metrics::track))
        .layer(axum::middleware::from_fn(http::json_errors))
        .with_state(app)
}

/// Serves on `listen` until `shutdown`. Fails at once when the address
/// cannot be bound.
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
        tracing::info!(target: "api", "listening on http://{bound} (dashboard: http://{bound}/ui)");
        let access = Access::for_listen(&addr);
        let anonymous = project.get().project.config.serve.auth.anonymous;
        if !access.loopback && anonymous.is_some_and(|s| s >= crate::project::Scope::Trigger) {
            for line in [
                format!(
                    "the API listens on {bound}, beyond this machine, and [auth] anonymous = \"trigger\": NO AUTHENTICATION for runs:"
                ),
                "anyone who can reach this address can read every run and start and cancel pipelines.".into(),
                "Set [auth] anonymous = \"read\" or \"none\" and use tokens (sluice token create), or listen on 127.0.0.1."
                    .into(),
            ] {
                tracing::warn!(target: "api", "{line}");
            }
        }
        let app = router(state, project, access);
        let stop = async move {
            while !shutdown.is_set() {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(stop)
            .await
            .map_err(|e| Error::external(format!("the API server failed: {e}"), false))?;
        tracing::info!(target: "api", "stopped");
        Ok(())
    })
}
