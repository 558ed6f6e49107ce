//! A folder used as an object store. Objects are written to a temporary file
//! inside the store and renamed into place, so a reader sees whole objects only;
//! create-if-absent uses a hard link, which fails atomically if the key exists.
//! A temporary file's name carries the host and process that write it, so a
//! later run can remove what a killed writer left (`sweep_staging`).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{ObjectStore, StagedObject, check_key};
use crate::error::{Error, Result};

pub struct LocalStore {
    root: PathBuf,
    url: String,
}

impl LocalStore {
    pub fn new(root: PathBuf, url: String) -> Self {
        LocalStore { root, url }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn tmp_path(&self) -> Result<PathBuf> {
        let dir = self.root.join(".tmp");
        fs::create_dir_all(&dir).map_err(|e| Error::io("create folder", &dir, e))?;
        Ok(dir.join(format!("{}.{}.{}", host(), std::process::id(), uuid::Uuid::now_v7().simple())))
    }
}

/// This machine's name, as staging files record it.
fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    let name = if ok { String::from_utf8_lossy(&buf[..end]).into_owned() } else { String::new() };
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    if name.is_empty() { "host".into() } else { name }
}

/// Whether a process of this machine is gone.
fn process_gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// A staging file older than this is removed whoever wrote it (a writer on
/// another machine sharing the folder cannot be asked whether it lives).
const STALE_STAGING: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Whether a staging file was left by a writer that is gone.
fn abandoned(name: &str, age: Option<std::time::Duration>, this_host: &str) -> bool {
    if age.is_some_and(|a| a > STALE_STAGING) {
        return true;
    }
    let mut parts = name.rsplitn(3, '.');
    let (_, pid, host) = (parts.next(), parts.next(), parts.next());
    match (host, pid.and_then(|p| p.parse::<i32>().ok())) {
        (Some(h), Some(pid)) if h == this_host => pid != std::process::id() as i32 && process_gone(pid),
        // Written by an older Sluice (a bare UUID): its writer is long gone
        // unless the file is fresh.
        (None, _) | (_, None) => age.is_some_and(|a| a > std::time::Duration::from_secs(3600)),
        _ => false,
    }
}

struct LocalStaged {
    tmp: PathBuf,
    dest: PathBuf,
    file: Option<BufWriter<File>>,
}

impl Write for LocalStaged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("open until commit or abort").write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.as_mut().expect("open until commit or abort").write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("open until commit or abort").flush()
    }
}

impl StagedObject for LocalStaged {
    fn commit(mut self: Box<Self>) -> Result<()> {
        let f = self.file.take().expect("open until commit or abort");
        let f = f.into_inner().map_err(|e| Error::io("write", &self.tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io("sync", &self.tmp, e))?;
        drop(f);
        if let Some(parent) = self.dest.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("create folder", parent, e))?;
        }
        fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io("publish", &self.dest, e))
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        self.file.take();
        match fs::remove_file(&self.tmp) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &self.tmp, e)),
        }
    }
}

impl Drop for LocalStaged {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn stage(&self, key: &str) -> Result<Box<dyn StagedObject>> {
        check_key(key)?;
        let tmp = self.tmp_path()?;
        let file = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        Ok(Box::new(LocalStaged { tmp, dest: self.path(key), file: Some(BufWriter::with_capacity(1 << 20, file)) }))
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        check_key(key)?;
        let tmp = self.tmp_path()?;
        fs::write(&tmp, bytes).map_err(|e| Error::io("write", &tmp, e))?;
        let dest = self.path(key);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("create folder", parent, e))?;
        }
        let res = fs::hard_link(&tmp, &dest);
        let _ = fs::remove_file(&tmp);
        match res {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io("create", &dest, e)),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
        check_key(key)?;
        let p = self.path(key);
        match File::open(&p) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open", &p, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        // List from the deepest folder the prefix names.
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let start = if dir_part.is_empty() { self.root.clone() } else { self.root.join(dir_part) };
        walk(&self.root, &start, &mut out)?;
        out.retain(|k| k.starts_with(prefix));
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let p = self.path(key);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &p, e)),
        }
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        Some(self.path(key))
    }

    fn exists(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        Ok(self.path(key).is_file())
    }

    fn sweep_staging(&self) -> Result<u64> {
        let dir = self.root.join(".tmp");
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io("list", &dir, e)),
        };
        let this_host = host();
        let mut freed = 0;
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata().ok();
            let age = meta.as_ref().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            if abandoned(&name, age, &this_host) && fs::remove_file(entry.path()).is_ok() {
                freed += meta.map(|m| m.len()).unwrap_or(0);
            }
        }
        Ok(freed)
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        if dir == root && name == ".tmp" {
            continue;
        }
        let ft = entry.file_type().map_err(|e| Error::io("stat", &path, e))?;
        if ft.is_dir() {
            walk(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_objects_appear_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().to_path_buf(), "file://x".into());
        let mut w = s.stage("raw/a/b.csv").unwrap();
        w.write_all(b"hello").unwrap();
        assert!(s.get("raw/a/b.csv").unwrap().is_none());
        w.commit().unwrap();
        assert_eq!(s.get_bytes("raw/a/b.csv").unwrap().unwrap(), b"hello");
        let w = s.stage("raw/a/c.csv").unwrap();
        w.abort().unwrap();
        assert_eq!(s.list("raw/").unwrap(), vec!["raw/a/b.csv"]);
        assert!(s.put_if_absent("idx/k", b"1").unwrap());
        assert!(!s.put_if_absent("idx/k", b"2").unwrap());
        assert_eq!(s.get_bytes("idx/k").unwrap().unwrap(), b"1");
        assert!(s.stage("../escape").is_err());
    }

    #[test]
    fn sweeping_removes_only_what_dead_writers_left() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().to_path_buf(), "file://x".into());
        let live = s.stage("raw/a/live.csv").unwrap();
        // A child that has exited stands for a killed writer of this machine.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let tmp = dir.path().join(".tmp");
        std::fs::write(tmp.join(format!("{}.{dead}.0123abcd", host())), b"half written").unwrap();
        std::fs::write(tmp.join("otherhost.1.0123abcd"), b"maybe still written").unwrap();
        assert_eq!(s.sweep_staging().unwrap(), 12);
        let mut left: Vec<String> =
            std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.contains(&"otherhost.1.0123abcd".to_string()));
        live.abort().unwrap();
    }
}
