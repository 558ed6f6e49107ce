//! Checks what no single file can: references between steps, connections,
//! models and files; dependency cycles; model templates. Every problem becomes
//! a diagnostic at the place it was written.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Dag, ModelGraph, ModelNode, Plan, StepGraph};
use crate::error::{Diagnostic, Error, Result, Severity, suggest};
use crate::project::tree::{self, Cx, Loc, SourceFile};
use crate::project::{ExportWhat, PROJECT_FILE, Project, SchemaSource, StepKind, TriggerKind, decode_schema_file};
use crate::template::{self, RenderCtx, quote_ident};
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
    for c in &p.config.connections {
        if let Err(e) = crate::secret::Secret::new(&c.url.v, &p.env) {
            d.push(p.sources.diag(&c.url.loc, format!("connection `{}`: {e}", c.name.v)));
        }
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
                _ => {}
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
                StepKind::Ingest(ing) => check_source(p, &mut d, &ing.source),
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
                StepKind::Export(e) => {
                    check_conn(&mut d, &e.connection);
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
    p.diagnostics.extend(d);
    Plan { models, pipelines: graphs }
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

/// Renders every model (with neutral quoting) to learn its refs and config,
/// reports unknown refs and cycles, and orders the models.
fn analyze_models(p: &Project, d: &mut Vec<Diagnostic>, tables: &BTreeSet<String>) -> ModelGraph {
    let ctx =
        RenderCtx { vars: p.config.vars.clone(), relation: Arc::new(|n: &str| quote_ident(n)), is_incremental: false };
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let names: Vec<String> = p.models.iter().map(|m| m.name.clone()).collect();
    let mut dag = Dag { names: names.clone(), deps: vec![Vec::new(); names.len()] };
    let mut nodes = Vec::new();
    let mut refs_of: Vec<Vec<String>> = Vec::new();
    for (i, m) in p.models.iter().enumerate() {
        let file = p.sources.get(m.file);
        if let Some(&j) = seen.get(m.name.as_str()) {
            let other = &p.sources.get(p.models[j].file).name;
            d.push(
                Diagnostic::new(
                    file.name.clone(),
                    0,
                    0,
                    format!("model `{}` is defined twice: here and in {other}", m.name),
                )
                .with_help("model names are file names; rename one of the files"),
            );
        } else {
            seen.insert(&m.name, i);
        }
        if !crate::project::valid_name(&m.name) {
            d.push(
                Diagnostic::new(file.name.clone(), 0, 0, format!("invalid model name \"{}\"", m.name))
                    .with_help(crate::project::NAME_RULE),
            );
        }
        let mut node = ModelNode {
            name: m.name.clone(),
            model: i,
            tables: Vec::new(),
            materialized: p.config.models.materialized,
            unique_key: None,
            tags: Vec::new(),
        };
        match template::render(&file.name, &m.name, &file.text, &ctx) {
            Ok(r) => {
                if let Some(mat) = r.materialized {
                    node.materialized = mat;
                }
                node.unique_key = r.unique_key;
                node.tags = r.tags;
                refs_of.push(r.refs);
            }
            Err(e) => {
                d.push(template_diag(file, &e));
                refs_of.push(Vec::new());
            }
        }
        nodes.push(node);
    }
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut known: Vec<&str> = name_refs.clone();
    known.extend(tables.iter().map(String::as_str));
    for (i, refs) in refs_of.iter().enumerate() {
        let file = p.sources.get(p.models[i].file);
        for r in refs {
            if let Some(j) = seen.get(r.as_str()) {
                if *j == i {
                    d.push(
                        ref_diag(file, r, format!("model `{r}` refers to itself"))
                            .with_help("use {{ this }} to name the model's own table"),
                    );
                } else if !dag.deps[i].contains(j) {
                    dag.deps[i].push(*j);
                }
            } else if tables.contains(r) {
                nodes[i].tables.push(r.clone());
            } else {
                let mut x = ref_diag(file, r, format!("unknown model or table `{r}` in ref()"));
                x.help = suggest(r, &known)
                    .or_else(|| Some("ref() names a model (models/*.sql) or a table a load step fills".into()));
                d.push(x);
            }
        }
    }
    let order = match dag.order() {
        Ok(o) => o,
        Err(cycle) => {
            let files: Vec<String> = cycle.iter().map(|&i| p.sources.get(p.models[i].file).name.clone()).collect();
            let first = p.sources.get(p.models[cycle[0]].file);
            d.push(
                ref_diag(first, &names[cycle[1]], format!("found a cycle between models: {}", files.join(" -> ")))
                    .with_help("a model cannot depend on itself through other models; remove one of these ref() calls"),
            );
            Vec::new()
        }
    };
    ModelGraph { nodes, dag, order }
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
