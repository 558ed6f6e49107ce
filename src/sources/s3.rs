//! Objects of an S3-compatible bucket: `s3://[KEY:SECRET@]bucket/folder/GLOB
//! [?endpoint=…&region=…&path_style=…&allow_http=…]` (the options and the
//! credentials as for `storage::s3`; from the environment when the URL leaves
//! them out). The glob (`*`, `?`, `[…]`) applies to the last part of the key
//! and does not cross `/`; a URL ending in `/` takes every object under the
//! folder, and a URL without a glob names one object.
//!
//! With `take = "all"` each landing lists every matching object. With
//! `take = "new"` the listing's metadata (key, ETag, size, last-modified)
//! decides what is new, so an object taken before and unchanged is not
//! downloaded again; the cursor keeps, per key, the metadata and the sha256
//! taken. Objects stream through `storage::s3` (ranged reads resume a body
//! that broke off), so memory stays bounded whatever their size.
//!
//! This module lists and reads; it never writes to the bucket.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Object, Source, UniqueNames};
use crate::error::{Error, Result};
use crate::project::Take;
use crate::storage::ObjectStore as _;
use crate::storage::raw::{Manifest, ManifestFile, RowCount};
use crate::storage::s3::{Listed, S3Store};

/// An `s3://` source split into the store to open and the pattern to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Pattern {
    /// `s3://[auth@]bucket/folder?query`: the folder the objects are in.
    pub store_url: String,
    /// Matched against each key under the folder; `None`: every key.
    pub glob: Option<String>,
    /// The source as shown (credentials redacted).
    pub shown: String,
}

/// Splits an `s3://` source URL into its folder and glob.
pub fn parse(url: &str) -> Result<S3Pattern> {
    let shown = crate::secret::redact_url(url);
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| Error::user(format!("invalid S3 source {shown}: it must start with s3://")))?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    // The bucket starts after the credentials, if any.
    let start = path.rfind('@').map(|i| i + 1).unwrap_or(0);
    let (folder, glob) = match path[start..].split_once('/') {
        None => (path.to_string(), None),
        Some((_, keypart)) if keypart.is_empty() || keypart.ends_with('/') => (path.to_string(), None),
        Some(_) => {
            let cut = path.rfind('/').expect("a / follows the bucket");
            let last = &path[cut + 1..];
            let glob = if last.contains(['*', '?', '[']) { last.to_string() } else { glob::Pattern::escape(last) };
            glob::Pattern::new(&glob)
                .map_err(|e| Error::user(format!("invalid glob \"{last}\" in S3 source {shown}: {}", e.msg)))?;
            (path[..cut].to_string(), Some(glob))
        }
    };
    let store_url = match query {
        Some(q) => format!("s3://{folder}?{q}"),
        None => format!("s3://{folder}"),
    };
    crate::storage::s3::check_url(&store_url)?;
    Ok(S3Pattern { store_url, glob, shown })
}

/// What the cursor remembers of an object taken.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Taken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub size: u64,
    pub last_modified: String,
    pub sha256: String,
}

impl Taken {
    /// Whether a listing entry is the object taken (no download needed).
    fn same(&self, l: &Listed) -> bool {
        match (&self.etag, &l.etag) {
            (Some(a), Some(b)) => a == b && self.size == l.size,
            _ => self.size == l.size && self.last_modified == l.last_modified,
        }
    }
}

/// Opens the store of a source and lists what matches.
pub fn list(url: &str) -> Result<(S3Store, S3Pattern, Vec<Listed>)> {
    let pat = parse(url)?;
    let store = S3Store::open(&pat.store_url)?;
    let matcher = match &pat.glob {
        Some(g) => Some(glob::Pattern::new(g).map_err(|e| Error::user(format!("invalid glob \"{g}\": {}", e.msg)))?),
        None => None,
    };
    let opts = glob::MatchOptions { case_sensitive: true, require_literal_separator: true, ..Default::default() };
    let mut listed = store.list_listed("")?;
    listed.retain(|l| !l.key.ends_with('/') && matcher.as_ref().map(|m| m.matches_with(&l.key, opts)).unwrap_or(true));
    Ok((store, pat, listed))
}

pub struct S3Source {
    store: S3Store,
    /// `s3://bucket/prefix` of the objects (for `shown`).
    base: String,
    todo: std::vec::IntoIter<Listed>,
    names: UniqueNames,
    take: Take,
    /// The object handed out last (its metadata goes into the cursor once landed).
    current: Option<Listed>,
    /// Key → what was taken from it (`take = "new"`).
    taken: BTreeMap<String, Taken>,
}

impl S3Source {
    pub fn open(url: &str, take: Take, previous: Option<&Manifest>) -> Result<Self> {
        let (store, _pat, listed) = list(url)?;
        let taken: BTreeMap<String, Taken> = match take {
            Take::All => BTreeMap::new(),
            Take::New => previous
                .and_then(|m| m.cursor.as_ref())
                .and_then(|c| serde_json::from_value(c.get("s3")?.clone()).ok())
                .unwrap_or_default(),
        };
        let todo: Vec<Listed> = match take {
            Take::All => listed,
            Take::New => listed.into_iter().filter(|l| !taken.get(&l.key).is_some_and(|t| t.same(l))).collect(),
        };
        let base = format!("s3://{}/{}", store.bucket(), store.prefix());
        Ok(S3Source { store, base, todo: todo.into_iter(), names: UniqueNames::default(), take, current: None, taken })
    }
}

impl Source for S3Source {
    fn next(&mut self) -> Result<Option<Object>> {
        let Some(l) = self.todo.next() else { return Ok(None) };
        let shown = format!("{}{}", self.base, l.key);
        let reader = self
            .store
            .get(&l.key)?
            .ok_or_else(|| Error::external(format!("{shown} was listed but is gone; run again"), true))?;
        let count = if l.key.ends_with(".ndjson") || l.key.ends_with(".jsonl") {
            RowCount::Lines
        } else {
            RowCount::Csv { delimiter: b',', quote: b'"', header: true }
        };
        let obj = Object { name: self.names.name(&l.key), shown, size: Some(l.size), count, reader };
        self.current = Some(l);
        Ok(Some(obj))
    }

    fn landed(&mut self, file: &ManifestFile) -> bool {
        let Some(l) = self.current.take() else { return true };
        match self.take {
            Take::All => true,
            Take::New => {
                let t = Taken {
                    etag: l.etag.clone(),
                    size: l.size,
                    last_modified: l.last_modified.clone(),
                    sha256: file.sha256.clone(),
                };
                // Listed as changed but the same bytes (touched, copied onto
                // itself): remember the new metadata, land nothing.
                self.taken.insert(l.key, t).map(|old| old.sha256 != file.sha256).unwrap_or(true)
            }
        }
    }

    fn complete(&self) -> bool {
        self.take == Take::All
    }

    fn cursor(&self) -> Option<serde_json::Value> {
        (self.take == Take::New).then(|| serde_json::json!({ "s3": self.taken }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_folder_and_glob() {
        let p = parse("s3://AK:SEC@bucket/in/daily/*.csv?endpoint=http://h:1").unwrap();
        assert_eq!(p.store_url, "s3://AK:SEC@bucket/in/daily?endpoint=http://h:1");
        assert_eq!(p.glob.as_deref(), Some("*.csv"));
        assert!(!p.shown.contains("SEC"), "{}", p.shown);
        let p = parse("s3://bucket/in/").unwrap();
        assert_eq!((p.store_url.as_str(), p.glob), ("s3://bucket/in/", None));
        let p = parse("s3://bucket").unwrap();
        assert_eq!((p.store_url.as_str(), p.glob), ("s3://bucket", None));
        let p = parse("s3://bucket/a[1].csv").unwrap();
        assert_eq!((p.store_url.as_str(), p.glob.as_deref()), ("s3://bucket", Some("a[1].csv")));
        let p = parse("s3://bucket/x/one.csv").unwrap();
        assert_eq!((p.store_url.as_str(), p.glob.as_deref()), ("s3://bucket/x", Some("one.csv")));
        let p = parse("s3://bucket/x/one[.csv");
        assert!(p.unwrap_err().to_string().contains("invalid glob"));
    }

    #[test]
    fn listing_metadata_decides_what_is_unchanged() {
        let l = Listed { key: "a".into(), size: 3, etag: Some("\"e1\"".into()), last_modified: "t1".into() };
        let t = Taken { etag: Some("\"e1\"".into()), size: 3, last_modified: "t0".into(), sha256: "h".into() };
        assert!(t.same(&l));
        assert!(!Taken { etag: Some("\"e2\"".into()), ..t.clone() }.same(&l));
        let t = Taken { etag: None, size: 3, last_modified: "t1".into(), sha256: "h".into() };
        assert!(t.same(&l));
        assert!(!Taken { last_modified: "t2".into(), ..t }.same(&l));
    }
}
