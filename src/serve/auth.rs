//! Who is calling and what they may do. A request carries a bearer token
//! (`Authorization: Bearer sluice_…`), or the dashboard's session cookie, or
//! nothing (anonymous: what `[auth] anonymous` allows, nothing by default).
//! `authenticate` turns that into a [`Principal`] before routing and applies
//! the rate limit; handlers state the scope they need in their signature
//! ([`Read`], [`Trigger`], [`Admin`]), so a route cannot forget to check.
//!
//! The session cookie is `HttpOnly` and `SameSite=Strict`; a write made
//! with it must also carry `X-CSRF-Token` (derived from the session, given
//! to the dashboard by `GET /api/session`), which no other origin can read.
//! Lookups are cached for a second, so a revoked token stops working within
//! a second on every API process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State as AxState};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::App;
use super::http::{ApiError, ApiResult, blocking};
use crate::project::Scope;
use crate::state::now_us;
use crate::state::tokens::{TokenRow, hash_secret};

/// The dashboard's session cookie.
pub const COOKIE: &str = "sluice_session";
/// The header a session's writes carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    /// What they may do (`None`: nothing but the public routes).
    pub scope: Option<Scope>,
    pub token: Option<TokenRow>,
    pub via: Via,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Via {
    Bearer,
    /// The dashboard's cookie; `csrf` is what its writes must carry.
    Session {
        csrf: String,
        expires_at: i64,
    },
    Anonymous,
}

/// A cached lookup: when it was made, and the token found (with its expiry).
type CachedLookup = (Instant, Option<(TokenRow, Option<i64>)>);

/// Token and session lookups (cached briefly) and the rate limiter.
#[derive(Default)]
pub struct Auth {
    cache: Mutex<HashMap<String, CachedLookup>>,
    touched: Mutex<HashMap<String, Instant>>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

const CACHE_FOR: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The CSRF value of a session (derived, so nothing more is stored).
pub fn csrf_of(session_secret: &str) -> String {
    hash_secret(&format!("csrf:{session_secret}"))
}

impl Auth {
    /// The token (and for a session, its end) behind a hashed secret.
    async fn lookup(&self, app: &App, key: String, session: bool) -> Result<Option<(TokenRow, Option<i64>)>, ApiError> {
        if let Some((at, v)) = self.cache.lock().expect("auth cache").get(&key)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(v.clone());
        }
        let state = app.state.clone();
        let k = key.clone();
        let found = blocking(move || {
            if session {
                Ok(state.session(&k)?.map(|(t, end)| (t, Some(end))))
            } else {
                Ok(state.token_by_hash(&k)?.map(|t| (t, None)))
            }
        })
        .await?;
        let mut cache = self.cache.lock().expect("auth cache");
        if cache.len() > 10_000 {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
        }
        cache.insert(key, (Instant::now(), found.clone()));
        Ok(found)
    }

    /// Forgets cached lookups (after a revoke or a logout in this process).
    pub fn forget(&self) {
        self.cache.lock().expect("auth cache").clear();
    }

    /// Takes one request from `key`'s bucket; `Err(seconds)` to wait when empty.
    fn take(&self, key: &str, rate: f64, burst: f64) -> Result<(), f64> {
        if rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate buckets");
        if buckets.len() > 50_000 {
            buckets.retain(|_, b| now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry(key.to_string()).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - b.tokens) / rate)
        }
    }

    /// Records a token's use, at most once a minute per token.
    fn touch(&self, app: &App, id: &str) {
        let mut t = self.touched.lock().expect("touched");
        if t.get(id).is_some_and(|at| at.elapsed() < Duration::from_secs(60)) {
            return;
        }
        t.insert(id.to_string(), Instant::now());
        let (state, id) = (app.state.clone(), id.to_string());
        tokio::task::spawn_blocking(move || {
            let _ = state.touch_token(&id, now_us());
        });
    }
}

fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn unauthorized(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::UNAUTHORIZED, msg.into())
}

/// Resolves the caller, applies the rate limit, and passes the request on
/// with its [`Principal`].
pub async fn authenticate(
    AxState(app): AxState<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    match resolve(&app, peer, &mut req).await {
        Ok(Ok(())) => next.run(req).await,
        Ok(Err(limited)) => limited,
        Err(e) => e.into_response(),
    }
}

/// `Ok(Err(answer))`: the rate limit's 429, with its `Retry-After`.
async fn resolve(app: &App, peer: SocketAddr, req: &mut Request) -> Result<Result<(), Response>, ApiError> {
    let cfg = app.project.get().project.config.serve.clone();
    let now = now_us();
    let headers = req.headers();
    let principal = if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let raw = auth.to_str().unwrap_or("");
        let Some(token) = raw.strip_prefix("Bearer ").or_else(|| raw.strip_prefix("bearer ")).map(str::trim) else {
            return Err(unauthorized("the Authorization header must be `Bearer <token>`"));
        };
        match app.auth.lookup(app, hash_secret(token), false).await? {
            None => return Err(unauthorized("unknown token: create one with `sluice token create --scope read`")),
            Some((t, _)) if t.revoked_at.is_some() => {
                return Err(unauthorized(format!("token `{}` ({}) was revoked", t.name, t.id)));
            }
            Some((t, _)) if !t.live(now) => {
                return Err(unauthorized(format!("token `{}` ({}) has expired", t.name, t.id)));
            }
            Some((t, _)) => {
                app.auth.touch(app, &t.id);
                Principal { scope: Scope::parse(&t.scope), token: Some(t), via: Via::Bearer }
            }
        }
    } else if let Some(secret) = cookie(headers, COOKIE).filter(|s| !s.is_empty()) {
        let csrf = csrf_of(secret);
        match app.auth.lookup(app, hash_secret(secret), true).await? {
            Some((t, end)) if t.live(now) && end.is_some_and(|e| e > now) => Principal {
                scope: Scope::parse(&t.scope),
                token: Some(t),
                via: Via::Session { csrf, expires_at: end.unwrap_or(0) },
            },
            // A stale cookie is no login: the caller is anonymous.
            _ => Principal { scope: cfg.auth.anonymous, token: None, via: Via::Anonymous },
        }
    } else {
        Principal { scope: cfg.auth.anonymous, token: None, via: Via::Anonymous }
    };
    if let Via::Session { csrf, .. } = &principal.via {
        let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let sent = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if unsafe_method && !constant_eq(sent, csrf) && !is_auth_route(req.uri().path()) {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "a write with the dashboard's session must carry its X-CSRF-Token header (from GET /api/session)"
                    .into(),
            ));
        }
    }
    let key = match &principal.token {
        Some(t) => format!("token:{}", t.id),
        None => format!("addr:{}", peer.ip()),
    };
    if let Err(wait) = app.auth.take(&key, cfg.limits.rate, cfg.limits.burst) {
        let secs = wait.ceil().max(1.0) as u64;
        let mut r = ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many requests: the limit is {} a second ([limits] rate); try again in {secs} s",
                cfg.limits.rate
            ),
        )
        .into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Ok(Err(r));
    }
    req.extensions_mut().insert(principal);
    Ok(Ok(()))
}

fn is_auth_route(path: &str) -> bool {
    path == "/login" || path == "/logout"
}

fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A handler's requirement: the caller has at least scope `L` (1 read,
/// 2 trigger, 3 admin). Rejects with 401 (no or bad credentials) or 403 (a
/// token whose scope is too small).
pub struct Need<const L: u8>(pub Principal);

pub type Read = Need<1>;
pub type Trigger = Need<2>;
pub type Admin = Need<3>;

fn level(l: u8) -> Scope {
    match l {
        1 => Scope::Read,
        2 => Scope::Trigger,
        _ => Scope::Admin,
    }
}

/// Whether `p` may do what needs `need`; the error to answer otherwise.
pub fn require(p: &Principal, need: Scope) -> Result<(), ApiError> {
    if p.scope.is_some_and(|s| s >= need) {
        return Ok(());
    }
    let n = need.name();
    Err(match &p.token {
        None => unauthorized(format!(
            "this needs a token with scope `{n}`: send Authorization: Bearer <token> \
             (create one with `sluice token create --scope {n}`)"
        )),
        Some(t) => {
            ApiError(StatusCode::FORBIDDEN, format!("token `{}` has scope `{}`; this needs `{n}`", t.name, t.scope))
        }
    })
}

impl<const L: u8, S: Send + Sync> FromRequestParts<S> for Need<L> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let p = parts.extensions.get::<Principal>().cloned().unwrap_or(Principal {
            scope: None,
            token: None,
            via: Via::Anonymous,
        });
        require(&p, level(L))?;
        Ok(Need(p))
    }
}

/// The caller, whatever their scope (public routes).
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Caller(parts.extensions.get::<Principal>().cloned().unwrap_or(Principal {
            scope: None,
            token: None,
            via: Via::Anonymous,
        })))
    }
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// A token made with `sluice token create`.
    pub token: String,
}

/// What the dashboard knows about its login.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SessionInfo {
    /// Whether the caller sent a live token or session.
    pub authenticated: bool,
    /// The token's name.
    pub name: Option<String>,
    /// `read`, `trigger`, `admin`, or null (nothing).
    pub scope: Option<String>,
    /// What callers without a token may do.
    pub anonymous: Option<String>,
    /// The value a session's writes send as `X-CSRF-Token`.
    pub csrf: Option<String>,
    /// When the session ends (RFC 3339).
    pub expires_at: Option<String>,
}

fn session_info(app: &App, p: &Principal) -> SessionInfo {
    let anon = app.project.get().project.config.serve.auth.anonymous;
    let (csrf, expires_at) = match &p.via {
        Via::Session { csrf, expires_at } => {
            (Some(csrf.clone()), Some(crate::orchestrate::schedule::rfc3339(*expires_at)))
        }
        _ => (None, None),
    };
    SessionInfo {
        authenticated: p.token.is_some(),
        name: p.token.as_ref().map(|t| t.name.clone()),
        scope: p.scope.map(|s| s.name().to_string()),
        anonymous: anon.map(|s| s.name().to_string()),
        csrf,
        expires_at,
    }
}

/// Who the caller is.
#[utoipa::path(get, path = "/api/session", tag = "auth",
    responses((status = 200, description = "the caller's login", body = SessionInfo)))]
pub async fn session(AxState(app): AxState<App>, Caller(p): Caller) -> Json<SessionInfo> {
    Json(session_info(&app, &p))
}

/// Logs the dashboard in with a token: sets the session cookie.
#[utoipa::path(post, path = "/login", tag = "auth", request_body = LoginBody,
    responses(
        (status = 200, description = "logged in; the cookie is set", body = SessionInfo),
        (status = 400, description = "a malformed body", body = super::api::ErrorBody),
        (status = 401, description = "an unknown, revoked or expired token", body = super::api::ErrorBody)))]
pub async fn login(AxState(app): AxState<App>, headers: axum::http::HeaderMap, body: axum::body::Bytes) -> ApiResult {
    let req: LoginBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let now = now_us();
    let token = match app.auth.lookup(&app, hash_secret(req.token.trim()), false).await? {
        Some((t, _)) if t.live(now) => t,
        Some((t, _)) => return Err(unauthorized(format!("token `{}` was revoked or has expired", t.name))),
        None => return Err(unauthorized("unknown token: create one with `sluice token create --scope read`")),
    };
    let lasts = app.project.get().project.config.serve.auth.session;
    let (state, id) = (app.state.clone(), token.id.clone());
    let secret = blocking(move || state.create_session(&id, lasts.as_micros() as i64)).await?;
    let secure = headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        lasts.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let p = Principal {
        scope: Scope::parse(&token.scope),
        via: Via::Session { csrf: csrf_of(&secret), expires_at: now + lasts.as_micros() as i64 },
        token: Some(token),
    };
    let mut r = Json(session_info(&app, &p)).into_response();
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("cookie text is ASCII"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Ends the dashboard's session.
#[utoipa::path(post, path = "/logout", tag = "auth",
    responses((status = 200, description = "logged out; the cookie is cleared")))]
pub async fn logout(AxState(app): AxState<App>, headers: axum::http::HeaderMap) -> ApiResult {
    if let Some(secret) = cookie(&headers, COOKIE) {
        let (state, h) = (app.state.clone(), hash_secret(secret));
        blocking(move || state.end_session(&h)).await?;
        app.auth.forget();
    }
    let mut r = Json(json!({ "authenticated": false })).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sluice_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_buckets_refill_at_the_rate() {
        let a = Auth::default();
        assert!(a.take("k", 0.0, 1.0).is_ok(), "0: no limit");
        for _ in 0..3 {
            assert!(a.take("k", 1.0, 3.0).is_ok());
        }
        let wait = a.take("k", 1.0, 3.0).unwrap_err();
        assert!(wait > 0.9 && wait <= 1.0, "{wait}");
        assert!(a.take("other", 1.0, 3.0).is_ok(), "buckets are per key");
    }

    #[test]
    fn scopes_include_the_ones_below() {
        let p = |s| Principal { scope: s, token: None, via: Via::Anonymous };
        assert!(require(&p(Some(Scope::Admin)), Scope::Trigger).is_ok());
        assert!(require(&p(Some(Scope::Trigger)), Scope::Read).is_ok());
        assert_eq!(require(&p(Some(Scope::Read)), Scope::Trigger).unwrap_err().0, StatusCode::UNAUTHORIZED);
        assert_eq!(require(&p(None), Scope::Read).unwrap_err().0, StatusCode::UNAUTHORIZED);
        assert!(constant_eq("abc", "abc") && !constant_eq("abc", "abd") && !constant_eq("ab", "abc"));
    }
}
