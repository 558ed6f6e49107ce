//! Commands for operating a deployment from a terminal: `sluice token`
//! (create, list, revoke API tokens), `sluice runs`, `sluice logs RUN
//! [TASK]` (with `--follow`), `sluice status`, and `sluice openapi`. They
//! read the state store directly, like the API does.

use std::io::Write as _;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::orchestrate::runs::open_state;
use crate::orchestrate::schedule::rfc3339;
use crate::state::{RUN_STATUSES, RunFilter, State, now_us};

use super::ProjectArgs;
use super::services::StateArgs;

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once (the state store keeps only its hash).
    Create {
        #[command(flatten)]
        project: ProjectArgs,
        #[command(flatten)]
        state: StateArgs,
        /// What it may do: read (runs, logs, data, metrics), trigger (also start and cancel runs), admin (also tokens).
        #[arg(long, value_parser = ["read", "trigger", "admin"])]
        scope: String,
        /// A name to know it by.
        #[arg(long, default_value = "token")]
        name: String,
        /// How long it lasts (30d, 12h); forever by default.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List tokens (never the tokens themselves).
    List {
        #[command(flatten)]
        project: ProjectArgs,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Revoke a token by id or name; its dashboard sessions end too.
    Revoke {
        #[command(flatten)]
        project: ProjectArgs,
        #[command(flatten)]
        state: StateArgs,
        /// The token's id (tok_…) or name.
        id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// Only this pipeline's runs.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Only runs with this status.
    #[arg(long, value_parser = ["queued", "running", "success", "failed", "cancelled"])]
    pub status: Option<String>,
    /// How many (newest first).
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: u32,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// The run's id (or a unique prefix of it).
    pub run: String,
    /// Only this task (step).
    pub task: Option<String>,
    /// Keep printing new lines until the run (or the task) has finished.
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

fn state(project: &ProjectArgs, st: &StateArgs) -> Result<State> {
    let (p, _) = crate::plan::open_with(&project.project, &project.options())?;
    open_state(&p, st.state.as_deref())
}

/// Writes to stdout; a closed pipe (`| head`) ends the command quietly.
struct Out(std::io::StdoutLock<'static>);

impl Out {
    fn new() -> Out {
        Out(std::io::stdout().lock())
    }
    fn line(&mut self, s: &str) -> std::result::Result<(), Closed> {
        writeln!(self.0, "{s}").and_then(|_| self.0.flush()).map_err(|_| Closed)
    }
}

/// The reader went away: stop printing, exit 0.
struct Closed;

pub fn token(a: TokenArgs) -> Result<i32> {
    let mut out = Out::new();
    let r: std::result::Result<(), Closed> = match a.command {
        TokenCommand::Create { project, state: st, scope, name, expires_in } => {
            let (name, scope, expires_at) =
                crate::serve::api::check_new_token(&name, &scope, expires_in.as_deref()).map_err(Error::user)?;
            let s = state(&project, &st)?;
            let (row, token) = s.create_token(&name, scope.name(), expires_at)?;
            errln!(
                "created token {} `{}` with scope {}{}; it is shown once, keep it secret:",
                row.id,
                row.name,
                row.scope,
                row.expires_at.map(|e| format!(", expiring {}", rfc3339(e))).unwrap_or_default()
            );
            out.line(&token)
        }
        TokenCommand::List { project, state: st } => {
            let s = state(&project, &st)?;
            let rows = s.tokens()?;
            let now = now_us();
            (|| {
                out.line(&format!(
                    "{:<16} {:<20} {:<8} {:<10} {:<24} {}",
                    "ID", "NAME", "SCOPE", "STATE", "CREATED", "LAST USED"
                ))?;
                for t in &rows {
                    let st = if t.revoked_at.is_some() {
                        "revoked"
                    } else if !t.live(now) {
                        "expired"
                    } else {
                        "active"
                    };
                    out.line(&format!(
                        "{:<16} {:<20} {:<8} {:<10} {:<24} {}",
                        t.id,
                        t.name,
                        t.scope,
                        st,
                        rfc3339(t.created_at),
                        t.last_used_at.map(rfc3339).unwrap_or_else(|| "never".into())
                    ))?;
                }
                Ok(())
            })()
        }
        TokenCommand::Revoke { project, state: st, id } => {
            let s = state(&project, &st)?;
            let rows = s.revoke_token(&id)?;
            if rows.is_empty() {
                return Err(Error::user(format!("no live token with id or name `{id}` (see `sluice token list`)")));
            }
            (|| {
                for t in &rows {
                    out.line(&format!("revoked {} `{}` ({})", t.id, t.name, t.scope))?;
                }
                Ok(())
            })()
        }
    };
    let _ = r;
    Ok(0)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(13)]
}

fn ago(us: i64) -> String {
    let s = (now_us() - us) / 1_000_000;
    match s {
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    }
}

pub fn runs(a: RunsArgs) -> Result<i32> {
    let s = state(&a.project, &a.state)?;
    let rows = s.runs(&RunFilter { pipeline: a.pipeline.clone(), status: a.status.clone(), limit: Some(a.limit) })?;
    let mut out = Out::new();
    let _: std::result::Result<(), Closed> = (|| {
        if a.json {
            for r in &rows {
                out.line(&serde_json::to_string(&crate::serve::api::RunOut::from(r)).expect("JSON"))?;
            }
            return Ok(());
        }
        if rows.is_empty() {
            return out.line("no runs yet (start one with `sluice run`, the API or the dashboard)");
        }
        out.line(&format!(
            "{:<36} {:<16} {:<10} {:<8} {:<10} {:<9} {:>9}  {}",
            "RUN", "PIPELINE", "STATUS", "TRIGGER", "DATE", "QUEUED", "TOOK", "ERROR"
        ))?;
        for r in &rows {
            let took = match (r.started_at, r.finished_at) {
                (Some(s), Some(f)) => format!("{:.1}s", (f - s) as f64 / 1e6),
                (Some(s), None) => format!("{:.0}s…", (now_us() - s) as f64 / 1e6),
                _ => "-".into(),
            };
            let err = r.error.as_deref().unwrap_or("").lines().next().unwrap_or("");
            let err: String = err.chars().take(80).collect();
            out.line(&format!(
                "{:<36} {:<16} {:<10} {:<8} {:<10} {:<9} {:>9}  {err}",
                r.id,
                r.pipeline,
                r.status,
                r.trigger,
                r.logical_date,
                ago(r.queued_at),
                took
            ))?;
        }
        Ok(())
    })();
    Ok(0)
}

/// The run whose id is `id` or starts with it.
fn find_run(s: &State, id: &str) -> Result<crate::state::RunRow> {
    if let Some(r) = s.run(id)? {
        return Ok(r);
    }
    let all = s.runs(&RunFilter { pipeline: None, status: None, limit: Some(10_000) })?;
    let hits: Vec<_> = all.into_iter().filter(|r| r.id.starts_with(id)).collect();
    match hits.len() {
        1 => Ok(hits.into_iter().next().expect("one")),
        0 => Err(Error::user(format!("no run `{id}` (see `sluice runs`)"))),
        n => Err(Error::user(format!("`{id}` is the start of {n} runs' ids; give more of it"))),
    }
}

pub fn logs(a: LogsArgs) -> Result<i32> {
    let s = state(&a.project, &a.state)?;
    let run = find_run(&s, &a.run)?;
    let tasks = s.tasks(&run.id)?;
    if let Some(t) = &a.task
        && !tasks.iter().any(|x| &x.step == t)
    {
        let names: Vec<&str> = tasks.iter().map(|x| x.step.as_str()).collect();
        return Err(Error::user(format!("run `{}` has no task `{t}` (tasks: {})", short(&run.id), names.join(", "))));
    }
    let mut out = Out::new();
    let mut after: std::collections::HashMap<String, i64> = Default::default();
    let mut shown_output: std::collections::HashSet<String> = Default::default();
    let many = a.task.is_none();
    let r: std::result::Result<(), Closed> = (|| {
        loop {
            let tasks = s.tasks(&run.id).map_err(|_| Closed)?;
            let chosen: Vec<_> = tasks.iter().filter(|t| a.task.as_ref().is_none_or(|x| x == &t.step)).collect();
            for t in &chosen {
                let from = after.get(&t.step).copied().unwrap_or(0);
                for l in s.logs(&run.id, &t.step, from).map_err(|_| Closed)? {
                    let who = if many { format!("{} ", t.step) } else { String::new() };
                    out.line(&format!("{} {who}{:<5} {}", rfc3339(l.at), l.level, l.message))?;
                    after.insert(t.step.clone(), l.id);
                }
                // A command step's output is kept with its result.
                if t.status == "success"
                    && let Some(text) = t.output["details"]["output"].as_str()
                    && !text.is_empty()
                    && shown_output.insert(t.step.clone())
                {
                    let who = if many { format!("{} ", t.step) } else { String::new() };
                    for line in text.lines() {
                        out.line(&format!("{who}| {line}"))?;
                    }
                }
            }
            let ended = |st: &str| matches!(st, "success" | "failed" | "upstream_failed" | "cancelled");
            let done = chosen.iter().all(|t| ended(&t.status));
            if !a.follow || done {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })();
    let _ = r;
    Ok(0)
}

pub fn status(a: StatusArgs) -> Result<i32> {
    let s = state(&a.project, &a.state)?;
    let counts = s.counts()?;
    let workers = s.workers()?;
    let unserved = s.unserved_pools()?;
    let now = now_us();
    let mut out = Out::new();
    let _: std::result::Result<(), Closed> = (|| {
        out.line(&format!("state store   {}", s.describe()))?;
        let live: Vec<_> =
            workers.iter().filter(|w| w.4.is_none() && now - w.3 < crate::state::LIVE_WORKER_US).collect();
        out.line(&format!("workers       {} alive ({} known)", live.len(), workers.len()))?;
        for w in &live {
            let pools = if w.5 == "*" { "every pool".to_string() } else { format!("pool {}", w.5) };
            out.line(&format!("  {:<40} {pools}, {} slots, heartbeat {}", w.0, w.2, ago(w.3)))?;
        }
        out.line(&format!("queue         {} task(s) ready, waiting for a worker", counts.queue_depth))?;
        for u in &unserved {
            out.line(&format!(
                "  {} ready task(s) in pool `{}`: no live worker serves it (start one: sluice worker --pool {})",
                u.ready, u.pool, u.pool
            ))?;
        }
        if counts.scheduler_lag > 5.0 {
            out.line(&format!(
                "scheduler     a schedule is {:.0}s overdue: is a scheduler running (`sluice scheduler` or `sluice serve`)?",
                counts.scheduler_lag
            ))?;
        } else {
            out.line("scheduler     on time")?;
        }
        let mut by: std::collections::BTreeMap<&str, i64> = Default::default();
        for (_, st, n) in &counts.runs {
            *by.entry(st.as_str()).or_default() += n;
        }
        let parts: Vec<String> =
            RUN_STATUSES.iter().map(|st| format!("{} {st}", by.get(st).copied().unwrap_or(0))).collect();
        out.line(&format!("runs          {}", parts.join(", ")))?;
        for r in
            s.runs(&RunFilter { pipeline: None, status: Some("running".into()), limit: Some(10) }).unwrap_or_default()
        {
            out.line(&format!("  running {}  {} for {}", r.id, r.pipeline, r.logical_date))?;
        }
        Ok(())
    })();
    Ok(0)
}

/// Prints the API's OpenAPI document.
pub fn openapi() -> Result<i32> {
    let mut out = Out::new();
    let _ = out.line(&crate::serve::openapi_json());
    Ok(0)
}

#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// The URL to check (http:// only; a loopback address in a container).
    #[arg(env = "SLUICE_HEALTHCHECK_URL", default_value = "http://127.0.0.1:8080/healthz", value_name = "URL")]
    pub url: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "5s", value_parser = |s: &str| crate::project::tree::parse_duration(s))]
    pub timeout: Duration,
}

/// GET `url`; exit 0 on a 2xx answer, 1 on any other answer or none (the
/// reason on stderr). Plain HTTP/1.1 over a socket: a distroless image has
/// no curl or wget, and the check must cost next to nothing.
pub fn healthcheck(a: HealthcheckArgs) -> Result<i32> {
    match probe(&a.url, a.timeout) {
        Ok((code, _)) if (200..300).contains(&code) => Ok(0),
        Ok((code, body)) => {
            errln!("{}: HTTP {code}: {}", a.url, body.trim());
            Ok(1)
        }
        Err(e) => {
            errln!("{}: {e}", a.url);
            Ok(1)
        }
    }
}

/// The status code and body of `GET url`.
fn probe(url: &str, timeout: Duration) -> std::result::Result<(u16, String), String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs can be checked")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port =
        if authority.rsplit(':').next().is_some_and(|p| p.parse::<u16>().is_ok()) && !authority.ends_with(']') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
    let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&with_port)
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .collect();
    let addr = addrs.first().ok_or_else(|| format!("{authority} has no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(addr, timeout).map_err(|e| format!("cannot connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: sluice-healthcheck\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Enough for a status line and a short reason; stop at 64 KiB.
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > 65_536 {
                    break;
                }
            }
            Err(e) if out.is_empty() => return Err(format!("no answer: {e}")),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| "not an HTTP answer".to_string())?;
    Ok((code, body.chars().take(300).collect()))
}
