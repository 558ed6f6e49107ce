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
