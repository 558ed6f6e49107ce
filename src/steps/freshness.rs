//! dbt's source freshness: for each source table with a `freshness` and a
//! `loaded_at_field`, the newest value of that field and the warehouse's own
//! clock, read in one query, and the table's status (pass, warn, error) from
//! their difference, as `dbt source freshness` judges it. Taking both times
//! from the warehouse keeps the answer right whatever the machines' clocks
//! and zones. This module does not print; the command line reports.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::project::Project;
use crate::project::dbt::Freshness;
use crate::template::Resolve;
use crate::types::{Column, ColumnType, Val};
use crate::warehouse::{Backend, RowSink, Warehouse};

use super::models::WarehouseResolve;

/// One source table to check.
#[derive(Debug, Clone)]
pub struct Target {
    pub source: String,
    pub table: String,
    pub freshness: Freshness,
}

/// How fresh a table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Warn,
    Error,
}

impl Status {
    /// The word in `sources.json`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Error => "error",
        }
    }
}

/// What the warehouse said about one table.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The newest `loaded_at_field`, microseconds since the epoch (UTC);
    /// `None` when the table has no rows (then it counts as infinitely old).
    pub max_loaded_at: Option<i64>,
    /// The warehouse's clock when it answered, microseconds since the epoch.
    pub snapshotted_at: i64,
    pub status: Status,
}

impl Measured {
    /// How long ago the newest row was loaded, in seconds (as dbt writes it).
    pub fn age_secs(&self) -> f64 {
        (self.snapshotted_at - self.max_loaded_at.unwrap_or(EMPTY_TABLE)) as f64 / 1e6
    }
}

/// The time dbt takes for the newest row of an empty table (0001-01-01).
pub const EMPTY_TABLE: i64 = -62_135_596_800_000_000;

/// The result of checking one table.
#[derive(Debug)]
pub struct Checked {
    pub target: Target,
    /// The check's outcome, or why it could not run (dbt's `runtime error`).
    pub outcome: Result<Measured>,
    /// The SQL sent.
    pub sql: String,
    pub duration: Duration,
}

/// The status of a table whose newest row is `age` old.
pub fn judge(f: &Freshness, age: Duration) -> Status {
    if f.error_after.as_ref().is_some_and(|a| age > a.duration()) {
        Status::Error
    } else if f.warn_after.as_ref().is_some_and(|a| age > a.duration()) {
        Status::Warn
    } else {
        Status::Pass
    }
}

/// The source tables a selection names, with the freshness each has.
/// Selectors: `source:NAME`, `source:NAME.TABLE`, `source:*` (a trailing
/// `+` is allowed and changes nothing here); several are a union, `a,b` an
/// intersection. Tables without `freshness` are left out; those with a
/// `freshness` but no `loaded_at_field` are returned in `unchecked`.
pub fn select(project: &Project, select: &[String], exclude: &[String]) -> Result<Selected> {
    let all: Vec<(String, String)> = project
        .meta
        .sources
        .iter()
        .flat_map(|s| s.tables.iter().map(move |t| (s.name.v.clone(), t.v.clone())))
        .collect();
    let one = |part: &str| -> Result<BTreeSet<(String, String)>> {
        let core = part.trim_end_matches('+');
        let Some(what) = core.strip_prefix("source:") else {
            return Err(Error::user(format!(
                "`{part}` does not name a source: select sources with source:NAME or source:NAME.TABLE"
            )));
        };
        if what == "*" {
            return Ok(all.iter().cloned().collect());
        }
        let (src, table) = match what.split_once('.') {
            Some((s, t)) => (s, Some(t)),
            None => (what, None),
        };
        let Some(s) = project.meta.sources.iter().find(|s| s.name.v == src) else {
            let names: Vec<&str> = project.meta.sources.iter().map(|s| s.name.v.as_str()).collect();
            let hint = crate::error::suggest(src, &names).map(|h| format!("; {h}")).unwrap_or_default();
            return Err(Error::user(format!("no source named `{src}` in the selector `{part}`{hint}")));
        };
        match table {
            None => Ok(s.tables.iter().map(|t| (src.to_string(), t.v.clone())).collect()),
            Some(t) if s.tables.iter().any(|x| x.v == t) => Ok(BTreeSet::from([(src.to_string(), t.to_string())])),
            Some(t) => {
                let names: Vec<&str> = s.tables.iter().map(|t| t.v.as_str()).collect();
                let hint = crate::error::suggest(t, &names).map(|h| format!("; {h}")).unwrap_or_default();
                Err(Error::user(format!("source `{src}` has no table `{t}` (in the selector `{part}`){hint}")))
            }
        }
    };
    let union = |args: &[String]| -> Result<BTreeSet<(String, String)>> {
        let mut out = BTreeSet::new();
        for term in args.iter().flat_map(|a| a.split_whitespace()) {
            let mut acc: Option<BTreeSet<(String, String)>> = None;
            for p in term.split(',').filter(|p| !p.is_empty()) {
                let s = one(p)?;
                acc = Some(match acc {
                    None => s,
                    Some(a) => a.intersection(&s).cloned().collect(),
                });
            }
            out.extend(acc.unwrap_or_default());
        }
        Ok(out)
    };
    let chosen: BTreeSet<(String, String)> =
        if select.iter().all(|s| s.trim().is_empty()) { all.iter().cloned().collect() } else { union(select)? };
    let dropped = union(exclude)?;
    let mut out = Selected::default();
    // In the order the schema files list them.
    for (src, table) in all.iter().filter(|k| chosen.contains(*k) && !dropped.contains(*k)) {
        let s = project.meta.sources.iter().find(|s| &s.name.v == src).expect("listed from the sources");
        let Some(f) = s.freshness.get(table) else { continue };
        let t = Target { source: src.clone(), table: table.clone(), freshness: f.clone() };
        if f.loaded_at_field.is_some() { out.targets.push(t) } else { out.unchecked.push(t) }
    }
    Ok(out)
}

/// What `select` found.
#[derive(Debug, Default)]
pub struct Selected {
    pub targets: Vec<Target>,
    /// Tables with a `freshness` but no `loaded_at_field`: nothing to measure.
    pub unchecked: Vec<Target>,
}

/// The warehouse's clock, in a form `max_loaded_at` can be compared with:
/// UTC without a zone where the database has zones (PostgreSQL, Oracle),
/// the session's time on MariaDB/MySQL (as dbt-mysql takes it: `DATETIME`
/// columns are written in it), SQLite's UTC text.
fn now_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "strftime('%Y-%m-%d %H:%M:%f', 'now')",
        Backend::Postgres => "CAST(now() AT TIME ZONE 'UTC' AS timestamp)",
        Backend::Mysql => "CURRENT_TIMESTAMP(6)",
        Backend::Oracle => "SYS_EXTRACT_UTC(SYSTIMESTAMP)",
    }
}

/// The query for one table: the newest `loaded_at_field` (an SQL
/// expression, as in dbt) of the rows `filter` keeps, and the clock.
pub fn query_sql(wh: &dyn Warehouse, relation: &str, f: &Freshness) -> String {
    let field = f.loaded_at_field.as_deref().unwrap_or("NULL");
    let mut sql =
        format!("SELECT MAX({field}) AS max_loaded_at, {} AS snapshotted_at FROM {relation}", now_sql(wh.backend()));
    if let Some(filter) = &f.filter {
        sql.push_str(&format!(" WHERE {filter}"));
    }
    sql
}

/// Checks each target in turn on `wh`, calling `on_done` after each.
pub fn check(
    project: &Project,
    plan: &Plan,
    wh: &mut dyn Warehouse,
    targets: Vec<Target>,
    run: crate::template::RunVars,
    on_done: &mut dyn FnMut(&Checked),
) -> Vec<Checked> {
    let resolve = Arc::new(WarehouseResolve::new(project, &plan.models, wh.naming(), run));
    let mut out = Vec::new();
    for target in targets {
        let t0 = Instant::now();
        let relation = resolve.source(&target.source, &target.table);
        let sql = query_sql(wh, &relation, &target.freshness);
        let outcome = measure(wh, &sql, &target.freshness)
            .map_err(|e| e.context(format!("freshness of source `{}`.`{}` ({sql})", target.source, target.table)));
        let c = Checked { target, outcome, sql, duration: t0.elapsed() };
        on_done(&c);
        out.push(c);
    }
    out
}

fn measure(wh: &mut dyn Warehouse, sql: &str, f: &Freshness) -> Result<Measured> {
    let mut sink = Times::default();
    wh.query(sql, &mut sink)?;
    let field = f.loaded_at_field.as_deref().unwrap_or_default();
    let [max, now] = sink.row.ok_or_else(|| Error::internal("the freshness query returned no row"))?;
    let max_loaded_at = match max {
        Time::Null => None,
        Time::At(m) => Some(m),
        Time::Other(v) => {
            return Err(Error::user(format!(
                "loaded_at_field `{field}` gives {v}, not a timestamp: give a timestamp column or expression"
            )));
        }
    };
    let snapshotted_at = match now {
        Time::At(m) => m,
        other => return Err(Error::internal(format!("the warehouse's clock read as {other:?}"))),
    };
    let age = Duration::from_micros((snapshotted_at - max_loaded_at.unwrap_or(EMPTY_TABLE)).max(0) as u64);
    Ok(Measured { max_loaded_at, snapshotted_at, status: judge(f, age) })
}

/// A value of the freshness query, read as a time.
#[derive(Debug, Clone)]
enum Time {
    Null,
    At(i64),
    /// Something that is not a time, as text.
    Other(String),
}

#[derive(Default)]
struct Times {
    row: Option<[Time; 2]>,
}

impl RowSink for Times {
    fn columns(&mut self, _names: &[String]) -> Result<()> {
        Ok(())
    }
    fn row(&mut self, vals: &[Val]) -> Result<()> {
        let time = |v: Option<&Val>| match v {
            None | Some(Val::Null) => Time::Null,
            Some(Val::Ts(m) | Val::TsTz(m)) => Time::At(*m),
            Some(Val::Date(d)) => Time::At(*d as i64 * 86_400_000_000),
            Some(Val::Text(s)) => parse_time(s).map(Time::At).unwrap_or_else(|| Time::Other(format!("'{s}'"))),
            Some(v) => {
                let mut buf = Vec::new();
                crate::warehouse::format_val(&mut buf, v);
                Time::Other(String::from_utf8_lossy(&buf).into_owned())
            }
        };
        self.row = Some([time(vals.first()), time(vals.get(1))]);
        Ok(())
    }
}

/// A timestamp written as text (SQLite): with a zone, or without (UTC).
fn parse_time(s: &str) -> Option<i64> {
    let as_type = |t| crate::types::parse_value(&Column::new("t", t), s.as_bytes(), false, &Default::default());
    match as_type(ColumnType::TimestampTz).or_else(|_| as_type(ColumnType::Timestamp)) {
        Ok(Val::TsTz(m) | Val::Ts(m)) => Some(m),
        _ => match as_type(ColumnType::Date) {
            Ok(Val::Date(d)) => Some(d as i64 * 86_400_000_000),
            _ => None,
        },
    }
}

/// Microseconds since the epoch as dbt writes a time in `sources.json`
/// (`2026-01-31T08:00:00.123456+00:00`).
pub fn iso(micros: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string(),
        None => "0001-01-01T00:00:00+00:00".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::dbt::After;

    fn fresh(warn: Option<(u64, &str)>, error: Option<(u64, &str)>) -> Freshness {
        let after = |a: Option<(u64, &str)>| a.map(|(count, p)| After { count, period: p.to_string() });
        Freshness {
            loaded_at_field: Some("_loaded_at".into()),
            warn_after: after(warn),
            error_after: after(error),
            filter: None,
        }
    }

    #[test]
    fn status_from_age_and_thresholds() {
        let f = fresh(Some((1, "hour")), Some((1, "day")));
        assert_eq!(judge(&f, Duration::from_secs(3600)), Status::Pass);
        assert_eq!(judge(&f, Duration::from_secs(3601)), Status::Warn);
        assert_eq!(judge(&f, Duration::from_secs(86401)), Status::Error);
        let only_error = fresh(None, Some((30, "minute")));
        assert_eq!(judge(&only_error, Duration::from_secs(1799)), Status::Pass);
        assert_eq!(judge(&only_error, Duration::from_secs(1801)), Status::Error);
    }

    #[test]
    fn times_as_dbt_writes_them() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(parse_time("2026-01-31 08:00:00.500"), Some(1_769_846_400_500_000));
        assert_eq!(parse_time("2026-01-31T08:00:00+01:00"), Some(1_769_842_800_000_000));
        assert_eq!(parse_time("2026-01-31"), Some(1_769_817_600_000_000));
        assert_eq!(parse_time("yesterday"), None);
        let m = Measured { max_loaded_at: None, snapshotted_at: 0, status: Status::Error };
        assert_eq!(m.age_secs(), 62_135_596_800.0);
    }
}
