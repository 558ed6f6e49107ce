//! Building models: each selected model rendered for the target warehouse and
//! built in dependency order, independent ones at the same time (up to
//! `threads`, each on its own connection). Tables are built under a new name
//! and swapped in; views are replaced; incremental models add or merge the new
//! rows (on `unique_key`, with the dialect's own upsert) after following their
//! `on_schema_change` policy; ephemeral models are inlined as CTEs. A model
//! whose dependency failed is not built.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::plan::{ModelGraph, ModelNode, NodeKind, Plan};
use crate::project::{Materialized, OnSchemaChange, Project};
use crate::template::{self, Call, Renderer, Resolve};
use crate::types::Column;
use crate::warehouse::{Build, Naming, Warehouse};

/// Names what models refer to, for one warehouse.
pub struct WarehouseResolve {
    pub naming: Naming,
    /// Ephemeral models: referred to as CTEs.
    pub ephemeral: BTreeSet<String>,
    /// The run rendered for.
    pub run: crate::template::RunVars,
    /// `(source, table)` → the schema it lives in, when declared.
    pub source_schema: BTreeMap<String, Option<String>>,
    /// `(source, table)` → the table's name in the database, where it differs.
    pub source_identifier: BTreeMap<(String, String), String>,
    /// Nodes built in a schema of their own or under an alias (dbt
    /// projects) → their relation.
    pub placed: BTreeMap<String, String>,
    /// The schemas nodes are built in (dbt projects' custom schemas).
    pub schemas: BTreeSet<String>,
    /// The connection `run_query()` runs on (its own, shared by the build's
    /// threads), when the project calls it.
    pub queries: Option<Mutex<Box<dyn Warehouse>>>,
}

impl WarehouseResolve {
    /// Names for `naming`, rendering for `run` (the run's logical date, or
    /// today in the project's zone outside a run: `outside_run`).
    pub fn new(project: &Project, graph: &ModelGraph, naming: Naming, run: crate::template::RunVars) -> Self {
        WarehouseResolve {
            queries: None,
            schemas: graph.nodes.iter().filter_map(|n| n.schema.clone()).collect(),
            placed: graph
                .nodes
                .iter()
                .filter(|n| n.schema.is_some() || n.alias.is_some())
                .map(|n| (n.name.clone(), n.relation(&naming)))
                .collect(),
            naming,
            ephemeral: graph
                .nodes
                .iter()
                .filter(|n| n.kind == NodeKind::Model && n.materialized == Materialized::Ephemeral)
                .map(|n| n.name.clone())
                .collect(),
            source_schema: project.meta.sources.iter().map(|s| (s.name.v.clone(), s.schema.clone())).collect(),
            source_identifier: project
                .meta
                .sources
                .iter()
                .flat_map(|s| s.identifiers.iter().map(|(t, i)| ((s.name.v.clone(), t.clone()), i.clone())))
                .collect(),
            run,
        }
    }

    pub fn cte_name(&self, model: &str) -> String {
        self.naming.quote(&format!("__sluice_eph_{model}"))
    }

    /// A node's relation (or a load step's table, by its name).
    pub fn relation(&self, name: &str) -> String {
        self.placed.get(name).cloned().unwrap_or_else(|| self.naming.relation(name))
    }

    /// Makes `wh` build in `schema` (`None`: its own), every schema of the
    /// project's nodes being there to read (made, or attached on SQLite).
    pub fn use_schema(&self, wh: &mut dyn Warehouse, schema: Option<&str>) -> Result<()> {
        for s in &self.schemas {
            wh.use_schema(Some(s))?;
        }
        wh.use_schema(schema)
    }
}

impl Resolve for WarehouseResolve {
    fn model(&self, name: &str) -> String {
        if self.ephemeral.contains(name) { self.cte_name(name) } else { self.relation(name) }
    }
    fn source(&self, source: &str, table: &str) -> String {
        let table =
            self.source_identifier.get(&(source.to_string(), table.to_string())).map(String::as_str).unwrap_or(table);
        match self.source_schema.get(source).cloned().flatten() {
            Some(schema) => format!("{}.{}", self.naming.quote(&schema), self.naming.quote(table)),
            None => self.naming.relation(table),
        }
    }
    fn run(&self) -> crate::template::RunVars {
        self.run.clone()
    }
    fn run_query(&self, sql: &str) -> std::result::Result<template::QueryTable, String> {
        let Some(conn) = &self.queries else {
            return Err("run_query() runs in models and the macros they call, not here".into());
        };
        let mut wh = conn.lock().map_err(|_| "the query connection failed earlier".to_string())?;
        let mut t = TableSink::default();
        wh.query(sql, &mut t).map_err(|e| e.chain())?;
        Ok(t.0)
    }
}

/// Collects a query's rows for `run_query()`: numbers as numbers, the rest
/// as the text Sluice writes them in.
#[derive(Default)]
struct TableSink(template::QueryTable, Vec<u8>);

impl crate::warehouse::RowSink for TableSink {
    fn columns(&mut self, names: &[String]) -> Result<()> {
        self.0.columns = names.to_vec();
        Ok(())
    }
    fn row(&mut self, vals: &[crate::types::Val]) -> Result<()> {
        use crate::types::Val;
        let row = vals
            .iter()
            .map(|v| match v {
                Val::Null => serde_json::Value::Null,
                Val::Int(i) => serde_json::json!(i),
                Val::Bool(b) => serde_json::json!(b),
                Val::Float(f) if f.is_finite() => serde_json::json!(f),
                // A whole decimal (`sum()` of integers on MariaDB) stays whole.
                Val::Dec(d) => match (d.parse::<i64>(), d.parse::<f64>()) {
                    (Ok(i), _) => serde_json::json!(i),
                    (_, Ok(f)) => serde_json::json!(f),
                    _ => serde_json::json!(d),
                },
                Val::Text(t) => serde_json::json!(t),
                v => {
                    self.1.clear();
                    crate::warehouse::format_val(&mut self.1, v);
                    serde_json::json!(String::from_utf8_lossy(&self.1))
                }
            })
            .collect();
        self.0.rows.push(row);
        Ok(())
    }
}

/// Whether any model or macro calls `run_query()` (then a build opens a
/// connection for it).
pub fn uses_run_query(project: &Project) -> bool {
    project.models.iter().chain(&project.macros).any(|m| project.sources.get(m.file).text.contains("run_query"))
}

/// What templates see outside a pipeline run (`transform`, `compile`, `test`,
/// `snapshot` from the command line): today in the project's time zone.
pub fn outside_run(project: &Project) -> crate::template::RunVars {
    crate::template::RunVars {
        logical_date: chrono::Utc::now().with_timezone(&project.timezone()).date_naive().to_string(),
        run_id: String::new(),
    }
}

/// The table an incremental build adds to: `Some` (its columns) when the
/// model is incremental, its table exists and this is not a full refresh;
/// then the model renders with `is_incremental()` true. `transform` and
/// `compile` both decide here, so what `compile` writes is what is sent.
pub fn incremental_target(
    wh: &mut dyn Warehouse,
    n: &ModelNode,
    full_refresh: bool,
) -> Result<Option<crate::types::Schema>> {
    if n.kind != NodeKind::Model || n.materialized != Materialized::Incremental || full_refresh {
        return Ok(None);
    }
    wh.use_schema(n.schema.as_deref())?;
    wh.table_schema(n.identifier())
}

/// Renders a model (or snapshot) with its ephemeral dependencies inlined as CTEs.
pub fn render_node(
    project: &Project,
    graph: &ModelGraph,
    renderer: &Renderer,
    resolve: &Arc<WarehouseResolve>,
    node: usize,
    is_incremental: bool,
) -> Result<String> {
    let n = &graph.nodes[node];
    let file = file_of(project, n).ok_or_else(|| Error::internal(format!("`{}` has no SQL file", n.name)))?;
    let src = project.sources.get(file);
    let r: Arc<dyn Resolve> = resolve.clone();
    let call =
        Call { resolve: r.clone(), this: resolve.relation(&n.name), is_incremental, config: n.template_config() };
    let out = renderer.render(&src.name, &src.text, &call).map_err(|e| template_error(project, &src.name, &e))?;
    // Ephemeral models this one reaches through ephemeral models, in build order.
    let mut need = BTreeSet::new();
    let mut stack: Vec<usize> = graph.dag.deps[node].clone();
    while let Some(d) = stack.pop() {
        let dn = &graph.nodes[d];
        if dn.kind == NodeKind::Model && dn.materialized == Materialized::Ephemeral && need.insert(d) {
            stack.extend(graph.dag.deps[d].iter().copied());
        }
    }
    let mut ctes = Vec::new();
    for &i in graph.order.iter().filter(|i| need.contains(i)) {
        let en = &graph.nodes[i];
        let f = project.sources.get(file_of(project, en).expect("ephemeral models are files"));
        let call = Call {
            resolve: r.clone(),
            this: resolve.cte_name(&en.name),
            is_incremental: false,
            config: en.template_config(),
        };
        let e = renderer.render(&f.name, &f.text, &call).map_err(|e| template_error(project, &f.name, &e))?;
        ctes.push((resolve.cte_name(&en.name), e.sql));
    }
    Ok(template::with_ctes(&out.sql, &ctes))
}

/// A template error as the user's error, at its file and line.
pub fn template_error(project: &Project, file: &str, e: &template::TemplateError) -> Error {
    let f = e.file.clone().unwrap_or_else(|| file.to_string());
    let at = match (&e.range, e.line) {
        (Some(r), _) => project
            .sources
            .files
            .iter()
            .find(|x| x.name == f)
            .map(|x| {
                let (l, c) = x.line_col(r.start);
                format!(":{l}:{c}")
            })
            .unwrap_or_default(),
        (None, Some(l)) => format!(":{l}"),
        _ => String::new(),
    };
    Error::user(format!("{f}{at}: {}", e.message))
}

pub fn file_of(project: &Project, n: &ModelNode) -> Option<crate::project::tree::FileId> {
    match n.kind {
        NodeKind::Model => project.models.get(n.index).map(|m| m.file),
        NodeKind::Snapshot => project.snapshots.get(n.index).map(|m| m.file),
        NodeKind::Seed => None,
    }
}

/// What building one model did.
#[derive(Debug)]
pub struct ModelResult {
    pub name: String,
    pub materialized: Materialized,
    pub state: ModelState,
    pub duration: Duration,
    /// Time spent waiting on the database.
    pub db_time: Duration,
}

#[derive(Debug)]
pub enum ModelState {
    Built {
        detail: String,
    },
    Failed(Error),
    /// Not built because this dependency failed.
    Skipped(String),
}

/// A request to build models.
pub struct BuildRequest<'a> {
    pub project: &'a Project,
    pub plan: &'a Plan,
    pub select: Vec<String>,
    pub exclude: Vec<String>,
    pub full_refresh: bool,
    pub threads: usize,
    /// The run the models are built for (`{{ logical_date }}`).
    pub run: crate::template::RunVars,
    /// Checked before each model: models not started yet are not built.
    pub cancel: crate::steps::Cancel,
    /// Opens a connection to the warehouse (called once per thread).
    pub connect: &'a (dyn Fn() -> Result<Box<dyn Warehouse>> + Sync),
    /// Told about each model as it finishes.
    pub on_done: &'a (dyn Fn(&ModelResult) + Sync),
}

/// The selected models that get built (ephemeral ones are inlined instead).
pub fn buildable(plan: &Plan, select: &[String], exclude: &[String]) -> Result<Vec<usize>> {
    let g = &plan.models;
    let chosen = crate::plan::select(g, select, exclude).map_err(Error::user)?;
    Ok(g.order
        .iter()
        .copied()
        .filter(|i| chosen.contains(i))
        .filter(|&i| g.nodes[i].kind == NodeKind::Model && g.nodes[i].materialized != Materialized::Ephemeral)
        .collect())
}

/// Builds the selected models; returns one result per model, in build order.
pub fn build(req: &BuildRequest) -> Result<Vec<ModelResult>> {
    let g = &req.plan.models;
    let todo = buildable(req.plan, &req.select, &req.exclude)?;
    if todo.is_empty() {
        return Ok(Vec::new());
    }
    let renderer = crate::plan::renderer(req.project).map_err(|(f, e)| Error::user(format!("{f}: {}", e.message)))?;
    // The first connection tells the naming; each worker opens its own.
    let first = (req.connect)()?;
    let threads =
        if first.backend() == crate::warehouse::Backend::Sqlite { 1 } else { req.threads.max(1).min(todo.len()) };
    let mut resolve = WarehouseResolve::new(req.project, g, first.naming(), req.run.clone());
    if uses_run_query(req.project) {
        resolve.queries = Some(Mutex::new((req.connect)()?));
    }
    let resolve = Arc::new(resolve);
    let set: BTreeSet<usize> = todo.iter().copied().collect();
    // Dependencies among the models being built (others are taken as built).
    let deps: BTreeMap<usize, Vec<usize>> =
        todo.iter().map(|&i| (i, g.dag.ancestors(i).into_iter().filter(|d| set.contains(d)).collect())).collect();

    let (job_tx, job_rx) = mpsc::channel::<usize>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<(usize, ModelResult)>();
    let mut results: BTreeMap<usize, ModelResult> = BTreeMap::new();
    std::thread::scope(|s| -> Result<()> {
        let mut first = Some(first);
        for _ in 0..threads {
            let job_rx = job_rx.clone();
            let done_tx = done_tx.clone();
            let renderer = &renderer;
            let resolve = resolve.clone();
            let mut conn = first.take();
            s.spawn(move || {
                loop {
                    let next = job_rx.lock().expect("job queue").recv();
                    let Ok(i) = next else { break };
                    let t0 = Instant::now();
                    let mut db = Duration::ZERO;
                    let wh = match conn.as_mut() {
                        Some(w) => Ok(w),
                        // Connecting is the database's time too.
                        None => timed(&mut db, || (req.connect)()).map(|w| conn.insert(w)),
                    };
                    let state = match wh {
                        _ if req.cancel.reason().is_some() => {
                            ModelState::Failed(req.cancel.check().expect_err("stopped"))
                        }
                        Err(e) => ModelState::Failed(e),
                        Ok(wh) => match build_one(req, renderer, &resolve, wh.as_mut(), i, &mut db) {
                            Ok(detail) => ModelState::Built { detail },
                            Err(e) => ModelState::Failed(e),
                        },
                    };
                    let n = &req.plan.models.nodes[i];
                    let r = ModelResult {
                        name: n.name.clone(),
                        materialized: n.materialized,
                        state,
                        duration: t0.elapsed(),
                        db_time: db,
                    };
                    if done_tx.send((i, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut waiting: VecDeque<usize> = todo.iter().copied().collect();
        let mut running = 0usize;
        let mut failed: BTreeSet<usize> = BTreeSet::new();
        loop {
            // Start what is ready; mark what can no longer run.
            let mut still = VecDeque::new();
            while let Some(i) = waiting.pop_front() {
                let ds = &deps[&i];
                if let Some(f) = ds.iter().find(|d| failed.contains(d)) {
                    failed.insert(i);
                    let r = ModelResult {
                        name: g.nodes[i].name.clone(),
                        materialized: g.nodes[i].materialized,
                        state: ModelState::Skipped(g.nodes[*f].name.clone()),
                        duration: Duration::ZERO,
                        db_time: Duration::ZERO,
                    };
                    (req.on_done)(&r);
                    results.insert(i, r);
                } else if ds.iter().all(|d| results.get(d).is_some_and(|r| matches!(r.state, ModelState::Built { .. })))
                {
                    job_tx.send(i).map_err(|_| Error::internal("the model workers stopped"))?;
                    running += 1;
                } else {
                    still.push_back(i);
                }
            }
            waiting = still;
            if running == 0 {
                break;
            }
            let (i, r) = done_rx.recv().map_err(|_| Error::internal("the model workers stopped"))?;
            running -= 1;
            if matches!(r.state, ModelState::Failed(_)) {
                failed.insert(i);
            }
            (req.on_done)(&r);
            results.insert(i, r);
        }
        drop(job_tx);
        Ok(())
    })?;
    Ok(todo.iter().filter_map(|i| results.remove(i)).collect())
}

fn timed<T>(db: &mut Duration, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let r = f();
    *db += t.elapsed();
    r
}

/// Builds one model on `wh`; returns a short description of what it did.
fn build_one(
    req: &BuildRequest,
    renderer: &Renderer,
    resolve: &Arc<WarehouseResolve>,
    wh: &mut dyn Warehouse,
    i: usize,
    db: &mut Duration,
) -> Result<String> {
    let g = &req.plan.models;
    let n = &g.nodes[i];
    // The SQL sent, once rendered: a failure in the database is placed in it.
    let mut sent: Option<String> = None;
    let res = (|| -> Result<String> {
        timed(db, || resolve.use_schema(wh, n.schema.as_deref()))?;
        run_hooks(req.project, renderer, resolve, wh, n, &n.pre_hook, "pre-hook", db)?;
        let built = build_model(req, renderer, resolve, wh, i, db, &mut sent)?;
        run_hooks(req.project, renderer, resolve, wh, n, &n.post_hook, "post-hook", db)?;
        Ok(built)
    })();
    res.map_err(|e| {
        let place = match &sent {
            Some(sql) => place_error(req.project, n, sql, wh.error_offset(sql)),
            None => n.path.clone(),
        };
        e.context(format!("model `{}` ({place})", n.name))
    })
}

/// dbt's pre- or post-hooks of a model, seed or snapshot: each rendered
/// (with `this`) and run.
#[allow(clippy::too_many_arguments)]
pub fn run_hooks(
    project: &Project,
    renderer: &Renderer,
    resolve: &Arc<WarehouseResolve>,
    wh: &mut dyn Warehouse,
    n: &ModelNode,
    hooks: &[String],
    what: &str,
    db: &mut Duration,
) -> Result<()> {
    for hook in hooks {
        let r: Arc<dyn Resolve> = resolve.clone();
        let call =
            Call { resolve: r, this: resolve.relation(&n.name), is_incremental: false, config: n.template_config() };
        let sql = renderer.render(&n.path, hook, &call).map_err(|e| template_error(project, &n.path, &e))?.sql;
        if sql.trim().is_empty() {
            continue;
        }
        timed(db, || wh.execute(&sql)).map_err(|e| e.context(format!("{what} `{}`", sql.trim())))?;
    }
    Ok(())
}

/// The build itself (between the hooks); `sent` gets the SQL sent.
fn build_model(
    req: &BuildRequest,
    renderer: &Renderer,
    resolve: &Arc<WarehouseResolve>,
    wh: &mut dyn Warehouse,
    i: usize,
    db: &mut Duration,
    sent: &mut Option<String>,
) -> Result<String> {
    let g = &req.plan.models;
    let n = &g.nodes[i];
    {
        match n.materialized {
            Materialized::View | Materialized::Table => {
                let sql: &str = sent.insert(render_node(req.project, g, renderer, resolve, i, false)?);
                let build = Build { kind: n.materialized, contract: n.contract.as_ref(), unique_key: None };
                timed(db, || wh.materialize(n.identifier(), sql, &build))?;
                Ok(n.materialized.name().to_string())
            }
            Materialized::Incremental => {
                let existing = timed(db, || incremental_target(wh, n, req.full_refresh))?;
                match existing {
                    Some(t) => {
                        let sql: &str = sent.insert(render_node(req.project, g, renderer, resolve, i, true)?);
                        timed(db, || incremental(wh, n, sql, &t.columns))
                    }
                    _ => {
                        let sql: &str = sent.insert(render_node(req.project, g, renderer, resolve, i, false)?);
                        let build = Build {
                            kind: Materialized::Table,
                            contract: n.contract.as_ref(),
                            unique_key: n.unique_key.as_deref(),
                        };
                        timed(db, || wh.materialize(n.identifier(), sql, &build))?;
                        Ok(if req.full_refresh {
                            "incremental, rebuilt (full refresh)".into()
                        } else {
                            "incremental, first build".into()
                        })
                    }
                }
            }
            Materialized::Ephemeral => Ok("ephemeral".into()),
        }
    }
}

/// Where a model's build failed, for its error: the model file, at the
/// line and column when the database said where and the template's lines map
/// straight onto the SQL sent; and the SQL sent, written to
/// `target/compiled/<path>` (as `compile` does), at the line and column.
fn place_error(project: &Project, n: &ModelNode, sql: &str, offset: Option<usize>) -> String {
    let compiled = format!("target/compiled/{}", n.path);
    let written = write_compiled(project, &compiled, sql).is_ok();
    let Some(offset) = offset else {
        return if written { format!("{}, compiled in {compiled}", n.path) } else { n.path.clone() };
    };
    let (line, col) = line_col(sql, offset);
    let source = file_of(project, n).map(|f| &project.sources.get(f).text);
    let mut out = match source.and_then(|s| source_place(s, sql, line, col)) {
        Some((l, Some(c))) => format!("{}:{l}:{c}", n.path),
        Some((l, None)) => format!("{}:{l}", n.path),
        None => n.path.clone(),
    };
    if written {
        out.push_str(&format!(", compiled in {compiled}:{line}:{col}"));
    } else {
        out.push_str(&format!(", at line {line}, column {col} of the SQL sent"));
    }
    out
}

/// Writes `sql` to `rel` under the project folder (a temporary name, then renamed).
fn write_compiled(project: &Project, rel: &str, sql: &str) -> std::io::Result<()> {
    let path = project.dir.join(rel);
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension(format!("{}.tmp", uuid::Uuid::now_v7().simple()));
    std::fs::write(&tmp, sql)?;
    std::fs::rename(&tmp, &path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// The line (and column, when it maps) in a model's template `source` of
/// line `line`, column `col` of its rendered SQL. Lines the template leaves
/// as they are anchor the mapping (a longest common subsequence of
/// non-blank lines); between two anchors, lines map one to one when both
/// sides have as many (a `ref()` or a variable changed the line, not the
/// number of lines); otherwise (a macro or a block added or removed lines,
/// an ephemeral model was inlined above) there is no source line. The
/// column is the same when the line is the same up to it, else where the
/// token at the error is in the source line, when it is there once.
fn source_place(source: &str, sql: &str, line: usize, col: usize) -> Option<(usize, Option<usize>)> {
    let s: Vec<&str> = source.lines().collect();
    let c: Vec<&str> = sql.lines().collect();
    let (n, m) = (s.len(), c.len());
    if line == 0 || line > m || n.saturating_mul(m) > 4_000_000 {
        return None;
    }
    let same = |i: usize, j: usize| s[i] == c[j] && !s[i].trim().is_empty();
    let w = m + 1;
    let mut lcs = vec![0u32; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i * w + j] =
                if same(i, j) { lcs[(i + 1) * w + j + 1] + 1 } else { lcs[(i + 1) * w + j].max(lcs[i * w + j + 1]) };
        }
    }
    let mut anchors = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if same(i, j) && lcs[i * w + j] == lcs[(i + 1) * w + j + 1] + 1 {
            anchors.push((i, j));
            i += 1;
            j += 1;
        } else if lcs[(i + 1) * w + j] >= lcs[i * w + j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    let cj = line - 1;
    if let Some(&(si, _)) = anchors.iter().find(|a| a.1 == cj) {
        return Some((si + 1, Some(col)));
    }
    let (sp, cp) = anchors.iter().rev().find(|a| a.1 < cj).map_or((-1, -1), |&(a, b)| (a as isize, b as isize));
    let (sn, cn) =
        anchors.iter().find(|a| a.1 > cj).map_or((n as isize, m as isize), |&(a, b)| (a as isize, b as isize));
    if sn - sp != cn - cp {
        return None;
    }
    let si = (sp + (cj as isize - cp)) as usize;
    let (src, got) = (s[si], c[cj]);
    let prefix: String = got.chars().take(col - 1).collect();
    if src.starts_with(&prefix) {
        return Some((si + 1, Some(col)));
    }
    // The token at the error: a word, or one character.
    let rest: String = got.chars().skip(col - 1).collect();
    let is_word = |ch: char| ch.is_alphanumeric() || ch == '_';
    let token: String = match rest.chars().next() {
        Some(ch) if is_word(ch) => rest.chars().take_while(|&ch| is_word(ch)).collect(),
        Some(ch) => ch.to_string(),
        None => String::new(),
    };
    let hits: Vec<usize> = src
        .match_indices(&token)
        .map(|(k, _)| k)
        .filter(|&k| {
            !is_word(token.chars().next().unwrap_or(' '))
                || (!src[..k].chars().next_back().is_some_and(is_word)
                    && !src[k + token.len()..].chars().next().is_some_and(is_word))
        })
        .collect();
    match hits.as_slice() {
        [k] if !token.is_empty() => Some((si + 1, Some(src[..*k].chars().count() + 1))),
        _ => Some((si + 1, None)),
    }
}

/// Adds (or merges) an incremental model's new rows into its table.
fn incremental(wh: &mut dyn Warehouse, n: &ModelNode, sql: &str, table_cols: &[Column]) -> Result<String> {
    let d = wh.dialect();
    let rel = wh.relation(n.identifier());
    let query_cols = wh.query_columns(sql)?;
    let has = |cols: &[Column], name: &str| cols.iter().any(|c| c.name == name);
    let new: Vec<&Column> = query_cols.iter().filter(|c| !has(table_cols, &c.name)).collect();
    let gone: Vec<&Column> = table_cols.iter().filter(|c| !has(&query_cols, &c.name)).collect();
    let mut changes = Vec::new();
    if !new.is_empty() || !gone.is_empty() {
        let list = |v: &[&Column]| v.iter().map(|c| format!("`{}`", c.name)).collect::<Vec<_>>().join(", ");
        match n.on_schema_change {
            OnSchemaChange::Fail => {
                let mut m = format!("the query's columns differ from table `{}` (on_schema_change = \"fail\")", n.name);
                if !new.is_empty() {
                    m.push_str(&format!("; new: {}", list(&new)));
                }
                if !gone.is_empty() {
                    m.push_str(&format!("; gone: {}", list(&gone)));
                }
                m.push_str(
                    "; use on_schema_change = \"append_new_columns\" or \"sync_all_columns\", or --full-refresh",
                );
                return Err(Error::user(m));
            }
            OnSchemaChange::AppendNewColumns | OnSchemaChange::SyncAllColumns => {
                for c in &new {
                    wh.execute(&d.add_column(&rel, c))?;
                    changes.push(format!("added `{}`", c.name));
                }
                if n.on_schema_change == OnSchemaChange::SyncAllColumns {
                    for c in &gone {
                        wh.execute(&d.drop_column(&rel, &c.name))?;
                        changes.push(format!("dropped `{}`", c.name));
                    }
                }
            }
            OnSchemaChange::Ignore => {}
        }
    }
    let cols: Vec<String> = query_cols
        .iter()
        .filter(|c| {
            has(table_cols, &c.name)
                || (n.on_schema_change != OnSchemaChange::Ignore && new.iter().any(|x| x.name == c.name))
        })
        .map(|c| c.name.clone())
        .collect();
    let tmp = format!("__sluice_inc_{}", n.name);
    wh.execute(&d.drop_temp(&tmp))?;
    if let Some(key) = &n.unique_key {
        wh.execute(&d.unique_index(&format!("{}__sluice_key", n.identifier()), &rel, key))?;
    }
    wh.execute(&d.create_temp_as(&tmp, sql))?;
    let tmp_rel = d.temp_relation(&tmp);
    let insert = match &n.unique_key {
        Some(key) => d.upsert(&rel, &tmp_rel, &cols, key),
        None => d.insert_select(&rel, &tmp_rel, &cols),
    };
    let tx = d.begin();
    let res = (|| {
        if let Some(b) = tx {
            wh.execute(b)?;
        }
        wh.execute(&insert)?;
        if d.needs_commit() {
            wh.execute("COMMIT")?;
        }
        Ok(())
    })();
    if res.is_err() && tx.is_some() {
        let _ = wh.execute("ROLLBACK");
    }
    let _ = wh.execute(&d.drop_temp(&tmp));
    res?;
    let how = if n.unique_key.is_some() { "merged new rows" } else { "appended new rows" };
    Ok(if changes.is_empty() {
        format!("incremental, {how}")
    } else {
        format!("incremental, {how}; {}", changes.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        assert_eq!(line_col("select x\nfrom t", 0), (1, 1));
        assert_eq!(line_col("select x\nfrom t", 7), (1, 8));
        assert_eq!(line_col("select x\nfrom t", 14), (2, 6));
        assert_eq!(line_col("select 'ä', x", 12), (1, 12));
    }

    #[test]
    fn compiled_places_map_back_to_the_template_when_lines_do() {
        let source = "-- c\n{{ config(materialized='table') }}\nselect a.id,\n  a.nope\nfrom {{ ref('t') }} a\n";
        let sql = "-- c\n\nselect a.id,\n  a.nope\nfrom \"s\".\"t\" a\n";
        // An unchanged line: the same place.
        assert_eq!(source_place(source, sql, 4, 3), Some((4, Some(3))));
        // A line a ref() changed: the same column up to the change.
        assert_eq!(source_place(source, sql, 5, 6), Some((5, Some(6))));
        let sql2 = "-- c\n\nselect a.id,\n  a.nope\nfrom \"t\" a where zz\n";
        let source2 =
            "-- c\n{{ config(materialized='table') }}\nselect a.id,\n  a.nope\nfrom {{ ref('t') }} a where zz\n";
        // After it: where the token is in the source line.
        assert_eq!(source_place(source2, sql2, 5, 18), Some((5, Some(29))));
        // A token that is there twice: the line only.
        let source4 = "select x\nfrom {{ ref('t') }} x where x\n";
        assert_eq!(source_place(source4, "select x\nfrom \"t\" x where x\n", 2, 18), Some((2, None)));
        // Lines a macro added: no source line for them, but the lines after
        // an unchanged one still map.
        let source3 = "select {{ cols() }},\n  nope\nfrom t\n";
        let sql3 = "select a,\n  b,\n  c,\n  nope\nfrom t\n";
        assert_eq!(source_place(source3, sql3, 2, 3), None);
        assert_eq!(source_place(source3, sql3, 4, 3), Some((2, Some(3))));
    }
}
