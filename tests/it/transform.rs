//! The transform layer on SQLite, PostgreSQL and MariaDB: the same projects,
//! the same exported bytes. Models (views, tables with contracts, ephemeral,
//! incremental with merges and schema changes), seeds, snapshots, data tests,
//! selection, and the clean step against values computed by hand.

use crate::db::{Kind, TestDb};
use crate::support::{TestProject, run_in};

per_backend!(
    [sqlite => Sqlite, postgres => Postgres, mariadb => Mysql]
    clean_matches_values_computed_by_hand,
    incremental_models_merge_and_follow_schema_changes,
    snapshots_keep_history,
    data_tests_report_failing_rows,
    airflow_sales_gives_the_same_bytes_everywhere,
    views_follow_column_changes,
    parallel_rebuilds_keep_shared_views,
    sql_errors_point_at_the_models_line,
    a_view_over_a_missing_table_fails_its_build,
    exports_write_decimals_with_the_declared_scale,
);

/// A project whose warehouse is the test database.
fn project_on(db: &TestDb) -> TestProject {
    let p = TestProject::new();
    p.write("sluice.toml", &format!("name = \"t\"\n[connections.w]\nurl = \"{}\"\n", db.url()));
    p
}

const READINGS: &str = "id,city,reading_at,temp,hum,pressure
1, Helsinki ,2026-01-01 00:00:00,10.0,50,1000
2,helsinki,2026-01-01 01:00:00,11.0,52,1001
3,TURKU,2026-01-01 02:00:00,12.0,49,abc
4,Turku,2026-01-01 03:00:00,13.0,51,1002
5,N/A,2026-01-01 04:00:00,14.0,50,999
6,Oulu,2026-01-01 05:00:00,95.0,48,1003
x7,Oulu,2026-01-01 06:00:00,10.5,50,1000
2,Helsinki,2026-01-01 07:00:00,11.5,56,1004
8,Espoo,2026-01-01 08:00:00,12.5,50,850
9,Espoo,2026-01-01 09:00:00,-,50,1000
";

fn clean_matches_values_computed_by_hand(kind: Kind) {
    let db = TestDb::new(kind);
    let p = project_on(&db);
    p.write("data/readings.csv", READINGS);
    p.write(
        "pipelines/p.toml",
        r#"[[steps]]
name = "land"
kind = "ingest"
source = "data/readings.csv"
[[steps]]
name = "load_raw"
kind = "load"
from = "land"
table = "raw_readings"
mode = "replace"
columns = { id = "varchar(8)", city = "varchar(32)", reading_at = "varchar(32)", temp = "varchar(8)", hum = "varchar(8)", pressure = "varchar(8)" }
[[steps]]
name = "clean"
kind = "clean"
depends_on = ["load_raw"]
table = "raw_readings"
output = "readings"
dedup = { key = "id", keep = "last", order_by = "reading_at" }
export = "output"
[steps.columns]
id = { type = "integer", on_invalid = "reject" }
city = { case = "lower" }
temp = { type = "decimal(5,2)", outliers = { method = "iqr", k = 1.5 } }
hum = { type = "float", outliers = { method = "zscore", threshold = 2.0 } }
pressure = { type = "integer", on_invalid = "null", outliers = { method = "bounds", min = 900, max = 1100 } }
"#,
    );
    let out = p.run(&["run"]);
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("cleaned 10 rows into readings (5 removed: 1 invalid, 1 duplicate, 3 outlier); quality 93.0/100"),
        "{}",
        out.stdout
    );
    // By hand: id x7 is not an integer (rejected); id 2 twice, the 07:00 reading
    // kept; temp quartiles 11.75 and 13.5 → IQR bounds [9.125, 16.125] drop 95.0;
    // hum mean 50.5, sample sd 2.3905 → z > 2 drops 56; pressure 850 < 900.
    assert_eq!(
        p.read("output/cleaned_data.csv"),
        "id,city,reading_at,temp,hum,pressure
1,helsinki,2026-01-01 00:00:00,10.00,50.0,1000
3,turku,2026-01-01 02:00:00,12.00,49.0,
4,turku,2026-01-01 03:00:00,13.00,51.0,1002
5,,2026-01-01 04:00:00,14.00,50.0,999
9,espoo,2026-01-01 09:00:00,,50.0,1000
"
    );
    assert_eq!(
        db.rows("select id, removed_by from readings_outliers order by id"),
        vec![
            vec!["2", "zscore(>2) on hum"],
            vec!["6", "iqr(k=1.5) on temp"],
            vec!["8", "bounds(900..1100) on pressure"]
        ]
    );
    assert_eq!(
        db.rows("select source_row, column_name, value, error from readings_rejects"),
        vec![vec!["7", "id", "x7", "is not an integer"]]
    );
    let summary: serde_json::Value = serde_json::from_str(&p.read("output/summary_report.json")).unwrap();
    assert_eq!(summary["rows_in"], 10);
    assert_eq!(summary["rows_out"], 5);
    assert_eq!(summary["removed"]["duplicates"], 1);
    assert_eq!(summary["removed"]["invalid_type"], 1);
    assert_eq!(summary["values_set_to_null"], 1);
    // Quality by hand: completeness = present / 10; validity = (present − bad
    // type − outliers) / present; column score = 100·(c+v)/2; table score =
    // 100·(0.4·mean c + 0.4·mean v + 0.2·(8 kept / 9 staged)) = 93.04.
    let q: serde_json::Value = serde_json::from_str(&p.read("output/quality_metrics.json")).unwrap();
    assert_eq!(q["score"], 93.04);
    let scores: Vec<(String, f64, f64, f64)> = q["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["column"].as_str().unwrap().to_string(),
                c["completeness"].as_f64().unwrap(),
                c["validity"].as_f64().unwrap(),
                c["score"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        scores,
        vec![
            ("id".to_string(), 1.0, 0.9, 95.0),
            ("city".to_string(), 0.9, 1.0, 95.0),
            ("reading_at".to_string(), 1.0, 1.0, 100.0),
            ("temp".to_string(), 0.9, 0.8889, 89.44),
            ("hum".to_string(), 1.0, 0.9, 95.0),
            ("pressure".to_string(), 1.0, 0.8, 90.0),
        ]
    );
    assert_eq!(p.read("output/raw_data.csv").lines().count(), 11);
    // Each run is kept: the dashboard charts quality over time.
    p.run(&["run"]).expect_code(0);
    assert_eq!(db.rows("select count(*) from _sluice_quality where column_name = ''"), vec![vec!["2"]]);
}

const CUSTOMERS_1: &str =
    "customer_id,name,tier,updated_at\n1,Ann,gold,2026-01-01 00:00:00\n2,Bob,silver,2026-01-01 00:00:00\n";
const CUSTOMERS_2: &str = "customer_id,name,tier,updated_at\n1,Ann,platinum,2026-01-02 00:00:00\n2,Bob,silver,2026-01-01 00:00:00\n3,Cy,gold,2026-01-02 00:00:00\n";

fn incremental_models_merge_and_follow_schema_changes(kind: Kind) {
    let db = TestDb::new(kind);
    let p = project_on(&db);
    p.write("seeds/customers.csv", CUSTOMERS_1);
    p.write(
        "models/schema.toml",
        "[seeds.customers.columns]\ncustomer_id = \"integer not null\"\nname = \"varchar(20)\"\ntier = \"varchar(10)\"\nupdated_at = \"timestamp\"\n",
    );
    p.write(
        "models/dim_customers.sql",
        "{{ config(materialized='incremental', unique_key='customer_id', on_schema_change='append_new_columns') }}\n\
         select customer_id, name, tier, updated_at from {{ ref('customers') }}\n\
         {% if is_incremental() %}where updated_at > (select max(updated_at) from {{ this }}){% endif %}\n",
    );
    p.write(
        "models/events.sql",
        "{{ config(materialized='incremental') }}\nselect customer_id, tier from {{ ref('customers') }}\n",
    );
    let url = db.url();
    let export = |sql: &str| {
        let o = run_in(p.path(), &["export", &url, "--query", sql], &[]);
        o.expect_code(0);
        o.stdout
    };
    p.run(&["seed"]).expect_code(0);
    let out = p.run(&["transform"]);
    out.expect_code(0);
    assert!(out.stdout.contains("dim_customers"), "{}", out.stdout);
    assert!(out.stdout.contains("incremental, first build"), "{}", out.stdout);
    // New data: a changed row and a new one are merged on the key.
    p.write("seeds/customers.csv", CUSTOMERS_2);
    p.run(&["seed"]).expect_code(0);
    let out = p.run(&["transform", "--select", "dim_customers"]);
    out.expect_code(0);
    assert!(out.stdout.contains("incremental, merged new rows"), "{}", out.stdout);
    assert_eq!(
        export("select customer_id, name, tier from dim_customers order by customer_id"),
        "customer_id\tname\ttier\n1\tAnn\tplatinum\n2\tBob\tsilver\n3\tCy\tgold\n"
    );
    // Without a key, new rows are appended.
    p.run(&["transform", "--select", "events"]).expect_code(0);
    assert_eq!(db.count("events"), 5);
    // A new column is added to the table (append_new_columns).
    p.write(
        "models/dim_customers.sql",
        "{{ config(materialized='incremental', unique_key='customer_id', on_schema_change='append_new_columns') }}\n\
         select customer_id, name, tier, updated_at, upper(tier) as tier_code from {{ ref('customers') }}\n\
         {% if is_incremental() %}where updated_at >= (select max(updated_at) from {{ this }}){% endif %}\n",
    );
    let out = p.run(&["transform", "--select", "dim_customers"]);
    out.expect_code(0);
    assert!(out.stdout.contains("added `tier_code`"), "{}", out.stdout);
    assert_eq!(
        export("select customer_id, tier_code from dim_customers order by customer_id"),
        "customer_id\ttier_code\n1\tPLATINUM\n2\t\n3\tGOLD\n"
    );
    // --full-refresh rebuilds it whole.
    let out = p.run(&["transform", "--select", "dim_customers", "--full-refresh"]);
    out.expect_code(0);
    assert_eq!(export("select count(*) as n from dim_customers where tier_code is null"), "n\n0\n");
    // on_schema_change = "fail" stops with the difference.
    p.write(
        "models/dim_customers.sql",
        "{{ config(materialized='incremental', unique_key='customer_id', on_schema_change='fail') }}\nselect customer_id, name from {{ ref('customers') }}\n",
    );
    let out = p.run(&["transform", "--select", "dim_customers"]);
    out.expect_code(2);
    assert!(out.stdout.contains("the query's columns differ from table `dim_customers` (on_schema_change = \"fail\"); gone: `tier`, `updated_at`, `tier_code`"), "{}", out.stdout);
}

fn snapshots_keep_history(kind: Kind) {
    let db = TestDb::new(kind);
    let p = project_on(&db);
    p.write("seeds/customers.csv", CUSTOMERS_1);
    p.write(
        "models/schema.toml",
        "[seeds.customers.columns]\ncustomer_id = \"integer not null\"\nname = \"varchar(20)\"\ntier = \"varchar(10)\"\nupdated_at = \"timestamp\"\n",
    );
    p.write(
        "snapshots/customers_history.sql",
        "{{ config(unique_key='customer_id', strategy='timestamp', updated_at='updated_at') }}\nselect * from {{ ref('customers') }}\n",
    );
    p.write(
        "snapshots/tiers_history.sql",
        "{{ config(unique_key='customer_id', strategy='check', check_cols=['tier'], invalidate_hard_deletes=true) }}\nselect customer_id, tier from {{ ref('customers') }}\n",
    );
    p.run(&["seed"]).expect_code(0);
    p.run(&["snapshot"]).expect_code(0);
    p.run(&["snapshot"]).expect_code(0);
    assert_eq!(db.count("customers_history"), 2, "an unchanged source adds nothing");
    p.write(
        "seeds/customers.csv",
        "customer_id,name,tier,updated_at\n1,Ann,platinum,2026-01-02 00:00:00\n3,Cy,gold,2026-01-02 00:00:00\n",
    );
    p.run(&["seed"]).expect_code(0);
    let out = p.run(&["snapshot"]);
    out.expect_code(0);
    let url = db.url();
    let export = |sql: &str| {
        let o = run_in(p.path(), &["export", &url, "--query", sql], &[]);
        o.expect_code(0);
        o.stdout
    };
    assert_eq!(
        export(
            "select customer_id, tier, valid_from, valid_to from customers_history order by customer_id, valid_from"
        ),
        "customer_id\ttier\tvalid_from\tvalid_to
1\tgold\t2026-01-01 00:00:00\t2026-01-02 00:00:00
1\tplatinum\t2026-01-02 00:00:00\t
2\tsilver\t2026-01-01 00:00:00\t
3\tgold\t2026-01-02 00:00:00\t
"
    );
    // check strategy: tier changed for 1; 2 left the source (hard delete); 3 is new.
    assert_eq!(
        export(
            "select customer_id, tier, case when valid_to is null then 'current' else 'closed' end as state from tiers_history order by customer_id, valid_from"
        ),
        "customer_id\ttier\tstate\n1\tgold\tclosed\n1\tplatinum\tcurrent\n2\tsilver\tclosed\n3\tgold\tcurrent\n"
    );
}

fn data_tests_report_failing_rows(kind: Kind) {
    let db = TestDb::new(kind);
    let p = project_on(&db);
    p.write(
        "seeds/orders.csv",
        "order_id,customer_id,status,amount\n1,1,paid,10.00\n2,1,paid,5.00\n2,2,lost,7.50\n4,9,paid,-1.00\n",
    );
    p.write("seeds/customers.csv", "customer_id,name\n1,Ann\n2,Bob\n");
    p.write(
        "models/schema.toml",
        r#"[seeds.orders.columns]
order_id = "integer"
customer_id = "integer"
status = "varchar(10)"
amount = "decimal(8,2)"

[models.orders]
tests = [{ row_count = { min = 1, max = 3 } }, { expression = { expr = "amount >= 0", severity = "warn" } }]

[models.orders.columns.order_id]
tests = ["not_null", "unique"]

[models.orders.columns.status]
tests = [{ accepted_values = { values = ["paid", "refunded"] } }]

[models.orders.columns.customer_id]
tests = [{ relationships = { to = "customers", field = "customer_id" } }]
"#,
    );
    p.write("tests/no_big_orders.sql", "select * from {{ ref('orders') }} where amount > 100\n");
    p.run(&["seed"]).expect_code(0);
    let out = p.run(&["test"]);
    out.expect_code(3);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "FAIL  row_count_orders (orders): 4 rows; expected between 1 and 3",
            "WARN  expression_orders (orders): 1 failing row",
            "      order_id | customer_id | status | amount",
            "      4 | 9 | paid | -1.00",
            "PASS  not_null_orders_order_id (orders.order_id)",
            "FAIL  unique_orders_order_id (orders.order_id): 1 failing row",
            "      order_id | n",
            "      2 | 2",
            "FAIL  accepted_values_orders_status (orders.status): 1 failing row",
            "      status | n",
            "      lost | 1",
            "FAIL  relationships_orders_customer_id (orders.customer_id): 1 failing row",
            "      customer_id",
            "      9",
            "PASS  no_big_orders",
            lines[15],
        ]
    );
    assert!(lines[15].starts_with("tests: 2 passed, 1 warned, 4 failed, in "), "{}", lines[15]);
    // Selection: only the tests of one column.
    let out = p.run(&["test", "--select", "customers"]);
    out.expect_code(0);
    assert!(out.stdout.starts_with("tests: 0 passed"), "{}", out.stdout);
    let rr: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.file("target/run_results.json")).unwrap()).unwrap();
    assert_eq!(rr["command"], "test");
}

fn airflow_sales_gives_the_same_bytes_everywhere(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::copy_of("examples/airflow-sales");
    let out = p.run_env(&["run"], &[("SLUICE_AIRFLOW_WAREHOUSE", &db.url())]);
    out.expect_code(0);
    assert!(out.stdout.contains("tests: 8 passed, 0 warned, 0 failed"), "{}", out.stdout);
    let got = p.read("output/aggregated_sales.tsv");
    let want = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cases/airflow-sales.tsv")).unwrap();
    assert_eq!(got, want, "the export differs from the reference (SLUICE_BLESS=1 rewrites it from SQLite)");
    assert_eq!(db.count("aggregated_sales"), 20);
}

#[test]
fn airflow_sales_reference_output() {
    // The reference the backends are compared with is SQLite's output, kept in
    // the repository; SLUICE_BLESS=1 writes it anew.
    let p = TestProject::copy_of("examples/airflow-sales");
    p.run(&["run"]).expect_code(0);
    let got = p.read("output/aggregated_sales.tsv");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cases/airflow-sales.tsv");
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(path, &got).unwrap();
    }
    assert_eq!(got, std::fs::read_to_string(path).unwrap());
}

#[test]
fn selection_compile_and_ephemeral_models() {
    let p = TestProject::copy_of("examples/airflow-sales");
    let out = p.run(&["compile", "--select", "+aggregated_sales"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "compiled 4 files into target/compiled\n");
    let compiled = p.read("target/compiled/models/marts/aggregated_sales.sql");
    // The ephemeral model is inlined as a CTE; macros are expanded.
    assert!(compiled.contains("\nWITH \"__sluice_eph_all_sales\" AS (\n-- Both channels"), "{compiled}");
    assert!(compiled.contains("sum((s.quantity * s.unit_price)) as revenue"), "{compiled}");
    assert!(!p.file("target/compiled/models/marts/aggregated_sales.sql.tmp").exists());
    let out = p.run(&["transform", "--select", "nope"]);
    out.expect_code(2);
    assert_eq!(
        out.stderr,
        "error: no model, seed or snapshot named `nope` in the selector `nope`; valid choices: `online_sales`, `products`, `aggregated_sales`, `all_sales`, `stg_in_store`, `stg_online`\n"
    );
    // A pipeline step selecting something that does not exist fails the check.
    p.write("pipelines/bad.toml", "[[steps]]\nname = \"m\"\nkind = \"sql\"\nselect = \"tag:none aggregated_sale\"\n");
    let out = p.run(&["check"]);
    out.expect_code(2);
    assert!(
        out.stdout.contains("step `m`: no model, seed or snapshot named `aggregated_sale` in the selector `aggregated_sale`; did you mean `aggregated_sales`?"),
        "{}",
        out.stdout
    );
}

/// A view is replaced in place when it keeps its columns, and rebuilt when
/// they change (a new type, an order, a column gone); the views on it keep
/// working either way.
fn views_follow_column_changes(kind: Kind) {
    let db = TestDb::new(kind);
    let p = project_on(&db);
    p.write(
        "sluice.toml",
        &format!("name = \"t\"\n[connections.w]\nurl = \"{}\"\n[models]\nmaterialized = \"view\"\n", db.url()),
    );
    p.write("models/w.sql", "select a from {{ ref('v') }}\n");
    let url = db.url();
    let export = |sql: &str| {
        let o = run_in(p.path(), &["export", &url, "--query", sql], &[]);
        o.expect_code(0);
        o.stdout
    };
    for (body, want) in [
        ("select 1 as a", "a\n1\n"),
        ("select 2 as a", "a\n2\n"),
        ("select 3 as a, 4 as b", "a\n3\n"),
        ("select 'x' as a", "a\nx\n"),
        ("select 5 as c, 'y' as a", "a\ny\n"),
    ] {
        p.write("models/v.sql", &format!("{body}\n"));
        p.run(&["transform"]).expect_code(0);
        assert_eq!(export("select a from w"), want, "after `{body}`");
    }
    assert_eq!(export("select c, a from v"), "c\ta\n5\ty\n");
}

/// Issue 11, item 1: tables rebuilt at the same time that share dependent
/// views (a view joining two of them) raced on PostgreSQL, each swap dropping
/// and recreating the same views ("could not open relation with OID …",
/// deadlocks), and half the DAG was skipped. The benchmark's project shape,
/// smaller: rebuilt twice at 1, 4 and 8 threads, then by two processes at
/// once; every run succeeds, every view is there and gives the same rows.
fn parallel_rebuilds_keep_shared_views(kind: Kind) {
    let db = TestDb::new(kind);
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/gen_models.py");
    let out = std::process::Command::new("python3")
        .args([script, dir.path().to_str().unwrap(), &db.url(), "--small", "--rows", "500", "--no-dbt"])
        .output()
        .unwrap();
    assert!(out.status.success(), "gen_models.py: {}", String::from_utf8_lossy(&out.stderr));
    let project = dir.path().join("sluice");
    let mut views: Vec<String> = std::fs::read_dir(project.join("models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::read_to_string(p).unwrap().contains("materialized='view'"))
        .map(|p| p.file_stem().unwrap().to_str().unwrap().to_string())
        .collect();
    views.sort();
    assert_eq!(views.len(), 69);
    let listed = match kind {
        Kind::Sqlite => "select name from sqlite_master where type = 'view' order by name",
        Kind::Postgres => {
            "select table_name from information_schema.views where table_schema = current_schema() order by 1"
        }
        Kind::Mysql => "select table_name from information_schema.views where table_schema = database() order by 1",
    };
    // Every view queried at once: its row count.
    let counts =
        views.iter().map(|v| format!("select '{v}', count(*) from {v}")).collect::<Vec<_>>().join(" union all ");
    // (The union's rows come in any order.)
    let counted = || {
        let mut rows = db.rows(&counts);
        rows.sort();
        rows
    };
    let first = run_in(&project, &["transform", "--threads", "4"], &[]);
    first.expect_code(0);
    let want = counted();
    assert!(want.iter().all(|r| r[1] != "0"), "every view has rows: {want:?}");
    for threads in ["1", "4", "8"] {
        for round in 1..=2 {
            let out = run_in(&project, &["transform", "--threads", threads], &[]);
            assert_eq!(out.code, 0, "rebuild {round} at {threads} threads:\n{}{}", out.stdout, out.stderr);
            assert!(out.stdout.contains("96 of 96 models built"), "{}", out.stdout);
            let got: Vec<String> = db.rows(listed).into_iter().map(|r| r[0].clone()).collect();
            assert_eq!(got, views, "views after rebuild {round} at {threads} threads");
            assert_eq!(counted(), want, "view rows after rebuild {round} at {threads} threads");
        }
    }
    // Two processes rebuilding the same models at once take turns where
    // they touch the same relations.
    let two: Vec<_> = (0..2)
        .map(|_| {
            crate::support::bin()
                .current_dir(&project)
                .args(["transform", "--threads", "4"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in two {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "two at once:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("96 of 96 models built"), "{stdout}");
    }
    let got: Vec<String> = db.rows(listed).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(got, views, "views after two rebuilds at once");
    assert_eq!(counted(), want, "view rows after two rebuilds at once");
}

/// Issue 11, item 17: `compile` rendered `is_incremental()` false and
/// `logical_date` in UTC while `transform` sent true and the date in the
/// project's zone. Both now render through the same decisions.
#[test]
fn compile_writes_what_transform_sends() {
    // A zone whose date differs from UTC's now: 12 hours behind before
    // 11:00 UTC, 14 ahead after.
    let now = chrono::Utc::now();
    let zone = if chrono::Timelike::hour(&now) < 11 { "Etc/GMT+12" } else { "Pacific/Kiritimati" };
    let local = now.with_timezone(&zone.parse::<chrono_tz::Tz>().unwrap()).date_naive().to_string();
    assert_ne!(local, now.date_naive().to_string());
    let p = TestProject::new();
    p.write("sluice.toml", &format!("name = \"t\"\n[defaults]\ntimezone = \"{zone}\"\n"));
    p.write(
        "models/daily.sql",
        "{{ config(materialized='incremental') }}\n\
         select '{{ logical_date }}' as d, {% if is_incremental() %}'incremental'{% else %}'first'{% endif %} as how\n",
    );
    let compiled = |args: &[&str]| {
        p.run(args).expect_code(0);
        p.read("target/compiled/models/daily.sql").trim().to_string()
    };
    let first = format!("select '{local}' as d, 'first' as how");
    let incremental = format!("select '{local}' as d, 'incremental' as how");
    assert_eq!(compiled(&["compile"]), first, "before the first build");
    p.run(&["transform"]).expect_code(0);
    assert_eq!(compiled(&["compile"]), incremental, "the table exists");
    assert_eq!(compiled(&["compile", "--full-refresh"]), first);
    // What transform sent is what compile wrote.
    p.run(&["transform"]).expect_code(0);
    assert_eq!(
        p.query("select d, how from daily order by how"),
        vec![vec![local.clone(), "first".to_string()], vec![local, "incremental".to_string()]]
    );
}

/// The same class as `compile_writes_what_transform_sends`: a pipeline's
/// data tests and snapshots rendered `{{ logical_date }}` as today in UTC,
/// not the run's date.
#[test]
fn tests_and_snapshots_render_the_runs_date() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n");
    p.write("models/one.sql", "{{ config(materialized='table') }}\nselect 1 as id, '{{ logical_date }}' as d\n");
    p.write(
        "tests/run_date.sql",
        "select * from {{ ref('one') }} where d <> '{{ logical_date }}' or d <> '2020-01-02'\n",
    );
    p.write(
        "snapshots/one_history.sql",
        "{{ config(unique_key='id', strategy='check') }}\nselect id, '{{ logical_date }}' as snap_d from {{ ref('one') }}\n",
    );
    p.write(
        "pipelines/p.toml",
        "[[steps]]\nname = \"m\"\nkind = \"sql\"\n[[steps]]\nname = \"s\"\nkind = \"snapshot\"\ndepends_on = [\"m\"]\n[[steps]]\nname = \"t\"\nkind = \"test\"\ndepends_on = [\"s\"]\n",
    );
    p.run(&["run", "--date", "2020-01-02"]).expect_code(0);
    assert_eq!(p.query("select snap_d from one_history"), vec![vec!["2020-01-02".to_string()]]);
}

/// Issue 11, item 18: a model's SQL error named the file but not the line.
/// The database's position (PostgreSQL's offset, SQLite's token offset,
/// MariaDB's `near '…' at line N` or the unknown column) is mapped through
/// the DDL around the query to the compiled SQL, written where the error
/// says, and to the model's own line when the template's lines map straight.
fn sql_errors_point_at_the_models_line(kind: Kind) {
    let db = TestDb::new(kind);
    let p = project_on(&db);
    p.write("models/base.sql", "{{ config(materialized='table') }}\nselect 1 as id, 2 as qty\n");
    p.write(
        "models/unknown_column.sql",
        "-- a comment line\n{{ config(materialized='table') }}\nselect p.id,\n       p.nope as price\nfrom {{ ref('base') }} p\n",
    );
    p.write(
        "models/in_a_view.sql",
        "{{ config(materialized='view') }}\nselect id,\n   qty from {{ ref('base') }} where idd > 0\n",
    );
    p.write(
        "models/syntax.sql",
        "{{ config(materialized='table') }}\nselect id\nfrom {{ ref('base') }}\nwher id > 0\n",
    );
    // A macro that adds lines: a line the template leaves as it is still
    // maps; a line of the macro's is only in the compiled SQL.
    p.write("macros/cols.sql", "{% macro cols() %}id,\n  qty,\n  qty * 2 as twice{% endmacro %}\n");
    p.write(
        "models/after_a_macro.sql",
        "{{ config(materialized='table') }}\nselect {{ cols() }},\n  nope2\nfrom {{ ref('base') }}\n",
    );
    p.write("macros/bad_cols.sql", "{% macro bad_cols() %}id,\n  nope3,\n  qty{% endmacro %}\n");
    p.write(
        "models/in_a_macro.sql",
        "{{ config(materialized='table') }}\nselect {{ bad_cols() }}\nfrom {{ ref('base') }}\n",
    );
    let out = p.run(&["transform"]);
    out.expect_code(2);
    let error = |model: &str| -> String {
        let at =
            out.stdout.find(&format!("error: model `{model}` (")).unwrap_or_else(|| panic!("{model}: {}", out.stdout));
        out.stdout[at..].lines().next().unwrap().to_string()
    };
    let starts = |model: &str, want: &str| {
        let got = error(model);
        assert!(got.starts_with(want), "{got}\nwanted it to start with\n{want}");
    };
    starts(
        "unknown_column",
        "error: model `unknown_column` (models/unknown_column.sql:4:8, compiled in target/compiled/models/unknown_column.sql:4:8): cannot build unknown_column: ",
    );
    starts(
        "syntax",
        "error: model `syntax` (models/syntax.sql:4:6, compiled in target/compiled/models/syntax.sql:4:6): ",
    );
    // The relation's name differs by backend (quoting, schema): the column
    // in the compiled SQL too.
    let quoted = match kind {
        Kind::Sqlite => "\"base\"".to_string(),
        Kind::Postgres => format!("\"{}\".\"base\"", db.name),
        Kind::Mysql => "`base`".to_string(),
    };
    let col = "   qty from ".len() + quoted.len() + " where ".len() + 1;
    starts(
        "in_a_view",
        &format!(
            "error: model `in_a_view` (models/in_a_view.sql:3:37, compiled in target/compiled/models/in_a_view.sql:3:{col}): "
        ),
    );
    starts(
        "after_a_macro",
        "error: model `after_a_macro` (models/after_a_macro.sql:3:3, compiled in target/compiled/models/after_a_macro.sql:5:3): ",
    );
    starts(
        "in_a_macro",
        "error: model `in_a_macro` (models/in_a_macro.sql, compiled in target/compiled/models/in_a_macro.sql:3:3): ",
    );
    // The compiled file is the SQL sent.
    assert_eq!(p.read("target/compiled/models/syntax.sql"), format!("\nselect id\nfrom {quoted}\nwher id > 0\n"));
}

/// Issue 11, item 19: SQLite created a view over a table that does not
/// exist, and the error came later, from whatever read it. Every backend
/// now fails the view's build, at the place in the model.
fn a_view_over_a_missing_table_fails_its_build(kind: Kind) {
    let db = TestDb::new(kind);
    let p = project_on(&db);
    p.write("models/v.sql", "{{ config(materialized='view') }}\nselect id\nfrom missing_table\n");
    p.write("models/w.sql", "{{ config(materialized='view') }}\nselect nope from {{ ref('v') }}\n");
    let out = p.run(&["transform"]);
    out.expect_code(2);
    assert!(
        out.stdout.contains(
            "error: model `v` (models/v.sql:3:6, compiled in target/compiled/models/v.sql:3:6): cannot build v: "
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("w                            skipped           (upstream `v` failed)"),
        "{}",
        out.stdout
    );
    let views = match kind {
        Kind::Sqlite => "select count(*) from sqlite_master where name = 'v'",
        Kind::Postgres => {
            "select count(*) from information_schema.tables where table_schema = current_schema() and table_name = 'v'"
        }
        Kind::Mysql => {
            "select count(*) from information_schema.tables where table_schema = database() and table_name = 'v'"
        }
    };
    assert_eq!(db.rows(views), vec![vec!["0"]]);
}

/// Issue 11, item 19: `sqlite://nodir/x.db` (a typo in the folder) made the
/// folder and a new, empty database. Only the project's own `.sluice/`
/// folder is created; any other missing folder is an error, for the
/// warehouse and the state store alike.
#[test]
fn a_sqlite_url_into_a_missing_folder_is_an_error() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"t\"\n[connections.w]\nurl = \"sqlite://nodir/x.db\"\n");
    p.write("models/m.sql", "select 1 as id\n");
    let out = p.run(&["transform"]);
    out.expect_code(2);
    assert!(out.stderr.contains("cannot open sqlite://nodir/x.db: the folder "), "{}", out.stderr);
    assert!(
        out.stderr.contains("nodir does not exist; check the path (only the project's own .sluice folder is created)"),
        "{}",
        out.stderr
    );
    assert!(!p.file("nodir").exists());
    p.write("data.csv", "id\n1\n");
    let out = p.run(&["load", "data.csv", "sqlite://nodir/x.db", "--table", "t", "--create"]);
    out.expect_code(2);
    assert!(!p.file("nodir").exists());
    // The state store's URL too.
    p.write("sluice.toml", "name = \"t\"\n[state]\nurl = \"sqlite://nostate/state.db\"\n");
    p.write("pipelines/p.toml", "[[steps]]\nname = \"m\"\nkind = \"sql\"\n");
    // (A run whose state store cannot be opened runs unrecorded, and says so.)
    let out = p.run(&["run"]);
    assert!(out.stderr.contains("cannot open sqlite://nostate/state.db: the folder "), "{}", out.stderr);
    assert!(!p.file("nostate").exists());
    // The project's own folder is made when missing.
    p.write("sluice.toml", "name = \"t\"\n");
    p.run(&["run"]).expect_code(0);
    assert_eq!(p.query("select id from m"), vec![vec!["1"]]);
}

/// Issue 11, item 21: the same model exported `9297.8` on SQLite and
/// `9297.80` on PostgreSQL and MariaDB (and an average with 16, 6 or 1
/// decimals). Exports write a column the project declares `decimal(p, s)`
/// with `s` decimals on every backend: a model's declared columns (with or
/// without a full contract, tables and views) and a seed's.
fn exports_write_decimals_with_the_declared_scale(kind: Kind) {
    let db = TestDb::new(kind);
    let p = project_on(&db);
    p.write("seeds/sales.csv", "product,qty,price\na,2,4648.90\nb,3,1.50\nb,1,2.00\n");
    p.write(
        "models/schema.toml",
        r#"[seeds.sales.columns]
product = "varchar(10)"
qty = "integer"
price = "decimal(10,2)"

[models.revenue.columns.revenue]
type = "decimal(14,2)"
[models.revenue.columns.avg_price]
type = "decimal(10,2)"
[models.revenue.columns.product]
tests = ["not_null"]

[models.revenue_view.columns.product]
type = "varchar(10)"
[models.revenue_view.columns.revenue]
type = "decimal(14,2)"

[models.total.columns.total]
type = "decimal(14,2)"
"#,
    );
    let body = "select product, sum(qty * price) as revenue, avg(price) as avg_price, sum(qty) as n\nfrom {{ ref('sales') }} group by product\n";
    p.write("models/revenue.sql", &format!("{{{{ config(materialized='table') }}}}\n{body}"));
    p.write(
        "models/revenue_view.sql",
        "{{ config(materialized='view') }}\nselect product, sum(qty * price) as revenue from {{ ref('sales') }} group by product\n",
    );
    p.write(
        "models/total.sql",
        "{{ config(materialized='table') }}\nselect sum(qty * price) as total from {{ ref('sales') }}\n",
    );
    p.write(
        "pipelines/p.toml",
        r#"[[steps]]
name = "seed"
kind = "seed"
[[steps]]
name = "models"
kind = "sql"
depends_on = ["seed"]
[[steps]]
name = "revenue"
kind = "export"
depends_on = ["models"]
query = "select * from {{ ref('revenue') }} order by product"
path = "out/revenue.tsv"
[[steps]]
name = "view"
kind = "export"
depends_on = ["models"]
query = "select * from {{ ref('revenue_view') }} order by product"
path = "out/revenue_view.tsv"
[[steps]]
name = "total"
kind = "export"
depends_on = ["models"]
table = "total"
path = "out/total.tsv"
"#,
    );
    p.run(&["run"]).expect_code(0);
    assert_eq!(p.read("out/revenue.tsv"), "product\trevenue\tavg_price\tn\na\t9297.80\t4648.90\t2\nb\t6.50\t1.75\t4\n");
    assert_eq!(p.read("out/revenue_view.tsv"), "product\trevenue\na\t9297.80\nb\t6.50\n");
    assert_eq!(p.read("out/total.tsv"), "total\n9304.30\n");
}
