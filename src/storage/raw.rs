//! The raw zone's layout: `raw/<dataset>/<date>/<run-id>/<file>` with a
//! `_manifest.json` per landing (sha256, bytes, rows of each file), and an
//! index by hash under `_sluice/index/<dataset>/` so a file already landed is
//! not landed again. Objects are copied byte for byte.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ObjectStore;
use crate::error::{Error, Result};

/// One landed file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestFile {
    pub name: String,
    pub key: String,
    /// Where it came from, as configured (a project path, a URL).
    pub source: String,
    pub sha256: String,
    pub bytes: u64,
    /// Data records (the header not counted), as a quote-aware count of lines.
    pub rows: u64,
}

/// One landing: the files one run landed for a dataset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub dataset: String,
    pub run_id: String,
    pub landed_at: String,
    pub files: Vec<ManifestFile>,
}

pub fn landing_prefix(dataset: &str, date: &str, run_id: &str) -> String {
    format!("raw/{dataset}/{date}/{run_id}/")
}

fn index_key(dataset: &str, sha: &str) -> String {
    format!("_sluice/index/{dataset}/{sha}")
}

/// What landing a file did.
#[derive(Debug, Clone)]
pub enum Landing {
    New(ManifestFile),
    /// The same bytes were landed before, under this key.
    Duplicate {
        existing: String,
        sha256: String,
        bytes: u64,
    },
}

/// How landing counts the rows of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowCount {
    /// Delimited records, as the loader will read them (header not counted).
    Csv { delimiter: u8, quote: u8, header: bool },
    /// Non-empty lines (NDJSON).
    Lines,
}

/// Hashes and stores what passes through it while a counter reads it.
struct Tee<'a> {
    src: &'a mut dyn Read,
    hasher: Sha256,
    staged: &'a mut dyn Write,
    bytes: u64,
    progress: &'a mut dyn FnMut(u64),
    write_error: Option<std::io::Error>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.src.read(buf)?;
        self.hasher.update(&buf[..n]);
        if let Err(e) = self.staged.write_all(&buf[..n]) {
            let msg = e.to_string();
            self.write_error = Some(e);
            return Err(std::io::Error::other(msg));
        }
        self.bytes += n as u64;
        (self.progress)(self.bytes);
        Ok(n)
    }
}

/// Copies `src` into the store under the landing prefix, hashing and counting
/// rows as it goes. If a file with the same hash was landed for the dataset
/// before, the copy is dropped and the earlier key is returned.
#[allow(clippy::too_many_arguments)]
pub fn land(
    store: &dyn ObjectStore,
    dataset: &str,
    prefix: &str,
    name: &str,
    source: &str,
    count: RowCount,
    src: &mut dyn Read,
    progress: &mut dyn FnMut(u64),
) -> Result<Landing> {
    let key = format!("{prefix}{name}");
    let mut staged = store.stage(&key)?;
    let (sha, bytes, rows) = {
        let mut tee = Tee { src, hasher: Sha256::new(), staged: &mut staged, bytes: 0, progress, write_error: None };
        let counted = count_rows(&mut tee, count);
        if let Some(e) = tee.write_error.take() {
            let _ = staged.abort();
            return Err(Error::external(format!("cannot write {key} to {}: {e}", store.describe()), true));
        }
        let rows = match counted {
            Ok(r) => r,
            Err(e) => {
                let _ = staged.abort();
                return Err(Error::external(format!("cannot read {source}: {e}"), true));
            }
        };
        (hex(&tee.hasher.finalize()), tee.bytes, rows)
    };
    if let Some(existing) = store.get_bytes(&index_key(dataset, &sha))? {
        let existing = String::from_utf8_lossy(&existing).into_owned();
        if store.get(&existing)?.is_some() {
            staged.abort()?;
            return Ok(Landing::Duplicate { existing, sha256: sha, bytes });
        }
    }
    staged.commit()?;
    if !store.put_if_absent(&index_key(dataset, &sha), key.as_bytes())? {
        // Another run landed the same bytes at the same moment: keep theirs.
        let existing = store.get_bytes(&index_key(dataset, &sha))?.unwrap_or_default();
        let existing = String::from_utf8_lossy(&existing).into_owned();
        if existing != key && store.get(&existing)?.is_some() {
            store.delete(&key)?;
            return Ok(Landing::Duplicate { existing, sha256: sha, bytes });
        }
        store.put(&index_key(dataset, &sha), key.as_bytes())?;
    }
    Ok(Landing::New(ManifestFile { name: name.to_string(), key, source: source.to_string(), sha256: sha, bytes, rows }))
}

/// Reads a whole stream, counting its rows.
fn count_rows(r: &mut dyn Read, count: RowCount) -> std::io::Result<u64> {
    match count {
        RowCount::Lines => {
            let mut buf = vec![0u8; 1 << 20];
            let (mut lines, mut pending) = (0u64, false);
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    return Ok(lines + u64::from(pending));
                }
                for chunk in buf[..n].split_inclusive(|&b| b == b'\n') {
                    let body = chunk.strip_suffix(b"\n").unwrap_or(chunk);
                    pending |= body.iter().any(|b| !b.is_ascii_whitespace());
                    if chunk.ends_with(b"\n") {
                        lines += u64::from(pending);
                        pending = false;
                    }
                }
            }
        }
        RowCount::Csv { delimiter, quote, header } => {
            let mut reader = crate::formats::csv::CsvReader::new(r, delimiter, quote);
            let mut rows = 0u64;
            let mut first = header;
            loop {
                match reader.next_record()? {
                    crate::formats::csv::Next::End => return Ok(rows),
                    crate::formats::csv::Next::Record(rec, _) if first => {
                        first = false;
                        let n = rec.len();
                        reader.set_expected_fields(n);
                    }
                    _ => rows += 1,
                }
            }
        }
    }
}

/// Writes a landing's manifest; the landing is visible to loads from then on.
pub fn write_manifest(store: &dyn ObjectStore, prefix: &str, m: &Manifest) -> Result<()> {
    let json = serde_json::to_vec_pretty(m).map_err(|e| Error::internal(format!("manifest: {e}")))?;
    store.put(&format!("{prefix}_manifest.json"), &json)
}

/// Every landing of a dataset, oldest first.
pub fn manifests(store: &dyn ObjectStore, dataset: &str) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for key in store.list(&format!("raw/{dataset}/"))? {
        if !key.ends_with("/_manifest.json") {
            continue;
        }
        let bytes = store.get_bytes(&key)?.unwrap_or_default();
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::external(format!("manifest {key} in {} is damaged: {e}", store.describe()), false))?;
        out.push(m);
    }
    // Run ids are time-ordered (UUID v7), so key order is landing order within
    // a date; sort across dates by the landing time.
    out.sort_by(|a, b| (&a.landed_at, &a.run_id).cmp(&(&b.landed_at, &b.run_id)));
    Ok(out)
}

/// Lowercase hex of bytes.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStore;

    const CSV: RowCount = RowCount::Csv { delimiter: b',', quote: b'"', header: true };

    #[test]
    fn counts_records_not_lines() {
        assert_eq!(count_rows(&mut &b"a,b\n1,\"x\ny\"\n\n2,z"[..], CSV).unwrap(), 2);
        // An unterminated quote costs one record, not the rest of the file.
        assert_eq!(count_rows(&mut &b"a,b\n1,\"x\n2,y\n3,\"z\"\n"[..], CSV).unwrap(), 3);
        assert_eq!(count_rows(&mut &b"{}\n\n{}\n  \n{}"[..], RowCount::Lines).unwrap(), 3);
    }

    #[test]
    fn lands_once_per_content() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().to_path_buf(), "file://x".into());
        let data = b"id\n1\n2\n";
        let p1 = landing_prefix("sales", "2026-01-01", "r1");
        let Landing::New(f) = land(&s, "sales", &p1, "s.csv", "s.csv", CSV, &mut &data[..], &mut |_| {}).unwrap()
        else {
            panic!()
        };
        assert_eq!((f.rows, f.bytes), (2, 7));
        assert_eq!(f.sha256.len(), 64);
        let p2 = landing_prefix("sales", "2026-01-02", "r2");
        let Landing::Duplicate { existing, .. } =
            land(&s, "sales", &p2, "s.csv", "s.csv", CSV, &mut &data[..], &mut |_| {}).unwrap()
        else {
            panic!()
        };
        assert_eq!(existing, "raw/sales/2026-01-01/r1/s.csv");
        assert!(s.get("raw/sales/2026-01-02/r2/s.csv").unwrap().is_none());
    }
}
