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

/// Runs scripts/deploy-check.sh on `root`; exit code and output.
fn deploy_check(root: &std::path::Path) -> (i32, String) {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("bash")
        .arg(repo.join("scripts/deploy-check.sh"))
        .arg(root)
        .output()
        .expect("bash runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Copies a folder tree.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Replaces `from` (which must be there) by `to` in a file.
fn edit(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// The deployment files pass the offline checks: Compose's own `config
/// --quiet` on both Compose files (every profile), every Kustomize overlay
/// rendered and validated strictly against Kubernetes 1.37, hadolint.
#[test]
fn deploy_files_pass_the_offline_checks() {
    let (code, out) = deploy_check(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    assert_eq!(code, 0, "{out}");
    for line in [
        "ok    compose compose.yaml",
        "ok    compose compose.full.yaml",
        "ok    k8s base (",
        "ok    k8s prod (",
        "ok    k8s openshift (",
        "ok    k8s embedded (",
        "ok    hadolint Dockerfile",
    ] {
        assert!(out.contains(line), "no `{line}` in:\n{out}");
    }
}

/// The checks can fail: a copy of the files with an unknown Compose key, a
/// replica count that is not a number in an overlay, a Route with a bad TLS
/// termination and an unpinned apt-get in the Dockerfile fails, naming each.
#[test]
fn broken_deploy_files_fail_the_offline_checks() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copy_tree(&repo.join("deploy"), &root.join("deploy"));
    std::fs::copy(repo.join("Dockerfile"), root.join("Dockerfile")).unwrap();
    assert_eq!(deploy_check(root).0, 0, "the copy passes before it is broken");

    edit(&root.join("deploy/compose/compose.full.yaml"), "    depends_on:\n", "    dependz_on:\n");
    edit(&root.join("deploy/k8s/overlays/prod/kustomization.yaml"), "        value: 3\n", "        value: three\n");
    edit(&root.join("deploy/k8s/overlays/openshift/route.yaml"), "termination: edge", "termination: sideways");
    edit(&root.join("Dockerfile"), "WORKDIR /src\n", "WORKDIR /src\nRUN apt-get update && apt-get install -y curl\n");
    let (code, out) = deploy_check(root);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ok    compose compose.yaml"), "{out}");
    assert!(out.contains("FAIL  compose compose.full.yaml") && out.contains("dependz_on"), "{out}");
    assert!(out.contains("ok    k8s base ("), "{out}");
    assert!(out.contains("FAIL  k8s prod") && out.contains("minReplicas"), "{out}");
    assert!(
        out.contains("FAIL  k8s openshift")
            && out.contains("spec.tls.termination must be edge, passthrough or reencrypt"),
        "{out}"
    );
    assert!(out.contains("FAIL  hadolint Dockerfile") && out.contains("DL3008"), "{out}");
}
