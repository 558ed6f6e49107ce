//! `sluice dag [PIPELINE]`: a pipeline's plan as a tree, DOT or JSON.

use serde_json::json;

use crate::error::Result;
use crate::orchestrate::runs::pool_of;
use crate::plan::{Plan, StepGraph};
use crate::project::{ExportWhat, PipelineConfig, Project, StepConfig, StepKind};

use super::ProjectArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An indented tree.
    Text,
    /// A Graphviz graph (`sluice dag --format dot | dot -Tsvg > dag.svg`).
    Dot,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// The pipeline to show (all of them when left out).
    pub pipeline: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(a: Args) -> Result<i32> {
    let (project, plan) = crate::plan::open_with(&a.project.project, &a.project.options())?;
    let pipelines: Vec<&PipelineConfig> = match &a.pipeline {
        Some(p) => vec![project.pipeline(p)?],
        None => project.pipelines.iter().collect(),
    };
    match a.format {
        Format::Text => {
            for (n, pl) in pipelines.iter().enumerate() {
                if n > 0 {
                    outln!();
                }
                out!("{}", tree(&project, &plan, pl));
            }
        }
        Format::Dot => {
            for pl in &pipelines {
                out!("{}", dot(&project, &plan, pl));
            }
        }
        Format::Json => {
            let v: Vec<serde_json::Value> = pipelines.iter().map(|pl| to_json(&project, &plan, pl)).collect();
            let out = if a.pipeline.is_some() { v.into_iter().next().unwrap_or_default() } else { json!(v) };
            outln!("{}", serde_json::to_string_pretty(&out).expect("JSON values serialize"));
        }
    }
    Ok(0)
}

fn graph<'a>(project: &Project, plan: &'a Plan, pl: &PipelineConfig) -> &'a StepGraph {
    plan.pipeline(project, &pl.name.v).expect("every pipeline has a graph")
}

/// One line about what a step does.
fn detail(project: &Project, plan: &Plan, step: &StepConfig) -> String {
    match &step.kind {
        StepKind::Ingest(i) => {
            let ds = crate::steps::ingest::dataset_of(step, i);
            format!("ingest: {} → raw/{ds}/", i.source.shown())
        }
        StepKind::Load(l) => {
            let mode = l.mode.name();
            format!("load: {} → table {} ({mode})", l.from.v, l.table.v)
        }
        StepKind::Sql(s) => {
            let names = models_of(plan, s);
            let _ = project;
            if names.is_empty() { "sql: no models".into() } else { format!("sql: {}", names.join(", ")) }
        }
        StepKind::Seed(n) | StepKind::Snapshot(n) | StepKind::Test(n) => {
            let what = if n.select.is_empty() { "all".to_string() } else { n.select.join(" ") };
            let ex = if n.exclude.is_empty() { String::new() } else { format!(" --exclude {}", n.exclude.join(" ")) };
            format!("{}: {what}{ex}", step.kind.name())
        }
        StepKind::Clean(c) => format!("clean: {} → {}", c.table.v, c.output.v),
        StepKind::Command(c) => format!("command: {}", crate::steps::command::shown(&c.written())),
        StepKind::Empty => "empty".into(),
        StepKind::Export(e) => {
            let what = match &e.what {
                ExportWhat::Table(t) => t.v.clone(),
                ExportWhat::Query(_) => "query".into(),
            };
            format!("export: {what} → {}", crate::secret::redact_url(&e.path.v))
        }
    }
}

/// `  (pool NAME)` for a step outside the default pool, else nothing.
fn pool_note(pl: &PipelineConfig, s: &StepConfig) -> String {
    match pool_of(pl, s) {
        crate::state::DEFAULT_POOL => String::new(),
        p => format!("  (pool {p})"),
    }
}

/// The models a sql step builds, in build order.
fn models_of(plan: &Plan, s: &crate::project::SqlStep) -> Vec<String> {
    let mut select = s.select.clone();
    select.extend(s.models.iter().flatten().map(|m| m.v.clone()));
    crate::steps::models::buildable(plan, &select, &s.exclude)
        .unwrap_or_default()
        .into_iter()
        .map(|i| plan.models.nodes[i].name.clone())
        .collect()
}

/// Each step is drawn once, under the last of its dependencies in run order;
/// its other dependencies are named after it.
pub fn tree(project: &Project, plan: &Plan, pl: &PipelineConfig) -> String {
    let g = graph(project, plan, pl);
    let pos: Vec<usize> = {
        let mut p = vec![0; pl.steps.len()];
        for (k, &i) in g.order.iter().enumerate() {
            p[i] = k;
        }
        p
    };
    let parent: Vec<Option<usize>> =
        (0..pl.steps.len()).map(|i| g.dag.deps[i].iter().copied().max_by_key(|&d| pos[d])).collect();
    let mut out = format!("{}\n", pl.name.v);
    let roots: Vec<usize> = g.order.iter().copied().filter(|&i| parent[i].is_none()).collect();
    #[allow(clippy::too_many_arguments)]
    fn walk(
        out: &mut String,
        project: &Project,
        plan: &Plan,
        pl: &PipelineConfig,
        g: &StepGraph,
        parent: &[Option<usize>],
        nodes: &[usize],
        prefix: &str,
    ) {
        for (k, &i) in nodes.iter().enumerate() {
            let last = k + 1 == nodes.len();
            let step = &pl.steps[i];
            let others: Vec<&str> =
                g.dag.deps[i].iter().filter(|&&d| Some(d) != parent[i]).map(|&d| pl.steps[d].name.v.as_str()).collect();
            let also = if others.is_empty() { String::new() } else { format!("  (also after {})", others.join(", ")) };
            out.push_str(&format!(
                "{prefix}{}{}  [{}]{}{also}\n",
                if last { "└── " } else { "├── " },
                step.name.v,
                detail(project, plan, step),
                pool_note(pl, step)
            ));
            let children: Vec<usize> = g.order.iter().copied().filter(|&c| parent[c] == Some(i)).collect();
            let next = format!("{prefix}{}", if last { "    " } else { "│   " });
            walk(out, project, plan, pl, g, parent, &children, &next);
        }
    }
    walk(&mut out, project, plan, pl, g, &parent, &roots, "");
    out
}

fn dot_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn dot(project: &Project, plan: &Plan, pl: &PipelineConfig) -> String {
    let g = graph(project, plan, pl);
    let mut out = format!("digraph {} {{\n  rankdir=LR;\n  node [shape=box];\n", dot_str(&pl.name.v));
    for &i in &g.order {
        let s = &pl.steps[i];
        out.push_str(&format!(
            "  {} [label={}];\n",
            dot_str(&s.name.v),
            dot_str(&format!("{}\n{}{}", s.name.v, detail(project, plan, s), pool_note(pl, s)))
        ));
    }
    for &i in &g.order {
        for &d in &g.dag.deps[i] {
            out.push_str(&format!("  {} -> {};\n", dot_str(&pl.steps[d].name.v), dot_str(&pl.steps[i].name.v)));
        }
    }
    out.push_str("}\n");
    out
}

pub fn to_json(project: &Project, plan: &Plan, pl: &PipelineConfig) -> serde_json::Value {
    let g = graph(project, plan, pl);
    let steps: Vec<serde_json::Value> = g
        .order
        .iter()
        .map(|&i| {
            let s = &pl.steps[i];
            let mut v = json!({
                "name": s.name.v,
                "kind": s.kind.name(),
                "depends_on": g.dag.deps[i].iter().map(|&d| pl.steps[d].name.v.clone()).collect::<Vec<_>>(),
                "detail": detail(project, plan, s),
                "pool": pool_of(pl, s),
            });
            if let StepKind::Sql(q) = &s.kind {
                let models = models_of(plan, q);
                let with_deps: Vec<serde_json::Value> = models
                    .iter()
                    .map(|m| {
                        let idx = plan.models.dag.index(m).expect("model in graph");
                        json!({
                            "name": m,
                            "refs": plan.models.dag.deps[idx].iter().map(|&d| plan.models.dag.names[d].clone()).chain(plan.models.nodes[idx].tables.iter().cloned()).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                v["models"] = json!(with_deps);
            }
            v
        })
        .collect();
    json!({ "pipeline": pl.name.v, "steps": steps })
}
