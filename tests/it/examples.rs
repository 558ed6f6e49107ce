//! The examples run from a clean copy of the repository, on the embedded default.

use crate::support::TestProject;

#[test]
fn nightly_tsv_inserts_fetches_and_writes_output_tsv() {
    let p = TestProject::copy_of("examples/nightly-tsv");
    p.run(&["run"]).expect_code(0);
    let expected = "record_id\tdevice\tmeasured_at\ttemperature_c\tstatus\tnote
1001\tline-a/oven-1\t2026-11-24 23:58:01\t212.40\tOK\t
1002\tline-a/oven-2\t2026-11-24 23:58:03\t208.95\tOK\t
1003\tline-b/reflow-1\t2026-11-24 23:58:07\t245.10\tWARN\tpeak above 245 °C, zone 4
1004\tline-b/reflow-2\t2026-11-24 23:58:09\t238.00\tOK\t
1005\tline-c/wave-1\t2026-11-24 23:58:12\t\tFAIL\t\"sensor offline; ticket \"\"T-88\"\" opened\"
1006\tline-c/wave-1\t2026-11-24 23:58:15\t251.70\tOK\t\"reading\twith a tab\"
";
    assert_eq!(p.read("output/output.tsv"), expected);
    // The next night brings a new batch: it is appended, the old one is not reloaded.
    p.write(
        "data/batch-0002.csv",
        "record_id,device,measured_at,temperature_c,status,note\n1007,line-a/oven-1,2026-11-25T23:58:01,213.00,OK,\n",
    );
    p.run(&["run"]).expect_code(0);
    let out = p.read("output/output.tsv");
    assert_eq!(out.lines().count(), 8);
    assert!(out.ends_with("1007\tline-a/oven-1\t2026-11-25 23:58:01\t213.00\tOK\t\n"), "{out}");
}

#[test]
fn retail_aggregates_sales_per_product() {
    let p = TestProject::copy_of("examples/retail");
    p.run(&["run"]).expect_code(0);
    let got = p.read("output/sales_by_product.tsv");
    // An independent computation of the same report, in Python with exact decimals.
    let script = r#"
import csv, sys
from decimal import Decimal
agg = {}
with open(sys.argv[1], newline='', encoding='utf-8') as f:
    for r in csv.DictReader(f):
        k = (int(r['product_id']), r['product_name'], r['category'])
        o, u, rev = agg.get(k, (0, 0, Decimal(0)))
        q = int(r['quantity'])
        agg[k] = (o + 1, u + q, rev + q * Decimal(r['unit_price']))
rows = sorted(agg.items(), key=lambda kv: (-kv[1][2], kv[0][0]))
print('product_id\tproduct_name\tcategory\torders\tunits\trevenue')
for (pid, name, cat), (o, u, rev) in rows:
    print('%d\t%s\t%s\t%d\t%d\t%s' % (pid, name, cat, o, u, rev))
"#;
    let py = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(p.file("data/sales.csv"))
        .output()
        .expect("python3 runs");
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let expected = String::from_utf8(py.stdout).unwrap();
    let norm = |s: &str| -> Vec<Vec<String>> {
        s.lines()
            .map(|l| {
                let mut f: Vec<String> = l.split('\t').map(|x| x.trim_matches('"').replace("\"\"", "\"")).collect();
                // Revenue: compare as exact cents.
                if let Some(last) = f.last_mut()
                    && let Ok(v) = last.parse::<f64>()
                {
                    *last = format!("{:.2}", v);
                }
                f
            })
            .collect()
    };
    let (g, e) = (norm(&got), norm(&expected));
    assert_eq!(g.len(), e.len());
    assert_eq!(g, e);
    assert_eq!(g.len(), 458, "a header and one line per product sold");
}

/// Scenario S2 on real servers: a PostgreSQL table of online sales → raw CSV
/// landings → a MariaDB warehouse → SQL models → TSV, incremental on sale_id.
/// The report is checked against the same aggregate computed by PostgreSQL
/// itself over the source table.
#[test]
fn retail_mysql_from_postgres_to_a_mysql_warehouse_incrementally() {
    use crate::db::{Kind, TestDb};
    let p = TestProject::copy_of("examples/retail-mysql");
    let shop = TestDb::new(Kind::Postgres);
    let wh = TestDb::new(Kind::Mysql);
    let setup = std::process::Command::new("psql")
        .current_dir(p.path())
        .env("PGOPTIONS", format!("-c search_path={}", shop.name))
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-f",
            "setup/shop.sql",
        ])
        .output()
        .expect("psql runs");
    assert!(setup.status.success(), "{}", String::from_utf8_lossy(&setup.stderr));
    let env = [("RETAIL_SHOP_URL", shop.url()), ("RETAIL_WAREHOUSE_URL", wh.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The report as PostgreSQL computes it from the source table.
    let expected = || {
        let mut rows = vec![vec![
            "product_id".to_string(),
            "product_name".into(),
            "category".into(),
            "orders".into(),
            "units".into(),
            "revenue".into(),
        ]];
        rows.extend(shop.rows(
            "SELECT product_id, product_name, category, count(*), sum(quantity), round(sum(quantity * unit_price), 2) AS revenue
               FROM online_sales GROUP BY 1, 2, 3 ORDER BY revenue DESC, product_id",
        ));
        rows
    };
    let report = |p: &TestProject| -> Vec<Vec<String>> {
        p.read("output/sales_by_product.tsv")
            .lines()
            .map(|l| l.split('\t').map(|x| x.trim_matches('"').replace("\"\"", "\"")).collect())
            .collect()
    };
    let out = p.run_env(&["run"], &env);
    out.expect_code(0);
    assert!(out.stdout.contains("landed 1 file (1,000 rows"), "{}", out.stdout);
    assert_eq!(wh.count("sales"), 1000);
    assert_eq!(report(&p), expected());

    // New sales in the shop: only they are landed and appended.
    shop.exec(
        "INSERT INTO online_sales SELECT sale_id + 1000, sale_ts + interval '1 day', store_id, channel, product_id, product_name, category, quantity + 1, unit_price, customer_email FROM online_sales WHERE sale_id <= 25",
    );
    let out = p.run_env(&["run"], &env);
    out.expect_code(0);
    assert!(out.stdout.contains("landed 1 file (25 rows"), "{}", out.stdout);
    assert_eq!(wh.rows("SELECT COUNT(*), COUNT(DISTINCT sale_id) FROM sales")[0], vec!["1025", "1025"]);
    assert_eq!(report(&p), expected());

    // Nothing new: nothing landed or loaded.
    let out = p.run_env(&["run"], &env);
    out.expect_code(0);
    assert!(out.stdout.contains("no new rows in shop.online_sales"), "{}", out.stdout);
    assert_eq!(wh.count("sales"), 1025);
}
