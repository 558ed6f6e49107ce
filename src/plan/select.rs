//! dbt-style node selection: `name`, `name+` (and what depends on it), `+name`
//! (and what it depends on), `2+name`/`name+1` (so many levels), `@name` (what
//! depends on it and all their parents), `tag:x`, `path:models/marts`,
//! `kind:seed` (or `resource_type:seed`), `config.materialized:view`, `*`.
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

/// The nodes one selector names (no spaces or commas in it).
pub fn one(g: &ModelGraph, part: &str) -> Result<BTreeSet<usize>, String> {
    // `@m`: m, what depends on it, and everything those depend on.
    let at = part.starts_with('@');
    let rest = part.trim_start_matches('@');
    // `2+m`: two levels up; `m+1`: one level down; `+m`/`m+`: all levels.
    let lead = rest.find('+').filter(|&k| rest[..k].chars().all(|c| c.is_ascii_digit()));
    let (mut up, rest) = match lead {
        Some(k) => (Some(rest[..k].parse::<usize>().unwrap_or(usize::MAX)), &rest[k + 1..]),
        None => (None, rest),
    };
    let trail = rest.rfind('+').filter(|&k| k > 0 && rest[k + 1..].chars().all(|c| c.is_ascii_digit()));
    let (core, mut down) = match trail {
        Some(k) => (&rest[..k], Some(rest[k + 1..].parse::<usize>().unwrap_or(usize::MAX))),
        None => (rest, None),
    };
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
    } else if let Some(kind) = core.strip_prefix("kind:").or_else(|| core.strip_prefix("resource_type:")) {
        g.nodes.iter().enumerate().filter(|(_, n)| n.kind.name() == kind).map(|(i, _)| i).collect()
    } else if let Some(what) = core.strip_prefix("source:") {
        // A source is not a node of the graph: `source:s+` is what reads it
        // and what depends on that, `source:s.t+1` what reads `s.t`;
        // `source:s` alone (and `+source:s`) selects no node.
        let (src, table) = match what.split_once('.') {
            Some((s, t)) => (s, Some(t)),
            None => (what, None),
        };
        let readers: BTreeSet<usize> = g
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.sources.iter().any(|(s, t)| (src == "*" || s == src) && table.is_none_or(|x| x == t)))
            .map(|(i, _)| i)
            .collect();
        if readers.is_empty() {
            return Err(format!("no model, seed or snapshot reads source `{what}` (in the selector `{part}`)"));
        }
        up = None;
        match down {
            Some(n) => down = Some(n.saturating_sub(1)),
            None if at => {}
            None => return Ok(BTreeSet::new()),
        }
        readers
    } else if let Some(m) = core.strip_prefix("config.materialized:") {
        g.nodes
            .iter()
            .enumerate()
            .filter(
                |(_, n)| {
                    if n.kind == super::NodeKind::Model { n.materialized.name() == m } else { n.kind.name() == m }
                },
            )
            .map(|(i, _)| i)
            .collect()
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
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); g.nodes.len()];
    for (i, ds) in g.dag.deps.iter().enumerate() {
        for &d in ds {
            children[d].push(i);
        }
    }
    let walk = |from: &BTreeSet<usize>, edges: &dyn Fn(usize) -> Vec<usize>, depth: usize| {
        let mut seen = from.clone();
        let mut front: Vec<usize> = from.iter().copied().collect();
        for _ in 0..depth {
            let next: Vec<usize> = front.iter().flat_map(|&i| edges(i)).filter(|j| seen.insert(*j)).collect();
            if next.is_empty() {
                break;
            }
            front = next;
        }
        seen
    };
    let parents = |i: usize| g.dag.deps[i].clone();
    let kids = |i: usize| children[i].clone();
    let mut out = base.clone();
    if let Some(n) = up {
        out.extend(walk(&base, &parents, n));
    }
    if let Some(n) = down {
        out.extend(walk(&base, &kids, n));
    }
    if at {
        let below = walk(&base, &kids, usize::MAX);
        out.extend(walk(&below, &parents, usize::MAX));
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
            schema: None,
            alias: None,
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
        assert_eq!(sel(&["1+c"], &[]), vec![1, 2]);
        assert_eq!(sel(&["2+c"], &[]), vec![0, 1, 2]);
        assert_eq!(sel(&["a+1"], &[]), vec![0, 1]);
        assert_eq!(sel(&["1+b+1"], &[]), vec![0, 1, 2]);
        assert_eq!(sel(&["@b"], &[]), vec![0, 1, 2]);
        assert_eq!(sel(&["config.materialized:table"], &[]), vec![0, 1, 2, 3]);
        assert_eq!(sel(&["config.materialized:view"], &[]), Vec::<usize>::new());
        // b reads source raw.orders: `source:raw+` is b and what depends on it.
        let mut g = graph();
        g.nodes[1].sources = vec![("raw".into(), "orders".into())];
        let pick = |s: &str| select(&g, &[s.to_string()], &[]).map(|x| x.into_iter().collect::<Vec<_>>());
        assert_eq!(pick("source:raw+"), Ok(vec![1, 2]));
        assert_eq!(pick("source:raw.orders+1"), Ok(vec![1]));
        assert_eq!(pick("source:raw"), Ok(vec![]));
        assert_eq!(pick("+source:raw+"), Ok(vec![1, 2]));
        assert_eq!(
            pick("source:raw.items+"),
            Err("no model, seed or snapshot reads source `raw.items` (in the selector `source:raw.items+`)".into())
        );
        let e = select(&graph(), &["bb".to_string()], &[]).unwrap_err();
        assert_eq!(e, "no model, seed or snapshot named `bb` in the selector `bb`; did you mean `b`?");
    }
}
