//! dbt's artifacts: `target/manifest.json` (the project's nodes and their
//! dependencies) and `target/run_results.json` (what a command did to each
//! node), with the fields the ecosystem's artifact readers use.

use std::time::Duration;

use serde_json::{Value, json};

use crate::error::Result;
use crate::plan::Plan;
use crate::project::Project;
use crate::steps::data_tests::{self, Case, TestCase};

/// The versions of dbt's artifact schemas these files follow.
const MANIFEST_SCHEMA: &str = "https://schemas.getdbt.com/dbt/manifest/v12.json";
const RUN_RESULTS_SCHEMA: &str = "https://schemas.getdbt.com/dbt/run-results/v6.json";

/// What one command did to one node.
#[derive(Debug, Clone)]
pub struct NodeRun {
    pub unique_id: String,
    /// `success`, `error`, `skipped` (models, seeds, snapshots); `pass`, `warn`, `fail`, `error` (tests).
    pub status: &'static str,
    pub message: String,
    pub failures: Option<u64>,
    pub started: chrono::DateTime<chrono::Utc>,
    pub took: Duration,
    /// Sluice's own fields, added to the result (`materialized`, `database_time`).
    pub extra: serde_json::Map<String, Value>,
}

impl NodeRun {
    /// A node that ended now after `took`.
    pub fn ended(unique_id: String, status: &'static str, message: String, took: Duration) -> NodeRun {
        let started = chrono::Utc::now() - chrono::Duration::from_std(took).unwrap_or_default();
        NodeRun { unique_id, status, message, failures: None, started, took, extra: Default::default() }
    }
}

/// `model.<project>.<name>` (or `seed.`, `snapshot.`).
pub fn node_id(project: &Project, kind: &str, name: &str) -> String {
    format!("{kind}.{}.{name}", project.name())
}

/// `source.<project>.<source>.<table>`.
pub fn source_id(project: &Project, source: &str, table: &str) -> String {
    format!("source.{}.{source}.{table}", project.name())
}

/// `test.<project>.<name>`.
pub fn test_id(project: &Project, name: &str) -> String {
    format!("test.{}.{name}", project.name())
}

pub(super) fn metadata(project: &Project, schema: &str, invocation: &str) -> Value {
    json!({
        "dbt_schema_version": schema,
        "dbt_version": "1.11.0",
        "generated_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "invocation_id": invocation,
        "project_name": project.name(),
        "adapter_type": project.dbt.as_ref().map(|t| t.kind.clone()),
        "generator": format!("sluice {}", env!("CARGO_PKG_VERSION")),
    })
}

/// `[project, folders…, name]`, as dbt's `fqn`.
fn fqn(project: &Project, path: &str, name: &str) -> Vec<String> {
    let mut out = vec![project.name()];
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > 2 {
        out.extend(parts[1..parts.len() - 1].iter().map(|s| s.to_string()));
    }
    out.push(name.to_string());
    out
}

/// A node's relation as dbt writes it in `relation_name` (none for ephemeral models).
fn relation_name(project: &Project, n: &crate::plan::ModelNode, schema: &str) -> Value {
    if n.kind == crate::plan::NodeKind::Model && n.materialized == crate::project::Materialized::Ephemeral {
        return Value::Null;
    }
    let kind = project.dbt.as_ref().map(|t| t.kind.as_str()).unwrap_or("");
    let (open, close) = if matches!(kind, "mysql" | "mariadb") { ('`', '`') } else { ('"', '"') };
    let naming = crate::warehouse::Naming { open, close, schema: Some(schema.to_string()).filter(|s| !s.is_empty()) };
    json!(n.relation(&naming))
}

/// The manifest: every model, seed, snapshot and test, with its dependencies.
pub fn manifest(project: &Project, plan: &Plan, tests: &[TestCase], invocation: &str) -> Value {
    let g = &plan.models;
    let (schema, database) = project.dbt.as_ref().map(|t| (t.schema.clone(), t.database.clone())).unwrap_or_default();
    let mut nodes = serde_json::Map::new();
    let mut child_map: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut parent_map = serde_json::Map::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let kind = n.kind.name();
        let id = node_id(project, kind, &n.name);
        let mut deps: Vec<String> =
            g.dag.deps[i].iter().map(|&d| node_id(project, g.nodes[d].kind.name(), &g.nodes[d].name)).collect();
        deps.extend(n.sources.iter().map(|(s, t)| source_id(project, s, t)));
        for d in &deps {
            child_map.entry(d.clone()).or_default().push(id.clone());
        }
        child_map.entry(id.clone()).or_default();
        parent_map.insert(id.clone(), json!(deps));
        let meta = project.meta.model(&n.name);
        let columns: serde_json::Map<String, Value> = meta
            .map(|m| {
                m.columns
                    .iter()
                    .map(|c| {
                        (
                            c.name.v.clone(),
                            json!({ "name": c.name.v, "description": c.description.clone().unwrap_or_default() }),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let materialized = if n.kind == crate::plan::NodeKind::Model { n.materialized.name() } else { kind };
        let file = match n.kind {
            crate::plan::NodeKind::Model => project.models.get(n.index).map(|m| m.file),
            crate::plan::NodeKind::Snapshot => project.snapshots.get(n.index).map(|m| m.file),
            crate::plan::NodeKind::Seed => None,
        };
        let raw_code = file.map(|f| project.sources.get(f).text.clone()).unwrap_or_default();
        let description = meta.and_then(|m| m.description.clone()).unwrap_or_default();
        nodes.insert(
            id.clone(),
            json!({
                "unique_id": id,
                "resource_type": kind,
                "name": n.name,
                "alias": n.identifier(),
                "package_name": project.name(),
                "path": n.path.split_once('/').map(|(_, r)| r).unwrap_or(&n.path),
                "original_file_path": n.path,
                "fqn": fqn(project, &n.path, &n.name),
                "schema": n.schema.clone().unwrap_or_else(|| schema.clone()),
                "database": database,
                "relation_name": relation_name(project, n, &schema),
                "tags": n.tags,
                "description": description,
                "raw_code": raw_code,
                "language": "sql",
                "columns": columns,
                "config": { "materialized": materialized, "tags": n.tags, "unique_key": n.unique_key, "enabled": true },
                "depends_on": { "nodes": deps, "macros": [] },
            }),
        );
    }
    for t in tests {
        let id = test_id(project, &t.name);
        let (deps, path, test_type) = match &t.kind {
            Case::Generic(_) => {
                let on = t.model.as_deref().unwrap_or_default();
                let deps: Vec<String> =
                    g.nodes.iter().filter(|n| n.name == on).map(|n| node_id(project, n.kind.name(), &n.name)).collect();
                (deps, String::new(), "generic")
            }
            Case::Singular(k) => {
                let st = &project.singular_tests[*k];
                let text = &project.sources.get(st.file).text;
                let refs = data_tests::refs_in(text);
                let deps: Vec<String> = g
                    .nodes
                    .iter()
                    .filter(|n| refs.contains(&n.name))
                    .map(|n| node_id(project, n.kind.name(), &n.name))
                    .collect();
                (deps, project.sources.get(st.file).name.clone(), "singular")
            }
        };
        for d in &deps {
            child_map.entry(d.clone()).or_default().push(id.clone());
        }
        parent_map.insert(id.clone(), json!(deps));
        let severity = match t.severity {
            crate::project::TestSeverity::Warn => "warn",
            _ => "error",
        };
        nodes.insert(
            id.clone(),
            json!({
                "unique_id": id,
                "resource_type": "test",
                "name": t.name,
                "package_name": project.name(),
                "original_file_path": path,
                "fqn": [project.name(), t.name.clone()],
                "schema": schema,
                "database": database,
                "column_name": t.column,
                "attached_node": deps.first(),
                "test_type": test_type,
                "config": { "materialized": "test", "severity": severity, "enabled": true },
                "depends_on": { "nodes": deps, "macros": [] },
            }),
        );
    }
    let mut sources = serde_json::Map::new();
    for s in &project.meta.sources {
        for t in &s.tables {
            let id = source_id(project, &s.name.v, &t.v);
            child_map.entry(id.clone()).or_default();
            sources.insert(
                id.clone(),
                json!({
                    "unique_id": id,
                    "resource_type": "source",
                    "package_name": project.name(),
                    "source_name": s.name.v,
                    "name": t.v,
                    "identifier": s.identifier(&t.v),
                    "description": s.table_descriptions.get(&t.v).cloned().unwrap_or_default(),
                    "source_description": s.description.clone().unwrap_or_default(),
                    "schema": s.schema.clone().unwrap_or_else(|| schema.clone()),
                    "database": database,
                    "original_file_path": project.sources.get(t.loc.file).name,
                    "fqn": [project.name(), s.name.v.clone(), t.v.clone()],
                }),
            );
        }
    }
    let docs: serde_json::Map<String, Value> = project
        .meta
        .docs
        .iter()
        .map(|(name, text)| {
            let id = format!("doc.{}.{name}", project.name());
            let doc = json!({ "unique_id": id, "name": name, "resource_type": "doc", "package_name": project.name(), "block_contents": text });
            (id, doc)
        })
        .collect();
    json!({
        "metadata": metadata(project, MANIFEST_SCHEMA, invocation),
        "nodes": nodes,
        "sources": sources,
        "docs": docs,
        "macros": {},
        "exposures": {},
        "metrics": {},
        "parent_map": parent_map,
        "child_map": child_map,
    })
}

/// The run results of one command.
pub fn run_results(
    project: &Project,
    command: &str,
    runs: &[NodeRun],
    elapsed: Duration,
    invocation: &str,
    extra: serde_json::Map<String, Value>,
) -> Value {
    let results: Vec<Value> = runs
        .iter()
        .map(|r| {
            let done = r.started + chrono::Duration::from_std(r.took).unwrap_or_default();
            let ts = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let mut v = json!({
                "unique_id": r.unique_id,
                "status": r.status,
                "message": r.message,
                "failures": r.failures,
                "execution_time": r.took.as_secs_f64(),
                "thread_id": "Thread-1",
                "adapter_response": {},
                "timing": [
                    { "name": "compile", "started_at": ts(r.started), "completed_at": ts(r.started) },
                    { "name": "execute", "started_at": ts(r.started), "completed_at": ts(done) },
                ],
            });
            if let Some(o) = v.as_object_mut() {
                o.extend(r.extra.clone());
            }
            v
        })
        .collect();
    let mut v = json!({
        "metadata": metadata(project, RUN_RESULTS_SCHEMA, invocation),
        "args": { "which": command },
        "command": command,
        "elapsed_time": elapsed.as_secs_f64(),
        "results": results,
    });
    if let Some(o) = v.as_object_mut() {
        o.extend(extra);
    }
    v
}

/// Writes `target/manifest.json` and `target/run_results.json` (with
/// `extra` top-level fields).
pub fn write(
    project: &Project,
    plan: &Plan,
    command: &str,
    runs: &[NodeRun],
    elapsed: Duration,
    extra: serde_json::Map<String, Value>,
) -> Result<()> {
    let invocation = uuid::Uuid::now_v7().to_string();
    let tests = data_tests::collect(project, plan, &[], &[]).unwrap_or_default();
    let m = manifest(project, plan, &tests, &invocation);
    super::models::write_target(project, "manifest.json", &serde_json::to_vec_pretty(&m).expect("JSON"))?;
    let rr = run_results(project, command, runs, elapsed, &invocation, extra);
    super::models::write_target(project, "run_results.json", &serde_json::to_vec_pretty(&rr).expect("JSON"))
}
