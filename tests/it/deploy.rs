//! Deployment (issue 14): the health listener of the scheduler and worker
//! roles and `sluice healthcheck`, which the image's HEALTHCHECK runs.

use crate::db::FreshPgDb;
use crate::support::{Service, TestProject, free_port, http, run_in, wait_for};

/// `sluice healthcheck URL`'s exit code.
fn healthcheck(dir: &std::path::Path, url: &str) -> i32 {
    run_in(dir, &["healthcheck", url], &[]).code
}

/// The scheduler and a worker with `--health-addr`, started before their
/// PostgreSQL database exists: /healthz answers 200 at once, /readyz 503
/// (with why) until the database is created, then 200; `sluice
/// healthcheck` exits 1, then 0; SIGTERM stops both cleanly.
#[test]
fn scheduler_and_worker_answer_health_checks_before_and_after_their_store() {
    let db = FreshPgDb::new();
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n");
    p.write("pipelines/p.toml", "[[steps]]\nname = \"a\"\nkind = \"empty\"\n");
    let (s_addr, w_addr) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let env = [("SLUICE_STATE_URL", db.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut sched = Service::start(p.path(), "scheduler", &["scheduler", "--health-addr", &s_addr], &env);
    let mut worker = Service::start(p.path(), "worker", &["worker", "--pool", "fetch", "--health-addr", &w_addr], &env);
    for addr in [&s_addr, &w_addr] {
        wait_for(30, "the health listener", || std::net::TcpStream::connect(addr).is_ok());
        assert_eq!(http("GET", addr, "/healthz", None), (200, "ok\n".to_string()));
        let (code, body) = http("GET", addr, "/readyz", None);
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("is not ready yet") && body.contains(&db.name), "{body}");
        assert_eq!(http("GET", addr, "/metrics", None).0, 404);
        assert_eq!(http("POST", addr, "/healthz", None).0, 405);
        assert_eq!(healthcheck(p.path(), &format!("http://{addr}/healthz")), 0);
        assert_eq!(healthcheck(p.path(), &format!("http://{addr}/readyz")), 1);
    }
    db.create();
    for addr in [&s_addr, &w_addr] {
        wait_for(60, "/readyz to answer 200", || http("GET", addr, "/readyz", None).0 == 200);
        assert_eq!(healthcheck(p.path(), &format!("http://{addr}/readyz")), 0);
    }
    assert_eq!(db.rows("SELECT pool FROM sluice_workers"), vec![vec!["fetch"]]);
    assert_eq!(sched.stop(20), Some(0), "{}", sched.output());
    assert_eq!(worker.stop(20), Some(0), "{}", worker.output());
    // Nobody listens now: the check fails, and says why.
    let out = run_in(p.path(), &["healthcheck", &format!("http://{w_addr}/healthz")], &[]);
    out.expect_code(1);
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
    let out = run_in(p.path(), &["healthcheck", "https://example.invalid/healthz"], &[]);
    out.expect_code(1);
    assert!(out.stderr.contains("only http:// URLs"), "{}", out.stderr);
}
