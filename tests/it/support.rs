//! Helpers: temporary projects, running the real binary, reading SQLite tables.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What a run of the binary printed and returned.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Fails the test with everything printed when the exit code differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.env("SLUICE_NO_PROGRESS", "1");
    c.env_remove("SLUICE_PROJECT");
    c
}

/// Runs the binary with `args` in `cwd`.
pub fn run_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut c = bin();
    c.current_dir(cwd).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("the sluice binary runs");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A project in a temporary folder.
pub struct TestProject {
    pub dir: tempfile::TempDir,
}

impl TestProject {
    pub fn new() -> Self {
        TestProject { dir: tempfile::tempdir().expect("a temp dir") }
    }

    /// A copy of a folder of the repository (without run outputs).
    pub fn copy_of(rel: &str) -> Self {
        let p = TestProject::new();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        copy_dir(&src, p.path());
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> &Self {
        self.write_bytes(rel, text.as_bytes())
    }

    pub fn write_bytes(&self, rel: &str, bytes: &[u8]) -> &Self {
        let p = self.file(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
        self
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.file(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// Runs `sluice ARGS` inside the project folder.
    pub fn run(&self, args: &[&str]) -> Out {
        run_in(self.path(), args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        run_in(self.path(), args, env)
    }

    /// Rows of a query on the project's default SQLite warehouse, as text.
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        query_sqlite(&self.file(".sluice/warehouse.db"), sql)
    }
}

pub fn query_sqlite(db: &Path, sql: &str) -> Vec<Vec<String>> {
    let c = rusqlite::Connection::open(db).unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let mut st = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = st.column_count();
    let rows = st
        .query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => "NULL".to_string(),
                        rusqlite::types::ValueRef::Integer(x) => x.to_string(),
                        rusqlite::types::ValueRef::Real(x) => x.to_string(),
                        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                        rusqlite::types::ValueRef::Blob(b) => format!("{b:?}"),
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == ".sluice" || name == "output" || name == "target" {
            continue;
        }
        let to = dst.join(&name);
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

/// A project with one pipeline that lands `data/in.csv`, loads it into `t`
/// with the given columns, and exports `t` to `out/t.tsv`.
pub fn simple_project(columns: &str, csv: &[u8]) -> TestProject {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n");
    p.write(
        "pipelines/p.toml",
        &format!(
            r#"[[steps]]
name = "ingest"
kind = "ingest"
source = "data/in.csv"

[[steps]]
name = "load"
kind = "load"
from = "ingest"
table = "t"
mode = "replace"
[steps.columns]
{columns}

[[steps]]
name = "export"
kind = "export"
depends_on = ["load"]
table = "t"
path = "out/t.tsv"
"#
        ),
    );
    p.write_bytes("data/in.csv", csv);
    p
}

/// Every file under a folder, as paths.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.extend(files_under(&e.path()));
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

/// A free TCP port on loopback (bound and released; another process could
/// take it in between, which is unlikely on a test machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A minimal HTTP/1.1 request: returns the status code and the body.
pub fn http(method: &str, addr: &str, path: &str, body: Option<&str>) -> (u16, String) {
    try_http(method, addr, path, body).unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// `http`, with a failed connection or exchange as an error.
pub fn try_http(method: &str, addr: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    // Bodies may come chunked.
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    Ok((code, body))
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// Waits until `f` holds, up to `secs` seconds; panics with `what` otherwise.
#[track_caller]
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f() {
        assert!(std::time::Instant::now() < end, "timed out after {secs}s waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits until a sluice API at `addr` is ready (`/readyz` answers 200: it
/// listens and its state store answers).
#[track_caller]
pub fn wait_ready(addr: &str) {
    // A connection reset while the service starts is "not yet", not a failure.
    wait_for(60, &format!("the API at {addr} to be ready"), || {
        try_http("GET", addr, "/readyz", None).is_ok_and(|(code, _)| code == 200)
    });
}

/// A sluice service started by a test, killed when dropped. Its output goes
/// to a file, shown when a test fails.
pub struct Service {
    pub child: std::process::Child,
    pub log: PathBuf,
    pub name: String,
}

impl Service {
    pub fn start(cwd: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Service {
        let log = cwd.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let mut c = bin();
        c.current_dir(cwd).args(args).stdout(f.try_clone().unwrap()).stderr(f);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().expect("the sluice binary starts");
        Service { child, log, name: name.to_string() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit code (up to `secs`).
    pub fn stop(&mut self, secs: u64) -> Option<i32> {
        signal(self.pid(), "TERM");
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s.code().unwrap_or(-1));
            }
            if std::time::Instant::now() > end {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {} output\n{}", self.name, self.output());
        }
    }
}

/// Sends a signal (`TERM`, `KILL`) to a process this test started.
pub fn signal(pid: u32, sig: &str) {
    let sig = match sig {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "KILL" => libc::SIGKILL,
        other => panic!("no signal {other}"),
    };
    // SAFETY: kill(2) on a pid this test started (or its own child).
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// An HTTP answer with its headers (names lowercased).
#[derive(Debug)]
pub struct Answer {
    pub code: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON; fails the test when it is not.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Asserts an error answer: this status, JSON `{"error": …}`; returns the message.
    #[track_caller]
    pub fn error(&self, code: u16) -> String {
        assert_eq!(self.code, code, "{self:?}");
        assert!(self.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{self:?}");
        let v = self.json();
        let msg = v["error"].as_str().unwrap_or_else(|| panic!("no error message: {self:?}"));
        assert!(!msg.is_empty(), "{self:?}");
        msg.to_string()
    }
}

/// Sends a raw request head (`METHOD PATH`, then header lines) and body; the
/// `Host` of `addr`, `Connection: close` and `Content-Length` are added
/// unless the head has them.
pub fn request(addr: &str, head: &str, body: &[u8]) -> Answer {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut lines: Vec<String> = head.lines().map(str::to_string).collect();
    lines[0].push_str(" HTTP/1.1");
    let has = |lines: &[String], h: &str| lines.iter().skip(1).any(|l| l.to_ascii_lowercase().starts_with(h));
    if !has(&lines, "host:") {
        lines.push(format!("Host: {addr}"));
    }
    if !has(&lines, "connection:") {
        lines.push("Connection: close".into());
    }
    if !has(&lines, "content-length:") && !has(&lines, "transfer-encoding:") && !body.is_empty() {
        lines.push(format!("Content-Length: {}", body.len()));
    }
    let mut req = lines.join("\r\n").into_bytes();
    req.extend_from_slice(b"\r\n\r\n");
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut hl = head.lines();
    let code = hl.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = hl
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    Answer { code, headers, body }
}

/// Whether a process is alive (a zombie, dead but not yet reaped by its
/// parent, counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: "123 (sleep) S …".
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Waits for a file a process writes its pid to; returns the pid.
#[track_caller]
pub fn pid_in(path: &Path) -> u32 {
    let mut pid = 0;
    wait_for(60, &format!("{} to hold a pid", path.display()), || {
        pid = std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        pid != 0
    });
    pid
}

/// A TCP proxy on loopback in front of a server, that a test can take down
/// (every connection through it is cut, and new ones are closed at once)
/// and bring back: the server is unreachable meanwhile, as when it restarts
/// or the network to it fails.
pub struct Proxy {
    pub port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn start(target: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::<std::net::TcpStream>::new()));
        let (d, c, target) = (down.clone(), conns.clone(), target.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else { continue };
                {
                    let mut all = c.lock().unwrap();
                    all.push(client.try_clone().unwrap());
                    all.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, down, conns }
    }

    /// Cuts every connection and refuses new ones until `up`.
    pub fn down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn up(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
