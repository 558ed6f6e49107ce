//! `sluice infer SOURCE`: prints the schema a file's sample fits, in the schema
//! file format (`--schema` reads it back).

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::steps::thousands;

use super::load::ReadArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to sample: CSV/TSV, NDJSON or a JSON array of objects.
    pub source: PathBuf,
    /// How many records to sample.
    #[arg(long, default_value_t = crate::formats::infer::DEFAULT_SAMPLE)]
    pub sample: usize,
    #[command(flatten)]
    pub read: ReadArgs,
}

pub fn run(a: Args) -> Result<i32> {
    let f = std::fs::File::open(&a.source).map_err(|e| Error::io("open", &a.source, e))?;
    let name = a.source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (schema, n) =
        crate::formats::infer::infer(Box::new(f), &name, &a.read.options()?, a.sample).map_err(Error::DataMsg)?;
    outln!("# inferred by `sluice infer` from {} records of {}", thousands(n), a.source.display());
    out!("{}", schema.to_toml());
    Ok(0)
}
