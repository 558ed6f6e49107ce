//! The dashboard end to end in headless Chromium (Debian's `chromium`,
//! driven by `playwright-core` from npm, never a downloaded browser): on a
//! copy of examples/retail served by `sluice serve`, log in, click "Run ETL
//! Pipeline", see the run succeed live, and check that the charts draw the
//! aggregated values that are in the database. Every page is screenshotted
//! (into docs/screenshots/ with SLUICE_SCREENSHOTS=1, else into the test's
//! folder). The tools come from `.ci/tools.sh`; a missing one fails the test.

use crate::support::{Service, TestProject, free_port, wait_ready};

#[test]
fn dashboard_runs_the_retail_pipeline_and_charts_what_the_database_holds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/e2e/dashboard.mjs");
    assert!(
        root.join("tests/e2e/node_modules/playwright-core").exists()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "playwright-core or chromium is not installed: run .ci/tools.sh"
    );
    let p = TestProject::copy_of("examples/retail");
    let out = p.run(&["token", "create", "--scope", "trigger", "--name", "e2e"]);
    out.expect_code(0);
    let token = out.stdout.trim().to_string();
    let addr = format!("127.0.0.1:{}", free_port());
    let _svc = Service::start(p.path(), "serve", &["serve", "--listen", &addr, "--grace", "1s"], &[]);
    wait_ready(&addr);
    let shots = if std::env::var("SLUICE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        root.join("docs/screenshots")
    } else {
        p.file("screenshots")
    };
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let run = std::process::Command::new("node")
        .arg(&script)
        .current_dir(root.join("tests/e2e"))
        .env("SLUICE_URL", format!("http://{addr}"))
        .env("SLUICE_TOKEN", &token)
        .env("SHOTS", &shots)
        .env("PROFILE", profile.path())
        .output()
        .expect("node runs (install it with .ci/tools.sh)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("the browser test printed no result ({e}):\n{stdout}\n{stderr}"));
    assert!(
        run.status.success() && v["problems"] == serde_json::json!([]),
        "{v:#}\n{stderr}\nscreenshots in {}",
        shots.display()
    );
    assert_eq!(v["anonymous_run_disabled"], true, "reading needs no login here, running does");
    assert_eq!(v["result"], "success", "{v:#}");
    assert!(v["result_text"].as_str().unwrap().starts_with("Succeeded in "), "{v:#}");
    assert_eq!(v["steps_shown"].as_array().unwrap().len(), 5, "each step's progress is shown");
    assert!(v["load_log"].as_str().unwrap().contains("loaded 1,000 rows into sales"), "{v:#}");
    assert_eq!(v["keyboard_reached_data"], true, "the navigation works by keyboard");
    assert_eq!(v["hash_after_keyboard"], "#/data");
    assert_eq!(v["quality_badge"], "99.7 / 100");
    assert!(v["api_operations"].as_u64().unwrap() >= 18, "{v:#}");
    assert_eq!(v["dark_background"], "rgb(15, 18, 22)");
    assert!(v["phone_overflow"].as_i64().unwrap() <= 0, "nothing wider than a phone: {v:#}");

    // What the charts draw is what the database holds.
    let expect = |sql: &str| -> (Vec<String>, Vec<f64>) {
        let rows = p.query(sql);
        (rows.iter().map(|r| r[0].clone()).collect(), rows.iter().map(|r| r[1].parse::<f64>().unwrap()).collect())
    };
    let drawn = |model: &str| -> (Vec<String>, Vec<f64>) {
        let c = &v["charts"][model];
        (
            c["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect(),
            c["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect(),
        )
    };
    let cents = |v: Vec<f64>| -> Vec<i64> { v.iter().map(|x| (x * 100.0).round() as i64).collect() };
    let (labels, values) = expect("SELECT product_name, revenue FROM sales_by_product ORDER BY revenue DESC LIMIT 15");
    let (dl, dv) = drawn("sales_by_product");
    assert_eq!(dl, labels);
    assert_eq!(cents(dv), cents(values));
    let (labels, values) = expect("SELECT category, revenue FROM sales_by_category ORDER BY category");
    let (dl, dv) = drawn("sales_by_category");
    assert_eq!(dl, labels);
    assert_eq!(cents(dv), cents(values));
    assert_eq!(labels.len(), 12);
    for page in ["login", "pipelines", "run", "data", "runs", "quality", "api", "dark", "phone"] {
        assert!(shots.join(format!("dashboard-{page}.png")).exists(), "no screenshot of {page}");
    }
}
