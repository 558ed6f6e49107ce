//! What runs around a dbt project's models, on a copy of
//! `tests/cases/dbt-extras` (never modified): `sluice source freshness` and
//! its `target/sources.json`, `{{ doc() }}` blocks in descriptions,
//! `on-run-start`/`on-run-end`, and tests declared on seeds and snapshots.

use crate::db::{Kind, TestDb};
use crate::support::{Out, TestProject};

per_backend!(
    [sqlite => Sqlite, postgres => Postgres, mariadb => Mysql]
    dbt_source_freshness_judges_each_table,
    dbt_doc_blocks_fill_descriptions,
    dbt_on_run_hooks_run_around_commands,
    dbt_tests_on_seeds_and_snapshots_run_after_them,
);

const CASE: &str = "tests/cases/dbt-extras";

fn sluice(p: &TestProject, db: &TestDb, args: &[&str]) -> Out {
    let (t, var) = match db.kind {
        Kind::Sqlite => ("lite", "EXTRAS_SQLITE"),
        Kind::Postgres => ("pg", "EXTRAS_SCHEMA"),
        Kind::Mysql => ("maria", "EXTRAS_SCHEMA"),
    };
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--target", t]);
    p.run_env(&all, &[(var, db.name.as_str())])
}

fn json(p: &TestProject, rel: &str) -> serde_json::Value {
    serde_json::from_str(&p.read(rel)).unwrap()
}

/// The result sources.json gives a source table.
fn result<'a>(doc: &'a serde_json::Value, table: &str) -> &'a serde_json::Value {
    let id = format!("source.extras.feeds.{table}");
    let r = doc["results"].as_array().unwrap().iter().find(|r| r["unique_id"] == id.as_str());
    r.unwrap_or_else(|| panic!("no {id} in {doc}"))
}

/// `freshness` on a source and its tables (merged as dbt merges them, also
/// under `config:`), `filter`, `loaded_at_field` per table; pass, warn,
/// error and a runtime error; `--select source:…` and `--exclude`.
fn dbt_source_freshness_judges_each_table(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::copy_of(CASE);
    sluice(&p, &db, &["check"]).expect_code(0);
    sluice(&p, &db, &["seed"]).expect_code(0);
    sluice(&p, &db, &["transform"]).expect_code(0);

    let out = sluice(&p, &db, &["source", "freshness"]);
    out.expect_code(1);
    let line = |table: &str| {
        let name = format!(" feeds.{table} ");
        out.stdout.lines().find(|l| l.contains(&name)).unwrap_or_else(|| panic!("{table} in\n{}", out.stdout))
    };
    assert!(line("recent").starts_with("PASS "), "{}", out.stdout);
    assert!(line("recent").contains("warn after 6 hour, error after 1 day"), "{}", out.stdout);
    assert!(line("lagging").starts_with("WARN "), "{}", out.stdout);
    assert!(line("lagging").contains("warn after 12 hour, error after 2 day"), "{}", out.stdout);
    assert!(line("stale").starts_with("ERROR "), "{}", out.stdout);
    assert!(line("old_events").starts_with("ERROR "), "{}", out.stdout);
    assert!(line("old_events").contains("newest 2020-01-03T09:15:00"), "{}", out.stdout);
    assert!(line("missing").starts_with("ERROR ") && line("missing").contains("runtime error"), "{}", out.stdout);
    assert!(!out.stdout.contains("feeds.unwatched"), "{}", out.stdout);
    assert!(out.stdout.contains("PASS=1 WARN=1 ERROR=3 SKIP=0 TOTAL=5"), "{}", out.stdout);

    let doc = json(&p, "target/sources.json");
    assert!(doc["metadata"]["dbt_schema_version"].as_str().unwrap().ends_with("/sources/v3.json"), "{doc}");
    assert!(doc["elapsed_time"].as_f64().is_some(), "{doc}");
    assert_eq!(doc["results"].as_array().unwrap().len(), 5, "{doc}");
    let recent = result(&doc, "recent");
    assert_eq!(recent["status"], "pass");
    let age = recent["max_loaded_at_time_ago_in_s"].as_f64().unwrap();
    assert!((3590.0..6.0 * 3600.0).contains(&age), "{recent}");
    assert_eq!(
        recent["criteria"],
        serde_json::json!({
            "warn_after": {"count": 6, "period": "hour"},
            "error_after": {"count": 1, "period": "day"},
            "filter": "feed = 'recent'"
        })
    );
    assert!(recent["max_loaded_at"].as_str().unwrap().ends_with("+00:00"), "{recent}");
    assert!(recent["snapshotted_at"].as_str().unwrap() > recent["max_loaded_at"].as_str().unwrap(), "{recent}");
    assert_eq!(recent["timing"][1]["name"], "execute");
    let lagging = result(&doc, "lagging");
    assert_eq!(lagging["status"], "warn");
    let age = lagging["max_loaded_at_time_ago_in_s"].as_f64().unwrap();
    assert!((30.0 * 3600.0 - 10.0..48.0 * 3600.0).contains(&age), "{lagging}");
    assert_eq!(lagging["criteria"]["error_after"], serde_json::json!({"count": 2, "period": "day"}));
    assert_eq!(result(&doc, "stale")["status"], "error");
    assert_eq!(result(&doc, "stale")["criteria"]["filter"], "feed = 'lagging'");
    let old = result(&doc, "old_events");
    assert_eq!(old["status"], "error");
    assert!(old["max_loaded_at"].as_str().unwrap().starts_with("2020-01-03T09:15:00"), "{old}");
    let missing = result(&doc, "missing");
    assert_eq!(missing["status"], "runtime error");
    assert!(missing["error"].as_str().unwrap().contains("no_such_table"), "{missing}");

    // One table; a whole source less some tables; --output elsewhere.
    let out = sluice(&p, &db, &["source", "freshness", "--select", "source:feeds.recent"]);
    out.expect_code(0);
    assert!(out.stdout.contains("PASS=1 WARN=0 ERROR=0 SKIP=0 TOTAL=1"), "{}", out.stdout);
    assert_eq!(json(&p, "target/sources.json")["results"].as_array().unwrap().len(), 1);
    let out = sluice(
        &p,
        &db,
        &[
            "source",
            "freshness",
            "-s",
            "source:feeds",
            "--exclude",
            "source:feeds.stale",
            "source:feeds.old_events",
            "source:feeds.missing",
            "-o",
            "out/fresh.json",
        ],
    );
    out.expect_code(0);
    assert!(out.stdout.contains("PASS=1 WARN=1 ERROR=0 SKIP=0 TOTAL=2"), "{}", out.stdout);
    assert_eq!(json(&p, "out/fresh.json")["results"].as_array().unwrap().len(), 2);

    // Selectors that name no source table are refused with the choices.
    let out = sluice(&p, &db, &["source", "freshness", "--select", "loads"]);
    out.expect_code(2);
    assert!(out.stderr.contains("`loads` does not name a source: select sources with source:NAME"), "{}", out.stderr);
    let out = sluice(&p, &db, &["source", "freshness", "--select", "source:feeds.recnt"]);
    out.expect_code(2);
    assert!(out.stderr.contains("source `feeds` has no table `recnt`"), "{}", out.stderr);
    assert!(out.stderr.contains("`recent`"), "{}", out.stderr);
    let case = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CASE);
    assert!(!case.join("target").exists() && !case.join("extras.db").exists());
}

/// `{{ doc('name') }}` in model, column, seed and source descriptions, from the
/// `{% docs %}` blocks of `models/docs.md`: in manifest.json and the docs site.
fn dbt_doc_blocks_fill_descriptions(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::copy_of(CASE);
    sluice(&p, &db, &["seed"]).expect_code(0);
    let m = json(&p, "target/manifest.json");
    let loads = &m["nodes"]["model.extras.loads"];
    assert_eq!(loads["description"], "What the loader wrote: one row per feed, with when it last loaded.");
    assert_eq!(
        loads["columns"]["loaded_at"]["description"],
        "When the feed's newest rows arrived (the warehouse's clock). Used by the source freshness checks."
    );
    assert_eq!(loads["columns"]["feed"]["description"], "The feed's name.");
    let events = &m["nodes"]["seed.extras.events"];
    assert_eq!(events["description"], "Events from the app, as exported in 2020.");
    assert_eq!(events["columns"]["event_id"]["description"], "One per event.");
    assert_eq!(
        m["docs"]["doc.extras.loaded_at"]["block_contents"],
        "When the feed's newest rows arrived (the warehouse's clock)."
    );
    assert_eq!(m["nodes"]["snapshot.extras.loads_snapshot"]["description"], "Each feed's load times as they changed.");
    let recent = &m["sources"]["source.extras.feeds.recent"];
    assert_eq!(recent["description"], "The feed that arrives every hour.");
    assert_eq!(recent["source_description"], "What the loader wrote: one row per feed, with when it last loaded.");

    sluice(&p, &db, &["docs"]).expect_code(0);
    let page = p.read("target/docs/nodes/model.extras.loads.html");
    assert!(page.contains("What the loader wrote: one row per feed"), "{page}");
    assert!(page.contains("When the feed&#39;s newest rows arrived"), "{page}");
    assert!(!page.contains("doc("), "{page}");
    let page = p.read("target/docs/nodes/source.extras.feeds.recent.html");
    assert!(page.contains("The feed that arrives every hour."), "{page}");
    let index = p.read("target/docs/index.html");
    assert!(index.contains("Feeds, their freshness, and the app&#39;s events."), "{index}");
    assert!(index.contains("Events from the app, as exported in 2020."), "{index}");
}

/// An unknown doc name, a doc block defined twice and one left open are
/// errors at their file:line:col.
#[test]
fn dbt_doc_block_mistakes_are_placed() {
    let p = TestProject::copy_of(CASE);
    let schema = p.read("models/schema.yml").replace("doc(\"loaded_at\")", "doc(\"loaded_on\")");
    p.write("models/schema.yml", &schema);
    p.write("models/more.md", "{% docs loads %}\nagain\n{% enddocs %}\n\n{% docs open %}\nno end\n");
    let out = p.run(&["check"]);
    out.expect_code(2);
    for line in [
        "models/schema.yml:9:23: unknown doc `loaded_on` in {{ doc() }}",
        "did you mean `loaded_at`?",
        "models/more.md:5:1: doc block `open` has no {% enddocs %}",
    ] {
        assert!(out.stdout.contains(line), "missing `{line}` in\n{}", out.stdout);
    }
    let q = TestProject::copy_of(CASE);
    q.write("models/more.md", "{% docs loads %}\nagain\n{% enddocs %}\n");
    let out = q.run(&["check"]);
    out.expect_code(2);
    assert!(out.stdout.contains("models/more.md:1:1: doc `loads` is defined twice"), "{}", out.stdout);
}

/// `on-run-start` (a list: a statement and a macro call with `target`) and
/// `on-run-end` (with `results`, and `run_query()`) around seed, transform, snapshot, test,
/// build and source freshness; their results in run_results.json; a failing
/// `on-run-start` skips the nodes, `on-run-end` still runs, the command fails.
fn dbt_on_run_hooks_run_around_commands(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::copy_of(CASE);
    let log = |db: &TestDb| db.rows("SELECT event, detail FROM run_log");
    let target = match kind {
        Kind::Sqlite => "lite",
        Kind::Postgres => "pg",
        Kind::Mysql => "maria",
    };
    let out = sluice(&p, &db, &["seed"]);
    out.expect_code(0);
    assert!(out.stdout.contains("extras-on-run-start-1"), "{}", out.stdout);
    // The second on-run-end hook counts the log's rows with run_query().
    assert_eq!(log(&db), vec![vec!["start", target], vec!["end", "1"], vec!["logged", "2"]]);
    let rr = json(&p, "target/run_results.json");
    let ids: Vec<&str> = rr["results"].as_array().unwrap().iter().map(|r| r["unique_id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "operation.extras.extras-on-run-start-0",
            "operation.extras.extras-on-run-start-1",
            "seed.extras.events",
            "operation.extras.extras-on-run-end-0",
            "operation.extras.extras-on-run-end-1"
        ]
    );
    assert!(rr["results"][1]["message"].as_str().unwrap().contains(&format!("values ('start', '{target}')")), "{rr}");

    sluice(&p, &db, &["transform"]).expect_code(0);
    sluice(&p, &db, &["snapshot"]).expect_code(0);
    sluice(&p, &db, &["test"]).expect_code(0);
    sluice(&p, &db, &["source", "freshness", "--select", "source:feeds.recent"]).expect_code(0);
    let ends: Vec<String> = log(&db).into_iter().filter(|r| r[0] == "end").map(|r| r[1].clone()).collect();
    // seed: 1 seed; transform: 2 models; snapshot: 1; test: 5 tests; freshness: 1 table.
    assert_eq!(ends, ["1", "2", "1", "5", "1"]);
    assert_eq!(log(&db).iter().filter(|r| r[0] == "start").count(), 5);

    // A failing on-run-start: no node runs, on-run-end does, the command fails.
    let q = TestProject::copy_of(CASE);
    let project = q.read("dbt_project.yml").replace(
        "  - \"{{ log_event('start', target.name) }}\"\n",
        "  - \"{{ log_event('start', target.name) }}\"\n  - \"insert into no_such_table values (1)\"\n",
    );
    q.write("dbt_project.yml", &project);
    let db2 = TestDb::new(kind);
    let out = sluice(&q, &db2, &["build"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("extras-on-run-start-2"), "{}", out.stdout);
    assert!(out.stdout.contains("skipping every node: an on-run-start hook failed"), "{}", out.stdout);
    assert!(out.stdout.contains("no_such_table"), "{}", out.stdout);
    // No node ran, so on-run-end's `results` is empty.
    assert_eq!(log(&db2), vec![vec!["start", target], vec!["end", "0"], vec!["logged", "2"]]);
    let rr = json(&q, "target/run_results.json");
    assert_eq!(rr["results"][2]["status"], "error");
    assert!(!out.stdout.contains("events "), "{}", out.stdout);
    let tables = match kind {
        Kind::Sqlite => "SELECT count(*) FROM sqlite_master WHERE name = 'loads'".to_string(),
        _ => format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{}' AND table_name = 'loads'",
            db2.name
        ),
    };
    assert_eq!(db2.rows(&tables), vec![vec!["0"]]);
}

/// Tests declared on a seed's and a snapshot's columns run with `sluice test`
/// and, in `sluice build`, right after their node; a failing one skips what
/// depends on the seed.
fn dbt_tests_on_seeds_and_snapshots_run_after_them(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::copy_of(CASE);
    let out = sluice(&p, &db, &["build"]);
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let at = |what: &str| {
        lines.iter().position(|l| l.starts_with(what)).unwrap_or_else(|| panic!("{what} in\n{}", out.stdout))
    };
    assert!(at("events ") < at("PASS  unique_events_event_id"));
    assert!(at("PASS  accepted_values_events_kind__signup__login") < at("event_counts "));
    assert!(at("loads_snapshot ") < at("PASS  not_null_loads_snapshot_feed"));
    assert!(at("loads_snapshot ") < at("PASS  accepted_values_loads_snapshot_feed__recent__lagging"));
    // 1 seed, 2 models, 1 snapshot, 5 tests.
    assert!(out.stdout.contains("PASS=9 WARN=0 ERROR=0 SKIP=0 TOTAL=9"), "{}", out.stdout);
    let m = json(&p, "target/manifest.json");
    let t = &m["nodes"]["test.extras.not_null_loads_snapshot_feed"];
    assert_eq!(t["depends_on"]["nodes"], serde_json::json!(["snapshot.extras.loads_snapshot"]));
    assert_eq!(t["column_name"], "feed");

    // `sluice test` on the seed alone runs its three tests.
    let out = sluice(&p, &db, &["test", "--select", "events"]);
    out.expect_code(0);
    assert!(out.stdout.contains("tests: 3 passed, 0 warned, 0 failed"), "{}", out.stdout);

    // A bad row in the seed: its test fails and the model reading it is skipped.
    let q = TestProject::copy_of(CASE);
    let csv = q.read("seeds/events.csv") + "4,logout,2020-01-04 08:00:00\n";
    q.write("seeds/events.csv", &csv);
    let db2 = TestDb::new(kind);
    let out = sluice(&q, &db2, &["build"]);
    out.expect_code(3);
    assert!(out.stdout.contains("FAIL  accepted_values_events_kind__signup__login"), "{}", out.stdout);
    assert!(
        out.stdout.lines().any(|l| l.starts_with("event_counts ") && l.ends_with("SKIP    (upstream `events` failed)")),
        "{}",
        out.stdout
    );
    let out = sluice(&q, &db2, &["test", "--select", "events"]);
    out.expect_code(3);
    assert!(out.stdout.contains("tests: 2 passed, 0 warned, 1 failed"), "{}", out.stdout);
}

/// `source:NAME+` in the other commands' selectors: what reads the source
/// and what depends on that (`sluice ls` on a copy of the jaffle case).
#[test]
fn dbt_source_selectors_pick_what_reads_a_source() {
    let p = TestProject::copy_of("tests/cases/dbt-jaffle");
    let out = p.run(&["ls", "--select", "source:shop+", "--resource-type", "model", "--output", "name"]);
    out.expect_code(0);
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ["stg_payments", "customers", "orders"]);
    let out = p.run(&["ls", "--select", "source:shop.payments+1", "--output", "name"]);
    out.expect_code(0);
    assert_eq!(out.stdout.lines().next(), Some("stg_payments"));
    assert!(
        out.stdout.contains("unique_stg_payments_payment_id") && !out.stdout.contains("customers"),
        "{}",
        out.stdout
    );
    let out = p.run(&["ls", "--select", "source:shop.orders+"]);
    out.expect_code(2);
    assert!(out.stderr.contains("no model, seed or snapshot reads source `shop.orders`"), "{}", out.stderr);
}
