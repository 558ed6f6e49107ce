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

/// Scenario S4 against s3s-fs: objects fetched from a bucket (`take = "new"`),
/// landed in a lake on S3, cleaned, and the four reports written back to the
/// bucket; a new object is landed alone and the reports follow it.
#[test]
fn object_store_quality_lands_cleans_and_writes_reports_to_s3() {
    use crate::s3::{S3, Server};
    let s3 = S3::start(Server::S3sFs);
    s3.bucket("drops");
    s3.bucket("lake");
    let p = TestProject::copy_of("examples/object-store-quality");
    let first = p.read("incoming/readings-2026-11-30T0800.csv");
    std::fs::remove_dir_all(p.file("incoming")).unwrap();
    s3.put("drops", "incoming/readings-2026-11-30T0800.csv", first.as_bytes());
    let mut env = s3.env();
    env.push(("SLUICE_OSQ_SOURCE", s3.url("drops", "incoming/*.csv")));
    env.push(("SLUICE_OSQ_LAKE", s3.url("lake", "sluice")));
    env.push(("SLUICE_OSQ_REPORTS", s3.url("lake", "reports")));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    p.run_env(&["check"], &env).expect_code(0);
    let out = p.run_env(&["run", "fetch"], &env);
    out.expect_code(0);
    assert!(out.stdout.contains("landed 1 file (12 rows"), "{}", out.stdout);
    let out = p.run_env(&["run", "clean"], &env);
    out.expect_code(0);
    assert!(out.stdout.contains("(4 removed: 1 invalid, 1 duplicate, 2 outlier)"), "{}", out.stdout);
    let bucket = s3.dir.path().join("lake");
    let read =
        |rel: &str| std::fs::read_to_string(bucket.join(rel)).unwrap_or_else(|e| panic!("{rel} in the bucket: {e}"));
    let json = |rel: &str| -> serde_json::Value { serde_json::from_str(&read(rel)).unwrap() };
    assert_eq!(
        read("reports/cleaned_data.csv"),
        "reading_id,sensor,city,reading_at,temp_c,humidity,pressure_hpa
1,s-01,helsinki,2026-11-30 08:00:00,3.50,81.0,1012
2,s-02,espoo,2026-11-30 08:00:00,3.90,79.5,1011
3,s-03,tampere,2026-11-30 08:00:00,1.20,85.0,1009
4,s-04,turku,2026-11-30 08:00:00,,88.0,1013
5,s-05,oulu,2026-11-30 08:00:00,1.00,90.0,1008
6,s-06,helsinki,2026-11-30 08:06:00,3.70,80.0,1012
7,s-07,espoo,2026-11-30 08:05:00,4.00,78.0,
11,s-11,pori,2026-11-30 08:05:00,2.80,83.5,1011
"
    );
    assert_eq!(read("reports/raw_data.csv").lines().count(), 13);
    let summary = json("reports/summary_report.json");
    assert_eq!((summary["rows_in"].as_u64(), summary["rows_out"].as_u64()), (Some(12), Some(8)), "{summary}");
    let quality = json("reports/quality_metrics.json");
    assert!(quality["score"].as_f64().is_some_and(|s| s > 90.0 && s < 100.0), "{quality}");
    assert!(quality["columns"].is_object() || quality["columns"].is_array(), "{quality}");
    // The landing is in the lake on S3, with its manifest.
    let landed = crate::support::files_under(&bucket.join("sluice/raw/readings"));
    assert!(landed.iter().any(|f| f.ends_with("/readings-2026-11-30T0800.csv")), "{landed:?}");
    assert!(landed.iter().any(|f| f.ends_with("/_manifest.json")), "{landed:?}");
    // Nothing local: no lake, no reports folder.
    assert!(!p.file(".sluice/lake").exists() && !p.file("output").exists());

    // Half an hour later: one new object (a later reading of sensor 1, two new sensors).
    s3.put(
        "drops",
        "incoming/readings-2026-11-30T0830.csv",
        b"reading_id,sensor,city,reading_at,temp_c,humidity,pressure_hpa
12,s-12,Helsinki,2026-11-30 08:30:00,3.1,80.0,1012
13,s-13,Espoo,2026-11-30 08:30:00,3.3,79.0,1011
1,s-01,Helsinki,2026-11-30 08:30:00,3.2,81.5,1012
",
    );
    let out = p.run_env(&["run", "fetch"], &env);
    out.expect_code(0);
    assert!(out.stdout.contains("landed 1 file (3 rows"), "only the new object: {}", out.stdout);
    p.run_env(&["run", "clean"], &env).expect_code(0);
    let summary = json("reports/summary_report.json");
    assert_eq!((summary["rows_in"].as_u64(), summary["rows_out"].as_u64()), (Some(15), Some(10)), "{summary}");
    let cleaned = read("reports/cleaned_data.csv");
    assert!(cleaned.contains("\n1,s-01,helsinki,2026-11-30 08:30:00,3.20,81.5,1012\n"), "{cleaned}");
    assert!(cleaned.contains("\n13,s-13,espoo,"), "{cleaned}");
    // Nothing new: the fetch lands nothing and downloads nothing.
    let out = p.run_env(&["run", "fetch"], &env);
    out.expect_code(0);
    assert!(out.stdout.contains("nothing new under s3://drops/incoming/*.csv"), "{}", out.stdout);
}

/// Scenario S4 on the embedded default: objects from incoming/, reports in output/.
#[test]
fn object_store_quality_runs_on_the_embedded_default() {
    let p = TestProject::copy_of("examples/object-store-quality");
    p.run(&["run", "fetch"]).expect_code(0);
    p.run(&["run", "clean"]).expect_code(0);
    for f in ["raw_data.csv", "cleaned_data.csv", "summary_report.json", "quality_metrics.json"] {
        assert!(p.file("output").join(f).exists(), "output/{f}");
    }
    let next = p.run(&["next"]);
    next.expect_code(0);
    assert!(next.stdout.contains("fetch"), "{}", next.stdout);
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
