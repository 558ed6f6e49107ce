//! `clean`: a cleaned copy of a table, nothing lost.
//!
//! 1. The input streams through the same strict value parsers as the loader:
//!    text is trimmed, null markers (`''`, `N/A`, `-`, …) become NULL, case is
//!    normalised, and each configured column is fixed to its type — a value
//!    that does not parse is set to NULL or its row is kept in
//!    `<output>_rejects` with the reason, as the column says. Rows go into a
//!    staging table through the warehouse's bulk path.
//! 2. SQL in the warehouse's dialect does the rest: de-duplication on a key
//!    (keep the first or last row by a column, or by input order), then outlier
//!    removal per numeric column (IQR with k, z-score with a threshold, or fixed
//!    bounds); removed rows are kept in `<output>_outliers` with the rule that
//!    removed them.
//! 3. A quality score per column and for the table is computed, recorded in
//!    `_sluice_quality` (one row per column and run), and with `export` written
//!    beside `raw_data.csv` and `cleaned_data.csv` as `quality_metrics.json` and
//!    `summary_report.json`.
//!
//! Quality (documented in docs/cleaning.md): for each column, completeness =
//! present values / rows; validity = values of the right type and inside the
//! column's outlier bounds / present values; uniqueness = distinct / present
//! values (reported, not scored). Column score = 100 × (completeness +
//! validity) / 2. Table: completeness and validity are the means over its
//! columns, uniqueness = rows left after de-duplication / rows (1 without a
//! key); score = 100 × (0.4 × completeness + 0.4 × validity + 0.2 × uniqueness).

use std::path::Path;

use serde::Serialize;
use serde_json::json;

use super::{DatasetKind, DatasetUpdate, RunCtx, StepOutput, count};
use crate::error::{Error, Result, RowError};
use crate::project::{Case, CleanColumn, CleanStep, Keep, LoadMode, Materialized, OutlierRule};
use crate::types::{Column, ColumnType, NullRule, RowBatch, Schema, Val, parse_value};
use crate::warehouse::{Build, LoadTarget, RowSink, Warehouse, format_val};

/// The name of the table quality is recorded in.
pub const QUALITY_TABLE: &str = "_sluice_quality";
const ROW: &str = "__sluice_row";

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ColumnQuality {
    pub column: String,
    pub rows: u64,
    pub present: u64,
    pub invalid_type: u64,
    pub outliers: u64,
    pub distinct: u64,
    pub completeness: f64,
    pub validity: f64,
    pub uniqueness: f64,
    pub score: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Quality {
    pub table: String,
    pub completeness: f64,
    pub validity: f64,
    pub uniqueness: f64,
    pub score: f64,
    pub columns: Vec<ColumnQuality>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CleanReport {
    pub input: String,
    pub output: String,
    pub rows_in: u64,
    pub rows_out: u64,
    /// Rows kept in `<output>_rejects` (a value not of its column's type).
    pub rejected: u64,
    /// Values set to NULL because they were not of their column's type.
    pub nulled: u64,
    pub duplicates: u64,
    /// Rows removed per rule (`iqr(temperature)`), in rule order.
    pub outliers: Vec<(String, u64)>,
    pub quality: Quality,
}

/// The output columns: the input's, with configured types.
fn output_schema(input: &Schema, cfg: &CleanStep) -> Result<Vec<(Column, Option<CleanColumn>)>> {
    for c in &cfg.columns {
        if input.index_of(&c.name).is_none() {
            let names = input.names();
            let hint = crate::error::suggest(&c.name, &names).map(|h| format!("; {h}")).unwrap_or_default();
            return Err(Error::user(format!("table `{}` has no column `{}`{hint}", cfg.table.v, c.name)));
        }
    }
    Ok(input
        .columns
        .iter()
        .map(|col| {
            let conf = cfg.columns.iter().find(|c| c.name == col.name).cloned();
            let mut out = Column::new(&col.name, conf.as_ref().and_then(|c| c.ty).unwrap_or(col.ty));
            out.format = conf.as_ref().and_then(|c| c.format.clone());
            (out, conf)
        })
        .collect())
}

struct Stats {
    present: Vec<u64>,
    invalid: Vec<u64>,
}

/// Streams input rows into the staging table, fixing values on the way.
struct Fixer<'a> {
    cols: &'a [(Column, Option<CleanColumn>)],
    cfg: &'a CleanStep,
    tx: Box<dyn crate::warehouse::LoadTx + 'a>,
    batch: RowBatch,
    row: u64,
    stats: Stats,
    nulled: u64,
    rejects: Vec<RowError>,
    text: Vec<Option<String>>,
    /// The row's values as they were, for the rejects table.
    raw: Vec<String>,
    buf: Vec<u8>,
}

impl RowSink for Fixer<'_> {
    fn columns(&mut self, _names: &[String]) -> Result<()> {
        Ok(())
    }

    fn row(&mut self, vals: &[Val]) -> Result<()> {
        self.row += 1;
        self.raw.clear();
        // Each value as text, trimmed, with null markers and case applied.
        for (i, v) in vals.iter().enumerate() {
            self.text[i] = match v {
                Val::Null => {
                    self.raw.push(String::new());
                    None
                }
                v => {
                    self.buf.clear();
                    format_val(&mut self.buf, v);
                    let s = String::from_utf8_lossy(&self.buf);
                    self.raw.push(s.to_string());
                    let t = if self.cfg.trim { s.trim() } else { &s };
                    if self.cfg.null_markers.iter().any(|m| m == t) {
                        None
                    } else {
                        Some(match self.cols[i].1.as_ref().and_then(|c| c.case) {
                            Some(Case::Lower) => t.to_lowercase(),
                            Some(Case::Upper) => t.to_uppercase(),
                            None => t.to_string(),
                        })
                    }
                }
            };
        }
        let mut reject: Option<RowError> = None;
        let nulls = NullRule::default();
        for (i, (col, conf)) in self.cols.iter().enumerate() {
            let Some(s) = &self.text[i] else {
                self.batch.push_cell(&Val::Null);
                continue;
            };
            self.stats.present[i] += 1;
            match parse_value(col, s.as_bytes(), true, &nulls) {
                Ok(v) => self.batch.push_cell(&v),
                Err(reason) => {
                    self.stats.invalid[i] += 1;
                    match conf.as_ref().map(|c| c.on_invalid) {
                        Some(crate::project::OnInvalid::Null) => {
                            self.nulled += 1;
                            self.batch.push_cell(&Val::Null);
                        }
                        _ => {
                            if reject.is_none() {
                                let record = self.raw.join("\t");
                                reject = Some(RowError {
                                    file: self.cfg.table.v.clone(),
                                    line: self.row,
                                    column: Some(col.name.clone()),
                                    value: Some(s.clone()),
                                    reason,
                                    record: Some(record),
                                });
                            }
                            self.batch.push_cell(&Val::Null);
                        }
                    }
                }
            }
        }
        match reject {
            Some(r) => {
                self.batch.discard_partial_row();
                self.rejects.push(r);
            }
            None => {
                self.batch.push_cell(&Val::Int(self.row as i64));
                self.batch.finish_row(self.row);
            }
        }
        if self.batch.len() >= 4096 {
            self.tx.write(&self.batch)?;
            self.batch.clear();
        }
        Ok(())
    }
}

/// Collects the first column of a query's rows as text.
struct Firsts(Vec<Option<String>>);

impl RowSink for Firsts {
    fn columns(&mut self, _: &[String]) -> Result<()> {
        Ok(())
    }
    fn row(&mut self, vals: &[Val]) -> Result<()> {
        self.0.push(vals.first().filter(|v| **v != Val::Null).map(|v| {
            let mut b = Vec::new();
            format_val(&mut b, v);
            String::from_utf8_lossy(&b).into_owned()
        }));
        Ok(())
    }
}

/// Collects every row as text.
struct Rows(Vec<Vec<Option<String>>>);

impl RowSink for Rows {
    fn columns(&mut self, _: &[String]) -> Result<()> {
        Ok(())
    }
    fn row(&mut self, vals: &[Val]) -> Result<()> {
        self.0.push(
            vals.iter()
                .map(|v| {
                    (*v != Val::Null).then(|| {
                        let mut b = Vec::new();
                        format_val(&mut b, v);
                        String::from_utf8_lossy(&b).into_owned()
                    })
                })
                .collect(),
        );
        Ok(())
    }
}

fn num(s: &Option<String>) -> Option<f64> {
    s.as_deref().and_then(|x| x.parse::<f64>().ok())
}

fn rows_of(wh: &mut dyn Warehouse, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    let mut r = Rows(Vec::new());
    wh.query(sql, &mut r)?;
    Ok(r.0)
}

fn count_of(wh: &mut dyn Warehouse, sql: &str) -> Result<u64> {
    Ok(rows_of(wh, sql)?.first().and_then(|r| num(&r[0])).unwrap_or(0.0) as u64)
}

/// A float as an SQL literal.
fn lit(f: f64) -> String {
    format!("{f:?}")
}

/// The bounds values must stay inside for a rule (`None` on a side: open).
fn bounds(wh: &mut dyn Warehouse, dedup: &str, col: &str, rule: OutlierRule) -> Result<(Option<f64>, Option<f64>)> {
    let c = wh.quote(col);
    Ok(match rule {
        OutlierRule::Bounds { min, max } => (min, max),
        OutlierRule::Zscore { threshold } => {
            let r = rows_of(wh, &format!("SELECT COUNT({c}), SUM({c}), SUM({c} * {c}) FROM {dedup} d"))?;
            let (n, s, ss) = (num(&r[0][0]).unwrap_or(0.0), num(&r[0][1]).unwrap_or(0.0), num(&r[0][2]).unwrap_or(0.0));
            if n < 2.0 {
                return Ok((None, None));
            }
            let mean = s / n;
            let var = ((ss - n * mean * mean) / (n - 1.0)).max(0.0);
            let sd = var.sqrt();
            if sd == 0.0 {
                return Ok((None, None));
            }
            (Some(mean - threshold * sd), Some(mean + threshold * sd))
        }
        OutlierRule::Iqr { k } => {
            let n = count_of(wh, &format!("SELECT COUNT({c}) FROM {dedup} d"))?;
            if n < 2 {
                return Ok((None, None));
            }
            let d = wh.dialect();
            let mut at = |pos: u64| -> Result<f64> {
                let sql =
                    d.limit_offset(&format!("SELECT {c} FROM {dedup} d WHERE {c} IS NOT NULL ORDER BY {c}"), 1, pos);
                let mut f = Firsts(Vec::new());
                wh.query(&sql, &mut f)?;
                Ok(f.0.first().and_then(num).unwrap_or(0.0))
            };
            // Linear interpolation between closest ranks (type 7, the common default).
            let mut quantile = |q: f64| -> Result<f64> {
                let p = (n - 1) as f64 * q;
                let (lo, hi) = (p.floor() as u64, p.ceil() as u64);
                let a = at(lo)?;
                let b = if hi == lo { a } else { at(hi)? };
                Ok(a + (b - a) * (p - lo as f64))
            };
            let q1 = quantile(0.25)?;
            let q3 = quantile(0.75)?;
            let iqr = q3 - q1;
            (Some(q1 - k * iqr), Some(q3 + k * iqr))
        }
    })
}

fn rule_label(col: &str, rule: OutlierRule) -> String {
    match rule {
        OutlierRule::Iqr { k } => format!("iqr(k={k}) on {col}"),
        OutlierRule::Zscore { threshold } => format!("zscore(>{threshold}) on {col}"),
        OutlierRule::Bounds { min, max } => format!(
            "bounds({}..{}) on {col}",
            min.map(|x| x.to_string()).unwrap_or_default(),
            max.map(|x| x.to_string()).unwrap_or_default()
        ),
    }
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Cleans `cfg.table` into `cfg.output`. `read` and `write` are two
/// connections to the same warehouse (the input streams out of one while the
/// staging table fills through the other).
pub fn clean(
    read: &mut dyn Warehouse,
    write: &mut dyn Warehouse,
    cfg: &CleanStep,
    run_id: &str,
) -> Result<CleanReport> {
    let table = cfg.table.v.as_str();
    let output = cfg.output.v.as_str();
    let input = write
        .table_schema(table)?
        .ok_or_else(|| Error::user(format!("table `{table}` does not exist in {}", write.describe())))?;
    let cols = output_schema(&input, cfg)?;
    let out_schema = Schema::new(cols.iter().map(|(c, _)| c.clone()).collect());
    let mut stage_schema = out_schema.clone();
    stage_schema.columns.push(Column::new(ROW, ColumnType::BigInt));
    let stage = format!("{output}__sluice_stage");

    // 1. Fix values on the way into the staging table.
    let target = LoadTarget {
        table: &stage,
        columns: &stage_schema.columns,
        schema: &stage_schema,
        mode: LoadMode::Replace,
        key: &[],
        changes: &[],
        run_id,
        quarantine: false,
        track_loads: false,
    };
    let n = cols.len();
    let (rows_in, stats, nulled, rejects) = {
        let tx = write.begin_load(&target)?;
        let mut fixer = Fixer {
            cols: &cols,
            cfg,
            tx,
            batch: RowBatch::new(n + 1),
            row: 0,
            stats: Stats { present: vec![0; n], invalid: vec![0; n] },
            nulled: 0,
            rejects: Vec::new(),
            text: vec![None; n],
            raw: Vec::with_capacity(n),
            buf: Vec::new(),
        };
        let names: Vec<String> = input.columns.iter().map(|c| read.quote(&c.name)).collect();
        let select = format!("SELECT {} FROM {}", names.join(", "), read.relation(table));
        if let Err(e) = read.query(&select, &mut fixer) {
            fixer.tx.rollback()?;
            return Err(e);
        }
        if !fixer.batch.is_empty() {
            fixer.tx.write(&fixer.batch)?;
        }
        let Fixer { tx, row, stats, nulled, rejects, .. } = fixer;
        tx.commit(&[])?;
        (row, stats, nulled, rejects)
    };

    // 2. Rejected rows.
    let rejects_table = format!("{output}_rejects");
    let rej_schema = Schema::new(vec![
        Column::new("source_row", ColumnType::BigInt),
        Column::new("column_name", ColumnType::Text),
        Column::new("value", ColumnType::Text),
        Column::new("error", ColumnType::Text),
        Column::new("record", ColumnType::Text),
    ]);
    {
        let target = LoadTarget {
            table: &rejects_table,
            columns: &rej_schema.columns,
            schema: &rej_schema,
            mode: LoadMode::Replace,
            key: &[],
            changes: &[],
            run_id,
            quarantine: false,
            track_loads: false,
        };
        let mut tx = write.begin_load(&target)?;
        let mut b = RowBatch::new(5);
        for r in &rejects {
            b.push(
                &[
                    Val::Int(r.line as i64),
                    Val::Text(r.column.as_deref().unwrap_or("")),
                    Val::Text(r.value.as_deref().unwrap_or("")),
                    Val::Text(&r.reason),
                    Val::Text(r.record.as_deref().unwrap_or("")),
                ],
                r.line,
            );
        }
        if !b.is_empty() {
            tx.write(&b)?;
        }
        tx.commit(&[])?;
    }

    // 3. De-duplicate, then find outliers.
    let naming = write.naming();
    let q = |c: &str| naming.quote(c);
    let stage_rel = write.relation(&stage);
    let out_cols: Vec<String> = out_schema.columns.iter().map(|c| q(&c.name)).collect();
    let dedup_rel = match &cfg.dedup {
        None => format!("(SELECT * FROM {stage_rel})"),
        Some(d) => {
            for k in d.key.iter().chain(d.order_by.iter()) {
                if out_schema.index_of(k).is_none() {
                    return Err(Error::user(format!("dedup: table `{table}` has no column `{k}`")));
                }
            }
            let dir = if d.keep == Keep::First { "ASC" } else { "DESC" };
            let order = match &d.order_by {
                Some(o) => format!("{} {dir}, {} {dir}", q(o), q(ROW)),
                None => format!("{} {dir}", q(ROW)),
            };
            let part: Vec<String> = d.key.iter().map(|k| q(k)).collect();
            format!(
                "(SELECT * FROM (SELECT s.*, ROW_NUMBER() OVER (PARTITION BY {} ORDER BY {order}) AS sluice_rn FROM {stage_rel} s) t WHERE sluice_rn = 1)",
                part.join(", ")
            )
        }
    };
    let staged = count_of(write, &format!("SELECT COUNT(*) FROM {stage_rel}"))?;
    let kept = count_of(write, &format!("SELECT COUNT(*) FROM {dedup_rel} d"))?;
    let mut conds: Vec<(String, String, usize)> = Vec::new();
    for (i, (col, conf)) in cols.iter().enumerate() {
        let Some(rule) = conf.as_ref().and_then(|c| c.outliers) else { continue };
        let (lo, hi) = bounds(write, &dedup_rel, &col.name, rule)?;
        let c = format!("d.{}", q(&col.name));
        let mut parts = Vec::new();
        if let Some(l) = lo {
            parts.push(format!("{c} < {}", lit(l)));
        }
        if let Some(h) = hi {
            parts.push(format!("{c} > {}", lit(h)));
        }
        if !parts.is_empty() {
            conds.push((format!("({c} IS NOT NULL AND ({}))", parts.join(" OR ")), rule_label(&col.name, rule), i));
        }
    }
    let any = if conds.is_empty() {
        "1 = 0".to_string()
    } else {
        conds.iter().map(|(c, ..)| c.as_str()).collect::<Vec<_>>().join(" OR ")
    };
    let select_out = format!(
        "SELECT {} FROM {dedup_rel} d WHERE NOT ({any})",
        out_cols.iter().map(|c| format!("d.{c}")).collect::<Vec<_>>().join(", ")
    );
    write.materialize(
        output,
        &select_out,
        &Build { kind: Materialized::Table, contract: Some(&out_schema), unique_key: None },
    )?;
    let mut outliers_schema = out_schema.clone();
    outliers_schema.columns.push(Column::new("removed_by", ColumnType::Text));
    let case = if conds.is_empty() {
        "''".to_string()
    } else {
        format!(
            "CASE {} END",
            conds.iter().map(|(c, l, _)| format!("WHEN {c} THEN {}", sql_str(l))).collect::<Vec<_>>().join(" ")
        )
    };
    let select_outliers = format!(
        "SELECT {}, {case} AS removed_by FROM {dedup_rel} d WHERE {any}",
        out_cols.iter().map(|c| format!("d.{c}")).collect::<Vec<_>>().join(", ")
    );
    let outliers_table = format!("{output}_outliers");
    write.materialize(
        &outliers_table,
        &select_outliers,
        &Build { kind: Materialized::Table, contract: Some(&outliers_schema), unique_key: None },
    )?;
    let rows_out = count_of(write, &format!("SELECT COUNT(*) FROM {}", naming.relation(output)))?;
    let mut outliers = Vec::new();
    let mut col_outliers = vec![0u64; n];
    for (c, label, i) in &conds {
        let sql = format!(
            "SELECT COUNT(*) FROM {} d WHERE removed_by = {}",
            naming.relation(&outliers_table),
            sql_str(label)
        );
        let removed = count_of(write, &sql)?;
        outliers.push((label.clone(), removed));
        col_outliers[*i] = count_of(write, &format!("SELECT COUNT(*) FROM {dedup_rel} d WHERE {c}"))?;
    }

    // 4. Quality.
    let mut columns = Vec::new();
    for (i, (col, _)) in cols.iter().enumerate() {
        let r = rows_of(write, &format!("SELECT COUNT(DISTINCT {0}) FROM {stage_rel}", q(&col.name)))?;
        let distinct = num(&r[0][0]).unwrap_or(0.0) as u64;
        let present = stats.present[i];
        let completeness = if rows_in == 0 { 1.0 } else { present as f64 / rows_in as f64 };
        let good = present.saturating_sub(stats.invalid[i] + col_outliers[i]);
        let validity = if present == 0 { 1.0 } else { good as f64 / present as f64 };
        let valid_present = present - stats.invalid[i];
        let uniqueness = if valid_present == 0 { 1.0 } else { (distinct as f64 / valid_present as f64).min(1.0) };
        columns.push(ColumnQuality {
            column: col.name.clone(),
            rows: rows_in,
            present,
            invalid_type: stats.invalid[i],
            outliers: col_outliers[i],
            distinct,
            completeness: round4(completeness),
            validity: round4(validity),
            uniqueness: round4(uniqueness),
            score: round2(100.0 * (completeness + validity) / 2.0),
        });
    }
    let mean = |f: fn(&ColumnQuality) -> f64| {
        if columns.is_empty() { 1.0 } else { columns.iter().map(f).sum::<f64>() / columns.len() as f64 }
    };
    let completeness = mean(|c| c.completeness);
    let validity = mean(|c| c.validity);
    let uniqueness = if cfg.dedup.is_none() || staged == 0 { 1.0 } else { kept as f64 / staged as f64 };
    let quality = Quality {
        table: output.to_string(),
        completeness: round4(completeness),
        validity: round4(validity),
        uniqueness: round4(uniqueness),
        score: round2(100.0 * (0.4 * completeness + 0.4 * validity + 0.2 * uniqueness)),
        columns,
    };
    record_quality(write, &quality, run_id)?;
    drop_table(write, &stage)?;
    Ok(CleanReport {
        input: table.to_string(),
        output: output.to_string(),
        rows_in,
        rows_out,
        rejected: rejects.len() as u64,
        nulled,
        duplicates: staged - kept,
        outliers,
        quality,
    })
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn drop_table(wh: &mut dyn Warehouse, name: &str) -> Result<()> {
    if wh.table_schema(name)?.is_some() {
        wh.execute(&format!("DROP TABLE {}", wh.relation(name)))?;
    }
    Ok(())
}

/// Appends a run's quality to `_sluice_quality` (one row per column, and one
/// with an empty column name for the table).
fn record_quality(wh: &mut dyn Warehouse, q: &Quality, run_id: &str) -> Result<()> {
    let d = wh.dialect();
    if wh.table_schema(QUALITY_TABLE)?.is_none() {
        let cols = [
            ("run_id", ColumnType::Varchar(64)),
            ("table_name", ColumnType::Varchar(128)),
            ("column_name", ColumnType::Varchar(128)),
            ("completeness", ColumnType::Float),
            ("validity", ColumnType::Float),
            ("uniqueness", ColumnType::Float),
            ("score", ColumnType::Float),
            ("row_count", ColumnType::BigInt),
            ("measured_at", ColumnType::Timestamp),
        ];
        let defs: Vec<String> = cols.iter().map(|(n, t)| format!("{} {}", d.quote(n), d.sql_type(*t))).collect();
        wh.execute(&format!("CREATE TABLE {} ({})", wh.relation(QUALITY_TABLE), defs.join(", ")))?;
    }
    let now = d.timestamp_literal(chrono::Utc::now().timestamp_micros());
    let rows_count = q.columns.first().map(|c| c.rows).unwrap_or(0);
    let mut values = vec![format!(
        "({}, {}, '', {}, {}, {}, {}, {rows_count}, {now})",
        sql_str(run_id),
        sql_str(&q.table),
        lit(q.completeness),
        lit(q.validity),
        lit(q.uniqueness),
        lit(q.score)
    )];
    for c in &q.columns {
        values.push(format!(
            "({}, {}, {}, {}, {}, {}, {}, {}, {now})",
            sql_str(run_id),
            sql_str(&q.table),
            sql_str(&c.column),
            lit(c.completeness),
            lit(c.validity),
            lit(c.uniqueness),
            lit(c.score),
            c.rows
        ));
    }
    let names = [
        "run_id",
        "table_name",
        "column_name",
        "completeness",
        "validity",
        "uniqueness",
        "score",
        "row_count",
        "measured_at",
    ];
    let cols: Vec<String> = names.iter().map(|n| d.quote(n)).collect();
    if let Some(b) = d.begin() {
        wh.execute(b)?;
    }
    for v in values {
        wh.execute(&format!("INSERT INTO {} ({}) VALUES {v}", wh.relation(QUALITY_TABLE), cols.join(", ")))?;
    }
    if d.needs_commit() {
        wh.execute("COMMIT")?;
    }
    Ok(())
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(v).expect("JSON")).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("write", path, e))
}

/// The summary report's JSON.
pub fn summary_json(r: &CleanReport) -> serde_json::Value {
    json!({
        "input_table": r.input,
        "output_table": r.output,
        "rows_in": r.rows_in,
        "rows_out": r.rows_out,
        "removed": {
            "invalid_type": r.rejected,
            "duplicates": r.duplicates,
            "outliers": r.outliers.iter().map(|(rule, n)| json!({ "rule": rule, "rows": n })).collect::<Vec<_>>(),
        },
        "values_set_to_null": r.nulled,
        "quality_score": r.quality.score,
    })
}

/// The files an export writes, in the order they are uploaded.
const EXPORTED: [&str; 4] = ["raw_data.csv", "cleaned_data.csv", "summary_report.json", "quality_metrics.json"];

/// Uploads the exported files to the store a URL names, each streamed and
/// published whole (a completed upload), replacing the previous run's.
fn upload(ctx: &RunCtx, url: &str, folder: &std::path::Path) -> Result<()> {
    let store = crate::storage::open(url, &ctx.project.dir)?;
    for name in EXPORTED {
        let path = folder.join(name);
        let mut f = std::fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let mut staged = store.stage(name)?;
        if let Err(e) = std::io::copy(&mut f, &mut staged) {
            let _ = staged.abort();
            return Err(Error::external(format!("cannot upload {name} to {}: {e}", store.describe()), true));
        }
        staged.commit()?;
    }
    Ok(())
}

pub fn run(ctx: &RunCtx, cfg: &CleanStep) -> Result<StepOutput> {
    let conn = cfg.connection.as_ref().map(|c| c.v.as_str());
    let mut read = ctx.warehouse(conn)?;
    let mut write = ctx.warehouse(conn)?;
    let report = clean(read.as_mut(), write.as_mut(), cfg, &ctx.run_id)?;
    if let Some(dir) = &cfg.export {
        // To an object store (`s3://…`): written here first, then uploaded.
        let store_url = (dir.v.starts_with("s3://") || dir.v.starts_with("file://")).then_some(dir.v.as_str());
        let folder = match store_url {
            Some(_) => ctx.project.dir.join(".sluice/tmp").join(format!("clean-{}", uuid::Uuid::now_v7().simple())),
            None => ctx.project.path(&dir.v),
        };
        std::fs::create_dir_all(&folder).map_err(|e| Error::io("create the export folder", &folder, e))?;
        let spec = super::export::ExportSpec::new(crate::project::ExportFormat::Csv);
        // Ordered by the first column, so the files are the same on every warehouse.
        let t = |name: &str| format!("SELECT * FROM {} ORDER BY 1", write.relation(name));
        let raw_sql = t(&cfg.table.v);
        let out_sql = t(&cfg.output.v);
        super::export::export_query(write.as_mut(), &raw_sql, "raw_data.csv", &folder, "raw_data.csv", &spec)?;
        super::export::export_query(write.as_mut(), &out_sql, "cleaned_data.csv", &folder, "cleaned_data.csv", &spec)?;
        write_json(&folder.join("summary_report.json"), &summary_json(&report))?;
        write_json(&folder.join("quality_metrics.json"), &serde_json::to_value(&report.quality).expect("JSON"))?;
        if let Some(url) = store_url {
            let done = upload(ctx, url, &folder);
            let _ = std::fs::remove_dir_all(&folder);
            done?;
        }
    }
    let removed: u64 = report.rejected + report.duplicates + report.outliers.iter().map(|(_, n)| n).sum::<u64>();
    Ok(StepOutput {
        summary: format!(
            "cleaned {} into {} ({} removed: {} invalid, {} duplicate, {} outlier); quality {:.1}/100",
            count(report.rows_in, "row"),
            report.output,
            removed,
            report.rejected,
            report.duplicates,
            report.outliers.iter().map(|(_, n)| n).sum::<u64>(),
            report.quality.score
        ),
        rows: Some(report.rows_out),
        bytes: None,
        details: json!({ "report": summary_json(&report), "quality": report.quality }),
        datasets: vec![DatasetUpdate::new(cfg.output.v.clone(), DatasetKind::Table)],
        objects: None,
    })
}
