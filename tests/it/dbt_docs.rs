//! `sluice docs generate`: the static site from a copy of
//! `tests/cases/dbt-jaffle` on SQLite (the case folder is never modified).

use crate::db::{Kind, TestDb};
use crate::support::TestProject;

const CASE: &str = "tests/cases/dbt-jaffle";

const MODELS: [&str; 5] = ["stg_customers", "stg_orders", "stg_payments", "customers", "orders"];

/// Every edge of the jaffle shop's lineage, parent → child.
const EDGES: [(&str, &str); 9] = [
    ("raw_customers", "stg_customers"),
    ("raw_orders", "stg_orders"),
    ("shop.payments", "stg_payments"),
    ("stg_customers", "customers"),
    ("stg_orders", "customers"),
    ("stg_payments", "customers"),
    ("stg_orders", "orders"),
    ("stg_payments", "orders"),
    ("stg_orders", "orders_snapshot"),
];

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(files(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn dbt_docs_generate_writes_an_offline_site() {
    let db = TestDb::new(Kind::Sqlite);
    let p = TestProject::copy_of(CASE);
    // HTML in a description (in the copy only) must come out escaped.
    let schema = p.read("models/schema.yml");
    let changed = schema.replace(
        "description: Customer's first name. PII.",
        "description: \"First name <script>alert('x')</script> & <b>PII</b>\"",
    );
    assert_ne!(schema, changed);
    p.write("models/schema.yml", &changed);
    let env = [("JAFFLE_SQLITE", db.name.as_str())];
    let site = p.path().join("site");
    let out = p.run_env(&["docs", "generate", "--target", "lite", "--out", site.to_str().unwrap()], &env);
    out.expect_code(0);
    let read = |rel: &str| std::fs::read_to_string(site.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let index = read("index.html");
    for kind in ["Models (5)", "Seeds (3)", "Snapshots (1)", "Sources (1)", "Tests (17)"] {
        assert!(index.contains(kind), "{kind} in {index}");
    }
    for m in MODELS {
        let page = format!("nodes/model.jaffle_shop.{m}.html");
        assert!(index.contains(&format!("href=\"{page}\"")), "{m} in {index}");
        let html = read(&page);
        assert!(html.contains("<h2>SQL</h2>") && html.contains("<h2>Compiled SQL</h2>"), "{html}");
        assert!(html.contains("{{ ref(&#39;") || html.contains("{{ source(&#39;"), "{html}");
        assert!(html.contains("<h2>Columns</h2>"), "{html}");
        assert!(html.contains("<h2>Depends on</h2>") && html.contains("<h2>Referenced by</h2>"), "{html}");
    }
    let customers = read("nodes/model.jaffle_shop.customers.html");
    assert!(customers.contains("This table has basic information about a customer"), "{customers}");
    assert!(customers.contains("<td>customer_id</td><td>This is a unique identifier for a customer</td>"));
    assert!(customers.contains("unique_customers_customer_id"), "{customers}");
    assert!(customers.contains("href=\"../nodes/model.jaffle_shop.stg_orders.html\""), "{customers}");
    // The compiled SQL names the relation, not the ref.
    let compiled = customers.split("<h2>Compiled SQL</h2>").nth(1).unwrap();
    assert!(!compiled.contains("{{"), "{compiled}");
    assert!(compiled.contains("stg_orders"), "{compiled}");
    // Escaped, never raw.
    assert!(
        customers.contains("First name &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;PII&lt;/b&gt;")
    );
    assert!(!customers.contains("<script>") && !customers.contains("<b>PII"), "{customers}");
    // The lineage names every edge.
    assert!(index.contains("<svg class=\"lineage\""), "{index}");
    for (from, to) in EDGES {
        assert!(index.contains(&format!("<title>{from} → {to}</title>")), "{from} → {to} in {index}");
    }
    // Offline: no file names a URL.
    for f in files(&site) {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains("http://") && !text.contains("https://"), "{} names a URL", f.display());
    }
    // Without --out (and without `generate`): target/docs.
    p.run_env(&["docs", "--target", "lite"], &env).expect_code(0);
    assert!(p.read("target/docs/index.html").contains("nodes/model.jaffle_shop.orders.html"));
    // The case folder is untouched.
    assert!(!std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CASE).join("target/docs").exists());
}

#[test]
fn docs_show_state_store_builds_and_loads_and_pipeline_steps_in_lineage() {
    let p = TestProject::copy_of("examples/airflow-sales");
    // Before any run there is no store, and docs does not create one.
    p.run(&["docs"]).expect_code(0);
    assert!(!p.file(".sluice/state.db").exists());
    assert!(!p.read("target/docs/nodes/model.airflow-sales.aggregated_sales.html").contains("last built:"));
    p.run(&["run"]).expect_code(0);
    p.run(&["docs"]).expect_code(0);
    let page = p.read("target/docs/nodes/model.airflow-sales.aggregated_sales.html");
    assert!(page.contains("<p class=\"last-build\">last built: 20"), "{page}");
    assert!(page.contains("(pipeline sales_aggregation, run "), "{page}");
    // The lineage runs on to the pipeline's export.
    let index = p.read("target/docs/index.html");
    assert!(index.contains("<h2>Exports (1)</h2>"), "{index}");
    assert!(index.contains("<title>aggregated_sales → sales_aggregation.load</title>"), "{index}");
    let export = p.read("target/docs/nodes/export.sales_aggregation.load.html");
    assert!(export.contains("writes tsv to output/aggregated_sales.tsv"), "{export}");
    // And starts at the pipeline's load, with its rows and rejects from the store.
    assert!(index.contains("<title>sales_aggregation.extract_csv → stg_in_store</title>"), "{index}");
    let load = p.read("target/docs/nodes/load.sales_aggregation.extract_csv.html");
    assert!(load.contains("(300 rows loaded, 0 rejected; run "), "{load}");
    // Each table's rows, counted in the warehouse when the docs are written.
    let rows = std::process::Command::new("sqlite3")
        .arg(p.file(".sluice/warehouse.db"))
        .arg("SELECT COUNT(*) FROM aggregated_sales")
        .output()
        .unwrap();
    let rows = String::from_utf8_lossy(&rows.stdout).trim().to_string();
    assert!(rows.parse::<u64>().unwrap() > 0);
    assert!(page.contains(&format!("<p class=\"rows\">rows: {rows} (when these docs were written)</p>")), "{page}");
    p.run(&["docs", "--no-rows"]).expect_code(0);
    assert!(!p.read("target/docs/nodes/model.airflow-sales.aggregated_sales.html").contains("class=\"rows\""));
}

#[test]
fn docs_end_the_lineage_at_the_dashboard_of_published_models() {
    let p = TestProject::copy_of("examples/retail");
    p.run(&["docs", "--no-rows"]).expect_code(0);
    let index = p.read("target/docs/index.html");
    let published: Vec<String> = std::fs::read_to_string(p.file("models/schema.toml"))
        .unwrap()
        .split("[models.")
        .skip(1)
        .filter(|m| m.contains("publish = true"))
        .map(|m| m.split(']').next().unwrap().to_string())
        .collect();
    assert!(!published.is_empty());
    assert!(index.contains(&format!("<h2>Dashboards ({})</h2>", published.len())), "{index}");
    for m in &published {
        assert!(index.contains(&format!("<title>{m} → {m}</title>")), "{m} in {index}");
        let page = p.read(&format!("target/docs/nodes/dashboard.{m}.html"));
        assert!(page.contains(&format!("served at /api/data/{m}")), "{page}");
    }
}
