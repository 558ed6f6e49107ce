//! Renders SQL files (models, snapshots, tests) with Jinja-style templates
//! (minijinja): `ref()`, `source()`, `var()`, `config()`, `this`,
//! `is_incremental()` and the project's macros (`macros/*.sql`, callable from
//! every model). The refs and sources a file uses are recorded while it renders
//! (as dbt does) and become the edges of the DAG. This module does not know
//! databases: the caller says how a name is written in SQL.

use std::sync::{Arc, Mutex};

use minijinja::value::{Kwargs, Object};
use minijinja::{Environment, ErrorKind, State, UndefinedBehavior, Value};

use crate::project::{MATERIALIZED, Materialized, ON_SCHEMA_CHANGE_NAMES};

/// Turns a model or table name into the SQL that names it (quoted, maybe qualified).
pub type RelationFn = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// How a render names what it refers to.
pub trait Resolve: Send + Sync {
    /// `ref('name')`.
    fn model(&self, name: &str) -> String;
    /// `source('source', 'table')`.
    fn source(&self, source: &str, table: &str) -> String;
    /// The run a render is for (`{{ logical_date }}`, `{{ run_id }}`).
    fn run(&self) -> RunVars {
        RunVars::default()
    }
}

/// What templates know about the run they are rendered for.
#[derive(Debug, Clone, Default)]
pub struct RunVars {
    /// `YYYY-MM-DD`: the run's logical date, or today in the project's time
    /// zone outside a run. Every render that makes SQL to send sets it; only
    /// checking (which renders for the `ref()`s) leaves it empty.
    pub logical_date: String,
    /// Empty outside a run.
    pub run_id: String,
}

/// A resolver that only quotes (for checking and compiling without a connection).
pub struct Quoting(pub RelationFn);

impl Resolve for Quoting {
    fn model(&self, name: &str) -> String {
        (self.0)(name)
    }
    fn source(&self, _source: &str, table: &str) -> String {
        (self.0)(table)
    }
}

/// What one render of a file may see.
#[derive(Clone)]
pub struct Call {
    pub resolve: Arc<dyn Resolve>,
    /// `{{ this }}`: the file's own relation.
    pub this: String,
    pub is_incremental: bool,
}

/// A rendered file and what it declared while rendering.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub sql: String,
    /// Names passed to `ref()`, in first-use order, without repeats.
    pub refs: Vec<String>,
    /// `(source, table)` pairs passed to `source()`.
    pub sources: Vec<(String, String)>,
    pub config: FileConfig,
}

/// `config(…)` of a file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileConfig {
    pub materialized: Option<Materialized>,
    pub unique_key: Option<Vec<String>>,
    pub tags: Vec<String>,
    pub on_schema_change: Option<String>,
    /// Snapshots: `timestamp` or `check`.
    pub strategy: Option<String>,
    pub updated_at: Option<String>,
    pub check_cols: Option<Vec<String>>,
    pub invalidate_hard_deletes: Option<bool>,
    /// dbt's `schema`/`target_schema`: read, not applied yet (reported by validation).
    pub schema: Option<String>,
    /// Singular tests: `error` or `warn`.
    pub severity: Option<String>,
}

/// A template problem, at a line of the file when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// The file the problem is in (a macro file, for errors inside a macro).
    pub file: Option<String>,
    pub line: Option<usize>,
    /// Byte range in that file, when known.
    pub range: Option<std::ops::Range<usize>>,
    pub message: String,
}

/// The recorder a render's functions write into (reached through the context).
#[derive(Debug, Default)]
struct Recorder {
    refs: Vec<String>,
    sources: Vec<(String, String)>,
    config: FileConfig,
}

struct Session {
    recorder: Mutex<Recorder>,
    resolve: Arc<dyn Resolve>,
    is_incremental: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session")
    }
}

impl Object for Session {}

impl Session {
    fn resolver(&self) -> &dyn Resolve {
        self.resolve.as_ref()
    }
}

fn session(state: &State) -> Result<Arc<Session>, minijinja::Error> {
    state.lookup("__sluice").and_then(|v| v.downcast_object::<Session>()).ok_or_else(|| {
        minijinja::Error::new(ErrorKind::InvalidOperation, "ref() and friends work only in sluice's SQL files")
    })
}

fn strings(v: &Value) -> Result<Vec<String>, minijinja::Error> {
    if let Some(s) = v.as_str() { Ok(vec![s.to_string()]) } else { Ok(v.try_iter()?.map(|x| x.to_string()).collect()) }
}

/// Renders a project's SQL files; built once per run (macros are compiled once).
pub struct Renderer {
    env: Environment<'static>,
    /// Imports every macro, on one line so the files' line numbers stay right.
    header: String,
}

/// The macro names a macro file defines (`{% macro name(...) %}`).
pub fn macro_names(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(i) = rest.find("{%") {
        let after = rest[i + 2..].trim_start_matches(['-', '+']).trim_start();
        if let Some(m) = after.strip_prefix("macro") {
            let name: String = m.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
        rest = &rest[i + 2..];
    }
    out
}

impl Renderer {
    /// `macros` are `(file name, source)` pairs; `vars` are the project's `[vars]`.
    pub fn new(
        macros: &[(String, String)],
        vars: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Renderer, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .expect("the default delimiters are valid"),
        );
        env.add_function("ref", |state: &State, target: String| -> Result<String, minijinja::Error> {
            let s = session(state)?;
            let mut g = s.recorder.lock().expect("recorder lock");
            if !g.refs.contains(&target) {
                g.refs.push(target.clone());
            }
            Ok(s.resolver().model(&target))
        });
        env.add_function("source", |state: &State, src: String, table: String| -> Result<String, minijinja::Error> {
            let s = session(state)?;
            let mut g = s.recorder.lock().expect("recorder lock");
            let pair = (src.clone(), table.clone());
            if !g.sources.contains(&pair) {
                g.sources.push(pair);
            }
            Ok(s.resolver().source(&src, &table))
        });
        env.add_function("var", move |key: String, default: Option<Value>| -> Result<Value, minijinja::Error> {
            match vars.get(&key) {
                Some(v) => Ok(Value::from(minijinja::value::Serde(v.clone()))),
                None => default.ok_or_else(|| {
                    minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!("var `{key}` is not set: add it under [vars] in sluice.toml or give a default, var('{key}', …)"),
                    )
                }),
            }
        });
        env.add_function("is_incremental", |state: &State| -> Result<bool, minijinja::Error> {
            Ok(session(state)?.is_incremental)
        });
        env.add_function("config", |state: &State, kwargs: Kwargs| -> Result<String, minijinja::Error> {
            let s = session(state)?;
            let mut g = s.recorder.lock().expect("recorder lock");
            for key in kwargs.args() {
                let bad = |msg: String| minijinja::Error::new(ErrorKind::InvalidOperation, msg);
                match key {
                    "materialized" => {
                        let m: String = kwargs.get(key)?;
                        let Some((_, v)) = MATERIALIZED.iter().find(|(n, _)| *n == m) else {
                            let names: Vec<&str> = MATERIALIZED.iter().map(|(n, _)| *n).collect();
                            return Err(bad(format!("materialized='{m}' is not one of {}", names.join(", "))));
                        };
                        g.config.materialized = Some(*v);
                    }
                    "unique_key" => g.config.unique_key = Some(strings(&kwargs.get::<Value>(key)?)?),
                    "tags" => g.config.tags = strings(&kwargs.get::<Value>(key)?)?,
                    "on_schema_change" => {
                        let v: String = kwargs.get(key)?;
                        if !ON_SCHEMA_CHANGE_NAMES.contains(&v.as_str()) {
                            return Err(bad(format!("on_schema_change='{v}' is not one of {}", ON_SCHEMA_CHANGE_NAMES.join(", "))));
                        }
                        g.config.on_schema_change = Some(v);
                    }
                    "strategy" => {
                        let v: String = kwargs.get(key)?;
                        if v != "timestamp" && v != "check" {
                            return Err(bad(format!("strategy='{v}' is not one of timestamp, check")));
                        }
                        g.config.strategy = Some(v);
                    }
                    "updated_at" => g.config.updated_at = Some(kwargs.get(key)?),
                    "check_cols" => g.config.check_cols = Some(strings(&kwargs.get::<Value>(key)?)?),
                    "invalidate_hard_deletes" => g.config.invalidate_hard_deletes = Some(kwargs.get(key)?),
                    "severity" => {
                        let v: String = kwargs.get(key)?;
                        let v = v.to_ascii_lowercase();
                        if v != "error" && v != "warn" {
                            return Err(bad(format!("severity='{v}' is not one of error, warn")));
                        }
                        g.config.severity = Some(v);
                    }
                    // dbt's: read, no effect on what is built (every node is
                    // built in the connection's schema; documentation keys).
                    "target_schema" | "schema" => g.config.schema = Some(kwargs.get::<Value>(key)?.to_string()),
                    "target_database" | "meta" | "docs" | "persist_docs" => {
                        let _: Value = kwargs.get(key)?;
                    }
                    other => {
                        return Err(bad(format!(
                            "unknown config key `{other}` (known: materialized, unique_key, tags, on_schema_change, strategy, updated_at, check_cols, invalidate_hard_deletes, severity)"
                        )));
                    }
                }
            }
            Ok(String::new())
        });
        let mut header = String::new();
        for (name, source) in macros {
            env.add_template_owned(name.clone(), source.clone()).map_err(|e| convert_error(&e, Some(name), 0))?;
            let names = macro_names(source);
            if !names.is_empty() {
                header.push_str(&format!("{{% from {:?} import {} %}}", name, names.join(", ")));
            }
        }
        Ok(Renderer { env, header })
    }

    /// The globals a dbt project's templates expect: `target` (name, type,
    /// schema, database, threads, profile_name), `env_var(name, default)`,
    /// `log(msg, info=False)` and `execute` (true: every render sees data).
    pub fn add_dbt_globals(&mut self, target: serde_json::Value, env: crate::secret::Env) {
        self.env.add_global("target", Value::from(minijinja::value::Serde(target)));
        self.env.add_global("execute", true);
        self.env.add_function(
            "env_var",
            move |name: String, default: Option<Value>| -> Result<Value, minijinja::Error> {
                match env.var(&name) {
                    Some(v) => Ok(Value::from(v)),
                    None => default.ok_or_else(|| {
                        minijinja::Error::new(
                            ErrorKind::InvalidOperation,
                            format!("env var `{name}` is not set: set it, or give a default, env_var('{name}', …)"),
                        )
                    }),
                }
            },
        );
        self.env.add_function(
            "log",
            |msg: Value, info: Option<Value>, kwargs: Kwargs| -> Result<String, minijinja::Error> {
                // `log(msg, True)` or `log(msg, info=True)`.
                let info = match info {
                    Some(v) => v.is_true(),
                    None => kwargs.get::<Option<bool>>("info")?.unwrap_or(false),
                };
                kwargs.assert_all_used()?;
                if info {
                    tracing::info!(message = %msg, "log() in a template");
                } else {
                    tracing::debug!(message = %msg, "log() in a template");
                }
                Ok(String::new())
            },
        );
    }

    /// Renders one file. `name` is the file's name for messages.
    pub fn render(&self, name: &str, source: &str, call: &Call) -> Result<Rendered, TemplateError> {
        let session = Arc::new(Session {
            recorder: Mutex::new(Recorder::default()),
            resolve: call.resolve.clone(),
            is_incremental: call.is_incremental,
        });
        let run = call.resolve.run();
        let ctx = minijinja::context! {
            this => call.this.clone(),
            logical_date => run.logical_date,
            run_id => run.run_id,
            __sluice => Value::from_dyn_object(session.clone())
        };
        let full = format!("{}{source}", self.header);
        let out = self.env.render_named_str(name, &full, ctx);
        let rec = std::mem::take(&mut *session.recorder.lock().expect("recorder lock"));
        let sql = out.map_err(|e| convert_error(&e, Some(name), self.header.len()))?;
        Ok(Rendered { sql, refs: rec.refs, sources: rec.sources, config: rec.config })
    }
}

fn convert_error(e: &minijinja::Error, name: Option<&str>, header: usize) -> TemplateError {
    let what = match e.kind() {
        ErrorKind::SyntaxError => "template syntax error",
        ErrorKind::UndefinedError => "undefined value",
        ErrorKind::UnknownFunction => "unknown function",
        _ => "template error",
    };
    let message = match e.detail() {
        Some(d) => format!("{what}: {d}"),
        None => what.to_string(),
    };
    let file = e.name().map(str::to_string).or(name.map(str::to_string));
    let in_model = file.as_deref() == name;
    let range = e.range().map(|r| if in_model && r.start >= header { r.start - header..r.end - header } else { r });
    TemplateError { file, line: e.line(), range, message }
}

/// Quotes a name the SQL-standard way (`"name"`, doubling inner quotes).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The byte range of the name in the first `ref('target')` call of a model's
/// text (for messages).
pub fn find_ref(source: &str, target: &str) -> Option<std::ops::Range<usize>> {
    for q in ['\'', '"'] {
        let needle = format!("{q}{target}{q}");
        let mut from = 0;
        while let Some(pos) = source[from..].find(&needle) {
            let at = from + pos;
            let before = source[..at].trim_end();
            if before.ends_with("ref(")
                || before.ends_with("ref (")
                || before.ends_with("source(")
                || before.ends_with(',')
            {
                return Some(at..at + needle.len());
            }
            from = at + needle.len();
        }
    }
    None
}

/// Puts CTEs in front of a query, joining a `WITH` the query already has.
pub fn with_ctes(sql: &str, ctes: &[(String, String)]) -> String {
    if ctes.is_empty() {
        return sql.to_string();
    }
    let defs: Vec<String> =
        ctes.iter().map(|(name, body)| format!("{name} AS (\n{}\n)", body.trim().trim_end_matches(';'))).collect();
    let (lead, rest) = split_leading_comments(sql);
    let upper = rest.to_ascii_uppercase();
    if upper.starts_with("WITH") && rest[4..].starts_with(|c: char| c.is_whitespace()) {
        let after = rest[4..].trim_start();
        if after.to_ascii_uppercase().starts_with("RECURSIVE") && after[9..].starts_with(|c: char| c.is_whitespace()) {
            return format!("{lead}WITH RECURSIVE {},\n{}", defs.join(",\n"), after[9..].trim_start());
        }
        return format!("{lead}WITH {},\n{after}", defs.join(",\n"));
    }
    format!("{lead}WITH {}\n{rest}", defs.join(",\n"))
}

/// Splits a query into its leading whitespace and comments, and the rest.
fn split_leading_comments(sql: &str) -> (&str, &str) {
    let mut i = 0;
    let b = sql.as_bytes();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if sql[i..].starts_with("--") {
            i = sql[i..].find('\n').map(|k| i + k + 1).unwrap_or(sql.len());
        } else if sql[i..].starts_with("/*") {
            i = sql[i..].find("*/").map(|k| i + k + 2).unwrap_or(sql.len());
        } else {
            return (&sql[..i], &sql[i..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoting() -> Arc<dyn Resolve> {
        Arc::new(Quoting(Arc::new(|n: &str| quote_ident(n))))
    }

    fn renderer() -> Renderer {
        let mut vars = serde_json::Map::new();
        vars.insert("min_qty".into(), serde_json::json!(3));
        Renderer::new(
            &[("macros/money.sql".into(), "{% macro cents(col) %}round({{ col }} * 100){% endmacro %}\n".into())],
            vars,
        )
        .unwrap()
    }

    fn call(q: &Arc<dyn Resolve>) -> Call {
        Call { resolve: q.clone(), this: "\"m\"".into(), is_incremental: false }
    }

    #[test]
    fn records_refs_sources_and_config() {
        let q = quoting();
        let r = renderer()
            .render(
                "m.sql",
                "{{ config(materialized='view', tags=['a']) }}select {{ cents('price') }} from {{ ref('a') }} join {{ source('raw', 'b') }} using (id) join {{ ref('a') }} x where q > {{ var('min_qty') }} -- {{ this }}",
                &call(&q),
            )
            .unwrap();
        assert_eq!(r.refs, vec!["a"]);
        assert_eq!(r.sources, vec![("raw".to_string(), "b".to_string())]);
        assert_eq!(r.config.materialized, Some(Materialized::View));
        assert_eq!(r.config.tags, vec!["a"]);
        assert_eq!(
            r.sql,
            "select round(price * 100) from \"a\" join \"b\" using (id) join \"a\" x where q > 3 -- \"m\""
        );
    }

    #[test]
    fn errors_carry_lines_in_the_right_file() {
        let q = quoting();
        let rd = renderer();
        let e = rd.render("m.sql", "select 1\nfrom {{ ref('a') }\n", &call(&q)).unwrap_err();
        assert_eq!((e.file.as_deref(), e.line), (Some("m.sql"), Some(2)));
        assert!(e.message.starts_with("template syntax error"), "{}", e.message);
        let e = rd.render("m.sql", "select {{ var('nope') }}", &call(&q)).unwrap_err();
        assert!(e.message.contains("var `nope` is not set"), "{}", e.message);
        let e = rd.render("m.sql", "{{ config(materialized='tabel') }}", &call(&q)).unwrap_err();
        assert!(
            e.message.contains("materialized='tabel' is not one of table, view, incremental, ephemeral"),
            "{}",
            e.message
        );
        // An error on line 1 points into the model, not into the macro imports before it.
        let e = rd.render("m.sql", "select {{ nope() }}", &call(&q)).unwrap_err();
        assert_eq!(e.range.clone().map(|r| r.start), Some(10), "{e:?}");
    }

    #[test]
    fn dbt_globals() {
        let mut rd = renderer();
        rd.add_dbt_globals(
            serde_json::json!({"name": "dev", "type": "postgres", "schema": "s", "threads": 4}),
            crate::secret::Env::default(),
        );
        let q = quoting();
        let out = rd
            .render(
                "m.sql",
                "{{ log('hi', info=True) }}select '{{ target.name }}/{{ target.type }}' as t, '{{ env_var('SLUICE_SURELY_UNSET_X', 'd') }}' as e{% if execute %} -- x{% endif %}",
                &call(&q),
            )
            .unwrap();
        assert_eq!(out.sql, "select 'dev/postgres' as t, 'd' as e -- x");
        let e = rd.render("m.sql", "{{ env_var('SLUICE_SURELY_UNSET_X') }}", &call(&q)).unwrap_err();
        assert!(e.message.contains("env var `SLUICE_SURELY_UNSET_X` is not set"), "{}", e.message);
    }

    #[test]
    fn is_incremental_follows_the_call() {
        let q = quoting();
        let src = "select 1{% if is_incremental() %} where x > (select max(x) from {{ this }}){% endif %}";
        let mut c = call(&q);
        assert_eq!(renderer().render("m.sql", src, &c).unwrap().sql, "select 1");
        c.is_incremental = true;
        assert_eq!(renderer().render("m.sql", src, &c).unwrap().sql, "select 1 where x > (select max(x) from \"m\")");
    }

    #[test]
    fn ctes_join_an_existing_with() {
        let ctes = vec![("\"e\"".to_string(), "select 1 as x".to_string())];
        assert_eq!(with_ctes("select * from \"e\"", &ctes), "WITH \"e\" AS (\nselect 1 as x\n)\nselect * from \"e\"");
        assert_eq!(
            with_ctes("-- hi\nwith a as (select 2) select * from a, \"e\"", &ctes),
            "-- hi\nWITH \"e\" AS (\nselect 1 as x\n),\na as (select 2) select * from a, \"e\""
        );
        assert_eq!(macro_names("{% macro a(x) %}{% endmacro %}{%- macro b() -%}{%- endmacro %}"), vec!["a", "b"]);
    }

    #[test]
    fn finds_ref_positions() {
        let src = "select 'abc'\n  * from {{ ref('abc') }}";
        assert_eq!(find_ref(src, "abc"), Some(29..34));
        assert_eq!(find_ref(src, "zzz"), None);
    }
}
