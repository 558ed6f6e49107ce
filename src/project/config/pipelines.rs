//! Pipelines and their triggers: `pipelines/*.toml` decoded (its steps in `steps`).

use super::*;

/// One `pipelines/*.toml`.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub file: FileId,
    pub name: Spanned<String>,
    pub description: Option<String>,
    pub triggers: Vec<Trigger>,
    pub max_active_runs: Option<u32>,
    /// How many of the pipeline's tasks may run at once, over all workers.
    pub concurrency: Option<u32>,
    pub steps: Vec<StepConfig>,
}

#[derive(Debug, Clone)]
pub struct Trigger {
    pub loc: Loc,
    pub kind: TriggerKind,
    pub catchup: Option<Catchup>,
    /// How often an `on_new_objects` trigger on an `s3://` prefix lists it.
    pub poll: Option<Spanned<Dur>>,
}

#[derive(Debug, Clone)]
pub enum TriggerKind {
    Cron { expr: Spanned<String>, timezone: Option<Spanned<String>> },
    Every(Spanned<Dur>),
    OnDataset(Spanned<String>),
    OnNewObjects(Spanned<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catchup {
    None,
    Latest,
    All,
}

pub const PIPELINE_KEYS: &[&str] = &["name", "description", "triggers", "max_active_runs", "concurrency", "steps"];

pub const TRIGGER_KEYS: &[&str] = &["cron", "timezone", "every", "on_dataset", "on_new_objects", "catchup", "poll"];

/// Decodes one pipeline file. `stem` is the file name without `.toml`.
pub fn decode_pipeline(root: &Node, cx: &mut Cx, stem: &str) -> Option<PipelineConfig> {
    let mut t = Fields::new(root, cx, format!("pipeline `{stem}`"))?;
    let name = t.opt::<Spanned<String>>(cx, "name").unwrap_or(Spanned { v: stem.to_string(), loc: cx.loc(&(0..0)) });
    if !valid_name(&name) {
        cx.error(span(&name.loc), format!("invalid pipeline name \"{}\"", name.v)).help = Some(NAME_RULE.into());
    }
    t.what = format!("pipeline `{}`", name.v);
    let description = t.opt(cx, "description");
    let max_active_runs = t.opt(cx, "max_active_runs");
    let concurrency: Option<u32> = t.opt(cx, "concurrency");
    if concurrency == Some(0)
        && let Some(n) = t.node("concurrency")
    {
        cx.error(n.span.clone(), "`concurrency` must be at least 1");
    }
    let mut triggers = Vec::new();
    if let Some(node) = t.node("triggers") {
        match &node.v {
            V::Array(items) => {
                for it in items {
                    if let Some(tr) = decode_trigger(it, cx) {
                        triggers.push(tr);
                    }
                }
            }
            _ => {
                cx.error(
                    node.span.clone(),
                    format!(
                        "wrong type for `triggers`: expected an array of tables ([[triggers]]), found {}",
                        node.type_name()
                    ),
                );
            }
        }
    }
    let mut steps = Vec::new();
    match t.node("steps") {
        Some(node) => match &node.v {
            V::Array(items) => {
                for (i, it) in items.iter().enumerate() {
                    if let Some(s) = decode_step(it, cx, i) {
                        steps.push(s);
                    }
                }
            }
            _ => {
                cx.error(
                    node.span.clone(),
                    format!(
                        "wrong type for `steps`: expected an array of tables ([[steps]]), found {}",
                        node.type_name()
                    ),
                );
            }
        },
        None => {
            cx.error(0..0, format!("pipeline `{}` has no steps", name.v)).help = Some(
                "add a step: [[steps]] with `name` and `kind` (ingest, load, sql, export, seed, snapshot, test, clean, command, empty)"
                    .into(),
            );
        }
    }
    t.finish(cx, |k| match k {
        "step" => Some("steps are written as [[steps]]".into()),
        "trigger" | "schedule" | "cron" => {
            Some("schedules are written as [[triggers]] with `cron = \"0 0 * * *\"`".into())
        }
        _ => None,
    });
    Some(PipelineConfig { file: cx.file, name, description, triggers, max_active_runs, concurrency, steps })
}

pub(super) fn decode_trigger(node: &Node, cx: &mut Cx) -> Option<Trigger> {
    let mut t = Fields::new(node, cx, "trigger")?;
    let cron: Option<Spanned<String>> = t.opt(cx, "cron");
    let timezone: Option<Spanned<String>> = t.opt(cx, "timezone");
    let every: Option<Spanned<Dur>> = t.opt(cx, "every");
    let on_dataset: Option<Spanned<String>> = t.opt(cx, "on_dataset");
    let on_new: Option<Spanned<String>> = t.opt(cx, "on_new_objects");
    let poll: Option<Spanned<Dur>> = t.opt(cx, "poll");
    let catchup = t.node("catchup").and_then(|n| {
        one_of(n, cx, "catchup", &[("none", Catchup::None), ("latest", Catchup::Latest), ("all", Catchup::All)])
    });
    let present = ["cron", "every", "on_dataset", "on_new_objects"]
        .iter()
        .filter(|k| t.key_span(k).is_some())
        .copied()
        .collect::<Vec<_>>();
    let tspan = t.span();
    t.finish(cx, |_| None);
    if present.len() != 1 {
        let msg = if present.is_empty() {
            "a trigger needs one of `cron`, `every`, `on_dataset` or `on_new_objects`".to_string()
        } else {
            format!(
                "a trigger takes one of `cron`, `every`, `on_dataset`, `on_new_objects`; this one has {}",
                present.join(" and ")
            )
        };
        cx.error(tspan.start..tspan.start, msg).help = Some("write one [[triggers]] table per trigger".into());
        return None;
    }
    if let Some(tz) = &timezone {
        check_timezone(cx, tz);
        if cron.is_none() {
            cx.error(span(&tz.loc), "`timezone` applies only to `cron` triggers");
        }
    }
    let kind = if let Some(expr) = cron {
        if let Err(e) = croner::Cron::from_str(&expr.v) {
            let why = explain_cron_error(&expr.v).unwrap_or_else(|| e.to_string());
            cx.error(span(&expr.loc), format!("invalid cron expression \"{}\": {why}", expr.v)).help = Some(
                "five fields: minute hour day-of-month month day-of-week, e.g. \"0 0 * * *\" for every night at 00:00"
                    .into(),
            );
            return None;
        }
        TriggerKind::Cron { expr, timezone }
    } else if let Some(e) = every {
        if e.v.0.is_zero() {
            cx.error(span(&e.loc), "`every` must be longer than zero");
            return None;
        }
        TriggerKind::Every(e)
    } else if let Some(d) = on_dataset {
        TriggerKind::OnDataset(d)
    } else {
        let on_new = on_new.expect("one trigger key is present");
        if on_new.v.starts_with("s3://")
            && let Err(e) = crate::sources::s3::parse(&on_new.v)
        {
            cx.error(span(&on_new.loc), e.to_string());
        }
        TriggerKind::OnNewObjects(on_new)
    };
    if let Some(p) = &poll {
        if !matches!(&kind, TriggerKind::OnNewObjects(o) if o.v.starts_with("s3://")) {
            cx.error(span(&p.loc), "`poll` applies only to `on_new_objects` triggers on an s3:// prefix");
        } else if p.v.0.is_zero() {
            cx.error(span(&p.loc), "`poll` must be longer than zero");
        }
    }
    Some(Trigger { loc: cx.loc(&tspan), kind, catchup, poll })
}

/// Says which field of a cron expression is wrong, where croner's message does not.
pub fn explain_cron_error(expr: &str) -> Option<String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if expr.trim_start().starts_with('@') {
        return None;
    }
    let (names, ranges): (&[&str], &[(u32, u32)]) = match fields.len() {
        5 => {
            (&["minute", "hour", "day-of-month", "month", "day-of-week"], &[(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)])
        }
        6 => (
            &["second", "minute", "hour", "day-of-month", "month", "day-of-week"],
            &[(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7)],
        ),
        n => return Some(format!("expected 5 fields (minute hour day-of-month month day-of-week), found {n}")),
    };
    for ((field, name), (lo, hi)) in fields.iter().zip(names).zip(ranges) {
        // Numbers that are values, not step sizes (`*/15`) or `#` ordinals.
        for part in field.split(',') {
            let value_part = part.split('/').next().unwrap_or("");
            let value_part = value_part.split('#').next().unwrap_or("");
            for n in value_part.split('-') {
                if let Ok(v) = n.parse::<u32>()
                    && (v < *lo || v > *hi)
                {
                    return Some(format!("{name} {v} is out of range ({lo}-{hi})"));
                }
            }
        }
    }
    None
}
