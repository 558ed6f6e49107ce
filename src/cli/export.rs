//! `sluice export TARGET_URL --table T | --query SQL`: a table's or a query's
//! rows as TSV or CSV, on stdout or into a file (written whole, then renamed).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::project::ExportFormat;
use crate::secret::{Env, Secret};
use crate::steps::export::{DelimitedSink, ExportSpec, export_query};
use crate::warehouse;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Tsv,
    Csv,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  sluice export sqlite://warehouse.db --table sales_by_product -o report.tsv
  sluice export postgres://app@db/shop --query 'select * from sales where day = current_date' --format csv")]
pub struct Args {
    /// The warehouse: sqlite://PATH, postgres://…, mysql://… (${env:NAME} is resolved).
    pub target: String,
    /// A table (or view) to export.
    #[arg(long, short = 't', conflicts_with = "query", required_unless_present = "query")]
    pub table: Option<String>,
    /// A query to export.
    #[arg(long, short = 'q')]
    pub query: Option<String>,
    /// The output file (stdout when left out); written to a temporary name, then renamed.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// tsv or csv (from the output's extension by default, else tsv).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Leave out the header row.
    #[arg(long)]
    pub no_header: bool,
    /// How NULL is written.
    #[arg(long, default_value = "")]
    pub null: String,
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
        None if a.output.as_ref().is_some_and(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))) => {
            ExportFormat::Csv
        }
        None => ExportFormat::Tsv,
    };
    let spec = ExportSpec { format, header: !a.no_header, null: a.null.clone(), declared: Default::default() };
    match &a.output {
        Some(p) => {
            let (rows, _) = export_query(wh.as_mut(), &sql, p, &p.display().to_string(), &spec)?;
            errln!("wrote {} to {}", crate::steps::count(rows, "row"), p.display());
        }
        None => {
            let mut sink = DelimitedSink::new(std::io::BufWriter::new(super::out::Stdout), spec);
            let res = wh.query(&sql, &mut sink).and_then(|_| {
                sink.into_inner().flush().map_err(|e| Error::external(format!("cannot write to stdout: {e}"), false))
            });
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
