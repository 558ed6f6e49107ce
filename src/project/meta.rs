//! What a project says about its models, seeds, snapshots and sources beside
//! the SQL: the `*.toml` files under `models/` (dbt users know them as
//! `schema.yml`). Model configuration, column types (a contract the built table
//! follows), descriptions and data tests; source tables; seed columns.

use super::config::{MATERIALIZED, Materialized, decode_columns, decode_read_options, string_or_list};
use super::tree::{Cx, Dur, Fields, Loc, Node, Spanned, V, one_of};
use crate::types::{Column, Schema};

/// Everything the `models/**/*.toml` files declare.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub models: Vec<ModelMeta>,
    pub sources: Vec<SourceMeta>,
    pub seeds: Vec<SeedMeta>,
    /// dbt's `{% docs %}` blocks by name (already put into the descriptions
    /// that call them; kept for the manifest's `docs`).
    pub docs: std::collections::BTreeMap<String, String>,
}

impl Meta {
    pub fn model(&self, name: &str) -> Option<&ModelMeta> {
        self.models.iter().find(|m| m.name.v == name)
    }

    pub fn seed(&self, name: &str) -> Option<&SeedMeta> {
        self.seeds.iter().find(|m| m.name.v == name)
    }
}

/// How an incremental model reacts when its query's columns change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSchemaChange {
    /// Stop with the difference.
    Fail,
    /// Add new columns to the table; keep the others.
    AppendNewColumns,
    /// Add new columns and drop the ones the query no longer has.
    SyncAllColumns,
    /// Load only the columns the table has.
    Ignore,
}

/// The names of `on_schema_change` values.
pub const ON_SCHEMA_CHANGE_NAMES: &[&str] = &["fail", "append_new_columns", "sync_all_columns", "ignore"];

pub const ON_SCHEMA_CHANGE: &[(&str, OnSchemaChange)] = &[
    ("fail", OnSchemaChange::Fail),
    ("append_new_columns", OnSchemaChange::AppendNewColumns),
    ("sync_all_columns", OnSchemaChange::SyncAllColumns),
    ("ignore", OnSchemaChange::Ignore),
];

#[derive(Debug, Clone)]
pub struct ModelMeta {
    pub name: Spanned<String>,
    pub description: Option<String>,
    pub materialized: Option<Materialized>,
    pub unique_key: Option<Vec<String>>,
    pub tags: Vec<String>,
    pub on_schema_change: Option<OnSchemaChange>,
    /// Served read-only at `GET /api/data/{model}` (and charted).
    pub publish: bool,
    /// Model-level tests (row_count, expression, …).
    pub tests: Vec<TestSpec>,
    pub columns: Vec<ColumnMeta>,
    /// dbt's `pre-hook`/`post-hook`: SQL run before and after the build.
    pub pre_hook: Vec<String>,
    pub post_hook: Vec<String>,
}

impl ModelMeta {
    /// The declared column types, when every listed column has one (a contract).
    pub fn contract(&self) -> Option<Schema> {
        if self.columns.is_empty() || self.columns.iter().any(|c| c.column.is_none()) {
            return None;
        }
        Some(Schema::new(self.columns.iter().filter_map(|c| c.column.clone()).collect()))
    }
}

#[derive(Debug, Clone)]
pub struct ColumnMeta {
    pub name: Spanned<String>,
    pub description: Option<String>,
    /// The column's declared type, when given.
    pub column: Option<Column>,
    pub tests: Vec<TestSpec>,
}

/// A table that exists outside the project (`source('name', 'table')`).
#[derive(Debug, Clone)]
pub struct SourceMeta {
    pub name: Spanned<String>,
    /// The database schema the tables are in (the connection's default when absent).
    pub schema: Option<String>,
    pub tables: Vec<Spanned<String>>,
    /// A table's name in the database when it differs (dbt's `identifier`).
    pub identifiers: std::collections::BTreeMap<String, String>,
    /// How fresh each table must be (dbt's `freshness`), by table name.
    pub freshness: std::collections::BTreeMap<String, super::dbt::Freshness>,
    /// The source's description (dbt's schema files).
    pub description: Option<String>,
    /// Each table's description, by table name.
    pub table_descriptions: std::collections::BTreeMap<String, String>,
}

impl SourceMeta {
    /// The name of `table` in the database.
    pub fn identifier<'a>(&'a self, table: &'a str) -> &'a str {
        self.identifiers.get(table).map(String::as_str).unwrap_or(table)
    }
}

#[derive(Debug, Clone)]
pub struct SeedMeta {
    pub name: Spanned<String>,
    pub columns: Option<Schema>,
    pub read: super::config::ReadOptions,
    /// Types of some columns (dbt's `column_types`); the others are inferred.
    pub column_types: Vec<Column>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestSeverity {
    Error,
    Warn,
}

/// One data test, declared on a model or a column.
#[derive(Debug, Clone)]
pub struct TestSpec {
    pub loc: Loc,
    pub kind: TestKind,
    pub severity: TestSeverity,
    /// The name the project gave the test (dbt's `name:`), else one is made up.
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TestKind {
    NotNull,
    Unique,
    AcceptedValues(Vec<String>),
    /// Every non-null value is in `to`.`field`.
    Relationships {
        to: String,
        field: String,
    },
    /// A condition every row meets.
    Expression(String),
    RowCount {
        min: Option<u64>,
        max: Option<u64>,
    },
    /// The newest value of a timestamp column is no older than this.
    Freshness {
        max_age: std::time::Duration,
    },
}

impl TestKind {
    pub fn name(&self) -> &'static str {
        match self {
            TestKind::NotNull => "not_null",
            TestKind::Unique => "unique",
            TestKind::AcceptedValues(_) => "accepted_values",
            TestKind::Relationships { .. } => "relationships",
            TestKind::Expression(_) => "expression",
            TestKind::RowCount { .. } => "row_count",
            TestKind::Freshness { .. } => "freshness",
        }
    }

    /// Whether it is about one column (else the whole model).
    pub fn needs_column(&self) -> bool {
        matches!(
            self,
            TestKind::NotNull
                | TestKind::Unique
                | TestKind::AcceptedValues(_)
                | TestKind::Relationships { .. }
                | TestKind::Freshness { .. }
        )
    }
}

pub const TEST_KINDS: &[&str] =
    &["not_null", "unique", "accepted_values", "relationships", "expression", "row_count", "freshness"];

pub const MODEL_META_KEYS: &[&str] =
    &["description", "materialized", "unique_key", "tags", "on_schema_change", "publish", "tests", "columns"];
pub const COLUMN_META_KEYS: &[&str] = &["description", "type", "nullable", "format", "tests"];

/// Decodes one `models/**/*.toml` file into `meta`.
pub fn decode_meta(root: &Node, cx: &mut Cx, meta: &mut Meta) {
    let Some(mut t) = Fields::new(root, cx, "the models file") else { return };
    if let Some(node) = t.node("models") {
        for (key, value) in entries(node, cx, "models") {
            if let Some(m) = decode_model(key, value, cx) {
                meta.models.push(m);
            }
        }
    }
    if let Some(node) = t.node("sources") {
        for (key, value) in entries(node, cx, "sources") {
            let Some(mut f) = Fields::new(value, cx, format!("source `{}`", key.0)) else { continue };
            let schema = f.opt(cx, "schema");
            let tables: Vec<Spanned<String>> = f.req(cx, "tables").unwrap_or_default();
            f.finish(cx, |_| None);
            meta.sources.push(SourceMeta {
                name: Spanned { v: key.0.clone(), loc: key.1.clone() },
                schema,
                tables,
                identifiers: Default::default(),
                freshness: Default::default(),
                description: None,
                table_descriptions: Default::default(),
            });
        }
    }
    if let Some(node) = t.node("seeds") {
        for (key, value) in entries(node, cx, "seeds") {
            let Some(mut f) = Fields::new(value, cx, format!("seed `{}`", key.0)) else { continue };
            let columns = f.node("columns").and_then(|n| decode_columns(n, cx)).map(|s| s.v);
            let read = decode_read_options(&mut f, cx);
            f.finish(cx, |_| None);
            meta.seeds.push(SeedMeta {
                name: Spanned { v: key.0.clone(), loc: key.1.clone() },
                columns,
                read,
                column_types: Vec::new(),
            });
        }
    }
    t.finish(cx, |_| None);
}

/// The `(name, place)` and value of each entry of a table.
fn entries<'n>(node: &'n Node, cx: &mut Cx, what: &str) -> Vec<((String, Loc), &'n Node)> {
    match &node.v {
        V::Table(t) => t.iter().map(|(k, v)| ((k.name.clone(), cx.loc(&k.span)), v)).collect(),
        _ => {
            cx.error(
                node.span.clone(),
                format!("wrong type for `{what}`: expected a table, found {}", node.type_name()),
            );
            Vec::new()
        }
    }
}

fn decode_model(key: (String, Loc), node: &Node, cx: &mut Cx) -> Option<ModelMeta> {
    let mut f = Fields::new(node, cx, format!("model `{}`", key.0))?;
    let description = f.opt(cx, "description");
    let materialized = f.node("materialized").and_then(|n| one_of(n, cx, "materialized", MATERIALIZED));
    let unique_key = f.node("unique_key").and_then(|n| string_or_list(n, cx, "unique_key"));
    let tags = f.node("tags").and_then(|n| string_or_list(n, cx, "tags")).unwrap_or_default();
    let on_schema_change = f.node("on_schema_change").and_then(|n| one_of(n, cx, "on_schema_change", ON_SCHEMA_CHANGE));
    let publish = f.opt(cx, "publish").unwrap_or(false);
    let tests = f.node("tests").map(|n| decode_tests(n, cx, false)).unwrap_or_default();
    let mut columns = Vec::new();
    if let Some(node) = f.node("columns") {
        for ((name, loc), value) in entries(node, cx, "columns") {
            let Some(mut c) = Fields::new(value, cx, format!("column `{name}`")) else { continue };
            let description = c.opt(cx, "description");
            let ty: Option<Spanned<String>> = c.opt(cx, "type");
            let nullable: Option<bool> = c.opt(cx, "nullable");
            let format: Option<String> = c.opt(cx, "format");
            let tests = c.node("tests").map(|n| decode_tests(n, cx, true)).unwrap_or_default();
            c.finish(cx, |_| None);
            let column = match ty {
                Some(t) => match Column::parse_short(&name, &t.v) {
                    Ok(mut col) => {
                        if let Some(n) = nullable {
                            col.nullable = n;
                        }
                        col.format = format;
                        Some(col)
                    }
                    Err(e) => {
                        cx.error(t.loc.start as usize..t.loc.end as usize, format!("column `{name}`: {e}"));
                        None
                    }
                },
                None => None,
            };
            columns.push(ColumnMeta { name: Spanned { v: name, loc }, description, column, tests });
        }
    }
    f.finish(cx, |k| match k {
        "schema" | "alias" | "database" => {
            Some(format!("`{k}` is not supported; models are built where the step's connection points"))
        }
        _ => None,
    });
    Some(ModelMeta {
        name: Spanned { v: key.0, loc: key.1 },
        description,
        materialized,
        unique_key,
        tags,
        on_schema_change,
        publish,
        tests,
        columns,
        pre_hook: Vec::new(),
        post_hook: Vec::new(),
    })
}

/// Decodes `tests = ["not_null", { accepted_values = { values = [...] } }, …]`.
fn decode_tests(node: &Node, cx: &mut Cx, on_column: bool) -> Vec<TestSpec> {
    let V::Array(items) = &node.v else {
        cx.error(node.span.clone(), format!("wrong type for `tests`: expected an array, found {}", node.type_name()));
        return Vec::new();
    };
    let mut out = Vec::new();
    for it in items {
        let loc = cx.loc(&it.span);
        let (name, args): (String, Option<&Node>) = match &it.v {
            V::Str(s) => (s.clone(), None),
            V::Table(t) if t.len() == 1 => (t[0].0.name.clone(), Some(&t[0].1)),
            _ => {
                cx.error(it.span.clone(), "a test is a name (\"not_null\") or a table with one key ({ accepted_values = { values = [\"a\"] } })");
                continue;
            }
        };
        let mut severity = TestSeverity::Error;
        let mut fields = match args {
            Some(a) => match Fields::new(a, cx, format!("test `{name}`")) {
                Some(f) => Some(f),
                None => continue,
            },
            None => None,
        };
        if let Some(f) = fields.as_mut()
            && let Some(n) = f.node("severity")
        {
            severity = one_of(n, cx, "severity", &[("error", TestSeverity::Error), ("warn", TestSeverity::Warn)])
                .unwrap_or(TestSeverity::Error);
        }
        let need = |f: &mut Option<Fields>, cx: &mut Cx, what: &str| -> bool {
            if f.is_none() {
                cx.error(it.span.clone(), format!("test `{name}` needs arguments: {{ {name} = {{ {what} }} }}"));
                false
            } else {
                true
            }
        };
        let kind = match name.as_str() {
            "not_null" => Some(TestKind::NotNull),
            "unique" => Some(TestKind::Unique),
            "accepted_values" => {
                if need(&mut fields, cx, "values = [\"a\", \"b\"]") {
                    let f = fields.as_mut().expect("checked");
                    f.req::<Vec<Node>>(cx, "values")
                        .map(|vs| vs.iter().map(scalar_text).collect())
                        .map(TestKind::AcceptedValues)
                } else {
                    None
                }
            }
            "relationships" => {
                if need(&mut fields, cx, "to = \"model\", field = \"column\"") {
                    let f = fields.as_mut().expect("checked");
                    let to: Option<String> = f.req(cx, "to");
                    let field: Option<String> = f.req(cx, "field");
                    to.zip(field).map(|(to, field)| TestKind::Relationships { to, field })
                } else {
                    None
                }
            }
            "expression" => {
                if need(&mut fields, cx, "expr = \"amount >= 0\"") {
                    fields.as_mut().expect("checked").req::<String>(cx, "expr").map(TestKind::Expression)
                } else {
                    None
                }
            }
            "row_count" => {
                if need(&mut fields, cx, "min = 1, max = 1000") {
                    let f = fields.as_mut().expect("checked");
                    let min = f.opt(cx, "min");
                    let max = f.opt(cx, "max");
                    if min.is_none() && max.is_none() {
                        cx.error(it.span.clone(), "row_count needs `min`, `max` or both");
                    }
                    Some(TestKind::RowCount { min, max })
                } else {
                    None
                }
            }
            "freshness" => {
                if need(&mut fields, cx, "max_age = \"24h\"") {
                    fields
                        .as_mut()
                        .expect("checked")
                        .req::<Dur>(cx, "max_age")
                        .map(|d| TestKind::Freshness { max_age: d.0 })
                } else {
                    None
                }
            }
            other => {
                let d = cx.error(it.span.clone(), format!("unknown test `{other}`"));
                d.help = crate::error::suggest(other, TEST_KINDS);
                None
            }
        };
        if let Some(f) = fields {
            f.finish(cx, |_| None);
        }
        let Some(kind) = kind else { continue };
        let either = matches!(kind, TestKind::Expression(_));
        if !either && kind.needs_column() != on_column {
            let msg = if on_column {
                format!("test `{name}` checks a whole model: list it in the model's `tests`, not a column's")
            } else {
                format!("test `{name}` checks a column: list it under [models.NAME.columns.COLUMN]")
            };
            cx.error(it.span.clone(), msg);
            continue;
        }
        out.push(TestSpec { loc, kind, severity, name: None });
    }
    out
}

fn scalar_text(n: &Node) -> String {
    match &n.v {
        V::Str(s) | V::Datetime(s) => s.clone(),
        V::Int(i) => i.to_string(),
        V::Float(f) => f.to_string(),
        V::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::{FileId, SourceFile, parse};
    use super::*;

    fn decode(text: &str) -> (Meta, Vec<String>) {
        let f = SourceFile::new("models/schema.toml".into(), "x".into(), text.into());
        let root = parse(&f).unwrap();
        let mut cx = Cx::new(FileId(0), &f);
        let mut meta = Meta::default();
        decode_meta(&root, &mut cx, &mut meta);
        (meta, cx.diags.iter().map(|d| d.headline()).collect())
    }

    #[test]
    fn models_columns_tests_sources_seeds() {
        let (m, errs) = decode(
            r#"
[models.stg_sales]
materialized = "incremental"
unique_key = "sale_id"
tags = ["staging", "daily"]
tests = [{ row_count = { min = 1 } }, { expression = { expr = "quantity > 0", severity = "warn" } }]

[models.stg_sales.columns.sale_id]
type = "bigint"
tests = ["not_null", "unique"]

[models.stg_sales.columns.channel]
type = "varchar(16)"
tests = [{ accepted_values = { values = ["online", "in_store"] } }]

[sources.raw]
schema = "raw"
tables = ["online_sales"]

[seeds.products.columns]
product_id = "integer"
"#,
        );
        assert_eq!(errs, Vec::<String>::new());
        let s = &m.models[0];
        assert_eq!(s.materialized, Some(Materialized::Incremental));
        assert_eq!(s.unique_key.as_deref(), Some(&["sale_id".to_string()][..]));
        assert_eq!(s.tests.len(), 2);
        assert_eq!(s.tests[1].severity, TestSeverity::Warn);
        assert_eq!(s.columns[1].tests[0].kind, TestKind::AcceptedValues(vec!["online".into(), "in_store".into()]));
        assert_eq!(s.contract().unwrap().names(), vec!["sale_id", "channel"]);
        assert_eq!(m.sources[0].tables[0].v, "online_sales");
        assert!(m.seed("products").unwrap().columns.is_some());
    }

    #[test]
    fn mistakes_are_reported() {
        let (_, errs) = decode(
            r#"
[models.m]
materialised = "view"
tests = ["not_null"]
[models.m.columns.a]
tests = ["uniq", { accepted_values = { vals = ["x"] } }, "row_count"]
"#,
        );
        assert_eq!(
            errs,
            vec![
                "models/schema.toml:4:10: test `not_null` checks a column: list it under [models.NAME.columns.COLUMN]",
                "models/schema.toml:6:10: unknown test `uniq`",
                "models/schema.toml:6:38: missing key `values` in test `accepted_values`",
                "models/schema.toml:6:40: unknown key `vals` in test `accepted_values`",
                "models/schema.toml:6:58: test `row_count` needs arguments: { row_count = { min = 1, max = 1000 } }",
                "models/schema.toml:3:1: unknown key `materialised` in model `m`",
            ]
        );
    }
}
