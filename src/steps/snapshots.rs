//! Snapshots: slowly changing dimensions (type 2). A snapshot's query is
//! tracked by its `unique_key`; each run closes the current version of rows
//! that changed (`valid_to`) and adds their new version (`valid_from`, with
//! `valid_to` NULL). A row changed when its `updated_at` column moved forward
//! (`strategy='timestamp'`) or when one of `check_cols` differs
//! (`strategy='check'`, NULLs compared as values). With
//! `invalidate_hard_deletes`, rows that left the source are closed too. All of
//! a run's changes are one transaction where the database allows.

use std::sync::Arc;

use super::models::{WarehouseResolve, render_node, run_hooks};
use crate::error::{Error, Result};
use crate::plan::{NodeKind, Plan, SnapshotConfig, Strategy};
use crate::project::Project;
use crate::types::ColumnType;
use crate::warehouse::Warehouse;

/// The columns a snapshot adds to its query's: when a version became
/// current and stopped being (NULL while it is), and, in a dbt project,
/// `dbt_updated_at` (the version's `updated_at`, or the snapshot's time).
#[derive(Debug, Clone, Copy)]
pub struct History {
    pub from: &'static str,
    pub to: &'static str,
    pub updated: Option<&'static str>,
}

/// A Sluice project's snapshot columns.
pub const SLUICE_HISTORY: History = History { from: "valid_from", to: "valid_to", updated: None };
/// A dbt project's, named as dbt names them.
pub const DBT_HISTORY: History =
    History { from: "dbt_valid_from", to: "dbt_valid_to", updated: Some("dbt_updated_at") };

/// What one snapshot did.
#[derive(Debug)]
pub struct SnapshotResult {
    pub name: String,
    pub result: Result<String>,
}

/// Runs the selected snapshots at time `now` (microseconds, UTC).
pub fn run_snapshots(
    project: &Project,
    plan: &Plan,
    wh: &mut dyn Warehouse,
    select: &[String],
    exclude: &[String],
    now: i64,
    run: crate::template::RunVars,
) -> Result<Vec<SnapshotResult>> {
    let g = &plan.models;
    let chosen = crate::plan::select(g, select, exclude).map_err(Error::user)?;
    let renderer = crate::plan::renderer(project).map_err(|(f, e)| Error::user(format!("{f}: {}", e.message)))?;
    let resolve = Arc::new(WarehouseResolve::new(project, g, wh.naming(), run));
    let mut out = Vec::new();
    for &i in g.order.iter().filter(|i| chosen.contains(i)) {
        let n = &g.nodes[i];
        if n.kind != NodeKind::Snapshot {
            continue;
        }
        let result = (|| -> Result<String> {
            let cfg = n
                .snapshot
                .as_ref()
                .ok_or_else(|| Error::user(format!("snapshot `{}` has no unique_key/strategy", n.name)))?;
            let sql = render_node(project, g, &renderer, &resolve, i, false)?;
            resolve.use_schema(wh, n.schema.as_deref())?;
            let history = if project.dbt.is_some() { DBT_HISTORY } else { SLUICE_HISTORY };
            let mut db = std::time::Duration::ZERO;
            run_hooks(project, &renderer, &resolve, wh, n, &n.pre_hook, "pre-hook", &mut db)?;
            let done = snapshot(wh, n.identifier(), &sql, cfg, &history, now)?;
            run_hooks(project, &renderer, &resolve, wh, n, &n.post_hook, "post-hook", &mut db)?;
            Ok(done)
        })()
        .map_err(|e| e.context(format!("snapshot `{}` ({})", n.name, n.path)));
        out.push(SnapshotResult { name: n.name.clone(), result });
    }
    wh.use_schema(None)?;
    Ok(out)
}

/// Takes one snapshot of `sql` into table `name`.
pub fn snapshot(
    wh: &mut dyn Warehouse,
    name: &str,
    sql: &str,
    cfg: &SnapshotConfig,
    history: &History,
    now: i64,
) -> Result<String> {
    let (valid_from, valid_to) = (history.from, history.to);
    let d = wh.dialect();
    let q = |c: &str| d.quote(c);
    let rel = wh.relation(name);
    let body = sql.trim().trim_end_matches(';');
    let cols: Vec<String> = wh.query_columns(body)?.into_iter().map(|c| c.name).collect();
    for k in &cfg.unique_key {
        if !cols.contains(k) {
            return Err(Error::user(format!(
                "unique_key `{k}` is not a column of the snapshot's query (columns: {})",
                cols.join(", ")
            )));
        }
    }
    if let Strategy::Timestamp { updated_at } = &cfg.strategy
        && !cols.contains(updated_at)
    {
        return Err(Error::user(format!("updated_at `{updated_at}` is not a column of the snapshot's query")));
    }
    if let Some(c) = cols.iter().find(|c| *c == valid_from || *c == valid_to || Some(c.as_str()) == history.updated) {
        return Err(Error::user(format!("the snapshot's query has a `{c}` column; sluice adds that one")));
    }
    let now_lit = d.timestamp_literal(now);
    let col_list = |prefix: &str| cols.iter().map(|c| format!("{prefix}{}", q(c))).collect::<Vec<_>>().join(", ");
    let existing = wh.table_schema(name)?;
    let Some(existing) = existing else {
        // Declared columns (not `CREATE TABLE AS` with casts): SQLite would
        // give a cast to TIMESTAMP numeric affinity and keep only the year.
        let mut schema = crate::types::Schema::new(wh.query_columns(body)?);
        let (vf, vf_type) = match &cfg.strategy {
            Strategy::Timestamp { updated_at } => {
                let ty = schema.columns.iter().find(|c| &c.name == updated_at).map(|c| c.ty);
                (format!("s.{}", q(updated_at)), ty.unwrap_or(ColumnType::Timestamp))
            }
            Strategy::Check { .. } => (now_lit.clone(), ColumnType::Timestamp),
        };
        for c in &mut schema.columns {
            c.nullable = true;
        }
        schema.columns.push(crate::types::Column::new(valid_from, vf_type));
        let updated = match history.updated {
            Some(u) => {
                schema.columns.push(crate::types::Column::new(u, vf_type));
                format!(", {vf} AS {}", q(u))
            }
            None => String::new(),
        };
        schema.columns.push(crate::types::Column::new(valid_to, vf_type));
        let select = format!(
            "SELECT {}, {vf} AS {}{updated}, CAST(NULL AS {}) AS {} FROM (\n{body}\n) s",
            col_list("s."),
            q(valid_from),
            d.sql_type(vf_type),
            q(valid_to)
        );
        for stmt in crate::warehouse::build_table_sql(d, &rel, &select, Some(&schema)) {
            wh.execute(&stmt)?;
        }
        return Ok("first snapshot".into());
    };
    // Columns the query gained since the last run.
    let mut added = Vec::new();
    for c in wh.query_columns(body)? {
        if !existing.columns.iter().any(|e| e.name == c.name) {
            wh.execute(&d.add_column(&rel, &c))?;
            added.push(c.name);
        }
    }
    let tmp = format!("__sluice_snap_{name}");
    let stage = d.temp_relation(&tmp);
    let key_match = |a: &str, b: &str| {
        cfg.unique_key.iter().map(|k| format!("{a}.{0} = {b}.{0}", q(k))).collect::<Vec<_>>().join(" AND ")
    };
    let changed = match &cfg.strategy {
        Strategy::Timestamp { updated_at } => format!("s.{0} > {rel}.{0}", q(updated_at)),
        Strategy::Check { cols: check } => {
            let list: Vec<&String> = match check {
                Some(c) => c.iter().collect(),
                None => cols.iter().filter(|c| !cfg.unique_key.contains(c)).collect(),
            };
            if list.is_empty() {
                "1 = 0".to_string()
            } else {
                format!(
                    "({})",
                    list.iter()
                        .map(|c| d.null_safe_differ(&format!("s.{}", q(c)), &format!("{rel}.{}", q(c))))
                        .collect::<Vec<_>>()
                        .join(" OR ")
                )
            }
        }
    };
    let new_from = match &cfg.strategy {
        Strategy::Timestamp { updated_at } => format!("s.{}", q(updated_at)),
        Strategy::Check { .. } => now_lit.clone(),
    };
    let close = match &cfg.strategy {
        // The new version's updated_at closes the old one.
        Strategy::Timestamp { updated_at } => d.update_from(
            &rel,
            valid_to,
            &format!("s.{}", q(updated_at)),
            &format!("{stage} s"),
            &key_match("s", &rel),
            &format!("{rel}.{} IS NULL AND {changed}", q(valid_to)),
        ),
        Strategy::Check { .. } => format!(
            "UPDATE {rel} SET {} = {now_lit} WHERE {} IS NULL AND EXISTS (SELECT 1 FROM {stage} s WHERE {} AND {changed})",
            q(valid_to),
            q(valid_to),
            key_match("s", &rel)
        ),
    };
    let mut statements = vec![close];
    if cfg.invalidate_hard_deletes {
        statements.push(format!(
            "UPDATE {rel} SET {} = {now_lit} WHERE {} IS NULL AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE {})",
            q(valid_to),
            q(valid_to),
            key_match("s", &rel)
        ));
    }
    let (updated_col, updated_val) = match history.updated {
        Some(u) => (format!(", {}", q(u)), format!(", {new_from}")),
        None => (String::new(), String::new()),
    };
    statements.push(format!(
        "INSERT INTO {rel} ({}, {}{updated_col}, {}) SELECT {}, {new_from}{updated_val}, NULL FROM {stage} s WHERE NOT EXISTS (SELECT 1 FROM {rel} c WHERE {} AND c.{} IS NULL)",
        col_list(""),
        q(valid_from),
        q(valid_to),
        col_list("s."),
        key_match("c", "s"),
        q(valid_to)
    ));
    wh.execute(&d.drop_temp(&tmp))?;
    wh.execute(&d.create_temp_as(&tmp, body))?;
    let begin = d.begin();
    let res = (|| {
        if let Some(b) = begin {
            wh.execute(b)?;
        }
        for s in &statements {
            wh.execute(s)?;
        }
        if d.needs_commit() {
            wh.execute("COMMIT")?;
        }
        Ok(())
    })();
    if res.is_err() && begin.is_some() {
        let _ = wh.execute("ROLLBACK");
    }
    let _ = wh.execute(&d.drop_temp(&tmp));
    res?;
    Ok(if added.is_empty() {
        "snapshot taken".into()
    } else {
        format!("snapshot taken; added columns {}", added.join(", "))
    })
}
