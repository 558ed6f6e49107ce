//! TLS to the databases (issue 13, "TLS everywhere"): a PostgreSQL cluster
//! and a MariaDB server of the tests' own, with TLS on, on free ports, their
//! certificates from a CA the test makes with `openssl` (the server's names
//! `localhost` only, so connecting by 127.0.0.1 is a wrong host name). Each
//! `sslmode` against them, a wrong CA, a wrong host name, `require` against a
//! server without TLS (one more of each, TLS off) and `prefer` falling back,
//! a real load through TLS into each, and the state store over TLS. Each
//! server starts once per test binary and is stopped by its PID when the
//! binary exits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::db::PasswordPg;
use crate::support::{Out, TestProject, free_port, run_in};

/// The TLS PostgreSQL's password for `postgres` (it checks passwords, as
/// managed services do).
const PG_PW: &str = "tls-Pw";

/// The certificates: `ca.pem` signed `server.pem` (for `localhost`);
/// `other-ca.pem` is a CA that signed nothing here.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Makes a CA and a server certificate for `localhost` in `dir`.
fn make_certs(dir: &Path) -> Certs {
    std::fs::create_dir_all(dir).unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for (key, pem, cn) in [("ca.key", "ca.pem", "sluice test CA"), ("other-ca.key", "other-ca.pem", "another CA")] {
        let subj = format!("/CN={cn}");
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend(["-keyout", key, "-out", pem, "-days", "3", "-subj", &subj]);
        a.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(dir, &a);
    }
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
    openssl(dir, &a);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "3",
            "-extfile",
            "server.ext",
        ],
    );
    Certs { dir: dir.to_path_buf() }
}

/// What the exit handler stops: PIDs with their signal, and folders.
static STARTED: Mutex<Vec<(i32, i32, PathBuf)>> = Mutex::new(Vec::new());

extern "C" fn stop_started() {
    let started = std::mem::take(&mut *STARTED.lock().unwrap_or_else(|e| e.into_inner()));
    for (pid, sig, _) in &started {
        // SAFETY: signals a server process this test binary started.
        unsafe { libc::kill(*pid, *sig) };
    }
    for (pid, _, dir) in &started {
        for _ in 0..100 {
            // SAFETY: signal 0 only asks whether the process is there.
            if unsafe { libc::kill(*pid, 0) } != 0 {
                break;
            }
            let mut status = 0;
            // SAFETY: reaps the server when it is our child (MariaDB).
            unsafe { libc::waitpid(*pid, &mut status, libc::WNOHANG) };
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Stops `pid` with `sig` and removes `dir` when the test binary exits.
fn stop_at_exit(pid: i32, sig: i32, dir: PathBuf) {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        // SAFETY: registers a plain function, once.
        unsafe { libc::atexit(stop_started) };
    });
    STARTED.lock().unwrap().push((pid, sig, dir));
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Gives `path` to the `postgres` user (when the tests run as root, the
/// server runs as `postgres`).
fn give_to_postgres(path: &Path) {
    if is_root() {
        let out = Command::new("chown").arg("-R").arg("postgres:postgres").arg(path).output().unwrap();
        assert!(out.status.success(), "chown: {}", String::from_utf8_lossy(&out.stderr));
    }
}

struct TlsPg {
    port: u16,
    certs: Certs,
    /// Where its Unix socket is.
    dir: PathBuf,
}

/// The PostgreSQL cluster with `ssl = on`, started once.
fn pg() -> &'static TlsPg {
    static PG: OnceLock<TlsPg> = OnceLock::new();
    PG.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let certs = make_certs(&dir.join("certs"));
        let bin = crate::db::pg_bin();
        let as_owner = |program: &str| {
            let p = bin.join(program);
            let mut c = if is_root() { Command::new("runuser") } else { Command::new(&p) };
            if is_root() {
                c.args(["-u", "postgres", "--"]).arg(&p);
            }
            c
        };
        std::fs::write(dir.join("pw"), PG_PW).unwrap();
        let data = dir.join("data");
        let key = dir.join("certs/server.key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        give_to_postgres(&dir);
        let out = as_owner("initdb")
            .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions"])
            .arg(format!("--pwfile={}", dir.join("pw").display()))
            .arg("-D")
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let c = &certs.dir;
        let out = as_owner("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=16MB -c ssl=on \
                 -c ssl_cert_file={} -c ssl_key_file={}",
                dir.display(),
                c.join("server.pem").display(),
                key.display()
            ))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "start a TLS PostgreSQL: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
        let pid: i32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
        // SIGQUIT: PostgreSQL's immediate shutdown.
        stop_at_exit(pid, libc::SIGQUIT, dir.clone());
        give_to_postgres(&dir);
        TlsPg { port, certs, dir }
    })
}

struct TlsMy {
    port: u16,
    certs: Certs,
}

/// The MariaDB server with TLS, started once (root without a password,
/// database `test`).
fn my() -> &'static TlsMy {
    static MY: OnceLock<TlsMy> = OnceLock::new();
    MY.get_or_init(|| start_mariadb(true))
}

/// A MariaDB server without TLS, started once (the shared one may have TLS
/// on, as MariaDB 11.4 does by default).
fn my_plain() -> &'static TlsMy {
    static MY: OnceLock<TlsMy> = OnceLock::new();
    MY.get_or_init(|| start_mariadb(false))
}

fn start_mariadb(tls: bool) -> TlsMy {
    let dir = tempfile::tempdir().unwrap().keep();
    let certs = make_certs(&dir.join("certs"));
    let data = dir.join("data");
    let user: &[&str] = if is_root() { &["--user=root"] } else { &[] };
    let out = Command::new("mariadb-install-db")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .args(user)
        .output()
        .expect("mariadb-install-db runs");
    assert!(out.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    let c = &certs.dir;
    let ssl = if tls {
        vec![
            format!("--ssl-ca={}", c.join("ca.pem").display()),
            format!("--ssl-cert={}", c.join("server.pem").display()),
            format!("--ssl-key={}", c.join("server.key").display()),
        ]
    } else {
        vec!["--skip-ssl".to_string()]
    };
    let log = std::fs::File::create(dir.join("log")).unwrap();
    // Killed and reaped by PID in the exit handler.
    #[allow(clippy::zombie_processes)]
    let child = Command::new("mariadbd")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", dir.join("sock").display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .args(&ssl)
        .args(["--skip-log-bin", "--innodb-buffer-pool-size=16M", "--local-infile=1"])
        .args(user)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("mariadbd starts");
    stop_at_exit(child.id() as i32, libc::SIGKILL, dir.clone());
    let ready = (0..600).any(|_| {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-h", "127.0.0.1", "-P", &port.to_string(), "-u", "root"])
            .args(["-e", "CREATE DATABASE IF NOT EXISTS test"])
            .output()
            .unwrap();
        out.status.success() || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            false
        }
    });
    assert!(ready, "the test MariaDB answers: {}", std::fs::read_to_string(dir.join("log")).unwrap_or_default());
    TlsMy { port, certs }
}

fn pg_url(host: &str, port: u16, params: &str) -> String {
    format!("postgres://postgres:{PG_PW}@{host}:{port}/postgres?{params}")
}

fn my_url(host: &str, port: u16, params: &str) -> String {
    format!("mysql://root@{host}:{port}/test?{params}")
}

/// `sluice export` of one value from `url` (the connection's whole path).
fn export(url: &str, sql: &str) -> Out {
    let dir = tempfile::tempdir().unwrap();
    let mut out = run_in(dir.path(), &["export", url, "--query", sql, "-o", "o.tsv"], &[]);
    if out.code == 0 {
        out.stdout = std::fs::read_to_string(dir.path().join("o.tsv")).unwrap();
    }
    out
}

/// Whether the session is encrypted, as the server says.
const PG_SSL: &str = "SELECT COALESCE((SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()), 'none') AS ssl";
const MY_SSL: &str = "SELECT COALESCE(NULLIF(VARIABLE_VALUE, ''), 'none') AS v FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_VERSION'";

fn value(out: &Out) -> String {
    out.expect_code(0);
    out.stdout.lines().nth(1).unwrap_or_default().to_string()
}

#[test]
fn postgres_each_sslmode_against_a_tls_server() {
    let pg = pg();
    let ca = pg.certs.ca().display().to_string();
    for (params, encrypted) in [
        ("sslmode=disable".to_string(), "false"),
        (String::new(), "true"),
        ("sslmode=prefer".into(), "true"),
        ("sslmode=require".into(), "true"),
        (format!("sslmode=verify-ca&sslrootcert={ca}"), "true"),
        (format!("sslmode=verify-full&sslrootcert={ca}"), "true"),
        // SCRAM bound to the TLS session (tls-server-end-point).
        ("sslmode=require&channel_binding=require".into(), "true"),
        (format!("sslmode=verify-full&sslrootcert={ca}&channel_binding=require"), "true"),
    ] {
        let out = export(&pg_url("localhost", pg.port, &params), PG_SSL);
        assert_eq!(value(&out), encrypted, "{params}");
    }
    // A Unix socket is not encrypted, whatever the mode (as libpq).
    let url =
        format!("postgres://postgres:{PG_PW}@/postgres?host={}&port={}&sslmode=verify-full", pg.dir.display(), pg.port);
    assert_eq!(value(&export(&url, PG_SSL)), "false");
}

#[test]
fn postgres_a_wrong_ca_fails_the_verifying_modes() {
    let pg = pg();
    let other = pg.certs.other_ca().display().to_string();
    for mode in ["verify-ca", "verify-full", "require"] {
        let url = pg_url("localhost", pg.port, &format!("sslmode={mode}&sslrootcert={other}"));
        let out = export(&url, PG_SSL);
        out.expect_code(4);
        let shown = url.replace(PG_PW, "***");
        let label = match mode {
            "require" => "sslmode=require with sslrootcert, which checks the CA".to_string(),
            m => format!("sslmode={m}"),
        };
        assert_eq!(
            out.stderr,
            format!(
                "error: cannot connect to {shown}: the server's certificate is not signed by the CA in {other} ({label})\n"
            )
        );
        assert!(!out.stderr.contains(PG_PW));
    }
    // Without sslrootcert the system's store is trusted, which does not
    // hold the test's CA.
    let out = export(&pg_url("localhost", pg.port, "sslmode=verify-full"), PG_SSL);
    out.expect_code(4);
    assert!(
        out.stderr.ends_with(
            ": the server's certificate is not signed by a CA in the system's trust store (sslmode=verify-full)\n"
        ),
        "{}",
        out.stderr
    );
    // A root certificate file that is not there, or holds no certificate,
    // is named.
    let out = export(&pg_url("localhost", pg.port, "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem"), PG_SSL);
    out.expect_code(2);
    assert!(out.stderr.contains("/nonexistent/ca.pem"), "{}", out.stderr);
    let key = pg.certs.dir.join("server.ext").display().to_string();
    let out = export(&pg_url("localhost", pg.port, &format!("sslmode=verify-ca&sslrootcert={key}")), PG_SSL);
    out.expect_code(2);
    assert!(
        out.stderr.contains(&format!(
            "the sslrootcert file {key} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)"
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn postgres_verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let pg = pg();
    let ca = pg.certs.ca().display().to_string();
    let url = pg_url("127.0.0.1", pg.port, &format!("sslmode=verify-full&sslrootcert={ca}"));
    let out = export(&url, PG_SSL);
    out.expect_code(4);
    assert_eq!(
        out.stderr,
        format!(
            "error: cannot connect to {}: the server's certificate is not valid for the host name 127.0.0.1 (it names localhost) (sslmode=verify-full); connect by a name the certificate holds, or use sslmode=verify-ca to check only the CA\n",
            url.replace(PG_PW, "***")
        )
    );
    let out = export(&pg_url("127.0.0.1", pg.port, &format!("sslmode=verify-ca&sslrootcert={ca}")), PG_SSL);
    assert_eq!(value(&out), "true");
}

#[test]
fn postgres_require_fails_without_tls_and_prefer_falls_back() {
    let plain = PasswordPg::start();
    let pw = crate::db::PASSWORD_PG_SUPERUSER;
    let url = format!("postgres://postgres:{pw}@127.0.0.1:{}/postgres?sslmode=require", plain.port);
    let out = export(&url, PG_SSL);
    out.expect_code(4);
    assert_eq!(
        out.stderr,
        format!(
            "error: cannot connect to {}: the server does not accept TLS connections (sslmode=require); enable TLS on the server, or connect with sslmode=prefer or sslmode=disable\n",
            url.replace(pw, "***")
        )
    );
    for params in ["sslmode=prefer", ""] {
        let url = format!("postgres://postgres:{pw}@127.0.0.1:{}/postgres?{params}", plain.port);
        assert_eq!(value(&export(&url, PG_SSL)), "false", "{params}");
    }
    let ca = pg().certs.ca().display().to_string();
    let url =
        format!("postgres://postgres:{pw}@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={ca}", plain.port);
    let out = export(&url, PG_SSL);
    out.expect_code(4);
    assert!(
        out.stderr.contains(": the server does not accept TLS connections (sslmode=verify-full);"),
        "{}",
        out.stderr
    );
    // An unknown mode is the user's to fix, with the choices.
    let out = export(&format!("postgres://postgres:{pw}@127.0.0.1:{}/postgres?sslmode=on", plain.port), PG_SSL);
    out.expect_code(2);
    assert!(
        out.stderr.contains("invalid sslmode=on in postgres://postgres:***@127.0.0.1:")
            && out.stderr.contains(": use one of disable, prefer, require, verify-ca, verify-full (default prefer)"),
        "{}",
        out.stderr
    );
}

/// A CSV loaded through TLS, then read back over TLS.
fn load_and_read(url: &str, table: &str) {
    let p = TestProject::new();
    let mut csv = String::from("id,name\n");
    for i in 0..2000 {
        csv.push_str(&format!("{i},name {i}\n"));
    }
    p.write("t.csv", &csv);
    p.run(&["load", "t.csv", url, "--table", table, "--create"]).expect_code(0);
    let out = export(url, &format!("SELECT COUNT(*) AS n, SUM(id) AS s FROM {table}"));
    assert_eq!(value(&out), "2000\t1999000");
}

#[test]
fn postgres_load_and_state_store_over_tls() {
    let pg = pg();
    let ca = pg.certs.ca().display().to_string();
    let url = pg_url("localhost", pg.port, &format!("sslmode=verify-full&sslrootcert={ca}"));
    load_and_read(&url, "loaded");

    // The state store: a run enqueued, claimed and finished over TLS.
    use sluice::state::{NewRun, NewTask, Outcome, PipelineDef, State};
    let state_url = format!("{url}&schema=tls_state");
    let st = State::open(&state_url, Path::new("/")).expect("the state store opens over TLS");
    let id = st
        .enqueue(&NewRun {
            pipeline: PipelineDef { name: "p".into(), hash: "h".into(), max_active_runs: None, concurrency: None },
            trigger: "api".into(),
            logical_date: "2026-01-01".into(),
            scheduled_for: None,
            params: serde_json::json!({}),
            full_refresh: false,
            tasks: vec![NewTask {
                step: "a".into(),
                kind: "empty".into(),
                deps: vec![],
                retries: 0,
                retry_delay_ms: 10,
                retry_on: sluice::project::RetryOn::Transient,
                timeout_ms: None,
            }],
        })
        .unwrap()
        .unwrap();
    let a = st.claim("w1", 30_000).unwrap().expect("a is ready");
    let done = Outcome::Success { summary: "ok".into(), output: serde_json::json!({}), datasets: vec![] };
    assert!(st.finish(&a, &done).unwrap());
    assert_eq!(st.run(&id).unwrap().unwrap().status, "success");

    // A state store with a wrong CA fails with the same clear message.
    let other = pg.certs.other_ca().display().to_string();
    let bad = pg_url("localhost", pg.port, &format!("sslmode=verify-ca&sslrootcert={other}&schema=tls_state"));
    let e = State::open(&bad, Path::new("/")).err().expect("a wrong CA fails").to_string();
    assert!(
        e.contains(&format!("the server's certificate is not signed by the CA in {other} (sslmode=verify-ca)")),
        "{e}"
    );
    assert!(!e.contains(PG_PW), "{e}");
}

#[test]
fn mysql_each_sslmode_against_a_tls_server() {
    let my = my();
    let ca = my.certs.ca().display().to_string();
    for (params, tls) in [
        ("sslmode=disable".to_string(), false),
        (String::new(), true),
        ("ssl-mode=PREFERRED".into(), true),
        ("sslmode=require".into(), true),
        (format!("sslmode=verify-ca&sslrootcert={ca}"), true),
        (format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"), true),
    ] {
        let v = value(&export(&my_url("localhost", my.port, &params), MY_SSL));
        assert_eq!(v.starts_with("TLSv1"), tls, "{params}: {v}");
    }
}

#[test]
fn mysql_a_wrong_ca_and_a_wrong_host_name() {
    let my = my();
    let (ca, other) = (my.certs.ca().display().to_string(), my.certs.other_ca().display().to_string());
    for (host, mode) in [("localhost", "verify-ca"), ("127.0.0.1", "verify-ca"), ("localhost", "verify-full")] {
        let url = my_url(host, my.port, &format!("sslmode={mode}&sslrootcert={other}"));
        let out = export(&url, MY_SSL);
        out.expect_code(4);
        assert!(
            out.stderr.ends_with(&format!(
                ": the server's certificate is not signed by the CA in {other} (sslmode={mode})\n"
            )),
            "{}",
            out.stderr
        );
    }
    let url = my_url("127.0.0.1", my.port, &format!("sslmode=verify-full&sslrootcert={ca}"));
    let out = export(&url, MY_SSL);
    out.expect_code(4);
    assert_eq!(
        out.stderr,
        format!(
            "error: cannot connect to {url}: the server's certificate is not valid for the host name 127.0.0.1 (it names localhost) (sslmode=verify-full); connect by a name the certificate holds, or use sslmode=verify-ca to check only the CA\n"
        )
    );
    let v = value(&export(&my_url("127.0.0.1", my.port, &format!("sslmode=verify-ca&sslrootcert={ca}")), MY_SSL));
    assert!(v.starts_with("TLSv1"), "{v}");
}

#[test]
fn mysql_require_fails_without_tls_and_prefer_falls_back() {
    let plain = my_plain();
    let url = my_url("127.0.0.1", plain.port, "sslmode=require");
    let out = export(&url, MY_SSL);
    out.expect_code(4);
    assert_eq!(
        out.stderr,
        format!(
            "error: cannot connect to {url}: the server does not accept TLS connections (sslmode=require); enable TLS on the server, or connect with sslmode=prefer or sslmode=disable\n"
        )
    );
    for params in ["sslmode=prefer", ""] {
        let out = export(&my_url("127.0.0.1", plain.port, params), MY_SSL);
        assert_eq!(value(&out), "none", "{params}");
    }
    // The verifying modes fail the same way (mysql_async is not reached).
    let ca = plain.certs.ca().display().to_string();
    let url = my_url("127.0.0.1", plain.port, &format!("sslmode=verify-ca&sslrootcert={ca}"));
    let out = export(&url, MY_SSL);
    out.expect_code(4);
    assert!(out.stderr.contains(": the server does not accept TLS connections (sslmode=verify-ca);"), "{}", out.stderr);
}

#[test]
fn mysql_load_over_tls() {
    let my = my();
    let ca = my.certs.ca().display().to_string();
    load_and_read(&my_url("localhost", my.port, &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}")), "loaded");
}
