//! The plan of a project: each pipeline's steps and the project's models as
//! DAGs in a stable topological order, built after every cross-reference has
//! been checked. `open` is the one way in: it reads, validates and plans, and
//! fails with every problem at once. Nothing here runs anything.

mod validate;

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{Error, Result, Severity};
use crate::project::{Materialized, Project};

mod select;
pub use select::{one as select_one, select};

pub use validate::{load_schema_file, model_relation_check, read_schema_file, renderer};

/// Dependencies between named nodes; `deps[i]` lists what node `i` needs first.
#[derive(Debug, Clone, Default)]
pub struct Dag {
    pub names: Vec<String>,
    pub deps: Vec<Vec<usize>>,
}

impl Dag {
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// A topological order that keeps declaration order among independent
    /// nodes, or a cycle (its nodes in order, the first repeated at the end).
    pub fn order(&self) -> std::result::Result<Vec<usize>, Vec<usize>> {
        let n = self.names.len();
        let mut indegree: Vec<usize> = self.deps.iter().map(|d| d.len()).collect();
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, ds) in self.deps.iter().enumerate() {
            for &d in ds {
                users[d].push(i);
            }
        }
        let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut out = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            out.push(i);
            for &u in &users[i] {
                indegree[u] -= 1;
                if indegree[u] == 0 {
                    ready.insert(u);
                }
            }
        }
        if out.len() == n {
            return Ok(out);
        }
        // Walk dependencies among the unsorted nodes until one repeats.
        let left: BTreeSet<usize> = (0..n).filter(|i| !out.contains(i)).collect();
        let start = *left.iter().next().expect("some node is left");
        let mut path = vec![start];
        let mut cur = start;
        loop {
            let next =
                *self.deps[cur].iter().find(|d| left.contains(d)).expect("a node in a cycle has a dependency in it");
            if let Some(pos) = path.iter().position(|&p| p == next) {
                // Written in the direction of the arrows: x depends on y is x -> y.
                let mut cycle = path[pos..].to_vec();
                cycle.push(next);
                return Err(cycle);
            }
            path.push(next);
            cur = next;
        }
    }

    /// Every node that `i` depends on, directly or not.
    pub fn ancestors(&self, i: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = self.deps[i].clone();
        while let Some(x) = stack.pop() {
            if seen.insert(x) {
                stack.extend(self.deps[x].iter().copied());
            }
        }
        seen
    }

    /// Every node that depends on `i`, directly or not.
    pub fn descendants(&self, i: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut changed = true;
        while changed {
            changed = false;
            for (j, ds) in self.deps.iter().enumerate() {
                if !seen.contains(&j) && ds.iter().any(|d| *d == i || seen.contains(d)) {
                    seen.insert(j);
                    changed = true;
                }
            }
        }
        seen
    }
}

/// What a node of the model graph is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Model,
    Seed,
    Snapshot,
}

impl NodeKind {
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Model => "model",
            NodeKind::Seed => "seed",
            NodeKind::Snapshot => "snapshot",
        }
    }
}

/// How a snapshot tracks changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// A row changed when its `updated_at` column moved forward.
    Timestamp { updated_at: String },
    /// A row changed when any of these columns (all when `None`) changed.
    Check { cols: Option<Vec<String>> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotConfig {
    pub unique_key: Vec<String>,
    pub strategy: Strategy,
    /// Close the current version of rows that left the source.
    pub invalidate_hard_deletes: bool,
}

/// A model, seed or snapshot after rendering: what it refers to and how it is built.
#[derive(Debug, Clone)]
pub struct ModelNode {
    pub name: String,
    pub kind: NodeKind,
    /// Index into `Project::models`, `seeds` or `snapshots` (by kind).
    pub index: usize,
    /// The file as shown to the user (`models/marts/x.sql`).
    pub path: String,
    /// Refs to tables that are not nodes (filled by a `load` step).
    pub tables: Vec<String>,
    /// `source()` calls.
    pub sources: Vec<(String, String)>,
    pub materialized: Materialized,
    pub unique_key: Option<Vec<String>>,
    pub tags: Vec<String>,
    pub on_schema_change: crate::project::OnSchemaChange,
    /// Declared column types the built table follows.
    pub contract: Option<crate::types::Schema>,
    pub snapshot: Option<SnapshotConfig>,
    /// dbt's hooks: SQL templates run before and after the model's build.
    pub pre_hook: Vec<String>,
    pub post_hook: Vec<String>,
    /// The schema the node is built in (dbt projects, from
    /// `generate_schema_name`); `None`: the connection's own.
    pub schema: Option<String>,
    /// The relation's name when it is not the node's (dbt's `alias`).
    pub alias: Option<String>,
}

impl ModelNode {
    /// The name of the node's table or view in the database.
    pub fn identifier(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }

    /// How the node's relation is written in SQL, given the warehouse's naming.
    pub fn relation(&self, naming: &crate::warehouse::Naming) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", naming.quote(s), naming.quote(self.identifier())),
            None => naming.relation(self.identifier()),
        }
    }

    /// The node's config as templates see it (`config.get()`).
    pub fn template_config(&self) -> crate::template::FileConfig {
        crate::template::FileConfig {
            materialized: Some(self.materialized),
            unique_key: self.unique_key.clone(),
            tags: self.tags.clone(),
            on_schema_change: crate::project::ON_SCHEMA_CHANGE
                .iter()
                .find(|(_, v)| *v == self.on_schema_change)
                .map(|(n, _)| n.to_string()),
            pre_hook: self.pre_hook.clone(),
            post_hook: self.post_hook.clone(),
            ..Default::default()
        }
    }
}

/// Every model and the refs between them.
#[derive(Debug, Clone, Default)]
pub struct ModelGraph {
    pub nodes: Vec<ModelNode>,
    pub dag: Dag,
    pub order: Vec<usize>,
}

/// One pipeline's steps as a DAG (indexes into `PipelineConfig::steps`).
#[derive(Debug, Clone, Default)]
pub struct StepGraph {
    pub dag: Dag,
    pub order: Vec<usize>,
}

/// The validated project with its DAGs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub models: ModelGraph,
    /// In the order of `Project::pipelines`.
    pub pipelines: Vec<StepGraph>,
}

impl Plan {
    pub fn pipeline(&self, project: &Project, name: &str) -> Option<&StepGraph> {
        project.pipelines.iter().position(|p| p.name.v == name).map(|i| &self.pipelines[i])
    }
}

/// Reads, validates and plans a project. Fails with every error found; warnings
/// stay in `Project::diagnostics`.
pub fn open(dir: &Path) -> Result<(Project, Plan)> {
    open_with(dir, &crate::project::dbt::DbtOptions::default())
}

/// `open`, with the command line's options for a dbt project.
pub fn open_with(dir: &Path, opts: &crate::project::dbt::DbtOptions) -> Result<(Project, Plan)> {
    let (mut project, plan) = check_with(dir, opts)?;
    if project.has_errors() {
        let mut d = std::mem::take(&mut project.diagnostics);
        d.retain(|x| x.severity == Severity::Error);
        return Err(Error::Config(d));
    }
    Ok((project, plan))
}

/// Like `open`, but returns the project with its problems instead of failing.
pub fn check(dir: &Path) -> Result<(Project, Plan)> {
    check_with(dir, &crate::project::dbt::DbtOptions::default())
}

/// `check`, with the command line's options for a dbt project.
pub fn check_with(dir: &Path, opts: &crate::project::dbt::DbtOptions) -> Result<(Project, Plan)> {
    let mut project = Project::read_with(dir, opts)?;
    let plan = validate::validate(&mut project);
    project.diagnostics.sort_by(|a, b| (a.severity, &a.file, a.line, a.col).cmp(&(b.severity, &b.file, b.line, b.col)));
    project.diagnostics.dedup();
    Ok((project, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(edges: &[(usize, usize)], n: usize) -> Dag {
        let mut d = Dag { names: (0..n).map(|i| format!("n{i}")).collect(), deps: vec![Vec::new(); n] };
        for &(a, b) in edges {
            d.deps[a].push(b);
        }
        d
    }

    #[test]
    fn stable_topological_order() {
        // 2 needs 0, 1 needs 2, 3 is free.
        let d = dag(&[(2, 0), (1, 2)], 4);
        assert_eq!(d.order().unwrap(), vec![0, 2, 1, 3]);
        assert_eq!(d.ancestors(1), [0, 2].into_iter().collect());
        assert_eq!(d.descendants(0), [1, 2].into_iter().collect());
    }

    #[test]
    fn cycles_are_reported_in_arrow_order() {
        // 0 -> 1 -> 2 -> 0 ("x -> y": x depends on y)
        let d = dag(&[(0, 1), (1, 2), (2, 0), (3, 0)], 4);
        let c = d.order().unwrap_err();
        assert_eq!(c.first(), c.last());
        assert_eq!(c.len(), 4);
        for w in c.windows(2) {
            assert!(d.deps[w[0]].contains(&w[1]), "{c:?}");
        }
    }
}
