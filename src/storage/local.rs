//! A folder used as an object store. Objects are written to a temporary file
//! inside the store and renamed into place, so a reader sees whole objects only;
//! create-if-absent uses a hard link, which fails atomically if the key exists.

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
        Ok(dir.join(uuid::Uuid::now_v7().to_string()))
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
}
