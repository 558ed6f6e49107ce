//! The control API's edges over real HTTP, on SQLite and PostgreSQL state
//! stores (issue 11, items 9 and 10): web pages cannot use it through a
//! visitor's browser, and every bad request is a 4xx with a JSON error —
//! NUL bytes, bad UTF-8, bad query strings, wrong methods, dates out of range.

use crate::db::{Kind, TestDb};
use crate::support::{Service, TestProject, free_port, request, wait_for, wait_ready};

per_backend!(
    [sqlite => Sqlite, postgres => Postgres]
    cross_site_requests_cannot_start_runs,
    bad_requests_are_json_4xx_never_500,
);

/// A project with one pipeline `p` whose state store is of `kind`, and its API.
fn api(kind: Kind) -> (TestProject, Option<TestDb>, Service, String) {
    let p = TestProject::new();
    let db = (kind == Kind::Postgres).then(|| TestDb::new(Kind::Postgres));
    let state = db.as_ref().map(|d| format!("[state]\nurl = \"{}\"\n", d.url())).unwrap_or_default();
    p.write("sluice.toml", &format!("name = \"t\"\n{state}[auth]\nanonymous = \"trigger\"\n"));
    p.write("pipelines/p.toml", "[[steps]]\nname = \"a\"\nkind = \"empty\"\n");
    let addr = format!("127.0.0.1:{}", free_port());
    let svc = Service::start(p.path(), "api", &["api", "--listen", &addr], &[]);
    wait_ready(&addr);
    (p, db, svc, addr)
}

fn runs(addr: &str) -> usize {
    let a = request(addr, "GET /api/runs", b"");
    assert_eq!(a.code, 200, "{a:?}");
    a.json()["runs"].as_array().unwrap().len()
}

fn cross_site_requests_cannot_start_runs(kind: Kind) {
    let (_p, _db, _svc, addr) = api(kind);
    let port = addr.rsplit(':').next().unwrap();
    // What any web page can send without asking (no CORS preflight): a
    // text/plain or form body, to any address.
    let msg = request(&addr, "POST /api/pipelines/p/runs\nContent-Type: text/plain", b"{}").error(415);
    assert_eq!(msg, "send the request body as JSON with Content-Type: application/json (got Content-Type: text/plain)");
    request(&addr, "POST /api/pipelines/p/runs\nContent-Type: application/x-www-form-urlencoded", b"a=1").error(415);
    request(&addr, "POST /api/pipelines/p/runs\nContent-Type: multipart/form-data; boundary=x", b"--x--").error(415);
    request(&addr, "POST /api/pipelines/p/runs", b"{}").error(415);
    request(&addr, "POST /api/runs/x/cancel\nContent-Type: text/plain", b"").error(415);
    // A body-less POST from a page carries its Origin.
    let msg = request(&addr, "POST /api/pipelines/p/runs\nOrigin: http://evil.example", b"").error(403);
    assert!(msg.starts_with("cross-origin request refused: a page from http://evil.example"), "{msg}");
    request(&addr, "POST /api/pipelines/p/runs\nOrigin: http://evil.example\nContent-Type: application/json", b"{}")
        .error(403);
    request(&addr, "POST /api/pipelines/p/runs\nOrigin: null", b"").error(403);
    request(&addr, &format!("POST /api/pipelines/p/runs\nOrigin: http://localhost:{port}"), b"").error(403);
    // DNS rebinding: a page of evil.example whose name now points to 127.0.0.1.
    let msg = request(
        &addr,
        &format!("POST /api/pipelines/p/runs\nHost: evil.example:{port}\nOrigin: http://evil.example:{port}"),
        b"",
    )
    .error(403);
    assert!(msg.starts_with("requests to this API must be addressed to localhost or an IP address"), "{msg}");
    request(&addr, &format!("GET /api/runs\nHost: evil.example:{port}"), b"").error(403);
    assert_eq!(runs(&addr), 0, "no refused request started a run");

    // What the API's own clients send.
    let ok = request(&addr, "POST /api/pipelines/p/runs", b"");
    assert_eq!(ok.code, 201, "curl -XPOST: {ok:?}");
    let ok = request(&addr, "POST /api/pipelines/p/runs\nContent-Type: application/json; charset=utf-8", b"{}");
    assert_eq!(ok.code, 201, "{ok:?}");
    let ok = request(
        &addr,
        &format!("POST /api/pipelines/p/runs\nOrigin: http://{addr}\nContent-Type: application/json"),
        b"{\"full_refresh\": true}",
    );
    assert_eq!(ok.code, 201, "same origin: {ok:?}");
    let ok = request(&addr, &format!("POST /api/pipelines/p/runs\nHost: localhost:{port}"), b"");
    assert_eq!(ok.code, 201, "{ok:?}");
    assert_eq!(runs(&addr), 4);
}

fn bad_requests_are_json_4xx_never_500(kind: Kind) {
    let (_p, _db, _svc, addr) = api(kind);
    let json = "\nContent-Type: application/json";
    assert_eq!(request(&addr, "GET /api/runs/%00", b"").error(400), "invalid path: it holds a NUL character (%00)");
    assert_eq!(
        request(&addr, "GET /api/runs?pipeline=%00", b"").error(400),
        "invalid query string: it holds a NUL character (%00)"
    );
    request(&addr, "GET /api/runs/x%00y/tasks", b"").error(400);
    request(&addr, "GET /api/runs/x/tasks/a%00/logs", b"").error(400);
    request(&addr, "POST /api/pipelines/p%00/runs", b"").error(400);
    assert_eq!(request(&addr, "GET /api/runs/%FF", b"").error(400), "invalid path: it is not UTF-8 once decoded");
    request(&addr, "GET /api/runs?pipeline=%C3%28", b"").error(400);
    let msg = request(&addr, "GET /api/runs?limit=abc", b"").error(400);
    assert!(msg.starts_with("invalid query string: "), "{msg}");
    request(&addr, "GET /api/runs?limit=-1", b"").error(400);
    request(&addr, "GET /api/runs?limit=99999999999", b"").error(400);
    let msg = request(&addr, "GET /api/runs?pipline=p", b"").error(400);
    assert!(msg.contains("unknown field `pipline`"), "{msg}");
    request(&addr, "GET /api/runs/x/tasks/a/logs?after=z", b"").error(400);
    assert_eq!(request(&addr, "GET /api/runs?status=done", b"").code, 400);
    let msg = request(&addr, "DELETE /api/runs", b"").error(405);
    assert!(msg.starts_with("method DELETE is not allowed on /api/runs"), "{msg}");
    request(&addr, "PUT /api/pipelines/p/runs", b"").error(405);
    request(&addr, "GET /api/pipelines/p/runs", b"").error(405);
    assert_eq!(request(&addr, "GET /nope", b"").error(404), "no such endpoint");
    request(&addr, "GET /api/runs/0191e7a2-0000-7000-8000-000000000000", b"").error(404);
    // Bodies.
    let bad = |body: &str| request(&addr, &format!("POST /api/pipelines/p/runs{json}"), body.as_bytes()).error(400);
    assert_eq!(
        bad("{\"logical_date\": \"0000-01-01\"}"),
        "invalid logical_date \"0000-01-01\" is out of range: logical dates go from 1000-01-01 to 9999-12-31"
    );
    bad("{\"logical_date\": \"2026-02-30\"}");
    bad("{\"logical_date\": \"+12026-01-01\"}");
    bad("{\"logical_date\": \"2026-01-01\\u0000\"}");
    bad("{\"logical_date\": 20260101}");
    bad("{\"full_refresh\": \"yes\"}");
    bad("{\"unknown\": 1}");
    bad("{");
    bad("[]");
    bad("\"\\ud800\"");
    request(&addr, &format!("POST /api/pipelines/p/runs{json}"), b"\xff\xfe").error(400);
    assert_eq!(runs(&addr), 0, "no bad request started a run");
    let ok = request(&addr, &format!("POST /api/pipelines/p/runs{json}"), b"{\"logical_date\": \"1000-01-01\"}");
    assert_eq!((ok.code, ok.json()["logical_date"].as_str()), (201, Some("1000-01-01")), "{ok:?}");
}

/// Listening beyond loopback without authentication (anonymous callers may
/// start runs) is said loudly; with tokens required (the default) it is not.
#[test]
fn listening_beyond_loopback_warns_that_there_is_no_authentication() {
    let q = TestProject::new();
    q.write("sluice.toml", "name = \"t\"\n");
    let port = free_port();
    let mut svc = Service::start(q.path(), "api", &["api", "--listen", &format!("0.0.0.0:{port}")], &[]);
    wait_ready(&format!("127.0.0.1:{port}"));
    let a = request(&format!("127.0.0.1:{port}"), "GET /api/runs", b"");
    assert_eq!(a.error(401).split(':').next(), Some("this needs a token with scope `read`"));
    assert_eq!(svc.stop(10), Some(0));
    assert!(!svc.output().contains("NO AUTHENTICATION"), "{}", svc.output());

    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n[auth]\nanonymous = \"trigger\"\n");
    let port = free_port();
    let mut svc = Service::start(p.path(), "api", &["api", "--listen", &format!("0.0.0.0:{port}")], &[]);
    wait_ready(&format!("127.0.0.1:{port}"));
    wait_for(10, "the warning", || svc.output().contains("NO AUTHENTICATION"));
    let out = svc.output();
    assert!(out.contains("WARN  api: the API listens on 0.0.0.0:"), "{out}");
    assert!(out.contains("NO AUTHENTICATION for runs"), "{out}");
    assert!(out.contains("anyone who can reach this address can read every run and start and cancel pipelines"));
    // Not on loopback, so any Host is accepted (there is no name to check against).
    let a = request(&format!("127.0.0.1:{port}"), "GET /api/runs\nHost: sluice.internal", b"");
    assert_eq!(a.code, 200, "{a:?}");
    assert_eq!(svc.stop(10), Some(0));
}
