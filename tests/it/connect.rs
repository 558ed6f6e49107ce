//! Connecting: a server that never answers fails at the connect timeout;
//! services wait for a state store that is not up yet (issue 11, item 14);
//! a connection's `${env:…}` is resolved only when it is used (item 15).

use std::process::Command;

use crate::db::PG_BASE;
use crate::support::{Service, TestProject, free_port, http, run_in, wait_for};

/// A TCP port that accepts connections and never says anything (what a
/// client of the wrong protocol, or a hung server, sees).
struct Silent {
    port: u16,
}

impl Silent {
    fn start() -> Silent {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in l.incoming().flatten() {
                held.push(c);
            }
        });
        Silent { port }
    }
}

/// Issue 11, item 14: a `mysql://` URL pointed at PostgreSQL's port hung
/// for over a minute (each side waits for the other to speak first). The
/// connection and its handshake now have a limit (`connect_timeout`,
/// default 10 s): the same at a PostgreSQL URL whose server never answers,
/// and for the state store.
#[test]
fn a_server_that_never_answers_fails_at_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(
        dir.path(),
        &["export", "mysql://root@127.0.0.1:5432/test?connect_timeout=1", "--query", "select 1", "-o", "o.tsv"],
        &[],
    );
    out.expect_code(4);
    assert_eq!(
        out.stderr,
        "error: cannot connect to mysql://root@127.0.0.1:5432/test?connect_timeout=1: no MySQL or MariaDB handshake \
         within 1s (connect_timeout); check that a MySQL or MariaDB server listens at that host and port (raise the \
         limit with ?connect_timeout=SECONDS)\n"
    );

    let silent = Silent::start();
    let url = format!("postgres://postgres:pw@127.0.0.1:{}/test?connect_timeout=1", silent.port);
    let out = run_in(dir.path(), &["export", &url, "--query", "select 1", "-o", "o.tsv"], &[]);
    out.expect_code(4);
    let shown = url.replace(":pw@", ":***@");
    assert!(
        out.stderr.starts_with(&format!(
            "error: cannot connect to {shown}: no PostgreSQL handshake within 1s (connect_timeout)"
        )),
        "{}",
        out.stderr
    );

    // A project's connection, and the state store of a service.
    let p = TestProject::new();
    p.write("sluice.toml", &format!("name = \"t\"\n[connections.hung]\nurl = \"{url}\"\n"));
    p.write("pipelines/p.toml", "[[steps]]\nname = \"x\"\nkind = \"export\"\nquery = \"select 1\"\npath = \"o.tsv\"\n");
    let out = p.run(&["run"]);
    out.expect_code(4);
    assert!(out.stdout.contains("no PostgreSQL handshake within 1s (connect_timeout)"), "{}", out.stdout);
    let out = p.run(&["worker", "--state", &url, "--state-wait", "0"]);
    out.expect_code(4);
    assert!(
        out.stderr.contains(&format!(
            "error: the state store {shown} did not answer within 0s (--state-wait / SLUICE_STATE_WAIT): cannot connect to {shown}: no PostgreSQL handshake within 1s"
        )),
        "{}",
        out.stderr
    );
}

fn psql(sql: &str) {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Drops a database a test created, once its services are gone.
struct DropDatabase(String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0))
            .output();
    }
}

/// Issue 11, item 14: `sluice worker`, `scheduler` and `api` exited at once
/// when the state store was not up yet (a compose file's database still
/// being created). Now they wait, with backoff, and say so: the API answers
/// `/healthz` and gives `/readyz` (and its routes) 503 until the store
/// answers; then everything works without a restart.
#[test]
fn services_wait_for_a_state_store_that_is_not_there_yet() {
    let db = format!("sl_wait_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let _drop = DropDatabase(db.clone());
    let state = PG_BASE.replace("/test", &format!("/{db}"));
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n[auth]\nanonymous = \"trigger\"\n");
    p.write("pipelines/p.toml", "[[steps]]\nname = \"hello\"\nkind = \"command\"\ncommand = \"echo hi > hello.txt\"\n");
    let addr = format!("127.0.0.1:{}", free_port());
    let env = [("SLUICE_STATE_URL", state.as_str())];
    let mut api = Service::start(p.path(), "api", &["api", "--listen", &addr], &env);
    let mut worker = Service::start(p.path(), "worker", &["worker", "--slots", "1"], &env);
    wait_for(30, "the API to listen", || std::net::TcpStream::connect(&addr).is_ok());
    assert_eq!(http("GET", &addr, "/healthz", None), (200, "ok\n".to_string()));
    // The API listens before its first attempt at the store has answered.
    wait_for(30, "the first attempt at the store", || {
        !http("GET", &addr, "/readyz", None).1.contains("not reached yet")
    });
    let (code, body) = http("GET", &addr, "/readyz", None);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(&format!("database \\\"{db}\\\" does not exist")), "{body}");
    let (code, body) = http("GET", &addr, "/api/runs", None);
    assert_eq!(code, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].as_str().unwrap().starts_with(&format!("the state store {state} is not ready yet: ")), "{body}");
    wait_for(30, "both to say they wait", || {
        api.output().contains("waiting for the state store") && worker.output().contains("waiting for the state store")
    });
    assert!(worker.child.try_wait().unwrap().is_none(), "the worker exited:\n{}", worker.output());

    psql(&format!("CREATE DATABASE {db}"));
    wait_for(60, "/readyz to answer 200", || http("GET", &addr, "/readyz", None).0 == 200);
    let (code, body) = http("POST", &addr, "/api/pipelines/p/runs", None);
    assert_eq!(code, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"].as_str().unwrap().to_string();
    wait_for(60, "the worker to run it", || {
        let (_, body) = http("GET", &addr, &format!("/api/runs/{id}"), None);
        body.contains("\"status\":\"success\"")
    });
    assert_eq!(p.read("hello.txt"), "hi\n");
    assert!(worker.output().contains("answers"), "{}", worker.output());
    assert_eq!(api.stop(10), Some(0), "{}", api.output());
    assert_eq!(worker.stop(10), Some(0), "{}", worker.output());
}

/// A store that does not come within `--state-wait` is a clear error.
#[test]
fn a_service_gives_up_on_the_state_store_after_its_limit() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n");
    let url = format!("postgres://postgres@127.0.0.1:{}/test", free_port());
    let out = p.run(&["scheduler", "--state", &url, "--state-wait", "1s"]);
    out.expect_code(4);
    assert!(out.stderr.contains(&format!("scheduler: waiting for the state store {url} (")), "{}", out.stderr);
    let last = out.stderr.lines().last().unwrap();
    assert!(
        last.starts_with(&format!(
            "error: the state store {url} did not answer within 1s (--state-wait / SLUICE_STATE_WAIT): cannot connect to the state store {url}: "
        )),
        "{}",
        out.stderr
    );
    // A wrong URL is not worth waiting for.
    let out = p.run(&["scheduler", "--state", "postgres://postgres@127.0.0.1:5432/test?connect_timeout=x"]);
    out.expect_code(2);
}

/// Issue 11, item 15: one unset `${env:…}` in a connection nothing used
/// stopped every command. Connection URLs (and a command step's arguments
/// and environment) are resolved when they are used: `check`, `dag` and
/// `run` of a pipeline that does not use them work; using them is an error
/// naming the variable and where it is written. Resolved values are never
/// shown.
#[test]
fn an_unset_variable_stops_only_what_uses_it() {
    let p = TestProject::new();
    p.write(
        "sluice.toml",
        "name = \"lazy\"\n\n[connections.local]\nurl = \"sqlite://.sluice/w.db\"\n\n[connections.other]\nurl = \"postgres://app:${env:SLUICE_IT_NEVER_SET}@127.0.0.1:5432/test\"\n",
    );
    p.write(
        "pipelines/p.toml",
        r#"[[steps]]
name = "land"
kind = "ingest"
source = "data/t.csv"

[[steps]]
name = "load"
kind = "load"
from = "land"
table = "t"

[[steps]]
name = "hand_over"
kind = "command"
depends_on = ["load"]
command = ["sh", "-c", "printf '%s %s' \"$1\" \"$TOKEN\" > token.txt", "sh", "${env:SLUICE_IT_TOKEN}"]
env = { TOKEN = "${file:token.secret}" }
"#,
    );
    p.write(
        "pipelines/q.toml",
        "[[steps]]\nname = \"x\"\nkind = \"export\"\nconnection = \"other\"\nquery = \"select 1\"\npath = \"o.tsv\"\n",
    );
    p.write("data/t.csv", "id\n1\n");
    p.write("token.secret", "from-a-file-Zq\n");
    let env = [("SLUICE_IT_TOKEN", "tok-Zq")];
    let mut shown = String::new();
    for args in [&["check"][..], &["dag", "p"], &["dag", "q"], &["run", "p"]] {
        let out = p.run_env(args, &env);
        shown.push_str(&format!("{}{}", out.stdout, out.stderr));
        out.expect_code(0);
    }
    assert_eq!(p.read("token.txt"), "tok-Zq from-a-file-Zq");
    let out = p.run_env(&["dag", "p"], &env);
    assert!(out.stdout.contains("${env:SLUICE_IT_TOKEN}"), "{}", out.stdout);

    // Using the connection: the variable, and where it is written.
    let out = p.run_env(&["run", "q"], &env);
    shown.push_str(&format!("{}{}", out.stdout, out.stderr));
    out.expect_code(2);
    assert!(
        out.stdout.contains(
            "error: connection `other` (sluice.toml:7:7): environment variable `SLUICE_IT_NEVER_SET` is not set"
        ),
        "{}",
        out.stdout
    );
    // The command step's variable, unset.
    let out = p.run(&["run", "p"]);
    out.expect_code(2);
    assert!(
        out.stdout.contains("error: pipelines/p.toml:16:78: environment variable `SLUICE_IT_TOKEN` is not set"),
        "{}",
        out.stdout
    );
    // The values the command got are not in the run's record.
    let dump = Command::new("sqlite3").arg(p.file(".sluice/state.db")).arg(".dump").output().unwrap();
    shown.push_str(&String::from_utf8_lossy(&dump.stdout));
    assert!(shown.contains("sluice_runs"));
    assert!(!shown.contains("Zq"), "a resolved value was shown:\n{shown}");
}
