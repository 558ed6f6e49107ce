//! `sluice build`, `sluice ls`, dbt's selectors and the artifacts
//! (`target/manifest.json`, `target/run_results.json`) on a copy of
//! `tests/cases/dbt-jaffle`; the case folder itself is never modified.

use crate::db::{Kind, TestDb};
use crate::support::{Out, TestProject};

per_backend!(
    [sqlite => Sqlite, postgres => Postgres, mariadb => Mysql]
    dbt_build_runs_nodes_and_tests_in_dag_order,
    dbt_build_failing_test_skips_children,
);

const CASE: &str = "tests/cases/dbt-jaffle";

fn sluice(p: &TestProject, db: &TestDb, args: &[&str]) -> Out {
    let (t, env) = match db.kind {
        Kind::Sqlite => ("lite", ("JAFFLE_SQLITE", db.name.clone())),
        Kind::Postgres => ("pg", ("JAFFLE_SCHEMA", db.name.clone())),
        Kind::Mysql => ("maria", ("JAFFLE_SCHEMA", db.name.clone())),
    };
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--target", t]);
    p.run_env(&all, &[(env.0, env.1.as_str())])
}

fn json(p: &TestProject, rel: &str) -> serde_json::Value {
    serde_json::from_str(&p.read(rel)).unwrap()
}

/// The status run_results.json gives a node.
fn status(rr: &serde_json::Value, id: &str) -> String {
    let r = rr["results"].as_array().unwrap().iter().find(|r| r["unique_id"] == id);
    r.unwrap_or_else(|| panic!("no {id} in {rr}"))["status"].as_str().unwrap().to_string()
}

fn dbt_build_runs_nodes_and_tests_in_dag_order(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::copy_of(CASE);
    let out = sluice(&p, &db, &["build"]);
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let at = |what: &str| {
        lines.iter().position(|l| l.starts_with(what)).unwrap_or_else(|| panic!("{what} in\n{}", out.stdout))
    };
    // Seeds before the models reading them; a model's tests right after it, before its children.
    assert!(at("raw_orders ") < at("stg_orders "));
    assert!(at("stg_orders ") < at("PASS  unique_stg_orders_order_id"));
    assert!(at("PASS  unique_stg_orders_order_id") < at("customers "));
    assert!(at("customers ") < at("PASS  unique_customers_customer_id"));
    assert!(at("PASS  unique_customers_customer_id") < at("orders "));
    assert!(at("orders ") < at("PASS  assert_order_amounts_are_not_negative"));
    assert!(at("stg_orders ") < at("orders_snapshot "));
    // 3 seeds, 5 models, 1 snapshot and 17 tests.
    assert!(out.stdout.contains("PASS=26 WARN=0 ERROR=0 SKIP=0 TOTAL=26"), "{}", out.stdout);
    assert_eq!(db.count("customers"), 5);
    let snapshots = db.custom_schema("snapshots");
    assert_eq!(
        db.rows_with_schemas(&[&snapshots], &format!("SELECT COUNT(*) FROM {snapshots}.orders_snapshot")),
        vec![vec!["8"]]
    );

    // The artifacts, in the shape dbt's readers expect.
    let m = json(&p, "target/manifest.json");
    assert_eq!(m["metadata"]["project_name"], "jaffle_shop");
    assert!(m["metadata"]["dbt_schema_version"].as_str().unwrap().contains("manifest/v12"));
    let orders = &m["nodes"]["model.jaffle_shop.stg_orders"];
    assert_eq!(orders["resource_type"], "model");
    assert_eq!(orders["config"]["materialized"], "view");
    assert_eq!(orders["original_file_path"], "models/staging/stg_orders.sql");
    assert_eq!(orders["fqn"], serde_json::json!(["jaffle_shop", "staging", "stg_orders"]));
    assert_eq!(orders["depends_on"]["nodes"], serde_json::json!(["seed.jaffle_shop.raw_orders"]));
    assert!(orders["raw_code"].as_str().unwrap().contains("{{ ref('raw_orders') }}"), "{orders}");
    let c = &m["nodes"]["model.jaffle_shop.customers"];
    assert_eq!(c["config"]["materialized"], "table");
    assert!(c["description"].as_str().unwrap().starts_with("This table has basic information about a customer"));
    assert_eq!(c["columns"]["customer_id"]["description"], "This is a unique identifier for a customer");
    let mut deps: Vec<&str> =
        c["depends_on"]["nodes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    deps.sort();
    assert_eq!(
        deps,
        ["model.jaffle_shop.stg_customers", "model.jaffle_shop.stg_orders", "model.jaffle_shop.stg_payments"]
    );
    let t = &m["nodes"]["test.jaffle_shop.unique_customers_customer_id"];
    assert_eq!(t["resource_type"], "test");
    assert_eq!(t["depends_on"]["nodes"], serde_json::json!(["model.jaffle_shop.customers"]));
    assert_eq!(m["nodes"]["snapshot.jaffle_shop.orders_snapshot"]["resource_type"], "snapshot");
    assert_eq!(m["nodes"]["seed.jaffle_shop.raw_orders"]["resource_type"], "seed");
    // source() calls are edges to the manifest's sources.
    assert_eq!(
        m["nodes"]["model.jaffle_shop.stg_payments"]["depends_on"]["nodes"],
        serde_json::json!(["source.jaffle_shop.shop.payments"])
    );
    let src = &m["sources"]["source.jaffle_shop.shop.payments"];
    assert_eq!(src["identifier"], "raw_payments");
    assert_eq!(src["original_file_path"], "models/staging/sources.yml");

    let rr = json(&p, "target/run_results.json");
    assert!(rr["metadata"]["dbt_schema_version"].as_str().unwrap().contains("run-results/v6"));
    assert_eq!(rr["metadata"]["invocation_id"], m["metadata"]["invocation_id"]);
    assert_eq!(rr["results"].as_array().unwrap().len(), 26);
    assert_eq!(status(&rr, "model.jaffle_shop.customers"), "success");
    assert_eq!(status(&rr, "test.jaffle_shop.unique_customers_customer_id"), "pass");
    let first = &rr["results"][0];
    assert!(first["execution_time"].as_f64().is_some(), "{first}");
    assert_eq!(first["timing"][1]["name"], "execute");
    assert!(first["timing"][1]["completed_at"].as_str().unwrap().ends_with('Z'));

    // Selection: a model and what it depends on, one level up; --exclude.
    let out = sluice(&p, &db, &["build", "--select", "1+customers", "--exclude", "stg_payments"]);
    out.expect_code(0);
    assert!(out.stdout.contains("PASS=10 WARN=0 ERROR=0 SKIP=0 TOTAL=10"), "{}", out.stdout);
    assert!(!out.stdout.contains("stg_payments "), "{}", out.stdout);

    // transform and test write the same artifacts.
    sluice(&p, &db, &["transform", "--select", "orders", "--full-refresh"]).expect_code(0);
    let rr = json(&p, "target/run_results.json");
    assert_eq!(rr["args"]["which"], "transform");
    assert_eq!(status(&rr, "model.jaffle_shop.orders"), "success");
    sluice(&p, &db, &["test", "--select", "test_type:singular"]).expect_code(0);
    let rr = json(&p, "target/run_results.json");
    assert_eq!(rr["results"].as_array().unwrap().len(), 1);
    assert_eq!(status(&rr, "test.jaffle_shop.assert_order_amounts_are_not_negative"), "pass");
    assert_eq!(rr["results"][0]["failures"], 0);
}

/// A failing (error-severity) test skips what depends on its model, as `dbt build` does.
fn dbt_build_failing_test_skips_children(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::copy_of(CASE);
    p.write("tests/no_orders_of_customer_1.sql", "select * from {{ ref('stg_orders') }} where customer_id = 1\n");
    // A warn-severity test fails without skipping anything.
    p.write(
        "tests/no_customer_2.sql",
        "{{ config(severity='warn') }}\nselect * from {{ ref('stg_customers') }} where customer_id = 2\n",
    );
    let out = sluice(&p, &db, &["build"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("FAIL  no_orders_of_customer_1"), "{}", out.stdout);
    // In a test, config(severity=…) is no warning; in a model it is (below).
    assert!(!out.stderr.contains("severity"), "{}", out.stderr);
    assert!(
        out.stdout.contains("customers                    SKIP    (upstream `stg_orders` failed)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("orders_snapshot              SKIP    (upstream `stg_orders` failed)"),
        "{}",
        out.stdout
    );
    // 3 seeds, 3 staging models and their 8 tests pass; customers, orders,
    // the snapshot and their 9 tests are skipped.
    assert!(out.stdout.contains("PASS=14 WARN=1 ERROR=1 SKIP=12 TOTAL=28"), "{}", out.stdout);
    assert_eq!(db.count("stg_payments"), 9);
    let rr = json(&p, "target/run_results.json");
    assert_eq!(status(&rr, "test.jaffle_shop.no_orders_of_customer_1"), "fail");
    let failed =
        rr["results"].as_array().unwrap().iter().find(|r| r["unique_id"] == "test.jaffle_shop.no_orders_of_customer_1");
    assert_eq!(failed.unwrap()["failures"], 3);
    assert_eq!(status(&rr, "model.jaffle_shop.customers"), "skipped");
    assert_eq!(status(&rr, "test.jaffle_shop.unique_orders_order_id"), "skipped");
    assert_eq!(status(&rr, "test.jaffle_shop.no_customer_2"), "warn");

    // Without the failing test (excluded by its name) everything is built; the warning stays.
    let out = sluice(&p, &db, &["build", "--exclude", "no_orders_of_customer_1"]);
    out.expect_code(0);
    assert!(out.stdout.contains("WARN  no_customer_2"), "{}", out.stdout);
    assert!(out.stdout.contains("PASS=26 WARN=1 ERROR=0 SKIP=0 TOTAL=27"), "{}", out.stdout);

    // A model's SQL error: an ERROR; its 3 tests, customers, orders and their 9 tests skipped; exit 2.
    p.write("models/staging/stg_payments.sql", "select no_such_column from {{ ref('raw_orders') }}\n");
    let out = sluice(&p, &db, &["build", "--exclude", "no_orders_of_customer_1", "--select", "stg_payments+"]);
    out.expect_code(2);
    assert!(out.stdout.contains("stg_payments                 ERROR"), "{}", out.stdout);
    assert!(
        out.stdout.contains("customers                    SKIP    (upstream `stg_payments` failed)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("PASS=0 WARN=0 ERROR=1 SKIP=14 TOTAL=15"), "{}", out.stdout);

    // --fail-fast: everything after the first failure is skipped.
    let out = sluice(&p, &db, &["build", "--fail-fast"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("stg_payments                 SKIP    (--fail-fast"), "{}", out.stdout);
}

/// `sluice ls` lists what a selection names, without connecting.
#[test]
fn dbt_ls_lists_selections() {
    let p = TestProject::copy_of(CASE);
    let ls = |args: &[&str]| {
        let mut all = vec!["ls"];
        all.extend(args);
        let out = p.run(&all);
        out.expect_code(0);
        out.stdout.lines().map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(ls(&["--resource-type", "model", "seed"]).len(), 8);
    assert_eq!(ls(&["--select", "stg_orders", "--resource-type", "model"]), ["jaffle_shop.staging.stg_orders"]);
    assert_eq!(
        ls(&["--select", "1+customers", "--resource-type", "model", "--output", "name"]),
        ["stg_customers", "stg_orders", "stg_payments", "customers"]
    );
    assert_eq!(
        ls(&["--select", "stg_orders+1", "--resource-type", "model", "snapshot", "-o", "name"]),
        ["stg_orders", "customers", "orders", "orders_snapshot"]
    );
    // stg_payments reads raw_payments through source(), which is no node.
    assert_eq!(ls(&["-s", "@stg_customers", "--resource-type", "seed", "-o", "name"]), ["raw_customers", "raw_orders"]);
    assert_eq!(
        ls(&["-s", "config.materialized:view", "--resource-type", "model", "-o", "name"]),
        ["stg_customers", "stg_orders", "stg_payments"]
    );
    assert_eq!(ls(&["-s", "test_type:singular", "-o", "path"]), ["tests/assert_order_amounts_are_not_negative.sql"]);
    assert_eq!(ls(&["-s", "test_type:generic", "-o", "name"]).len(), 16);
    assert_eq!(
        ls(&["-s", "customers,test_type:generic", "-o", "name"]),
        ["unique_customers_customer_id", "not_null_customers_customer_id"]
    );
    let one = ls(&["-s", "unique_customers_customer_id", "-o", "json"]);
    assert_eq!(one.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&one[0]).unwrap();
    assert_eq!(v["unique_id"], "test.jaffle_shop.unique_customers_customer_id");
    assert_eq!(v["attached_node"], "model.jaffle_shop.customers");
    let j = ls(&["-s", "orders", "--resource-type", "model", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&j[0]).unwrap();
    assert_eq!(v["unique_id"], "model.jaffle_shop.orders");
    assert_eq!(v["config"]["materialized"], "table");
    assert_eq!(v["original_file_path"], "models/orders.sql");
    // config(severity=…) does nothing on a model: check says so.
    let model = p.read("models/customers.sql");
    p.write("models/customers.sql", &format!("{{{{ config(severity='warn') }}}}\n{model}"));
    let out = p.run(&["check"]);
    out.expect_code(0);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(
            "models/customers.sql: warning: config(severity='warn') applies to tests only; it has no effect here"
        ),
        "{text}"
    );
    // The case folder holds nothing the runs wrote.
    let case = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CASE);
    assert!(!case.join("target").exists());
}
