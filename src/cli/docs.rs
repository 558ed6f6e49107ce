//! `sluice docs generate`: a static documentation site for the project's
//! models, seeds, snapshots, sources and tests, one folder that works offline
//! from `file://` (no scripts, stylesheets or fonts from the network). It is
//! built from the manifest's data (`artifacts::manifest`) plus each node's
//! rendered SQL (as `sluice compile` renders it); it never touches data.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::plan::NodeKind;
use crate::project::Project;
use crate::steps::data_tests;
use crate::steps::models::{WarehouseResolve, outside_run, render_node};
use crate::warehouse;

use super::models::{Selection, open};

#[derive(Debug, clap::Args)]
pub struct DocsArgs {
    /// `generate` (the default, and the only action for now).
    #[arg(value_parser = ["generate"], value_name = "ACTION")]
    pub action: Option<String>,
    #[command(flatten)]
    pub sel: Selection,
    /// The folder to write the site into (else target/docs under the project).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub state: super::services::StateArgs,
    /// Do not connect to the warehouse: the site then has no row counts.
    #[arg(long)]
    pub no_rows: bool,
}

/// Writes the site and prints where.
pub fn run(a: DocsArgs) -> Result<i32> {
    let (project, plan) = open(&a.sel)?;
    let tests = data_tests::collect(&project, &plan, &[], &[]).unwrap_or_default();
    let mut m = super::artifacts::manifest(&project, &plan, &tests, "docs");
    // Each model's and snapshot's SQL as `sluice compile` renders it.
    let url = project.connection_url(a.sel.connection.as_deref())?;
    let naming = warehouse::naming_for(&url);
    let renderer = crate::plan::renderer(&project).map_err(|(f, e)| Error::user(format!("{f}: {}", e.message)))?;
    let resolve = Arc::new(WarehouseResolve::new(&project, &plan.models, naming, outside_run(&project)));
    for (i, n) in plan.models.nodes.iter().enumerate() {
        if n.kind == NodeKind::Seed {
            continue;
        }
        let sql = match render_node(&project, &plan.models, &renderer, &resolve, i, false) {
            Ok(s) => s,
            Err(e) => format!("-- cannot render: {e}"),
        };
        let id = super::artifacts::node_id(&project, n.kind.name(), &n.name);
        if let Some(node) = m["nodes"].get_mut(&id) {
            node["compiled_code"] = Value::String(sql);
        }
    }
    add_pipeline_steps(&project, &plan, &mut m);
    add_dashboards(&project, &plan, &mut m);
    if !a.no_rows {
        for (id, rows) in row_counts(&project, &plan, a.sel.connection.as_deref()) {
            if let Some(node) = m["nodes"].get_mut(&id) {
                node["sluice_rows"] = Value::from(rows);
            }
        }
    }
    // Sluice's own: each model's last build, from the state store's runs.
    for (model, b) in last_builds(&project, a.state.state.as_deref()) {
        let id = super::artifacts::node_id(&project, "model", &model);
        if let Some(node) = m["nodes"].get_mut(&id) {
            node["sluice_last_build"] = b;
        }
    }
    for ((pipeline, step), l) in last_loads(&project, a.state.state.as_deref()) {
        if let Some(node) = m["nodes"].get_mut(format!("load.{pipeline}.{step}")) {
            node["sluice_last_load"] = l;
        }
    }
    let out = match &a.out {
        Some(d) => d.clone(),
        None => project.dir.join("target").join("docs"),
    };
    let files = site(&project, &m);
    for (rel, text) in &files {
        let path = out.join(rel);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create folder", d, e))?;
        }
        std::fs::write(&path, text).map_err(|e| Error::io("write", &path, e))?;
    }
    outln!(
        "wrote {} into {} (open {})",
        crate::steps::count(files.len() as u64, "page"),
        out.display(),
        out.join("index.html").display()
    );
    Ok(0)
}

/// Sluice's own: each pipeline's load steps (see `add_load`) and export steps as `export.<pipeline>.<step>`
/// nodes, depending on the model they export (`table`) or the models their
/// query refs, so the lineage runs from sources to exports.
fn add_pipeline_steps(project: &Project, plan: &crate::plan::Plan, m: &mut Value) {
    for p in &project.pipelines {
        for st in &p.steps {
            if let crate::project::StepKind::Load(l) = &st.kind {
                add_load(project, plan, m, &p.name.v, &st.name.v, &l.table.v);
                continue;
            }
            let crate::project::StepKind::Export(e) = &st.kind else { continue };
            let names = match &e.what {
                crate::project::ExportWhat::Table(t) => vec![t.v.clone()],
                crate::project::ExportWhat::Query(q) => data_tests::refs_in(&q.v),
            };
            let deps: Vec<String> = plan
                .models
                .nodes
                .iter()
                .filter(|n| names.contains(&n.name))
                .map(|n| super::artifacts::node_id(project, n.kind.name(), &n.name))
                .collect();
            let id = format!("export.{}.{}", p.name.v, st.name.v);
            let what = match &e.what {
                crate::project::ExportWhat::Table(t) => format!("table {}", t.v),
                crate::project::ExportWhat::Query(q) => q.v.clone(),
            };
            for d in &deps {
                if let Some(c) = m["child_map"].get_mut(d).and_then(|c| c.as_array_mut()) {
                    c.push(Value::String(id.clone()));
                }
            }
            m["parent_map"][&id] = serde_json::json!(deps);
            m["nodes"][&id] = serde_json::json!({
                "unique_id": id,
                "resource_type": "export",
                "name": format!("{}.{}", p.name.v, st.name.v),
                "description": format!("writes {} to {}", e.format.name(), e.path.v),
                "original_file_path": project.sources.get(p.file).name,
                "raw_code": what,
            });
        }
    }
}

/// Sluice's own: each published model (`publish = true`: charted on the
/// dashboard and served at `/api/data/<model>`) as a `dashboard.<model>`
/// node after it, so the lineage ends where people read the data.
fn add_dashboards(project: &Project, plan: &crate::plan::Plan, m: &mut Value) {
    for n in &plan.models.nodes {
        if n.kind != NodeKind::Model || !project.meta.model(&n.name).is_some_and(|x| x.publish) {
            continue;
        }
        let model = super::artifacts::node_id(project, "model", &n.name);
        let id = format!("dashboard.{}", n.name);
        if let Some(c) = m["child_map"].get_mut(&model).and_then(|c| c.as_array_mut()) {
            c.push(Value::String(id.clone()));
        }
        m["parent_map"][&id] = serde_json::json!([model]);
        m["child_map"][&id] = serde_json::json!([]);
        m["nodes"][&id] = serde_json::json!({
            "unique_id": id,
            "resource_type": "dashboard",
            "name": n.name,
            "description": format!("charted on the dashboard (/ui) and served at /api/data/{}", n.name),
        });
    }
}

/// Each table's rows now (models built as tables or incrementally, seeds,
/// snapshots; views are not run), by node id. A warehouse that cannot be
/// reached is a warning: the site is written without counts.
fn row_counts(project: &Project, plan: &crate::plan::Plan, connection: Option<&str>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let url = match project.connection_url(connection) {
        Ok(u) => u,
        Err(_) => return out,
    };
    let mut wh = match warehouse::connect(&url, &project.dir) {
        Ok(w) => w,
        Err(e) => {
            errln!("warning: no row counts in the docs: {}", e.chain());
            return out;
        }
    };
    let resolve = WarehouseResolve::new(project, &plan.models, wh.naming(), outside_run(project));
    if resolve.use_schema(wh.as_mut(), None).is_err() {
        return out;
    }
    for n in &plan.models.nodes {
        let table = match n.kind {
            NodeKind::Seed | NodeKind::Snapshot => true,
            NodeKind::Model => {
                matches!(
                    n.materialized,
                    crate::project::Materialized::Table | crate::project::Materialized::Incremental
                )
            }
        };
        if !table {
            continue;
        }
        let mut c = crate::warehouse::CountSink::default();
        // A node not built yet has no table: no count, no warning.
        if wh.query(&format!("SELECT COUNT(*) FROM {}", resolve.relation(&n.name)), &mut c).is_ok()
            && let Some(rows) = c.0
        {
            out.insert(super::artifacts::node_id(project, n.kind.name(), &n.name), rows);
        }
    }
    out
}

/// A pipeline's load step as `load.<pipeline>.<step>`, before the models
/// and snapshots whose SQL refs its table.
fn add_load(project: &Project, plan: &crate::plan::Plan, m: &mut Value, pipeline: &str, step: &str, table: &str) {
    let id = format!("load.{pipeline}.{step}");
    let mut children = Vec::new();
    for n in &plan.models.nodes {
        let nid = super::artifacts::node_id(project, n.kind.name(), &n.name);
        let raw = m["nodes"][&nid]["raw_code"].as_str().unwrap_or_default();
        if n.kind != NodeKind::Seed && data_tests::refs_in(raw).iter().any(|r| r == table) {
            children.push(nid.clone());
            if let Some(ps) = m["parent_map"].get_mut(&nid).and_then(|v| v.as_array_mut()) {
                ps.push(Value::String(id.clone()));
            }
        }
    }
    m["child_map"][&id] = serde_json::json!(children);
    m["parent_map"][&id] = serde_json::json!([]);
    m["nodes"][&id] = serde_json::json!({
        "unique_id": id,
        "resource_type": "load",
        "name": format!("{pipeline}.{step}"),
        "description": format!("loads table {table}"),
        "table": table,
    });
}

/// Each load step's latest successful run in the state store, by
/// `(pipeline, step)`: rows loaded and rejected, and the rejects file.
fn last_loads(project: &Project, url: Option<&str>) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    if !store_there(project, url) {
        return out;
    }
    let outputs = crate::orchestrate::runs::open_state(project, url).and_then(|st| st.task_outputs("load", 100_000));
    for o in outputs.unwrap_or_default() {
        let at = chrono::DateTime::from_timestamp_micros(o.finished_at)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        let v = serde_json::json!({
            "at": at, "loaded": o.output["loaded"], "rejected": o.output["rejected"],
            "rejects_file": o.output["rejects_file"], "run_id": o.run_id,
        });
        out.insert((o.pipeline, o.step), v);
    }
    out
}

/// Whether there is a state store to read: one named, or the default file.
fn store_there(project: &Project, url: Option<&str>) -> bool {
    url.is_some()
        || !project.state_url().is_ok_and(|u| u.expose() == crate::project::DEFAULT_STATE_URL)
        || project.dir.join(".sluice/state.db").exists()
}

/// Each model's latest successful build by a pipeline's `sql` step, as the
/// state store recorded it: `{at, seconds, run_id, pipeline}`. Nothing when
/// the store is the default file and does not exist (docs never creates
/// one); a store that cannot be read is a warning, not a failure.
fn last_builds(project: &Project, url: Option<&str>) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    if !store_there(project, url) {
        return out;
    }
    let outputs = crate::orchestrate::runs::open_state(project, url).and_then(|st| st.task_outputs("sql", 100_000));
    let outputs = match outputs {
        Ok(o) => o,
        Err(e) => {
            errln!("warning: no build times in the docs: {}", e.chain());
            return out;
        }
    };
    // Oldest first: a later build replaces an earlier one.
    for o in outputs {
        for r in o.output["models"].as_array().into_iter().flatten() {
            if r["status"] != "success" {
                continue;
            }
            let at = chrono::DateTime::from_timestamp_micros(o.finished_at)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            out.insert(
                str_of(r, "model").to_string(),
                serde_json::json!({ "at": at, "seconds": r["seconds"], "run_id": o.run_id, "pipeline": o.pipeline }),
            );
        }
    }
    out
}

/// HTML-escapes text (for element content and quoted attributes).
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// A node's page, relative to the site's root.
fn page(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' { c } else { '_' })
        .collect();
    format!("nodes/{safe}.html")
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:70em}pre{background:#f4f4f4;padding:1em;overflow:auto}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
svg text{font-size:12px;font-family:sans-serif}";

fn html(title: &str, up: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head>\n<body>\n<p><a href=\"{up}index.html\">index</a></p>\n{body}</body></html>\n",
        esc(title)
    )
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(|x| x.as_str()).unwrap_or_default()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// Every file of the site: `(relative path, text)`.
pub fn site(project: &Project, m: &Value) -> Vec<(String, String)> {
    let empty = serde_json::Map::new();
    let nodes = m["nodes"].as_object().unwrap_or(&empty);
    let sources = m["sources"].as_object().unwrap_or(&empty);
    let all: BTreeMap<&String, &Value> = nodes.iter().chain(sources.iter()).collect();
    let label = |id: &str| -> String {
        match all.get(&id.to_string()) {
            Some(v) if v["resource_type"] == "source" => format!("{}.{}", str_of(v, "source_name"), str_of(v, "name")),
            Some(v) => str_of(v, "name").to_string(),
            None => id.to_string(),
        }
    };
    let link = |id: &str, up: &str| format!("<a href=\"{up}{}\">{}</a>", esc(&page(id)), esc(&label(id)));
    let parents = |id: &str| ids(&m["parent_map"][id]);
    let children = |id: &str| ids(&m["child_map"][id]);
    let mut files = Vec::new();

    // The index: every resource by kind, and the lineage graph.
    let mut body = format!("<h1>{}</h1>\n", esc(&project.name()));
    // dbt's `{% docs __overview__ %}` block is the site's introduction.
    if let Some(text) = project.meta.docs.get("__overview__") {
        let _ = writeln!(body, "<p class=\"description\">{}</p>", esc(text));
    }
    for (kind, title) in [
        ("model", "Models"),
        ("seed", "Seeds"),
        ("snapshot", "Snapshots"),
        ("source", "Sources"),
        ("test", "Tests"),
        ("load", "Loads"),
        ("export", "Exports"),
        ("dashboard", "Dashboards"),
    ] {
        let of: Vec<&&String> = all.iter().filter(|(_, v)| v["resource_type"] == kind).map(|(k, _)| k).collect();
        let _ = write!(body, "<h2>{title} ({})</h2>\n<ul>\n", of.len());
        for id in of {
            let desc = str_of(all[*id], "description");
            let _ = writeln!(body, "<li>{} {}</li>", link(id, ""), esc(desc));
        }
        body.push_str("</ul>\n");
    }
    body.push_str("<h2>Lineage</h2>\n");
    body.push_str(&lineage(&all, &parents, &label));
    files.push(("index.html".to_string(), html(&project.name(), "", &body)));

    // One page per node and source.
    for (id, v) in &all {
        let kind = str_of(v, "resource_type");
        let mut b = format!("<h1>{} <small>{}</small></h1>\n", esc(&label(id)), esc(kind));
        let _ = writeln!(b, "<p class=\"description\">{}</p>", esc(str_of(v, "description")));
        if let Some(mat) = v["config"]["materialized"].as_str() {
            let _ = writeln!(b, "<p>materialized: {}</p>", esc(mat));
        }
        let _ = writeln!(b, "<p>file: {}</p>", esc(str_of(v, "original_file_path")));
        if let Some(rows) = v["sluice_rows"].as_u64() {
            let _ = writeln!(b, "<p class=\"rows\">rows: {rows} (when these docs were written)</p>");
        }
        if let Some(lb) = v.get("sluice_last_build") {
            let _ = writeln!(
                b,
                "<p class=\"last-build\">last built: {} in {:.3} s (pipeline {}, run {})</p>",
                esc(str_of(lb, "at")),
                lb["seconds"].as_f64().unwrap_or_default(),
                esc(str_of(lb, "pipeline")),
                esc(str_of(lb, "run_id"))
            );
        }
        // The tests on this node, by column.
        let tests: Vec<&String> = children(id)
            .iter()
            .filter_map(|c| all.get_key_value(c).map(|(k, _)| *k))
            .filter(|c| all[*c]["resource_type"] == "test")
            .collect();
        if let Some(cols) = v["columns"].as_object().filter(|c| !c.is_empty()) {
            b.push_str("<h2>Columns</h2>\n<table>\n<tr><th>column</th><th>description</th><th>tests</th></tr>\n");
            for (name, c) in cols {
                let on: Vec<String> = tests
                    .iter()
                    .filter(|t| all[**t]["column_name"].as_str() == Some(name))
                    .map(|t| link(t, "../"))
                    .collect();
                let _ = writeln!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(name),
                    esc(str_of(c, "description")),
                    on.join(", ")
                );
            }
            b.push_str("</table>\n");
        }
        if !tests.is_empty() {
            b.push_str("<h2>Tests</h2>\n<ul>\n");
            for t in &tests {
                let _ = writeln!(b, "<li>{}</li>", link(t, "../"));
            }
            b.push_str("</ul>\n");
        }
        for (title, list) in [("Depends on", parents(id)), ("Referenced by", children(id))] {
            let list: Vec<&String> =
                list.iter().filter(|x| all.get(x).is_some_and(|v| v["resource_type"] != "test")).collect();
            let _ = write!(b, "<h2>{title}</h2>\n<ul>\n");
            for x in list {
                let _ = writeln!(b, "<li>{}</li>", link(x, "../"));
            }
            b.push_str("</ul>\n");
        }
        if let Some(l) = v.get("sluice_last_load") {
            let _ = writeln!(
                b,
                "<p class=\"last-load\">last loaded: {} ({} rows loaded, {} rejected{}; run {})</p>",
                esc(str_of(l, "at")),
                l["loaded"].as_i64().unwrap_or_default(),
                l["rejected"].as_i64().unwrap_or_default(),
                l["rejects_file"].as_str().map(|f| format!(", rejects in {}", esc(f))).unwrap_or_default(),
                esc(str_of(l, "run_id"))
            );
        }
        if kind == "source" {
            let _ = writeln!(b, "<p>table: {}.{}</p>", esc(str_of(v, "schema")), esc(str_of(v, "identifier")));
        }
        let raw = str_of(v, "raw_code");
        if !raw.is_empty() {
            let _ = writeln!(b, "<h2>SQL</h2>\n<pre class=\"raw\">{}</pre>", esc(raw));
        }
        let compiled = str_of(v, "compiled_code");
        if !compiled.is_empty() {
            let _ = writeln!(b, "<h2>Compiled SQL</h2>\n<pre class=\"compiled\">{}</pre>", esc(compiled));
        }
        files.push((page(id), html(&label(id), "../", &b)));
    }
    files
}

/// The lineage of sources, seeds, models and snapshots as an inline SVG, one
/// column per DAG level (a node's level is one more than its deepest parent's).
fn lineage(
    all: &BTreeMap<&String, &Value>,
    parents: &dyn Fn(&str) -> Vec<String>,
    label: &dyn Fn(&str) -> String,
) -> String {
    let shown: BTreeSet<&str> =
        all.iter().filter(|(_, v)| v["resource_type"] != "test").map(|(k, _)| k.as_str()).collect();
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    fn depth<'a>(
        id: &'a str,
        shown: &BTreeSet<&'a str>,
        parents: &dyn Fn(&str) -> Vec<String>,
        level: &mut BTreeMap<&'a str, usize>,
        seen: &mut BTreeSet<String>,
    ) -> usize {
        if let Some(&l) = level.get(id) {
            return l;
        }
        if !seen.insert(id.to_string()) {
            return 0; // a cycle: the plan refuses those, draw it flat
        }
        let mut l = 0;
        for p in parents(id) {
            if let Some(p) = shown.get(p.as_str()) {
                l = l.max(depth(p, shown, parents, level, seen) + 1);
            }
        }
        level.insert(id, l);
        l
    }
    for id in &shown {
        depth(id, &shown, parents, &mut level, &mut BTreeSet::new());
    }
    let (w, h, gx, gy) = (170.0, 28.0, 60.0, 14.0);
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    let mut pos: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for id in &shown {
        let l = level[id];
        let r = rows.entry(l).or_default();
        pos.insert(id, (10.0 + l as f64 * (w + gx), 10.0 + *r as f64 * (h + gy)));
        *r += 1;
    }
    let width = 20.0 + rows.len() as f64 * (w + gx);
    let height = 20.0 + rows.values().max().copied().unwrap_or(0) as f64 * (h + gy);
    // Inline SVG in HTML needs no xmlns, so the page names no URL at all.
    let mut s = format!("<svg class=\"lineage\" width=\"{width}\" height=\"{height}\" role=\"img\">\n");
    for id in &shown {
        let (x2, y2) = pos[id];
        for p in parents(id) {
            if let Some(&(x1, y1)) = pos.get(p.as_str()) {
                let _ = writeln!(
                    s,
                    "<g class=\"edge\"><title>{} → {}</title><line x1=\"{}\" y1=\"{}\" x2=\"{x2}\" y2=\"{}\" stroke=\"#888\"/></g>",
                    esc(&label(&p)),
                    esc(&label(id)),
                    x1 + w,
                    y1 + h / 2.0,
                    y2 + h / 2.0
                );
            }
        }
    }
    for id in &shown {
        let (x, y) = pos[id];
        let kind = str_of(all[&id.to_string()], "resource_type");
        let fill = match kind {
            "source" => "#e0f0e0",
            "seed" => "#f0f0d0",
            "snapshot" => "#f0e0f0",
            "export" | "load" => "#f8e0d0",
            "dashboard" => "#fff0c0",
            _ => "#dde8f8",
        };
        let _ = writeln!(
            s,
            "<a href=\"{}\"><g class=\"node {kind}\"><rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" rx=\"4\" fill=\"{fill}\" stroke=\"#666\"/><text x=\"{}\" y=\"{}\">{}</text></g></a>",
            esc(&page(id)),
            x + 6.0,
            y + 18.0,
            esc(&label(id))
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::{esc, page};

    #[test]
    fn escapes_every_html_special_character() {
        assert_eq!(esc("<a href=\"x\">Tom's & co</a>"), "&lt;a href=&quot;x&quot;&gt;Tom&#39;s &amp; co&lt;/a&gt;");
    }

    #[test]
    fn pages_are_plain_file_names() {
        assert_eq!(page("model.shop.orders"), "nodes/model.shop.orders.html");
        assert_eq!(page("model.shop.a/../b c"), "nodes/model.shop.a_.._b_c.html");
    }
}
