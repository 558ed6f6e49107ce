//! Steps: the keys every step has, `StepKind`, and the config of the kinds
//! too small for a file of their own (seed, snapshot, test, sql, command).
//! Which kinds exist is `kinds::KINDS`.

use super::*;

#[derive(Debug, Clone)]
pub struct StepConfig {
    pub loc: Loc,
    pub name: Spanned<String>,
    pub depends_on: Vec<Spanned<String>>,
    pub retries: Option<u32>,
    /// The first retry's delay; each next one doubles (with jitter).
    pub retry_delay: Option<Dur>,
    pub retry_on: Option<RetryOn>,
    pub timeout: Option<Dur>,
    pub kind: StepKind,
}

/// Which failures a step's retries are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// Failures that may pass: a server unreachable or gone, a dropped
    /// connection, a timeout, a worker that stopped.
    Transient,
    /// Every failure, bad data and SQL errors included.
    Any,
}

impl RetryOn {
    pub fn name(self) -> &'static str {
        match self {
            RetryOn::Transient => "transient",
            RetryOn::Any => "any",
        }
    }
}

/// The `command` step: a program run with the run's facts in its environment.
/// Its arguments and environment values are kept as written: `${env:…}` and
/// `${file:…}` references are resolved when the step runs (and never shown).
#[derive(Debug, Clone)]
pub struct CommandStep {
    /// The program and its arguments; a single string runs through `sh -c`.
    pub argv: Vec<Spanned<String>>,
    /// Whether the command was one string, run through `sh -c` as written
    /// (the shell expands its own `$VARIABLES`; nothing is resolved in it).
    pub shell: bool,
    pub env: Vec<(String, Spanned<String>)>,
}

impl CommandStep {
    /// The program and its arguments as written.
    pub fn written(&self) -> Vec<String> {
        self.argv.iter().map(|a| a.v.clone()).collect()
    }
}

#[derive(Debug, Clone)]
pub enum StepKind {
    Ingest(IngestStep),
    Load(LoadStep),
    Sql(SqlStep),
    Export(ExportStep),
    /// Loads `seeds/*.csv`.
    Seed(NodeStep),
    /// Takes `snapshots/*.sql`.
    Snapshot(NodeStep),
    /// Runs data tests.
    Test(NodeStep),
    /// Cleans a table: types, trimming, nulls, duplicates, outliers, quality.
    Clean(CleanStep),
    /// Runs a program.
    Command(CommandStep),
    /// Does nothing: a join point in the DAG.
    Empty,
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Ingest(_) => "ingest",
            StepKind::Load(_) => "load",
            StepKind::Sql(_) => "sql",
            StepKind::Export(_) => "export",
            StepKind::Seed(_) => "seed",
            StepKind::Snapshot(_) => "snapshot",
            StepKind::Test(_) => "test",
            StepKind::Clean(_) => "clean",
            StepKind::Command(_) => "command",
            StepKind::Empty => "empty",
        }
    }
}

/// A step over selected seeds, snapshots or tests.
#[derive(Debug, Clone)]
pub struct NodeStep {
    pub select: Vec<String>,
    pub exclude: Vec<String>,
    pub connection: Option<Spanned<String>>,
}

#[derive(Debug, Clone)]
pub struct SqlStep {
    /// Models to build by name (all when neither this nor `select` is given).
    pub models: Option<Vec<Spanned<String>>>,
    /// dbt-style selectors: `name`, `name+`, `+name`, `tag:x`, `path:models/marts`.
    pub select: Vec<String>,
    pub exclude: Vec<String>,
    pub connection: Option<Spanned<String>>,
    /// Models built at once (default: `[models] threads`, else 4).
    pub threads: Option<usize>,
}

/// The keys every step has, whatever its kind.
pub const STEP_COMMON_KEYS: &[&str] = &["name", "kind", "depends_on", "retries", "retry_delay", "retry_on", "timeout"];

pub(super) fn decode_step(node: &Node, cx: &mut Cx, index: usize) -> Option<StepConfig> {
    let mut t = Fields::new(node, cx, format!("step #{}", index + 1))?;
    let name: Option<Spanned<String>> = t.req(cx, "name");
    if let Some(n) = &name {
        t.what = format!("step `{}`", n.v);
        if !valid_name(n) {
            cx.error(span(&n.loc), format!("invalid step name \"{}\"", n.v)).help = Some(NAME_RULE.into());
        }
    }
    let kinds: Vec<(&'static str, &'static str)> = KINDS.iter().map(|k| (k.name, k.name)).collect();
    let kind = match t.node("kind") {
        Some(n) => one_of(n, cx, "kind", &kinds),
        None => {
            let what = t.what.clone();
            cx.error(t.span().start..t.span().start, format!("missing key `kind` in {what}")).help =
                Some(format!("add `kind = \"…\"`: one of {}", step_kind_names()));
            None
        }
    };
    let depends_on: Vec<Spanned<String>> = t.opt(cx, "depends_on").unwrap_or_default();
    let retries = t.opt(cx, "retries");
    let retry_delay = t.opt(cx, "retry_delay");
    let retry_on = t
        .node("retry_on")
        .and_then(|n| one_of(n, cx, "retry_on", &[("transient", RetryOn::Transient), ("any", RetryOn::Any)]));
    let timeout = t.opt(cx, "timeout");
    let step_kind = match kind.and_then(step_kind) {
        Some(k) => (k.decode)(&mut t, cx),
        None => {
            // Without a kind, every kind's keys are accepted so only the kind is reported.
            for k in KINDS {
                t.allow(k.keys);
            }
            None
        }
    };
    let this_kind = kind.unwrap_or("");
    t.finish(cx, |k| {
        let owners: Vec<&str> = KINDS.iter().filter(|d| d.keys.contains(&k)).map(|d| d.name).collect();
        if owners.is_empty() {
            None
        } else {
            let list = match owners.split_last() {
                Some((last, [])) => last.to_string(),
                Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
                None => String::new(),
            };
            Some(format!("`{k}` is a key of {list} steps, not of {this_kind} steps"))
        }
    });
    let loc = cx.loc(&node.span);
    Some(StepConfig { loc, name: name?, depends_on, retries, retry_delay, retry_on, timeout, kind: step_kind? })
}

pub(super) fn decode_sql(t: &mut Fields, cx: &mut Cx) -> Option<SqlStep> {
    let models = t.opt(cx, "models");
    let select = t.node("select").and_then(|n| string_or_list(n, cx, "select")).unwrap_or_default();
    let exclude = t.node("exclude").and_then(|n| string_or_list(n, cx, "exclude")).unwrap_or_default();
    let connection = t.opt(cx, "connection");
    let threads = t.opt(cx, "threads");
    Some(SqlStep { models, select, exclude, connection, threads })
}

pub(super) fn decode_command(t: &mut Fields, cx: &mut Cx) -> Option<CommandStep> {
    let node = t.node("command");
    let mut shell = false;
    let argv = match node {
        None => {
            cx.error(t.span(), "missing key `command` in a command step").help =
                Some("command = [\"python3\", \"scripts/fetch.py\"] or command = \"./run.sh > out.log\"".into());
            None
        }
        Some(n) => match &n.v {
            V::Str(s) => {
                shell = true;
                let loc = cx.loc(&n.span);
                Some(
                    ["sh", "-c", s.as_str()]
                        .into_iter()
                        .map(|a| Spanned { v: a.to_string(), loc: loc.clone() })
                        .collect::<Vec<_>>(),
                )
            }
            _ => match Vec::<Spanned<Written>>::decode(n, cx, Some("command")) {
                Some(v) if v.is_empty() => {
                    cx.error(n.span.clone(), "`command` is empty");
                    None
                }
                Some(v) => {
                    let argv: Vec<Spanned<String>> = v.into_iter().map(|a| Spanned { v: a.v.0, loc: a.loc }).collect();
                    for a in &argv {
                        check_refs(cx, a);
                    }
                    Some(argv)
                }
                None => None,
            },
        },
    };
    let mut env = Vec::new();
    if let Some(n) = t.node("env") {
        match &n.v {
            V::Table(entries) => {
                for (k, v) in entries {
                    if let Some(s) = Spanned::<Written>::decode(v, cx, Some(&k.name)) {
                        let s = Spanned { v: s.v.0, loc: s.loc };
                        check_refs(cx, &s);
                        env.push((k.name.clone(), s));
                    }
                }
            }
            _ => {
                cx.error(n.span.clone(), format!("wrong type for `env`: expected a table, found {}", n.type_name()));
            }
        }
    }
    Some(CommandStep { argv: argv?, shell, env })
}

/// Reports malformed `${…}` references in a value kept as written (what the
/// environment holds is checked when the value is used).
pub(super) fn check_refs(cx: &mut Cx, s: &Spanned<String>) {
    if let Err(e) = crate::secret::check_refs(&s.v) {
        cx.error(span(&s.loc), e);
    }
}

pub(super) fn decode_node_step(t: &mut Fields, cx: &mut Cx) -> NodeStep {
    let select = t.node("select").and_then(|n| string_or_list(n, cx, "select")).unwrap_or_default();
    let exclude = t.node("exclude").and_then(|n| string_or_list(n, cx, "exclude")).unwrap_or_default();
    let connection = t.opt(cx, "connection");
    NodeStep { select, exclude, connection }
}
