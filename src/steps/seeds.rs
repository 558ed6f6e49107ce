//! Seeds: the small CSV files under `seeds/`, each loaded as a table of the same
//! name through the loader (every value type-checked; the table replaced in one
//! transaction). Their columns come from `[seeds.NAME.columns]` in a models
//! file, or are inferred from the file.

use std::sync::Arc;

use super::load::{Input, LoadSpec, load};
use super::models::{WarehouseResolve, outside_run, run_hooks};
use super::{Meter, NoMeter};
use crate::error::{Error, Result};
use crate::plan::{NodeKind, Plan};
use crate::project::{LoadMode, OnError, Project, SchemaChange};
use crate::warehouse::Warehouse;

/// What loading one seed did.
#[derive(Debug)]
pub struct SeedResult {
    pub name: String,
    pub result: Result<u64>,
}

/// Loads the selected seeds (all when the selection is empty).
pub fn load_seeds(
    project: &Project,
    plan: &Plan,
    wh: &mut dyn Warehouse,
    select: &[String],
    exclude: &[String],
    run_id: &str,
) -> Result<Vec<SeedResult>> {
    let g = &plan.models;
    let chosen = crate::plan::select(g, select, exclude).map_err(Error::user)?;
    // dbt's hooks on seeds render as a model's do (built only when a seed has some).
    let hooked = g.nodes.iter().any(|n| n.kind == NodeKind::Seed && !(n.pre_hook.is_empty() && n.post_hook.is_empty()));
    let hooks = if hooked {
        let renderer = crate::plan::renderer(project).map_err(|(f, e)| Error::user(format!("{f}: {}", e.message)))?;
        let resolve = Arc::new(WarehouseResolve::new(project, g, wh.naming(), outside_run(project)));
        Some((renderer, resolve))
    } else {
        None
    };
    let mut out = Vec::new();
    for &i in g.order.iter().filter(|i| chosen.contains(i)) {
        let n = &g.nodes[i];
        if n.kind != NodeKind::Seed {
            continue;
        }
        let seed = &project.seeds[n.index];
        let meta = project.meta.seed(&seed.name);
        let label = project.show_path(&seed.path.display().to_string());
        let path = project.dir.join(&seed.path);
        let read = meta.map(|m| m.read.clone()).unwrap_or_default();
        let mut schema = meta.and_then(|m| m.columns.clone());
        // dbt's `column_types` name some columns: infer the rest.
        if let Some(m) = meta.filter(|m| schema.is_none() && !m.column_types.is_empty()) {
            let file = std::fs::File::open(&path).map_err(|e| Error::io("read", &path, e))?;
            let (mut inferred, _) = crate::formats::infer::infer(
                Box::new(std::io::BufReader::new(file)),
                &label,
                &read,
                crate::formats::infer::DEFAULT_SAMPLE,
            )
            .map_err(Error::DataMsg)?;
            for c in &m.column_types {
                match inferred.columns.iter_mut().find(|x| x.name == c.name) {
                    Some(x) => *x = c.clone(),
                    None => {
                        return Err(Error::user(format!(
                            "seed `{}`: column_types names `{}`, which {label} does not have (columns: {})",
                            seed.name,
                            c.name,
                            inferred.names().join(", ")
                        )));
                    }
                }
            }
            schema = Some(inferred);
        }
        let spec = LoadSpec {
            table: n.identifier().to_string(),
            schema,
            mode: LoadMode::Replace,
            key: Vec::new(),
            read,
            on_error: OnError::Fail,
            max_errors: None,
            schema_change: SchemaChange::Fail,
            create: true,
            rejects_path: None,
            run_id: run_id.to_string(),
            records: Vec::new(),
            cancel: crate::steps::Cancel::default(),
        };
        let input = Input::file(&path, &label);
        let meter: Arc<dyn Meter> = Arc::new(NoMeter);
        let result = (|| -> Result<u64> {
            wh.use_schema(n.schema.as_deref())?;
            let mut db = std::time::Duration::ZERO;
            if let Some((renderer, resolve)) = &hooks {
                run_hooks(project, renderer, resolve, wh, n, &n.pre_hook, "pre-hook", &mut db)?;
            }
            let loaded = load(wh, &spec, std::slice::from_ref(&input), &meter)?.loaded;
            if let Some((renderer, resolve)) = &hooks {
                run_hooks(project, renderer, resolve, wh, n, &n.post_hook, "post-hook", &mut db)?;
            }
            Ok(loaded)
        })()
        .map_err(|e| e.context(format!("seed `{}`", seed.name)));
        out.push(SeedResult { name: seed.name.clone(), result });
    }
    wh.use_schema(None)?;
    Ok(out)
}
