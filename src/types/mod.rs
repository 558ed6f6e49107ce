//! Column types, schemas and the strict parsing of raw field bytes into typed
//! values. A value is valid only if it parses exactly as its declared type: no
//! words for dates, no silent truncation or rounding. This module owns the
//! meaning of each type; how a backend stores it belongs to `warehouse`.

pub mod batch;
pub mod value;

use std::fmt;

pub use batch::{Cell, RowBatch};
pub use value::{NullRule, Val, parse_value};

/// A column's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    SmallInt,
    Integer,
    BigInt,
    /// Exact decimal; `None` means any precision up to 38 digits and any scale.
    Decimal(Option<(u8, u8)>),
    Float,
    Text,
    Varchar(u32),
    Boolean,
    Date,
    Timestamp,
    TimestampTz,
    Json,
}

/// The type names `ColumnType::parse` accepts, for help texts.
pub const TYPE_NAMES: &[&str] = &[
    "smallint",
    "integer",
    "bigint",
    "decimal(p,s)",
    "float",
    "text",
    "varchar(n)",
    "boolean",
    "date",
    "timestamp",
    "timestamptz",
    "json",
];

const BASE_NAMES: &[&str] = &[
    "smallint",
    "integer",
    "bigint",
    "decimal",
    "numeric",
    "float",
    "double",
    "text",
    "varchar",
    "boolean",
    "date",
    "timestamp",
    "timestamptz",
    "json",
];

impl ColumnType {
    /// Parses a type name such as `integer`, `decimal(12,2)` or `varchar(64)`
    /// (case-insensitive; common synonyms accepted).
    pub fn parse(s: &str) -> Result<ColumnType, String> {
        let t = s.trim().to_ascii_lowercase();
        let (base, args) = match t.find('(') {
            Some(i) => {
                let Some(inner) = t[i + 1..].strip_suffix(')') else {
                    return Err(format!("invalid type \"{s}\": missing `)`"));
                };
                (t[..i].trim().to_string(), Some(inner.to_string()))
            }
            None => (t.clone(), None),
        };
        let nums = |args: &Option<String>| -> Result<Vec<u32>, String> {
            match args {
                None => Ok(vec![]),
                Some(a) => a
                    .split(',')
                    .map(|x| {
                        x.trim()
                            .parse::<u32>()
                            .map_err(|_| format!("invalid type \"{s}\": `{}` is not a number", x.trim()))
                    })
                    .collect(),
            }
        };
        let no_args = |ty: ColumnType| -> Result<ColumnType, String> {
            if args.is_some() { Err(format!("invalid type \"{s}\": `{base}` takes no arguments")) } else { Ok(ty) }
        };
        match base.as_str() {
            "smallint" | "int2" => no_args(ColumnType::SmallInt),
            "integer" | "int" | "int4" => no_args(ColumnType::Integer),
            "bigint" | "int8" => no_args(ColumnType::BigInt),
            "float" | "double" | "double precision" | "float8" | "real" => no_args(ColumnType::Float),
            "text" | "string" => no_args(ColumnType::Text),
            "boolean" | "bool" => no_args(ColumnType::Boolean),
            "date" => no_args(ColumnType::Date),
            "timestamp" | "datetime" => no_args(ColumnType::Timestamp),
            "timestamptz" | "timestamp with time zone" => no_args(ColumnType::TimestampTz),
            "json" | "jsonb" => no_args(ColumnType::Json),
            "decimal" | "numeric" => {
                let n = nums(&args)?;
                match n.as_slice() {
                    [] => Ok(ColumnType::Decimal(None)),
                    [p] | [p, _] if *p == 0 || *p > 38 => {
                        Err(format!("invalid type \"{s}\": precision must be between 1 and 38"))
                    }
                    [p] => Ok(ColumnType::Decimal(Some((*p as u8, 0)))),
                    [p, sc] if sc > p => Err(format!("invalid type \"{s}\": scale {sc} is larger than precision {p}")),
                    [p, sc] => Ok(ColumnType::Decimal(Some((*p as u8, *sc as u8)))),
                    _ => Err(format!("invalid type \"{s}\": expected decimal(precision, scale)")),
                }
            }
            "varchar" | "character varying" | "char varying" => {
                let n = nums(&args)?;
                match n.as_slice() {
                    [] => Ok(ColumnType::Text),
                    [0] => Err(format!("invalid type \"{s}\": length must be at least 1")),
                    [len] => Ok(ColumnType::Varchar(*len)),
                    _ => Err(format!("invalid type \"{s}\": expected varchar(length)")),
                }
            }
            _ => {
                let hint = crate::error::nearest(&base, BASE_NAMES.iter().copied())
                    .map(|n| format!("; did you mean `{n}`?"))
                    .unwrap_or_else(|| format!("; valid types: {}", TYPE_NAMES.join(", ")));
                Err(format!("unknown type \"{s}\"{hint}"))
            }
        }
    }

    pub fn is_text(self) -> bool {
        matches!(self, ColumnType::Text | ColumnType::Varchar(_) | ColumnType::Json)
    }

    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ColumnType::SmallInt
                | ColumnType::Integer
                | ColumnType::BigInt
                | ColumnType::Decimal(_)
                | ColumnType::Float
        )
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::SmallInt => write!(f, "smallint"),
            ColumnType::Integer => write!(f, "integer"),
            ColumnType::BigInt => write!(f, "bigint"),
            ColumnType::Decimal(None) => write!(f, "decimal"),
            ColumnType::Decimal(Some((p, s))) => write!(f, "decimal({p},{s})"),
            ColumnType::Float => write!(f, "float"),
            ColumnType::Text => write!(f, "text"),
            ColumnType::Varchar(n) => write!(f, "varchar({n})"),
            ColumnType::Boolean => write!(f, "boolean"),
            ColumnType::Date => write!(f, "date"),
            ColumnType::Timestamp => write!(f, "timestamp"),
            ColumnType::TimestampTz => write!(f, "timestamptz"),
            ColumnType::Json => write!(f, "json"),
        }
    }
}

/// One declared column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    /// `false` rejects rows where the value is missing.
    pub nullable: bool,
    /// A chrono format for date/timestamp columns (`%d/%m/%Y`); ISO 8601 when absent.
    pub format: Option<String>,
}

impl Column {
    pub fn new(name: &str, ty: ColumnType) -> Self {
        Column { name: name.to_string(), ty, nullable: true, format: None }
    }

    /// Parses the short form `"bigint"` or `"bigint not null"`.
    pub fn parse_short(name: &str, spec: &str) -> Result<Column, String> {
        let lower = spec.trim().to_ascii_lowercase();
        let (ty, nullable) = match lower.strip_suffix("not null") {
            Some(t) => (t.trim_end(), false),
            None => (lower.strip_suffix(" null").unwrap_or(&lower).trim_end(), true),
        };
        Ok(Column { name: name.to_string(), ty: ColumnType::parse(ty)?, nullable, format: None })
    }
}

/// The ordered columns of a table or file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schema {
    pub columns: Vec<Column>,
}

impl Schema {
    pub fn new(columns: Vec<Column>) -> Self {
        Schema { columns }
    }

    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The schema in the schema-file format (`sluice infer` prints this, and
    /// `--schema` reads it back).
    pub fn to_toml(&self) -> String {
        let mut out = String::from("[columns]\n");
        for c in &self.columns {
            let key = toml_key(&c.name);
            let null = if c.nullable { "" } else { " not null" };
            match &c.format {
                None => out.push_str(&format!("{key} = \"{}{null}\"\n", c.ty)),
                Some(f) => out.push_str(&format!(
                    "{key} = {{ type = \"{}\", nullable = {}, format = {} }}\n",
                    c.ty,
                    c.nullable,
                    toml_string(f)
                )),
            }
        }
        out
    }
}

fn toml_key(k: &str) -> String {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        k.to_string()
    } else {
        toml_string(k)
    }
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_type_names() {
        assert_eq!(ColumnType::parse("INTEGER").unwrap(), ColumnType::Integer);
        assert_eq!(ColumnType::parse("decimal(12, 2)").unwrap(), ColumnType::Decimal(Some((12, 2))));
        assert_eq!(ColumnType::parse("numeric").unwrap(), ColumnType::Decimal(None));
        assert_eq!(ColumnType::parse("varchar(16)").unwrap(), ColumnType::Varchar(16));
        assert_eq!(ColumnType::parse("intger").unwrap_err(), "unknown type \"intger\"; did you mean `integer`?");
        assert_eq!(
            ColumnType::parse("decimal(2,5)").unwrap_err(),
            "invalid type \"decimal(2,5)\": scale 5 is larger than precision 2"
        );
    }

    #[test]
    fn short_column_form() {
        let c = Column::parse_short("id", "bigint not null").unwrap();
        assert_eq!((c.ty, c.nullable), (ColumnType::BigInt, false));
    }

    #[test]
    fn schema_toml_round_trip_form() {
        let s = Schema::new(vec![
            Column::parse_short("id", "bigint not null").unwrap(),
            Column::new("unit price", ColumnType::Decimal(Some((12, 2)))),
        ]);
        assert_eq!(s.to_toml(), "[columns]\nid = \"bigint not null\"\n\"unit price\" = \"decimal(12,2)\"\n");
    }
}
