//! Parquet files, through Arrow's arrays: the columns of a file as Sluice
//! column types, a reader that hands out each value as text (so the loader
//! checks it with the same parsers as a CSV field, and a bad value is
//! reported with its row number and column), and a writer of typed rows in
//! row groups (snappy, zstd or none). Parquet needs to seek, so a stream
//! that is not a local file is first copied to an unnamed temporary file;
//! memory stays bounded by one record batch (reading) or one row group
//! (writing). Nothing here knows about warehouses or steps.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal128Type, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

pub use crate::project::{DEFAULT_ROW_GROUP_SIZE, ParquetCompression};
use crate::types::value::{write_date, write_ts};
use crate::types::{Column, ColumnType, NullRule, Schema, Val, parse_value};

/// Rows per record batch read.
pub const READ_BATCH: usize = 8192;
/// Rows gathered before they are encoded (at most one row group).
const WRITE_BATCH: usize = 8192;

/// Copies a stream to an unnamed temporary file (removed when closed), so
/// Parquet's footer can be read first.
pub fn spill(mut src: impl Read) -> io::Result<File> {
    let dir = std::env::temp_dir();
    let path = dir.join(format!(".sluice-parquet-{}.tmp", uuid::Uuid::now_v7().simple()));
    let mut f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    let _ = std::fs::remove_file(&path);
    io::copy(&mut src, &mut f)?;
    f.rewind()?;
    Ok(f)
}

/// A Parquet input's rows, one record batch at a time.
pub struct ParquetRows {
    reader: ParquetRecordBatchReader,
    /// The file's columns, in order.
    pub fields: Vec<(String, DataType)>,
    /// Rows in the file.
    pub rows: u64,
}

impl ParquetRows {
    pub fn open(file: File) -> Result<ParquetRows, String> {
        let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| format!("is not a Parquet file: {e}"))?;
        let rows = b.metadata().file_metadata().num_rows().max(0) as u64;
        let fields = b.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
        let reader = b.with_batch_size(READ_BATCH).build().map_err(|e| format!("cannot read the Parquet file: {e}"))?;
        Ok(ParquetRows { reader, fields, rows })
    }

    /// The next record batch, or `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, String> {
        self.reader.next().transpose().map_err(|e| format!("cannot read the Parquet file: {e}"))
    }

    /// The file's columns as Sluice column types; an unsupported type is an
    /// error naming the column.
    pub fn schema(&self) -> Result<Schema, String> {
        let mut cols = Vec::new();
        for (name, dt) in &self.fields {
            let ty = column_type_of(dt).ok_or_else(|| {
                format!("column `{name}` has the Parquet/Arrow type {dt}, which Sluice cannot load (yet)")
            })?;
            cols.push(Column::new(name, ty));
        }
        Ok(Schema::new(cols))
    }
}

/// The Sluice type that holds an Arrow type's values exactly.
pub fn column_type_of(dt: &DataType) -> Option<ColumnType> {
    Some(match dt {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => ColumnType::SmallInt,
        DataType::Int32 | DataType::UInt16 => ColumnType::Integer,
        DataType::Int64 | DataType::UInt32 => ColumnType::BigInt,
        DataType::UInt64 => ColumnType::Decimal(Some((20, 0))),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnType::Float,
        DataType::Decimal128(p, s) if *s >= 0 && *p <= 38 => ColumnType::Decimal(Some((*p, *s as u8))),
        DataType::Boolean => ColumnType::Boolean,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::Text,
        DataType::Date32 | DataType::Date64 => ColumnType::Date,
        DataType::Timestamp(_, None) => ColumnType::Timestamp,
        DataType::Timestamp(_, Some(_)) => ColumnType::TimestampTz,
        _ => return None,
    })
}

/// Writes value `row` of `a` as text (as a CSV field would hold it); false
/// for NULL. Timestamps with a zone are written in UTC with `+00:00`.
pub fn cell_text(a: &dyn Array, row: usize, out: &mut Vec<u8>) -> Result<bool, String> {
    use std::io::Write as _;
    if a.is_null(row) {
        return Ok(false);
    }
    let ts = |out: &mut Vec<u8>, micros: Option<i64>, tz: bool| match micros {
        Some(m) => {
            write_ts(out, m, b' ');
            if tz {
                out.extend_from_slice(b"+00:00");
            }
            Ok(true)
        }
        None => Err("is a timestamp out of range".to_string()),
    };
    match a.data_type() {
        DataType::Int8 => write!(out, "{}", a.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => write!(out, "{}", a.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => write!(out, "{}", a.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => write!(out, "{}", a.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => write!(out, "{}", a.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => write!(out, "{}", a.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => write!(out, "{}", a.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => write!(out, "{}", a.as_primitive::<UInt64Type>().value(row)),
        DataType::Float16 => write!(out, "{}", a.as_primitive::<Float16Type>().value(row)),
        DataType::Float32 => write!(out, "{}", a.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => write!(out, "{}", a.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, s) => {
            out.extend_from_slice(decimal_text(a.as_primitive::<Decimal128Type>().value(row), *s).as_bytes());
            Ok(())
        }
        DataType::Boolean => {
            out.extend_from_slice(if a.as_boolean().value(row) { b"true" } else { b"false" });
            Ok(())
        }
        DataType::Utf8 => {
            out.extend_from_slice(a.as_string::<i32>().value(row).as_bytes());
            Ok(())
        }
        DataType::LargeUtf8 => {
            out.extend_from_slice(a.as_string::<i64>().value(row).as_bytes());
            Ok(())
        }
        DataType::Utf8View => {
            out.extend_from_slice(a.as_string_view().value(row).as_bytes());
            Ok(())
        }
        DataType::Date32 => {
            write_date(out, a.as_primitive::<Date32Type>().value(row) as i64);
            Ok(())
        }
        DataType::Date64 => {
            write_date(out, a.as_primitive::<Date64Type>().value(row).div_euclid(86_400_000));
            Ok(())
        }
        DataType::Timestamp(unit, tz) => {
            let m = match unit {
                TimeUnit::Second => a.as_primitive::<TimestampSecondType>().value(row).checked_mul(1_000_000),
                TimeUnit::Millisecond => a.as_primitive::<TimestampMillisecondType>().value(row).checked_mul(1000),
                TimeUnit::Microsecond => Some(a.as_primitive::<TimestampMicrosecondType>().value(row)),
                TimeUnit::Nanosecond => Some(a.as_primitive::<TimestampNanosecondType>().value(row).div_euclid(1000)),
            };
            return ts(out, m, tz.is_some());
        }
        other => return Err(format!("has the Parquet/Arrow type {other}, which Sluice cannot load (yet)")),
    }
    .map_err(|e| e.to_string())?;
    Ok(true)
}

/// An unscaled decimal as text with `scale` decimals.
fn decimal_text(v: i128, scale: i8) -> String {
    if scale <= 0 {
        let mut s = v.to_string();
        if v != 0 {
            s.extend(std::iter::repeat_n('0', (-scale) as usize));
        }
        return s;
    }
    let scale = scale as usize;
    let digits = v.unsigned_abs().to_string();
    let digits =
        if digits.len() <= scale { format!("{}{digits}", "0".repeat(scale + 1 - digits.len())) } else { digits };
    let (int, frac) = digits.split_at(digits.len() - scale);
    format!("{}{int}.{frac}", if v < 0 { "-" } else { "" })
}

/// How a Parquet file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParquetOptions {
    pub compression: ParquetCompression,
    /// Rows per row group.
    pub row_group_size: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions { compression: ParquetCompression::default(), row_group_size: DEFAULT_ROW_GROUP_SIZE }
    }
}

/// The Arrow type a column of this type is written as. A decimal without a
/// declared scale is written as text (never rounded).
pub fn arrow_type_of(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::SmallInt => DataType::Int16,
        ColumnType::Integer => DataType::Int32,
        ColumnType::BigInt => DataType::Int64,
        ColumnType::Decimal(Some((p, s))) if p <= 38 && s <= p => DataType::Decimal128(p.max(1), s as i8),
        ColumnType::Decimal(_) => DataType::Utf8,
        ColumnType::Float => DataType::Float64,
        ColumnType::Text | ColumnType::Varchar(_) | ColumnType::Json => DataType::Utf8,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        ColumnType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

enum Builder {
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder, u8, u8),
    Bool(BooleanBuilder),
    Text(StringBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
}

impl Builder {
    fn new(dt: &DataType) -> Builder {
        match dt {
            DataType::Int16 => Builder::I16(Int16Builder::new()),
            DataType::Int32 => Builder::I32(Int32Builder::new()),
            DataType::Int64 => Builder::I64(Int64Builder::new()),
            DataType::Float64 => Builder::F64(Float64Builder::new()),
            DataType::Decimal128(p, s) => {
                Builder::Dec(Decimal128Builder::new().with_data_type(dt.clone()), *p, (*s).max(0) as u8)
            }
            DataType::Boolean => Builder::Bool(BooleanBuilder::new()),
            DataType::Date32 => Builder::Date(Date32Builder::new()),
            DataType::Timestamp(..) => Builder::Ts(TimestampMicrosecondBuilder::new().with_data_type(dt.clone())),
            _ => Builder::Text(StringBuilder::new()),
        }
    }

    fn null(&mut self) {
        match self {
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Dec(b, ..) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
            Builder::Text(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Ts(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Dec(b, ..) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
        }
    }

    /// Appends a value, converting it to the column's type; the error is a reason.
    fn push(&mut self, v: &Val, ty: ColumnType, scratch: &mut Vec<u8>) -> Result<(), String> {
        // A value that came as text (a warehouse's text protocol) is parsed
        // as the column's type first.
        let parsed;
        let v = match (v, &*self) {
            (Val::Text(s), b) if !matches!(b, Builder::Text(_)) => {
                parsed = parse_value(&Column::new("x", ty), s.as_bytes(), true, &NullRule::default())?;
                &parsed
            }
            _ => v,
        };
        if matches!(v, Val::Null) {
            self.null();
            return Ok(());
        }
        let mismatch = || format!("cannot be written as {ty}");
        match self {
            Builder::I16(b) => match v {
                Val::Int(i) => b.append_value(i16::try_from(*i).map_err(|_| "is out of range for smallint")?),
                _ => return Err(mismatch()),
            },
            Builder::I32(b) => match v {
                Val::Int(i) => b.append_value(i32::try_from(*i).map_err(|_| "is out of range for integer")?),
                _ => return Err(mismatch()),
            },
            Builder::I64(b) => match v {
                Val::Int(i) => b.append_value(*i),
                _ => return Err(mismatch()),
            },
            Builder::F64(b) => match v {
                Val::Float(f) => b.append_value(*f),
                Val::Int(i) => b.append_value(*i as f64),
                Val::Dec(s) => b.append_value(s.parse().map_err(|_| mismatch())?),
                _ => return Err(mismatch()),
            },
            Builder::Dec(b, p, s) => {
                let text = match v {
                    Val::Dec(d) => crate::types::value::rescale_decimal(d, *s as usize),
                    Val::Int(i) => crate::types::value::rescale_decimal(&i.to_string(), *s as usize),
                    Val::Float(f) if f.is_finite() => format!("{:.*}", *s as usize, f),
                    _ => return Err(mismatch()),
                };
                let digits: String = text.chars().filter(|c| *c != '.').collect();
                let unscaled: i128 = digits.parse().map_err(|_| mismatch())?;
                let int_digits = digits.trim_start_matches('-').len().saturating_sub(*s as usize);
                if int_digits > (*p - *s) as usize && unscaled != 0 {
                    return Err(format!("has more digits than decimal({p},{s}) holds"));
                }
                b.append_value(unscaled)
            }
            Builder::Bool(b) => match v {
                Val::Bool(x) => b.append_value(*x),
                Val::Int(i @ (0 | 1)) => b.append_value(*i == 1),
                _ => return Err(mismatch()),
            },
            Builder::Date(b) => match v {
                Val::Date(d) => b.append_value(*d),
                _ => return Err(mismatch()),
            },
            Builder::Ts(b) => match v {
                Val::Ts(t) | Val::TsTz(t) => b.append_value(*t),
                Val::Date(d) => b.append_value(*d as i64 * 86_400_000_000),
                _ => return Err(mismatch()),
            },
            Builder::Text(b) => match v {
                Val::Text(s) | Val::Json(s) => b.append_value(s),
                Val::Dec(s) => b.append_value(s.trim_start_matches('+')),
                other => {
                    scratch.clear();
                    format_plain(scratch, other);
                    b.append_value(String::from_utf8_lossy(scratch));
                }
            },
        }
        Ok(())
    }
}

/// A value's text (for a column written as text).
fn format_plain(out: &mut Vec<u8>, v: &Val) {
    use std::io::Write as _;
    match *v {
        Val::Null => {}
        Val::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Val::Float(f) => {
            let _ = write!(out, "{f}");
        }
        Val::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Val::Dec(s) | Val::Text(s) | Val::Json(s) => out.extend_from_slice(s.as_bytes()),
        Val::Date(d) => write_date(out, d as i64),
        Val::Ts(t) => write_ts(out, t, b' '),
        Val::TsTz(t) => {
            write_ts(out, t, b' ');
            out.extend_from_slice(b"+00");
        }
    }
}

/// Writes rows of known column types as a Parquet file.
pub struct ParquetWriter<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: SchemaRef,
    types: Vec<ColumnType>,
    builders: Vec<Builder>,
    pending: usize,
    scratch: Vec<u8>,
}

impl<W: Write + Send> ParquetWriter<W> {
    pub fn new(out: W, columns: &[(String, ColumnType)], opts: ParquetOptions) -> Result<Self, String> {
        let fields: Vec<Field> = columns.iter().map(|(n, t)| Field::new(n, arrow_type_of(*t), true)).collect();
        let schema = Arc::new(ArrowSchema::new(fields));
        let compression = match opts.compression {
            ParquetCompression::None => Compression::UNCOMPRESSED,
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
        };
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(opts.row_group_size.max(1)))
            .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props))
            .map_err(|e| format!("cannot start the Parquet file: {e}"))?;
        let builders = schema.fields().iter().map(|f| Builder::new(f.data_type())).collect();
        Ok(ParquetWriter {
            writer,
            schema,
            types: columns.iter().map(|(_, t)| *t).collect(),
            builders,
            pending: 0,
            scratch: Vec::new(),
        })
    }

    /// Appends one row; the error names the column.
    pub fn row(&mut self, vals: &[Val]) -> Result<(), String> {
        for (i, v) in vals.iter().enumerate() {
            if let Err(reason) = self.builders[i].push(v, self.types[i], &mut self.scratch) {
                // Keep the builders the same length: the row is abandoned.
                return Err(format!("column `{}`: {v:?} {reason}", self.schema.field(i).name()));
            }
        }
        self.pending += 1;
        if self.pending >= WRITE_BATCH {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), String> {
        if self.pending == 0 {
            return Ok(());
        }
        let cols: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), cols).map_err(|e| format!("internal error: {e}"))?;
        self.pending = 0;
        self.writer.write(&batch).map_err(|e| format!("cannot write the Parquet file: {e}"))
    }

    /// Writes what is buffered and the footer; returns the output.
    pub fn finish(mut self) -> Result<W, String> {
        self.flush_batch()?;
        self.writer.into_inner().map_err(|e| format!("cannot finish the Parquet file: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_print_with_their_scale() {
        assert_eq!(decimal_text(12345, 2), "123.45");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(7, 0), "7");
        assert_eq!(decimal_text(7, -2), "700");
    }

    #[test]
    fn rows_round_trip_through_a_file() {
        let cols = vec![
            ("id".to_string(), ColumnType::BigInt),
            ("price".to_string(), ColumnType::Decimal(Some((10, 2)))),
            ("at".to_string(), ColumnType::Timestamp),
            ("name".to_string(), ColumnType::Text),
        ];
        let mut w = ParquetWriter::new(Vec::new(), &cols, ParquetOptions::default()).unwrap();
        w.row(&[Val::Int(1), Val::Dec("2.5"), Val::Text("2024-01-02 03:04:05"), Val::Text("a\tb")]).unwrap();
        w.row(&[Val::Int(2), Val::Null, Val::Null, Val::Null]).unwrap();
        let err = w.row(&[Val::Text("x"), Val::Null, Val::Null, Val::Null]).unwrap_err();
        assert!(err.starts_with("column `id`: "), "{err}");
        let bytes = w.finish().unwrap();
        let mut f = spill(&bytes[..]).unwrap();
        let _ = f.stream_position();
        let mut r = ParquetRows::open(f).unwrap();
        assert_eq!(r.rows, 2);
        let s = r.schema().unwrap();
        let types: Vec<ColumnType> = s.columns.iter().map(|c| c.ty).collect();
        assert_eq!(
            types,
            vec![ColumnType::BigInt, ColumnType::Decimal(Some((10, 2))), ColumnType::Timestamp, ColumnType::Text]
        );
        let b = r.next_batch().unwrap().unwrap();
        let mut out = Vec::new();
        let mut texts = Vec::new();
        for c in 0..4 {
            out.clear();
            let some = cell_text(b.column(c).as_ref(), 0, &mut out).unwrap();
            texts.push(if some { String::from_utf8(out.clone()).unwrap() } else { "NULL".into() });
        }
        assert_eq!(texts, vec!["1", "2.50", "2024-01-02 03:04:05", "a\tb"]);
        assert!(!cell_text(b.column(1).as_ref(), 1, &mut out).unwrap());
    }
}
