//! The `sluice` command line: one file per subcommand. This layer parses
//! arguments, prints for people, and maps errors to exit codes; the work is
//! done by the library below it.

#[macro_use]
pub mod out;
mod artifacts;
mod build;
mod check;
mod dag;
mod docs;
mod export;
mod freshness;
mod hooks;
mod infer;
mod init;
mod load;
mod ls;
mod models;
mod ops;
pub mod progress;
mod run;
pub mod services;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::{Error, Kind};

/// Sluice: ingest, load, transform and export data with one binary.
#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: ingest, land, load, transform and export data, from one project folder",
    long_about = "Sluice runs data pipelines described in a project folder: sluice.toml (connections, storage, defaults), \
pipelines/*.toml (steps and triggers) and models/**/*.sql (SQL models with {{ ref('…') }}). \
A dbt project folder (dbt_project.yml, profiles.yml) runs unchanged with seed, transform, test, build, ls.\n\n\
Start with `sluice init demo`, then `sluice run -p demo`.",
    after_help = "Exit status: 0 success, 1 a program sluice ran failed (a command step; backfill: a run), \
2 a problem in the project, the arguments or a model's SQL, 3 bad input data, 4 a server or the system failed, \
70 a bug in sluice, 130 stopped by Ctrl-C or SIGTERM."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How services log: text lines or JSON objects (for log collectors).
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
}

/// Options every project command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ProjectArgs {
    /// The project folder (the one holding sluice.toml).
    #[arg(short = 'p', long = "project", env = "SLUICE_PROJECT", default_value = ".", value_name = "DIR")]
    pub project: PathBuf,
    /// dbt projects: the folder holding profiles.yml (else the project folder, the current one, ~/.dbt).
    #[arg(long = "profiles-dir", env = "DBT_PROFILES_DIR", value_name = "DIR")]
    pub profiles_dir: Option<PathBuf>,
    /// dbt projects: the profile's target to run against (else the profile's `target`).
    #[arg(long = "target", env = "SLUICE_TARGET", value_name = "NAME")]
    pub target: Option<String>,
    /// dbt projects: variables for var(), as YAML or JSON ('{start_date: 2024-01-01}'); they override dbt_project.yml's.
    #[arg(long = "vars", env = "SLUICE_VARS", value_name = "YAML")]
    pub vars: Option<String>,
}

impl ProjectArgs {
    /// What the project is read with.
    pub fn options(&self) -> crate::project::dbt::DbtOptions {
        crate::project::dbt::DbtOptions {
            profiles_dir: self.profiles_dir.clone(),
            target: self.target.clone(),
            vars: self.vars.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a small project that `sluice run` runs as is.
    Init(init::Args),
    /// Validate the whole project without touching data; every problem is reported with file:line:col.
    Check(check::Args),
    /// Run a pipeline's steps in dependency order.
    Run(run::Args),
    /// Show a pipeline's plan as a tree, a Graphviz DOT graph or JSON.
    Dag(dag::Args),
    /// Load a CSV/TSV, NDJSON/JSON or Parquet file into a table: type-checked, in one transaction.
    Load(load::Args),
    /// Print the schema a file's sample fits, in the schema file format.
    Infer(infer::Args),
    /// Write a table's or a query's rows as TSV, CSV, NDJSON, JSON or Parquet, to a file or s3://.
    Export(export::Args),
    /// Build models (like `dbt run`): tables, views, incremental, ephemeral, in dependency order.
    Transform(models::TransformArgs),
    /// Seeds, models, snapshots and their tests in dependency order (like `dbt build`); a failing test skips what depends on its node.
    Build(build::BuildArgs),
    /// List the models, seeds, snapshots and tests a selection names (like `dbt ls`).
    Ls(ls::LsArgs),
    /// Write a static documentation site (models, SQL, columns, tests, lineage) that works offline: `docs generate [--out DIR]`.
    Docs(docs::DocsArgs),
    /// Write each selected model's rendered SQL under target/compiled/.
    Compile(models::CompileArgs),
    /// Load seeds/*.csv as tables.
    Seed(models::Selection),
    /// Take snapshots (slowly changing dimensions, type 2).
    Snapshot(models::Selection),
    /// Run data tests: generic tests from the models files and tests/*.sql.
    Test(models::Selection),
    /// dbt projects' sources: `source freshness` checks how recently each source table was loaded (like `dbt source freshness`).
    Source(freshness::SourceArgs),
    /// Run the scheduler, a worker and the API in one process (the embedded default).
    Serve(services::ServeArgs),
    /// Run the scheduler alone: fire triggers into the state store (a second one is a hot standby).
    Scheduler(services::SchedulerArgs),
    /// Run a worker alone: claim tasks from the state store and run them.
    Worker(services::WorkerCmdArgs),
    /// Run the control API alone.
    Api(services::ApiArgs),
    /// Show when the schedules fire next, in UTC and in their own time zone.
    Next(services::NextArgs),
    /// Run the fires of a past date range, each with its own logical date.
    Backfill(services::BackfillArgs),
    /// Create, list and revoke API tokens.
    Token(ops::TokenArgs),
    /// Show recent runs (filter by pipeline and status).
    Runs(ops::RunsArgs),
    /// Show a run's task logs; --follow keeps printing until it finishes.
    Logs(ops::LogsArgs),
    /// Show the deployment: state store, workers, queue, running runs.
    Status(ops::StatusArgs),
    /// Print the API's OpenAPI document.
    Openapi,
    /// Check a health URL (for a container's HEALTHCHECK, where there is no
    /// curl): exit 0 when it answers 2xx, 1 otherwise.
    Healthcheck(ops::HealthcheckArgs),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == crate::steps::command::SUPERVISE) {
        return crate::steps::command::supervise(&args[2..]);
    }
    crate::steps::command::use_supervisor();
    let cli = Cli::parse_from(args);
    crate::orchestrate::log::init(if cli.log_format == "json" {
        crate::orchestrate::log::Format::Json
    } else {
        crate::orchestrate::log::Format::Text
    });
    let res = match cli.command {
        Command::Init(a) => init::run(a),
        Command::Check(a) => check::run(a),
        Command::Run(a) => run::run(a),
        Command::Dag(a) => dag::run(a),
        Command::Load(a) => load::run(a),
        Command::Infer(a) => infer::run(a),
        Command::Export(a) => export::run(a),
        Command::Transform(a) => models::transform(a),
        Command::Build(a) => build::run(a),
        Command::Ls(a) => ls::run(a),
        Command::Compile(a) => models::compile(a),
        Command::Docs(a) => docs::run(a),
        Command::Seed(a) => models::seed(a),
        Command::Snapshot(a) => models::snapshot(a),
        Command::Test(a) => models::test(a),
        Command::Source(a) => freshness::run(a),
        Command::Serve(a) => services::serve(a),
        Command::Scheduler(a) => services::scheduler(a),
        Command::Worker(a) => services::worker(a),
        Command::Api(a) => services::api(a),
        Command::Next(a) => services::next(a),
        Command::Backfill(a) => services::backfill(a),
        Command::Token(a) => ops::token(a),
        Command::Runs(a) => ops::runs(a),
        Command::Logs(a) => ops::logs(a),
        Command::Status(a) => ops::status(a),
        Command::Openapi => ops::openapi(),
        Command::Healthcheck(a) => ops::healthcheck(a),
    };
    if STOPPED.get().is_some_and(|c| c.reason().is_some()) {
        errln!("stopped: cancelled by a signal");
        return run::CANCELLED;
    }
    match res {
        Ok(code) => code,
        Err(e) => {
            print_error(&e);
            e.kind().exit_code()
        }
    }
}

/// Prints an error and its context on stderr.
pub fn print_error(e: &Error) {
    let text = e.chain();
    if e.kind() == Kind::Internal {
        errln!("error: {text}");
    } else {
        errln!("error: {}", indent_rest(&text));
    }
}

/// Indents every line after the first, for multi-line messages.
pub fn indent_rest(s: &str) -> String {
    let mut lines = s.lines();
    let mut out = lines.next().unwrap_or("").to_string();
    for l in lines {
        out.push('\n');
        out.push_str("  ");
        out.push_str(l);
    }
    out
}

/// On the first SIGTERM or SIGINT calls `first`; on a second one calls
/// `second`, then exits at once (status 130). The handlers are in place when
/// this returns.
pub(crate) fn on_signals(first: impl FnOnce() + Send + 'static, second: impl FnOnce() + Send + 'static) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    let (Ok(mut term), Ok(mut int)) = ({
        let _in = rt.enter();
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    }) else {
        return;
    };
    std::thread::spawn(move || {
        rt.block_on(async move {
            let (mut first, mut second) = (Some(first), Some(second));
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                if let Some(f) = first.take() {
                    f();
                } else {
                    if let Some(f) = second.take() {
                        f();
                    }
                    std::process::exit(130);
                }
            }
        });
    });
}

/// The stop flag of a command that works in this process (see `cancel_on_signals`).
static STOPPED: std::sync::OnceLock<crate::steps::Cancel> = std::sync::OnceLock::new();

/// For a command that works in this process (`transform`, `load`, …):
/// Ctrl-C or SIGTERM stops the returned flag, which interrupts what its
/// watched connections run on their servers, again every second until the
/// command returns; the command then exits 130. A second signal exits at once.
pub(crate) fn cancel_on_signals() -> crate::steps::Cancel {
    STOPPED
        .get_or_init(|| {
            let cancel = crate::steps::Cancel::default();
            let c = cancel.clone();
            on_signals(
                move || {
                    errln!("stopping (a second Ctrl-C stops at once)");
                    c.stop(crate::steps::StopReason::Cancelled);
                    std::thread::spawn(move || {
                        loop {
                            std::thread::sleep(std::time::Duration::from_secs(1));
                            c.interrupt();
                        }
                    });
                },
                || {},
            );
            cancel
        })
        .clone()
}
