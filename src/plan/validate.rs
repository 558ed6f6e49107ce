//! Checks what no single file can: references between steps, connections,
//! models and files; dependency cycles; model templates. Every problem becomes
//! a diagnostic at the place it was written.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Dag, ModelGraph, ModelNode, NodeKind, Plan, SnapshotConfig, StepGraph, Strategy};
use crate::error::{Diagnostic, Error, Result, Severity, suggest};
use crate::project::tree::{self, Cx, Loc, SourceFile};
use crate::project::{
    ExportWhat, Materialized, OnSchemaChange, PROJECT_FILE, Project, SchemaSource, SourceSpec, StepKind, TriggerKind,
    decode_schema_file,
};
use crate::template::{self, quote_ident};
use crate::types::Schema;

pub(super) fn validate(p: &mut Project) -> Plan {
    let mut d: Vec<Diagnostic> = Vec::new();
    let conns: Vec<String> = p.connection_names().iter().map(|s| s.to_string()).collect();
    let conn_refs: Vec<&str> = conns.iter().map(String::as_str).collect();
    let check_conn = |d: &mut Vec<Diagnostic>, c: &Option<tree::Spanned<String>>| {
        if let Some(c) = c
            && !conn_refs.contains(&c.v.as_str())
        {
            let mut x = p.sources.diag(&c.loc, format!("unknown connection `{}`", c.v));
            x.help = suggest(&c.v, &conn_refs)
                .or_else(|| Some(format!("declare it in {PROJECT_FILE} as [connections.{}]", c.v)));
            d.push(x);
        }
    };
    check_conn(&mut d, &p.config.defaults.connection);

    let mut seen_conn: BTreeMap<&str, &Loc> = BTreeMap::new();
    // Connection URLs are resolved when a connection is used, not here: an
    // unset variable of a connection nothing uses must not stop anything
    // (the syntax of their references is checked as they are read).
    for c in &p.config.connections {
        if let Some(first) = seen_conn.insert(&c.name.v, &c.name.loc) {
            d.push(p.sources.diag(
                &c.name.loc,
                format!("connection `{}` is declared twice (first at {})", c.name.v, p.sources.position(first)),
            ));
        }
    }

    // Names known across the project: models, loaded tables, ingest datasets.
    let model_names: Vec<&str> = p.models.iter().map(|m| m.name.as_str()).collect();
    let mut tables: BTreeSet<String> = BTreeSet::new();
    let mut datasets: BTreeSet<String> = BTreeSet::new();
    for pl in &p.pipelines {
        for s in &pl.steps {
            match &s.kind {
                StepKind::Load(l) => {
                    tables.insert(l.table.v.clone());
                }
                StepKind::Ingest(i) => {
                    datasets.insert(i.dataset.as_ref().map(|d| d.v.clone()).unwrap_or_else(|| s.name.v.clone()));
                }
                // These name no table or dataset the project's other files refer to.
                StepKind::Sql(_)
                | StepKind::Export(_)
                | StepKind::Seed(_)
                | StepKind::Snapshot(_)
                | StepKind::Test(_)
                | StepKind::Clean(_)
                | StepKind::Command(_)
                | StepKind::Empty => {}
            }
        }
    }

    // Pipelines.
    let mut pipeline_names: BTreeMap<String, Loc> = BTreeMap::new();
    let mut graphs = Vec::new();
    for pl in &p.pipelines {
        if let Some(first) = pipeline_names.get(&pl.name.v) {
            d.push(p.sources.diag(
                &pl.name.loc,
                format!("pipeline `{}` is defined twice (first at {})", pl.name.v, p.sources.position(first)),
            ));
        } else {
            pipeline_names.insert(pl.name.v.clone(), pl.name.loc.clone());
        }
        let names: Vec<String> = pl.steps.iter().map(|s| s.name.v.clone()).collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut dag = Dag { names: names.clone(), deps: vec![Vec::new(); names.len()] };
        let mut seen: BTreeMap<&str, &Loc> = BTreeMap::new();
        for (i, s) in pl.steps.iter().enumerate() {
            if let Some(first) = seen.insert(&s.name.v, &s.name.loc) {
                d.push(p.sources.diag(
                    &s.name.loc,
                    format!("step `{}` is defined twice (first at {})", s.name.v, p.sources.position(first)),
                ));
            }
            for dep in &s.depends_on {
                match name_refs.iter().position(|n| *n == dep.v) {
                    Some(j) if j == i => {
                        d.push(p.sources.diag(&dep.loc, format!("step `{}` depends on itself", s.name.v)))
                    }
                    Some(j) => {
                        if !dag.deps[i].contains(&j) {
                            dag.deps[i].push(j)
                        }
                    }
                    None => {
                        let mut x = p
                            .sources
                            .diag(&dep.loc, format!("unknown step `{}` in depends_on of step `{}`", dep.v, s.name.v));
                        x.help = suggest(&dep.v, &name_refs);
                        d.push(x);
                    }
                }
            }
            match &s.kind {
                StepKind::Ingest(ing) => match &ing.source {
                    SourceSpec::Files(path) => {
                        // A file an export step of the pipeline writes exists once that step ran.
                        let written = pl
                            .steps
                            .iter()
                            .any(|o| matches!(&o.kind, StepKind::Export(e) if p.path(&e.path.v) == p.path(&path.v)));
                        if !written {
                            check_source(p, &mut d, path)
                        }
                    }
                    SourceSpec::Http(_) => {}
                    SourceSpec::Database(db) => check_conn(&mut d, &Some(db.connection.clone())),
                    // Checked when decoded; the bucket is reached at run time.
                    SourceSpec::S3(_) => {}
                },
                StepKind::Load(l) => {
                    check_conn(&mut d, &l.connection);
                    match pl.steps.iter().position(|x| x.name.v == l.from.v) {
                        Some(j) if matches!(pl.steps[j].kind, StepKind::Ingest(_)) => {
                            if !dag.deps[i].contains(&j) {
                                dag.deps[i].push(j);
                            }
                        }
                        Some(j) => d.push(p.sources.diag(
                            &l.from.loc,
                            format!(
                                "`from` must name an ingest step; `{}` is a {} step",
                                l.from.v,
                                pl.steps[j].kind.name()
                            ),
                        )),
                        None => {
                            let ingests: Vec<&str> = pl
                                .steps
                                .iter()
                                .filter(|x| matches!(x.kind, StepKind::Ingest(_)))
                                .map(|x| x.name.v.as_str())
                                .collect();
                            let mut x = p.sources.diag(
                                &l.from.loc,
                                format!("unknown step `{}` in `from` of step `{}`", l.from.v, s.name.v),
                            );
                            x.help = suggest(&l.from.v, &ingests)
                                .or_else(|| Some("`from` names an ingest step of the same pipeline".into()));
                            d.push(x);
                        }
                    }
                    if let SchemaSource::File(f) = &l.schema {
                        match load_schema_file(p, &f.v) {
                            Ok(_) => {}
                            Err(Error::Config(ds)) => d.extend(ds),
                            Err(e) => d.push(p.sources.diag(&f.loc, e.chain())),
                        }
                    }
                }
                StepKind::Sql(q) => {
                    check_conn(&mut d, &q.connection);
                    for m in q.models.iter().flatten() {
                        if !model_names.contains(&m.v.as_str()) {
                            let mut x =
                                p.sources.diag(&m.loc, format!("unknown model `{}` in step `{}`", m.v, s.name.v));
                            x.help = suggest(&m.v, &model_names)
                                .or_else(|| Some("models are the .sql files under models/".into()));
                            d.push(x);
                        }
                    }
                }
                StepKind::Seed(n) | StepKind::Snapshot(n) | StepKind::Test(n) => check_conn(&mut d, &n.connection),
                StepKind::Clean(c) => {
                    check_conn(&mut d, &c.connection);
                    tables.insert(c.output.v.clone());
                }
                StepKind::Command(_) | StepKind::Empty => {}
                StepKind::Export(e) => {
                    check_conn(&mut d, &e.connection);
                    let dest = e.path.v.as_str();
                    if dest.contains("://") && !dest.starts_with("file://") && !dest.starts_with("s3://") {
                        let mut x = p.sources.diag(
                            &e.path.loc,
                            format!("unsupported export destination \"{}\"", crate::secret::redact_url(dest)),
                        );
                        x.help = Some("write a path, file:///abs/path or s3://bucket/key".into());
                        d.push(x);
                    }
                    if let ExportWhat::Query(q) = &e.what
                        && q.v.trim().is_empty()
                    {
                        d.push(p.sources.diag(&q.loc, "`query` is empty"));
                    }
                }
            }
        }
        let order = match dag.order() {
            Ok(o) => o,
            Err(cycle) => {
                let path: Vec<&str> = cycle.iter().map(|&i| dag.names[i].as_str()).collect();
                let first = &pl.steps[cycle[0]];
                let at = first
                    .depends_on
                    .iter()
                    .find(|x| x.v == dag.names[cycle[1]])
                    .map(|x| x.loc.clone())
                    .unwrap_or(first.name.loc.clone());
                let mut x =
                    p.sources.diag(&at, format!("dependency cycle in pipeline `{}`: {}", pl.name.v, path.join(" -> ")));
                x.help = Some("remove one of these dependencies".into());
                d.push(x);
                Vec::new()
            }
        };
        for t in &pl.triggers {
            if let TriggerKind::OnDataset(ds) = &t.kind
                && !datasets.contains(&ds.v)
                && !tables.contains(&ds.v)
                && !model_names.contains(&ds.v.as_str())
            {
                let known: Vec<&str> = datasets
                    .iter()
                    .chain(tables.iter())
                    .map(String::as_str)
                    .chain(model_names.iter().copied())
                    .collect();
                let mut x = p.sources.diag(&ds.loc, format!("unknown dataset `{}` in on_dataset", ds.v));
                x.help = suggest(&ds.v, &known)
                    .or_else(|| Some("a dataset is an ingest step's dataset, a loaded table or a model".into()));
                d.push(x);
            }
        }
        graphs.push(StepGraph { dag, order });
    }

    let models = analyze_models(p, &mut d, &tables);
    // Selectors of steps must name what exists.
    for pl in &p.pipelines {
        for s in &pl.steps {
            let (select, exclude) = match &s.kind {
                StepKind::Sql(q) => (&q.select, &q.exclude),
                StepKind::Seed(n) | StepKind::Snapshot(n) | StepKind::Test(n) => (&n.select, &n.exclude),
                // No model selectors.
                StepKind::Ingest(_)
                | StepKind::Load(_)
                | StepKind::Export(_)
                | StepKind::Clean(_)
                | StepKind::Command(_)
                | StepKind::Empty => continue,
            };
            if let Err(e) = super::select(&models, select, exclude) {
                d.push(p.sources.diag(&s.name.loc, format!("step `{}`: {e}", s.name.v)));
            }
        }
    }
    check_serve(p, &mut d);
    p.diagnostics.extend(d);
    Plan { models, pipelines: graphs }
}

/// Routes and charts name published models (and their declared columns)
/// and pipelines that exist; a published model's columns are declared
/// (they are what its endpoint filters and sorts on).
fn check_serve(p: &Project, d: &mut Vec<Diagnostic>) {
    use crate::project::RouteTarget;
    let published: Vec<&str> = p.meta.models.iter().filter(|m| m.publish).map(|m| m.name.v.as_str()).collect();
    let model_names: Vec<&str> = p.models.iter().map(|m| m.name.as_str()).collect();
    for m in p.meta.models.iter().filter(|m| m.publish) {
        if m.columns.is_empty() {
            let mut x = p.sources.diag(&m.name.loc, format!("published model `{}` declares no columns", m.name.v));
            x.help = Some(format!(
                "list them under [models.{}.columns] with their types: its endpoint serves, filters and sorts only those",
                m.name.v
            ));
            d.push(x);
        }
        if !model_names.contains(&m.name.v.as_str()) && !p.seeds.iter().any(|s| s.name == m.name.v) {
            let mut x =
                p.sources.diag(&m.name.loc, format!("published model `{}` has no models/{}.sql", m.name.v, m.name.v));
            x.help = suggest(&m.name.v, &model_names);
            d.push(x);
        }
    }
    let published_model = |d: &mut Vec<Diagnostic>, m: &tree::Spanned<String>, what: &str| -> bool {
        if published.contains(&m.v.as_str()) {
            return true;
        }
        let mut x = p.sources.diag(&m.loc, format!("{what} names model `{}`, which is not published", m.v));
        x.help = if model_names.contains(&m.v.as_str()) {
            Some(format!("add `publish = true` under [models.{}] in a models/*.toml file", m.v))
        } else {
            suggest(&m.v, &published).or_else(|| Some("published models have `publish = true` in models/*.toml".into()))
        };
        d.push(x);
        false
    };
    let mut paths: BTreeMap<&str, &Loc> = BTreeMap::new();
    let pipelines: Vec<&str> = p.pipelines.iter().map(|x| x.name.v.as_str()).collect();
    for r in &p.config.serve.routes {
        if let Some(first) = paths.insert(&r.path.v, &r.path.loc) {
            d.push(p.sources.diag(
                &r.path.loc,
                format!("route `{}` is declared twice (first at {})", r.path.v, p.sources.position(first)),
            ));
        }
        match &r.target {
            RouteTarget::Model(m) => {
                published_model(d, m, &format!("route `{}`", r.path.v));
            }
            RouteTarget::Pipeline(pl) => {
                if !pipelines.contains(&pl.v.as_str()) {
                    let mut x =
                        p.sources.diag(&pl.loc, format!("route `{}` names unknown pipeline `{}`", r.path.v, pl.v));
                    x.help = suggest(&pl.v, &pipelines);
                    d.push(x);
                }
            }
        }
    }
    for c in &p.config.serve.charts {
        if !published_model(d, &c.model, "a chart") {
            continue;
        }
        let Some(meta) = p.meta.model(&c.model.v) else { continue };
        let declared: Vec<&str> = meta.columns.iter().map(|c| c.name.v.as_str()).collect();
        for col in c.x.iter().chain(c.y.iter()).chain(c.group.iter()).chain(c.sort.iter()) {
            let name = col.v.strip_prefix('-').unwrap_or(&col.v);
            if !declared.contains(&name) {
                let mut x =
                    p.sources.diag(&col.loc, format!("column `{}` is not declared for model `{}`", col.v, c.model.v));
                x.help = suggest(&col.v, &declared).or_else(|| {
                    Some(format!("charts use the columns listed under [models.{}.columns] in models/*.toml", c.model.v))
                });
                d.push(x);
            }
        }
    }
}

/// Checks that an ingest source exists (a glob matching nothing is a warning:
/// its files may arrive later).
fn check_source(p: &Project, d: &mut Vec<Diagnostic>, src: &tree::Spanned<String>) {
    let path = p.path(&src.v);
    let s = path.to_string_lossy();
    if s.contains(['*', '?', '[']) {
        match glob::glob(&s) {
            Err(e) => d.push(p.sources.diag(&src.loc, format!("invalid glob \"{}\": {}", src.v, e.msg))),
            Ok(paths) => {
                if paths.filter_map(|x| x.ok()).next().is_none() {
                    let mut x = p.sources.diag(&src.loc, format!("no file matches \"{}\" yet", src.v));
                    x.severity = Severity::Warning;
                    d.push(x);
                }
            }
        }
    } else if !path.is_file() {
        let mut x = p.sources.diag(&src.loc, format!("source file not found: {}", p.show_path(&src.v)));
        x.help = Some("the path is relative to the project folder".into());
        d.push(x);
    }
}

/// Reads and decodes a schema file (a project path).
pub fn load_schema_file(p: &Project, rel: &str) -> Result<Schema> {
    read_schema_file(&p.path(rel), &p.show_path(rel), &p.env)
}

/// Reads and decodes a schema file anywhere (`shown` is its name in messages).
pub fn read_schema_file(path: &std::path::Path, shown: &str, env: &crate::secret::Env) -> Result<Schema> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read schema file", path, e))?;
    let f = SourceFile::new(shown.to_string(), path.to_path_buf(), text);
    let mut cx = Cx::new(tree::FileId(u32::MAX), &f).with_env(env);
    let schema = match tree::parse(&f) {
        Ok(root) => decode_schema_file(&root, &mut cx),
        Err(ds) => {
            cx.diags.extend(ds);
            None
        }
    };
    match schema {
        Some(s) if cx.diags.iter().all(|x| x.severity != Severity::Error) => Ok(s),
        _ => Err(Error::Config(cx.diags)),
    }
}

/// The renderer of the project's SQL files, with its macros compiled.
pub fn renderer(p: &Project) -> std::result::Result<template::Renderer, (String, template::TemplateError)> {
    let mut macros: Vec<(String, String)> =
        p.macros.iter().map(|m| (p.sources.get(m.file).name.clone(), p.sources.get(m.file).text.clone())).collect();
    if p.dbt.is_some() {
        let defined: Vec<String> = macros.iter().flat_map(|(_, text)| template::macro_names(text)).collect();
        macros.push((template::DBT_BUILTINS_FILE.to_string(), template::dbt_builtin_macros(&defined)));
    }
    let mut r =
        template::Renderer::new(&macros, p.config.vars.clone()).map_err(|e| (e.file.clone().unwrap_or_default(), e))?;
    if let Some(t) = &p.dbt {
        let target = serde_json::json!({
            "name": t.name,
            "type": t.kind,
            "schema": t.schema,
            "database": t.database,
            "threads": t.threads.unwrap_or(1),
            "profile_name": t.profile,
        });
        r.add_dbt_globals(target, p.env.clone());
    }
    Ok(r)
}

/// Gives each node of a dbt project its schema and relation name, as dbt
/// does: `generate_schema_name(custom, node)` and `generate_alias_name(alias,
/// node)`, the project's own macros when it defines them; a snapshot's
/// `target_schema` as written.
fn name_dbt_nodes(
    p: &Project,
    target: &crate::project::dbt::DbtTarget,
    r: &template::Renderer,
    file_naming: &BTreeMap<String, template::FileConfig>,
    nodes: &mut [ModelNode],
    d: &mut Vec<Diagnostic>,
) {
    let defined: BTreeSet<String> = p
        .macros
        .iter()
        .flat_map(|m| template::macro_names(&p.sources.get(m.file).text))
        .filter(|n| n == "generate_schema_name" || n == "generate_alias_name")
        .collect();
    let resolve: Arc<dyn template::Resolve> = Arc::new(template::Quoting(Arc::new(|n: &str| quote_ident(n))));
    let project_name = p.config.name.as_ref().map(|n| n.v.clone()).unwrap_or_default();
    for node in nodes.iter_mut() {
        let given = p.dbt_naming.get(&node.name).cloned().unwrap_or_default();
        let own = file_naming.get(&node.name);
        let custom = own.and_then(|c| c.schema.clone()).or(given.schema);
        let target_schema = own.and_then(|c| c.target_schema.clone()).or(given.target_schema);
        let alias = own.and_then(|c| c.alias.clone()).or(given.alias);
        let kind = node.kind.name();
        let node_json = serde_json::json!({
            "name": node.name,
            "resource_type": kind,
            "unique_id": format!("{kind}.{project_name}.{}", node.name),
            "package_name": project_name,
            "fqn": if given.fqn.is_empty() { vec![project_name.clone(), node.name.clone()] } else { given.fqn.clone() },
            "path": node.path,
            "original_file_path": node.path,
            "version": null,
            "config": {
                "schema": custom,
                "alias": alias,
                "materialized": node.materialized.name(),
                "tags": node.tags,
            },
        });
        let call = template::Call {
            resolve: resolve.clone(),
            this: quote_ident(&node.name),
            is_incremental: false,
            config: node.template_config(),
        };
        let macro_diag = |e: template::TemplateError, d: &mut Vec<Diagnostic>| {
            let f = e.file.clone().and_then(|f| p.sources.files.iter().find(|x| x.name == f));
            let mut x = match f {
                Some(f) => template_diag(f, &e),
                None => Diagnostic::new(node.path.clone(), 0, 0, e.message.clone()),
            };
            x.message = format!("naming {kind} `{}`: {}", node.name, x.message);
            d.push(x);
        };
        let schema = match (&target_schema, defined.contains("generate_schema_name")) {
            (Some(s), _) if kind == "snapshot" => Some(s.clone()),
            (_, false) => Some(match &custom {
                None => target.schema.clone(),
                Some(c) => format!("{}_{}", target.schema, c.trim()),
            }),
            (_, true) => {
                let custom = custom.clone().map(serde_json::Value::from).unwrap_or(serde_json::Value::Null);
                match r.call_macro(&node.path, "generate_schema_name", &[custom, node_json.clone()], &call) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        macro_diag(e, d);
                        None
                    }
                }
            }
        };
        let ident = if defined.contains("generate_alias_name") {
            let a = alias.clone().map(serde_json::Value::from).unwrap_or(serde_json::Value::Null);
            match r.call_macro(&node.path, "generate_alias_name", &[a, node_json], &call) {
                Ok(s) => Some(s),
                Err(e) => {
                    macro_diag(e, d);
                    None
                }
            }
        } else {
            Some(alias.map(|a| a.trim().to_string()).unwrap_or_else(|| node.name.clone()))
        };
        if let Some(s) = schema {
            if s.is_empty() {
                d.push(Diagnostic::new(
                    node.path.clone(),
                    0,
                    0,
                    format!("{kind} `{}` has an empty schema name", node.name),
                ));
            }
            node.schema = Some(s);
        }
        if let Some(i) = ident {
            if i.is_empty() {
                d.push(Diagnostic::new(node.path.clone(), 0, 0, format!("{kind} `{}` has an empty alias", node.name)));
            } else if i != node.name {
                node.alias = Some(i);
            }
        }
    }
    // Without custom schemas, nodes are named as in a Sluice project (the
    // connection's schema); with them, every node is qualified, so a ref
    // reads the right schema whichever schema the reader is built in.
    if nodes.iter().all(|n| n.schema.as_deref().is_none_or(|s| s == target.schema)) {
        for n in nodes.iter_mut() {
            n.schema = None;
        }
    }
    // Two nodes may not land on one relation.
    let mut seen: BTreeMap<(Option<String>, String), &str> = BTreeMap::new();
    for n in nodes.iter() {
        if n.kind == NodeKind::Model && n.materialized == Materialized::Ephemeral {
            continue;
        }
        let key = (n.schema.clone(), n.identifier().to_string());
        if let Some(other) = seen.insert(key.clone(), &n.name) {
            let at = key.0.map(|s| format!("{s}.")).unwrap_or_default();
            d.push(
                Diagnostic::new(
                    n.path.clone(),
                    0,
                    0,
                    format!("`{}` and `{other}` are both built as {at}{}", n.name, key.1),
                )
                .with_help("give one of them another alias or schema"),
            );
        }
    }
}

/// Renders every model, snapshot and singular test (with neutral quoting) to
/// learn refs, sources and config; reports unknown names and cycles; orders
/// the graph of models, seeds and snapshots.
fn analyze_models(p: &Project, d: &mut Vec<Diagnostic>, tables: &BTreeSet<String>) -> ModelGraph {
    let renderer = match renderer(p) {
        Ok(r) => Some(r),
        Err((file, e)) => {
            let f = p.sources.files.iter().find(|f| f.name == file);
            d.push(match f {
                Some(f) => template_diag(f, &e),
                None => Diagnostic::new(file, e.line.unwrap_or(0), 1, e.message.clone()),
            });
            None
        }
    };
    let resolve: Arc<dyn template::Resolve> = Arc::new(template::Quoting(Arc::new(|n: &str| quote_ident(n))));
    let mut nodes: Vec<ModelNode> = Vec::new();
    let mut refs_of: Vec<Vec<String>> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut add = |d: &mut Vec<Diagnostic>, node: ModelNode, refs: Vec<String>, nodes: &mut Vec<ModelNode>| {
        if let Some(&j) = seen.get(&node.name) {
            let other: &ModelNode = &nodes[j];
            d.push(
                Diagnostic::new(
                    node.path.clone(),
                    0,
                    0,
                    format!(
                        "`{}` is defined twice: as a {} here and as a {} in {}",
                        node.name,
                        node.kind.name(),
                        other.kind.name(),
                        other.path
                    ),
                )
                .with_help("models, seeds and snapshots share one namespace (their file names); rename one"),
            );
            return;
        }
        if !crate::project::valid_name(&node.name) {
            d.push(
                Diagnostic::new(
                    node.path.clone(),
                    0,
                    0,
                    format!("invalid {} name \"{}\"", node.kind.name(), node.name),
                )
                .with_help(crate::project::NAME_RULE),
            );
        }
        seen.insert(node.name.clone(), nodes.len());
        nodes.push(node);
        refs_of.push(refs);
    };
    let blank = |name: &str, kind: NodeKind, index: usize, path: String| ModelNode {
        name: name.to_string(),
        kind,
        index,
        path,
        tables: Vec::new(),
        sources: Vec::new(),
        materialized: p.config.models.materialized,
        unique_key: None,
        tags: Vec::new(),
        on_schema_change: OnSchemaChange::Ignore,
        contract: None,
        snapshot: None,
        pre_hook: Vec::new(),
        post_hook: Vec::new(),
        schema: None,
        alias: None,
    };
    // What files' own config() say of their schema and alias (dbt projects).
    let mut file_naming: BTreeMap<String, template::FileConfig> = BTreeMap::new();
    for (i, s) in p.seeds.iter().enumerate() {
        let mut node = blank(&s.name, NodeKind::Seed, i, crate::project::show(&p.dir, &s.path));
        node.materialized = Materialized::Table;
        if let Some(n) = p.dbt_naming.get(&s.name) {
            node.pre_hook = n.pre_hook.clone();
            node.post_hook = n.post_hook.clone();
        }
        add(d, node, Vec::new(), &mut nodes);
    }
    for (kind, files) in [(NodeKind::Model, &p.models), (NodeKind::Snapshot, &p.snapshots)] {
        for (i, m) in files.iter().enumerate() {
            let file = p.sources.get(m.file);
            let mut node = blank(&m.name, kind, i, file.name.clone());
            let meta = p.meta.model(&m.name);
            if let Some(meta) = meta {
                node.materialized = meta.materialized.unwrap_or(node.materialized);
                node.unique_key = meta.unique_key.clone();
                node.tags = meta.tags.clone();
                node.on_schema_change = meta.on_schema_change.unwrap_or(OnSchemaChange::Ignore);
                node.contract = meta.contract();
                node.pre_hook = meta.pre_hook.clone();
                node.post_hook = meta.post_hook.clone();
            }
            let mut refs = Vec::new();
            if let Some(r) = &renderer {
                let call = template::Call {
                    resolve: resolve.clone(),
                    this: quote_ident(&m.name),
                    is_incremental: false,
                    config: node.template_config(),
                };
                match r.render(&file.name, &file.text, &call) {
                    Ok(out) => {
                        let c = out.config;
                        if p.dbt.is_none() && (c.schema.is_some() || c.alias.is_some() || c.target_schema.is_some()) {
                            d.push(
                                Diagnostic::new(
                                    file.name.clone(),
                                    0,
                                    0,
                                    "config(schema=…) and config(alias=…) apply to dbt projects; a Sluice project builds every model in its connection's schema, named after its file",
                                )
                                .with_help("point the model's connection at another schema, or rename the file"),
                            );
                        }
                        file_naming.insert(m.name.clone(), c.clone());
                        if let Some(sev) = &c.severity {
                            let mut x = Diagnostic::new(
                                file.name.clone(),
                                0,
                                0,
                                format!("config(severity='{sev}') applies to tests only; it has no effect here"),
                            );
                            x.severity = crate::error::Severity::Warning;
                            d.push(x);
                        }
                        if let Some(mat) = c.materialized {
                            node.materialized = mat;
                        }
                        if c.unique_key.is_some() {
                            node.unique_key = c.unique_key.clone();
                        }
                        node.tags.extend(c.tags.iter().cloned());
                        node.pre_hook.extend(c.pre_hook.iter().cloned());
                        node.post_hook.extend(c.post_hook.iter().cloned());
                        if let Some(o) = &c.on_schema_change {
                            node.on_schema_change = crate::project::ON_SCHEMA_CHANGE
                                .iter()
                                .find(|(n, _)| n == o)
                                .map(|(_, v)| *v)
                                .unwrap_or(OnSchemaChange::Ignore);
                        }
                        node.sources = out.sources;
                        if kind == NodeKind::Snapshot {
                            node.materialized = Materialized::Table;
                            node.snapshot = snapshot_config(file, &c, d);
                            // The config trees' hooks first, then the file's own.
                            if let Some(n) = p.dbt_naming.get(&m.name) {
                                node.pre_hook.splice(0..0, n.pre_hook.iter().cloned());
                                node.post_hook.splice(0..0, n.post_hook.iter().cloned());
                            }
                        } else if c.strategy.is_some() || c.updated_at.is_some() || c.check_cols.is_some() {
                            d.push(
                                Diagnostic::new(
                                    file.name.clone(),
                                    0,
                                    0,
                                    "strategy, updated_at and check_cols are snapshot settings; this is a model",
                                )
                                .with_help("move the file to snapshots/"),
                            );
                        }
                        refs = out.refs;
                    }
                    Err(e) => d.push(match e.file.as_deref() {
                        Some(f) if f != file.name => p
                            .sources
                            .files
                            .iter()
                            .find(|x| x.name == f)
                            .map(|x| template_diag(x, &e))
                            .unwrap_or_else(|| template_diag(file, &e)),
                        _ => template_diag(file, &e),
                    }),
                }
            }
            add(d, node, refs, &mut nodes);
        }
    }
    if let (Some(target), Some(r)) = (&p.dbt, &renderer) {
        name_dbt_nodes(p, target, r, &file_naming, &mut nodes, d);
    }
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let mut dag = Dag { names: names.clone(), deps: vec![Vec::new(); names.len()] };
    let mut known: Vec<&str> = names.iter().map(String::as_str).collect();
    known.extend(tables.iter().map(String::as_str));
    let file_of = |n: &ModelNode| -> Option<&SourceFile> {
        match n.kind {
            NodeKind::Model => Some(p.sources.get(p.models[n.index].file)),
            NodeKind::Snapshot => Some(p.sources.get(p.snapshots[n.index].file)),
            NodeKind::Seed => None,
        }
    };
    for i in 0..nodes.len() {
        let Some(file) = file_of(&nodes[i]) else { continue };
        for r in refs_of[i].clone() {
            if let Some(&j) = seen.get(&r) {
                if j == i {
                    d.push(
                        ref_diag(file, &r, format!("model `{r}` refers to itself"))
                            .with_help("use {{ this }} to name the model's own table"),
                    );
                } else if nodes[j].materialized == Materialized::Ephemeral && nodes[i].kind == NodeKind::Snapshot {
                    d.push(ref_diag(file, &r, format!("a snapshot cannot ref() the ephemeral model `{r}`")));
                } else if !dag.deps[i].contains(&j) {
                    dag.deps[i].push(j);
                }
            } else if tables.contains(&r) {
                nodes[i].tables.push(r.clone());
            } else {
                let mut x = ref_diag(file, &r, format!("unknown model or table `{r}` in ref()"));
                x.help = suggest(&r, &known)
                    .or_else(|| Some("ref() names a model, seed or snapshot, or a table a load step fills".into()));
                d.push(x);
            }
        }
        for (src, table) in nodes[i].sources.clone() {
            match p.meta.sources.iter().find(|s| s.name.v == src) {
                None => {
                    let names: Vec<&str> = p.meta.sources.iter().map(|s| s.name.v.as_str()).collect();
                    let mut x = ref_diag(file, &src, format!("unknown source `{src}` in source()"));
                    x.help = suggest(&src, &names).or_else(|| {
                        Some(format!("declare it in a models/*.toml file: [sources.{src}] tables = [\"{table}\"]"))
                    });
                    d.push(x);
                }
                Some(s) if !s.tables.iter().any(|t| t.v == table) => {
                    let names: Vec<&str> = s.tables.iter().map(|t| t.v.as_str()).collect();
                    let mut x = ref_diag(file, &table, format!("source `{src}` has no table `{table}`"));
                    x.help =
                        suggest(&table, &names).or_else(|| Some(format!("add \"{table}\" to [sources.{src}] tables")));
                    d.push(x);
                }
                Some(_) => {}
            }
        }
    }
    // What the models files say must be about something that exists.
    for m in &p.meta.models {
        match seen.get(&m.name.v) {
            None => {
                let mut x = p.sources.diag(&m.name.loc, format!("unknown model `{}` in [models]", m.name.v));
                x.help = suggest(&m.name.v, &names.iter().map(String::as_str).collect::<Vec<_>>());
                d.push(x);
            }
            Some(&j) => {
                for t in m.tests.iter().chain(m.columns.iter().flat_map(|c| c.tests.iter())) {
                    if let crate::project::TestKind::Relationships { to, .. } = &t.kind
                        && !seen.contains_key(to)
                        && !tables.contains(to)
                    {
                        let mut x = p.sources.diag(&t.loc, format!("unknown model or table `{to}` in relationships"));
                        x.help = suggest(to, &known);
                        d.push(x);
                    }
                }
                if nodes[j].kind == NodeKind::Seed && m.materialized.is_some() {
                    d.push(p.sources.diag(&m.name.loc, format!("`{}` is a seed; seeds are always tables", m.name.v)));
                }
            }
        }
    }
    for s in &p.meta.seeds {
        if !p.seeds.iter().any(|x| x.name == s.name.v) {
            let names: Vec<&str> = p.seeds.iter().map(|x| x.name.as_str()).collect();
            let mut x = p.sources.diag(&s.name.loc, format!("unknown seed `{}` in [seeds]", s.name.v));
            x.help = suggest(&s.name.v, &names).or_else(|| Some("seeds are the .csv files under seeds/".into()));
            d.push(x);
        }
    }
    // Singular tests may ref anything that exists.
    if let Some(r) = &renderer {
        for t in &p.singular_tests {
            let file = p.sources.get(t.file);
            let call = template::Call {
                resolve: resolve.clone(),
                this: quote_ident(&t.name),
                is_incremental: false,
                config: Default::default(),
            };
            match r.render(&file.name, &file.text, &call) {
                Ok(out) => {
                    for name in out.refs {
                        if !seen.contains_key(&name) && !tables.contains(&name) {
                            let mut x = ref_diag(file, &name, format!("unknown model or table `{name}` in ref()"));
                            x.help = suggest(&name, &known);
                            d.push(x);
                        }
                    }
                }
                Err(e) => d.push(template_diag(file, &e)),
            }
        }
    }
    let order = match dag.order() {
        Ok(o) => o,
        Err(cycle) => {
            let files: Vec<String> = cycle.iter().map(|&i| nodes[i].path.clone()).collect();
            if let Some(first) = file_of(&nodes[cycle[0]]) {
                d.push(
                    ref_diag(first, &names[cycle[1]], format!("found a cycle between models: {}", files.join(" -> ")))
                        .with_help(
                            "a model cannot depend on itself through other models; remove one of these ref() calls",
                        ),
                );
            }
            Vec::new()
        }
    };
    ModelGraph { nodes, dag, order }
}

/// A snapshot's required settings.
fn snapshot_config(file: &SourceFile, c: &template::FileConfig, d: &mut Vec<Diagnostic>) -> Option<SnapshotConfig> {
    let Some(key) = c.unique_key.clone() else {
        d.push(
            Diagnostic::new(file.name.clone(), 0, 0, "a snapshot needs a unique_key")
                .with_help("{{ config(unique_key='id', strategy='timestamp', updated_at='updated_at') }}"),
        );
        return None;
    };
    let strategy = match c.strategy.as_deref() {
        Some("timestamp") => match &c.updated_at {
            Some(u) => Strategy::Timestamp { updated_at: u.clone() },
            None => {
                d.push(Diagnostic::new(file.name.clone(), 0, 0, "strategy='timestamp' needs updated_at='column'"));
                return None;
            }
        },
        Some("check") => Strategy::Check { cols: c.check_cols.clone().filter(|v| !(v.len() == 1 && v[0] == "all")) },
        _ => {
            d.push(
                Diagnostic::new(file.name.clone(), 0, 0, "a snapshot needs strategy='timestamp' or strategy='check'")
                    .with_help("timestamp: rows changed when updated_at moves; check: when check_cols change"),
            );
            return None;
        }
    };
    Some(SnapshotConfig {
        unique_key: key,
        strategy,
        invalidate_hard_deletes: c.invalidate_hard_deletes.unwrap_or(false),
    })
}

/// A problem at the `ref('name')` call of a model (or the whole file).
fn ref_diag(file: &SourceFile, name: &str, msg: String) -> Diagnostic {
    match template::find_ref(&file.text, name) {
        Some(r) => file.diag(r, msg),
        None => Diagnostic::new(file.name.clone(), 0, 0, msg),
    }
}

/// A template error at its place in the model file.
pub fn template_diag(file: &SourceFile, e: &template::TemplateError) -> Diagnostic {
    match (&e.range, e.line) {
        (Some(r), _) => file.diag(r.clone(), e.message.clone()),
        (None, Some(l)) => Diagnostic::new(file.name.clone(), l, 1, e.message.clone()),
        (None, None) => Diagnostic::new(file.name.clone(), 0, 0, e.message.clone()),
    }
}

/// Whether a name is a model or a loaded table of the project (for `export`).
pub fn model_relation_check(p: &Project, name: &str) -> bool {
    p.model(name).is_some()
        || p.pipelines
            .iter()
            .any(|pl| pl.steps.iter().any(|s| matches!(&s.kind, StepKind::Load(l) if l.table.v == name)))
}
