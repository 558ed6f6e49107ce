//! HTTP API sources (issue 13) against a real HTTP server on loopback: a small
//! JSON API served by axum inside this test binary, with an API key, every
//! paging kind, and faults injected per page (429 storms, 500s, malformed
//! JSON, a page that hangs until released).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::support::{Service, TestProject, files_under};

/// The key the fake API wants; markers no output may hold.
const KEY: &str = "Zq-sk_live-7f3a9-Zq";

/// What the server does instead of answering a page.
#[derive(Clone, Debug)]
enum Fault {
    Status(u16, Option<String>),
    /// 429 with `Retry-After` as the HTTP date this many seconds ahead.
    RetryAt(u64),
    Malformed,
}

#[derive(Clone, Debug)]
pub struct Req {
    pub query: Vec<(String, String)>,
    pub page: u64,
    pub at: Instant,
    pub status: u16,
}

#[derive(Default)]
struct State {
    records: Vec<Value>,
    key: Option<String>,
    log: Vec<Req>,
    /// (path, page, how many times, fault).
    faults: Vec<(String, u64, u32, Fault)>,
    /// Requests for this page or later wait while set.
    hold_from: Option<u64>,
    /// The page of each request, as it arrives.
    arrived: Vec<u64>,
}

pub struct FakeApi {
    pub addr: String,
    state: Arc<Mutex<State>>,
    _rt: tokio::runtime::Runtime,
}

fn record(i: u64) -> Value {
    let city = ["Oulu", "Turku", "Espoo"][(i % 3) as usize];
    json!({
        "id": i,
        "name": format!("item {i}"),
        "updated_at": format!("2026-01-{i:02}T00:00:00Z"),
        "amount": null,
        "customer": { "name": format!("c{}", i % 3), "address": { "city": city } },
        "tags": ["t", format!("n{i}")],
    })
}

/// `amount` written as a JSON number text with two decimals (kept exact).
fn with_amount(mut v: Value, i: u64) -> Value {
    v["amount"] = serde_json::from_str(&format!("{}.{:02}", i * 3, (i * 25) % 100)).unwrap();
    v
}

impl FakeApi {
    pub fn start(n: u64, key: Option<&str>) -> FakeApi {
        let state = Arc::new(Mutex::new(State {
            records: (1..=n).map(|i| with_amount(record(i), i)).collect(),
            key: key.map(str::to_string),
            ..Default::default()
        }));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let st = state.clone();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
                let st = st.clone();
                async move { handle(st, uri, headers).await }
            });
            axum::serve(listener, app).await.unwrap();
        });
        FakeApi { addr, state, _rt: rt }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn fault(&self, path: &str, page: u64, times: u32, f: Fault) {
        self.state.lock().unwrap().faults.push((path.to_string(), page, times, f));
    }

    pub fn log(&self) -> Vec<Req> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn add_records(&self, from: u64, to: u64) {
        let mut s = self.state.lock().unwrap();
        for i in from..=to {
            s.records.push(with_amount(record(i), i));
        }
    }

    pub fn hold_from(&self, page: Option<u64>) {
        self.state.lock().unwrap().hold_from = page;
    }
}

const PAGE: usize = 3;

async fn handle(st: Arc<Mutex<State>>, uri: Uri, headers: HeaderMap) -> Response {
    let url = reqwest::Url::parse(&format!("http://x{uri}")).unwrap();
    let q: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let num = |k: &str, d: u64| get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(d);
    let path = url.path().to_string();
    let since = get("since");
    let (records, key) = {
        let s = st.lock().unwrap();
        let recs: Vec<Value> = s
            .records
            .iter()
            .filter(|r| since.as_deref().is_none_or(|since| r["updated_at"].as_str().unwrap() > since))
            .cloned()
            .collect();
        (recs, s.key.clone())
    };
    // Which page this is, and the records on it.
    let (page, start, size) = match path.as_str() {
        "/page" => {
            let p = num("page", 1);
            let size = num("per_page", PAGE as u64) as usize;
            (p, (p as usize - 1) * size, size)
        }
        "/offset" => {
            let (o, l) = (num("offset", 0) as usize, num("limit", PAGE as u64) as usize);
            ((o / l) as u64 + 1, o, l)
        }
        "/cursor" => {
            let after = get("cursor").map(|c| c.trim_start_matches("after-").parse::<u64>().unwrap()).unwrap_or(0);
            let start = records.iter().position(|r| r["id"].as_u64().unwrap() > after).unwrap_or(records.len());
            ((start / PAGE) as u64 + 1, start, PAGE)
        }
        "/link" => {
            let p = num("page", 1);
            (p, (p as usize - 1) * PAGE, PAGE)
        }
        _ => (0, 0, 0),
    };
    let mut status = 200u16;
    let authorized = key.is_none()
        || headers.get("x-api-key").and_then(|v| v.to_str().ok()) == key.as_deref()
        || get("api_key") == key
        || headers.get("authorization").and_then(|v| v.to_str().ok())
            == key.as_ref().map(|k| format!("Bearer {k}")).as_deref();
    let fault = {
        let mut s = st.lock().unwrap();
        s.faults.iter_mut().find(|(p, n, times, _)| *p == path && *n == page && *times > 0).map(|f| {
            f.2 -= 1;
            f.3.clone()
        })
    };
    st.lock().unwrap().arrived.push(page);
    // Hold the request while the test wants it held.
    loop {
        let held = st.lock().unwrap().hold_from.is_some_and(|h| page >= h);
        if !held {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = if !authorized {
        status = 401;
        (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "a valid API key is required"}))).into_response()
    } else if let Some(f) = fault {
        match f {
            Fault::Status(code, retry_after) => {
                status = code;
                let mut r = (StatusCode::from_u16(code).unwrap(), "slow down or try later").into_response();
                if let Some(ra) = retry_after {
                    r.headers_mut().insert("retry-after", HeaderValue::from_str(&ra).unwrap());
                }
                r
            }
            Fault::RetryAt(secs) => {
                status = 429;
                let at = chrono::Utc::now() + chrono::Duration::seconds(secs as i64);
                let mut r = (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
                let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
                r.headers_mut().insert("retry-after", HeaderValue::from_str(&date).unwrap());
                r
            }
            Fault::Malformed => (
                [("content-type", "application/json")],
                "{\"data\": [\n  {\"id\": 4, \"name\": \"x\"},\n  {\"id\": 5 \"name\": \"y\"}\n]}",
            )
                .into_response(),
        }
    } else {
        let page_recs: Vec<Value> = records.iter().skip(start).take(size).cloned().collect();
        let more = start + size < records.len();
        match path.as_str() {
            "/page" => axum::Json(json!({"data": page_recs, "meta": {"page": page}})).into_response(),
            "/offset" => axum::Json(json!({"result": {"items": page_recs}, "total": records.len()})).into_response(),
            "/cursor" => {
                let next = if more { json!(format!("after-{}", page_recs.last().unwrap()["id"])) } else { json!(null) };
                axum::Json(json!({"data": page_recs, "paging": {"next": next}})).into_response()
            }
            "/link" => {
                let mut r = axum::Json(json!(page_recs)).into_response();
                if more {
                    let mut next = format!("/link?page={}", page + 1);
                    if let Some(s) = &since {
                        next.push_str(&format!("&since={s}"));
                    }
                    let v = format!("</link?page=1>; rel=\"first\", <{next}>; rel=\"next\"");
                    r.headers_mut().insert("link", HeaderValue::from_str(&v).unwrap());
                }
                r
            }
            _ => {
                status = 404;
                (StatusCode::NOT_FOUND, "no such endpoint").into_response()
            }
        }
    };
    st.lock().unwrap().log.push(Req { query: q, page, at: Instant::now(), status });
    resp
}

/// A project that lands `source` with the `http` options and loads it into `items`.
fn project(source: &str, http: &str) -> TestProject {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n");
    p.write(
        "pipelines/p.toml",
        &format!(
            r#"[[steps]]
name = "api"
kind = "ingest"
source = "{source}"
http = {{ {http} }}

[[steps]]
name = "load"
kind = "load"
from = "api"
table = "items"
mode = "append"
"#
        ),
    );
    p
}

fn manifests(p: &TestProject) -> Vec<String> {
    let mut m: Vec<String> = files_under(p.path()).into_iter().filter(|f| f.ends_with("_manifest.json")).collect();
    m.sort();
    m
}

/// The object key of a file of the lake (`raw/…`).
fn raw_key(path: &std::path::Path) -> String {
    let s = path.display().to_string();
    s[s.find("/raw/").unwrap() + 1..].to_string()
}

fn ids(p: &TestProject) -> Vec<String> {
    p.query("select id from items order by id").into_iter().map(|r| r[0].clone()).collect()
}

fn range(a: u64, b: u64) -> Vec<String> {
    (a..=b).map(|i| i.to_string()).collect()
}

const AUTH: &str = r#"auth = { kind = "api_key", header = "X-API-Key", value = "${env:SLUICE_IT_API_KEY}" }"#;

fn run(p: &TestProject) -> crate::support::Out {
    p.run_env(&["run"], &[("SLUICE_IT_API_KEY", KEY)])
}

#[test]
fn page_number_paging_lands_each_page_and_loads_flattened_records() {
    let api = FakeApi::start(8, Some(KEY));
    let p = project(
        &api.url("/page"),
        &format!(r#"records = "data", {AUTH}, paging = {{ kind = "page", size_param = "per_page", size = 3 }}"#),
    );
    let out = run(&p);
    out.expect_code(0);
    assert!(out.stdout.contains("landed 3 files (8 rows"), "{}", out.stdout);
    // Three pages of 3, 3 and 2 records: the short one is the last asked for.
    let pages: Vec<u64> = api.log().iter().map(|r| r.page).collect();
    assert_eq!(pages, vec![1, 2, 3]);
    assert_eq!(ids(&p), range(1, 8));
    let rows = p.query("select name, customer_name, customer_address_city, tags, amount from items where id = 4");
    assert_eq!(rows, vec![vec!["item 4", "c1", "Turku", "[\"t\",\"n4\"]", "12"]]);
    // Each page landed as it came, under its own name.
    let m = manifests(&p);
    assert_eq!(m.len(), 1);
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(&m[0]).unwrap()).unwrap();
    let names: Vec<&str> = manifest["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["page-00001.json", "page-00002.json", "page-00003.json"]);
    assert_eq!(manifest["files"][1]["source"], json!(format!("{}?page=2&per_page=3", api.url("/page"))));
    let dir = std::path::Path::new(&m[0]).parent().unwrap();
    let page2: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("page-00002.json")).unwrap()).unwrap();
    assert_eq!(page2["meta"]["page"], json!(2));
    // Nothing changed at the API: the next run lands and loads nothing new.
    let again = run(&p);
    again.expect_code(0);
    assert!(again.stdout.contains("nothing new"), "{}", again.stdout);
    assert_eq!(ids(&p), range(1, 8));
}

#[test]
fn offset_paging_reads_records_at_a_nested_path() {
    let api = FakeApi::start(7, None);
    let p = project(&api.url("/offset"), r#"records = "result.items", paging = { kind = "offset", limit = 3 }"#);
    run(&p).expect_code(0);
    let offsets: Vec<String> =
        api.log().iter().map(|r| r.query.iter().find(|(k, _)| k == "offset").unwrap().1.clone()).collect();
    assert_eq!(offsets, vec!["0", "3", "6"]);
    assert_eq!(ids(&p), range(1, 7));
}

#[test]
fn cursor_paging_follows_the_cursor_in_each_page() {
    let api = FakeApi::start(7, None);
    let p = project(
        &api.url("/cursor"),
        r#"records = "data", flatten = "__", paging = { kind = "cursor", param = "cursor", next = "paging.next" }"#,
    );
    run(&p).expect_code(0);
    let cursors: Vec<Option<String>> =
        api.log().iter().map(|r| r.query.iter().find(|(k, _)| k == "cursor").map(|(_, v)| v.clone())).collect();
    assert_eq!(cursors, vec![None, Some("after-3".into()), Some("after-6".into())]);
    assert_eq!(ids(&p), range(1, 7));
    assert_eq!(p.query("select customer__address__city from items where id = 3"), vec![vec!["Oulu"]]);
}

#[test]
fn link_header_paging_follows_rel_next() {
    let api = FakeApi::start(7, Some(KEY));
    let p = project(
        &api.url("/link"),
        r#"paging = { kind = "link" }, auth = { kind = "api_key", query = "api_key", value = "${env:SLUICE_IT_API_KEY}" }"#,
    );
    run(&p).expect_code(0);
    let log = api.log();
    assert_eq!(log.iter().map(|r| r.page).collect::<Vec<_>>(), vec![1, 2, 3]);
    // The key went as a query parameter on every request, the links' included.
    assert!(log.iter().all(|r| r.status == 200 && r.query.iter().any(|(k, v)| k == "api_key" && v == KEY)));
    assert_eq!(ids(&p), range(1, 7));
    // ... and is in no landed file or manifest.
    for f in files_under(p.path()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(KEY), "{f} holds the key");
    }
}

#[test]
fn a_429_storm_is_waited_out_honouring_retry_after() {
    let api = FakeApi::start(8, None);
    // Page 2 is refused four times: Retry-After in seconds, then as an HTTP date.
    api.fault("/page", 2, 3, Fault::Status(429, Some("1".into())));
    api.fault("/page", 3, 1, Fault::RetryAt(3));
    let p = project(&api.url("/page"), r#"records = "data", paging = { kind = "page" }, retry_delay = "10ms""#);
    let out = run(&p);
    out.expect_code(0);
    let log = api.log();
    let p2: Vec<&Req> = log.iter().filter(|r| r.page == 2).collect();
    assert_eq!(p2.iter().map(|r| r.status).collect::<Vec<_>>(), vec![429, 429, 429, 200]);
    for w in p2.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap >= Duration::from_millis(950), "retried after {gap:?}, before Retry-After: 1");
    }
    let p3: Vec<&Req> = log.iter().filter(|r| r.page == 3).collect();
    assert_eq!(p3.len(), 2);
    // The date was 3 s ahead, in whole seconds: more than 2 s were waited.
    assert!(p3[1].at - p3[0].at >= Duration::from_secs(2), "{:?}", p3[1].at - p3[0].at);
    assert_eq!(ids(&p), range(1, 8));
}

#[test]
fn a_500_mid_pagination_is_retried_and_recovers() {
    let api = FakeApi::start(8, None);
    api.fault("/page", 2, 2, Fault::Status(500, None));
    api.fault("/page", 3, 1, Fault::Status(503, None));
    let p = project(&api.url("/page"), r#"records = "data", paging = { kind = "page" }, retry_delay = "20ms""#);
    run(&p).expect_code(0);
    let statuses: Vec<(u64, u16)> = api.log().iter().map(|r| (r.page, r.status)).collect();
    assert_eq!(statuses, vec![(1, 200), (2, 500), (2, 500), (2, 200), (3, 503), (3, 200), (4, 200)]);
    assert_eq!(ids(&p), range(1, 8));
}

#[test]
fn a_500_that_persists_fails_naming_the_url_and_page_and_publishes_nothing() {
    let api = FakeApi::start(8, Some(KEY));
    api.fault("/page", 2, 100, Fault::Status(500, None));
    let p = project(
        &format!("{}?region=eu", api.url("/page")),
        r#"records = "data", paging = { kind = "page" }, max_retries = 2, retry_delay = "10ms", auth = { kind = "api_key", query = "api_key", value = "${env:SLUICE_IT_API_KEY}" }"#,
    );
    let out = run(&p);
    assert_ne!(out.code, 0);
    let all = format!("{}{}", out.stdout, out.stderr);
    let want = format!(
        "GET {}?region=eu&page=2 (page 2) failed (after 2 retries): HTTP 500 Internal Server Error: slow down or try later; nothing was published",
        api.url("/page")
    );
    assert!(all.contains(&want), "{all}");
    assert!(!all.contains(KEY), "{all}");
    assert_eq!(api.log().iter().filter(|r| r.page == 2).count(), 3);
    assert!(manifests(&p).is_empty(), "a manifest was published: {:?}", manifests(&p));
}

#[test]
fn malformed_json_is_reported_with_its_byte_offset_and_nothing_is_published() {
    let api = FakeApi::start(8, None);
    api.fault("/page", 2, 1, Fault::Malformed);
    let p = project(&api.url("/page"), r#"records = "data", paging = { kind = "page" }"#);
    let out = run(&p);
    assert_ne!(out.code, 0);
    let all = format!("{}{}", out.stdout, out.stderr);
    // `{"id": 5 "name"`: the `"` after 5 is byte 48 (from 0), line 3, column 12.
    let want = format!(
        "GET {}?page=2 (page 2): malformed JSON at byte 48 (line 3, column 12): expected `,` or `}}`",
        api.url("/page")
    );
    assert!(all.contains(&want), "{all}");
    assert!(manifests(&p).is_empty());
}

#[test]
fn a_landed_page_that_is_not_json_fails_the_load_naming_the_object_and_offset() {
    let api = FakeApi::start(2, None);
    let p = project(&api.url("/page"), r#"records = "data""#);
    p.run(&["run", "--step", "api"]).expect_code(0);
    // Damage the landed page in the lake (as a broken disk would).
    let m = manifests(&p);
    let page = std::path::Path::new(&m[0]).parent().unwrap().join("page-00001.json");
    std::fs::write(&page, b"{\"data\": [{\"id\": 1}, {\"id\": 2}").unwrap();
    let out = p.run(&["run"]);
    assert_ne!(out.code, 0);
    let all = format!("{}{}", out.stdout, out.stderr);
    let want = format!("{}: malformed JSON at byte 29 (line 1, column 30): EOF while parsing a list", raw_key(&page));
    assert!(all.contains(&want), "{all}");
}

#[test]
fn incremental_runs_ask_only_for_records_after_the_kept_cursor() {
    let api = FakeApi::start(5, None);
    let p = project(
        &api.url("/page"),
        r#"records = "data", paging = { kind = "page" }, incremental = { param = "since", field = "updated_at", initial = "2025-12-31T00:00:00Z" }"#,
    );
    run(&p).expect_code(0);
    assert_eq!(ids(&p), range(1, 5));
    let since = |r: &Req| r.query.iter().find(|(k, _)| k == "since").map(|(_, v)| v.clone());
    assert!(api.log().iter().all(|r| since(r).as_deref() == Some("2025-12-31T00:00:00Z")));
    // The cursor is in the landing's manifest.
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&manifests(&p)[0]).unwrap()).unwrap();
    assert_eq!(m["cursor"]["incremental"]["value"], json!("2026-01-05T00:00:00Z"));
    assert_eq!(m.get("complete"), Some(&json!(false)));
    // Four new records; the next run asks for what came after the cursor only.
    api.add_records(6, 9);
    let before = api.log().len();
    let out = run(&p);
    out.expect_code(0);
    let second: Vec<Req> = api.log()[before..].to_vec();
    assert!(second.iter().all(|r| since(r).as_deref() == Some("2026-01-05T00:00:00Z")), "{second:?}");
    assert_eq!(second.len(), 3, "pages 1 (3 records), 2 (1 record) and 3 (none), nothing older");
    assert_eq!(ids(&p), range(1, 9));
    // Nothing new: one request, an empty page, nothing landed.
    let before = api.log().len();
    let out = run(&p);
    out.expect_code(0);
    assert_eq!(api.log().len(), before + 1);
    assert_eq!(manifests(&p).len(), 2);
    assert_eq!(ids(&p), range(1, 9));
}

#[test]
fn killed_mid_pagination_then_rerun_lands_everything_exactly_once() {
    let api = FakeApi::start(12, None);
    let p = project(&api.url("/page"), r#"records = "data", paging = { kind = "page" }"#);
    api.hold_from(Some(3));
    let mut run1 = Service::start(p.path(), "run1", &["run"], &[]);
    // Pages 1 and 2 are landed; page 3 is being asked for.
    crate::support::wait_for(120, "page 3 to be requested", || api.state.lock().unwrap().arrived.contains(&3));
    run1.kill9();
    api.hold_from(None);
    assert!(manifests(&p).is_empty(), "the killed run published a manifest");
    run(&p).expect_code(0);
    assert_eq!(ids(&p), range(1, 12));
    assert_eq!(manifests(&p).len(), 1);
    let n: Vec<Vec<String>> = p.query("select count(*), count(distinct id) from items");
    assert_eq!(n, vec![vec!["12", "12"]]);
}

#[test]
fn the_api_key_never_appears_in_output_logs_manifests_or_the_state_store() {
    let api = FakeApi::start(4, Some(KEY));
    for auth in [
        AUTH.to_string(),
        r#"auth = { kind = "api_key", query = "api_key", value = "${env:SLUICE_IT_API_KEY}" }"#.to_string(),
        r#"auth = { kind = "bearer", token = "${file:secrets/token}" }"#.to_string(),
    ] {
        let p = project(&api.url("/page"), &format!(r#"records = "data", paging = {{ kind = "page" }}, {auth}"#));
        p.write("secrets/token", &format!("{KEY}\n"));
        let env = [("SLUICE_IT_API_KEY", KEY), ("SLUICE_LOG", "trace")];
        let mut outputs = Vec::new();
        for args in [&["check"][..], &["dag"], &["run"], &["runs"]] {
            let o = p.run_env(args, &env);
            outputs.push(format!("{args:?}: {}\n{}", o.stdout, o.stderr));
        }
        assert_eq!(ids(&p), range(1, 4), "{outputs:?}");
        // A wrong key: refused, and the error shows neither key.
        api.add_records(100, 100);
        let o = p.run_env(&["run"], &[("SLUICE_IT_API_KEY", "Zq-wrong-Zq"), ("SLUICE_LOG", "trace")]);
        if !auth.contains("bearer") {
            assert_ne!(o.code, 0);
            let all = format!("{}{}", o.stdout, o.stderr);
            assert!(all.contains("HTTP 401 Unauthorized"), "{all}");
            assert!(all.contains("check the API key or token (`http.auth`)"), "{all}");
        }
        outputs.push(format!("{}\n{}", o.stdout, o.stderr));
        for o in &outputs {
            assert!(!o.contains("Zq"), "output shows a key: {o}");
        }
        for f in files_under(p.path()) {
            if f.ends_with("secrets/token") {
                continue;
            }
            let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
            assert!(!text.contains("Zq"), "{f} holds a key");
        }
        api.state.lock().unwrap().records.retain(|r| r["id"] != json!(100));
    }
}

#[test]
fn http_options_are_checked_with_positions() {
    let p = project(
        "https://api.example/v1/x",
        r#"paging = { kind = "pages" }, auth = { kind = "bearer" }, rate_limit = -1, retries = 3"#,
    );
    let out = p.run(&["check"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    for want in [
        "pipelines/p.toml:5:46: a `bearer` auth needs `token`",
        "pipelines/p.toml:5:28: invalid value \"pages\" for `kind`",
        "pipelines/p.toml:5:80: `rate_limit` must be a positive number of requests per second",
        "pipelines/p.toml:5:84: unknown key `retries` in the `http` table",
    ] {
        assert!(all.contains(want), "missing {want}\n{all}");
    }
    assert!(!all.contains("unknown step"), "{all}");
}
