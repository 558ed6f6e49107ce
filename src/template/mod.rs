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
    /// dbt's `execute`: whether this render makes SQL to run (false while
    /// the project is only read for its refs and configs).
    fn execute(&self) -> bool {
        true
    }
    /// Runs `run_query(sql)`'s query. A resolver that does not `execute`
    /// gives an empty table; one that executes without a connection for
    /// queries says where `run_query()` works.
    fn run_query(&self, sql: &str) -> Result<QueryTable, String> {
        let _ = sql;
        Err("run_query() runs in models and the macros they call, not here".into())
    }
}

/// What `run_query()` returns: the query's columns and rows (dbt gives an
/// Agate table; templates read it as `table.rows`, `table.columns[0].values()`,
/// `table.column_names`, `row[0]` or `row['name']`, or iterate its rows).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryTable {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
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
    fn execute(&self) -> bool {
        false
    }
    fn run_query(&self, _sql: &str) -> Result<QueryTable, String> {
        Ok(QueryTable::default())
    }
}

/// `run_query()`'s table in templates.
#[derive(Debug)]
struct TableObj(Arc<QueryTable>);

/// One row: by position (`row[0]`) or column name (`row['id']`).
#[derive(Debug)]
struct RowObj(Arc<QueryTable>, usize);

/// One column: `.name`, `.values()`.
#[derive(Debug)]
struct ColumnObj(Arc<QueryTable>, usize);

fn cell(v: &serde_json::Value) -> Value {
    Value::from(minijinja::value::Serde(v.clone()))
}

impl Object for TableObj {
    fn repr(self: &Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Seq
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let t = &self.0;
        if let Some(i) = key.as_usize() {
            return (i < t.rows.len()).then(|| Value::from_object(RowObj(t.clone(), i)));
        }
        match key.as_str()? {
            "rows" => Some(Value::from(
                (0..t.rows.len()).map(|i| Value::from_object(RowObj(t.clone(), i))).collect::<Vec<_>>(),
            )),
            "columns" => Some(Value::from(
                (0..t.columns.len()).map(|i| Value::from_object(ColumnObj(t.clone(), i))).collect::<Vec<_>>(),
            )),
            "column_names" => Some(Value::from(t.columns.clone())),
            _ => None,
        }
    }
    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        let t = self.0.clone();
        minijinja::value::Enumerator::Iter(Box::new(
            (0..t.rows.len()).map(move |i| Value::from_object(RowObj(t.clone(), i))),
        ))
    }
    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.rows.len())
    }
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        match method {
            "print_table" => Ok(Value::from("")),
            m => Err(minijinja::Error::new(
                ErrorKind::UnknownMethod,
                format!("run_query()'s table has no method `{m}` (it has rows, columns, column_names, print_table())"),
            )),
        }
    }
}

impl Object for RowObj {
    fn repr(self: &Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Seq
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let row = &self.0.rows[self.1];
        let i = match key.as_usize() {
            Some(i) => i,
            None => self.0.columns.iter().position(|c| Some(c.as_str()) == key.as_str())?,
        };
        row.get(i).map(cell)
    }
    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Values(self.0.rows[self.1].iter().map(cell).collect())
    }
}

impl Object for ColumnObj {
    fn repr(self: &Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Plain
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        (key.as_str()? == "name").then(|| Value::from(self.0.columns[self.1].clone()))
    }
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        match method {
            "values" => Ok(Value::from(self.0.rows.iter().map(|r| cell(&r[self.1])).collect::<Vec<_>>())),
            m => Err(minijinja::Error::new(
                ErrorKind::UnknownMethod,
                format!("a column of run_query()'s table has no method `{m}` (it has name, values())"),
            )),
        }
    }
}

/// What one render of a file may see.
#[derive(Clone)]
pub struct Call {
    pub resolve: Arc<dyn Resolve>,
    /// `{{ this }}`: the file's own relation.
    pub this: String,
    pub is_incremental: bool,
    /// The node's config from the project (config trees, schema files): what
    /// `config.get()` gives for a key the file's own `config()` did not set.
    pub config: FileConfig,
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
    /// dbt's custom schema (`generate_schema_name` makes the schema's name).
    pub schema: Option<String>,
    /// A snapshot's `target_schema`: its schema, as written.
    pub target_schema: Option<String>,
    /// The relation's name, when not the file's (`generate_alias_name`).
    pub alias: Option<String>,
    /// dbt's `pre_hook`/`post_hook`: SQL templates run around the build.
    pub pre_hook: Vec<String>,
    pub post_hook: Vec<String>,
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
    /// The project's config of the node (`Call::config`).
    defaults: FileConfig,
    /// The project's macros by name (registered by the header of each render).
    macros: Mutex<std::collections::HashMap<String, Value>>,
    /// Values passed to `return()`, found again by the index in their marker.
    returns: Mutex<Vec<Value>>,
    /// Rendering for a dbt project (dbt's config defaults apply).
    dbt: bool,
}

/// What `return(value)` renders: the macro's caller swaps it for the value.
const RETURN_MARK: &str = "\u{1}sluice-return:";

/// A project macro as the templates call it: it runs the macro and, when the
/// macro called `return(value)`, gives that value instead of the text (dbt's
/// `return()`).
#[derive(Debug)]
struct MacroFn {
    name: String,
}

impl Object for MacroFn {
    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, minijinja::Error> {
        let s = session(state)?;
        let m = s.macros.lock().expect("macros lock").get(&self.name).cloned().ok_or_else(|| {
            minijinja::Error::new(ErrorKind::InvalidOperation, format!("macro `{}` is not loaded", self.name))
        })?;
        match m.call(state, args) {
            Ok(out) => Ok(out),
            // `return()` stops the macro, as in dbt: what follows it is not run.
            Err(e) => {
                match returned(&e) {
                    Some(n) => {
                        s.returns.lock().expect("returns lock").get(n).cloned().ok_or_else(|| {
                            minijinja::Error::new(ErrorKind::InvalidOperation, "return() lost its value")
                        })
                    }
                    None => Err(e),
                }
            }
        }
    }
}

/// The index of the value `return()` gave, when `e` is its way out of a macro.
fn returned(e: &minijinja::Error) -> Option<usize> {
    let d = e.detail()?;
    let rest = d.strip_prefix(RETURN_MARK)?;
    rest.split('\u{1}').next()?.parse().ok()
}

/// dbt's `adapter`: `adapter.dispatch('name')` is the project's macro
/// `<target type>__name`, else `default__name`.
#[derive(Debug)]
struct Adapter {
    macros: Arc<Vec<String>>,
}

impl Object for Adapter {
    fn call_method(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        if method != "dispatch" {
            return Err(minijinja::Error::new(
                ErrorKind::UnknownMethod,
                format!("adapter.{method}() is not supported (adapter.dispatch() is)"),
            ));
        }
        let (name, _namespace, kwargs): (String, Option<Value>, Kwargs) = minijinja::value::from_args(args)?;
        let _: Option<Value> = kwargs.get("macro_namespace")?;
        kwargs.assert_all_used()?;
        let kind = state
            .lookup("target")
            .and_then(|t| t.get_attr("type").ok())
            .and_then(|t| t.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut tried = Vec::new();
        for prefix in [kind.as_str(), "default"] {
            if prefix.is_empty() {
                continue;
            }
            let full = format!("{prefix}__{name}");
            if self.macros.contains(&full) {
                return Ok(Value::from_object(MacroFn { name: full }));
            }
            tried.push(full);
        }
        Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("adapter.dispatch('{name}'): no macro {} in the project", tried.join(" or ")),
        ))
    }
}

/// dbt's `config`: called, it records the file's config (`config(...)`);
/// `config.get(key, default)` and `config.require(key)` read what the file
/// set so far.
#[derive(Debug)]
struct ConfigFn;

impl Object for ConfigFn {
    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, minijinja::Error> {
        let (kwargs,): (Kwargs,) = minijinja::value::from_args(args)?;
        record_config(state, kwargs)?;
        Ok(Value::from(""))
    }

    fn call_method(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        let (key, default): (String, Option<Value>) = minijinja::value::from_args(args)?;
        let s = session(state)?;
        let c = s.recorder.lock().expect("recorder lock").config.clone();
        let got = config_value(&c, &key).or_else(|| config_value(&s.defaults, &key));
        match method {
            // In a dbt project a config field dbt always has gives its own
            // default when unset (`config.get('unique_key', 'x')` is None),
            // as dbt's node config does; other keys give the caller's.
            "get" if s.dbt && got.is_none() => Ok(dbt_config_default(&key).or(default).unwrap_or(Value::from(()))),
            "get" => Ok(got.or(default).unwrap_or(Value::from(()))),
            "require" => got.ok_or_else(|| {
                minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("config.require('{key}'): `{key}` is not set"),
                )
            }),
            other => Err(minijinja::Error::new(
                ErrorKind::UnknownMethod,
                format!("config.{other}() is not supported (config.get() and config.require() are)"),
            )),
        }
    }
}

/// What dbt's node config holds for a field nobody set.
fn dbt_config_default(key: &str) -> Option<Value> {
    match key {
        "unique_key"
        | "alias"
        | "schema"
        | "database"
        | "full_refresh"
        | "strategy"
        | "updated_at"
        | "check_cols"
        | "incremental_strategy"
        | "target_schema"
        | "target_database" => Some(Value::from(())),
        "tags" | "pre_hook" | "pre-hook" | "post_hook" | "post-hook" | "grants" => {
            Some(Value::from(Vec::<Value>::new()))
        }
        "on_schema_change" => Some(Value::from("ignore")),
        "enabled" => Some(Value::from(true)),
        _ => None,
    }
}

/// One key of a file's config, as templates see it.
fn config_value(c: &FileConfig, key: &str) -> Option<Value> {
    let some = |v: &Option<String>| v.clone().map(Value::from);
    let list = |v: &Option<Vec<String>>| v.clone().map(Value::from);
    match key {
        "materialized" => {
            c.materialized.and_then(|m| MATERIALIZED.iter().find(|(_, v)| *v == m)).map(|(n, _)| Value::from(*n))
        }
        "unique_key" => list(&c.unique_key),
        "tags" if !c.tags.is_empty() => Some(Value::from(c.tags.clone())),
        "on_schema_change" => some(&c.on_schema_change),
        "strategy" => some(&c.strategy),
        "updated_at" => some(&c.updated_at),
        "check_cols" => list(&c.check_cols),
        "invalidate_hard_deletes" => c.invalidate_hard_deletes.map(Value::from),
        "severity" => some(&c.severity),
        "schema" => some(&c.schema),
        "target_schema" => some(&c.target_schema),
        "alias" => some(&c.alias),
        "pre_hook" | "pre-hook" if !c.pre_hook.is_empty() => Some(Value::from(c.pre_hook.clone())),
        "post_hook" | "post-hook" if !c.post_hook.is_empty() => Some(Value::from(c.post_hook.clone())),
        _ => None,
    }
}

/// dbt's `this`: renders as the relation's SQL name; `.identifier` (`.name`,
/// `.table`), `.schema` and `.database` are its parts.
#[derive(Debug)]
struct Relation {
    sql: String,
    identifier: String,
    schema: Option<String>,
    database: Option<String>,
}

impl Object for Relation {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "identifier" | "name" | "table" => Some(Value::from(self.identifier.clone())),
            "schema" => Some(self.schema.clone().map(Value::from).unwrap_or(Value::from(()))),
            "database" => Some(self.database.clone().map(Value::from).unwrap_or(Value::from(()))),
            _ => None,
        }
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.sql)
    }
}

/// dbt's `modules`: `modules.datetime` (`datetime.now()`, `datetime.utcnow()`,
/// `date.today()`, and on what they give: `strftime`, `isoformat`, `date()`,
/// `year`…`second`). Arithmetic (`timedelta`) is not there.
#[derive(Debug)]
enum PyModule {
    Modules,
    Datetime,
    DatetimeClass,
    DateClass,
    /// Named so that using it says why it is missing.
    Timedelta,
}

impl Object for PyModule {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match (self.as_ref(), key.as_str()?) {
            (PyModule::Modules, "datetime") => Some(Value::from_object(PyModule::Datetime)),
            (PyModule::Datetime, "datetime") => Some(Value::from_object(PyModule::DatetimeClass)),
            (PyModule::Datetime, "date") => Some(Value::from_object(PyModule::DateClass)),
            (PyModule::Datetime, "timedelta") => Some(Value::from_object(PyModule::Timedelta)),
            _ => None,
        }
    }

    fn call(self: &Arc<Self>, _state: &mut State<'_, '_>, _args: &[Value]) -> Result<Value, minijinja::Error> {
        let what = match self.as_ref() {
            PyModule::Timedelta => {
                "modules.datetime.timedelta is not supported: sluice's templates cannot add to or subtract from dates; compute the date in SQL, or pass it with --vars"
            }
            _ => "modules.datetime: call datetime.now(), datetime.utcnow() or date.today()",
        };
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, what))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        let at = |dt: chrono::NaiveDateTime, date_only: bool| Ok(Value::from_object(PyDateTime { dt, date_only }));
        match (self.as_ref(), method) {
            (PyModule::DatetimeClass, "now") => at(chrono::Local::now().naive_local(), false),
            (PyModule::DatetimeClass, "utcnow") => at(chrono::Utc::now().naive_utc(), false),
            (PyModule::DateClass, "today") => at(chrono::Local::now().date_naive().into(), true),
            (_, m) => Err(minijinja::Error::new(
                ErrorKind::UnknownMethod,
                format!(
                    "modules.datetime: `{m}` is not supported (datetime.now(), datetime.utcnow() and date.today() are)"
                ),
            )),
        }
    }
}

/// A Python `datetime` (or `date`) from `modules.datetime`.
#[derive(Debug)]
struct PyDateTime {
    dt: chrono::NaiveDateTime,
    date_only: bool,
}

impl PyDateTime {
    /// How Python writes a datetime: microseconds only when there are some.
    fn python(&self, sep: char) -> String {
        use chrono::Timelike;
        let base = self.dt.format(&format!("%Y-%m-%d{sep}%H:%M:%S")).to_string();
        match self.dt.nanosecond() / 1000 {
            0 => base,
            us => format!("{base}.{us:06}"),
        }
    }
}

impl Object for PyDateTime {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        use chrono::{Datelike, Timelike};
        let d = &self.dt;
        Some(Value::from(match key.as_str()? {
            "year" => d.year() as i64,
            "month" => d.month() as i64,
            "day" => d.day() as i64,
            "hour" if !self.date_only => d.hour() as i64,
            "minute" if !self.date_only => d.minute() as i64,
            "second" if !self.date_only => d.second() as i64,
            _ => return None,
        }))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        match method {
            "strftime" => {
                let (fmt,): (String,) = minijinja::value::from_args(args)?;
                let mut out = String::new();
                use std::fmt::Write;
                write!(out, "{}", self.dt.format(&fmt)).map_err(|_| {
                    minijinja::Error::new(ErrorKind::InvalidOperation, format!("strftime: bad format `{fmt}`"))
                })?;
                Ok(Value::from(out))
            }
            "isoformat" => {
                Ok(Value::from(if self.date_only { self.dt.format("%Y-%m-%d").to_string() } else { self.python('T') }))
            }
            "date" => Ok(Value::from_object(PyDateTime { dt: self.dt.date().into(), date_only: true })),
            other => Err(minijinja::Error::new(
                ErrorKind::UnknownMethod,
                format!("datetime.{other}() is not supported (strftime, isoformat and date are)"),
            )),
        }
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.date_only { write!(f, "{}", self.dt.format("%Y-%m-%d")) } else { f.write_str(&self.python(' ')) }
    }
}

/// The names in a (maybe qualified, maybe quoted) SQL relation name.
fn relation_parts(sql: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => {
                if chars.peek() == Some(&q) {
                    cur.push(q);
                    chars.next();
                } else {
                    quote = None;
                }
            }
            Some(_) => cur.push(c),
            None if c == '"' || c == '`' => quote = Some(c),
            None if c == '.' => parts.push(std::mem::take(&mut cur)),
            None => cur.push(c),
        }
    }
    parts.push(cur);
    parts
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

fn record_config(state: &State, kwargs: Kwargs) -> Result<(), minijinja::Error> {
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
                    return Err(bad(format!(
                        "on_schema_change='{v}' is not one of {}",
                        ON_SCHEMA_CHANGE_NAMES.join(", ")
                    )));
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
            "pre_hook" => g.config.pre_hook = strings(&kwargs.get::<Value>(key)?)?,
            "post_hook" => g.config.post_hook = strings(&kwargs.get::<Value>(key)?)?,
            "severity" => {
                let v: String = kwargs.get(key)?;
                let v = v.to_ascii_lowercase();
                if v != "error" && v != "warn" {
                    return Err(bad(format!("severity='{v}' is not one of error, warn")));
                }
                g.config.severity = Some(v);
            }
            "schema" => g.config.schema = opt_string(kwargs.get::<Value>(key)?),
            "target_schema" => g.config.target_schema = opt_string(kwargs.get::<Value>(key)?),
            "alias" => g.config.alias = opt_string(kwargs.get::<Value>(key)?),
            // dbt's documentation keys: no effect on what is built.
            "target_database" | "meta" | "docs" | "persist_docs" => {
                let _: Value = kwargs.get(key)?;
            }
            other => {
                return Err(bad(format!(
                    "unknown config key `{other}` (known: materialized, unique_key, tags, on_schema_change, strategy, updated_at, check_cols, invalidate_hard_deletes, pre_hook, post_hook, severity, schema, alias)"
                )));
            }
        }
    }
    Ok(())
}

/// A config value that may be `none`.
fn opt_string(v: Value) -> Option<String> {
    if v.is_none() || v.is_undefined() { None } else { Some(v.to_string()) }
}

fn strings(v: &Value) -> Result<Vec<String>, minijinja::Error> {
    if let Some(s) = v.as_str() { Ok(vec![s.to_string()]) } else { Ok(v.try_iter()?.map(|x| x.to_string()).collect()) }
}

/// Renders a project's SQL files; built once per run (macros are compiled once).
pub struct Renderer {
    env: Environment<'static>,
    /// Imports every macro, on one line so the files' line numbers stay right.
    header: String,
    /// `this.schema` and `this.database` when `this` is not qualified (dbt projects).
    target_schema: Option<String>,
    target_database: Option<String>,
    /// Per macro file, where its private prefixes are (for error places).
    renamed: std::collections::HashMap<String, Vec<usize>>,
}

/// The private name a project macro is defined under (see `MacroFn`).
const MACRO_PREFIX: &str = "sluice_macro__";

/// A macro file with each `{% macro name(` renamed to its private name
/// (same lines, so messages keep their line numbers).
/// Also gives where, in the new text, each private prefix was put.
fn rename_macros(source: &str, names: &[String]) -> (String, Vec<usize>) {
    let mut at = Vec::new();
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(i) = rest.find("{%") {
        out.push_str(&rest[..i + 2]);
        rest = &rest[i + 2..];
        let ws = rest.len() - rest.trim_start_matches(['-', '+']).trim_start().len();
        let after = &rest[ws..];
        if let Some(m) = after.strip_prefix("macro") {
            let pad = m.len() - m.trim_start().len();
            let name: String = m.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if pad > 0 && names.contains(&name) {
                out.push_str(&rest[..ws + 5 + pad]);
                at.push(out.len());
                out.push_str(MACRO_PREFIX);
                out.push_str(&name);
                rest = &rest[ws + 5 + pad + name.len()..];
            }
        }
    }
    out.push_str(rest);
    (out, at)
}

/// An error's byte range in a macro file as the user wrote it (before the
/// private prefixes were put in).
fn unrename(mut e: TemplateError, renamed: &std::collections::HashMap<String, Vec<usize>>) -> TemplateError {
    if let (Some(f), Some(r)) = (&e.file, &e.range)
        && let Some(at) = renamed.get(f)
    {
        let shift =
            |x: usize| x - at.iter().filter(|&&p| p < x).map(|&p| (x - p).min(MACRO_PREFIX.len())).sum::<usize>();
        e.range = Some(shift(r.start)..shift(r.end));
    }
    e
}

/// The name the built-in macros of a dbt project are shown under in messages.
pub const DBT_BUILTINS_FILE: &str = "(dbt's built-in macros)";

/// dbt's naming macros, as dbt-core defines their behaviour: a project's own
/// `generate_schema_name` or `generate_alias_name` replaces the default, and
/// may call `default__generate_schema_name` or `generate_schema_name_for_env`.
/// Those the project defines itself (`defined`) are left out.
pub fn dbt_builtin_macros(defined: &[String]) -> String {
    const MACROS: &[(&str, &str)] = &[
        (
            "default__generate_schema_name",
            "{% macro default__generate_schema_name(custom_schema_name, node) -%}\n\
             {%- if custom_schema_name is none -%}{{ target.schema }}\n\
             {%- else -%}{{ target.schema }}_{{ custom_schema_name | trim }}{%- endif -%}\n\
             {%- endmacro %}\n",
        ),
        (
            "generate_schema_name",
            "{% macro generate_schema_name(custom_schema_name, node) -%}\n\
             {{ default__generate_schema_name(custom_schema_name, node) }}\n\
             {%- endmacro %}\n",
        ),
        (
            "generate_schema_name_for_env",
            "{% macro generate_schema_name_for_env(custom_schema_name, node) -%}\n\
             {%- if target.name == 'prod' and custom_schema_name is not none -%}{{ custom_schema_name | trim }}\n\
             {%- else -%}{{ target.schema }}{%- endif -%}\n\
             {%- endmacro %}\n",
        ),
        (
            "default__generate_alias_name",
            "{% macro default__generate_alias_name(custom_alias_name=none, node=none) -%}\n\
             {%- if custom_alias_name -%}{{ custom_alias_name | trim }}\n\
             {%- elif node.version -%}{{ node.name ~ '_v' ~ (node.version | string | replace('.', '_')) }}\n\
             {%- else -%}{{ node.name }}{%- endif -%}\n\
             {%- endmacro %}\n",
        ),
        (
            "generate_alias_name",
            "{% macro generate_alias_name(custom_alias_name=none, node=none) -%}\n\
             {{ default__generate_alias_name(custom_alias_name, node) }}\n\
             {%- endmacro %}\n",
        ),
    ];
    MACROS.iter().filter(|(n, _)| !defined.iter().any(|d| d == n)).map(|(_, m)| *m).collect()
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
        env.add_function("run_query", |state: &State, sql: String| -> Result<Value, minijinja::Error> {
            let s = session(state)?;
            match s.resolver().run_query(&sql) {
                Ok(t) => Ok(Value::from_object(TableObj(Arc::new(t)))),
                Err(e) => Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("run_query(): {e}"))),
            }
        });
        env.add_function("is_incremental", |state: &State| -> Result<bool, minijinja::Error> {
            Ok(session(state)?.is_incremental)
        });
        env.add_global("config", Value::from_object(ConfigFn));
        env.add_function("return", |state: &State, value: Value| -> Result<String, minijinja::Error> {
            let s = session(state)?;
            let mut r = s.returns.lock().expect("returns lock");
            r.push(value);
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("{RETURN_MARK}{}\u{1}", r.len() - 1)))
        });
        env.add_function("__sluice_macros", |state: &State, kwargs: Kwargs| -> Result<String, minijinja::Error> {
            let s = session(state)?;
            let mut m = s.macros.lock().expect("macros lock");
            for key in kwargs.args() {
                m.insert(key.trim_start_matches(MACRO_PREFIX).to_string(), kwargs.get::<Value>(key)?);
            }
            Ok(String::new())
        });
        // Each macro is defined under a private name and called through a
        // global of its own name (MacroFn), so that `return()` works from
        // models and from other macros alike.
        let mut header = String::new();
        let mut all = Vec::new();
        let mut renamed = std::collections::HashMap::new();
        for (name, source) in macros {
            let names = macro_names(source);
            let (text, at) = rename_macros(source, &names);
            renamed.insert(name.clone(), at);
            env.add_template_owned(name.clone(), text)
                .map_err(|e| unrename(convert_error(&e, Some(name), 0), &renamed))?;
            if !names.is_empty() {
                let private: Vec<String> = names.iter().map(|n| format!("{MACRO_PREFIX}{n}")).collect();
                let kw: Vec<String> = private.iter().map(|p| format!("{p}={p}")).collect();
                header.push_str(&format!(
                    "{{% from {:?} import {} %}}{{{{ __sluice_macros({}) }}}}",
                    name,
                    private.join(", "),
                    kw.join(", ")
                ));
            }
            for n in names {
                env.add_global(n.clone(), Value::from_object(MacroFn { name: n.clone() }));
                all.push(n);
            }
        }
        env.add_global("adapter", Value::from_object(Adapter { macros: Arc::new(all) }));
        Ok(Renderer { env, header, target_schema: None, target_database: None, renamed })
    }

    /// The globals a dbt project's templates expect: `target` (name, type,
    /// schema, database, threads, profile_name), `env_var(name, default)`,
    /// `log(msg, info=False)` and `execute` (true: every render sees data).
    pub fn add_dbt_globals(&mut self, target: serde_json::Value, env: crate::secret::Env) {
        let text = |k: &str| target.get(k).and_then(|v| v.as_str()).map(str::to_string);
        self.target_schema = text("schema");
        self.target_database = text("database");
        self.env.add_global("target", Value::from(minijinja::value::Serde(target)));
        self.env.add_global("modules", Value::from_object(PyModule::Modules));
        // dbt's Jinja is Python's: `{{ none }}` renders as `None`.
        self.env.set_formatter(|out, state, value| {
            if value.is_none() {
                out.write_str("None").map_err(minijinja::Error::from)
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
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

    /// A value every render sees under `name` (dbt's `schemas` and
    /// `results` in an `on-run-end` hook).
    pub fn add_global(&mut self, name: &'static str, value: serde_json::Value) {
        self.env.add_global(name, Value::from(minijinja::value::Serde(value)));
    }

    /// Renders one file. `name` is the file's name for messages.
    pub fn render(&self, name: &str, source: &str, call: &Call) -> Result<Rendered, TemplateError> {
        self.render_with(name, source, call, &[])
    }

    /// Calls one of the project's macros (or a built-in one) with `args`
    /// and returns what it renders, trimmed: dbt's `generate_schema_name`
    /// and the like. `file` names the caller in messages.
    pub fn call_macro(
        &self,
        file: &str,
        name: &str,
        args: &[serde_json::Value],
        call: &Call,
    ) -> Result<String, TemplateError> {
        let names: Vec<String> = (0..args.len()).map(|i| format!("__sluice_arg{i}")).collect();
        let source = format!("{{{{ {name}({}) }}}}", names.join(", "));
        let extra: Vec<(String, Value)> =
            names.into_iter().zip(args).map(|(n, a)| (n, Value::from(minijinja::value::Serde(a.clone())))).collect();
        Ok(self.render_with(file, &source, call, &extra)?.sql.trim().to_string())
    }

    fn render_with(
        &self,
        name: &str,
        source: &str,
        call: &Call,
        extra: &[(String, Value)],
    ) -> Result<Rendered, TemplateError> {
        let session = Arc::new(Session {
            recorder: Mutex::new(Recorder::default()),
            resolve: call.resolve.clone(),
            is_incremental: call.is_incremental,
            defaults: call.config.clone(),
            macros: Mutex::default(),
            returns: Mutex::default(),
            dbt: self.target_schema.is_some(),
        });
        let run = call.resolve.run();
        let mut parts = relation_parts(&call.this);
        let identifier = parts.pop().unwrap_or_default();
        let this = Relation {
            sql: call.this.clone(),
            identifier,
            schema: parts.pop().or_else(|| self.target_schema.clone()),
            database: parts.pop().or_else(|| self.target_database.clone()),
        };
        let mut ctx: std::collections::BTreeMap<String, Value> = [
            ("this".to_string(), Value::from_object(this)),
            ("logical_date".to_string(), Value::from(run.logical_date)),
            ("run_id".to_string(), Value::from(run.run_id)),
            ("execute".to_string(), Value::from(call.resolve.execute())),
            ("__sluice".to_string(), Value::from_dyn_object(session.clone())),
        ]
        .into_iter()
        .collect();
        ctx.extend(extra.iter().cloned());
        let ctx = Value::from(ctx);
        let full = format!("{}{source}", self.header);
        let out = self.env.render_named_str(name, &full, ctx);
        let rec = std::mem::take(&mut *session.recorder.lock().expect("recorder lock"));
        let sql = out.map_err(|e| {
            let mut t = unrename(convert_error(&e, Some(name), self.header.len()), &self.renamed);
            if returned(&e).is_some() {
                t.message = "return() works only inside a macro".into();
            }
            t
        })?;
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
        Call { resolve: q.clone(), this: "\"m\"".into(), is_incremental: false, config: FileConfig::default() }
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
        // Reading the project (Quoting) is dbt's parse: `execute` is false.
        assert_eq!(out.sql, "select 'dev/postgres' as t, 'd' as e");
        let fixed: Arc<dyn Resolve> = Arc::new(Fixed);
        assert_eq!(rd.render("m.sql", "{% if execute %}x{% endif %}", &call(&fixed)).unwrap().sql, "x");
        let e = rd.render("m.sql", "{{ env_var('SLUICE_SURELY_UNSET_X') }}", &call(&q)).unwrap_err();
        assert!(e.message.contains("env var `SLUICE_SURELY_UNSET_X` is not set"), "{}", e.message);
    }

    #[test]
    fn return_dispatch_config_get_and_this() {
        let macros = vec![
            (
                "macros/a.sql".to_string(),
                "{% macro cols() %}{{ return(['a', 'b']) }}{% endmacro %}\n{% macro n_cols() %}{{ return(cols() | length) }}{% endmacro %}\n".to_string(),
            ),
            (
                "macros/b.sql".to_string(),
                "{% macro greet(x) %}{{ return(adapter.dispatch('greet')(x)) }}{% endmacro %}\n{% macro default__greet(x) %}hello {{ x }}{% endmacro %}\n{% macro postgres__greet(x) %}{{ return('pg ' ~ x) }}{% endmacro %}\n".to_string(),
            ),
        ];
        let q = quoting();
        let src = "{{ config(materialized='table') }}{% set c = cols() %}select {{ c | join(', ') }}, {{ n_cols() + 1 }} as n, '{{ greet('you') }}' as g, '{{ config.get('materialized') }}/{{ config.get('alias', 'none') }}' as m, '{{ this.schema }}.{{ this.identifier }}' as t from {{ this }}";
        let mut rd = Renderer::new(&macros, serde_json::Map::new()).unwrap();
        assert_eq!(
            rd.render("m.sql", src, &call(&q)).unwrap().sql,
            "select a, b, 3 as n, 'hello you' as g, 'table/none' as m, 'None.m' as t from \"m\""
        );
        rd.add_dbt_globals(serde_json::json!({"type": "postgres", "schema": "s"}), crate::secret::Env::default());
        let out = rd.render("m.sql", src, &call(&q)).unwrap().sql;
        assert!(out.contains("'pg you' as g"), "{out}");
        assert!(out.contains("'s.m' as t"), "{out}");
        let mut c = call(&q);
        c.this = "\"x\".\"my\"\"m\"".into();
        let out = rd.render("m.sql", "{{ this.schema }}/{{ this.name }}", &c).unwrap().sql;
        assert_eq!(out, "x/my\"m");
        let out = rd
            .render(
                "m.sql",
                "{% set d = modules.datetime.date.today() %}{{ d.year > 2000 }} {{ d | string | length }} {{ modules.datetime.datetime.utcnow().strftime('%Y-%m') | length }} {{ d.isoformat() == d | string }}",
                &c,
            )
            .unwrap()
            .sql;
        assert_eq!(out, "True 10 7 True");
        let e = rd.render("m.sql", "{{ adapter.dispatch('nope')() }}", &c).unwrap_err();
        assert!(e.message.contains("no macro postgres__nope or default__nope"), "{}", e.message);
        let e = rd.render("m.sql", "{{ return(1) }}", &c).unwrap_err();
        assert!(e.message.contains("return() works only inside a macro"), "{}", e.message);
        // No arithmetic on dates in minijinja: timedelta says so instead of being undefined.
        let e = rd.render("m.sql", "{{ modules.datetime.timedelta(days=1) }}", &c).unwrap_err();
        assert!(e.message.contains("modules.datetime.timedelta is not supported"), "{}", e.message);
        rd.add_global("schemas", serde_json::json!(["a", "b"]));
        assert_eq!(rd.render("m.sql", "{{ schemas | join(',') }}", &c).unwrap().sql, "a,b");
    }

    /// A resolver whose queries give a fixed table.
    struct Fixed;
    impl Resolve for Fixed {
        fn model(&self, name: &str) -> String {
            quote_ident(name)
        }
        fn source(&self, _source: &str, table: &str) -> String {
            quote_ident(table)
        }
        fn run_query(&self, sql: &str) -> Result<QueryTable, String> {
            if sql.contains("nope") {
                return Err("relation \"nope\" does not exist".into());
            }
            Ok(QueryTable {
                columns: vec!["id".into(), "name".into()],
                rows: vec![
                    vec![serde_json::json!(1), serde_json::json!("a")],
                    vec![serde_json::json!(2), serde_json::json!("b")],
                ],
            })
        }
    }

    #[test]
    fn run_query_gives_a_table_when_executing_and_an_empty_one_while_reading() {
        let src = "{% set t = run_query('select 1') %}{{ execute }}:{{ t | length }}:{{ t.column_names | join(',') }}:\
                   {% for r in t %}{{ r[0] }}{{ r['name'] }};{% endfor %}{{ t.columns[1].name }}={{ t.columns[1].values() | join('') }}:\
                   {{ t.rows[1][0] + 1 }}";
        let q = quoting();
        let reading = "{% set t = run_query('select 1') %}{{ execute }}:{{ t | length }}:{{ t.rows | length }}";
        assert_eq!(renderer().render("m.sql", reading, &call(&q)).unwrap().sql, "False:0:0");
        let fixed: Arc<dyn Resolve> = Arc::new(Fixed);
        let c = call(&fixed);
        assert_eq!(renderer().render("m.sql", src, &c).unwrap().sql, "True:2:id,name:1a;2b;name=ab:3");
        let e = renderer().render("m.sql", "{{ run_query('select * from nope') }}", &c).unwrap_err();
        assert!(e.message.contains("run_query(): relation \"nope\" does not exist"), "{}", e.message);
    }

    #[test]
    fn return_stops_the_macro() {
        let macros = "{% macro first(xs) %}{% for x in xs %}{% if x > 1 %}{{ return(x) }}{% endif %}{% endfor %}{{ return(0) }}{% endmacro %}\n\
                      {% macro guarded() %}{% if not execute %}{{ return([]) }}{% endif %}{{ return(nope_not_defined()) }}{% endmacro %}\n";
        let rd = Renderer::new(&[("macros/m.sql".into(), macros.into())], serde_json::Map::new()).unwrap();
        let q = quoting();
        let out =
            rd.render("m.sql", "{{ first([1, 5, 7]) }}/{{ first([1]) }}/{{ guarded() | length }}", &call(&q)).unwrap();
        assert_eq!(out.sql, "5/0/0");
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

#[cfg(test)]
mod macro_errors {
    use super::*;

    /// An error inside a macro is placed in the file as written (the private
    /// names macros get do not move it).
    #[test]
    fn macro_errors_keep_their_place() {
        let src = "{% macro broken(x) %}\n  {{ nope_fn(x) }}\n{% endmacro %}\n";
        let macros = vec![("macros/bad.sql".to_string(), src.to_string())];
        let rd = Renderer::new(&macros, serde_json::Map::new()).unwrap();
        let q: Arc<dyn Resolve> = Arc::new(Quoting(Arc::new(|n: &str| quote_ident(n))));
        let c = Call { resolve: q, this: "m".into(), is_incremental: false, config: FileConfig::default() };
        let e = rd.render("m.sql", "select {{ broken(1) }}", &c).unwrap_err();
        assert_eq!((e.file.as_deref(), e.line), (Some("macros/bad.sql"), Some(2)));
        let r = e.range.unwrap();
        assert_eq!(&src[r], "nope_fn(x)");
        let bad =
            vec![("macros/bad.sql".to_string(), "{% macro a() %}{% endmacro %}\n{% macro b() %}{{ x }\n".to_string())];
        let e = Renderer::new(&bad, serde_json::Map::new()).err().unwrap();
        assert_eq!(e.line, Some(2), "{e:?}");
    }
}
