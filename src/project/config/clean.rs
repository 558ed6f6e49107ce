//! The `clean` step's config: types, trimming, null markers, dedup, outliers.

use super::*;

/// The `clean` step: a cleaned copy of a table, with what was removed kept
/// apart and a quality score.
#[derive(Debug, Clone)]
pub struct CleanStep {
    /// The table to clean.
    pub table: Spanned<String>,
    /// The cleaned table (replaced each run); `<output>_rejects` and
    /// `<output>_outliers` hold what was taken out.
    pub output: Spanned<String>,
    pub connection: Option<Spanned<String>>,
    /// Values that mean "missing" (after trimming): become NULL.
    pub null_markers: Vec<String>,
    /// Trim spaces around text values.
    pub trim: bool,
    pub dedup: Option<Dedup>,
    /// Per-column rules, in output order (other columns are copied as they are).
    pub columns: Vec<CleanColumn>,
    /// A folder for raw_data.csv, cleaned_data.csv, summary_report.json, quality_metrics.json.
    pub export: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dedup {
    pub key: Vec<String>,
    /// Keep the first or the last row of each key.
    pub keep: Keep,
    /// The column that orders rows of one key (input order when absent).
    pub order_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    First,
    Last,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CleanColumn {
    pub name: String,
    /// The type values are fixed to (the input's type when absent).
    pub ty: Option<crate::types::ColumnType>,
    pub format: Option<String>,
    /// What to do with a value that is not of the type.
    pub on_invalid: OnInvalid,
    pub case: Option<Case>,
    pub outliers: Option<OutlierRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalid {
    /// The value becomes NULL.
    Null,
    /// The row goes to `<output>_rejects` with the reason.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Lower,
    Upper,
}

/// How a numeric column's outliers are found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutlierRule {
    /// Outside [Q1 − k·IQR, Q3 + k·IQR].
    Iqr { k: f64 },
    /// More than `threshold` standard deviations from the mean.
    Zscore { threshold: f64 },
    /// Outside fixed bounds.
    Bounds { min: Option<f64>, max: Option<f64> },
}

/// The null markers a clean step uses unless told otherwise.
pub const DEFAULT_NULL_MARKERS: &[&str] = &["", "N/A", "NA", "n/a", "-", "null", "NULL", "None"];

pub(super) fn decode_clean(t: &mut Fields, cx: &mut Cx) -> Option<CleanStep> {
    let table = t.req(cx, "table");
    let output: Option<Spanned<String>> = t.req(cx, "output");
    let connection = t.opt(cx, "connection");
    let null_markers =
        t.opt(cx, "null_markers").unwrap_or_else(|| DEFAULT_NULL_MARKERS.iter().map(|s| s.to_string()).collect());
    let trim = t.opt(cx, "trim").unwrap_or(true);
    let export = t.opt(cx, "export");
    let dedup = t.node("dedup").and_then(|n| {
        let mut f = Fields::new(n, cx, "dedup")?;
        let key = f.node("key").and_then(|k| string_or_list(k, cx, "key"));
        if key.is_none() {
            cx.error(f.span(), "missing key `key` in dedup").help =
                Some("dedup = { key = [\"id\"], keep = \"last\", order_by = \"updated_at\" }".into());
        }
        let keep = f
            .node("keep")
            .and_then(|k| one_of(k, cx, "keep", &[("first", Keep::First), ("last", Keep::Last)]))
            .unwrap_or(Keep::First);
        let order_by = f.opt(cx, "order_by");
        f.finish(cx, |_| None);
        Some(Dedup { key: key?, keep, order_by })
    });
    let mut columns = Vec::new();
    if let Some(node) = t.node("columns") {
        match &node.v {
            V::Table(entries) => {
                for (k, v) in entries {
                    let Some(mut f) = Fields::new(v, cx, format!("column `{}`", k.name)) else { continue };
                    let ty: Option<Spanned<String>> = f.opt(cx, "type");
                    let format = f.opt(cx, "format");
                    let on_invalid = f
                        .node("on_invalid")
                        .and_then(|n| {
                            one_of(n, cx, "on_invalid", &[("null", OnInvalid::Null), ("reject", OnInvalid::Reject)])
                        })
                        .unwrap_or(OnInvalid::Reject);
                    let case = f
                        .node("case")
                        .and_then(|n| one_of(n, cx, "case", &[("lower", Case::Lower), ("upper", Case::Upper)]));
                    let outliers = f.node("outliers").and_then(|n| decode_outliers(n, cx));
                    f.finish(cx, |_| None);
                    let ty = match ty {
                        None => None,
                        Some(t) => match crate::types::ColumnType::parse(&t.v) {
                            Ok(ct) => Some(ct),
                            Err(e) => {
                                cx.error(span(&t.loc), format!("column `{}`: {e}", k.name));
                                continue;
                            }
                        },
                    };
                    if outliers.is_some() && ty.is_some_and(|t| !t.is_numeric()) {
                        cx.error(v.span.clone(), format!("column `{}`: outlier rules need a numeric type", k.name));
                    }
                    columns.push(CleanColumn { name: k.name.clone(), ty, format, on_invalid, case, outliers });
                }
            }
            _ => {
                cx.error(
                    node.span.clone(),
                    format!("wrong type for `columns`: expected a table, found {}", node.type_name()),
                );
            }
        }
    }
    if let (Some(tb), Some(o)) = (&table, &output) {
        let tb: &Spanned<String> = tb;
        if tb.v == o.v {
            cx.error(span(&o.loc), "`output` must differ from `table`: the input is kept as it was");
        }
    }
    Some(CleanStep { table: table?, output: output?, connection, null_markers, trim, dedup, columns, export })
}

pub(super) fn decode_outliers(n: &Node, cx: &mut Cx) -> Option<OutlierRule> {
    let mut f = Fields::new(n, cx, "outliers")?;
    let method: Option<String> = f.req(cx, "method");
    let rule = match method.as_deref() {
        Some("iqr") => Some(OutlierRule::Iqr { k: f.opt(cx, "k").unwrap_or(1.5) }),
        Some("zscore") => Some(OutlierRule::Zscore { threshold: f.opt(cx, "threshold").unwrap_or(3.0) }),
        Some("bounds") => {
            let min = f.opt(cx, "min");
            let max = f.opt(cx, "max");
            if min.is_none() && max.is_none() {
                cx.error(f.span(), "bounds need `min`, `max` or both");
            }
            Some(OutlierRule::Bounds { min, max })
        }
        Some(other) => {
            let sp = f.node("method").map(|m| m.span.clone()).unwrap_or(f.span());
            cx.error(sp, format!("unknown outlier method \"{other}\"")).help =
                Some("use iqr (with k), zscore (with threshold) or bounds (with min/max)".into());
            None
        }
        None => None,
    };
    f.finish(cx, |_| None);
    rule
}
