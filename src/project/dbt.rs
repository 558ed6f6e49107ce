//! A dbt project folder read as it is: `dbt_project.yml` (name, paths, vars,
//! the `models:`/`seeds:`/`snapshots:` config trees), every `*.yml` under the
//! model, seed and snapshot paths (models, columns, data tests, sources,
//! seeds, snapshots) and `profiles.yml` (its target becomes the project's
//! connection). Everything is decoded into the same types a Sluice project
//! has (`ProjectConfig`, `Meta`), so the rest of Sluice does not know which
//! kind of project it runs. Every key is either used, reported as read but
//! without effect (a warning), or refused (an error) at `file:line:col`;
//! none is skipped silently. This module reads files only.

use std::path::{Path, PathBuf};

use super::config::{MATERIALIZED, Materialized, string_or_list};
use super::meta::{
    ColumnMeta, ModelMeta, ON_SCHEMA_CHANGE, OnSchemaChange, SeedMeta, SourceMeta, TestKind, TestSeverity, TestSpec,
};
use super::tree::{Cx, Fields, Key, Loc, Node, SourceFile, Spanned, V, one_of};
use crate::secret::Env;
use crate::types::Column;

/// The file that makes a folder a dbt project.
pub const DBT_PROJECT_FILE: &str = "dbt_project.yml";
/// The file dbt reads connections from.
pub const PROFILES_FILE: &str = "profiles.yml";

/// What the command line adds when reading a dbt project.
#[derive(Debug, Clone, Default)]
pub struct DbtOptions {
    /// `--profiles-dir` (else `DBT_PROFILES_DIR`, the project folder, the
    /// current folder, `~/.dbt`).
    pub profiles_dir: Option<PathBuf>,
    /// `--target` (else the profile's `target`).
    pub target: Option<String>,
    /// `--vars '{key: value}'` (YAML or JSON), overriding the project's.
    pub vars: Option<String>,
}

/// The profile target a dbt project runs against (dbt's `target` in Jinja).
#[derive(Debug, Clone, Default)]
pub struct DbtTarget {
    pub profile: String,
    pub name: String,
    /// `postgres`, `mysql`, `mariadb`, `sqlite` or `oracle`.
    pub kind: String,
    pub schema: String,
    pub database: String,
    pub threads: Option<usize>,
    /// Where the target is written (`profiles.yml:4:5`).
    pub file: String,
}

/// Where a dbt node's relation goes as its configs say, before
/// `generate_schema_name` and `generate_alias_name` make the names.
#[derive(Debug, Clone, Default)]
pub struct NodeNaming {
    pub schema: Option<String>,
    /// A snapshot's `target_schema`, used as written.
    pub target_schema: Option<String>,
    pub alias: Option<String>,
    /// dbt's `fqn`: the project's name, the folders under the node path, the name.
    pub fqn: Vec<String>,
    /// A seed's or snapshot's hooks from the config trees and schema files
    /// (a model's are in its `ModelMeta`).
    pub pre_hook: Vec<String>,
    pub post_hook: Vec<String>,
}

impl NodeNaming {
    pub fn new(project: &str, cfg: &NodeConfig, rel: &Path, roots: &[String]) -> NodeNaming {
        let mut fqn = vec![project.to_string()];
        fqn.extend(tree_parts(rel, roots));
        NodeNaming {
            schema: cfg.schema.as_ref().map(|s| s.v.clone()),
            target_schema: cfg.target_schema.as_ref().map(|s| s.v.clone()),
            alias: cfg.alias.as_ref().map(|s| s.v.clone()),
            fqn,
            pre_hook: cfg.pre_hook.clone(),
            post_hook: cfg.post_hook.clone(),
        }
    }
}

/// `dbt_project.yml`, decoded.
#[derive(Debug, Clone, Default)]
pub struct DbtProject {
    pub name: Option<Spanned<String>>,
    pub profile: Option<Spanned<String>>,
    pub model_paths: Vec<String>,
    pub seed_paths: Vec<String>,
    pub snapshot_paths: Vec<String>,
    pub test_paths: Vec<String>,
    pub macro_paths: Vec<String>,
    pub analysis_paths: Vec<String>,
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub models: Option<ConfigTree>,
    pub seeds: Option<ConfigTree>,
    pub snapshots: Option<ConfigTree>,
    /// `on-run-start`/`on-run-end`: SQL templates run before and after the
    /// nodes of `build`, `transform`, `seed`, `snapshot`, `test` and
    /// `source freshness`.
    pub hooks: RunHooks,
}

/// dbt's `on-run-start` and `on-run-end`, each a statement or a list of them.
#[derive(Debug, Clone, Default)]
pub struct RunHooks {
    pub start: Vec<Spanned<String>>,
    pub end: Vec<Spanned<String>>,
}

/// A config tree of `dbt_project.yml` (`models:`, `seeds:`, `snapshots:`):
/// configs for this folder and, by folder or file name, its children.
#[derive(Debug, Clone, Default)]
pub struct ConfigTree {
    pub config: NodeConfig,
    pub children: Vec<(String, Loc, ConfigTree)>,
}

/// The configs dbt users set per folder, in `config:` or `config()`.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    pub materialized: Option<Materialized>,
    /// dbt's custom schema: the node's schema is `generate_schema_name(schema, node)`.
    pub schema: Option<Spanned<String>>,
    /// A snapshot's `target_schema`: its schema, taken as written.
    pub target_schema: Option<Spanned<String>>,
    /// The relation's name, when not the node's (`generate_alias_name`).
    pub alias: Option<Spanned<String>>,
    /// Added to (never replacing) the tags of enclosing folders, as in dbt.
    pub tags: Vec<String>,
    pub enabled: Option<bool>,
    pub column_types: Vec<(String, Spanned<String>)>,
    pub on_schema_change: Option<OnSchemaChange>,
    pub unique_key: Option<Vec<String>>,
    pub severity: Option<TestSeverity>,
    /// SQL run before and after a model's build; every level's add up, the
    /// project's first, as in dbt.
    pub pre_hook: Vec<String>,
    pub post_hook: Vec<String>,
}

impl NodeConfig {
    /// `self` overridden by `more` (tags and column types add up).
    fn merge(&mut self, more: &NodeConfig) {
        macro_rules! take {
            ($($f:ident),*) => { $( if more.$f.is_some() { self.$f = more.$f.clone(); } )* };
        }
        take!(materialized, schema, target_schema, alias, enabled, on_schema_change, unique_key, severity);
        self.pre_hook.extend(more.pre_hook.iter().cloned());
        self.post_hook.extend(more.post_hook.iter().cloned());
        for t in &more.tags {
            if !self.tags.contains(t) {
                self.tags.push(t.clone());
            }
        }
        for (c, t) in &more.column_types {
            self.column_types.retain(|(x, _)| x != c);
            self.column_types.push((c.clone(), t.clone()));
        }
    }
}

/// What a config tree or `config:` is about, for the keys it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Model,
    Seed,
    Snapshot,
    Test,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Model => "model",
            Resource::Seed => "seed",
            Resource::Snapshot => "snapshot",
            Resource::Test => "test",
        }
    }
}

/// Config keys Sluice applies, per resource.
const MODEL_CONFIGS: &[&str] = &[
    "materialized",
    "schema",
    "alias",
    "tags",
    "enabled",
    "on_schema_change",
    "unique_key",
    "pre-hook",
    "post-hook",
    "pre_hook",
    "post_hook",
];
const SEED_CONFIGS: &[&str] =
    &["schema", "alias", "tags", "enabled", "column_types", "pre-hook", "post-hook", "pre_hook", "post_hook"];
const SNAPSHOT_CONFIGS: &[&str] =
    &["tags", "enabled", "target_schema", "schema", "alias", "pre-hook", "post-hook", "pre_hook", "post_hook"];
const TEST_CONFIGS: &[&str] = &["severity", "enabled", "tags"];
/// Config keys that change nothing Sluice builds (documentation, grants of
/// the adapter's own features): read and shown as such by `sluice check`.
const NO_EFFECT_CONFIGS: &[&str] =
    &["docs", "meta", "persist_docs", "quote_columns", "full_refresh", "group", "access"];
/// Config keys dbt has and Sluice does not (yet): errors, so results never
/// differ silently.
const REFUSED_CONFIGS: &[&str] = &[
    "pre-hook",
    "post-hook",
    "pre_hook",
    "post_hook",
    "database",
    "grants",
    "contract",
    "incremental_strategy",
    "where",
    "limit",
    "store_failures",
    "warn_if",
    "error_if",
    "fail_calc",
    "sql_header",
    "indexes",
    "strategy",
    "updated_at",
    "check_cols",
    "delimiter",
];

fn config_keys(r: Resource) -> &'static [&'static str] {
    match r {
        Resource::Model => MODEL_CONFIGS,
        Resource::Seed => SEED_CONFIGS,
        Resource::Snapshot => SNAPSHOT_CONFIGS,
        Resource::Test => TEST_CONFIGS,
    }
}

/// Decodes one config key (without its `+`) into `c`; `false` when the key
/// is not a config name (a folder, in a config tree).
fn config_key(c: &mut NodeConfig, r: Resource, key: &Key, value: &Node, cx: &mut Cx) -> bool {
    let name = key.name.trim_start_matches('+');
    let plus = key.name.starts_with('+');
    let is_config = config_keys(r).contains(&name)
        || NO_EFFECT_CONFIGS.contains(&name)
        || REFUSED_CONFIGS.contains(&name)
        || ALL_DBT_CONFIGS.contains(&name);
    if !is_config {
        if plus {
            let mut known: Vec<&str> = config_keys(r).to_vec();
            known.extend(NO_EFFECT_CONFIGS);
            let d = cx.error(key.span.clone(), format!("unknown {} config `{name}`", r.name()));
            d.help = crate::error::suggest(name, &known);
            return true;
        }
        return false;
    }
    if !config_keys(r).contains(&name) {
        if NO_EFFECT_CONFIGS.contains(&name) {
            return true;
        }
        let d = cx.error(key.span.clone(), format!("{} config `{name}` is not supported by sluice", r.name()));
        d.help = Some(match name {
            "pre-hook" | "post-hook" | "pre_hook" | "post_hook" => {
                "run the statements in a `sql` step of a pipeline".into()
            }
            "database" => "models are built in the target's database; point the profile's target there".into(),
            "strategy" | "updated_at" | "check_cols" => "set it in the snapshot's {{ config(...) }}".into(),
            _ => format!("{} configs sluice applies: {}", r.name(), config_keys(r).join(", ")),
        });
        return true;
    }
    match name {
        "materialized" => c.materialized = one_of(value, cx, "materialized", MATERIALIZED),
        "schema" => c.schema = <Spanned<String> as super::tree::Decode>::decode(value, cx, Some(name)),
        "target_schema" => c.target_schema = <Spanned<String> as super::tree::Decode>::decode(value, cx, Some(name)),
        "alias" => c.alias = <Spanned<String> as super::tree::Decode>::decode(value, cx, Some(name)),
        "tags" => c.tags = string_or_list(value, cx, "tags").unwrap_or_default(),
        "pre-hook" | "pre_hook" => c.pre_hook = string_or_list(value, cx, name).unwrap_or_default(),
        "post-hook" | "post_hook" => c.post_hook = string_or_list(value, cx, name).unwrap_or_default(),
        "enabled" => c.enabled = <bool as super::tree::Decode>::decode(value, cx, Some("enabled")),
        "on_schema_change" => c.on_schema_change = one_of(value, cx, "on_schema_change", ON_SCHEMA_CHANGE),
        "unique_key" => c.unique_key = string_or_list(value, cx, "unique_key"),
        "severity" => {
            let s = match &value.v {
                V::Str(s) => s.to_ascii_lowercase(),
                _ => String::new(),
            };
            c.severity = match s.as_str() {
                "error" => Some(TestSeverity::Error),
                "warn" => Some(TestSeverity::Warn),
                _ => {
                    cx.error(value.span.clone(), "invalid value for `severity`: expected error or warn");
                    None
                }
            }
        }
        "column_types" => match &value.v {
            V::Table(t) => {
                for (k, v) in t {
                    if let V::Str(s) = &v.v {
                        c.column_types.push((k.name.clone(), Spanned { v: s.clone(), loc: cx.loc(&v.span) }));
                    } else {
                        cx.error(v.span.clone(), format!("wrong type for column `{}`: expected a type name", k.name));
                    }
                }
            }
            _ => {
                cx.error(value.span.clone(), "wrong type for `column_types`: expected a mapping of column: type");
            }
        },
        _ => {}
    }
    true
}

/// Every config name dbt-core knows (so a folder is not mistaken for one).
const ALL_DBT_CONFIGS: &[&str] = &[
    "materialized",
    "schema",
    "alias",
    "tags",
    "enabled",
    "on_schema_change",
    "unique_key",
    "column_types",
    "severity",
    "target_schema",
    "target_database",
    "batch_size",
    "lookback",
    "begin",
    "event_time",
    "packages",
    "docs",
    "meta",
    "persist_docs",
    "quote_columns",
    "full_refresh",
    "group",
    "access",
    "invalidate_hard_deletes",
    "hard_deletes",
    "snapshot_meta_column_names",
    "dbt_valid_to_current",
    "on_configuration_change",
    "unlogged",
    "predicates",
    "incremental_predicates",
    "merge_update_columns",
    "merge_exclude_columns",
    "transient",
    "copy_grants",
];

/// Decodes a config tree (`models:` in `dbt_project.yml`) for `project`.
fn decode_tree(node: &Node, cx: &mut Cx, r: Resource, project: &str) -> ConfigTree {
    let mut tree = ConfigTree::default();
    let V::Table(entries) = &node.v else {
        if !matches!(node.v, V::Null) {
            cx.error(node.span.clone(), format!("wrong type: expected a mapping, found {}", node.type_name()));
        }
        return tree;
    };
    for (k, v) in entries {
        if k.name == project {
            tree.children.push((k.name.clone(), cx.loc(&k.span), decode_folder(v, cx, r)));
        } else if !config_key(&mut tree.config, r, k, v, cx) {
            cx.error(
                k.span.clone(),
                format!("`{}` is not this project (`{project}`) nor a {} config", k.name, r.name()),
            )
            .help = Some("configs of installed packages are not supported: sluice runs no dbt packages".into());
        }
    }
    tree
}

fn decode_folder(node: &Node, cx: &mut Cx, r: Resource) -> ConfigTree {
    let mut tree = ConfigTree::default();
    match &node.v {
        V::Table(entries) => {
            for (k, v) in entries {
                if !config_key(&mut tree.config, r, k, v, cx) {
                    tree.children.push((k.name.clone(), cx.loc(&k.span), decode_folder(v, cx, r)));
                }
            }
        }
        V::Null => {}
        _ => {
            cx.error(
                node.span.clone(),
                format!("wrong type: expected a mapping of configs, found {}", node.type_name()),
            );
        }
    }
    tree
}

impl ConfigTree {
    /// The config for a node at `parts` (folders under its path, then its
    /// name), with the places of the tree's entries it used.
    pub fn resolve(&self, parts: &[&str], used: &mut Vec<Loc>) -> NodeConfig {
        let mut out = self.config.clone();
        let mut at = self;
        // The first level is the project's name.
        let Some((_, loc, top)) = at.children.first() else { return out };
        used.push(loc.clone());
        out.merge(&top.config);
        at = top;
        for p in parts {
            match at.children.iter().find(|(n, _, _)| n == p) {
                Some((_, loc, t)) => {
                    used.push(loc.clone());
                    out.merge(&t.config);
                    at = t;
                }
                None => break,
            }
        }
        out
    }

    /// Every entry's place (to report those that apply to nothing).
    pub fn places(&self, out: &mut Vec<(String, Loc)>) {
        for (n, loc, t) in &self.children {
            out.push((n.clone(), loc.clone()));
            t.places(out);
        }
    }
}

/// Decodes `dbt_project.yml`.
pub fn decode_project(root: &Node, cx: &mut Cx) -> DbtProject {
    let mut p = DbtProject::default();
    let Some(mut f) = Fields::new(root, cx, DBT_PROJECT_FILE) else { return p };
    p.name = f.req(cx, "name");
    p.profile = f.opt(cx, "profile");
    let paths = |f: &mut Fields, cx: &mut Cx, key: &'static str, default: &str| -> Vec<String> {
        f.node(key).and_then(|n| string_or_list(n, cx, key)).unwrap_or_else(|| vec![default.to_string()])
    };
    p.model_paths = paths(&mut f, cx, "model-paths", "models");
    p.seed_paths = paths(&mut f, cx, "seed-paths", "seeds");
    p.snapshot_paths = paths(&mut f, cx, "snapshot-paths", "snapshots");
    p.test_paths = paths(&mut f, cx, "test-paths", "tests");
    p.macro_paths = paths(&mut f, cx, "macro-paths", "macros");
    p.analysis_paths = paths(&mut f, cx, "analysis-paths", "analyses");
    for key in ["source-paths", "data-paths"] {
        if let Some(span) = f.key_span(key) {
            let new = if key == "source-paths" { "model-paths" } else { "seed-paths" };
            cx.error(span, format!("`{key}` was renamed `{new}` in dbt 1.0"));
        }
    }
    f.allow(&["source-paths", "data-paths"]);
    let name = p.name.as_ref().map(|n| n.v.clone()).unwrap_or_default();
    if let Some(v) = f.node("vars") {
        match v.to_json() {
            serde_json::Value::Object(m) => {
                for (k, val) in m {
                    // Vars scoped to this project (`vars: {jaffle: {x: 1}}`) are its vars.
                    match val {
                        serde_json::Value::Object(inner) if k == name => p.vars.extend(inner),
                        other => {
                            p.vars.insert(k, other);
                        }
                    }
                }
            }
            serde_json::Value::Null => {}
            _ => {
                cx.error(v.span.clone(), "wrong type for `vars`: expected a mapping");
            }
        }
    }
    p.models = f.node("models").map(|n| decode_tree(n, cx, Resource::Model, &name));
    p.seeds = f.node("seeds").map(|n| decode_tree(n, cx, Resource::Seed, &name));
    p.snapshots = f.node("snapshots").map(|n| decode_tree(n, cx, Resource::Snapshot, &name));
    if let Some(n) = f.node("data_tests").or_else(|| f.node("tests")) {
        let _ = decode_tree(n, cx, Resource::Test, &name);
    }
    for (key, into) in [("on-run-start", &mut p.hooks.start), ("on-run-end", &mut p.hooks.end)] {
        let Some(n) = f.node(key) else { continue };
        let items: Vec<&Node> = match &n.v {
            V::Array(a) => a.iter().collect(),
            V::Null => Vec::new(),
            _ => vec![n],
        };
        for it in items {
            match &it.v {
                V::Str(sql) => {
                    // A template that cannot parse is reported now, not when a command runs it.
                    if let Err(e) = minijinja::Environment::new().template_from_str(sql) {
                        cx.error(
                            it.span.clone(),
                            format!("`{key}` is not a valid template: {}", e.detail().unwrap_or(&e.to_string())),
                        );
                    }
                    into.push(Spanned { v: sql.clone(), loc: cx.loc(&it.span) });
                }
                V::Null => {}
                _ => {
                    cx.error(
                        it.span.clone(),
                        format!(
                            "wrong type for `{key}`: expected a SQL statement or a list of them, found {}",
                            it.type_name()
                        ),
                    );
                }
            }
        }
    }
    if let Some(n) = f.node("target-path")
        && !matches!(&n.v, V::Str(s) if s == "target")
    {
        cx.error(n.span.clone(), "sluice writes its artifacts to target/; remove `target-path`");
    }
    // Keys that change nothing Sluice does.
    f.allow(&[
        "version",
        "config-version",
        "require-dbt-version",
        "clean-targets",
        "docs-paths",
        "asset-paths",
        "packages-install-path",
        "log-path",
        "query-comment",
        "flags",
        "sources",
    ]);
    f.finish(cx, |k| match k {
        "dispatch" => Some("dispatching to packages is not supported: sluice runs no dbt packages".into()),
        "quoting" => Some("sluice always quotes identifiers".into()),
        "exposures" | "metrics" | "semantic-models" | "saved-queries" => {
            Some("the semantic layer and exposures are not supported".into())
        }
        _ => None,
    });
    p
}

/// The parts a config tree is matched against: the folders of `rel` under
/// its path, then its name (`models/staging/stg_x.sql` → `[staging, stg_x]`).
pub fn tree_parts(rel: &Path, roots: &[String]) -> Vec<String> {
    let under = roots.iter().find_map(|r| rel.strip_prefix(r).ok()).unwrap_or(rel);
    let mut parts: Vec<String> =
        under.parent().map(|p| p.iter().map(|s| s.to_string_lossy().into_owned()).collect()).unwrap_or_default();
    parts.push(rel.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
    parts
}

/// What the `*.yml` files of a dbt project declare, before it is merged into [`Meta`].
#[derive(Debug, Default)]
pub struct YmlMeta {
    pub models: Vec<(ModelMeta, NodeConfig)>,
    pub seeds: Vec<(Spanned<String>, Option<String>, NodeConfig)>,
    pub snapshots: Vec<(Spanned<String>, NodeConfig)>,
    pub sources: Vec<SourceMeta>,
    /// What the schema files say about seeds and snapshots (description,
    /// columns, tests), in a model's terms.
    pub described: Vec<ModelMeta>,
    /// The project's `{% docs %}` blocks by name, for `{{ doc('name') }}`
    /// in descriptions (read before the schema files).
    pub docs: std::collections::BTreeMap<String, String>,
}

/// Decodes one schema file (`models/schema.yml`).
pub fn decode_yml(root: &Node, cx: &mut Cx, out: &mut YmlMeta) {
    if matches!(&root.v, V::Table(t) if t.is_empty()) {
        return;
    }
    let Some(mut f) = Fields::new(root, cx, "the schema file") else { return };
    let _: Option<i64> = f.opt(cx, "version");
    for (key, r) in [("models", Resource::Model), ("seeds", Resource::Seed), ("snapshots", Resource::Snapshot)] {
        let Some(list) = f.node(key) else { continue };
        for item in items(list, cx, key) {
            let what = format!("a {} in `{key}`", r.name());
            let Some(mut m) = Fields::new(item, cx, what) else { continue };
            let Some(name) = m.req::<Spanned<String>>(cx, "name") else { continue };
            m.what = format!("{} `{}`", r.name(), name.v);
            let before = match r {
                Resource::Model => out.models.iter().find(|(x, _)| x.name.v == name.v).map(|(x, _)| x.name.loc.clone()),
                Resource::Seed => out.seeds.iter().find(|(x, _, _)| x.v == name.v).map(|(x, _, _)| x.loc.clone()),
                _ => out.snapshots.iter().find(|(x, _)| x.v == name.v).map(|(x, _)| x.loc.clone()),
            };
            if let Some(first) = before {
                let at = if first.file == cx.file {
                    let (l, c) = cx.src.line_col(first.start as usize);
                    format!(" (first at line {l}, column {c})")
                } else {
                    " in another schema file".to_string()
                };
                cx.error(
                    name.loc.start as usize..name.loc.end as usize,
                    format!("{} `{}` is described twice{at}", r.name(), name.v),
                )
                .help = Some("describe each model in one schema file".into());
                continue;
            }
            let description = m.node("description").and_then(|n| describe(n, cx, &out.docs));
            let mut config = NodeConfig::default();
            if let Some(c) = m.node("config") {
                decode_config(c, cx, r, &mut config);
            }
            let mut tests = Vec::new();
            for key in ["tests", "data_tests"] {
                if let Some(t) = m.node(key) {
                    tests.extend(decode_tests(t, cx, None));
                }
            }
            let mut columns = Vec::new();
            if let Some(cols) = m.node("columns") {
                for c in items(cols, cx, "columns") {
                    if let Some(col) = decode_column(c, cx, &out.docs) {
                        columns.push(col);
                    }
                }
            }
            m.allow(&["docs", "meta", "access", "group", "deprecation_date", "latest_version"]);
            m.finish(cx, |k| match k {
                "versions" => Some("model versions are not supported".into()),
                "constraints" => {
                    Some("constraints are not supported; declare a contract in a models .toml file".into())
                }
                "relation" => Some("snapshots defined in YAML are not supported; write snapshots/NAME.sql".into()),
                _ => None,
            });
            match r {
                Resource::Model => out.models.push((
                    named(ModelMeta {
                        name,
                        description,
                        materialized: None,
                        unique_key: None,
                        tags: Vec::new(),
                        on_schema_change: None,
                        publish: false,
                        tests,
                        columns,
                        pre_hook: Vec::new(),
                        post_hook: Vec::new(),
                    }),
                    config,
                )),
                Resource::Seed | Resource::Snapshot => {
                    // Its description, columns and tests, as a model's.
                    out.described.push(named(ModelMeta {
                        name: name.clone(),
                        description: description.clone(),
                        materialized: None,
                        unique_key: None,
                        tags: Vec::new(),
                        on_schema_change: None,
                        publish: false,
                        tests,
                        columns,
                        pre_hook: Vec::new(),
                        post_hook: Vec::new(),
                    }));
                    if r == Resource::Seed {
                        out.seeds.push((name, description, config));
                    } else {
                        out.snapshots.push((name, config));
                    }
                }
                Resource::Test => {}
            }
        }
    }
    if let Some(list) = f.node("sources") {
        for item in items(list, cx, "sources") {
            if let Some(s) = decode_source(item, cx, &out.docs) {
                out.sources.push(s);
            }
        }
    }
    f.allow(&["macros", "exposures", "groups", "analyses"]);
    f.finish(cx, |k| match k {
        "unit_tests" => Some("dbt unit tests are not supported".into()),
        "metrics" | "semantic_models" | "saved_queries" => Some("the semantic layer is not supported".into()),
        _ => None,
    });
}

fn named(mut m: ModelMeta) -> ModelMeta {
    name_tests(&mut m);
    m
}

fn items<'n>(node: &'n Node, cx: &mut Cx, key: &str) -> &'n [Node] {
    match &node.v {
        V::Array(a) => a,
        V::Null => &[],
        _ => {
            cx.error(node.span.clone(), format!("wrong type for `{key}`: expected a list, found {}", node.type_name()));
            &[]
        }
    }
}

fn decode_config(node: &Node, cx: &mut Cx, r: Resource, c: &mut NodeConfig) {
    match &node.v {
        V::Table(t) => {
            for (k, v) in t {
                if k.name.starts_with('+') || !config_key(c, r, k, v, cx) {
                    let d = cx.error(k.span.clone(), format!("unknown {} config `{}`", r.name(), k.name));
                    d.help = crate::error::suggest(k.name.trim_start_matches('+'), config_keys(r));
                }
            }
        }
        V::Null => {}
        _ => {
            cx.error(
                node.span.clone(),
                format!("wrong type for `config`: expected a mapping, found {}", node.type_name()),
            );
        }
    }
}

fn decode_column(node: &Node, cx: &mut Cx, docs: &Docs) -> Option<ColumnMeta> {
    let mut c = Fields::new(node, cx, "a column")?;
    let name: Spanned<String> = c.req(cx, "name")?;
    c.what = format!("column `{}`", name.v);
    let description = c.node("description").and_then(|n| describe(n, cx, docs));
    let data_type: Option<Spanned<String>> = c.opt(cx, "data_type");
    let mut tests = Vec::new();
    for key in ["tests", "data_tests"] {
        if let Some(t) = c.node(key) {
            tests.extend(decode_tests(t, cx, Some(&name.v)));
        }
    }
    c.allow(&["meta", "quote", "tags", "policy_tags", "granularity", "docs", "config"]);
    c.finish(cx, |k| match k {
        "constraints" => Some("constraints are not supported".into()),
        _ => None,
    });
    // `data_type` is documentation in dbt unless a contract is enforced;
    // Sluice keeps it as the column's type where it knows the type.
    let column = data_type.and_then(|t| Column::parse_short(&name.v, &t.v).ok());
    Some(ColumnMeta { name, description, column, tests })
}

/// Decodes a `tests:`/`data_tests:` list; `column` is the column they are on.
fn decode_tests(node: &Node, cx: &mut Cx, column: Option<&str>) -> Vec<TestSpec> {
    let mut out = Vec::new();
    for it in items(node, cx, "data_tests") {
        let loc = cx.loc(&it.span);
        let (name, args): (String, Option<&Node>) = match &it.v {
            V::Str(s) => (s.clone(), None),
            V::Table(t) if t.len() == 1 => (t[0].0.name.clone(), Some(&t[0].1)),
            V::Table(t) => {
                match t.iter().find(|(k, _)| k.name == "test_name") {
                    Some((_, v)) => (scalar(v), Some(it)),
                    None => {
                        cx.error(it.span.clone(), "a test is a name (- not_null) or a mapping with one key (- accepted_values: {values: [a, b]})");
                        continue;
                    }
                }
            }
            _ => {
                cx.error(
                    it.span.clone(),
                    "a test is a name (- not_null) or a mapping with one key (- accepted_values: {values: [a, b]})",
                );
                continue;
            }
        };
        if name.contains('.') {
            cx.error(it.span.clone(), format!("test `{name}` comes from a package; sluice runs no dbt packages"))
                .help = Some(format!("built-in tests: {}", DBT_TESTS.join(", ")));
            continue;
        }
        let mut cfg = NodeConfig::default();
        let mut custom_name = None;
        // Arguments, flat or under `arguments:` (dbt 1.10+), and configs.
        let mut argv: Vec<(&Key, &Node)> = Vec::new();
        if let Some(a) = args {
            match &a.v {
                V::Table(t) => {
                    for (k, v) in t {
                        match k.name.as_str() {
                            "arguments" => match &v.v {
                                V::Table(inner) => argv.extend(inner.iter().map(|(k, v)| (k, v))),
                                _ => {
                                    cx.error(v.span.clone(), "wrong type for `arguments`: expected a mapping");
                                }
                            },
                            "config" => decode_config(v, cx, Resource::Test, &mut cfg),
                            "name" => custom_name = Some(scalar(v)),
                            "test_name" | "description" => {}
                            _ if config_key(&mut cfg, Resource::Test, k, v, cx) => {}
                            _ => argv.push((k, v)),
                        }
                    }
                }
                V::Null => {}
                _ => {
                    cx.error(a.span.clone(), format!("wrong type for test `{name}`: expected a mapping of arguments"));
                    continue;
                }
            }
        }
        let arg = |key: &str| argv.iter().find(|(k, _)| k.name == key).map(|(_, v)| *v);
        let known: &[&str] = match name.as_str() {
            "accepted_values" => &["values", "quote", "column_name"],
            "relationships" => &["to", "field", "column_name"],
            _ => &["column_name"],
        };
        let mut bad = false;
        for (k, _) in &argv {
            if !known.contains(&k.name.as_str()) {
                cx.error(k.span.clone(), format!("unknown argument `{}` of test `{name}`", k.name)).help =
                    crate::error::suggest(&k.name, known);
                bad = true;
            }
        }
        let column = arg("column_name").map(scalar).or(column.map(str::to_string));
        let missing = |cx: &mut Cx, what: &str| {
            cx.error(it.span.clone(), format!("test `{name}` needs `{what}`"));
        };
        let kind = match name.as_str() {
            "not_null" => Some(TestKind::NotNull),
            "unique" => Some(TestKind::Unique),
            "accepted_values" => match arg("values") {
                Some(Node { v: V::Array(vs), .. }) => Some(TestKind::AcceptedValues(vs.iter().map(scalar).collect())),
                Some(n) => {
                    cx.error(n.span.clone(), "wrong type for `values`: expected a list");
                    None
                }
                None => {
                    missing(cx, "values");
                    None
                }
            },
            "relationships" => {
                let to = arg("to").map(|n| (ref_target(&scalar(n)), n));
                let field = arg("field").map(scalar);
                match (to, field) {
                    (Some((Some(to), _)), Some(field)) => Some(TestKind::Relationships { to, field }),
                    (Some((None, n)), _) => {
                        cx.error(n.span.clone(), "`to` is ref('model') or source('source', 'table')");
                        None
                    }
                    _ => {
                        missing(cx, "to` and `field");
                        None
                    }
                }
            }
            other => {
                let d = cx.error(it.span.clone(), format!("unknown test `{other}`"));
                d.help = Some(match crate::error::nearest(other, DBT_TESTS.iter().copied()) {
                    Some(n) => format!("did you mean `{n}`? (custom generic tests are not supported yet)"),
                    None => format!("sluice runs dbt's built-in tests: {}", DBT_TESTS.join(", ")),
                });
                None
            }
        };
        let Some(kind) = kind else { continue };
        if bad {
            continue;
        }
        if column.is_none() {
            cx.error(it.span.clone(), format!("test `{name}` checks a column: list it under the column"));
            continue;
        }
        if cfg.enabled == Some(false) {
            continue;
        }
        // dbt's name: the test, the model (filled in by the caller, see
        // MODEL_MARK), then every argument's values in the order of the
        // arguments' names, non-alphanumerics as `_`.
        let name = custom_name.unwrap_or_else(|| {
            let mut args: Vec<(&str, Vec<String>)> =
                argv.iter().filter(|(k, _)| k.name != "column_name").map(|(k, v)| (k.name.as_str(), flat(v))).collect();
            args.push(("column_name", vec![column.clone().unwrap_or_default()]));
            args.sort_by(|a, b| a.0.cmp(b.0));
            let parts: Vec<String> = args.into_iter().flat_map(|(_, v)| v).map(|p| clean(&p)).collect();
            format!("{name}_{MODEL_MARK}_{}", parts.join("__"))
        });
        out.push(TestSpec { loc, kind, severity: cfg.severity.unwrap_or(TestSeverity::Error), name: Some(name) });
    }
    out
}

/// Stands for the model's name in a test's name until the model is known.
const MODEL_MARK: &str = "\u{1}";

/// A test argument's values, as dbt flattens them for the test's name.
fn flat(n: &Node) -> Vec<String> {
    match &n.v {
        V::Array(a) => a.iter().map(scalar).collect(),
        V::Table(t) => t.iter().map(|(_, v)| scalar(v)).collect(),
        _ => vec![scalar(n)],
    }
}

fn clean(s: &str) -> String {
    let mut out = String::new();
    let mut gap = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
            gap = false;
        } else if !gap {
            out.push('_');
            gap = true;
        }
    }
    out
}

/// Puts the model's name into its tests' names.
fn name_tests(m: &mut ModelMeta) {
    let model = m.name.v.clone();
    for t in m.tests.iter_mut().chain(m.columns.iter_mut().flat_map(|c| c.tests.iter_mut())) {
        if let Some(n) = &mut t.name {
            *n = n.replace(MODEL_MARK, &model);
        }
    }
}

const DBT_TESTS: &[&str] = &["not_null", "unique", "accepted_values", "relationships"];

/// `ref('x')` → `x`; `source('s', 't')` → `t`; a plain name stays.
fn ref_target(s: &str) -> Option<String> {
    let s = s.trim();
    let inner = |prefix: &str| -> Option<Vec<String>> {
        let rest = s.strip_prefix(prefix)?.trim_start().strip_prefix('(')?.strip_suffix(')')?;
        Some(rest.split(',').map(|a| a.trim().trim_matches(['\'', '"']).to_string()).collect())
    };
    if let Some(a) = inner("ref") {
        return a.last().cloned().filter(|x| !x.is_empty());
    }
    if let Some(a) = inner("source") {
        return a.get(1).cloned();
    }
    (!s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_')).then(|| s.to_string())
}

fn scalar(n: &Node) -> String {
    match &n.v {
        V::Str(s) | V::Datetime(s) => s.clone(),
        V::Int(i) => i.to_string(),
        V::Float(f) => f.to_string(),
        V::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn decode_source(node: &Node, cx: &mut Cx, docs: &Docs) -> Option<SourceMeta> {
    let mut f = Fields::new(node, cx, "a source")?;
    let name: Spanned<String> = f.req(cx, "name")?;
    f.what = format!("source `{}`", name.v);
    let description = f.node("description").and_then(|n| describe(n, cx, docs));
    let schema: Option<String> = f.opt(cx, "schema");
    let source_fresh = decode_freshness(&mut f, cx);
    let mut tables = Vec::new();
    let mut identifiers = std::collections::BTreeMap::new();
    let mut freshness = std::collections::BTreeMap::new();
    let mut table_descriptions = std::collections::BTreeMap::new();
    if let Some(list) = f.node("tables") {
        for t in items(list, cx, "tables") {
            let Some(mut tf) = Fields::new(t, cx, "a source table") else { continue };
            let Some(tname) = tf.req::<Spanned<String>>(cx, "name") else { continue };
            tf.what = format!("table `{}` of source `{}`", tname.v, name.v);
            if let Some(d) = tf.node("description").and_then(|n| describe(n, cx, docs)) {
                table_descriptions.insert(tname.v.clone(), d);
            }
            if let Some(id) = tf.opt::<String>(cx, "identifier") {
                identifiers.insert(tname.v.clone(), id);
            }
            if let Some(fr) = decode_freshness(&mut tf, cx).over(&source_fresh) {
                freshness.insert(tname.v.clone(), fr);
            }
            let mut tested = false;
            for key in ["tests", "data_tests"] {
                if let Some(n) = tf.node(key) {
                    tested |= !decode_tests(n, cx, Some("")).is_empty();
                }
            }
            if let Some(cols) = tf.node("columns") {
                for c in items(cols, cx, "columns") {
                    tested |= decode_column(c, cx, docs).is_some_and(|c| !c.tests.is_empty());
                }
            }
            if tested {
                cx.warn(t.span.clone(), "tests on sources are not run yet; test the staging models that read them");
            }
            tf.allow(&["meta", "tags", "quoting", "loader", "docs"]);
            tf.finish(cx, |k| match k {
                "external" => Some("external tables are not supported".into()),
                _ => None,
            });
            tables.push(tname);
        }
    }
    f.allow(&["meta", "tags", "quoting", "loader", "docs"]);
    f.finish(cx, |k| match k {
        "database" => Some("sources are read from the target's database".into()),
        "overrides" => Some("overriding a package's sources is not supported".into()),
        _ => None,
    });
    // dbt's rule: a source without `schema` is in the schema named like it.
    let schema = schema.or_else(|| Some(name.v.clone()));
    Some(SourceMeta { name, schema, tables, identifiers, freshness, description, table_descriptions })
}

/// How old a source table's newest row may be (dbt's `freshness:` with
/// `loaded_at_field`), after the table's settings were merged over its
/// source's.
#[derive(Debug, Clone, PartialEq)]
pub struct Freshness {
    /// The column whose newest value says when the table was last loaded.
    pub loaded_at_field: Option<String>,
    pub warn_after: Option<After>,
    pub error_after: Option<After>,
    /// A SQL condition: only the rows it keeps are looked at.
    pub filter: Option<String>,
}

/// A freshness threshold as written (`{count: 12, period: hour}`).
#[derive(Debug, Clone, PartialEq)]
pub struct After {
    pub count: u64,
    /// `minute`, `hour` or `day`.
    pub period: String,
}

impl After {
    pub fn duration(&self) -> std::time::Duration {
        let secs = match self.period.as_str() {
            "minute" => 60,
            "hour" => 3600,
            _ => 86400,
        };
        std::time::Duration::from_secs(self.count.saturating_mul(secs))
    }
}

/// What one level (a source, or one of its tables) says about freshness:
/// `None` where it says nothing; `freshness: null` is `Some(None)`.
#[derive(Debug, Clone, Default)]
struct FreshnessLevel {
    loaded_at_field: Option<String>,
    freshness: Option<Option<FreshnessSpec>>,
}

#[derive(Debug, Clone, Default)]
struct FreshnessSpec {
    warn_after: Option<After>,
    error_after: Option<After>,
    filter: Option<String>,
}

impl FreshnessLevel {
    /// The table's level over its source's, as dbt merges them: the table's
    /// `loaded_at_field` wins; its `freshness` thresholds and `filter` each
    /// replace the source's, and `freshness: null` turns the check off.
    fn over(&self, source: &FreshnessLevel) -> Option<Freshness> {
        let spec = match (&self.freshness, &source.freshness) {
            (Some(None), _) => return None,
            (Some(Some(t)), Some(Some(s))) => FreshnessSpec {
                warn_after: t.warn_after.clone().or_else(|| s.warn_after.clone()),
                error_after: t.error_after.clone().or_else(|| s.error_after.clone()),
                filter: t.filter.clone().or_else(|| s.filter.clone()),
            },
            (Some(Some(t)), _) => t.clone(),
            (None, Some(Some(s))) => s.clone(),
            (None, _) => return None,
        };
        if spec.warn_after.is_none() && spec.error_after.is_none() {
            return None;
        }
        Some(Freshness {
            loaded_at_field: self.loaded_at_field.clone().or_else(|| source.loaded_at_field.clone()),
            warn_after: spec.warn_after,
            error_after: spec.error_after,
            filter: spec.filter,
        })
    }
}

/// Reads `loaded_at_field` and `freshness` of a source or a table, at its
/// top level or under `config:` (dbt 1.10+), with the other configs a
/// source has.
fn decode_freshness(f: &mut Fields, cx: &mut Cx) -> FreshnessLevel {
    let mut out = FreshnessLevel { loaded_at_field: f.opt(cx, "loaded_at_field"), freshness: None };
    if let Some(n) = f.node("freshness") {
        out.freshness = Some(freshness_spec(n, cx));
    }
    if let Some(c) = f.node("config") {
        if matches!(c.v, V::Null) {
            return out;
        }
        let Some(mut cf) = Fields::new(c, cx, "config") else { return out };
        if let Some(field) = cf.opt::<String>(cx, "loaded_at_field") {
            out.loaded_at_field = Some(field);
        }
        if let Some(n) = cf.node("freshness") {
            out.freshness = Some(freshness_spec(n, cx));
        }
        cf.allow(&["enabled", "event_time", "meta", "tags"]);
        cf.finish(cx, |k| match k {
            "loaded_at_query" => Some("`loaded_at_query` is not supported: give `loaded_at_field`".into()),
            _ => None,
        });
    }
    out
}

fn freshness_spec(n: &Node, cx: &mut Cx) -> Option<FreshnessSpec> {
    if matches!(n.v, V::Null) {
        return None;
    }
    let mut fr = Fields::new(n, cx, "freshness")?;
    let after = |fr: &mut Fields, cx: &mut Cx, key: &'static str| -> Option<After> {
        let n = fr.node(key)?;
        if matches!(n.v, V::Null) {
            return None;
        }
        let mut a = Fields::new(n, cx, key.to_string())?;
        let count: Option<u64> = a.opt(cx, "count");
        let period: Option<Spanned<String>> = a.opt(cx, "period");
        a.finish(cx, |_| None);
        // dbt allows both absent (no threshold); one without the other is a mistake.
        let (count, period) = match (count, period) {
            (None, None) => return None,
            (Some(c), Some(p)) => (c, p),
            _ => {
                cx.error(n.span.clone(), format!("`{key}` needs both `count` and `period`"));
                return None;
            }
        };
        if !matches!(period.v.as_str(), "minute" | "hour" | "day") {
            cx.error(
                period.loc.start as usize..period.loc.end as usize,
                format!("invalid period `{}`: expected minute, hour or day", period.v),
            );
            return None;
        }
        Some(After { count, period: period.v })
    };
    let warn_after = after(&mut fr, cx, "warn_after");
    let error_after = after(&mut fr, cx, "error_after");
    let filter: Option<String> = fr.opt(cx, "filter");
    fr.finish(cx, |_| None);
    Some(FreshnessSpec { warn_after, error_after, filter })
}

// ---------------------------------------------------------------- doc blocks

/// The project's doc blocks by name.
type Docs = std::collections::BTreeMap<String, String>;

/// A `{% docs NAME %}…{% enddocs %}` block of a Markdown file.
#[derive(Debug, Clone, PartialEq)]
pub struct DocBlock {
    pub name: String,
    /// What is between the tags, without the whitespace around it.
    pub text: String,
    /// The opening tag's byte range.
    pub at: std::ops::Range<usize>,
}

/// The doc blocks of a Markdown file (text outside them is not read, as in
/// dbt); a block without its `{% enddocs %}` is an error at its opening tag.
pub fn doc_blocks(text: &str) -> Result<Vec<DocBlock>, (std::ops::Range<usize>, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, std::ops::Range<usize>)> = None;
    let mut from = 0;
    while let Some(i) = text[from..].find("{%") {
        let start = from + i;
        let Some(end) = text[start..].find("%}").map(|j| start + j + 2) else { break };
        let inner = text[start + 2..end - 2].trim_matches(['-', '+', ' ', '\n', '\t', '\r']);
        from = end;
        if let Some(name) = inner.strip_prefix("docs ").map(str::trim) {
            if let Some((n, at)) = &open {
                return Err((at.clone(), format!("doc block `{n}` has no {{% enddocs %}} before the next block")));
            }
            if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                return Err((start..end, format!("`{name}` is not a doc block name (letters, digits and _)")));
            }
            open = Some((name.to_string(), start..end));
        } else if inner == "enddocs" {
            let Some((name, at)) = open.take() else {
                return Err((start..end, "{% enddocs %} without a {% docs NAME %} before it".into()));
            };
            out.push(DocBlock { name, text: text[at.end..start].trim().to_string(), at });
        }
    }
    if let Some((n, at)) = open {
        return Err((at, format!("doc block `{n}` has no {{% enddocs %}}")));
    }
    Ok(out)
}

/// A description, with each `{{ doc('name') }}` replaced by that doc
/// block's text (dbt renders descriptions so); an unknown name is an error
/// at the call.
fn describe(node: &Node, cx: &mut Cx, docs: &Docs) -> Option<String> {
    let text = <String as super::tree::Decode>::decode(node, cx, Some("description"))?;
    if !text.contains("{{") {
        return Some(text);
    }
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("{{") {
        let Some(j) = rest[i..].find("}}").map(|j| i + j + 2) else { break };
        out.push_str(&rest[..i]);
        let call = &rest[i..j];
        match doc_call(call) {
            Some(name) => match docs.get(&name) {
                Some(d) => out.push_str(d),
                None => {
                    // The call's place in the file, when it is written there as is.
                    let raw = cx.src.text.get(node.span.clone()).unwrap_or_default();
                    let span = match raw.find(call) {
                        Some(k) => node.span.start + k..node.span.start + k + call.len(),
                        None => node.span.clone(),
                    };
                    let names: Vec<&str> = docs.keys().map(String::as_str).collect();
                    cx.error(span, format!("unknown doc `{name}` in {{{{ doc() }}}}")).help =
                        crate::error::suggest(&name, &names).or_else(|| {
                            Some("write it as {% docs NAME %}…{% enddocs %} in a .md file under the model paths".into())
                        });
                    out.push_str(call);
                }
            },
            None => out.push_str(call),
        }
        rest = &rest[j..];
    }
    out.push_str(rest);
    Some(out)
}

/// `{{ doc('name') }}` (or `doc("project", "name")`, `{{- … -}}`) → `name`.
fn doc_call(call: &str) -> Option<String> {
    let inner = call.strip_prefix("{{")?.strip_suffix("}}")?.trim_matches(['-', ' ', '\n', '\t', '\r']);
    let args = inner.strip_prefix("doc")?.trim_start().strip_prefix('(')?.strip_suffix(')')?;
    let mut names = Vec::new();
    for a in args.split(',') {
        let a = a.trim();
        let q = a.chars().next()?;
        if (q != '\'' && q != '"') || a.len() < 2 || !a.ends_with(q) {
            return None;
        }
        names.push(a[1..a.len() - 1].to_string());
    }
    match names.len() {
        1 | 2 => names.pop(),
        _ => None,
    }
}

// ---------------------------------------------------------------- profiles

/// Where `profiles.yml` is: `--profiles-dir`, `DBT_PROFILES_DIR`, the
/// project folder, the current folder, `~/.dbt`.
pub fn find_profiles(dir: &Path, opts: &DbtOptions, env: &Env) -> Option<PathBuf> {
    if let Some(d) = &opts.profiles_dir {
        return Some(d.join(PROFILES_FILE));
    }
    if let Some(d) = env.var("DBT_PROFILES_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join(PROFILES_FILE));
    }
    let mut candidates = vec![dir.join(PROFILES_FILE), PathBuf::from(PROFILES_FILE)];
    if let Some(home) = env.var("HOME") {
        candidates.push(PathBuf::from(home).join(".dbt").join(PROFILES_FILE));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Renders `{{ env_var('X', 'default') }}` in a profile value. A value that
/// is just one `env_var()` stays a `${env:X}` reference, so secrets are
/// resolved only when connecting and never shown.
fn profile_value(n: &Node, cx: &mut Cx, env: &Env, keep_ref: bool) -> Option<String> {
    let text = match &n.v {
        V::Str(s) => s.clone(),
        V::Int(i) => return Some(i.to_string()),
        V::Float(f) => return Some(f.to_string()),
        V::Bool(b) => return Some(b.to_string()),
        V::Null => return None,
        _ => {
            cx.error(n.span.clone(), format!("wrong type: expected a value, found {}", n.type_name()));
            return None;
        }
    };
    if !text.contains("{{") && !text.contains("{%") {
        return Some(text);
    }
    if keep_ref && let Some((name, default)) = single_env_var(&text) {
        return Some(match default {
            Some(d) => format!("${{env:{name}:-{d}}}"),
            None => format!("${{env:{name}}}"),
        });
    }
    let mut jenv = minijinja::Environment::new();
    let e = env.clone();
    jenv.add_function("env_var", move |name: String, default: Option<String>| {
        e.var(&name).or(default).ok_or_else(|| {
            minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, format!("env var `{name}` is not set"))
        })
    });
    jenv.add_filter("as_number", |v: minijinja::Value| v);
    jenv.add_filter("as_native", |v: minijinja::Value| v);
    jenv.add_filter("as_bool", |v: minijinja::Value| v);
    jenv.add_filter("as_text", |v: minijinja::Value| v.to_string());
    match jenv.render_str(&text, minijinja::context! {}) {
        Ok(s) => Some(s),
        Err(err) => {
            cx.error(n.span.clone(), format!("cannot render {text}: {}", err.detail().unwrap_or(&err.to_string())));
            None
        }
    }
}

/// `{{ env_var('NAME') }}` or `{{ env_var("NAME", "default") }}`, alone.
fn single_env_var(text: &str) -> Option<(String, Option<String>)> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let args = inner.strip_prefix("env_var")?.trim_start().strip_prefix('(')?.strip_suffix(')')?;
    let mut parts = Vec::new();
    for a in args.split(',') {
        let a = a.trim();
        let q = a.chars().next()?;
        if (q != '\'' && q != '"') || !a.ends_with(q) || a.len() < 2 {
            return None;
        }
        parts.push(a[1..a.len() - 1].to_string());
    }
    match parts.as_slice() {
        [n] => Some((n.clone(), None)),
        [n, d] if !d.contains('}') => Some((n.clone(), Some(d.clone()))),
        _ => None,
    }
}

/// A profile's target as a Sluice connection URL (kept as written: it may
/// hold `${env:…}` references), with what templates know of the target.
pub fn decode_profiles(
    root: &Node,
    cx: &mut Cx,
    env: &Env,
    profile: &str,
    target: Option<&str>,
) -> Option<(Spanned<String>, DbtTarget)> {
    let Some(p) = root.get(profile) else {
        let names: Vec<&str> = match &root.v {
            V::Table(t) => t.iter().map(|(k, _)| k.name.as_str()).filter(|k| *k != "config").collect(),
            _ => Vec::new(),
        };
        cx.error(0..0, format!("no profile named `{profile}` in {}", cx.src.name)).help =
            crate::error::suggest(profile, &names).or_else(|| Some(format!("profiles here: {}", names.join(", "))));
        return None;
    };
    let mut f = Fields::new(p, cx, format!("profile `{profile}`"))?;
    let default_target: Option<String> = f.opt(cx, "target").map(|t: String| t);
    let outputs = f.node("outputs");
    f.finish(cx, |_| None);
    let Some(outputs) = outputs else {
        cx.error(p.span.clone(), format!("profile `{profile}` has no `outputs`"));
        return None;
    };
    let default_target = default_target.map(|t| {
        let n = Node { span: 0..0, v: V::Str(t) };
        profile_value(&n, cx, env, false).unwrap_or_default()
    });
    let name = target.map(str::to_string).or(default_target).unwrap_or_else(|| "default".into());
    let Some(out) = outputs.get(&name) else {
        let names: Vec<&str> = match &outputs.v {
            V::Table(t) => t.iter().map(|(k, _)| k.name.as_str()).collect(),
            _ => Vec::new(),
        };
        cx.error(outputs.span.clone(), format!("profile `{profile}` has no target `{name}`")).help =
            crate::error::suggest(&name, &names).or_else(|| Some(format!("targets: {}", names.join(", "))));
        return None;
    };
    let mut t = Fields::new(out, cx, format!("target `{name}` of profile `{profile}`"))?;
    let get = |t: &mut Fields, cx: &mut Cx, key: &'static str, secret: bool| -> Option<String> {
        let n = t.node(key)?;
        profile_value(n, cx, env, secret)
    };
    let kind = get(&mut t, cx, "type", false).unwrap_or_default();
    let threads = get(&mut t, cx, "threads", false).and_then(|s| s.parse::<usize>().ok());
    let user_info = |user: Option<String>, pass: Option<String>| -> String {
        match (user, pass) {
            (Some(u), Some(p)) => format!("{}:{}@", enc(&u), enc(&p)),
            (Some(u), None) => format!("{}@", enc(&u)),
            _ => String::new(),
        }
    };
    let mut params: Vec<String> = Vec::new();
    let loc = cx.loc(&out.span);
    let (url, schema, database) = match kind.as_str() {
        "postgres" => {
            let host = get(&mut t, cx, "host", false).unwrap_or_else(|| "localhost".into());
            let port = get(&mut t, cx, "port", false).unwrap_or_else(|| "5432".into());
            let user = get(&mut t, cx, "user", false);
            let pass = get(&mut t, cx, "password", true).or_else(|| get(&mut t, cx, "pass", true));
            let db =
                get(&mut t, cx, "dbname", false).or_else(|| get(&mut t, cx, "database", false)).unwrap_or_default();
            let schema = get(&mut t, cx, "schema", false).unwrap_or_else(|| "public".into());
            if let Some(ct) = get(&mut t, cx, "connect_timeout", false) {
                params.push(format!("connect_timeout={ct}"));
            }
            if let Some(n) = t.node("sslmode")
                && let Some(m) = profile_value(n, cx, env, false)
                && !matches!(m.as_str(), "disable" | "allow" | "prefer")
            {
                cx.error(
                    n.span.clone(),
                    format!("sslmode `{m}` is not supported: sluice connects to PostgreSQL without TLS"),
                );
            }
            t.allow(&["keepalives_idle", "retries", "application_name", "search_path"]);
            params.insert(0, format!("schema={}", enc(&schema)));
            (format!("postgres://{}{host}:{port}/{db}", user_info(user, pass)), schema, db)
        }
        "mysql" | "mariadb" | "mysql5" => {
            let host = get(&mut t, cx, "server", false)
                .or_else(|| get(&mut t, cx, "host", false))
                .unwrap_or_else(|| "localhost".into());
            let port = get(&mut t, cx, "port", false).unwrap_or_else(|| "3306".into());
            let user = get(&mut t, cx, "username", false).or_else(|| get(&mut t, cx, "user", false));
            let pass = get(&mut t, cx, "password", true);
            let schema =
                get(&mut t, cx, "schema", false).or_else(|| get(&mut t, cx, "database", false)).unwrap_or_default();
            t.allow(&["ssl_disabled", "charset", "retries"]);
            (format!("mysql://{}{host}:{port}/{schema}", user_info(user, pass)), schema.clone(), schema)
        }
        "sqlite" => {
            let schema = get(&mut t, cx, "schema", false).unwrap_or_else(|| "main".into());
            let db = get(&mut t, cx, "database", false).unwrap_or_else(|| "database".into());
            let path =
                t.node("schemas_and_paths").and_then(|n| n.get(&schema)).and_then(|n| profile_value(n, cx, env, false));
            let Some(path) = path else {
                cx.error(
                    out.span.clone(),
                    format!("target `{name}`: schemas_and_paths has no path for schema `{schema}`"),
                );
                return None;
            };
            if let Some(n) = t.node("schemas_and_paths")
                && let V::Table(entries) = &n.v
                && entries.len() > 1
            {
                cx.error(n.span.clone(), "attaching several SQLite files is not supported: use one schema");
            }
            t.allow(&["schema_directory", "extensions"]);
            // Relative paths are relative to the project folder; `/abs` gives sqlite:///abs.
            let url = format!("sqlite://{path}");
            (url, schema, db)
        }
        "oracle" => {
            let host = get(&mut t, cx, "host", false).unwrap_or_default();
            let port = get(&mut t, cx, "port", false).unwrap_or_else(|| "1521".into());
            let user = get(&mut t, cx, "user", false);
            let pass = get(&mut t, cx, "password", true).or_else(|| get(&mut t, cx, "pass", true));
            let service =
                get(&mut t, cx, "service", false).or_else(|| get(&mut t, cx, "database", false)).unwrap_or_default();
            let schema = get(&mut t, cx, "schema", false).unwrap_or_default();
            let db = get(&mut t, cx, "database", false).unwrap_or_else(|| service.clone());
            for key in ["tns_name", "connection_string"] {
                if let Some(sp) = t.key_span(key) {
                    cx.error(sp, format!("`{key}` is not supported: give host, port and service"));
                }
            }
            t.allow(&["protocol", "tns_name", "connection_string", "retry_count", "retry_delay"]);
            (format!("oracle://{}{host}:{port}/{service}", user_info(user, pass)), schema, db)
        }
        other => {
            let n = t.node("type");
            let span = n.map(|n| n.span.clone()).unwrap_or(out.span.clone());
            cx.error(span, format!("target type `{other}` is not supported")).help =
                Some("sluice runs dbt projects on postgres, mysql/mariadb, sqlite and oracle".into());
            return None;
        }
    };
    t.finish(cx, |_| None);
    let url = if params.is_empty() { url } else { format!("{url}?{}", params.join("&")) };
    let file = cx.src.name.clone();
    let (l, c) = cx.src.line_col(out.span.start);
    Some((
        Spanned { v: url, loc },
        DbtTarget {
            profile: profile.to_string(),
            name,
            kind: if kind == "mysql5" { "mysql".into() } else { kind },
            schema,
            database,
            threads,
            file: format!("{file}:{l}:{c}"),
        },
    ))
}

/// Renders `{{ target.schema }}`, `{{ env_var(…) }}` and the like in a
/// schema file's value (dbt renders them there too).
pub fn render_value(text: &str, target: &DbtTarget, env: &Env) -> Result<String, String> {
    if !text.contains("{{") && !text.contains("{%") {
        return Ok(text.to_string());
    }
    let mut jenv = minijinja::Environment::new();
    let e = env.clone();
    jenv.add_function("env_var", move |name: String, default: Option<String>| {
        e.var(&name).or(default).ok_or_else(|| {
            minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, format!("env var `{name}` is not set"))
        })
    });
    let t = minijinja::context! {
        name => target.name.clone(),
        type => target.kind.clone(),
        schema => target.schema.clone(),
        database => target.database.clone(),
        threads => target.threads.unwrap_or(1),
        profile_name => target.profile.clone(),
    };
    jenv.render_str(text, minijinja::context! { target => t })
        .map_err(|err| format!("cannot render {text}: {}", err.detail().unwrap_or(&err.to_string())))
}

/// Percent-encodes a user name or literal password (references stay as written).
fn enc(s: &str) -> String {
    if crate::secret::has_refs(s) { s.to_string() } else { crate::secret::encode_userinfo(s) }
}

/// Parses `--vars` (YAML or JSON, as dbt takes it).
pub fn parse_vars(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let file = SourceFile::new("--vars".into(), PathBuf::from("--vars"), text.to_string());
    let node = super::yaml::parse(&file).map_err(|d| d.first().map(|d| d.message.clone()).unwrap_or_default())?;
    match node.to_json() {
        serde_json::Value::Object(m) => Ok(m),
        serde_json::Value::Null => Ok(Default::default()),
        _ => Err(format!("--vars takes a mapping such as '{{key: value}}', not {text}")),
    }
}

/// Merges what the `*.yml` files and the config trees say into `meta`, for
/// the models and seeds found. Returns the names disabled by `enabled: false`.
pub struct Merge<'a> {
    pub dbt: &'a DbtProject,
    pub yml: YmlMeta,
}

impl Merge<'_> {
    /// The model's config: the tree's (most specific folder wins), then the
    /// schema file's `config:`.
    pub fn model(&self, name: &str, rel: &Path, used: &mut Vec<Loc>) -> (Option<ModelMeta>, NodeConfig) {
        let parts = tree_parts(rel, &self.dbt.model_paths);
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut cfg = self.dbt.models.as_ref().map(|t| t.resolve(&parts, used)).unwrap_or_default();
        let yml = self.yml.models.iter().find(|(m, _)| m.name.v == name);
        if let Some((_, c)) = yml {
            cfg.merge(c);
        }
        (yml.map(|(m, _)| m.clone()), cfg)
    }

    pub fn seed(&self, name: &str, rel: &Path, used: &mut Vec<Loc>) -> NodeConfig {
        let parts = tree_parts(rel, &self.dbt.seed_paths);
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut cfg = self.dbt.seeds.as_ref().map(|t| t.resolve(&parts, used)).unwrap_or_default();
        if let Some((_, _, c)) = self.yml.seeds.iter().find(|(n, _, _)| n.v == name) {
            cfg.merge(c);
        }
        cfg
    }

    pub fn snapshot(&self, name: &str, rel: &Path, used: &mut Vec<Loc>) -> NodeConfig {
        let parts = tree_parts(rel, &self.dbt.snapshot_paths);
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut cfg = self.dbt.snapshots.as_ref().map(|t| t.resolve(&parts, used)).unwrap_or_default();
        if let Some((_, c)) = self.yml.snapshots.iter().find(|(n, _)| n.v == name) {
            cfg.merge(c);
        }
        cfg
    }
}

/// A model's metadata with its resolved config applied.
pub fn model_meta(name: &str, loc: Loc, yml: Option<ModelMeta>, cfg: &NodeConfig) -> ModelMeta {
    let mut m = yml.unwrap_or(ModelMeta {
        name: Spanned { v: name.to_string(), loc },
        description: None,
        materialized: None,
        unique_key: None,
        tags: Vec::new(),
        on_schema_change: None,
        publish: false,
        tests: Vec::new(),
        columns: Vec::new(),
        pre_hook: Vec::new(),
        post_hook: Vec::new(),
    });
    m.materialized = cfg.materialized;
    m.pre_hook = cfg.pre_hook.clone();
    m.post_hook = cfg.post_hook.clone();
    m.unique_key = cfg.unique_key.clone();
    m.tags = cfg.tags.clone();
    m.on_schema_change = cfg.on_schema_change;
    // dbt's `data_type` is documentation without an enforced contract.
    for c in &mut m.columns {
        c.column = None;
    }
    m
}

/// A seed's metadata: dbt's `column_types` name some columns; the rest are inferred.
pub fn seed_meta(
    name: &str,
    loc: Loc,
    cfg: &NodeConfig,
    cx_diags: &mut Vec<crate::error::Diagnostic>,
    sources: &super::tree::Sources,
) -> SeedMeta {
    let mut overrides = Vec::new();
    for (col, ty) in &cfg.column_types {
        match Column::parse_short(col, &ty.v) {
            Ok(c) => overrides.push(c),
            Err(e) => cx_diags.push(sources.diag(&ty.loc, format!("column `{col}` of seed `{name}`: {e}"))),
        }
    }
    SeedMeta {
        name: Spanned { v: name.to_string(), loc },
        columns: None,
        read: Default::default(),
        column_types: overrides,
    }
}

/// Reports config-tree entries that apply to no node (dbt warns about them too).
pub fn unused_paths(
    tree: Option<&ConfigTree>,
    used: &[Loc],
    sources: &super::tree::Sources,
    kind: &str,
    out: &mut Vec<crate::error::Diagnostic>,
) {
    let Some(tree) = tree else { return };
    let mut all = Vec::new();
    tree.places(&mut all);
    for (name, loc) in all {
        if !used.contains(&loc) {
            let mut d = sources.diag(&loc, format!("`{name}` in the {kind} config matches no folder or file"));
            d.severity = crate::error::Severity::Warning;
            out.push(d);
        }
    }
}

/// The `{% snapshot NAME %}` block of a dbt snapshot file: its name, and the
/// text with the block tags blanked (same length, so positions hold).
pub fn snapshot_block(text: &str) -> Option<(String, String)> {
    let open = find_tag(text, "snapshot")?;
    let name: String = text[open.clone()]
        .trim_start_matches("{%")
        .trim_end_matches("%}")
        .trim_matches(['-', ' ', '\n', '\t', '\r'])
        .strip_prefix("snapshot")?
        .trim()
        .to_string();
    let close = find_tag(text, "endsnapshot")?;
    let mut out = text.to_string();
    for r in [close, open] {
        let blank: String = text[r.clone()].chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
        out.replace_range(r, &blank);
    }
    Some((name, out))
}

fn find_tag(text: &str, word: &str) -> Option<std::ops::Range<usize>> {
    let mut from = 0;
    while let Some(i) = text[from..].find("{%") {
        let start = from + i;
        let end = text[start..].find("%}").map(|j| start + j + 2)?;
        let inner = text[start + 2..end - 2].trim_matches(['-', '+', ' ', '\n', '\t', '\r']);
        if inner == word || inner.starts_with(&format!("{word} ")) {
            return Some(start..end);
        }
        from = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tree::{FileId, SourceFile};
    use super::*;

    fn cx_run<T>(name: &str, text: &str, f: impl FnOnce(&Node, &mut Cx) -> T) -> (T, Vec<String>) {
        let file = SourceFile::new(name.into(), name.into(), text.into());
        let root = super::super::yaml::parse(&file).unwrap();
        let mut cx = Cx::new(FileId(0), &file);
        let out = f(&root, &mut cx);
        (out, cx.diags.iter().map(|d| d.headline()).collect())
    }

    #[test]
    fn project_file_paths_vars_and_config_trees() {
        let (p, errs) = cx_run(
            "dbt_project.yml",
            "name: jaffle\nversion: '1.0'\nprofile: jaffle\nmodel-paths: [\"models\"]\nvars:\n  a: 1\n  jaffle:\n    b: x\nmodels:\n  jaffle:\n    +materialized: table\n    staging:\n      materialized: view\n      +tags: [stg]\n      stg_orders:\n        +enabled: false\non-run-end: [\"x\", \"y\"]\non-run-start: \"z\"\nquoting: {}\n",
            decode_project,
        );
        assert_eq!(errs, vec!["dbt_project.yml:19:1: unknown key `quoting` in dbt_project.yml"]);
        let end: Vec<&str> = p.hooks.end.iter().map(|h| h.v.as_str()).collect();
        assert_eq!(end, vec!["x", "y"]);
        assert_eq!(p.hooks.start.iter().map(|h| h.v.as_str()).collect::<Vec<_>>(), vec!["z"]);
        assert_eq!(p.vars.get("a"), Some(&serde_json::json!(1)));
        assert_eq!(p.vars.get("b"), Some(&serde_json::json!("x")));
        let t = p.models.unwrap();
        let mut used = Vec::new();
        let c = t.resolve(&["staging", "stg_orders"], &mut used);
        assert_eq!(c.materialized, Some(Materialized::View));
        assert_eq!(c.tags, vec!["stg"]);
        assert_eq!(c.enabled, Some(false));
        assert_eq!(used.len(), 3);
        let c = t.resolve(&["marts", "orders"], &mut Vec::new());
        assert_eq!(c.materialized, Some(Materialized::Table));
    }

    #[test]
    fn schema_files_tests_flat_and_under_arguments() {
        let (meta, errs) = cx_run(
            "models/schema.yml",
            r#"version: 2
models:
  - name: orders
    description: One row per order
    config:
      materialized: table
    columns:
      - name: order_id
        tests: [unique, not_null]
      - name: status
        data_tests:
          - accepted_values:
              values: ['placed', 'shipped']
              config:
                severity: warn
      - name: customer_id
        data_tests:
          - relationships:
              arguments:
                to: ref('customers')
                field: customer_id
      - name: amount
        tests:
          - dbt_utils.accepted_range: {min_value: 0}
          - not_nul
        colour: red
sources:
  - name: raw
    schema: raw_data
    loaded_at_field: _loaded_at
    freshness: {warn_after: {count: 12, period: hour}}
    tables:
      - name: orders
        identifier: raw_orders
"#,
            |root, cx| {
                let mut m = YmlMeta::default();
                decode_yml(root, cx, &mut m);
                m
            },
        );
        assert_eq!(
            errs,
            vec![
                "models/schema.yml:24:13: test `dbt_utils.accepted_range` comes from a package; sluice runs no dbt packages",
                "models/schema.yml:25:13: unknown test `not_nul`",
                "models/schema.yml:26:9: unknown key `colour` in column `amount`",
            ]
        );
        let (m, cfg) = &meta.models[0];
        assert_eq!(cfg.materialized, Some(Materialized::Table));
        assert_eq!(m.columns[0].tests.len(), 2);
        let names: Vec<&str> =
            m.columns.iter().flat_map(|c| c.tests.iter()).filter_map(|t| t.name.as_deref()).collect();
        assert_eq!(
            names,
            vec![
                "unique_orders_order_id",
                "not_null_orders_order_id",
                "accepted_values_orders_status__placed__shipped",
                "relationships_orders_customer_id__customer_id__ref_customers_",
            ]
        );
        assert_eq!(m.columns[1].tests[0].severity, TestSeverity::Warn);
        assert_eq!(m.columns[1].tests[0].kind, TestKind::AcceptedValues(vec!["placed".into(), "shipped".into()]));
        assert_eq!(
            m.columns[2].tests[0].kind,
            TestKind::Relationships { to: "customers".into(), field: "customer_id".into() }
        );
        let s = &meta.sources[0];
        assert_eq!(s.schema.as_deref(), Some("raw_data"));
        assert_eq!(s.identifiers.get("orders").map(String::as_str), Some("raw_orders"));
        let fr = s.freshness.get("orders").unwrap();
        assert_eq!(fr.loaded_at_field.as_deref(), Some("_loaded_at"));
        assert_eq!(fr.warn_after.as_ref().map(After::duration), Some(std::time::Duration::from_secs(12 * 3600)));
    }

    #[test]
    fn run_hooks_that_cannot_parse_are_placed() {
        let (p, errs) = cx_run(
            "dbt_project.yml",
            "name: x\non-run-start:\n  - \"select 1\"\n  - \"{{ f('a' }}\"\non-run-end: 7\n",
            decode_project,
        );
        assert_eq!(
            errs,
            vec![
                "dbt_project.yml:4:5: `on-run-start` is not a valid template: unexpected `}`, expected `,`",
                "dbt_project.yml:5:13: wrong type for `on-run-end`: expected a SQL statement or a list of them, found an integer",
            ]
        );
        assert_eq!(p.hooks.start.len(), 2);
    }

    #[test]
    fn source_freshness_merges_tables_over_sources() {
        let (meta, errs) = cx_run(
            "models/sources.yml",
            r#"sources:
  - name: shop
    loaded_at_field: _loaded_at
    config:
      freshness:
        warn_after: {count: 6, period: hour}
        error_after: {count: 1, period: day}
    tables:
      - name: orders
      - name: items
        loaded_at_field: updated_at
        freshness:
          warn_after: {count: 30, period: minute}
          filter: "kind = 'x'"
      - name: notes
        freshness: null
      - name: bad
        freshness:
          warn_after: {count: 2, period: week}
          error_after: {count: 3}
          colour: red
"#,
            |root, cx| {
                let mut m = YmlMeta::default();
                decode_yml(root, cx, &mut m);
                m
            },
        );
        assert_eq!(
            errs,
            vec![
                "models/sources.yml:19:42: invalid period `week`: expected minute, hour or day",
                "models/sources.yml:20:24: `error_after` needs both `count` and `period`",
                "models/sources.yml:21:11: unknown key `colour` in freshness",
            ]
        );
        let f = &meta.sources[0].freshness;
        let after = |count: u64, period: &str| Some(After { count, period: period.into() });
        let orders = f.get("orders").unwrap();
        assert_eq!(orders.loaded_at_field.as_deref(), Some("_loaded_at"));
        assert_eq!((orders.warn_after.clone(), orders.error_after.clone()), (after(6, "hour"), after(1, "day")));
        let items = f.get("items").unwrap();
        assert_eq!(items.loaded_at_field.as_deref(), Some("updated_at"));
        assert_eq!((items.warn_after.clone(), items.error_after.clone()), (after(30, "minute"), after(1, "day")));
        assert_eq!(items.filter.as_deref(), Some("kind = 'x'"));
        assert!(!f.contains_key("notes"));
        let got = doc_blocks("intro\n{% docs a %}\n  One.\n{% enddocs %}\n{%- docs b -%}Two{%- enddocs -%}").unwrap();
        let names: Vec<(&str, &str)> = got.iter().map(|b| (b.name.as_str(), b.text.as_str())).collect();
        assert_eq!(names, vec![("a", "One."), ("b", "Two")]);
        assert_eq!(
            doc_blocks("x {% docs a %} y").unwrap_err(),
            (2..14, "doc block `a` has no {% enddocs %}".to_string())
        );
        assert_eq!(doc_call("{{ doc('a') }}").as_deref(), Some("a"));
        assert_eq!(doc_call("{{- doc(\"proj\", \"b\") -}}").as_deref(), Some("b"));
        assert_eq!(doc_call("{{ var('a') }}"), None);
    }

    #[test]
    fn profiles_become_connection_urls() {
        // SAFETY: no other test reads this variable.
        let env = Env::default();
        let (r, errs) = cx_run(
            "profiles.yml",
            "jaffle:\n  target: dev\n  outputs:\n    dev:\n      type: postgres\n      host: 127.0.0.1\n      user: postgres\n      password: \"{{ env_var('SLUICE_TEST_NOPE_PW') }}\"\n      port: 5432\n      dbname: test\n      schema: jaffle\n      threads: 4\n    lite:\n      type: sqlite\n      threads: 1\n      database: database\n      schema: main\n      schemas_and_paths:\n        main: dev.db\n    maria:\n      type: mysql\n      server: localhost\n      username: root\n      password: 'p@ss'\n      schema: shop\n    bad:\n      type: snowflake\n",
            |root, cx| {
                let a =
                    decode_profiles(root, cx, &env, "jaffle", None).map(|(u, t)| (u.v, t.kind, t.schema, t.threads));
                let b = decode_profiles(root, cx, &env, "jaffle", Some("lite")).map(|(u, _)| u.v);
                let c = decode_profiles(root, cx, &env, "jaffle", Some("maria")).map(|(u, _)| u.v);
                let d = decode_profiles(root, cx, &env, "jaffle", Some("bad")).map(|(u, _)| u.v);
                let e = decode_profiles(root, cx, &env, "jaffle", Some("prod")).map(|(u, _)| u.v);
                (a, b, c, d, e)
            },
        );
        assert_eq!(
            r.0,
            Some((
                "postgres://postgres:${env:SLUICE_TEST_NOPE_PW}@127.0.0.1:5432/test?schema=jaffle".to_string(),
                "postgres".to_string(),
                "jaffle".to_string(),
                Some(4)
            ))
        );
        assert_eq!(r.1.as_deref(), Some("sqlite://dev.db"));
        assert_eq!(r.2.as_deref(), Some("mysql://root:p%40ss@localhost:3306/shop"));
        assert_eq!(r.3, None);
        assert_eq!(r.4, None);
        assert_eq!(
            errs,
            vec![
                "profiles.yml:27:13: target type `snowflake` is not supported",
                "profiles.yml:4:5: profile `jaffle` has no target `prod`",
            ]
        );
    }

    #[test]
    fn snapshot_blocks_and_vars() {
        let (name, text) = snapshot_block("{% snapshot orders_snap %}\nselect 1\n{% endsnapshot %}\n").unwrap();
        assert_eq!(name, "orders_snap");
        assert_eq!(text.lines().nth(1), Some("select 1"));
        assert!(!text.contains("{%"));
        assert_eq!(parse_vars("{start: '2024-01-01', n: 3}").unwrap().get("n"), Some(&serde_json::json!(3)));
        assert_eq!(parse_vars("{\"a\": [1, 2]}").unwrap().get("a"), Some(&serde_json::json!([1, 2])));
        assert_eq!(ref_target("ref('customers')").as_deref(), Some("customers"));
        assert_eq!(ref_target("source('raw', 'orders')").as_deref(), Some("orders"));
    }
}
