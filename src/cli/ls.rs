//! `sluice ls`, as `dbt ls`: the nodes and tests a selection names, without
//! connecting to anything.

use serde_json::json;

use crate::error::Result;
use crate::steps::data_tests::{self, Case};

use super::artifacts;
use super::models::{Selection, open};

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub sel: Selection,
    /// Only these kinds: model, seed, snapshot, test (several are a union).
    #[arg(long = "resource-type", num_args = 1.., value_name = "TYPE",
          value_parser = ["model", "seed", "snapshot", "test", "all", "default"])]
    pub resource_type: Vec<String>,
    /// `selector` (`project.folder.name`, as dbt prints), `name`, `path`, or `json` (one object a line).
    #[arg(long, short = 'o', default_value = "selector", value_parser = ["selector", "name", "path", "json"])]
    pub output: String,
}

pub fn run(a: LsArgs) -> Result<i32> {
    let (project, plan) = open(&a.sel)?;
    let g = &plan.models;
    let (nodes, tests) = data_tests::select_nodes_and_tests(&project, &plan, &a.sel.select, &a.sel.exclude)?;
    let wants = |kind: &str| {
        a.resource_type.is_empty() || a.resource_type.iter().any(|t| t == kind || t == "all" || t == "default")
    };
    let name = project.name();
    let mut lines = Vec::new();
    for &i in g.order.iter().filter(|i| nodes.contains(i)) {
        let n = &g.nodes[i];
        if !wants(n.kind.name()) {
            continue;
        }
        let mut fqn = vec![name.clone()];
        let parts: Vec<&str> = n.path.split('/').collect();
        if parts.len() > 2 {
            fqn.extend(parts[1..parts.len() - 1].iter().map(|s| s.to_string()));
        }
        fqn.push(n.name.clone());
        let materialized = if n.kind == crate::plan::NodeKind::Model { n.materialized.name() } else { n.kind.name() };
        lines.push(match a.output.as_str() {
            "name" => n.name.clone(),
            "path" => n.path.clone(),
            "json" => json!({
                "name": n.name,
                "resource_type": n.kind.name(),
                "package_name": name,
                "original_file_path": n.path,
                "unique_id": artifacts::node_id(&project, n.kind.name(), &n.name),
                "tags": n.tags,
                "config": { "materialized": materialized, "tags": n.tags },
                "depends_on": { "nodes": g.dag.deps[i].iter().map(|&d| artifacts::node_id(&project, g.nodes[d].kind.name(), &g.nodes[d].name)).collect::<Vec<_>>() },
            })
            .to_string(),
            _ => fqn.join("."),
        });
    }
    if wants("test") {
        for t in &tests {
            let path = match &t.kind {
                Case::Singular(k) => project.sources.get(project.singular_tests[*k].file).name.clone(),
                Case::Generic(_) => String::new(),
            };
            lines.push(match a.output.as_str() {
                "name" => t.name.clone(),
                "path" => path,
                "json" => json!({
                    "name": t.name,
                    "resource_type": "test",
                    "package_name": name,
                    "original_file_path": path,
                    "unique_id": artifacts::test_id(&project, &t.name),
                    "test_type": if matches!(t.kind, Case::Generic(_)) { "generic" } else { "singular" },
                    "attached_node": t.model.as_ref().and_then(|m| g.nodes.iter().find(|n| &n.name == m)).map(|n| artifacts::node_id(&project, n.kind.name(), &n.name)),
                    "column_name": t.column,
                })
                .to_string(),
                _ => format!("{name}.{}", t.name),
            });
        }
    }
    if lines.is_empty() {
        errln!("warning: the selection names no node");
        return Ok(0);
    }
    for l in lines {
        outln!("{l}");
    }
    Ok(0)
}
