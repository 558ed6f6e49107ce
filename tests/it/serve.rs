//! The HTTP layer over real HTTP against `sluice serve`/`sluice api`:
//! every route without a token, with a scope too small and with a revoked
//! token; the dashboard's cookie and its CSRF check; CORS, body, header and
//! rate limits; published data with paging, filters and sorting on every
//! warehouse, and requests that try SQL injection; route aliases; metrics
//! checked by promtool; JSON logs; `sluice runs`, `logs` and `status`.
//! Never a 500.

use std::path::PathBuf;

use crate::db::{Kind, TestDb};
use crate::support::{Answer, Service, TestProject, free_port, request, wait_for, wait_ready};

per_backend!(
    [sqlite => Sqlite, postgres => Postgres]
    every_route_needs_its_scope_and_a_live_token,
);

per_backend!(
    [sqlite => Sqlite, postgres => Postgres, mysql => Mysql]
    published_data_pages_filters_sorts_and_refuses_injection,
);

per_backend!(
    [sqlite => Sqlite, postgres => Postgres]
    openapi_fuzzing_finds_no_server_error,
);

/// A running server on a project, with tokens of each scope.
pub struct Server {
    pub p: TestProject,
    pub svc: Service,
    pub addr: String,
    pub read: String,
    pub trigger: String,
    pub admin: String,
    _dbs: Vec<TestDb>,
}

const SALES: &str = "id,product,qty,price,sold_on\n1,apple,3,1.50,2026-01-01\n2,pear,1,2.25,2026-01-01\n3,apple,2,1.50,2026-01-02\n4,fig,10,0.40,2026-01-02\n5,o'brien,1,9.99,2026-01-03\n";

/// A project whose pipeline `shop` loads SALES into `sales` and builds the
/// published model `by_product` (declared columns) on `warehouse`; the
/// state store on `state`. `extra` is added to sluice.toml.
pub fn shop(state: Kind, warehouse: Kind, extra: &str) -> (TestProject, Vec<TestDb>) {
    let p = TestProject::new();
    let mut dbs = Vec::new();
    let mut toml = "name = \"shop\"\n".to_string();
    if warehouse != Kind::Sqlite {
        let w = TestDb::new(warehouse);
        toml.push_str(&format!("[connections.w]\nurl = \"{}\"\n", w.url()));
        dbs.push(w);
    }
    if state == Kind::Postgres {
        let s = TestDb::new(Kind::Postgres);
        toml.push_str(&format!("[state]\nurl = \"{}\"\n", s.url()));
        dbs.push(s);
    }
    toml.push_str(extra);
    toml.push_str(
        "\n[[routes]]\npath = \"/sales\"\nmodel = \"by_product\"\n\n[[routes]]\npath = \"/run-etl\"\npipeline = \"shop\"\n",
    );
    p.write("sluice.toml", &toml);
    p.write("data/sales.csv", SALES);
    p.write(
        "pipelines/shop.toml",
        r#"[[steps]]
name = "land"
kind = "ingest"
source = "data/sales.csv"

[[steps]]
name = "load"
kind = "load"
from = "land"
table = "sales"
mode = "replace"
columns = { id = "integer not null", product = "varchar(32)", qty = "integer", price = "decimal(8,2)", sold_on = "date" }

[[steps]]
name = "build"
kind = "sql"
depends_on = ["load"]
"#,
    );
    p.write(
        "models/by_product.sql",
        "select product, sum(qty) as units, sum(qty * price) as revenue, min(sold_on) as first_sold from {{ ref('sales') }} group by product\n",
    );
    p.write(
        "models/schema.toml",
        r#"[models.by_product]
publish = true
[models.by_product.columns.product]
type = "varchar(32)"
[models.by_product.columns.units]
type = "bigint"
[models.by_product.columns.revenue]
type = "decimal(12,2)"
[models.by_product.columns.first_sold]
type = "date"
"#,
    );
    (p, dbs)
}

fn token(p: &TestProject, scope: &str) -> String {
    let out = p.run(&["token", "create", "--scope", scope, "--name", scope]);
    out.expect_code(0);
    out.stdout.trim().to_string()
}

impl Server {
    pub fn start(state: Kind, warehouse: Kind, extra: &str) -> Server {
        let (p, dbs) = shop(state, warehouse, extra);
        p.run(&["run"]).expect_code(0);
        let (read, trigger, admin) = (token(&p, "read"), token(&p, "trigger"), token(&p, "admin"));
        let addr = format!("127.0.0.1:{}", free_port());
        let svc = Service::start(p.path(), "serve", &["serve", "--listen", &addr, "--grace", "1s"], &[]);
        wait_ready(&addr);
        Server { p, svc, addr, read, trigger, admin, _dbs: dbs }
    }

    /// `METHOD PATH` with a bearer token (none when empty).
    pub fn call(&self, token: &str, head: &str, body: &str) -> Answer {
        let mut h = head.to_string();
        if !token.is_empty() {
            h.push_str(&format!("\nAuthorization: Bearer {token}"));
        }
        if !body.is_empty() {
            h.push_str("\nContent-Type: application/json");
        }
        request(&self.addr, &h, body.as_bytes())
    }
}

/// Every route of the OpenAPI document (and the routes of `[[routes]]`):
/// 401 without a token unless public, 403 with a token whose scope is too
/// small, 401 with a revoked token, what it should with the right one.
fn every_route_needs_its_scope_and_a_live_token(state: Kind) {
    let s = Server::start(state, Kind::Sqlite, "[limits]\nrate = 0\n");
    let doc = s.call("", "GET /api/openapi.json", "").json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let public = ["/healthz", "/readyz", "/api/session", "/login", "/logout"];
    let mut routes: Vec<(String, String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let needs = match (method.as_str(), path.as_str()) {
                _ if public.contains(&path.as_str()) => "none",
                (_, p) if p.starts_with("/api/tokens") => "admin",
                ("post", _) => "trigger",
                _ => "read",
            };
            // The document says so too.
            let secured = op["security"].as_array().is_some_and(|a| a.iter().any(|x| x.get("bearer").is_some()));
            assert_eq!(secured, needs != "none", "{method} {path}: {op}");
            // The event stream of a run that does not exist ends at once.
            let path_q = if path == "/api/events" { "/api/events?run=nope".to_string() } else { path.clone() };
            let concrete = path_q
                .replace("{name}", "shop")
                .replace("{id}", "0191e7a2-0000-7000-8000-000000000000")
                .replace("{task}", "build")
                .replace("{model}", "by_product");
            routes.push((method.to_uppercase(), concrete, needs.to_string()));
        }
    }
    routes.push(("GET".into(), "/sales".into(), "read".into()));
    routes.push(("POST".into(), "/run-etl".into(), "trigger".into()));
    assert!(routes.len() >= 20, "{routes:?}");
    let revoked = token(&s.p, "admin");
    let out = s.p.run(&["token", "revoke", "admin"]);
    out.expect_code(0);
    assert!(out.stdout.contains("revoked tok_"), "{}", out.stdout);
    // `admin` names two tokens: both are revoked; make a new live one.
    let admin = token(&s.p, "admin");
    let live = |scope: &str| match scope {
        "read" => s.read.clone(),
        "trigger" => s.trigger.clone(),
        _ => admin.clone(),
    };
    wait_for(5, "the revocation to show", || {
        s.call(&revoked, "GET /api/runs", "").code == 401 && s.call(&s.admin, "GET /api/runs", "").code == 401
    });
    for (method, path, needs) in &routes {
        let head = format!("{method} {path}");
        let body = if method == "POST" && path == "/api/tokens" { r#"{"name":"x","scope":"read"}"# } else { "" };
        let anon = s.call("", &head, body);
        if needs == "none" {
            assert!(anon.code < 500, "{head}: {anon:?}");
            continue;
        }
        let msg = anon.error(401);
        assert!(msg.contains(&format!("needs a token with scope `{needs}`")), "{head}: {msg}");
        assert_eq!(anon.header("www-authenticate"), Some("Bearer realm=\"sluice\""), "{head}");
        let msg = s.call(&revoked, &head, body).error(401);
        assert!(msg.starts_with("token `admin` (tok_") && msg.ends_with("was revoked"), "{head}: {msg}");
        s.call("sluice_0000", &head, body).error(401);
        let bad = request(&s.addr, &format!("{head}\nAuthorization: Basic dXNlcjpwYXNz"), b"").error(401);
        assert_eq!(bad, "the Authorization header must be `Bearer <token>`");
        let smaller: &[&str] = match needs.as_str() {
            "admin" => &["read", "trigger"],
            "trigger" => &["read"],
            _ => &[],
        };
        for sc in smaller {
            let msg = s.call(&live(sc), &head, body).error(403);
            assert_eq!(msg, format!("token `{sc}` has scope `{sc}`; this needs `{needs}`"), "{head}");
        }
        let ok = s.call(&live(needs), &head, body);
        assert!(ok.code < 500 && ok.code != 401 && ok.code != 403, "{head} with scope {needs}: {ok:?}");
    }
    // With the right scope, they work.
    let runs = s.call(&s.read, "GET /api/runs", "").json();
    assert!(!runs["runs"].as_array().unwrap().is_empty(), "{runs}");
    let run = s.call(&s.trigger, "POST /run-etl", "");
    assert_eq!(run.code, 201, "{run:?}");
    assert_eq!(run.json()["pipeline"], "shop");
    let created = s.call(&admin, "POST /api/tokens", r#"{"name":"api-made","scope":"read","expires_in":"1h"}"#);
    assert_eq!(created.code, 201, "{created:?}");
    let t = created.json()["token"].as_str().unwrap().to_string();
    assert!(t.starts_with("sluice_") && t.len() == 71, "{t}");
    assert_eq!(s.call(&t, "GET /api/pipelines", "").code, 200);
    assert!(
        s.call(&admin, "POST /api/tokens", r#"{"name":"x","scope":"root"}"#).error(400).starts_with("invalid scope")
    );
    // Tokens are stored hashed: the state store never holds one.
    let list = s.p.run(&["token", "list"]);
    list.expect_code(0);
    assert!(list.stdout.contains("api-made") && list.stdout.contains("revoked"), "{}", list.stdout);
    assert!(!list.stdout.contains("sluice_"), "{}", list.stdout);
}

/// Paging, columns, filters, sorting, CSV, ETag, route aliases, and
/// requests that try SQL injection, on each warehouse.
fn published_data_pages_filters_sorts_and_refuses_injection(warehouse: Kind) {
    let s = Server::start(Kind::Sqlite, warehouse, "[limits]\nrate = 0\npage = 3\n");
    let get = |path: &str| s.call(&s.read, &format!("GET {path}"), "");
    let ok = |path: &str| {
        let a = get(path);
        assert_eq!(a.code, 200, "{path}: {a:?}");
        a.json()
    };
    let first = get("/api/data/by_product?limit=2");
    assert!(
        first.body.ends_with(
            r#""rows":[{"product":"apple","units":5,"revenue":7.50,"first_sold":"2026-01-01"},{"product":"fig","units":10,"revenue":4.00,"first_sold":"2026-01-02"}]}"#
        ),
        "the same JSON on every warehouse, numbers typed, decimals with their scale: {}",
        first.body
    );
    let page = first.json();
    assert_eq!(page["model"], "by_product");
    assert_eq!(page["columns"][2], serde_json::json!({"name": "revenue", "type": "decimal(12,2)"}));
    assert_eq!(page["next"], "/api/data/by_product?limit=2&offset=2");
    let next = ok("/api/data/by_product?limit=2&offset=2");
    assert_eq!(next["count"], 2);
    assert_eq!(next["next"], serde_json::Value::Null);
    assert_eq!(ok("/api/data/by_product")["count"], 3, "the default page is [limits] page at most");
    // Columns, sort, filters.
    let v = get("/api/data/by_product?columns=product,units&sort=-units,product");
    assert!(
        v.body.ends_with(
            r#""rows":[{"product":"fig","units":10},{"product":"apple","units":5},{"product":"o'brien","units":1}]}"#
        ),
        "{}",
        v.body
    );
    let names = |q: &str| -> Vec<String> {
        ok(&format!("/api/data/by_product?columns=product&{q}"))["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["product"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("units.gte=5"), vec!["apple", "fig"]);
    assert_eq!(names("revenue.lt=5&revenue.gt=2.5"), vec!["fig"]);
    assert_eq!(names("product=o%27brien"), vec!["o'brien"]);
    assert_eq!(names("product.like=%25e%25"), vec!["apple", "o'brien", "pear"]);
    assert_eq!(names("product.ne=apple&first_sold.lte=2026-01-02"), vec!["fig", "pear"]);
    assert_eq!(names("first_sold=2026-01-03"), vec!["o'brien"]);
    assert_eq!(names("units.is=notnull&sort=-product&limit=1"), vec!["pear"]);
    // Injection: values are bound, so they match nothing; names must be declared.
    assert_eq!(names("product=x%27%20OR%20%271%27=%271"), Vec::<String>::new());
    assert_eq!(names("product=apple%27--"), Vec::<String>::new());
    assert_eq!(names("product.like=%27%20OR%201=1%20--"), Vec::<String>::new());
    let bad = |q: &str| get(&format!("/api/data/by_product?{q}")).error(400);
    let msg = bad("units=1%20OR%201=1");
    assert!(msg.starts_with("invalid `units`: \"1 OR 1=1\""), "{msg}");
    assert!(bad("sort=units;DROP%20TABLE%20sales").starts_with("model `by_product` has no declared column"));
    assert!(bad("columns=product,(select%201)").starts_with("model `by_product` has no declared column `(select 1)`"));
    assert!(bad("%22product%22=x").starts_with("unknown parameter `\"product\"`"));
    assert!(bad("product;drop=1").starts_with("unknown parameter `product;drop`"));
    assert!(bad("units.gt=1e999999").starts_with("invalid `units.gt`"));
    assert!(bad("first_sold=2026-02-30").starts_with("invalid `first_sold`"));
    assert!(bad("units.like=1").starts_with("`units.like`: like works on text columns"));
    assert_eq!(bad("limit=4"), "invalid limit 4: from 1 to 3 rows a page ([limits] page)");
    bad("limit=0");
    bad("limit=-1");
    bad("offset=99999999999");
    bad("limit=1&limit=2");
    bad("format=xml");
    // The table is still there.
    assert_eq!(ok("/api/data/by_product?columns=product&limit=3")["count"], 3);
    // Unknown and unpublished models.
    let msg = get("/api/data/nope").error(404);
    assert_eq!(msg, "no published model `nope` (published: by_product)");
    get("/api/data/sales").error(404);
    get("/api/data/by_product%27").error(404);
    // CSV by Accept or format, and the ETag.
    let csv = s.call(&s.read, "GET /sales?sort=product&columns=product,revenue\nAccept: text/csv", "");
    assert_eq!(csv.code, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert_eq!(csv.body, "product,revenue\r\napple,7.50\r\nfig,4.00\r\no'brien,9.99\r\n");
    let json = get("/sales?sort=product");
    let etag = json.header("etag").unwrap().to_string();
    let again = s.call(&s.read, &format!("GET /sales?sort=product\nIf-None-Match: {etag}"), "");
    assert_eq!((again.code, again.body.as_str()), (304, ""));
    assert_eq!(s.call(&s.read, "GET /sales?sort=product\nIf-None-Match: \"x\"", "").code, 200);
    assert_eq!(s.call("", "GET /sales", "").error(401).split(':').next(), Some("this needs a token with scope `read`"));
    // POST /run-etl starts the pipeline; GET is not its method.
    let run = s.call(&s.trigger, "POST /run-etl", "");
    assert_eq!(run.code, 201, "{run:?}");
    let id = run.json()["id"].as_str().unwrap().to_string();
    assert!(get("/run-etl").error(405).starts_with("method GET is not allowed on /run-etl"));
    wait_for(60, "the run", || ok(&format!("/api/runs/{id}"))["status"] == "success");
}

/// Chooses the rate limit and everything the dashboard's login relies on.
#[test]
fn login_cookie_csrf_cors_and_limits() {
    let s = Server::start(
        Kind::Sqlite,
        Kind::Sqlite,
        "[auth]\nsession = \"1h\"\n[cors]\norigins = [\"http://app.example\"]\n[limits]\nbody = 200\nheaders = 2048\nrate = 5\nburst = 5\n",
    );
    let addr = &s.addr;
    // Logging in sets an HttpOnly, SameSite=Strict cookie.
    let bad = request(addr, "POST /login\nContent-Type: application/json", b"{\"token\":\"sluice_nope\"}");
    bad.error(401);
    let login = request(
        addr,
        "POST /login\nContent-Type: application/json",
        format!("{{\"token\":\"{}\"}}", s.trigger).as_bytes(),
    );
    assert_eq!(login.code, 200, "{login:?}");
    let cookie = login.header("set-cookie").unwrap().to_string();
    assert!(cookie.starts_with("sluice_session="), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains(&s.trigger), "the cookie is a session, not the token");
    let session = cookie.split(';').next().unwrap().to_string();
    let info = login.json();
    let csrf = info["csrf"].as_str().unwrap().to_string();
    assert_eq!((info["name"].as_str(), info["scope"].as_str()), (Some("trigger"), Some("trigger")));
    // Reads with the cookie; writes need the CSRF header too.
    let me = request(addr, &format!("GET /api/session\nCookie: {session}"), b"").json();
    assert_eq!(me["csrf"].as_str(), Some(csrf.as_str()));
    assert_eq!(request(addr, &format!("GET /api/runs\nCookie: {session}"), b"").code, 200);
    let msg = request(addr, &format!("POST /api/pipelines/shop/runs\nCookie: {session}"), b"").error(403);
    assert!(msg.starts_with("a write with the dashboard's session must carry its X-CSRF-Token header"), "{msg}");
    request(addr, &format!("POST /api/pipelines/shop/runs\nCookie: {session}\nX-CSRF-Token: {}", "0".repeat(64)), b"")
        .error(403);
    let ok = request(addr, &format!("POST /api/pipelines/shop/runs\nCookie: {session}\nX-CSRF-Token: {csrf}"), b"");
    assert_eq!(ok.code, 201, "{ok:?}");
    // Another origin cannot use the session, even with the header.
    request(
        addr,
        &format!("POST /api/pipelines/shop/runs\nCookie: {session}\nX-CSRF-Token: {csrf}\nOrigin: http://evil.example"),
        b"",
    )
    .error(403);
    // Logging out ends the session.
    let out = request(addr, &format!("POST /logout\nCookie: {session}"), b"");
    assert_eq!(out.code, 200);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    wait_for(5, "the session to end", || request(addr, &format!("GET /api/runs\nCookie: {session}"), b"").code == 401);
    std::thread::sleep(std::time::Duration::from_secs(2));

    // CORS: the listed origin gets preflights and readable answers; others not.
    let pre = request(
        addr,
        "OPTIONS /api/runs\nOrigin: http://app.example\nAccess-Control-Request-Method: GET\nAccess-Control-Request-Headers: authorization",
        b"",
    );
    assert_eq!(pre.code, 204, "{pre:?}");
    assert_eq!(pre.header("access-control-allow-origin"), Some("http://app.example"));
    assert!(pre.header("access-control-allow-headers").unwrap().contains("authorization"));
    assert_eq!(pre.header("access-control-allow-credentials"), None);
    let got =
        request(addr, &format!("GET /api/runs\nOrigin: http://app.example\nAuthorization: Bearer {}", s.read), b"");
    assert_eq!((got.code, got.header("access-control-allow-origin")), (200, Some("http://app.example")));
    let other =
        request(addr, &format!("GET /api/runs\nOrigin: http://other.example\nAuthorization: Bearer {}", s.read), b"");
    assert_eq!(other.header("access-control-allow-origin"), None);
    let write = request(
        addr,
        &format!("POST /api/pipelines/shop/runs\nOrigin: http://app.example\nAuthorization: Bearer {}", s.trigger),
        b"",
    );
    assert_eq!(write.code, 201, "a listed origin may write with a token: {write:?}");
    std::thread::sleep(std::time::Duration::from_secs(2));

    // Body and header limits.
    let big = format!("{{\"logical_date\": \"2026-01-01\", \"x\": \"{}\"}}", "a".repeat(300));
    let a = s.call(&s.trigger, "POST /api/pipelines/shop/runs", &big);
    assert_eq!(a.error(413), "the request body is too large ([limits] body)");
    let a = request(
        addr,
        &format!("GET /api/runs\nAuthorization: Bearer {}\nX-Padding: {}", s.read, "p".repeat(3000)),
        b"",
    );
    assert!(a.error(431).starts_with("the request's headers are "), "{a:?}");
    std::thread::sleep(std::time::Duration::from_secs(2));

    // The rate: 5 a second per token, then 429 with Retry-After; other tokens are not held back.
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(s.call(&s.admin, "GET /api/runs", "").code);
    }
    assert_eq!(&codes[..5], &[200; 5], "{codes:?}");
    assert_eq!(codes[7], 429, "{codes:?}");
    let limited = s.call(&s.admin, "GET /api/runs", "");
    assert!(limited.error(429).starts_with("too many requests"));
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(s.call(&s.read, "GET /api/runs", "").code, 200);
}

/// The Python venv `.ci/tools.sh` fills.
pub fn venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv")
}

/// A test tool that must be installed (by `.ci/tools.sh`): a missing one
/// fails the test, never skips it.
#[track_caller]
pub fn need(tool: &str) -> PathBuf {
    let candidates = [venv().join("bin").join(tool), PathBuf::from("/usr/bin").join(tool)];
    candidates
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("`{tool}` is not installed: run .ci/tools.sh (it installs the test tools)"))
}

/// `/metrics` after a run: what the store knows and the HTTP requests, and
/// `promtool check metrics` accepts it (HELP text on every metric).
#[test]
fn metrics_pass_promtool_and_services_log_json() {
    let (p, _dbs) = shop(Kind::Sqlite, Kind::Sqlite, "[limits]\nrate = 0\n");
    let read = token(&p, "read");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut svc =
        Service::start(p.path(), "serve", &["--log-format", "json", "serve", "--listen", &addr, "--grace", "1s"], &[]);
    wait_ready(&addr);
    let trigger = token(&p, "trigger");
    let run = request(&addr, &format!("POST /run-etl\nAuthorization: Bearer {trigger}"), b"");
    assert_eq!(run.code, 201, "{run:?}");
    let id = run.json()["id"].as_str().unwrap().to_string();
    wait_for(60, "the run", || {
        request(&addr, &format!("GET /api/runs/{id}\nAuthorization: Bearer {read}"), b"").json()["status"] == "success"
    });
    std::thread::sleep(std::time::Duration::from_secs(6)); // past the counts' cache
    let m = request(&addr, &format!("GET /metrics\nAuthorization: Bearer {read}"), b"");
    assert_eq!(m.code, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    for want in [
        "sluice_runs{pipeline=\"shop\",status=\"success\"} 1",
        "sluice_tasks{pipeline=\"shop\",status=\"success\"} 3",
        "sluice_rows_loaded_total{table=\"sales\"} 5",
        "sluice_rows_rejected_total{table=\"sales\"} 0",
        "sluice_task_duration_seconds_count{pipeline=\"shop\",kind=\"load\"} 1",
        "sluice_queue_depth 0",
        "sluice_workers 1",
        "sluice_http_requests_total{route=\"/api/runs/{id}\",method=\"GET\",status=\"200\"}",
    ] {
        assert!(m.body.contains(want), "missing {want}:\n{}", m.body);
    }
    let f = p.file("metrics.txt");
    std::fs::write(&f, &m.body).unwrap();
    let out = std::process::Command::new(need("promtool"))
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&f).unwrap())
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(svc.stop(10), Some(0));
    // Every service's lines are JSON with the same fields.
    let log = svc.output();
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(lines.iter().all(|l| l["ts"].is_string() && l["level"].is_string() && l["msg"].is_string()));
    let comps: std::collections::BTreeSet<&str> = lines.iter().filter_map(|l| l["component"].as_str()).collect();
    assert!(comps.contains("api") && comps.iter().any(|c| c.starts_with("scheduler")), "{comps:?}");
    assert!(comps.iter().any(|c| c.starts_with("worker")), "{comps:?}");
    assert!(
        lines.iter().any(|l| l["run_id"] == id.as_str() && l["task"] == "load" && l["level"] == "info"),
        "a task's lines carry its run and task:\n{log}"
    );

    // The terminal commands.
    let runs = p.run(&["runs"]);
    runs.expect_code(0);
    assert!(runs.stdout.starts_with("RUN "), "{}", runs.stdout);
    assert!(runs.stdout.contains(&id) && runs.stdout.contains(" success "), "{}", runs.stdout);
    let js = p.run(&["runs", "--json", "--status", "success", "--pipeline", "shop"]);
    js.expect_code(0);
    let first: serde_json::Value = serde_json::from_str(js.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["id"], id.as_str());
    let logs = p.run(&["logs", &id[..13]]);
    logs.expect_code(0);
    assert!(logs.stdout.contains(" load info  loaded 5 rows into sales"), "{}", logs.stdout);
    let one = p.run(&["logs", &id, "build", "--follow"]);
    one.expect_code(0);
    assert!(one.stdout.contains("built 1 model") && !one.stdout.contains("loaded 5 rows"), "{}", one.stdout);
    let nope = p.run(&["logs", &id, "nope"]);
    nope.expect_code(2);
    assert!(nope.stderr.contains("has no task `nope` (tasks: land, load, build)"), "{}", nope.stderr);
    let st = p.run(&["status"]);
    st.expect_code(0);
    assert!(st.stdout.starts_with("state store   sqlite://"), "{}", st.stdout);
    assert!(st.stdout.contains("runs          0 queued, 0 running, 1 success"), "{}", st.stdout);
}

/// schemathesis generates requests from the OpenAPI document and sends
/// them to a running server: none may get a 500.
fn openapi_fuzzing_finds_no_server_error(state: Kind) {
    let s = Server::start(state, Kind::Sqlite, "[limits]\nrate = 0\n");
    let run = || {
        let out = std::process::Command::new(need("schemathesis"))
            .current_dir(s.p.path())
            .env("SCHEMATHESIS_HOOKS", "")
            .args([
                "run",
                &format!("http://{}/api/openapi.json", s.addr),
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "25",
                "--workers",
                "2",
                "--header",
                &format!("Authorization: Bearer {}", s.admin),
                "--no-color",
            ])
            .output()
            .expect("schemathesis runs");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (mut ok, mut text) = run();
    // The fuzzer's own crash inside CPython's `ast` (hypothesis describing a
    // strategy, seen now and then on this Python) says nothing of the server:
    // run it once more. Any finding about the server fails at once.
    if !ok && text.contains("SystemError: AST constructor recursion depth mismatch") && !text.contains("Server error") {
        (ok, text) = run();
    }
    assert!(ok, "schemathesis found problems:\n{text}\n--- server\n{}", s.svc.output());
    assert!(text.contains("passed"), "{text}");
    // The server is still well.
    assert_eq!(s.call("", "GET /healthz", "").code, 200);
}

/// `/docs/` serves what `sluice docs generate` wrote into target/docs: with
/// the `read` scope (a token or the dashboard's session), HTML with its
/// content type and a CSP without scripts, the node pages its links name;
/// never a file outside the folder (`..` in any spelling, a symlink out of
/// it, hidden files) nor a type the site is not made of.
#[test]
fn docs_site_served_with_read_scope_and_nothing_outside_it() {
    let s = Server::start(Kind::Sqlite, Kind::Sqlite, "[limits]\nrate = 0\n");
    let get = |token: &str, path: &str| s.call(token, &format!("GET {path}"), "");
    // Before the site is generated: a 404 that says what to do.
    let msg = get(&s.read, "/docs/").error(404);
    assert!(msg.contains("run `sluice docs generate`"), "{msg}");
    s.p.run(&["docs", "generate"]).expect_code(0);

    // Scope: none → 401; read, trigger → 200.
    let msg = get("", "/docs/").error(401);
    assert!(msg.contains("needs a token with scope `read`"), "{msg}");
    get("sluice_0000", "/docs/").error(401);
    let index = get(&s.read, "/docs/");
    assert_eq!(index.code, 200, "{index:?}");
    assert_eq!(index.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(index.header("x-content-type-options"), Some("nosniff"));
    let csp = index.header("content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'none'") && !csp.contains("script-src"), "{csp}");
    assert!(index.body.contains("<h1>shop</h1>"), "{}", index.body);
    assert_eq!(index.body, s.p.read("target/docs/index.html"), "the file as written");
    assert_eq!(get(&s.trigger, "/docs/index.html").body, index.body);
    // `/docs` sends the browser to `/docs/`, where the relative links work.
    let r = get(&s.read, "/docs");
    assert!((300..400).contains(&r.code) && r.header("location") == Some("/docs/"), "{r:?}");

    // The model's page, by the link the index gives.
    let link = "nodes/model.shop.by_product.html";
    assert!(index.body.contains(&format!("href=\"{link}\"")), "{}", index.body);
    let page = get(&s.read, &format!("/docs/{link}"));
    assert_eq!(page.code, 200, "{page:?}");
    assert!(page.body.contains("group by product"), "the model's SQL: {}", page.body);
    // An unchanged page is not sent again.
    let tag = page.header("etag").unwrap().to_string();
    let again = s.call(&s.read, &format!("GET /docs/{link}\nIf-None-Match: {tag}"), "");
    assert_eq!(again.code, 304, "{again:?}");

    // Nothing outside target/docs, however the path is spelled.
    s.p.write("target/docs/.secret.html", "hidden");
    s.p.write("target/docs/run.js", "alert(1)");
    s.p.write("outside.html", "hidden outside");
    std::os::unix::fs::symlink(s.p.file("sluice.toml"), s.p.file("target/docs/leak.html")).unwrap();
    std::os::unix::fs::symlink(s.p.path(), s.p.file("target/docs/up")).unwrap();
    let toml = s.p.read("sluice.toml");
    for path in [
        "/docs/../sluice.toml",
        "/docs/%2e%2e/sluice.toml",
        "/docs/%2E%2E%2Fsluice.toml",
        "/docs/nodes/..%2f..%2fsluice.toml",
        "/docs/..%5csluice.toml",
        "/docs//etc/passwd",
        "/docs/%2fetc%2fpasswd",
        "/docs/leak.html",
        "/docs/up/sluice.toml",
        "/docs/up/outside.html",
        "/docs/.secret.html",
        "/docs/run.js",
        "/docs/nodes",
        "/docs/nodes/missing.html",
    ] {
        let a = get(&s.read, path);
        assert!(a.code == 404 || a.code == 400, "{path}: {a:?}");
        assert!(!a.body.contains("[[routes]]") && !a.body.contains("hidden") && !a.body.contains("alert"), "{path}");
        assert!(a.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{path}: {a:?}");
    }
    assert!(toml.contains("[[routes]]"), "the check above would see the file");

    // The dashboard links to it, and its session is enough.
    let ui = get("", "/ui/");
    assert!(ui.body.contains("href=\"/docs/\""), "{}", ui.body);
    let login = request(
        &s.addr,
        "POST /login\nContent-Type: application/json",
        format!("{{\"token\":\"{}\"}}", s.read).as_bytes(),
    );
    assert_eq!(login.code, 200, "{login:?}");
    let cookie = login.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let with_session = request(&s.addr, &format!("GET /docs/{link}\nCookie: {cookie}"), b"");
    assert_eq!(with_session.code, 200, "{with_session:?}");
    assert_eq!(with_session.body, page.body);
}
