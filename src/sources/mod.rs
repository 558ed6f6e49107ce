//! Sources: where an `ingest` step reads from. A source hands ingest one
//! object at a time (a file, an object of a bucket, a page of an API, a
//! query's rows); ingest lands each byte for byte and publishes them together
//! in one manifest (`storage::raw`). What a source must remember between runs
//! (a cursor: the names already taken, an API's next-page token, a column's
//! high-water mark) travels in that manifest, so it is committed with the
//! landing it describes: a run killed before its manifest leaves the cursor
//! where it was, and the next run takes the same objects again.
//!
//! Adding a source kind: one module here implementing [`Source`], one variant
//! of `project::SourceSpec` (its keys and decoder), one arm in [`open`], a
//! section in docs/configuration.md and a test in tests/it.

pub mod database;
pub mod files;
pub mod http;
pub mod s3;

use std::io::Read;

use crate::error::Result;
use crate::project::{SourceSpec, Take};
use crate::steps::RunCtx;
use crate::storage::raw::{Manifest, ManifestFile, RowCount};

/// One object a source hands to ingest.
pub struct Object {
    /// The name it is stored under in the landing (unique within a landing).
    pub name: String,
    /// Where it came from, as shown to users (a project path, a URL without
    /// credentials, a table).
    pub shown: String,
    /// Its size when known beforehand (for progress).
    pub size: Option<u64>,
    /// How landing counts its rows.
    pub count: RowCount,
    /// Its bytes.
    pub reader: Box<dyn Read + Send>,
}

/// What an ingest step reads.
pub trait Source: Send {
    /// The next object to land this run, or `None` when there is no more.
    fn next(&mut self) -> Result<Option<Object>>;

    /// Called once an object is landed (its hash known): whether this
    /// landing lists it. A source that takes only what is new says `false`
    /// for bytes it handed out before.
    fn landed(&mut self, _file: &ManifestFile) -> bool {
        true
    }

    /// Whether a landing lists everything the source holds (`true`: files
    /// and `take = "all"`), or only what is new since the previous landing's
    /// cursor (`false`). Loads in `replace` mode need the former.
    fn complete(&self) -> bool {
        true
    }

    /// What to remember with this landing; the next run's source gets it
    /// back. Called after `next` returned `None`.
    fn cursor(&self) -> Option<serde_json::Value> {
        None
    }
}

/// Opens the source an ingest step names. `previous` is the dataset's newest
/// landing (its cursor and the objects it listed).
pub fn open(ctx: &RunCtx, spec: &SourceSpec, take: Take, previous: Option<&Manifest>) -> Result<Box<dyn Source>> {
    match spec {
        SourceSpec::Files(pattern) => Ok(Box::new(files::FileSource::open(ctx, &pattern.v, take, previous)?)),
        SourceSpec::Http(cfg) => Ok(Box::new(http::HttpSource::open(ctx, cfg, previous)?)),
        SourceSpec::Database(db) => Ok(Box::new(database::DbSource::open(ctx, db, previous)?)),
        SourceSpec::S3(url) => Ok(Box::new(s3::S3Source::open(&url.v, take, previous)?)),
    }
}

/// Names an object by the last part of its path, made unique within one
/// landing (`2-orders.csv` for the second `orders.csv`).
#[derive(Default)]
pub struct UniqueNames(Vec<String>);

impl UniqueNames {
    pub fn name(&mut self, path: &str) -> String {
        let base = path.rsplit(['/', '\\']).find(|p| !p.is_empty()).unwrap_or("data");
        let mut name = base.to_string();
        if self.0.contains(&name) {
            name = format!("{}-{base}", self.0.len());
        }
        self.0.push(name.clone());
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_within_a_landing() {
        let mut n = UniqueNames::default();
        assert_eq!(n.name("a/orders.csv"), "orders.csv");
        assert_eq!(n.name("b/orders.csv"), "1-orders.csv");
        assert_eq!(n.name("items.csv"), "items.csv");
        assert_eq!(n.name("s3://bucket/x/"), "x");
    }
}
