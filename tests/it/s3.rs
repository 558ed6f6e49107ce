//! Raw landing on S3-compatible servers started by the tests on loopback:
//! s3s-fs (a Rust server on a folder) and moto (Python, in memory). Both are
//! installed by `.ci/tools.sh`; a test fails, never skips, without them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::support::{TestProject, free_port, wait_for};

pub const KEY: &str = "sluice-test";
pub const SECRET: &str = "s3cret/with+odd=chars";

/// Which S3 implementation a test runs against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Server {
    S3sFs,
    Moto,
}

/// An S3 server started by a test, killed when dropped.
pub struct S3 {
    pub kind: Server,
    pub port: u16,
    /// s3s-fs's data folder (each bucket a folder).
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

fn tool(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    assert!(
        p.exists(),
        "{} is missing: run .ci/tools.sh or scripts/test.sh (they install the test tools)",
        p.display()
    );
    p
}

impl S3 {
    pub fn start(kind: Server) -> S3 {
        let mut s = S3 { kind, port: free_port(), dir: tempfile::tempdir().unwrap(), child: None };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut c = match self.kind {
            Server::S3sFs => {
                let mut c = Command::new(tool(".tools/bin/s3s-fs"));
                c.args(["--host", "127.0.0.1", "--port", &port, "--access-key", KEY, "--secret-key", SECRET]);
                c.arg(self.dir.path());
                c
            }
            Server::Moto => {
                let mut c = Command::new(tool(".venv/bin/moto_server"));
                c.args(["-H", "127.0.0.1", "-p", &port]);
                c
            }
        };
        let child = c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("the S3 server starts");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for(60, "the S3 server to listen", || std::net::TcpStream::connect(&addr).is_ok());
    }

    /// Kills the server (kill -9).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket.
    pub fn bucket(&self, name: &str) {
        match self.kind {
            Server::S3sFs => std::fs::create_dir_all(self.dir.path().join(name)).unwrap(),
            Server::Moto => {
                // moto takes unsigned requests.
                let (code, body) =
                    crate::support::http("PUT", &format!("127.0.0.1:{}", self.port), &format!("/{name}"), None);
                assert_eq!(code, 200, "create bucket {name}: {body}");
            }
        }
    }

    /// A storage URL for a bucket and prefix (credentials come from the env).
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!("s3://{bucket}/{prefix}?endpoint={}", self.endpoint())
    }

    /// Writes an object (through sluice's own S3 store, signed).
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let url = format!(
            "s3://{KEY}:{}@{bucket}?endpoint={}",
            SECRET.replace('/', "%2F").replace('+', "%2B").replace('=', "%3D"),
            self.endpoint()
        );
        let store = sluice::storage::open(&url, Path::new(".")).unwrap_or_else(|e| panic!("open {bucket}: {e}"));
        store.put(key, bytes).unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    /// The environment a sluice process needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("AWS_ACCESS_KEY_ID", KEY.to_string()), ("AWS_SECRET_ACCESS_KEY", SECRET.to_string())]
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn run(p: &TestProject, s3: &S3, args: &[&str]) -> crate::support::Out {
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    p.run_env(args, &env)
}

/// A project that lands `drops/*.csv` into dataset `events` on `storage` and
/// appends them to `events` in the embedded SQLite.
fn project(storage: &str) -> TestProject {
    let p = TestProject::new();
    p.write("sluice.toml", &format!("name = \"s3\"\n[storage]\nurl = \"{storage}\"\n"));
    p.write(
        "pipelines/p.toml",
        r#"[[steps]]
name = "ingest"
kind = "ingest"
source = "drops/*.csv"
dataset = "events"

[[steps]]
name = "load"
kind = "load"
from = "ingest"
table = "events"
mode = "replace"
[steps.columns]
id = "bigint not null"
name = "text"
"#,
    );
    p
}

fn ids(p: &TestProject) -> Vec<Vec<String>> {
    p.query("select count(*), count(distinct id) from events")
}

/// Landing on S3 is landing on a folder: the same manifests, nothing landed
/// twice, a source that goes back to earlier content followed.
fn landing_on_s3_works_like_a_folder(kind: Server) {
    let s3 = S3::start(kind);
    s3.bucket("lake");
    let p = project(&s3.url("lake", "zone/raw"));
    p.write("drops/a.csv", "id,name\n1,a\n2,b\n");
    run(&p, &s3, &["run"]).expect_code(0);
    assert_eq!(p.query("select id, name from events order by id"), [["1", "a"], ["2", "b"]]);
    let again = run(&p, &s3, &["run"]);
    again.expect_code(0);
    assert!(again.stdout.contains("nothing new: the source holds the 1 file landed last"), "{}", again.stdout);
    p.write("drops/a.csv", "id,name\n3,c\n");
    run(&p, &s3, &["run"]).expect_code(0);
    assert_eq!(p.query("select id, name from events order by id"), [["3", "c"]]);
    p.write("drops/a.csv", "id,name\n1,a\n2,b\n");
    run(&p, &s3, &["run"]).expect_code(0);
    assert_eq!(p.query("select id, name from events order by id"), [["1", "a"], ["2", "b"]]);
    if kind == Server::S3sFs {
        // Two stored copies (two contents), three manifests, under the prefix.
        let stored = crate::support::files_under(&s3.dir.path().join("lake/zone/raw/raw/events"));
        assert_eq!(stored.iter().filter(|f| f.ends_with("/a.csv")).count(), 2, "{stored:?}");
        assert_eq!(stored.iter().filter(|f| f.ends_with("/_manifest.json")).count(), 3, "{stored:?}");
    }
}

per_s3!(landing_on_s3_works_like_a_folder);

/// A file larger than 100 MB goes up as a multipart upload and loads whole.
#[test]
fn a_multipart_object_over_100_mb_round_trips() {
    let s3 = S3::start(Server::S3sFs);
    s3.bucket("lake");
    let p = project(&s3.url("lake", ""));
    let rows = 2_400_000u64;
    let mut csv = String::with_capacity(110 << 20);
    csv.push_str("id,name\n");
    for i in 0..rows {
        csv.push_str(&format!("{i},a name long enough to make the file big {i:>10}\n"));
    }
    assert!(csv.len() > 100 << 20, "{} bytes", csv.len());
    p.write("drops/big.csv", &csv);
    run(&p, &s3, &["run"]).expect_code(0);
    assert_eq!(ids(&p), [[rows.to_string(), rows.to_string()]]);
    let stored: Vec<String> = crate::support::files_under(&s3.dir.path().join("lake/raw/events"))
        .into_iter()
        .filter(|f| f.ends_with("/big.csv"))
        .collect();
    assert_eq!(stored.len(), 1);
    assert!(std::fs::read(&stored[0]).unwrap() == csv.as_bytes(), "the stored object differs from the file");
}

/// Refused credentials and a missing bucket are clear errors before any work.
#[test]
fn wrong_credentials_and_a_missing_bucket_are_clear() {
    let s3 = S3::start(Server::S3sFs);
    s3.bucket("lake");
    let p = project(&s3.url("lake", ""));
    p.write("drops/a.csv", "id,name\n1,a\n");
    let out = p.run_env(&["run"], &[("AWS_ACCESS_KEY_ID", KEY), ("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")]);
    out.expect_code(2);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("the server refused the credentials"), "{all}");
    assert!(!all.contains("wrong-secret-value"), "the secret was printed: {all}");
    let p = project(&s3.url("no-such-bucket", ""));
    p.write("drops/a.csv", "id,name\n1,a\n");
    let out = run(&p, &s3, &["run"]);
    out.expect_code(2);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("bucket `no-such-bucket` does not exist"), "{all}");
}

/// The server dies in the middle of an upload: the run fails with a clear
/// error and publishes nothing; with the server back, the next run lands and
/// loads every row once.
#[test]
fn a_server_killed_mid_transfer_lands_nothing_half_way() {
    let mut s3 = S3::start(Server::S3sFs);
    s3.bucket("lake");
    let p = project(&s3.url("lake", ""));
    let rows = 1_500_000u64;
    let mut csv = String::with_capacity(80 << 20);
    csv.push_str("id,name\n");
    for i in 0..rows {
        csv.push_str(&format!("{i},name {i:>40}\n"));
    }
    p.write("drops/big.csv", &csv);
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut c = crate::support::bin();
    c.current_dir(p.path()).arg("run").stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in &env {
        c.env(k, v);
    }
    let child = c.spawn().unwrap();
    // Kill the server once the upload is under way (its parts land in the data folder).
    let data = s3.dir.path().to_path_buf();
    wait_for(120, "the upload to start", || dir_bytes(&data) > 8 << 20);
    s3.kill();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("cannot upload raw/events/") || stdout.contains("big.csv"), "{stdout}");
    s3.restart();
    let manifests: Vec<String> = crate::support::files_under(&s3.dir.path().join("lake"))
        .into_iter()
        .filter(|f| f.ends_with("_manifest.json") || f.ends_with("/big.csv"))
        .collect();
    assert!(manifests.is_empty(), "a half landing is visible: {manifests:?}");
    run(&p, &s3, &["run"]).expect_code(0);
    assert_eq!(ids(&p), [[rows.to_string(), rows.to_string()]]);
}

pub fn dir_bytes(dir: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            n += if m.is_dir() { dir_bytes(&e.path()) } else { m.len() };
        }
    }
    n
}
