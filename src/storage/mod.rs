//! The object store where raw data lands: one interface over a local folder
//! (`file://`, the embedded default) and S3-compatible servers, chosen by URL.
//! Writes are atomic (a reader never sees half an object), and `raw` keeps the
//! layout of landed files and their manifests. Nothing here parses data.

pub mod local;
pub mod output;
pub mod raw;
pub mod s3;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// An object being written; invisible under its key until `commit`.
pub trait StagedObject: Write + Send {
    /// Publishes the object under its key.
    fn commit(self: Box<Self>) -> Result<()>;
    /// Drops what was written.
    fn abort(self: Box<Self>) -> Result<()>;
}

/// A store of immutable objects under `/`-separated keys.
pub trait ObjectStore: Send + Sync {
    /// The store as shown to users (credentials never included).
    fn describe(&self) -> String;
    /// Starts writing an object.
    fn stage(&self, key: &str) -> Result<Box<dyn StagedObject>>;
    /// Writes a small object whole (replacing any previous one).
    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let mut s = self.stage(key)?;
        s.write_all(bytes).map_err(|e| Error::external(format!("cannot write {key}: {e}"), true))?;
        s.commit()
    }
    /// Writes an object only if none exists under the key; `false` if one did.
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool>;
    /// Reads an object as a stream; `None` when it does not exist.
    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>>;
    /// Reads a small object whole.
    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.get(key)? {
            None => Ok(None),
            Some(mut r) => {
                let mut v = Vec::new();
                r.read_to_end(&mut v).map_err(|e| Error::external(format!("cannot read {key}: {e}"), true))?;
                Ok(Some(v))
            }
        }
    }
    /// Whether an object exists under the key.
    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }
    /// Removes what writers that died left half-written (a killed run's
    /// staging files); returns how many bytes it freed.
    fn sweep_staging(&self) -> Result<u64> {
        Ok(0)
    }
    /// Every key under a prefix, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    fn delete(&self, key: &str) -> Result<()>;
    /// A local file holding the object, when the store is a local folder
    /// (lets readers skip a copy).
    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }
}

pub type Store = Arc<dyn ObjectStore>;

/// Opens the store a URL names; relative `file://` paths are under `base`.
pub fn open(url: &str, base: &Path) -> Result<Store> {
    if let Some(rest) = url.strip_prefix("file://") {
        let path = Path::new(rest);
        let root = if path.is_absolute() { path.to_path_buf() } else { base.join(path) };
        return Ok(Arc::new(local::LocalStore::new(root, url.to_string())));
    }
    if url.starts_with("s3://") {
        return Ok(Arc::new(s3::S3Store::open(url)?));
    }
    Err(Error::user(format!(
        "unsupported storage URL \"{}\": use file://DIR or s3://bucket/prefix",
        crate::secret::redact_url(url)
    )))
}

/// Checks that a key is relative and has no `..` parts.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.starts_with('/') || key.split('/').any(|p| p == ".." || p == "." || p.is_empty()) {
        return Err(Error::internal(format!("invalid object key \"{key}\"")));
    }
    Ok(())
}
