//! Schema drift: how the columns a source brings compare with the table's, and
//! what the step's `schema_change` policy does about it. The message of a
//! refused change lists exactly what differs.

use crate::error::{Error, Result};
use crate::project::{LoadMode, SchemaChange};
use crate::types::{Column, ColumnType, Schema};
use crate::warehouse::Change;

/// How a source column's type relates to the table column's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Every source value fits the table's type as it is.
    Fits,
    /// The table's column must become this type to hold the source's values.
    Wider(ColumnType),
    /// No load can change one into the other.
    Incompatible,
}

fn int_rank(t: ColumnType) -> Option<u8> {
    match t {
        ColumnType::SmallInt => Some(1),
        ColumnType::Integer => Some(2),
        ColumnType::BigInt => Some(3),
        _ => None,
    }
}

fn int_digits(t: ColumnType) -> usize {
    match t {
        ColumnType::SmallInt => 5,
        ColumnType::Integer => 10,
        _ => 19,
    }
}

/// Whether values of type `src` fit a table column of type `table`.
pub fn fit(table: ColumnType, src: ColumnType) -> Fit {
    use ColumnType as T;
    if table == src {
        return Fit::Fits;
    }
    match (table, src) {
        (T::Text, _) => Fit::Fits,
        (t, s) if int_rank(t).is_some() && int_rank(s).is_some() => {
            if int_rank(s) <= int_rank(t) {
                Fit::Fits
            } else {
                Fit::Wider(s)
            }
        }
        (T::Decimal(None), s) if int_rank(s).is_some() || matches!(s, T::Decimal(_)) => Fit::Fits,
        (T::Decimal(Some((p, sc))), s) if int_rank(s).is_some() => {
            let need = int_digits(s);
            if (p - sc) as usize >= need {
                Fit::Fits
            } else {
                Fit::Wider(T::Decimal(Some(((need + sc as usize).min(38) as u8, sc))))
            }
        }
        (T::Decimal(Some(_)), T::Decimal(None)) => Fit::Wider(T::Decimal(None)),
        (T::Decimal(Some((tp, ts))), T::Decimal(Some((sp, ss)))) => {
            let (ti, si) = (tp - ts, sp - ss);
            if ss <= ts && si <= ti {
                Fit::Fits
            } else {
                let scale = ts.max(ss);
                let ints = ti.max(si);
                Fit::Wider(T::Decimal(Some(((ints as usize + scale as usize).min(38) as u8, scale))))
            }
        }
        (t, T::Decimal(d)) if int_rank(t).is_some() => {
            let (p, sc) = d.unwrap_or((38, 10));
            let ints = ((p - sc) as usize).max(int_digits(t));
            Fit::Wider(T::Decimal(Some(((ints + sc as usize).min(38) as u8, sc))))
        }
        (T::Float, s) if int_rank(s).is_some() || matches!(s, T::Decimal(_)) => Fit::Fits,
        (T::Varchar(n), T::Varchar(m)) => {
            if m <= n {
                Fit::Fits
            } else {
                Fit::Wider(T::Varchar(m))
            }
        }
        (T::Varchar(_), T::Text) => Fit::Wider(T::Text),
        (T::Timestamp, T::Date) => Fit::Fits,
        (T::Json, _) => Fit::Incompatible,
        _ => Fit::Incompatible,
    }
}

/// What a load writes and what it changes first.
#[derive(Debug, Clone)]
pub struct DriftPlan {
    /// The columns rows carry, in order.
    pub write: Vec<Column>,
    /// Table changes to make before loading (inside the load's transaction where the database allows).
    pub changes: Vec<Change>,
    /// The table's schema after the load.
    pub table: Schema,
}

/// Compares the source's columns with the existing table's (if any) and
/// applies the policy.
pub fn plan(
    table: &str,
    source: &[Column],
    existing: Option<&Schema>,
    mode: LoadMode,
    policy: SchemaChange,
) -> Result<DriftPlan> {
    let Some(existing) = existing.filter(|_| mode != LoadMode::Replace) else {
        let s = Schema::new(source.to_vec());
        return Ok(DriftPlan { write: source.to_vec(), changes: Vec::new(), table: s });
    };
    let mut write = Vec::new();
    let mut changes = Vec::new();
    let mut final_cols = existing.columns.clone();
    let mut problems: Vec<String> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for c in source {
        match existing.columns.iter().find(|t| t.name == c.name) {
            None => {
                problems.push(format!("new column `{}` ({})", c.name, c.ty));
                match policy {
                    SchemaChange::AddColumns => {
                        let mut add = c.clone();
                        add.nullable = true;
                        changes.push(Change::Add(add.clone()));
                        final_cols.push(add);
                        write.push(c.clone());
                    }
                    SchemaChange::IgnoreExtra => {}
                    SchemaChange::Fail => {}
                }
            }
            Some(t) => match fit(t.ty, c.ty) {
                Fit::Fits => write.push(c.clone()),
                Fit::Wider(to) => {
                    problems.push(format!("wider `{}`: {} in the source, {} in the table", c.name, c.ty, t.ty));
                    if policy == SchemaChange::AddColumns {
                        changes.push(Change::Widen { column: c.name.clone(), to });
                        if let Some(f) = final_cols.iter_mut().find(|f| f.name == c.name) {
                            f.ty = to;
                        }
                        write.push(c.clone());
                    } else {
                        refused.push(format!("wider `{}`: {} in the source, {} in the table", c.name, c.ty, t.ty));
                    }
                }
                Fit::Incompatible => {
                    let m = format!(
                        "`{}` is {} in the source but {} in the table; a load cannot change that",
                        c.name, c.ty, t.ty
                    );
                    problems.push(m.clone());
                    refused.push(m);
                }
            },
        }
    }
    for t in &existing.columns {
        if !source.iter().any(|c| c.name == t.name) {
            problems.push(format!("missing column `{}` ({})", t.name, t.ty));
            if !t.nullable {
                refused.push(format!("missing column `{}` is not null in the table", t.name));
            }
        }
    }
    if problems.is_empty() {
        return Ok(DriftPlan { write, changes, table: Schema::new(final_cols) });
    }
    let policy_name = match policy {
        SchemaChange::Fail => "fail",
        SchemaChange::AddColumns => "add_columns",
        SchemaChange::IgnoreExtra => "ignore_extra",
    };
    if policy == SchemaChange::Fail || !refused.is_empty() {
        let list = if policy == SchemaChange::Fail { &problems } else { &refused };
        let mut msg = format!("the source's columns differ from table `{table}` (schema_change = \"{policy_name}\"):");
        for p in list {
            msg.push_str("\n  ");
            msg.push_str(p);
        }
        msg.push_str(match policy {
            SchemaChange::Fail => "\nset schema_change = \"add_columns\" to add and widen columns, or \"ignore_extra\" to load only the table's columns",
            _ => "\nchange the table or the declared columns by hand",
        });
        return Err(Error::user(msg));
    }
    Ok(DriftPlan { write, changes, table: Schema::new(final_cols) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(spec: &[(&str, &str)]) -> Vec<Column> {
        spec.iter().map(|(n, t)| Column::parse_short(n, t).unwrap()).collect()
    }

    #[test]
    fn type_fits() {
        use ColumnType as T;
        assert_eq!(fit(T::BigInt, T::Integer), Fit::Fits);
        assert_eq!(fit(T::Integer, T::BigInt), Fit::Wider(T::BigInt));
        assert_eq!(fit(T::Varchar(16), T::Varchar(32)), Fit::Wider(T::Varchar(32)));
        assert_eq!(fit(T::Decimal(Some((8, 2))), T::Decimal(Some((12, 3)))), Fit::Wider(T::Decimal(Some((12, 3)))));
        assert_eq!(fit(T::Decimal(Some((8, 2))), T::Integer), Fit::Wider(T::Decimal(Some((12, 2)))));
        assert_eq!(fit(T::Text, T::Integer), Fit::Fits);
        assert_eq!(fit(T::Integer, T::Text), Fit::Incompatible);
        assert_eq!(fit(T::Timestamp, T::Date), Fit::Fits);
    }

    #[test]
    fn fail_lists_every_difference() {
        let table = Schema::new(cols(&[("id", "bigint"), ("channel", "varchar(16)"), ("email", "text")]));
        let src = cols(&[("id", "integer"), ("channel", "varchar(32)"), ("discount", "decimal(5,2)")]);
        let e = plan("sales", &src, Some(&table), LoadMode::Append, SchemaChange::Fail).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the source's columns differ from table `sales` (schema_change = \"fail\"):\n  \
             wider `channel`: varchar(32) in the source, varchar(16) in the table\n  \
             new column `discount` (decimal(5,2))\n  \
             missing column `email` (text)\n\
             set schema_change = \"add_columns\" to add and widen columns, or \"ignore_extra\" to load only the table's columns"
        );
        let p = plan("sales", &src, Some(&table), LoadMode::Append, SchemaChange::AddColumns).unwrap();
        assert_eq!(
            p.changes,
            vec![
                Change::Widen { column: "channel".into(), to: ColumnType::Varchar(32) },
                Change::Add(Column::new("discount", ColumnType::Decimal(Some((5, 2))))),
            ]
        );
        assert_eq!(p.write.len(), 3);
        let p = plan("sales", &src[..1], Some(&table), LoadMode::Append, SchemaChange::IgnoreExtra).unwrap();
        assert_eq!(p.write.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), vec!["id"]);
        let e = plan("sales", &src, Some(&table), LoadMode::Append, SchemaChange::IgnoreExtra).unwrap_err();
        assert!(e.to_string().contains("wider `channel`"), "{e}");
        // Replace rebuilds the table from the source: no drift.
        let p = plan("sales", &src, Some(&table), LoadMode::Replace, SchemaChange::Fail).unwrap();
        assert_eq!(p.table.names(), vec!["id", "channel", "discount"]);
    }
}
