//! `sql`: builds models in dependency order, each rendered for the target
//! warehouse and materialized as a table (rebuilt whole in one transaction) or
//! a view. A model's SQL error names the model file and shows the database's
//! own message.

use serde_json::json;

use super::{RunCtx, StepOutput};
use crate::error::{Error, Result};
use crate::project::{Materialized, SqlStep};
use crate::template::{self, RenderCtx};

pub fn run(ctx: &RunCtx, cfg: &SqlStep) -> Result<StepOutput> {
    let mut wh = ctx.warehouse(cfg.connection.as_ref().map(|c| c.v.as_str()))?;
    let graph = &ctx.plan.models;
    let selected: Vec<usize> = graph
        .order
        .iter()
        .copied()
        .filter(|&i| cfg.models.as_ref().is_none_or(|ms| ms.iter().any(|m| m.v == graph.nodes[i].name)))
        .collect();
    if selected.is_empty() {
        return Ok(StepOutput { summary: "no models to build".into(), ..Default::default() });
    }
    let rctx =
        RenderCtx { vars: ctx.project.config.vars.clone(), relation: wh.naming().relation_fn(), is_incremental: false };
    let meter = ctx.meter("building models", None);
    let mut built = Vec::new();
    for (n, &i) in selected.iter().enumerate() {
        let node = &graph.nodes[i];
        let model = &ctx.project.models[node.model];
        let file = ctx.project.model_path(model).to_string();
        meter.message(&format!("{} ({}/{})", node.name, n + 1, selected.len()));
        let rendered = template::render(&file, &node.name, ctx.project.model_text(model), &rctx).map_err(|e| {
            let at = e.line.map(|l| format!(":{l}")).unwrap_or_default();
            Error::user(format!("{file}{at}: {}", e.message))
        })?;
        wh.materialize(&node.name, &rendered.sql, node.materialized)
            .map_err(|e| e.context(format!("model `{}` ({file})", node.name)))?;
        meter.update(0, (n + 1) as u64);
        built.push(json!({
            "model": node.name,
            "file": file,
            "materialized": match node.materialized { Materialized::Table => "table", Materialized::View => "view" },
        }));
    }
    let names: Vec<&str> = selected.iter().map(|&i| graph.nodes[i].name.as_str()).collect();
    let s = if names.len() == 1 { "" } else { "s" };
    Ok(StepOutput {
        summary: format!("built {} model{s}: {}", names.len(), names.join(", ")),
        rows: None,
        bytes: None,
        details: json!({ "models": built }),
    })
}
