//! `sluice export TARGET_URL --table T | --query SQL`: a table's or a query's
//! rows as TSV, CSV, NDJSON, a JSON array or Parquet, on stdout or into a
//! file or an `s3://` object (published only when complete).

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::parquet::ParquetOptions;
use crate::project::{ExportFormat, ParquetCompression, Quoting};
use crate::secret::{Env, Secret};
use crate::steps::export::{ExportSpec, export_query, write_rows};
use crate::warehouse;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Tsv,
    Csv,
    Ndjson,
    Json,
    Parquet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QuotingArg {
    /// RFC 4180 double quotes (the default)
    Csv,
    /// PostgreSQL text format: backslash escapes, NULL is \N
    Backslash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressionArg {
    Zstd,
    Snappy,
    None,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  sluice export sqlite://warehouse.db --table sales_by_product -o report.tsv
  sluice export postgres://app@db/shop --query 'select * from sales where day = current_date' --format csv
  sluice export postgres://app@db/shop --table sales -o sales.tsv --quoting backslash
  sluice export postgres://app@db/shop --table sales -o 's3://bucket/exports/sales.parquet' --compression snappy")]
pub struct Args {
    /// The warehouse: sqlite://PATH, postgres://…, mysql://… (${env:NAME} is resolved).
    pub target: String,
    /// A table (or view) to export.
    #[arg(long, short = 't', conflicts_with = "query", required_unless_present = "query")]
    pub table: Option<String>,
    /// A query to export.
    #[arg(long, short = 'q')]
    pub query: Option<String>,
    /// The output: a file, file:///path or s3://bucket/key (stdout when left out); published only when complete.
    #[arg(long, short = 'o', value_name = "DEST")]
    pub output: Option<String>,
    /// tsv, csv, ndjson, json (one array) or parquet (from the output's extension by default, else tsv).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Leave out the header row (tsv, csv).
    #[arg(long)]
    pub no_header: bool,
    /// How NULL is written (tsv, csv); empty by default, \N with --quoting backslash.
    #[arg(long)]
    pub null: Option<String>,
    /// How TSV writes tabs, line breaks and quotes in values.
    #[arg(long, value_enum, default_value = "csv")]
    pub quoting: QuotingArg,
    /// Parquet page compression.
    #[arg(long, value_enum, default_value = "zstd")]
    pub compression: CompressionArg,
    /// Parquet rows per row group.
    #[arg(long, value_name = "ROWS", default_value_t = crate::project::DEFAULT_ROW_GROUP_SIZE)]
    pub row_group_size: usize,
}

pub fn run(a: Args) -> Result<i32> {
    let env = Env::load(Path::new(".")).map_err(Error::user)?;
    let url = Secret::new(&a.target, &env).map_err(Error::user)?;
    let mut wh = warehouse::connect(&url, Path::new("."))?;
    let sql = match (&a.table, &a.query) {
        (Some(t), _) => {
            crate::warehouse::check_table_name(t)?;
            format!("SELECT * FROM {}", wh.relation(t))
        }
        (None, Some(q)) => q.clone(),
        (None, None) => return Err(Error::user("give --table T or --query SQL")),
    };
    let format = match a.format {
        Some(Format::Csv) => ExportFormat::Csv,
        Some(Format::Tsv) => ExportFormat::Tsv,
        Some(Format::Ndjson) => ExportFormat::Ndjson,
        Some(Format::Json) => ExportFormat::Json,
        Some(Format::Parquet) => ExportFormat::Parquet,
        None => a.output.as_deref().map(ExportFormat::from_path).unwrap_or(ExportFormat::Tsv),
    };
    let quoting = match a.quoting {
        QuotingArg::Csv => Quoting::Csv,
        QuotingArg::Backslash => Quoting::Backslash,
    };
    if quoting == Quoting::Backslash && format != ExportFormat::Tsv {
        return Err(Error::user(format!("--quoting backslash applies only to tsv, not {}", format.name())));
    }
    if format == ExportFormat::Parquet && a.output.is_none() {
        return Err(Error::user("a Parquet export needs an output: -o FILE.parquet (it cannot stream to stdout)"));
    }
    if a.row_group_size == 0 {
        return Err(Error::user("--row-group-size must be at least 1"));
    }
    let mut spec = ExportSpec::new(format);
    spec.header = !a.no_header;
    spec.quoting = quoting;
    spec.null = a.null.clone().unwrap_or_else(|| ExportSpec::default_null(quoting).to_string());
    spec.parquet = ParquetOptions {
        compression: match a.compression {
            CompressionArg::Zstd => ParquetCompression::Zstd,
            CompressionArg::Snappy => ParquetCompression::Snappy,
            CompressionArg::None => ParquetCompression::None,
        },
        row_group_size: a.row_group_size,
    };
    if let Some(t) = &a.table
        && let Some(schema) = wh.table_schema(t)?
    {
        spec.declared = schema.columns.into_iter().map(|c| (c.name, c.ty)).collect();
    }
    match &a.output {
        Some(dest) => {
            let shown = crate::secret::redact_url(dest);
            let (rows, _) = export_query(wh.as_mut(), &sql, dest, Path::new("."), &shown, &spec)?;
            errln!("wrote {} to {shown}", crate::steps::count(rows, "row"));
        }
        None => {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, super::out::Stdout);
            let res = write_rows(wh.as_mut(), &sql, &spec, &mut out)
                .and_then(|_| out.flush().map_err(|e| Error::external(format!("cannot write to stdout: {e}"), false)));
            // A reader that stopped reading (`| head`) is not an error.
            if let Err(e) = res
                && !super::out::closed()
            {
                return Err(e);
            }
        }
    }
    Ok(0)
}
