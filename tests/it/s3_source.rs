//! The `s3` source and `on_new_objects` on S3 prefixes, against s3s-fs and
//! moto started on loopback (the helpers of `s3.rs`). The lake stays on the
//! project folder: what is tested is reading from the bucket.

use std::process::Stdio;

use crate::s3::{KEY, S3, Server, dir_bytes, run};
use crate::support::{Service, TestProject, files_under, free_port, wait_for, wait_ready};

/// A project whose ingest step takes `source` (with `take`) into dataset
/// `events`, appended to the SQLite table `events`.
fn project(source: &str, take: &str) -> TestProject {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"s3src\"\n");
    p.write(
        "pipelines/p.toml",
        &format!(
            r#"[[steps]]
name = "fetch"
kind = "ingest"
source = "{source}"
dataset = "events"
take = "{take}"

[[steps]]
name = "load"
kind = "load"
from = "fetch"
table = "events"
mode = "append"
[steps.columns]
id = "bigint not null"
name = "text"
"#
        ),
    );
    p
}

fn rows(p: &TestProject) -> Vec<Vec<String>> {
    p.query("select id, name from events order by id, name")
}

fn row(id: &str, name: &str) -> Vec<String> {
    vec![id.to_string(), name.to_string()]
}

/// `take = "new"` lands each object once, decided from the listing (an object
/// taken before is not downloaded again); a new object and an object
/// overwritten with new content are landed by the next run; objects outside
/// the glob (deeper folders, other suffixes) are never taken.
fn s3_source_takes_new_objects_once(kind: Server) {
    let s3 = S3::start(kind);
    s3.bucket("drops");
    s3.put("drops", "in/a.csv", b"id,name\n1,a\n2,b\n");
    s3.put("drops", "in/b.csv", b"id,name\n3,c\n");
    s3.put("drops", "in/deeper/x.csv", b"id,name\n99,deep\n");
    s3.put("drops", "in/notes.txt", b"not data\n");
    s3.put("drops", "other/y.csv", b"id,name\n98,other\n");
    let p = project(&s3.url("drops", "in/*.csv"), "new");
    let out = run(&p, &s3, &["run"]);
    out.expect_code(0);
    assert!(out.stdout.contains("landed 2 files (3 rows"), "{}", out.stdout);
    assert_eq!(rows(&p), [row("1", "a"), row("2", "b"), row("3", "c")]);
    // Nothing changed: nothing downloaded (the listing says so), nothing loaded.
    let again = run(&p, &s3, &["run"]);
    again.expect_code(0);
    assert!(again.stdout.contains("nothing new under s3://drops/in/*.csv"), "{}", again.stdout);
    assert_eq!(rows(&p).len(), 3);
    // A new object and a changed one.
    s3.put("drops", "in/c.csv", b"id,name\n4,d\n");
    s3.put("drops", "in/a.csv", b"id,name\n5,e\n");
    let third = run(&p, &s3, &["run"]);
    third.expect_code(0);
    assert!(third.stdout.contains("landed 2 files (2 rows"), "{}", third.stdout);
    assert_eq!(rows(&p), [row("1", "a"), row("2", "b"), row("3", "c"), row("4", "d"), row("5", "e")]);
    // Every landing's manifest names objects by URL, never with credentials.
    let manifests: Vec<String> =
        files_under(&p.file(".sluice/lake/raw/events")).into_iter().filter(|f| f.ends_with("_manifest.json")).collect();
    assert_eq!(manifests.len(), 2, "{manifests:?}");
    for m in &manifests {
        let text = std::fs::read_to_string(m).unwrap();
        assert!(text.contains("\"source\": \"s3://drops/in/"), "{text}");
        assert!(!text.contains(crate::s3::SECRET), "{text}");
    }
    run(&p, &s3, &["run"]).expect_code(0);
    assert_eq!(rows(&p).len(), 5);
}

/// With `take = "all"` each landing lists every matching object, and a
/// folder URL (ending in `/`) takes every object under it at any depth.
fn s3_source_takes_all_under_a_folder(kind: Server) {
    let s3 = S3::start(kind);
    s3.bucket("drops");
    s3.put("drops", "in/a.csv", b"id,name\n1,a\n");
    s3.put("drops", "in/2026/b.csv", b"id,name\n2,b\n");
    let p = project(&s3.url("drops", "in/"), "all");
    p.write("pipelines/p.toml", &p.read("pipelines/p.toml").replace("mode = \"append\"", "mode = \"replace\""));
    run(&p, &s3, &["run"]).expect_code(0);
    assert_eq!(rows(&p), [row("1", "a"), row("2", "b")]);
    s3.put("drops", "in/a.csv", b"id,name\n3,c\n");
    run(&p, &s3, &["run"]).expect_code(0);
    assert_eq!(rows(&p), [row("2", "b"), row("3", "c")]);
}

per_s3!(s3_source_takes_new_objects_once, s3_source_takes_all_under_a_folder);

/// `sluice check` accepts an s3:// source without reaching the bucket, and
/// rejects a malformed one at its line.
#[test]
fn check_accepts_s3_sources_and_rejects_bad_urls() {
    let p = project("s3://drops/in/*.csv?endpoint=http://127.0.0.1:9", "new");
    let out = p.run(&["check"]);
    out.expect_code(0);
    let p = project("s3://drops/in/[.csv", "new");
    let out = p.run(&["check"]);
    out.expect_code(2);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("invalid glob") && all.contains("p.toml:4"), "{all}");
    let p = project("s3://drops/in/*.csv?regoin=eu", "new");
    let out = p.run(&["check"]);
    out.expect_code(2);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("unknown parameter `regoin`"), "{all}");
}

/// Refused credentials and a missing bucket fail the ingest step, named,
/// with the error a user can act on, and never print the secret.
#[test]
fn s3_source_errors_name_the_step() {
    let s3 = S3::start(Server::S3sFs);
    s3.bucket("drops");
    s3.put("drops", "in/a.csv", b"id,name\n1,a\n");
    let p = project(&s3.url("drops", "in/*.csv"), "new");
    let out = p.run_env(&["run"], &[("AWS_ACCESS_KEY_ID", KEY), ("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")]);
    out.expect_code(2);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("fetch"), "the step is not named: {all}");
    assert!(all.contains("the server refused the credentials"), "{all}");
    assert!(!all.contains("wrong-secret-value"), "the secret was printed: {all}");
    // Credentials in the URL are not shown either.
    let p = project(&format!("s3://{KEY}:url-secret-value@drops/in/*.csv?endpoint={}", s3.endpoint()), "new");
    let out = p.run(&["run"]);
    out.expect_code(2);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("the server refused the credentials") && !all.contains("url-secret-value"), "{all}");
    let p = project(&s3.url("no-such-bucket", "in/*.csv"), "new");
    let out = run(&p, &s3, &["run"]);
    out.expect_code(2);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("fetch"), "the step is not named: {all}");
    assert!(all.contains("bucket `no-such-bucket` does not exist"), "{all}");
}

/// A missing bucket fails the step before anything is landed, on both servers.
fn s3_source_missing_bucket_fails_the_step(kind: Server) {
    let s3 = S3::start(kind);
    s3.bucket("drops");
    let p = project(&s3.url("no-such-bucket", "in/*.csv"), "all");
    let out = run(&p, &s3, &["run"]);
    out.expect_code(2);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("fetch") && all.contains("bucket `no-such-bucket` does not exist"), "{all}");
    assert!(files_under(&p.file(".sluice/lake")).iter().all(|f| !f.contains("/raw/")), "nothing landed");
}

per_s3!(s3_source_missing_bucket_fails_the_step);

/// The server dies while an object is being downloaded: the run fails with a
/// clear error and publishes nothing; with the server back, the next run
/// lands and loads every row once.
#[test]
fn s3_source_server_killed_mid_download_lands_nothing_and_rerun_lands_once() {
    let mut s3 = S3::start(Server::S3sFs);
    s3.bucket("drops");
    let n = 1_500_000u64;
    let mut csv = String::with_capacity(80 << 20);
    csv.push_str("id,name\n");
    for i in 0..n {
        csv.push_str(&format!("{i},name {i:>40}\n"));
    }
    s3.put("drops", "in/big.csv", csv.as_bytes());
    let p = project(&s3.url("drops", "in/*.csv"), "new");
    let mut c = crate::support::bin();
    c.current_dir(p.path()).arg("run").stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in s3.env() {
        c.env(k, v);
    }
    let child = c.spawn().unwrap();
    let lake = p.file(".sluice/lake");
    wait_for(120, "the download to start", || dir_bytes(&lake) > 8 << 20);
    s3.kill();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{stderr}");
    assert!(stdout.contains("fetch") && stdout.contains("big.csv"), "{stdout}\n{stderr}");
    let landed: Vec<String> = files_under(&lake.join("raw")).into_iter().collect();
    assert!(landed.is_empty(), "a half landing is visible: {landed:?}");
    s3.restart();
    let out = run(&p, &s3, &["run"]);
    out.expect_code(0);
    assert_eq!(p.query("select count(*), count(distinct id) from events"), [[n.to_string(), n.to_string()]]);
    let again = run(&p, &s3, &["run"]);
    again.expect_code(0);
    assert!(again.stdout.contains("nothing new"), "{}", again.stdout);
    assert_eq!(p.query("select count(*) from events"), [[n.to_string()]]);
}

/// `sluice serve` with an `on_new_objects` trigger on an S3 prefix: objects
/// there at start fire one run, a new object fires another, and each
/// object's rows are loaded once.
#[test]
fn s3_on_new_objects_fires_runs_from_serve() {
    let s3 = S3::start(Server::S3sFs);
    s3.bucket("drops");
    s3.put("drops", "in/a.csv", b"id,name\n1,a\n");
    let url = s3.url("drops", "in/*.csv");
    let p = project(&url, "new");
    let pipeline = p.read("pipelines/p.toml");
    p.write("pipelines/p.toml", &format!("[[triggers]]\non_new_objects = \"{url}\"\npoll = \"1s\"\n\n{pipeline}"));
    p.run(&["check"]).expect_code(0);
    let next = p.run(&["next"]);
    assert!(next.stdout.contains("when new files appear under `s3://drops/in/*.csv"), "{}", next.stdout);
    let addr = format!("127.0.0.1:{}", free_port());
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut svc = Service::start(p.path(), "serve", &["serve", "--listen", &addr, "--grace", "1s"], &env);
    wait_ready(&addr);
    let table = |p: &TestProject| loaded(&p.file(".sluice/warehouse.db"));
    wait_for(120, "the first run to load a.csv", || table(&p) == [row("1", "a")]);
    s3.put("drops", "in/b.csv", b"id,name\n2,b\n");
    wait_for(120, "a run for the new object", || table(&p) == [row("1", "a"), row("2", "b")]);
    let runs = crate::support::query_sqlite(
        &p.file(".sluice/state.db"),
        "select trigger, status, params from sluice_runs where pipeline = 'p' order by queued_at",
    );
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|r| r[0] == "objects" && r[1] == "success"), "{runs:?}");
    assert!(runs[1][2].contains("s3://drops/in/b.csv"), "the run's params list the new object: {runs:?}");
    let log = svc.output();
    assert!(!log.contains(crate::s3::SECRET), "{log}");
    assert_eq!(svc.stop(30), Some(0), "{log}");
}

/// The rows of `events`, or none while the table does not exist yet.
fn loaded(db: &std::path::Path) -> Vec<Vec<String>> {
    let Ok(c) = rusqlite::Connection::open(db) else { return vec![] };
    let Ok(mut st) = c.prepare("select id, name from events order by id") else { return vec![] };
    st.query_map([], |r| Ok(vec![r.get::<_, i64>(0)?.to_string(), r.get::<_, String>(1)?]))
        .map(|rows| rows.filter_map(|r| r.ok()).collect())
        .unwrap_or_default()
}
