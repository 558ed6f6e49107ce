//! `sluice init`, `run` and `dag` on whole projects.

use crate::support::{TestProject, run_in, simple_project};

const REPORT: &str = "product\torders\tunits\trevenue
\"Monitor 27\"\" 4K\"\t2\t2\t578.0
Desk Lamp, brass\t2\t3\t119.7
Notebook\t3\t9\t40.5
Gel Pens\t2\t6\t37.5
Stapler\t1\t1\t12.0
";

#[test]
fn init_then_run_produces_the_report() {
    let p = TestProject::new();
    run_in(p.path(), &["init", "demo"], &[]).expect_code(0);
    let out = run_in(p.path(), &["run", "-p", "demo"], &[]);
    out.expect_code(0);
    assert_eq!(std::fs::read_to_string(p.file("demo/output/revenue_by_product.tsv")).unwrap(), REPORT);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", out.stdout);
    assert!(lines[0].starts_with("ingest_orders        ok"), "{}", lines[0]);
    assert!(lines[0].contains("landed 1 file (10 rows, 631 B) under raw/orders/"), "{}", lines[0]);
    assert!(lines[1].ends_with("loaded 10 rows into orders from 1 file (631 B)"), "{}", lines[1]);
    assert!(lines[2].ends_with("built 2 models: stg_orders, revenue_by_product"), "{}", lines[2]);
    assert!(
        lines[3].ends_with("wrote 5 rows of revenue_by_product to demo/output/revenue_by_product.tsv (137 B)"),
        "{}",
        lines[3]
    );
    assert!(lines[4].starts_with("pipeline `daily` succeeded: 4 steps in "), "{}", lines[4]);
    // No temporary files are left next to the output.
    let names: Vec<String> = std::fs::read_dir(p.file("demo/output"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["revenue_by_product.tsv"]);
    // init refuses a folder that is not empty.
    let again = run_in(p.path(), &["init", "demo"], &[]);
    again.expect_code(2);
    assert_eq!(again.stderr, "error: demo already exists and is not empty; choose a new folder\n");
}

#[test]
fn a_second_run_lands_and_loads_nothing_twice() {
    let p = simple_project("id = \"integer\"\nname = \"text\"", b"id,name\n1,a\n2,b\n");
    p.run(&["run"]).expect_code(0);
    let out = p.run(&["run"]);
    out.expect_code(0);
    assert!(out.stdout.contains("nothing new: the source holds the 1 file landed last"), "{}", out.stdout);
    assert!(out.stdout.contains("nothing new to load into t"), "{}", out.stdout);
    assert_eq!(p.query("select id, name from t order by id"), vec![vec!["1", "a"], vec!["2", "b"]]);
    // One raw copy, one manifest, and the load records of the landing and its file.
    let lake = p.file(".sluice/lake/raw/ingest");
    let mut files: Vec<String> = crate::support::files_under(&lake);
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().any(|f| f.ends_with("/in.csv")) && files.iter().any(|f| f.ends_with("/_manifest.json")));
    assert_eq!(p.query("select count(*) from _sluice_loads"), vec![vec!["2"]]);
    // The raw copy is byte for byte the source, and the manifest says so.
    let raw = files.iter().find(|f| f.ends_with("/in.csv")).unwrap();
    assert_eq!(std::fs::read(raw).unwrap(), b"id,name\n1,a\n2,b\n");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(files.iter().find(|f| f.ends_with("_manifest.json")).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["files"][0]["rows"], 2);
    assert_eq!(manifest["files"][0]["bytes"], 16);
    assert_eq!(manifest["files"][0]["sha256"], sha256_hex(b"id,name\n1,a\n2,b\n").as_str());
    // A changed file is landed and loaded (replace mode: the table is the new file).
    p.write("data/in.csv", "id,name\n3,c\n");
    p.run(&["run"]).expect_code(0);
    assert_eq!(p.query("select id, name from t order by id"), vec![vec!["3", "c"]]);
    assert_eq!(p.read("out/t.tsv"), "id\tname\n3\tc\n");
}

fn sha256_hex(b: &[u8]) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        });
    String::from_utf8(out.unwrap().stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

#[test]
fn append_mode_adds_each_new_file_once() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"a\"\n");
    p.write(
        "pipelines/p.toml",
        r#"[[steps]]
name = "ingest"
kind = "ingest"
source = "drops/*.csv"
dataset = "events"

[[steps]]
name = "load"
kind = "load"
from = "ingest"
table = "events"
[steps.columns]
id = "bigint not null"
at = "date"
"#,
    );
    p.write("drops/a.csv", "id,at\n1,2026-01-01\n");
    p.run(&["run"]).expect_code(0);
    p.write("drops/b.csv", "id,at\n2,2026-01-02\n");
    // A copy of a.csv under another name has the same bytes: not landed again.
    p.write("drops/c.csv", "id,at\n1,2026-01-01\n");
    let out = p.run(&["run"]);
    out.expect_code(0);
    assert!(out.stdout.contains("landed 1 file (1 row, 19 B)"), "{}", out.stdout);
    assert!(out.stdout.contains("; 2 already stored"), "{}", out.stdout);
    assert_eq!(
        p.query("select id, at from events order by id"),
        vec![vec!["1", "2026-01-01"], vec!["2", "2026-01-02"]]
    );
}

#[test]
fn dag_as_tree_dot_and_json() {
    let p = TestProject::new();
    run_in(p.path(), &["init", "demo"], &[]).expect_code(0);
    let out = run_in(p.path(), &["dag", "-p", "demo"], &[]);
    out.expect_code(0);
    assert_eq!(
        out.stdout,
        "daily
└── ingest_orders  [ingest: data/orders.csv → raw/orders/]
    └── load_orders  [load: ingest_orders → table orders (replace)]
        └── build_models  [sql: stg_orders, revenue_by_product]
            └── export_report  [export: revenue_by_product → output/revenue_by_product.tsv]
"
    );
    let dot = run_in(p.path(), &["dag", "-p", "demo", "daily", "--format", "dot"], &[]);
    dot.expect_code(0);
    assert!(dot.stdout.starts_with("digraph \"daily\" {"), "{}", dot.stdout);
    assert!(dot.stdout.contains("  \"load_orders\" -> \"build_models\";\n"), "{}", dot.stdout);
    let json = run_in(p.path(), &["dag", "-p", "demo", "daily", "--format", "json"], &[]);
    json.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["pipeline"], "daily");
    assert_eq!(v["steps"][1]["depends_on"], serde_json::json!(["ingest_orders"]));
    assert_eq!(v["steps"][2]["models"][1], serde_json::json!({"name": "revenue_by_product", "refs": ["stg_orders"]}));
}

#[test]
fn a_branching_dag_draws_each_step_once() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"b\"\n");
    p.write("data/x.csv", "a\n1\n");
    p.write(
        "pipelines/p.toml",
        r#"[[steps]]
name = "land"
kind = "ingest"
source = "data/x.csv"
[[steps]]
name = "load"
kind = "load"
from = "land"
table = "x"
columns = { a = "integer" }
[[steps]]
name = "tsv"
kind = "export"
depends_on = ["load"]
table = "x"
path = "out/x.tsv"
[[steps]]
name = "csv"
kind = "export"
depends_on = ["load"]
table = "x"
path = "out/x.csv"
[[steps]]
name = "both"
kind = "export"
depends_on = ["tsv", "csv"]
query = "select count(*) as n from {{ ref('x') }}"
path = "out/n.tsv"
"#,
    );
    let out = p.run(&["dag"]);
    out.expect_code(0);
    assert_eq!(
        out.stdout,
        "p
└── land  [ingest: data/x.csv → raw/land/]
    └── load  [load: land → table x (append)]
        ├── tsv  [export: x → out/x.tsv]
        └── csv  [export: x → out/x.csv]
            └── both  [export: query → out/n.tsv]  (also after tsv)
"
    );
    p.run(&["run"]).expect_code(0);
    assert_eq!(p.read("out/x.csv"), "a\n1\n");
    assert_eq!(p.read("out/n.tsv"), "n\n1\n");
}

#[test]
fn secrets_from_env_are_used_but_never_printed() {
    let p = TestProject::new();
    p.write(
        "sluice.toml",
        "name = \"s\"\n[connections.pg]\nurl = \"postgres://app:${env:SLUICE_IT_PW}@127.0.0.1:1/nodb\"\n",
    );
    p.write("pipelines/p.toml", "[[steps]]\nname = \"x\"\nkind = \"export\"\nquery = \"select 1\"\npath = \"o.tsv\"\n");
    p.write(".env", "SLUICE_IT_PW=hunter2-from-dotenv\n");
    let out = p.run(&["run"]);
    assert_ne!(out.code, 0);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!all.contains("hunter2"), "a secret was printed:\n{all}");
    assert!(all.contains("postgres://app:***@127.0.0.1:1/nodb") || all.contains("${env:SLUICE_IT_PW}"), "{all}");
}

#[test]
fn run_names_pipelines_and_steps_helpfully() {
    let p = simple_project("id = \"integer\"", b"id\n1\n");
    p.write(
        "pipelines/other.toml",
        "[[steps]]\nname = \"x\"\nkind = \"export\"\nquery = \"select 1\"\npath = \"o.tsv\"\n",
    );
    let out = p.run(&["run"]);
    out.expect_code(2);
    assert_eq!(out.stderr, "error: the project has 2 pipelines; name the one to use: other, p\n");
    let out = p.run(&["run", "pp"]);
    out.expect_code(2);
    assert_eq!(out.stderr, "error: no pipeline named `pp`: did you mean `p`?\n");
    let out = p.run(&["run", "p", "--step", "lod"]);
    out.expect_code(2);
    assert_eq!(out.stderr, "error: pipeline `p` has no step `lod`; did you mean `load`?\n");
    let out = p.run(&["run", "p", "--step", "ingest"]);
    out.expect_code(0);
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
}

#[test]
fn any_value_may_come_from_the_environment() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"e\"\n[defaults]\ntimezone = \"${env:SLUICE_IT_TZ:-UTC}\"\n");
    p.write("pipelines/p.toml", "[[steps]]\nname = \"i\"\nkind = \"ingest\"\nsource = \"${env:SLUICE_IT_SRC}\"\n");
    p.write("in/x.csv", "a\n1\n");
    let out = p.run(&["check"]);
    out.expect_code(2);
    assert!(
        out.stdout.starts_with("pipelines/p.toml:4:10: environment variable `SLUICE_IT_SRC` is not set"),
        "{}",
        out.stdout
    );
    let out = p.run_env(&["run"], &[("SLUICE_IT_SRC", "in/x.csv"), ("SLUICE_IT_TZ", "Europe/Helsinki")]);
    out.expect_code(0);
    assert!(out.stdout.contains("landed 1 file (1 row, 4 B)"), "{}", out.stdout);
    let out = p.run_env(&["check"], &[("SLUICE_IT_SRC", "in/x.csv"), ("SLUICE_IT_TZ", "Mars/Olympus")]);
    out.expect_code(2);
    assert!(out.stdout.starts_with("sluice.toml:3:12: unknown time zone \"Mars/Olympus\""), "{}", out.stdout);
}

/// A quarantining load records its first rejected rows in the run, for the
/// dashboard's run page: file, line, column, value and reason.
#[test]
fn a_loads_first_rejected_rows_are_kept_with_the_run() {
    let p = simple_project("id = \"integer\"\nname = \"text\"", b"id,name\n1,a\nx,b\n3,c\n");
    let pl = p.read("pipelines/p.toml").replace("mode = \"replace\"", "mode = \"replace\"\non_error = \"quarantine\"");
    p.write("pipelines/p.toml", &pl);
    p.run(&["run"]).expect_code(0);
    let out = crate::support::query_sqlite(
        &p.file(".sluice/state.db"),
        "select output from sluice_tasks where step = 'load'",
    );
    let v: serde_json::Value = serde_json::from_str(&out[0][0]).unwrap();
    let first = &v["details"]["first_rejects"];
    assert_eq!(first.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(first[0]["file"], "data/in.csv");
    assert_eq!(first[0]["line"], 3);
    assert_eq!(first[0]["column"], "id");
    assert_eq!(first[0]["value"], "x");
}

/// The step kinds' conformance test, end to end: a pipeline with one step of
/// each registered kind (its registry example, named after the kind) passes
/// `sluice check`, and `sluice dag` describes each step as its kind.
#[test]
fn every_step_kind_describes_itself() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"kinds\"\n");
    p.write("data/a.csv", "a\n1\n");
    let mut toml = String::from("name = \"p\"\n");
    for k in sluice::project::KINDS {
        toml.push_str(&format!("\n[[steps]]\nname = \"{0}\"\nkind = \"{0}\"\n{1}\n", k.name, k.example));
    }
    p.write("pipelines/p.toml", &toml);
    p.run(&["check"]).expect_code(0);
    let out = p.run(&["dag", "p"]);
    out.expect_code(0);
    for k in sluice::project::KINDS {
        let line = out.stdout.lines().find(|l| l.contains(&format!("{}  [", k.name)));
        let line = line.unwrap_or_else(|| panic!("`dag` does not draw step {}: {}", k.name, out.stdout));
        assert!(line.contains(&format!("[{}", k.name)), "`dag` describes step {} as {line}", k.name);
    }
}
