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

/// nginx's config for the topology test: the Compose template
/// (deploy/nginx/sluice.conf.template) rendered as the nginx image renders
/// it (only `${UPPER_CASE}` names are replaced), inside a main config that
/// keeps every file under `dir`.
fn nginx_conf(dir: &std::path::Path, listen: &str, apis: &[&str]) -> std::path::PathBuf {
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/sluice.conf.template"),
    )
    .unwrap();
    let servers: Vec<String> = apis.iter().map(|a| format!("server {a} max_fails=1 fail_timeout=5s;")).collect();
    let rendered =
        template.replace("${NGINX_LISTEN}", listen).replace("${NGINX_UPSTREAM_SERVERS}", &servers.join("\n    "));
    assert!(!rendered.contains("${"), "a variable of the template is not rendered:\n{rendered}");
    std::fs::write(dir.join("sluice.conf"), rendered).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let d = dir.display();
    let main = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  log_format up '$request $status $upstream_addr $upstream_status';\n  access_log {d}/access.log up;\n\
         client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n\
         uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  include {d}/sluice.conf;\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, main).unwrap();
    path
}

/// A process that is not sluice (nginx), stopped by its PID.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

const SLOW: &str = r#"pool = "ingest"

[[steps]]
name = "slow"
kind = "command"
command = "if mkdir slow.claimed 2>/dev/null; then echo $$ > slow.pid; exec sleep 120; fi"
"#;

/// The scaled topology as real processes on loopback (issue 14): a fresh
/// PostgreSQL database as the state store (its password through
/// `${env:PG_PASSWORD}` and PG_PASSWORD_FILE, as in Compose), 1 scheduler, 3
/// workers (two for the ingest pool, one for fetch), 2 APIs and the Debian
/// nginx in front with the Compose template's config. Through nginx, with a
/// token: runs are triggered and read; a worker holding a task and an API
/// are killed with -9; every request through nginx still succeeds, every
/// run completes, each task succeeds once and the warehouse holds each row
/// once. Everything is stopped by PID.
#[test]
fn scaled_topology_survives_a_killed_worker_and_api_behind_nginx() {
    use crate::support::{pid_in, request, wait_ready};
    let nginx_bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is installed (.ci/tools.sh)");
    let (state, wh) = (FreshPgDb::new(), FreshPgDb::new());
    state.create();
    wh.create();
    let p = TestProject::copy_of("deploy/project");
    p.write("pipelines/slow.toml", SLOW);
    p.write("pg_password", "not-needed-with-trust-auth\n");
    let exports = p.file("exports");
    let pw_file = p.file("pg_password").display().to_string();
    let state_url = format!("postgres://postgres:${{env:PG_PASSWORD}}@127.0.0.1:5432/{}", state.name);
    let env_owned = [
        ("SLUICE_STATE_URL", state_url.as_str()),
        ("PG_PASSWORD_FILE", pw_file.as_str()),
        ("PG_USER", "postgres"),
        ("PG_HOST", "127.0.0.1"),
        ("WAREHOUSE_DB", wh.name.as_str()),
        ("SLUICE_EXPORT_DIR", exports.to_str().unwrap()),
        ("SLUICE_LEASE", "2s"),
    ];
    let env: &[(&str, &str)] = &env_owned;
    let token = {
        let out = p.run_env(&["token", "create", "--scope", "trigger", "--name", "topology"], env);
        out.expect_code(0);
        out.stdout.trim().to_string()
    };
    let dir = p.path();
    let port = || format!("127.0.0.1:{}", free_port());
    let (lb, api_a, api_b, health) = (port(), port(), port(), port());
    let mut sched = Service::start(dir, "scheduler", &["scheduler", "--health-addr", &health], env);
    let mut workers: Vec<Service> = [("w1", "default,ingest"), ("w2", "default,ingest"), ("w3", "fetch")]
        .iter()
        .map(|(id, pool)| Service::start(dir, id, &["worker", "--id", id, "--pool", pool, "--slots", "2"], env))
        .collect();
    let mut apis: Vec<Service> = [("api-a", &api_a), ("api-b", &api_b)]
        .iter()
        .map(|(n, a)| Service::start(dir, n, &["api", "--listen", a], env))
        .collect();
    let nginx_dir = p.file("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let conf = nginx_conf(&nginx_dir, &lb, &[&api_a, &api_b]);
    let mut nginx = Proc(
        std::process::Command::new(&nginx_bin)
            .arg("-p")
            .arg(&nginx_dir)
            .arg("-e")
            .arg(nginx_dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx starts"),
    );
    wait_ready(&api_a);
    wait_ready(&api_b);
    wait_for(30, "the scheduler to be ready", || http("GET", &health, "/readyz", None).0 == 200);
    wait_for(30, "nginx", || std::net::TcpStream::connect(&lb).is_ok());
    assert_eq!(http("GET", &lb, "/nginx-health", None).0, 200);

    // Every request through nginx must succeed; counts them.
    let mut sent = 0;
    let mut call = |head: &str| -> serde_json::Value {
        sent += 1;
        let a = request(&lb, &format!("{head}\nAuthorization: Bearer {token}"), b"");
        assert!((200..300).contains(&a.code), "{head} through nginx: {a:?}");
        serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{head}: not JSON ({e}): {a:?}"))
    };
    // Without the token, nginx passes on the API's 401.
    assert_eq!(request(&lb, "GET /api/runs", b"").code, 401);

    // A worker of the ingest pool is killed holding a task: the other one
    // takes it once the lease runs out.
    let slow = call("POST /api/pipelines/slow/runs")["id"].as_str().unwrap().to_string();
    let sleeper = pid_in(&p.file("slow.pid"));
    let mut owner = String::new();
    wait_for(30, "the slow task's owner", || {
        owner = state
            .rows("SELECT lease_owner FROM sluice_tasks WHERE step = 'slow' AND status = 'running'")
            .first()
            .map(|r| r[0].clone())
            .unwrap_or_default();
        !owner.is_empty()
    });
    let idx = ["w1", "w2"].iter().position(|w| *w == owner).expect("an ingest worker runs it");
    workers[idx].kill9();
    wait_for(30, "the killed worker's command to end", || !crate::support::alive(sleeper));

    // Runs of the nightly pipeline, triggered and read through nginx; an
    // API is killed after the third.
    let mut ids = vec![slow.clone()];
    for i in 0..10 {
        if i == 3 {
            apis[0].kill9();
        }
        let run = call("POST /api/pipelines/nightly/runs");
        ids.push(run["id"].as_str().unwrap().to_string());
        call(&format!("GET /api/runs/{}", ids.last().unwrap()));
        call("GET /api/runs?pipeline=nightly&limit=5");
    }
    wait_for(120, "every run to end", || {
        let v = call("GET /api/runs?limit=100");
        let runs = v["runs"].as_array().unwrap();
        runs.len() == ids.len() && runs.iter().all(|r| r["status"] != "running" && r["status"] != "queued")
    });
    let v = call("GET /api/runs?status=success&limit=100");
    assert_eq!(v["runs"].as_array().unwrap().len(), ids.len(), "every run succeeds: {v}");
    for id in &ids {
        let tasks = call(&format!("GET /api/runs/{id}/tasks"));
        for t in tasks["tasks"].as_array().unwrap() {
            assert_eq!(t["status"], "success", "{t}");
            let pool = if t["step"] == "export_tsv" { "fetch" } else { "ingest" };
            assert_eq!(t["pool"], pool, "{t}");
        }
    }
    assert!(sent > 30, "{sent} requests");

    // Nothing duplicated: each task succeeded once, the batch's rows were
    // loaded once, the export holds them once.
    assert_eq!(
        state.rows("SELECT COUNT(*), COUNT(DISTINCT (run_id, step)) FROM sluice_attempts WHERE status = 'success'"),
        vec![vec!["31", "31"]]
    );
    assert_eq!(
        state.rows("SELECT attempt, worker, status FROM sluice_attempts WHERE step = 'slow' ORDER BY attempt"),
        vec![
            vec!["1".to_string(), owner.clone(), "lost".into()],
            vec!["2".into(), if owner == "w1" { "w2" } else { "w1" }.into(), "success".into()]
        ]
    );
    assert_eq!(state.rows("SELECT DISTINCT worker FROM sluice_attempts WHERE step = 'export_tsv'"), vec![vec!["w3"]]);
    assert_eq!(wh.rows("SELECT COUNT(*), COUNT(DISTINCT record_id) FROM records"), vec![vec!["6", "6"]]);
    let tsv = std::fs::read_to_string(exports.join("output.tsv")).unwrap();
    assert_eq!(tsv.lines().count(), 7, "{tsv}");
    // nginx spread the requests over both APIs, and after the kill sent
    // them all to the live one.
    let log = std::fs::read_to_string(nginx_dir.join("access.log")).unwrap();
    assert!(log.contains(&api_a) && log.contains(&api_b), "{log}");

    // Stop everything by PID: SIGTERM, clean exits.
    for (i, w) in workers.iter_mut().enumerate() {
        if i != idx {
            assert_eq!(w.stop(40), Some(0), "{}", w.output());
        }
    }
    assert_eq!(apis[1].stop(20), Some(0), "{}", apis[1].output());
    assert_eq!(sched.stop(20), Some(0), "{}", sched.output());
    crate::support::signal(nginx.0.id(), "TERM");
    let st = nginx.0.wait().unwrap();
    assert!(st.success(), "nginx: {st:?}");
}

/// `make start` runs the embedded default in the background (a PID file, a
/// log file, the URL printed, ready when it returns); `make status` says so;
/// `make stop` stops it with SIGTERM and removes the PID file.
#[test]
fn make_start_status_and_stop_the_embedded_default() {
    let p = TestProject::copy_of("examples/nightly-tsv");
    let run_dir = p.file("run");
    let listen = format!("127.0.0.1:{}", free_port());
    let make = |target: &str| {
        let out = std::process::Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .arg(target)
            .arg(format!("SLUICE={}", env!("CARGO_BIN_EXE_sluice")))
            .arg(format!("PROJECT={}", p.path().display()))
            .arg(format!("LISTEN={listen}"))
            .arg(format!("RUN_DIR={}", run_dir.display()))
            .output()
            .expect("make runs");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = make("start");
    assert_eq!(code, 0, "{out}");
    let pid: u32 = std::fs::read_to_string(run_dir.join("sluice.pid")).unwrap().trim().parse().unwrap();
    assert_eq!(
        out.trim(),
        format!("sluice is running (pid {pid}, log {}/sluice.log): http://{listen}/ui", run_dir.display())
    );
    assert_eq!(http("GET", &listen, "/readyz", None).0, 200);
    let (code, out) = make("start");
    assert_eq!(
        (code, out.trim().to_string()),
        (0, format!("sluice is already running (pid {pid}): http://{listen}/ui"))
    );
    let (code, out) = make("status");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("sluice is running (pid {pid}, ready)")), "{out}");
    let (code, out) = make("stop");
    assert_eq!((code, out.trim().to_string()), (0, format!("sluice stopped (pid {pid})")));
    assert!(!crate::support::alive(pid));
    assert!(!run_dir.join("sluice.pid").exists());
    assert!(std::fs::read_to_string(run_dir.join("sluice.log")).unwrap().contains("stopping"));
    let (code, out) = make("status");
    assert_eq!((code, out.trim()), (2, "sluice is not running"), "make exits 2 when the recipe fails");
}
