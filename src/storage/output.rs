//! Where an export writes, named by a path or URL: a local file (a path
//! relative to a base folder, or `file:///abs/path`), written under a
//! temporary name in the same folder, synced and renamed; or an object in an
//! S3-compatible bucket (`s3://bucket/dir/name?endpoint=…`), streamed as a
//! multipart upload that is completed only at the end. Either way the output
//! appears whole or not at all. A writer killed midway leaves at most its
//! temporary file (the S3 server drops an upload that is never completed);
//! the next export to the same file removes those of processes that are gone.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::StagedObject;
use crate::error::{Error, Result};

/// An output being written; invisible under its name until `commit`.
pub struct Output {
    /// The destination as shown to users (no credentials).
    pub shown: String,
    inner: BufWriter<Box<dyn StagedObject>>,
    bytes: u64,
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.bytes += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Output {
    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Publishes the output under its name; returns its size.
    pub fn commit(self) -> Result<u64> {
        let shown = self.shown.clone();
        let bytes = self.bytes;
        let staged = self
            .inner
            .into_inner()
            .map_err(|e| Error::external(format!("cannot write {shown}: {}", e.error()), true))?;
        staged.commit()?;
        Ok(bytes)
    }

    /// Drops what was written.
    pub fn abort(self) {
        if let Ok(staged) = self.inner.into_inner() {
            let _ = staged.abort();
        }
    }
}

/// Whether a destination names an object store rather than a local file.
pub fn is_remote(dest: &str) -> bool {
    dest.starts_with("s3://")
}

/// The local file a destination names (a `file://` URL or a path under `base`).
pub fn local_path(dest: &str, base: &Path) -> PathBuf {
    let p = Path::new(dest.strip_prefix("file://").unwrap_or(dest));
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

/// Starts writing to `dest`: `s3://bucket/dir/name[?params]`, `file:///path`
/// or a path relative to `base`. `shown` names it in messages.
pub fn create(dest: &str, base: &Path, shown: &str) -> Result<Output> {
    let staged: Box<dyn StagedObject> = if is_remote(dest) {
        let (store_url, key) = split_object_url(dest)?;
        let store = super::s3::S3Store::open(&store_url)?;
        super::ObjectStore::stage(&store, &key)?
    } else if dest.contains("://") && !dest.starts_with("file://") {
        return Err(Error::user(format!(
            "unsupported export destination \"{}\": use a path, file:///path or s3://bucket/key",
            crate::secret::redact_url(dest)
        )));
    } else {
        Box::new(LocalStaged::create(&local_path(dest, base), shown)?)
    };
    Ok(Output { shown: shown.to_string(), inner: BufWriter::with_capacity(1 << 20, staged), bytes: 0 })
}

/// `s3://bucket/dir/name?q` → (`s3://bucket/dir?q`, `name`).
fn split_object_url(url: &str) -> Result<(String, String)> {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let rest = &path["s3://".len()..];
    let after_auth = rest.rfind('@').map(|i| i + 1).unwrap_or(0);
    let slash = rest[after_auth..].rfind('/').map(|i| i + after_auth);
    let Some(slash) = slash.filter(|&i| i + 1 < rest.len()) else {
        return Err(Error::user(format!(
            "export destination {} names no object: write s3://bucket/path/file.ext",
            crate::secret::redact_url(url)
        )));
    };
    let mut store = format!("s3://{}", &rest[..slash]);
    if let Some(q) = query {
        store.push('?');
        store.push_str(q);
    }
    Ok((store, rest[slash + 1..].to_string()))
}

/// A local file written under a temporary name and renamed when committed.
struct LocalStaged {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    shown: String,
    /// Bytes written, and where the last write-back request ended.
    written: u64,
    flushed: u64,
}

/// The temporary name of a file being written: `.NAME.sluice-PID-ID.tmp`.
fn temp_prefix(name: &str) -> String {
    format!(".{name}.sluice-")
}

impl LocalStaged {
    fn create(path: &Path, shown: &str) -> Result<LocalStaged> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create the output folder", &dir, e))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "export".into());
        if path.is_dir() {
            return Err(Error::user(format!("{shown} is a folder; name a file to export to")));
        }
        sweep_dead_temps(&dir, &name);
        let tmp =
            dir.join(format!("{}{}-{}.tmp", temp_prefix(&name), std::process::id(), uuid::Uuid::now_v7().simple()));
        let file =
            File::create(&tmp).map_err(|e| Error::io(&format!("create {shown} (as a temporary file)"), &dir, e))?;
        Ok(LocalStaged {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
            shown: shown.to_string(),
            written: 0,
            flushed: 0,
        })
    }
}

/// Removes temporary files of `name` left by processes that no longer run.
fn sweep_dead_temps(dir: &Path, name: &str) {
    let prefix = temp_prefix(name);
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let f = e.file_name();
        let f = f.to_string_lossy();
        let Some(rest) = f.strip_prefix(&prefix) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else { continue };
        if !process_alive(pid) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Bytes between requests to start writing back (so the final sync is short).
const WRITE_BACK_EVERY: u64 = 32 << 20;

impl Write for LocalStaged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self.file.as_mut().ok_or_else(|| io::Error::other("the output is closed"))?;
        let n = f.write(buf)?;
        self.written += n as u64;
        #[cfg(target_os = "linux")]
        if self.written - self.flushed >= WRITE_BACK_EVERY {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid open descriptor and a range inside the file;
            // this only starts write-back of pages already written.
            unsafe {
                libc::sync_file_range(
                    f.as_raw_fd(),
                    self.flushed as i64,
                    (self.written - self.flushed) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.flushed = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl StagedObject for LocalStaged {
    fn commit(mut self: Box<Self>) -> Result<()> {
        let f = self.file.take().ok_or_else(|| Error::internal("the output was committed twice"))?;
        let res = f.sync_all().map_err(|e| Error::io(&format!("write {}", self.shown), &self.tmp, e)).and_then(|()| {
            drop(f);
            std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io("publish", &self.path, e))
        });
        if res.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        res
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        self.file.take();
        let _ = std::fs::remove_file(&self.tmp);
        Ok(())
    }
}

impl Drop for LocalStaged {
    fn drop(&mut self) {
        // Neither committed nor aborted (an error on the way): leave nothing.
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_urls_split_into_store_and_key() {
        assert_eq!(
            split_object_url("s3://b/dir/x.parquet?endpoint=http://h:1").unwrap(),
            ("s3://b/dir?endpoint=http://h:1".to_string(), "x.parquet".to_string())
        );
        assert_eq!(split_object_url("s3://k:s@b/x.tsv").unwrap(), ("s3://k:s@b".to_string(), "x.tsv".to_string()));
        assert!(split_object_url("s3://bucket").is_err());
        assert!(split_object_url("s3://bucket/").is_err());
    }

    #[test]
    fn a_file_appears_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = create("out/a.tsv", dir.path(), "a.tsv").unwrap();
        o.write_all(b"x\n").unwrap();
        o.flush().unwrap();
        assert!(!dir.path().join("out/a.tsv").exists());
        assert_eq!(o.commit().unwrap(), 2);
        assert_eq!(std::fs::read(dir.path().join("out/a.tsv")).unwrap(), b"x\n");
        let mut o = create("out/a.tsv", dir.path(), "a.tsv").unwrap();
        o.write_all(b"y\n").unwrap();
        o.abort();
        assert_eq!(std::fs::read(dir.path().join("out/a.tsv")).unwrap(), b"x\n");
        assert_eq!(std::fs::read_dir(dir.path().join("out")).unwrap().count(), 1);
        // A temporary file of a process that is gone is swept.
        std::fs::write(dir.path().join("out/.a.tsv.sluice-999999999-x.tmp"), b"half").unwrap();
        create("out/a.tsv", dir.path(), "a.tsv").unwrap().abort();
        assert_eq!(std::fs::read_dir(dir.path().join("out")).unwrap().count(), 1);
    }
}
