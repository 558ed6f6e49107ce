//! Data tests: the generic tests declared on models and columns in the models
//! files (`not_null`, `unique`, `accepted_values`, `relationships`,
//! `expression`, `row_count`, `freshness`) and the singular tests in
//! `tests/*.sql` (a query returning the failing rows). Each becomes a query of
//! failing rows in the warehouse's dialect; a test passes when it returns none.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::models::{WarehouseResolve, template_error};
use crate::error::{Error, Result};
use crate::plan::{NodeKind, Plan};
use crate::project::{Project, TestKind, TestSeverity};
use crate::template::Call;
use crate::types::Val;
use crate::warehouse::{RowSink, Warehouse, format_val};

/// One test to run.
#[derive(Debug, Clone)]
pub struct TestCase {
    /// `unique_stg_sales_sale_id`, or a singular test's file name.
    pub name: String,
    /// The model (or seed, snapshot) it checks; `None` for singular tests.
    pub model: Option<String>,
    pub column: Option<String>,
    pub kind: Case,
    pub severity: TestSeverity,
}

#[derive(Debug, Clone)]
pub enum Case {
    Generic(TestKind),
    /// Index into `Project::singular_tests`.
    Singular(usize),
}

/// How a test ended.
#[derive(Debug)]
pub enum Outcome {
    Pass,
    /// Failing rows (or 1 for a failed count/freshness check), and the first of them.
    Fail {
        count: u64,
        columns: Vec<String>,
        rows: Vec<Vec<String>>,
        detail: Option<String>,
    },
    /// The test could not run (a SQL error).
    Error(Error),
}

#[derive(Debug)]
pub struct TestResult {
    pub case: TestCase,
    pub outcome: Outcome,
    pub duration: Duration,
}

impl TestResult {
    /// A failure that fails the run (error severity, or the test could not run).
    pub fn is_error(&self) -> bool {
        match self.outcome {
            Outcome::Pass => false,
            Outcome::Fail { .. } => self.case.severity == TestSeverity::Error,
            Outcome::Error(_) => true,
        }
    }
}

/// The tests of the selected nodes, and the singular tests that refer only to them.
pub fn collect(project: &Project, plan: &Plan, select: &[String], exclude: &[String]) -> Result<Vec<TestCase>> {
    let g = &plan.models;
    let chosen = crate::plan::select(g, select, exclude).map_err(Error::user)?;
    let everything = select.iter().all(|s| s.trim().is_empty()) && exclude.is_empty();
    let mut out = Vec::new();
    for &i in g.order.iter().filter(|i| chosen.contains(i)) {
        let n = &g.nodes[i];
        let Some(meta) = project.meta.model(&n.name) else { continue };
        for t in &meta.tests {
            out.push(TestCase {
                name: t.name.clone().unwrap_or_else(|| format!("{}_{}", t.kind.name(), n.name)),
                model: Some(n.name.clone()),
                column: None,
                kind: Case::Generic(t.kind.clone()),
                severity: t.severity,
            });
        }
        for c in &meta.columns {
            for t in &c.tests {
                out.push(TestCase {
                    name: t.name.clone().unwrap_or_else(|| format!("{}_{}_{}", t.kind.name(), n.name, c.name.v)),
                    model: Some(n.name.clone()),
                    column: Some(c.name.v.clone()),
                    kind: Case::Generic(t.kind.clone()),
                    severity: t.severity,
                });
            }
        }
    }
    // Singular tests: all of them, or those whose refs are all selected.
    let names: Vec<&str> = chosen.iter().map(|&i| g.nodes[i].name.as_str()).collect();
    for (k, t) in project.singular_tests.iter().enumerate() {
        let text = &project.sources.get(t.file).text;
        let refs = refs_in(text);
        if everything || (!refs.is_empty() && refs.iter().all(|r| names.contains(&r.as_str()))) {
            out.push(TestCase {
                name: t.name.clone(),
                model: None,
                column: None,
                kind: Case::Singular(k),
                severity: TestSeverity::Error,
            });
        }
    }
    Ok(out)
}

/// The names a SQL file passes to `ref()` (a light scan, for selection only).
pub fn refs_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("ref(") {
        let after = rest[i + 4..].trim_start();
        if let Some(q) = after.chars().next().filter(|c| *c == '\'' || *c == '"')
            && let Some(end) = after[1..].find(q)
        {
            out.push(after[1..1 + end].to_string());
        }
        rest = &rest[i + 4..];
    }
    out
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The query returning a generic test's failing rows (`None`: a check done on
/// one value instead — row counts and freshness).
pub fn failing_rows_sql(
    wh: &dyn Warehouse,
    resolve: &WarehouseResolve,
    model: &str,
    column: Option<&str>,
    kind: &TestKind,
) -> Option<String> {
    let rel = resolve.relation(model);
    let q = |c: &str| wh.quote(c);
    let col = column.map(q).unwrap_or_default();
    Some(match kind {
        TestKind::NotNull => format!("SELECT * FROM {rel} WHERE {col} IS NULL"),
        TestKind::Unique => {
            format!("SELECT {col}, COUNT(*) AS n FROM {rel} WHERE {col} IS NOT NULL GROUP BY {col} HAVING COUNT(*) > 1")
        }
        TestKind::AcceptedValues(values) => {
            let list: Vec<String> = values.iter().map(|v| literal(v)).collect();
            format!(
                "SELECT {col}, COUNT(*) AS n FROM {rel} WHERE {col} IS NOT NULL AND {col} NOT IN ({}) GROUP BY {col}",
                list.join(", ")
            )
        }
        TestKind::Relationships { to, field } => format!(
            "SELECT c.{col} FROM {rel} c LEFT JOIN {} p ON c.{col} = p.{} WHERE c.{col} IS NOT NULL AND p.{} IS NULL",
            resolve.relation(to),
            q(field),
            q(field)
        ),
        TestKind::Expression(e) => format!("SELECT * FROM {rel} WHERE NOT ({e})"),
        TestKind::RowCount { .. } | TestKind::Freshness { .. } => return None,
    })
}

/// Collects rows as text.
struct Collect {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    buf: Vec<u8>,
}

impl RowSink for Collect {
    fn columns(&mut self, names: &[String]) -> Result<()> {
        self.columns = names.to_vec();
        Ok(())
    }
    fn row(&mut self, vals: &[Val]) -> Result<()> {
        let r = vals
            .iter()
            .map(|v| {
                if *v == Val::Null {
                    return "NULL".to_string();
                }
                self.buf.clear();
                format_val(&mut self.buf, v);
                String::from_utf8_lossy(&self.buf).into_owned()
            })
            .collect();
        self.rows.push(r);
        Ok(())
    }
}

fn collect_rows(wh: &mut dyn Warehouse, sql: &str) -> Result<Collect> {
    let mut c = Collect { columns: Vec::new(), rows: Vec::new(), buf: Vec::new() };
    wh.query(sql, &mut c)?;
    Ok(c)
}

/// How many failing rows a report shows.
pub const SHOWN_ROWS: u64 = 5;

/// Runs the tests, one after the other, on one connection.
pub fn run(
    project: &Project,
    plan: &Plan,
    wh: &mut dyn Warehouse,
    cases: Vec<TestCase>,
    now_micros: i64,
    run: crate::template::RunVars,
) -> Result<Vec<TestResult>> {
    let renderer = crate::plan::renderer(project).map_err(|(f, e)| Error::user(format!("{f}: {}", e.message)))?;
    let resolve = Arc::new(WarehouseResolve::new(project, &plan.models, wh.naming(), run));
    resolve.use_schema(wh, None)?;
    let mut out = Vec::new();
    for case in cases {
        let t0 = Instant::now();
        let mut case = case;
        let outcome = match run_one(project, plan, wh, &renderer, &resolve, &mut case, now_micros) {
            Ok(o) => o,
            Err(e) => Outcome::Error(e),
        };
        out.push(TestResult { case, outcome, duration: t0.elapsed() });
    }
    Ok(out)
}

fn run_one(
    project: &Project,
    plan: &Plan,
    wh: &mut dyn Warehouse,
    renderer: &crate::template::Renderer,
    resolve: &Arc<WarehouseResolve>,
    case: &mut TestCase,
    now: i64,
) -> Result<Outcome> {
    let sql = match &case.kind {
        Case::Singular(k) => {
            let t = &project.singular_tests[*k];
            let f = project.sources.get(t.file);
            let call = Call {
                resolve: resolve.clone(),
                this: String::new(),
                is_incremental: false,
                config: Default::default(),
            };
            let r = renderer.render(&f.name, &f.text, &call).map_err(|e| template_error(project, &f.name, &e))?;
            // `{{ config(severity='warn') }}`, as in dbt.
            if r.config.severity.as_deref() == Some("warn") {
                case.severity = TestSeverity::Warn;
            }
            crate::template::with_ctes(&r.sql, &[])
        }
        Case::Generic(kind) => {
            let model = case.model.as_deref().expect("generic tests have a model");
            // An ephemeral model has no table: test its query instead.
            let g = &plan.models;
            let eph = g.nodes.iter().position(|n| {
                n.name == model
                    && n.kind == NodeKind::Model
                    && n.materialized == crate::project::Materialized::Ephemeral
            });
            if eph.is_some() {
                return Err(Error::user(format!(
                    "`{model}` is ephemeral (it has no table); test the models that use it"
                )));
            }
            match kind {
                TestKind::RowCount { min, max } => {
                    let sql = format!("SELECT COUNT(*) AS n FROM {}", resolve.relation(model));
                    let c = collect_rows(wh, &sql)?;
                    let n: u64 = c.rows.first().and_then(|r| r[0].parse().ok()).unwrap_or(0);
                    let low = min.is_some_and(|m| n < m);
                    let high = max.is_some_and(|m| n > m);
                    return Ok(if low || high {
                        let want = match (min, max) {
                            (Some(a), Some(b)) => format!("between {a} and {b}"),
                            (Some(a), None) => format!("at least {a}"),
                            (None, Some(b)) => format!("at most {b}"),
                            (None, None) => String::new(),
                        };
                        Outcome::Fail {
                            count: 1,
                            columns: vec![],
                            rows: vec![],
                            detail: Some(format!("{n} rows; expected {want}")),
                        }
                    } else {
                        Outcome::Pass
                    });
                }
                TestKind::Freshness { max_age } => {
                    let col = case.column.as_deref().expect("freshness is on a column");
                    let sql = format!("SELECT MAX({}) AS latest FROM {}", wh.quote(col), resolve.relation(model));
                    let c = collect_rows(wh, &sql)?;
                    let latest = c.rows.first().map(|r| r[0].clone()).unwrap_or_else(|| "NULL".into());
                    // With a zone (PostgreSQL, SQLite) or without (MySQL: UTC).
                    let as_type = |t| {
                        crate::types::parse_value(
                            &crate::types::Column::new(col, t),
                            latest.as_bytes(),
                            false,
                            &Default::default(),
                        )
                    };
                    let parsed = as_type(crate::types::ColumnType::TimestampTz)
                        .or_else(|_| as_type(crate::types::ColumnType::Timestamp));
                    let micros = match parsed {
                        Ok(Val::TsTz(m) | Val::Ts(m)) => Some(m),
                        _ => None,
                    };
                    return Ok(match micros {
                        None => Outcome::Fail {
                            count: 1,
                            columns: vec![],
                            rows: vec![],
                            detail: Some(format!("no timestamp to judge by (latest {col} is {latest})")),
                        },
                        Some(m) => {
                            let age = Duration::from_micros((now - m).max(0) as u64);
                            if age > *max_age {
                                Outcome::Fail {
                                    count: 1,
                                    columns: vec![],
                                    rows: vec![],
                                    detail: Some(format!(
                                        "the newest {col} is {latest}, {} old; allowed {}",
                                        human(age),
                                        human(*max_age)
                                    )),
                                }
                            } else {
                                Outcome::Pass
                            }
                        }
                    });
                }
                k => {
                    failing_rows_sql(wh, resolve, model, case.column.as_deref(), k).expect("a row query for this kind")
                }
            }
        }
    };
    let body = sql.trim().trim_end_matches(';');
    let count = collect_rows(wh, &format!("SELECT COUNT(*) AS n FROM (\n{body}\n) sluice_t"))?;
    let n: u64 = count.rows.first().and_then(|r| r[0].parse().ok()).unwrap_or(0);
    if n == 0 {
        return Ok(Outcome::Pass);
    }
    let limited = wh.dialect().limit(body, SHOWN_ROWS);
    let first = collect_rows(wh, &limited)?;
    Ok(Outcome::Fail { count: n, columns: first.columns, rows: first.rows, detail: None })
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86400 {
        format!("{}d{}h", s / 86400, s % 86400 / 3600)
    } else if s >= 3600 {
        format!("{}h{}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Nodes and tests a dbt selection names: a node's selector also picks its
/// tests (as `collect` does); `test_type:generic|singular`,
/// `resource_type:test` and a test's name pick tests alone. Words are a
/// union, `a,b` an intersection, `exclude` is taken out of both.
pub fn select_nodes_and_tests(
    project: &Project,
    plan: &Plan,
    select: &[String],
    exclude: &[String],
) -> Result<(std::collections::BTreeSet<usize>, Vec<TestCase>)> {
    use std::collections::BTreeSet;
    let g = &plan.models;
    let all = collect(project, plan, &[], &[])?;
    let is_generic = |c: &TestCase| matches!(c.kind, Case::Generic(_));
    let part = |p: &str| -> Result<(BTreeSet<usize>, BTreeSet<String>)> {
        let tests = |f: &dyn Fn(&TestCase) -> bool| all.iter().filter(|c| f(c)).map(|c| c.name.clone()).collect();
        Ok(match p {
            "test_type:generic" | "test_type:data" => (BTreeSet::new(), tests(&|c| is_generic(c))),
            "test_type:singular" => (BTreeSet::new(), tests(&|c| !is_generic(c))),
            "resource_type:test" | "kind:test" => (BTreeSet::new(), tests(&|_| true)),
            _ if p.starts_with("test_type:") => {
                return Err(Error::user(format!("unknown test type in `{p}`: `generic` or `singular`")));
            }
            _ if all.iter().any(|c| c.name == p) => (BTreeSet::new(), tests(&|c| c.name == p)),
            _ => {
                let nodes = crate::plan::select_one(g, p).map_err(Error::user)?;
                let names: Vec<String> = nodes.iter().map(|&i| g.nodes[i].name.clone()).collect();
                let t = collect(project, plan, &names, &[])?.into_iter().map(|c| c.name).collect();
                (nodes, t)
            }
        })
    };
    let union = |args: &[String]| -> Result<(BTreeSet<usize>, BTreeSet<String>)> {
        let (mut n, mut t) = (BTreeSet::new(), BTreeSet::new());
        for term in args.iter().flat_map(|a| a.split_whitespace()) {
            let mut acc: Option<(BTreeSet<usize>, BTreeSet<String>)> = None;
            for p in term.split(',').filter(|p| !p.is_empty()) {
                let (pn, pt) = part(p)?;
                acc = Some(match acc {
                    None => (pn, pt),
                    Some((an, at)) => {
                        (an.intersection(&pn).copied().collect(), at.intersection(&pt).cloned().collect())
                    }
                });
            }
            if let Some((an, at)) = acc {
                n.extend(an);
                t.extend(at);
            }
        }
        Ok((n, t))
    };
    let (mut nodes, mut tests) = if select.iter().all(|s| s.trim().is_empty()) {
        ((0..g.nodes.len()).collect(), all.iter().map(|c| c.name.clone()).collect())
    } else {
        union(select)?
    };
    let (xn, xt) = union(exclude)?;
    nodes.retain(|i| !xn.contains(i));
    tests.retain(|t| !xt.contains(t));
    Ok((nodes, all.into_iter().filter(|c| tests.contains(&c.name)).collect()))
}
