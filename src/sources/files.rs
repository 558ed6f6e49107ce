//! Files of the project's file system: one path or every match of a glob.
//! With `take = "all"` each landing lists every matching file (so `replace`
//! loads follow the folder's current content); with `take = "new"` it lists
//! only files whose bytes were not taken from that path before, and the
//! cursor keeps each path's last taken hash.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Object, Source, UniqueNames};
use crate::error::{Error, Result};
use crate::project::Take;
use crate::steps::RunCtx;
use crate::storage::raw::{Manifest, ManifestFile, RowCount};

pub struct FileSource {
    /// (path, as shown) still to hand out, in order.
    todo: std::vec::IntoIter<(PathBuf, String)>,
    names: UniqueNames,
    take: Take,
    /// Path as shown → the sha256 last taken from it (`take = "new"`).
    taken: BTreeMap<String, String>,
}

/// The files a source names: one path, or every match of a glob, sorted.
pub fn matching(ctx: &RunCtx, source: &str) -> Result<Vec<PathBuf>> {
    let path = ctx.project.path(source);
    let s = path.to_string_lossy().into_owned();
    if s.contains(['*', '?', '[']) {
        let mut out: Vec<PathBuf> = glob::glob(&s)
            .map_err(|e| Error::user(format!("invalid glob \"{source}\": {}", e.msg)))?
            .filter_map(|p| p.ok())
            .filter(|p| p.is_file())
            .collect();
        out.sort();
        Ok(out)
    } else if path.is_file() {
        Ok(vec![path])
    } else if path.is_dir() {
        Err(Error::user(format!(
            "source {} is a folder; name a file or a glob such as {source}/*.csv",
            ctx.project.show_path(source)
        )))
    } else {
        Err(Error::user(format!("source file not found: {}", ctx.project.show_path(source))))
    }
}

impl FileSource {
    pub fn open(ctx: &RunCtx, pattern: &str, take: Take, previous: Option<&Manifest>) -> Result<Self> {
        let paths = matching(ctx, pattern)?;
        let todo: Vec<(PathBuf, String)> = paths
            .into_iter()
            .map(|p| {
                let shown = p
                    .strip_prefix(&ctx.project.dir)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| p.display().to_string());
                (p, shown)
            })
            .collect();
        let taken = match take {
            Take::All => BTreeMap::new(),
            Take::New => previous
                .and_then(|m| m.cursor.as_ref())
                .and_then(|c| serde_json::from_value(c.get("taken")?.clone()).ok())
                .unwrap_or_default(),
        };
        Ok(FileSource { todo: todo.into_iter(), names: UniqueNames::default(), take, taken })
    }
}

impl Source for FileSource {
    fn next(&mut self) -> Result<Option<Object>> {
        let Some((path, shown)) = self.todo.next() else { return Ok(None) };
        let size = std::fs::metadata(&path).map(|m| m.len()).ok();
        let reader = std::fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        Ok(Some(Object {
            name: self.names.name(&shown),
            shown,
            size,
            count: RowCount::Csv { delimiter: b',', quote: b'"', header: true },
            reader: Box::new(reader),
        }))
    }

    fn landed(&mut self, file: &ManifestFile) -> bool {
        match self.take {
            Take::All => true,
            Take::New => self.taken.insert(file.source.clone(), file.sha256.clone()).as_ref() != Some(&file.sha256),
        }
    }

    fn complete(&self) -> bool {
        self.take == Take::All
    }

    fn cursor(&self) -> Option<serde_json::Value> {
        (self.take == Take::New).then(|| serde_json::json!({ "taken": self.taken }))
    }
}
