//! dbt projects run unchanged: `tests/cases/dbt-jaffle` (dbt_project.yml,
//! schema files, profiles.yml with a target per backend) is copied, never
//! modified, and seeded, built, tested and snapshotted on SQLite, PostgreSQL
//! and MariaDB; what `sluice check` cannot run is reported at file:line:col.

use crate::db::{Kind, TestDb};
use crate::support::{Out, TestProject};

per_backend!(
    [sqlite => Sqlite, postgres => Postgres, mariadb => Mysql]
    jaffle_shop_runs_from_its_dbt_folder,
    dbt_macros_use_return_dispatch_config_get_and_this,
    dbt_nodes_build_in_custom_schemas_under_aliases,
);

const CASE: &str = "tests/cases/dbt-jaffle";

/// The profile target for a backend, and the environment its profile reads.
fn target(db: &TestDb) -> (&'static str, Vec<(&'static str, String)>) {
    match db.kind {
        Kind::Sqlite => ("lite", vec![("JAFFLE_SQLITE", db.name.clone())]),
        Kind::Postgres => ("pg", vec![("JAFFLE_SCHEMA", db.name.clone())]),
        Kind::Mysql => ("maria", vec![("JAFFLE_SCHEMA", db.name.clone())]),
    }
}

fn sluice(p: &TestProject, db: &TestDb, args: &[&str]) -> Out {
    let (t, env) = target(db);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--target", t]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    p.run_env(&all, &env)
}

fn jaffle_shop_runs_from_its_dbt_folder(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::copy_of(CASE);
    let out = sluice(&p, &db, &["check"]);
    out.expect_code(0);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("5 models") && !text.contains("warning"), "{text}");

    sluice(&p, &db, &["seed"]).expect_code(0);
    let out = sluice(&p, &db, &["transform"]);
    out.expect_code(0);
    // The config tree: staging/ is views, the rest tables (dbt's default is view).
    assert!(out.stdout.contains("stg_orders") && out.stdout.contains("view"), "{}", out.stdout);
    let customers = "SELECT customer_id, number_of_orders, customer_lifetime_value FROM customers ORDER BY customer_id";
    assert_eq!(
        db.rows(customers),
        vec![
            vec!["1", "3", "4100"],
            vec!["2", "1", "2300"],
            vec!["3", "2", "3600"],
            vec!["4", "1", "700"],
            vec!["5", "1", "1700"]
        ]
    );
    let views = match kind {
        Kind::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'view' ORDER BY name".to_string(),
        Kind::Postgres => {
            format!("SELECT table_name FROM information_schema.views WHERE table_schema = '{}' ORDER BY 1", db.name)
        }
        Kind::Mysql => {
            format!("SELECT table_name FROM information_schema.views WHERE table_schema = '{}' ORDER BY 1", db.name)
        }
    };
    assert_eq!(db.rows(&views), vec![vec!["stg_customers"], vec!["stg_orders"], vec!["stg_payments"]]);

    // Tests from schema.yml (flat arguments and under `arguments:`), named as dbt names them.
    let out = sluice(&p, &db, &["test"]);
    out.expect_code(0);
    for name in [
        "unique_customers_customer_id",
        "accepted_values_stg_orders_status__placed__shipped__completed__return_pending__returned",
        "relationships_orders_customer_id__customer_id__ref_customers_",
        "assert_order_amounts_are_not_negative",
    ] {
        assert!(out.stdout.contains(&format!("PASS  {name}")), "{name} in\n{}", out.stdout);
    }
    assert!(out.stdout.contains("tests: 17 passed, 0 warned, 0 failed"), "{}", out.stdout);

    // dbt's Jinja context: `target` from the profile.
    sluice(&p, &db, &["compile", "--select", "stg_customers"]).expect_code(0);
    let compiled = p.read("target/compiled/models/staging/stg_customers.sql");
    let (t, env) = target(&db);
    let schema = if kind == Kind::Sqlite { "main".to_string() } else { env[0].1.clone() };
    let ty = match kind {
        Kind::Sqlite => "sqlite",
        Kind::Postgres => "postgres",
        Kind::Mysql => "mariadb",
    };
    assert!(compiled.starts_with(&format!("-- built for {t} ({ty}, schema {schema})\n")), "{compiled}");

    // The {% snapshot %} block.
    // (in its custom schema: `<target schema>_snapshots`).
    sluice(&p, &db, &["snapshot"]).expect_code(0);
    let snapshots = db.custom_schema("snapshots");
    assert_eq!(
        db.rows_with_schemas(&[&snapshots], &format!("SELECT COUNT(*) FROM {snapshots}.orders_snapshot")),
        vec![vec!["8"]]
    );

    // --vars overrides dbt_project.yml's vars.
    sluice(&p, &db, &["transform", "--vars", "{start_date: '2018-01-03'}"]).expect_code(0);
    assert_eq!(db.rows("SELECT SUM(number_of_orders) FROM customers"), vec![vec!["6"]]);
    // The case folder holds nothing the runs wrote.
    let case = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CASE);
    assert!(!case.join("target").exists() && !case.join("jaffle.db").exists());
}

/// What sluice cannot run is named with its place, never skipped.
#[test]
fn dbt_check_reports_what_it_cannot_run() {
    let p = TestProject::copy_of(CASE);
    p.write("packages.yml", "packages:\n  - package: dbt-labs/dbt_utils\n    version: 1.3.0\n");
    p.write("models/forecast.py", "def model(dbt, session):\n    return None\n");
    p.write(
        "models/marts.yml",
        "version: 2\nmodels:\n  - name: orders\n    columns:\n      - name: amount\n        tests:\n          - dbt_utils.accepted_range:\n              min_value: 0\n          - not_nul\n        colour: red\n",
    );
    let project = p.read("dbt_project.yml").replace("    staging:\n", "    +sql_header: \"set x = 1\"\n    staging:\n");
    p.write("dbt_project.yml", &project);
    let out = p.run(&["check"]);
    out.expect_code(2);
    let text = format!("{}{}", out.stdout, out.stderr);
    for line in [
        "models/schema.yml:17:11: model `orders` is described twice in another schema file",
        "dbt_project.yml:25:5: model config `sql_header` is not supported by sluice",
        "models/forecast.py: Python models are not supported: sluice runs SQL models",
        "models/marts.yml:7:13: test `dbt_utils.accepted_range` comes from a package; sluice runs no dbt packages",
        "models/marts.yml:9:13: unknown test `not_nul`",
        "models/marts.yml:10:9: unknown key `colour` in column `amount`",
        "packages.yml:2:3: dbt packages are not supported: sluice installs nothing from the network",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }

    // An unknown target names the ones there are.
    let q = TestProject::copy_of(CASE);
    let out = q.run(&["check", "--target", "prod"]);
    out.expect_code(2);
    assert!(out.stdout.contains("profile `jaffle_shop` has no target `prod`"), "{}", out.stdout);
    assert!(out.stdout.contains("profiles.yml:4:5: "), "{}", out.stdout);
    assert!(out.stdout.contains("valid choices: `lite`, `pg`, `maria`"), "{}", out.stdout);
}

const FEATURES: &str = "tests/cases/dbt-features";

fn features(p: &TestProject, db: &TestDb, args: &[&str]) -> Out {
    let (t, var) = match db.kind {
        Kind::Sqlite => ("lite", "FEATURES_SQLITE"),
        Kind::Postgres => ("pg", "FEATURES_SCHEMA"),
        Kind::Mysql => ("maria", "FEATURES_SCHEMA"),
    };
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--target", t]);
    p.run_env(&all, &[(var, db.name.as_str())])
}

/// `tests/cases/dbt-features`: macros that `return()` lists and numbers (also
/// from other macros), `adapter.dispatch()` to the target's own macro or the
/// default one, `config.get()`, `this.schema`/`this.identifier` and
/// `modules.datetime`; `+pre-hook`,
/// `+post-hook` and `config(pre_hook=…)` run around the build; `run_query()`
/// from a macro and from a model, at build and compile time.
fn dbt_macros_use_return_dispatch_config_get_and_this(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::copy_of(FEATURES);
    features(&p, &db, &["check"]).expect_code(0);
    features(&p, &db, &["seed"]).expect_code(0);
    features(&p, &db, &["transform"]).expect_code(0);
    features(&p, &db, &["snapshot"]).expect_code(0);
    let schema = if kind == Kind::Sqlite { "main".to_string() } else { db.name.clone() };
    let kind_name = if kind == Kind::Postgres { "pg" } else { "generic" };
    let relation = format!("{schema}.payments_pivot");
    assert_eq!(
        db.rows("SELECT order_id, card_amount, cash_amount, methods, kind, config_seen, relation, dated FROM payments_pivot ORDER BY order_id"),
        vec![
            vec!["1", "10", "5", "2", kind_name, "table/None", relation.as_str(), "True/10"],
            vec!["2", "7", "0", "2", kind_name, "table/None", relation.as_str(), "True/10"],
        ]
    );
    // Hooks: on-run-start made the log; the project's pre-hook, the model's own and the
    // project's post-hook each added to it; so did the seed's and the snapshot's (from
    // the config trees and the snapshot's config()).
    assert_eq!(
        db.rows("SELECT model, step FROM hook_log ORDER BY model, step"),
        vec![
            vec!["payments", "seed-post"],
            vec!["payments_pivot", "post"],
            vec!["payments_pivot", "pre"],
            vec!["payments_pivot", "tree-pre"],
            vec!["payments_snapshot", "snap-post"],
            vec!["payments_snapshot", "snap-pre"],
            vec!["queried_pivot", "post"],
            vec!["queried_pivot", "tree-pre"],
            vec!["tree_config", "post"],
            vec!["tree_config", "tree-pre"]
        ]
    );
    // run_query(): the pivot's columns and figures come from the data, through
    // a macro (dbt_utils' get_column_values pattern) and straight from the model.
    assert_eq!(
        db.rows("SELECT order_id, card_amount, cash_amount, methods, total_columns, first_total, orders, executed FROM queried_pivot ORDER BY order_id"),
        vec![
            vec!["1", "10", "5", "2", "order_id/total", "15", "2", "True"],
            vec!["2", "7", "0", "2", "order_id/total", "15", "2", "True"],
        ]
    );
    // compile runs the queries too (as dbt compile does).
    features(&p, &db, &["compile", "--select", "queried_pivot"]).expect_code(0);
    let compiled = p.read("target/compiled/models/queried_pivot.sql");
    assert!(compiled.contains("as card_amount") && compiled.contains("2 as orders"), "{compiled}");
    // config.get() of a key the file did not set: the schema file's config.
    assert_eq!(db.rows("SELECT materialized FROM tree_config"), vec![vec!["view"]]);
    let case = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FEATURES);
    assert!(!case.join("target").exists() && !case.join("features.db").exists());
}

const SCHEMAS: &str = "tests/cases/dbt-schemas";

fn schemas_run(p: &TestProject, db: &TestDb, args: &[&str]) -> Out {
    let (t, var) = match db.kind {
        Kind::Sqlite => ("lite", "SCHEMAS_SQLITE"),
        Kind::Postgres => ("pg", "SCHEMAS_SCHEMA"),
        Kind::Mysql => ("maria", "SCHEMAS_SCHEMA"),
    };
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--target", t]);
    p.run_env(&all, &[(var, db.name.as_str())])
}

/// `tests/cases/dbt-schemas`: `+schema` on folders, `config(schema=…)` and
/// `config(alias=…)`, a snapshot's `target_schema`, the project's own
/// `generate_schema_name` calling dbt's default: each node lands where dbt
/// puts it, refs and tests read it there, incremental runs find it again.
fn dbt_nodes_build_in_custom_schemas_under_aliases(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::copy_of(SCHEMAS);
    let out = schemas_run(&p, &db, &["check"]);
    out.expect_code(0);
    assert!(!format!("{}{}", out.stdout, out.stderr).contains("warning"), "{}{}", out.stdout, out.stderr);
    let home = if kind == Kind::Sqlite { "main".to_string() } else { db.name.clone() };
    let [staging, marts, reports, history] = ["staging", "marts", "reports", "history"].map(|c| db.custom_schema(c));
    let all = [staging.as_str(), marts.as_str(), reports.as_str(), history.as_str()];
    // The project's generate_schema_name puts seeds beside the staging views.
    let seeds = staging.clone();

    schemas_run(&p, &db, &["seed"]).expect_code(0);
    let out = schemas_run(&p, &db, &["transform"]);
    out.expect_code(0);
    assert_eq!(db.rows_with_schemas(&all, &format!("SELECT COUNT(*) FROM {seeds}.raw_items")), vec![vec!["4"]]);
    assert_eq!(
        db.rows_with_schemas(&all, &format!("SELECT id, total FROM {marts}.totals ORDER BY id")),
        vec![vec!["1", "60"], vec!["2", "25"], vec!["3", "48"], vec!["4", "30"]]
    );
    assert_eq!(
        db.rows_with_schemas(&all, &format!("SELECT id FROM {reports}.top_items ORDER BY id")),
        vec![vec!["1"], vec!["3"], vec!["4"]]
    );
    // The model without a custom schema stays in the target's schema, and
    // reads the others where they are.
    assert_eq!(
        db.rows_with_schemas(&all, "SELECT items, total, in_schema FROM summary"),
        vec![vec!["3".to_string(), "138".to_string(), home.clone()]]
    );
    // The staging folder is views in its own schema; no node is left under
    // its file name where an alias names it.
    assert_eq!(db.rows_with_schemas(&all, &format!("SELECT COUNT(*) FROM {staging}.stg_items")), vec![vec!["4"]]);
    let kinds = match kind {
        Kind::Sqlite => format!(
            "SELECT type, name FROM {staging}.sqlite_master UNION ALL SELECT type, name FROM {marts}.sqlite_master ORDER BY 2"
        ),
        _ => format!(
            "SELECT table_type, table_name FROM information_schema.tables WHERE table_schema IN ('{staging}', '{marts}') ORDER BY 2"
        ),
    };
    let found: Vec<Vec<String>> = db
        .rows_with_schemas(&all, &kinds)
        .into_iter()
        .map(|r| vec![r[0].to_ascii_lowercase().replace("base table", "table"), r[1].clone()])
        .collect();
    assert_eq!(found, vec![vec!["table", "raw_items"], vec!["view", "stg_items"], vec!["table", "totals"]]);

    // Tests read the nodes in their schemas.
    let out = schemas_run(&p, &db, &["test"]);
    out.expect_code(0);
    assert!(out.stdout.contains("tests: 3 passed, 0 warned, 0 failed"), "{}", out.stdout);

    // An incremental run finds its table in its schema and adds to it.
    db.exec_with_schemas(
        &[&seeds],
        &format!("INSERT INTO {seeds}.raw_items (id, name, price, qty) VALUES (5, 'jug', 20, 2)"),
    );
    let out = schemas_run(&p, &db, &["transform", "--select", "stg_items+"]);
    out.expect_code(0);
    assert!(out.stdout.contains("incremental, merged new rows"), "{}", out.stdout);
    assert_eq!(
        db.rows_with_schemas(&all, &format!("SELECT id FROM {reports}.top_items ORDER BY id")),
        vec![vec!["1"], vec!["3"], vec!["4"], vec!["5"]]
    );

    // The snapshot's target_schema is taken as written; its history
    // columns are dbt's.
    schemas_run(&p, &db, &["snapshot"]).expect_code(0);
    db.exec_with_schemas(&[&seeds], &format!("UPDATE {seeds}.raw_items SET price = 35 WHERE id = 1"));
    schemas_run(&p, &db, &["snapshot"]).expect_code(0);
    assert_eq!(
        db.rows_with_schemas(
            &all,
            &format!(
                "SELECT id, price, CASE WHEN dbt_valid_to IS NULL THEN 'current' ELSE 'closed' END, \
                 CASE WHEN dbt_updated_at = dbt_valid_from THEN 'same' ELSE 'differs' END \
                 FROM {history}.items_snapshot WHERE id = 1 ORDER BY dbt_valid_from"
            )
        ),
        vec![vec!["1", "30", "closed", "same"], vec!["1", "35", "current", "same"]]
    );
    assert_eq!(
        db.rows_with_schemas(
            &all,
            &format!("SELECT COUNT(*) FROM {history}.items_snapshot WHERE dbt_valid_to IS NULL")
        ),
        vec![vec!["5"]]
    );

    // compile writes the qualified names; the manifest says where each node is.
    schemas_run(&p, &db, &["compile", "--select", "item_totals"]).expect_code(0);
    let compiled = p.read("target/compiled/models/marts/item_totals.sql");
    let quote = |s: &str| if kind == Kind::Mysql { format!("`{s}`") } else { format!("\"{s}\"") };
    let totals = format!("{}.{}", quote(&marts), quote("totals"));
    assert!(compiled.contains(&format!("-- built as {totals}")), "{compiled}");
    assert!(compiled.contains(&format!("from {}.{}", quote(&staging), quote("stg_items"))), "{compiled}");
    schemas_run(&p, &db, &["build", "--full-refresh"]).expect_code(0);
    let manifest: serde_json::Value = serde_json::from_str(&p.read("target/manifest.json")).unwrap();
    let node = &manifest["nodes"]["model.schemas.item_totals"];
    assert_eq!(node["schema"], serde_json::json!(marts));
    assert_eq!(node["alias"], "totals");
    assert_eq!(node["relation_name"], serde_json::json!(totals));
    assert_eq!(manifest["nodes"]["seed.schemas.raw_items"]["schema"], serde_json::json!(seeds));
    let case = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SCHEMAS);
    assert!(!case.join("target").exists() && !case.join("schemas.db").exists());
}
