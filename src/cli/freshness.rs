//! `sluice source freshness`, as `dbt source freshness`: each selected source
//! table with a `freshness` is checked (`steps::freshness`), one line each,
//! and `target/sources.json` is written in dbt's shape.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::project::dbt::{After, Freshness};
use crate::steps::freshness::{self, Checked, Status};
use crate::steps::models::outside_run;

use super::artifacts::{self, NodeRun};
use super::hooks::RunHooks;
use super::models::{Selection, connect, open};
use super::progress::format_duration;

#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    #[command(subcommand)]
    pub command: SourceCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SourceCommand {
    /// Check how recently each source table was loaded (its `freshness` and
    /// `loaded_at_field`) and write target/sources.json; exit 1 when a table is
    /// past its `error_after` or cannot be checked.
    Freshness(FreshnessArgs),
}

#[derive(Debug, clap::Args)]
pub struct FreshnessArgs {
    #[command(flatten)]
    pub project: super::ProjectArgs,
    /// The source tables to check: `source:NAME`, `source:NAME.TABLE`,
    /// `source:*`; several are a union, `a,b` an intersection (else every one).
    #[arg(long, short = 's', num_args = 1.., value_name = "SELECTOR")]
    pub select: Vec<String>,
    /// The source tables to leave out (same syntax as --select).
    #[arg(long, num_args = 1.., value_name = "SELECTOR")]
    pub exclude: Vec<String>,
    /// The connection to use (the project's default one otherwise).
    #[arg(long, short = 'c', value_name = "NAME")]
    pub connection: Option<String>,
    /// Where to write the results (else target/sources.json).
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// The version of dbt's sources.json schema the file follows.
const SOURCES_SCHEMA: &str = "https://schemas.getdbt.com/dbt/sources/v3.json";

pub fn run(a: SourceArgs) -> Result<i32> {
    match a.command {
        SourceCommand::Freshness(f) => freshness(f),
    }
}

fn freshness(a: FreshnessArgs) -> Result<i32> {
    let started = Instant::now();
    let output = a.output;
    let sel = Selection { project: a.project, select: a.select, exclude: a.exclude, connection: a.connection };
    let (project, plan) = open(&sel)?;
    let selected = freshness::select(&project, &sel.select, &sel.exclude)?;
    for t in &selected.unchecked {
        errln!("warning: source `{}`.`{}` has a freshness but no loaded_at_field: not checked", t.source, t.table);
    }
    if selected.targets.is_empty() {
        outln!("no source tables with a freshness and a loaded_at_field selected");
    }
    let mut wh = connect(&project, sel.connection.as_deref())?;
    // dbt runs the project's hooks around source freshness too (since 1.10).
    let mut hooks = RunHooks::start(&project, &plan, sel.connection.as_deref(), Some(wh.as_mut()))?;
    let targets = if hooks.start_failed() { Vec::new() } else { selected.targets };
    let mut print = |c: &Checked| outln!("{}", line(c));
    let results = freshness::check(&project, &plan, wh.as_mut(), targets, outside_run(&project), &mut print);
    let done: Vec<NodeRun> = results
        .iter()
        .map(|c| {
            let id = artifacts::source_id(&project, &c.target.source, &c.target.table);
            match &c.outcome {
                Ok(m) => NodeRun::ended(id, m.status.name(), String::new(), c.duration),
                Err(e) => NodeRun::ended(id, "runtime error", e.chain(), c.duration),
            }
        })
        .collect();
    hooks.end(Some(wh.as_mut()), &done)?;
    let (_, hooks_code) = hooks.finish(Vec::new(), 0);
    let count = |s: Status| results.iter().filter(|r| r.outcome.as_ref().is_ok_and(|m| m.status == s)).count();
    let (pass, warn) = (count(Status::Pass), count(Status::Warn));
    let error = results.len() - pass - warn;
    let invocation = uuid::Uuid::now_v7().to_string();
    let doc = sources_json(&project, &results, started.elapsed(), &invocation);
    let bytes = serde_json::to_vec_pretty(&doc).expect("JSON");
    match &output {
        Some(p) => {
            if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(d).map_err(|e| Error::io("create folder", d, e))?;
            }
            // Whole, then renamed, as target/ files are.
            let tmp = p.with_extension("tmp");
            std::fs::write(&tmp, bytes).map_err(|e| Error::io("write", &tmp, e))?;
            std::fs::rename(&tmp, p).map_err(|e| Error::io("write", p, e))?
        }
        None => super::models::write_target(&project, "sources.json", &bytes)?,
    }
    outln!(
        "Done in {}. PASS={pass} WARN={warn} ERROR={error} SKIP=0 TOTAL={}",
        format_duration(started.elapsed()),
        results.len()
    );
    Ok(if error > 0 { 1 } else { hooks_code })
}

fn line(c: &Checked) -> String {
    let name = format!("{}.{}", c.target.source, c.target.table);
    match &c.outcome {
        Ok(m) => {
            let status = match m.status {
                Status::Pass => "PASS",
                Status::Warn => "WARN",
                Status::Error => "ERROR",
            };
            let newest = match m.max_loaded_at {
                Some(t) => format!("newest {} ({} ago)", freshness::iso(t), ago(m.age_secs())),
                None => "no rows".to_string(),
            };
            format!("{status:<6} {name:<28} {newest}; {}", criteria_text(&c.target.freshness))
        }
        Err(e) => format!("ERROR  {name:<28} runtime error\n  error: {}", super::indent_rest(&e.chain())),
    }
}

/// An age for people: `1d 6h`, `1h 0m`, `4m 10s`, `12s`.
fn ago(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        86_400.. => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        3600.. => format!("{}h {}m", s / 3600, s % 3600 / 60),
        60.. => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{s}s"),
    }
}

fn criteria_text(f: &Freshness) -> String {
    let one = |a: &Option<After>| a.as_ref().map(|a| format!("{} {}", a.count, a.period));
    match (one(&f.warn_after), one(&f.error_after)) {
        (Some(w), Some(e)) => format!("warn after {w}, error after {e}"),
        (Some(w), None) => format!("warn after {w}"),
        (None, Some(e)) => format!("error after {e}"),
        (None, None) => String::new(),
    }
}

/// `target/sources.json` as dbt writes it.
fn sources_json(
    project: &crate::project::Project,
    results: &[Checked],
    elapsed: std::time::Duration,
    invocation: &str,
) -> Value {
    let after = |a: &Option<After>| match a {
        Some(a) => json!({ "count": a.count, "period": a.period }),
        None => json!({ "count": null, "period": null }),
    };
    let ts = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let rows: Vec<Value> = results
        .iter()
        .map(|c| {
            let id = artifacts::source_id(project, &c.target.source, &c.target.table);
            match &c.outcome {
                Ok(m) => {
                    let f = &c.target.freshness;
                    let done = chrono::Utc::now();
                    let start = done - chrono::Duration::from_std(c.duration).unwrap_or_default();
                    json!({
                        "unique_id": id,
                        "max_loaded_at": freshness::iso(m.max_loaded_at.unwrap_or(freshness::EMPTY_TABLE)),
                        "snapshotted_at": freshness::iso(m.snapshotted_at),
                        "max_loaded_at_time_ago_in_s": m.age_secs(),
                        "status": m.status.name(),
                        "criteria": {
                            "warn_after": after(&f.warn_after),
                            "error_after": after(&f.error_after),
                            "filter": f.filter,
                        },
                        "adapter_response": {},
                        "timing": [
                            { "name": "compile", "started_at": ts(start), "completed_at": ts(start) },
                            { "name": "execute", "started_at": ts(start), "completed_at": ts(done) },
                        ],
                        "thread_id": "Thread-1",
                        "execution_time": c.duration.as_secs_f64(),
                    })
                }
                Err(e) => json!({ "unique_id": id, "error": e.chain(), "status": "runtime error" }),
            }
        })
        .collect();
    let mut metadata = artifacts::metadata(project, SOURCES_SCHEMA, invocation);
    metadata["env"] = json!({});
    json!({ "metadata": metadata, "results": rows, "elapsed_time": elapsed.as_secs_f64() })
}
