//! The raw zone's layout: `raw/<dataset>/<date>/<run-id>/<file>` with a
//! `_manifest.json` per landing, and an index by hash under
//! `_sluice/index/<dataset>/` so the same bytes are stored once. Objects are
//! copied byte for byte.
//!
//! The manifest is the one commit point. A landing stores each new file's
//! bytes (and its index entry) first, then writes one manifest that lists
//! every file the source held at that moment, new or stored before. Loads read
//! manifests only, so a run killed anywhere before its manifest is written has
//! published nothing: the next run finds the bytes already stored, reuses
//! them, and writes the manifest. The index is a cache of where bytes are,
//! never a record of what was published.

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
    /// The bytes were stored by an earlier landing (`key` is under its prefix).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
}

/// One landing: every file the source held when a run looked at it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Where this manifest is stored (filled when read, not written).
    #[serde(skip)]
    pub key: String,
    pub dataset: String,
    pub run_id: String,
    pub landed_at: String,
    pub files: Vec<ManifestFile>,
    /// The landing lists everything the source held (`false`: only what was
    /// new since the previous landing, for sources that take new objects).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub complete: bool,
    /// What the source remembers for its next run (see `sources`); committed
    /// with the landing, so a run that dies before its manifest leaves it as
    /// it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<serde_json::Value>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

pub fn landing_prefix(dataset: &str, date: &str, run_id: &str) -> String {
    format!("raw/{dataset}/{date}/{run_id}/")
}

fn index_key(dataset: &str, sha: &str) -> String {
    format!("_sluice/index/{dataset}/{sha}")
}

/// How landing counts the rows of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowCount {
    /// Delimited records, as the loader will read them (header not counted).
    Csv { delimiter: u8, quote: u8, header: bool },
    /// Non-empty lines (NDJSON).
    Lines,
    /// Counted by the source beforehand (the records of an API page).
    Given(u64),
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
/// rows as it goes. If the same bytes were stored for the dataset before, the
/// copy is dropped and the file points at the earlier object (`reused`).
/// Nothing is visible to loads until `commit_manifest`.
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
) -> Result<ManifestFile> {
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
    let file = |key: String, reused: bool| ManifestFile {
        name: name.to_string(),
        key,
        source: source.to_string(),
        sha256: sha.clone(),
        bytes,
        rows,
        reused,
    };
    if let Some(existing) = stored(store, dataset, &sha)? {
        staged.abort()?;
        return Ok(file(existing, true));
    }
    staged.commit()?;
    if !store.put_if_absent(&index_key(dataset, &sha), key.as_bytes())? {
        // Another run stored the same bytes at the same moment: keep theirs.
        if let Some(existing) = stored(store, dataset, &sha)?
            && existing != key
        {
            store.delete(&key)?;
            return Ok(file(existing, true));
        }
        // The index pointed at an object that is gone: point it here.
        store.put(&index_key(dataset, &sha), key.as_bytes())?;
    }
    Ok(file(key, false))
}

/// Where the bytes with this hash are stored for a dataset, if they still are.
fn stored(store: &dyn ObjectStore, dataset: &str, sha: &str) -> Result<Option<String>> {
    let Some(existing) = store.get_bytes(&index_key(dataset, sha))? else { return Ok(None) };
    let existing = String::from_utf8_lossy(&existing).into_owned();
    Ok(store.exists(&existing)?.then_some(existing))
}

/// Reads a whole stream, counting its rows.
fn count_rows(r: &mut dyn Read, count: RowCount) -> std::io::Result<u64> {
    match count {
        RowCount::Given(n) => {
            std::io::copy(r, &mut std::io::sink())?;
            Ok(n)
        }
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

/// The key of the manifest of the landing under `prefix`.
pub fn manifest_key(prefix: &str) -> String {
    format!("{prefix}_manifest.json")
}

impl Manifest {
    /// What the source held: each file's name and hash, in a stable order.
    fn content(&self) -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> = self.files.iter().map(|f| (f.source.as_str(), f.sha256.as_str())).collect();
        v.sort_unstable();
        v
    }
}

/// Publishes a landing: writes its manifest unless the dataset's newest
/// landing already lists the same files with the same bytes (a complete
/// landing), or it lists nothing (a landing of what is new). Returns whether
/// it wrote one. The write is atomic: loads see the whole landing or none.
pub fn commit_manifest(store: &dyn ObjectStore, prefix: &str, m: &Manifest, newest: Option<&Manifest>) -> Result<bool> {
    let unchanged =
        if m.complete { newest.is_some_and(|n| n.complete && n.content() == m.content()) } else { m.files.is_empty() };
    if unchanged {
        return Ok(false);
    }
    let json = serde_json::to_vec_pretty(m).map_err(|e| Error::internal(format!("manifest: {e}")))?;
    store.put(&manifest_key(prefix), &json)?;
    Ok(true)
}

/// Every landing of a dataset, oldest first.
pub fn manifests(store: &dyn ObjectStore, dataset: &str) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for key in store.list(&format!("raw/{dataset}/"))? {
        if !key.ends_with("/_manifest.json") {
            continue;
        }
        let bytes = store.get_bytes(&key)?.unwrap_or_default();
        let mut m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::external(format!("manifest {key} in {} is damaged: {e}", store.describe()), false))?;
        m.key = key;
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
        let f = land(&s, "sales", &p1, "s.csv", "s.csv", CSV, &mut &data[..], &mut |_| {}).unwrap();
        assert_eq!((f.rows, f.bytes, f.reused), (2, 7, false));
        assert_eq!(f.sha256.len(), 64);
        let p2 = landing_prefix("sales", "2026-01-02", "r2");
        let g = land(&s, "sales", &p2, "s.csv", "s.csv", CSV, &mut &data[..], &mut |_| {}).unwrap();
        assert_eq!((g.key.as_str(), g.reused, g.rows), ("raw/sales/2026-01-01/r1/s.csv", true, 2));
        assert!(s.get("raw/sales/2026-01-02/r2/s.csv").unwrap().is_none());
    }

    #[test]
    fn nothing_is_published_before_the_manifest_and_a_rerun_publishes_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().to_path_buf(), "file://x".into());
        let manifest = |run: &str, files: Vec<ManifestFile>| Manifest {
            key: String::new(),
            dataset: "sales".into(),
            run_id: run.into(),
            landed_at: format!("2026-01-01T00:00:0{}Z", run.len()),
            files,
            complete: true,
            cursor: None,
        };
        // A run that died after storing the bytes (and their index entry)
        // but before its manifest: no landing is visible.
        let p1 = landing_prefix("sales", "2026-01-01", "r1");
        land(&s, "sales", &p1, "a.csv", "a.csv", CSV, &mut &b"id\n1\n"[..], &mut |_| {}).unwrap();
        assert!(manifests(&s, "sales").unwrap().is_empty());
        // The next run reuses the bytes and publishes them.
        let p2 = landing_prefix("sales", "2026-01-01", "r22");
        let a = land(&s, "sales", &p2, "a.csv", "a.csv", CSV, &mut &b"id\n1\n"[..], &mut |_| {}).unwrap();
        assert!(a.reused);
        assert!(commit_manifest(&s, &p2, &manifest("r22", vec![a.clone()]), None).unwrap());
        let m = manifests(&s, "sales").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].key, "raw/sales/2026-01-01/r22/_manifest.json");
        assert_eq!(m[0].files[0].key, "raw/sales/2026-01-01/r1/a.csv");
        // The same content again publishes nothing new ...
        assert!(!commit_manifest(&s, &p2, &manifest("r333", vec![a.clone()]), Some(&m[0])).unwrap());
        // ... but other content does, even if its bytes were stored before.
        let b = ManifestFile { sha256: "b".repeat(64), source: "b.csv".into(), ..a.clone() };
        let p4 = landing_prefix("sales", "2026-01-01", "r4444");
        assert!(commit_manifest(&s, &p4, &manifest("r4444", vec![b]), Some(&m[0])).unwrap());
        assert_eq!(manifests(&s, "sales").unwrap().len(), 2);
    }
}
