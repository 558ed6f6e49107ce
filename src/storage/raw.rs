//! The raw zone's layout: `raw/<dataset>/<date>/<run-id>/<file>` with a
//! `_manifest.json` per landing (sha256, bytes, rows of each file), and an
//! index by hash under `_sluice/index/<dataset>/` so a file already landed is
//! not landed again. Objects are copied byte for byte.

use std::io::Read;

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
    Duplicate { existing: String, sha256: String, bytes: u64 },
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
    has_header: bool,
    src: &mut dyn Read,
    progress: &mut dyn FnMut(u64),
) -> Result<Landing> {
    let key = format!("{prefix}{name}");
    let mut staged = store.stage(&key)?;
    let mut hasher = Sha256::new();
    let mut counter = RowCounter::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = staged.abort();
                return Err(Error::external(format!("cannot read {source}: {e}"), true));
            }
        };
        hasher.update(&buf[..n]);
        counter.feed(&buf[..n]);
        if let Err(e) = staged.write_all(&buf[..n]) {
            let _ = staged.abort();
            return Err(Error::external(format!("cannot write {key} to {}: {e}", store.describe()), true));
        }
        bytes += n as u64;
        progress(bytes);
    }
    let sha = hex(&hasher.finalize());
    if let Some(existing) = store.get_bytes(&index_key(dataset, &sha))? {
        let existing = String::from_utf8_lossy(&existing).into_owned();
        if store.get(&existing)?.is_some() {
            staged.abort()?;
            return Ok(Landing::Duplicate { existing, sha256: sha, bytes });
        }
    }
    staged.commit()?;
    let records = counter.finish();
    let rows = if has_header { records.saturating_sub(1) } else { records };
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

/// Counts CSV records: line breaks outside double quotes, plus a last line
/// without one.
#[derive(Default)]
struct RowCounter {
    in_quotes: bool,
    records: u64,
    line_has_data: bool,
}

impl RowCounter {
    fn feed(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            match memchr::memchr2(b'"', b'\n', b) {
                None => {
                    self.line_has_data = true;
                    return;
                }
                Some(k) => {
                    if b[k] == b'"' {
                        self.in_quotes = !self.in_quotes;
                        self.line_has_data = true;
                    } else if !self.in_quotes {
                        let has = self.line_has_data || (k > 0 && b[..k] != *b"\r");
                        if has {
                            self.records += 1;
                        }
                        self.line_has_data = false;
                    }
                    b = &b[k + 1..];
                }
            }
        }
    }

    fn finish(self) -> u64 {
        self.records + u64::from(self.line_has_data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStore;

    #[test]
    fn counts_records_not_lines() {
        let mut c = RowCounter::default();
        c.feed(b"a,b\n1,\"x\ny\"\n\n2,");
        c.feed(b"z");
        assert_eq!(c.finish(), 3);
    }

    #[test]
    fn lands_once_per_content() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().to_path_buf(), "file://x".into());
        let data = b"id\n1\n2\n";
        let p1 = landing_prefix("sales", "2026-01-01", "r1");
        let Landing::New(f) = land(&s, "sales", &p1, "s.csv", "s.csv", true, &mut &data[..], &mut |_| {}).unwrap() else {
            panic!()
        };
        assert_eq!((f.rows, f.bytes), (2, 7));
        assert_eq!(f.sha256.len(), 64);
        let p2 = landing_prefix("sales", "2026-01-02", "r2");
        let Landing::Duplicate { existing, .. } = land(&s, "sales", &p2, "s.csv", "s.csv", true, &mut &data[..], &mut |_| {}).unwrap()
        else {
            panic!()
        };
        assert_eq!(existing, "raw/sales/2026-01-01/r1/s.csv");
        assert!(s.get("raw/sales/2026-01-02/r2/s.csv").unwrap().is_none());
    }
}
