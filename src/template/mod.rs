//! Renders a model's SQL with Jinja-style templates (minijinja): `ref()`,
//! `var()`, `config()`, `this`, `is_incremental()`. The refs a model makes are
//! recorded while it renders (as dbt does) and become the edges of the model
//! DAG. This module does not know databases: the caller says how a relation name
//! is written in SQL.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};

use crate::project::{MATERIALIZED, Materialized};

/// Turns a model or table name into the SQL that names it (quoted, maybe qualified).
pub type RelationFn = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// What a model's template can see.
#[derive(Clone)]
pub struct RenderCtx {
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub relation: RelationFn,
    pub is_incremental: bool,
}

/// A rendered model.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub sql: String,
    /// Names passed to `ref()`, in first-use order, without repeats.
    pub refs: Vec<String>,
    /// `config(materialized=…)`, when the model set it.
    pub materialized: Option<Materialized>,
    /// `config(unique_key=…)`.
    pub unique_key: Option<Vec<String>>,
    pub tags: Vec<String>,
}

/// A template problem, at a line of the model file when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub line: Option<usize>,
    /// Byte range in the template source, when known.
    pub range: Option<std::ops::Range<usize>>,
    pub message: String,
}

#[derive(Default)]
struct Recorder {
    refs: Vec<String>,
    materialized: Option<Materialized>,
    unique_key: Option<Vec<String>>,
    tags: Vec<String>,
}

/// Renders one model. `name` is the model's file, for messages.
pub fn render(name: &str, model: &str, source: &str, ctx: &RenderCtx) -> Result<Rendered, TemplateError> {
    let rec = Arc::new(Mutex::new(Recorder::default()));
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );

    let r = rec.clone();
    let rel = ctx.relation.clone();
    env.add_function("ref", move |target: String| -> Result<String, minijinja::Error> {
        let mut g = r.lock().expect("recorder lock");
        if !g.refs.contains(&target) {
            g.refs.push(target.clone());
        }
        Ok(rel(&target))
    });

    let vars = ctx.vars.clone();
    env.add_function("var", move |key: String, default: Option<Value>| -> Result<Value, minijinja::Error> {
        match vars.get(&key) {
            Some(v) => Ok(Value::from(minijinja::value::Serde(v.clone()))),
            None => default.ok_or_else(|| {
                minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "var `{key}` is not set: add it under [vars] in sluice.toml or give a default, var('{key}', …)"
                    ),
                )
            }),
        }
    });

    let r = rec.clone();
    env.add_function("config", move |kwargs: Kwargs| -> Result<String, minijinja::Error> {
        let mut g = r.lock().expect("recorder lock");
        for key in kwargs.args() {
            match key {
                "materialized" => {
                    let m: String = kwargs.get(key)?;
                    let Some((_, v)) = MATERIALIZED.iter().find(|(n, _)| *n == m) else {
                        let names: Vec<&str> = MATERIALIZED.iter().map(|(n, _)| *n).collect();
                        return Err(minijinja::Error::new(
                            ErrorKind::InvalidOperation,
                            format!("materialized='{m}' is not one of {}", names.join(", ")),
                        ));
                    };
                    g.materialized = Some(*v);
                }
                "unique_key" => {
                    let v: Value = kwargs.get(key)?;
                    let keys = if let Some(s) = v.as_str() {
                        vec![s.to_string()]
                    } else {
                        v.try_iter()?.map(|x| x.to_string()).collect()
                    };
                    g.unique_key = Some(keys);
                }
                "tags" => {
                    let v: Value = kwargs.get(key)?;
                    g.tags = if let Some(s) = v.as_str() {
                        vec![s.to_string()]
                    } else {
                        v.try_iter()?.map(|x| x.to_string()).collect()
                    };
                }
                other => {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!("unknown config key `{other}` (known: materialized, unique_key, tags)"),
                    ));
                }
            }
        }
        Ok(String::new())
    });

    let inc = ctx.is_incremental;
    env.add_function("is_incremental", move || inc);
    let this = (ctx.relation)(model);

    let mut context = BTreeMap::new();
    context.insert("this", Value::from(this));
    let out = env.render_named_str(name, source, context).map_err(|e| convert_error(&e))?;
    let g = rec.lock().expect("recorder lock");
    Ok(Rendered {
        sql: out,
        refs: g.refs.clone(),
        materialized: g.materialized,
        unique_key: g.unique_key.clone(),
        tags: g.tags.clone(),
    })
}

fn convert_error(e: &minijinja::Error) -> TemplateError {
    let what = match e.kind() {
        ErrorKind::SyntaxError => "template syntax error",
        ErrorKind::UndefinedError => "undefined value",
        ErrorKind::UnknownFunction => "unknown function",
        ErrorKind::MissingArgument | ErrorKind::TooManyArguments | ErrorKind::InvalidOperation => "template error",
        _ => "template error",
    };
    let message = match e.detail() {
        Some(d) => format!("{what}: {d}"),
        None => what.to_string(),
    };
    TemplateError { line: e.line(), range: e.range(), message }
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
            if before.ends_with("ref(") || before.ends_with("ref (") {
                return Some(at..at + needle.len());
            }
            from = at + needle.len();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RenderCtx {
        let mut vars = serde_json::Map::new();
        vars.insert("min_qty".into(), serde_json::json!(3));
        RenderCtx { vars, relation: Arc::new(|n: &str| quote_ident(n)), is_incremental: false }
    }

    #[test]
    fn records_refs_and_config() {
        let r = render(
            "m.sql",
            "m",
            "{{ config(materialized='view') }}select * from {{ ref('a') }} join {{ ref('b') }} using (id) join {{ ref('a') }} x where q > {{ var('min_qty') }} -- {{ this }}",
            &ctx(),
        )
        .unwrap();
        assert_eq!(r.refs, vec!["a", "b"]);
        assert_eq!(r.materialized, Some(Materialized::View));
        assert_eq!(r.sql, "select * from \"a\" join \"b\" using (id) join \"a\" x where q > 3 -- \"m\"");
    }

    #[test]
    fn errors_carry_lines() {
        let e = render("m.sql", "m", "select 1\nfrom {{ ref('a') }\n", &ctx()).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.starts_with("template syntax error"), "{}", e.message);
        let e = render("m.sql", "m", "select {{ var('nope') }}", &ctx()).unwrap_err();
        assert!(e.message.contains("var `nope` is not set"), "{}", e.message);
        let e = render("m.sql", "m", "{{ config(materialized='tabel') }}", &ctx()).unwrap_err();
        assert!(e.message.contains("materialized='tabel' is not one of table, view"), "{}", e.message);
    }

    #[test]
    fn finds_ref_positions() {
        let src = "select 'abc'\n  * from {{ ref('abc') }}";
        assert_eq!(find_ref(src, "abc"), Some(29..34));
        assert_eq!(find_ref(src, "zzz"), None);
    }
}
