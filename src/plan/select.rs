//! dbt-style node selection: `name`, `name+` (and what depends on it), `+name`
//! (and what it depends on), `tag:x`, `path:models/marts`, `kind:seed`, `*`.
//! Words separated by spaces (or given as separate flags) are a union; parts
//! joined by commas are an intersection (`tag:daily,path:models/marts`).

use std::collections::BTreeSet;

use super::ModelGraph;

/// The nodes `select` names (all when empty), less those `exclude` names.
pub fn select(g: &ModelGraph, select: &[String], exclude: &[String]) -> Result<BTreeSet<usize>, String> {
    let all: BTreeSet<usize> = (0..g.nodes.len()).collect();
    let chosen = if select.iter().all(|s| s.trim().is_empty()) { all } else { union(g, select)? };
    let dropped = union(g, exclude)?;
    Ok(chosen.difference(&dropped).copied().collect())
}

fn union(g: &ModelGraph, args: &[String]) -> Result<BTreeSet<usize>, String> {
    let mut out = BTreeSet::new();
    for term in args.iter().flat_map(|a| a.split_whitespace()) {
        let mut acc: Option<BTreeSet<usize>> = None;
        for part in term.split(',').filter(|p| !p.is_empty()) {
            let s = one(g, part)?;
            acc = Some(match acc {
                None => s,
                Some(a) => a.intersection(&s).copied().collect(),
            });
        }
        out.extend(acc.unwrap_or_default());
    }
    Ok(out)
}

fn one(g: &ModelGraph, part: &str) -> Result<BTreeSet<usize>, String> {
    let up = part.starts_with('+');
    let down = part.ends_with('+') && part.len() > 1;
    let core = part.trim_start_matches('+').trim_end_matches('+');
    let base: BTreeSet<usize> = if core == "*" {
        (0..g.nodes.len()).collect()
    } else if let Some(tag) = core.strip_prefix("tag:") {
        g.nodes.iter().enumerate().filter(|(_, n)| n.tags.iter().any(|t| t == tag)).map(|(i, _)| i).collect()
    } else if let Some(path) = core.strip_prefix("path:") {
        let p = path.trim_end_matches('/');
        g.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.path == p
                    || n.path.starts_with(&format!("{p}/"))
                    || n.path.ends_with(&format!("/{p}"))
                    || n.path.contains(&format!("/{p}/"))
            })
            .map(|(i, _)| i)
            .collect()
    } else if let Some(kind) = core.strip_prefix("kind:") {
        g.nodes.iter().enumerate().filter(|(_, n)| n.kind.name() == kind).map(|(i, _)| i).collect()
    } else {
        match g.nodes.iter().position(|n| n.name == core) {
            Some(i) => BTreeSet::from([i]),
            None => {
                let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
                let hint = crate::error::suggest(core, &names).map(|h| format!("; {h}")).unwrap_or_default();
                return Err(format!("no model, seed or snapshot named `{core}` in the selector `{part}`{hint}"));
            }
        }
    };
    let mut out = base.clone();
    for &i in &base {
        if up {
            out.extend(g.dag.ancestors(i));
        }
        if down {
            out.extend(g.dag.descendants(i));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Dag, ModelNode, NodeKind};
    use crate::project::{Materialized, OnSchemaChange};

    fn graph() -> ModelGraph {
        // a -> b -> c ; d (tagged daily, in models/marts)
        let node = |name: &str, path: &str, tags: &[&str]| ModelNode {
            name: name.into(),
            kind: NodeKind::Model,
            index: 0,
            path: path.into(),
            tables: vec![],
            sources: vec![],
            materialized: Materialized::Table,
            unique_key: None,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            on_schema_change: OnSchemaChange::Ignore,
            contract: None,
            snapshot: None,
            pre_hook: vec![],
            post_hook: vec![],
        };
        let nodes = vec![
            node("a", "models/staging/a.sql", &[]),
            node("b", "models/staging/b.sql", &["daily"]),
            node("c", "models/marts/c.sql", &[]),
            node("d", "models/marts/d.sql", &["daily"]),
        ];
        let dag =
            Dag { names: nodes.iter().map(|n| n.name.clone()).collect(), deps: vec![vec![], vec![0], vec![1], vec![]] };
        ModelGraph { nodes, dag, order: vec![0, 1, 2, 3] }
    }

    fn sel(s: &[&str], x: &[&str]) -> Vec<usize> {
        let s: Vec<String> = s.iter().map(|v| v.to_string()).collect();
        let x: Vec<String> = x.iter().map(|v| v.to_string()).collect();
        select(&graph(), &s, &x).unwrap().into_iter().collect()
    }

    #[test]
    fn selectors() {
        assert_eq!(sel(&[], &[]), vec![0, 1, 2, 3]);
        assert_eq!(sel(&["b"], &[]), vec![1]);
        assert_eq!(sel(&["b+"], &[]), vec![1, 2]);
        assert_eq!(sel(&["+b"], &[]), vec![0, 1]);
        assert_eq!(sel(&["+b+"], &[]), vec![0, 1, 2]);
        assert_eq!(sel(&["tag:daily"], &[]), vec![1, 3]);
        assert_eq!(sel(&["path:models/marts"], &[]), vec![2, 3]);
        assert_eq!(sel(&["tag:daily,path:models/marts"], &[]), vec![3]);
        assert_eq!(sel(&["a c"], &[]), vec![0, 2]);
        assert_eq!(sel(&["*"], &["tag:daily"]), vec![0, 2]);
        let e = select(&graph(), &["bb".to_string()], &[]).unwrap_err();
        assert_eq!(e, "no model, seed or snapshot named `bb` in the selector `bb`; did you mean `b`?");
    }
}
