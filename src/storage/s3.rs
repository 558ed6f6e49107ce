//! An S3-compatible bucket (AWS, MinIO, Ceph, s3s, moto, …) as an object
//! store, over the `object_store` crate, behind the same blocking interface
//! as a local folder.
//!
//! One URL names it: `s3://[KEY:SECRET@]bucket[/prefix][?endpoint=URL&
//! region=R&path_style=true&allow_http=true]`. What the URL leaves out comes
//! from the standard environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`),
//! and a key or secret may come from a file named by `AWS_ACCESS_KEY_ID_FILE`
//! or `AWS_SECRET_ACCESS_KEY_FILE` (Docker and Kubernetes secrets).
//!
//! Objects are written as they stream in: parts of 8 MiB are uploaded as a
//! multipart upload with at most two parts in flight, so memory stays bounded
//! whatever the size, and the object appears whole when the upload completes
//! (never half). Objects smaller than one part take one PUT. Reads stream; a
//! read that breaks off part-way resumes with a ranged GET from where it was.
//! Create-if-absent is S3's conditional PUT (`If-None-Match: *`).

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjPath;
use object_store::{
    GetOptions, GetRange, ObjectStore as _, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart,
};

use super::{ObjectStore, StagedObject, check_key};
use crate::error::{Error, Result};

/// The size of an upload's parts (S3 wants at least 5 MiB but for the last).
const PART: usize = 8 << 20;
/// Parts uploading at once.
const PARTS_IN_FLIGHT: usize = 2;
/// How many times a read that broke off is resumed.
const READ_RESUMES: u32 = 3;

pub struct S3Store {
    store: Arc<AmazonS3>,
    bucket: String,
    /// Keys live under this prefix of the bucket (empty, or ending in `/`).
    prefix: String,
    /// The URL as shown (no credentials).
    shown: String,
    rt: tokio::runtime::Handle,
}

/// The parts of an `s3://` URL.
#[derive(Debug, Default, PartialEq)]
struct S3Url {
    bucket: String,
    prefix: String,
    key_id: Option<String>,
    secret: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    allow_http: Option<bool>,
}

fn parse_url(url: &str) -> Result<S3Url> {
    let bad = |why: String| Error::user(format!("invalid S3 URL {}: {why}", crate::secret::redact_url(url)));
    let rest = url.strip_prefix("s3://").ok_or_else(|| bad("it must start with s3://".into()))?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (auth, path) = match rest.rfind('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        return Err(bad("it names no bucket (s3://BUCKET/prefix)".into()));
    }
    let mut u = S3Url { bucket: bucket.to_string(), ..Default::default() };
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() {
        u.prefix = format!("{prefix}/");
    }
    if let Some(a) = auth {
        let (k, s) = a.split_once(':').ok_or_else(|| bad("credentials in the URL are KEY:SECRET@".into()))?;
        u.key_id = Some(percent_decode(k));
        u.secret = Some(percent_decode(s));
    }
    let flag = |k: &str, v: &str| match v {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(bad(format!("`{k}` is true or false, not \"{v}\""))),
    };
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = percent_decode(v);
        match k {
            "endpoint" => u.endpoint = Some(v),
            "region" => u.region = Some(v),
            "path_style" => u.path_style = Some(flag(k, &v)?),
            "allow_http" => u.allow_http = Some(flag(k, &v)?),
            other => {
                return Err(bad(format!(
                    "unknown parameter `{other}` (known: endpoint, region, path_style, allow_http)"
                )));
            }
        }
    }
    Ok(u)
}

/// Checks an `s3://` URL's form (bucket, credentials, options) without
/// reaching the server.
pub fn check_url(url: &str) -> Result<()> {
    parse_url(url).map(|_| ())
}

/// Decodes `%XX` escapes (credentials hold any character).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A value from the environment, or from the file `NAME_FILE` names.
fn env_or_file(name: &str) -> Result<Option<String>> {
    if let Ok(v) = std::env::var(name)
        && !v.is_empty()
    {
        return Ok(Some(v));
    }
    match std::env::var(format!("{name}_FILE")) {
        Ok(path) if !path.is_empty() => {
            let v = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(&format!("read {name}_FILE"), path.as_ref(), e))?;
            Ok(Some(v.trim_end_matches(['\n', '\r']).to_string()))
        }
        _ => Ok(None),
    }
}

impl S3Store {
    /// Connects to the bucket a URL names and checks that it answers.
    pub fn open(url: &str) -> Result<S3Store> {
        let u = parse_url(url)?;
        let shown = crate::secret::redact_url(url);
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&u.bucket);
        if let Some(k) = u.key_id.clone().or(env_or_file("AWS_ACCESS_KEY_ID")?) {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = u.secret.clone().or(env_or_file("AWS_SECRET_ACCESS_KEY")?) {
            b = b.with_secret_access_key(s);
        }
        let endpoint = u.endpoint.clone().or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e);
            // A custom endpoint (MinIO, s3s, moto) serves buckets by path unless told.
            b = b.with_virtual_hosted_style_request(!u.path_style.unwrap_or(true));
            if e.starts_with("http://") {
                b = b.with_allow_http(u.allow_http.unwrap_or(true));
            }
        } else if let Some(p) = u.path_style {
            b = b.with_virtual_hosted_style_request(!p);
        }
        if let Some(a) = u.allow_http {
            b = b.with_allow_http(a);
        }
        let region =
            u.region.clone().or_else(|| std::env::var("AWS_REGION").ok()).unwrap_or_else(|| "us-east-1".into());
        b = b.with_region(region);
        // Retries are ours to decide (a step's retries); keep the client's short.
        b = b.with_config(AmazonS3ConfigKey::Client(object_store::ClientConfigKey::Timeout), "60s");
        b = b.with_config(AmazonS3ConfigKey::Client(object_store::ClientConfigKey::ConnectTimeout), "10s");
        let store = b.build().map_err(|e| Error::user(format!("object store {shown}: {e}")))?;
        let s =
            S3Store { store: Arc::new(store), bucket: u.bucket, prefix: u.prefix, shown, rt: crate::runtime::handle() };
        s.probe()?;
        Ok(s)
    }

    /// Lists one key under the prefix: a missing bucket, refused credentials
    /// or an unreachable endpoint are reported before any work starts.
    fn probe(&self) -> Result<()> {
        let prefix = ObjPath::from(self.prefix.trim_end_matches('/'));
        let store = self.store.clone();
        let first = self.rt.block_on(async move { store.list(Some(&prefix)).next().await });
        match first {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(self.err(e, "list", &self.prefix)),
        }
    }

    fn path(&self, key: &str) -> ObjPath {
        ObjPath::from(format!("{}{key}", self.prefix))
    }

    /// An error of the store, for the user: who must act, and whether a retry
    /// may pass. Decided from the error's kind and the S3 error code the
    /// server sent (`<Code>…</Code>` of its XML answer, S3's own error
    /// vocabulary), never from the wording of a message.
    fn err(&self, e: object_store::Error, what: &str, key: &str) -> Error {
        use object_store::Error as E;
        let at = format!("{what} {key} in {}", self.shown);
        let code = s3_code(&e);
        let refused = "the server refused the credentials";
        let fix = "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the KEY:SECRET@ of the URL)";
        match (code.as_deref(), &e) {
            (Some("NoSuchBucket"), _) => {
                Error::user(format!("cannot {at}: bucket `{}` does not exist at that endpoint", self.bucket))
            }
            (
                Some(
                    c @ ("SignatureDoesNotMatch"
                    | "InvalidAccessKeyId"
                    | "AccessDenied"
                    | "InvalidToken"
                    | "ExpiredToken"
                    | "InvalidSecurity"),
                ),
                _,
            ) => Error::user(format!("cannot {at}: {refused} ({c}); {fix}")),
            (_, E::PermissionDenied { .. } | E::Unauthenticated { .. }) => {
                Error::user(format!("cannot {at}: {refused}; {fix}"))
            }
            (_, E::NotFound { .. }) if what == "list" => Error::user(format!(
                "cannot {at}: bucket `{}` does not exist (or the endpoint is not an S3 server)",
                self.bucket
            )),
            (_, E::NotFound { .. }) => Error::external(format!("cannot {at}: it does not exist"), false),
            _ => Error::external(format!("cannot {at}: {e}"), true),
        }
    }
}

/// The S3 error code in an error's chain (`SignatureDoesNotMatch`, `NoSuchBucket`, …).
fn s3_code(e: &object_store::Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if let Some(start) = text.find("<Code>") {
            let rest = &text[start + 6..];
            if let Some(end) = rest.find("</Code>") {
                return Some(rest[..end].to_string());
            }
        }
        cur = err.source();
    }
    None
}

/// An object being uploaded: parts go up as they fill; nothing is visible
/// until `commit` completes the upload.
struct S3Staged {
    store: Arc<AmazonS3>,
    rt: tokio::runtime::Handle,
    path: ObjPath,
    key: String,
    shown: String,
    /// The first part, held until it is known whether one PUT will do.
    head: Vec<u8>,
    upload: Option<WriteMultipart>,
    /// An upload error, reported by the write that hits it and by `commit`.
    failed: Option<String>,
}

impl S3Staged {
    fn start_upload(&mut self) -> io::Result<()> {
        let (store, path) = (self.store.clone(), self.path.clone());
        let upload = self
            .rt
            .block_on(async move { store.put_multipart(&path).await })
            .map_err(|e| io::Error::other(format!("cannot start uploading {}: {e}", self.key)))?;
        let _guard = self.rt.enter();
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
        w.write(&std::mem::take(&mut self.head));
        self.upload = Some(w);
        Ok(())
    }
}

impl Write for S3Staged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = &self.failed {
            return Err(io::Error::other(f.clone()));
        }
        if self.upload.is_none() {
            if self.head.len() + buf.len() <= PART {
                self.head.extend_from_slice(buf);
                return Ok(buf.len());
            }
            self.start_upload()?;
        }
        let w = self.upload.as_mut().expect("started above");
        // Back pressure: wait while two parts are uploading.
        if let Err(e) = self.rt.block_on(w.wait_for_capacity(PARTS_IN_FLIGHT)) {
            let msg = format!("cannot upload {} to {}: {e}", self.key, self.shown);
            self.failed = Some(msg.clone());
            return Err(io::Error::other(msg));
        }
        let _guard = self.rt.enter();
        w.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl StagedObject for S3Staged {
    fn commit(mut self: Box<Self>) -> Result<()> {
        if let Some(f) = self.failed.take() {
            if let Some(w) = self.upload.take() {
                let _ = self.rt.block_on(w.abort());
            }
            return Err(Error::external(f, true));
        }
        let res = match self.upload.take() {
            None => {
                let payload = PutPayload::from(Bytes::from(std::mem::take(&mut self.head)));
                let (store, path) = (self.store.clone(), self.path.clone());
                self.rt.block_on(async move { store.put(&path, payload).await }).map(|_| ())
            }
            Some(w) => self.rt.block_on(w.finish()).map(|_| ()),
        };
        res.map_err(|e| Error::external(format!("cannot upload {} to {}: {e}", self.key, self.shown), true))
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        if let Some(w) = self.upload.take() {
            let _ = self.rt.block_on(w.abort());
        }
        Ok(())
    }
}

impl Drop for S3Staged {
    fn drop(&mut self) {
        // Neither committed nor aborted (an error path): drop the parts.
        if let Some(w) = self.upload.take() {
            let _ = self.rt.block_on(w.abort());
        }
    }
}

/// An object being read: chunks of its body as they arrive; a body that
/// breaks off is asked for again from the byte it stopped at.
struct S3Reader {
    store: Arc<AmazonS3>,
    rt: tokio::runtime::Handle,
    path: ObjPath,
    key: String,
    shown: String,
    body: Option<futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>>,
    chunk: Bytes,
    /// Bytes handed out so far.
    offset: u64,
    resumes: u32,
}

impl S3Reader {
    fn reopen(&mut self) -> io::Result<()> {
        let (store, path, offset) = (self.store.clone(), self.path.clone(), self.offset);
        let opts = GetOptions { range: (offset > 0).then_some(GetRange::Offset(offset)), ..Default::default() };
        let got = self
            .rt
            .block_on(async move { store.get_opts(&path, opts).await })
            .map_err(|e| io::Error::other(format!("cannot read {} from {}: {e}", self.key, self.shown)))?;
        self.body = Some(got.into_stream());
        Ok(())
    }
}

impl Read for S3Reader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.chunk.is_empty() {
                let n = self.chunk.len().min(out.len());
                out[..n].copy_from_slice(&self.chunk[..n]);
                self.chunk = self.chunk.slice(n..);
                self.offset += n as u64;
                return Ok(n);
            }
            if self.body.is_none() {
                self.reopen()?;
            }
            let body = self.body.as_mut().expect("opened above");
            match self.rt.block_on(body.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => {
                    self.body = None;
                    if self.resumes >= READ_RESUMES {
                        return Err(io::Error::other(format!(
                            "reading {} from {} broke off at byte {} ({e}), {} times",
                            self.key,
                            self.shown,
                            self.offset,
                            self.resumes + 1
                        )));
                    }
                    self.resumes += 1;
                }
            }
        }
    }
}

/// An object of a listing, with what S3 says about it without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its key under the store's prefix.
    pub key: String,
    pub size: u64,
    /// The server's entity tag (an MD5 for single-part uploads), when sent.
    pub etag: Option<String>,
    /// RFC 3339.
    pub last_modified: String,
}

impl S3Store {
    /// Every object under a prefix of the store's prefix (recursively), with
    /// its listing metadata, sorted by key.
    pub fn list_listed(&self, prefix: &str) -> Result<Vec<Listed>> {
        // object_store lists by path segments: list the deepest folder the
        // prefix names, then keep the keys that start with it.
        let (dir, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let full = format!("{}{dir}", self.prefix);
        let list_path = ObjPath::from(full.trim_end_matches('/'));
        let store = self.store.clone();
        let metas = self.rt.block_on(async move { store.list(Some(&list_path)).collect::<Vec<_>>().await });
        let mut out = Vec::new();
        for m in metas {
            let m = m.map_err(|e| self.err(e, "list", prefix))?;
            let full = m.location.to_string();
            if let Some(key) = full.strip_prefix(&self.prefix)
                && key.starts_with(prefix)
            {
                out.push(Listed {
                    key: key.to_string(),
                    size: m.size,
                    etag: m.e_tag.clone(),
                    last_modified: m.last_modified.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The store's prefix in the bucket (empty, or ending in `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn stage(&self, key: &str) -> Result<Box<dyn StagedObject>> {
        check_key(key)?;
        Ok(Box::new(S3Staged {
            store: self.store.clone(),
            rt: self.rt.clone(),
            path: self.path(key),
            key: key.to_string(),
            shown: self.shown.clone(),
            head: Vec::new(),
            upload: None,
            failed: None,
        }))
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        check_key(key)?;
        let (store, path) = (self.store.clone(), self.path(key));
        let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.rt.block_on(async move { store.put_opts(&path, payload, opts).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.err(e, "create", key)),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
        check_key(key)?;
        let mut r = S3Reader {
            store: self.store.clone(),
            rt: self.rt.clone(),
            path: self.path(key),
            key: key.to_string(),
            shown: self.shown.clone(),
            body: None,
            chunk: Bytes::new(),
            offset: 0,
            resumes: 0,
        };
        // The first request tells a missing object from a present one.
        let (store, path) = (self.store.clone(), self.path(key));
        match self.rt.block_on(async move { store.get(&path).await }) {
            Ok(got) => {
                r.body = Some(got.into_stream());
                Ok(Some(Box::new(r)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e, "read", key)),
        }
    }

    fn exists(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        let (store, path) = (self.store.clone(), self.path(key));
        match self.rt.block_on(async move { store.head(&path).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(e, "look up", key)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.list_listed(prefix)?.into_iter().map(|l| l.key).collect())
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let (store, path) = (self.store.clone(), self.path(key));
        match self.rt.block_on(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e, "delete", key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_bucket_prefix_credentials_and_options() {
        let u = parse_url(
            "s3://k%40y:s%2Fe%3Acret%23@raw-bucket/lake/zone/?endpoint=http://127.0.0.1:9000&path_style=true",
        )
        .unwrap();
        assert_eq!(u.bucket, "raw-bucket");
        assert_eq!(u.prefix, "lake/zone/");
        assert_eq!(u.key_id.as_deref(), Some("k@y"));
        assert_eq!(u.secret.as_deref(), Some("s/e:cret#"));
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(u.path_style, Some(true));
        assert_eq!(parse_url("s3://b").unwrap(), S3Url { bucket: "b".into(), ..Default::default() });
        let e = parse_url("s3:///x").unwrap_err().to_string();
        assert!(e.contains("names no bucket"), "{e}");
        let e = parse_url("s3://b?regoin=x").unwrap_err().to_string();
        assert!(e.contains("unknown parameter `regoin`"), "{e}");
        let e = parse_url("s3://AK:topsecret@b?path_style=maybe").unwrap_err().to_string();
        assert!(!e.contains("topsecret"), "{e}");
    }
}
