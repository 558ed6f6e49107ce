//! The `sluice` command line: one file per subcommand. This layer parses
//! arguments, prints for people, and maps errors to exit codes; the work is
//! done by the library below it.

mod check;
mod dag;
mod export;
mod infer;
mod init;
mod load;
mod models;
pub mod progress;
mod run;
mod services;

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
pipelines/*.toml (steps and triggers) and models/**/*.sql (SQL models with {{ ref('…') }}).\n\n\
Start with `sluice init demo`, then `sluice run -p demo`.",
    after_help = "Exit status: 0 success, 1 a program sluice ran failed (a command step; backfill: a run), \
2 a problem in the project, the arguments or a model's SQL, 3 bad input data, 4 a server or the system failed, \
70 a bug in sluice."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Options every project command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ProjectArgs {
    /// The project folder (the one holding sluice.toml).
    #[arg(short = 'p', long = "project", env = "SLUICE_PROJECT", default_value = ".", value_name = "DIR")]
    pub project: PathBuf,
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
    /// Load a CSV/TSV or JSON file into a table: type-checked, in one transaction.
    Load(load::Args),
    /// Print the schema a file's sample fits, in the schema file format.
    Infer(infer::Args),
    /// Write a table's or a query's rows as TSV or CSV.
    Export(export::Args),
    /// Build models (like `dbt run`): tables, views, incremental, ephemeral, in dependency order.
    Transform(models::TransformArgs),
    /// Write each selected model's rendered SQL under target/compiled/.
    Compile(models::CompileArgs),
    /// Load seeds/*.csv as tables.
    Seed(models::Selection),
    /// Take snapshots (slowly changing dimensions, type 2).
    Snapshot(models::Selection),
    /// Run data tests: generic tests from the models files and tests/*.sql.
    Test(models::Selection),
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
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Init(a) => init::run(a),
        Command::Check(a) => check::run(a),
        Command::Run(a) => run::run(a),
        Command::Dag(a) => dag::run(a),
        Command::Load(a) => load::run(a),
        Command::Infer(a) => infer::run(a),
        Command::Export(a) => export::run(a),
        Command::Transform(a) => models::transform(a),
        Command::Compile(a) => models::compile(a),
        Command::Seed(a) => models::seed(a),
        Command::Snapshot(a) => models::snapshot(a),
        Command::Test(a) => models::test(a),
        Command::Serve(a) => services::serve(a),
        Command::Scheduler(a) => services::scheduler(a),
        Command::Worker(a) => services::worker(a),
        Command::Api(a) => services::api(a),
        Command::Next(a) => services::next(a),
        Command::Backfill(a) => services::backfill(a),
    };
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
        eprintln!("error: {text}");
    } else {
        eprintln!("error: {}", indent_rest(&text));
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
