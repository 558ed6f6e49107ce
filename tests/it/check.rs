//! `sluice check`: every problem of a broken project, each at file:line:col.

use crate::support::TestProject;

fn broken_project() -> TestProject {
    let p = TestProject::new();
    p.write(
        "sluice.toml",
        r#"name = "broken"
colour = "blue"

[connections.main]
url = "postgres://app:${env:SLUICE_IT_UNSET_PASSWORD}@db/x"

[defaults]
connection = "mian"
timezone = "Europe/Helsnki"
"#,
    );
    p.write(
        "pipelines/daily.toml",
        r#"[[triggers]]
cron = "0 25 * * *"

[[steps]]
name = "ingest"
kind = "ingest"
source = "data/missing.csv"

[[steps]]
name = "load"
kind = "load"
from = "ingest"
table = "sales"
conection = "main"
retries = "three"
[steps.columns]
id = "intger"

[[steps]]
name = "a"
kind = "sql"
depends_on = ["b"]
models = ["agg_sale"]

[[steps]]
name = "b"
kind = "export"
depends_on = ["a", "lod"]
table = "agg"
path = "out.tsv"
"#,
    );
    p.write("models/agg_sales.sql", "select * from {{ ref('sales') }} join {{ ref('other') }} using (id)\n");
    p.write("models/other.sql", "select * from {{ ref('agg_sales') }}\n");
    p.write("models/bad.sql", "select {{ ref('salse') }\n");
    p.write("models/unknown_ref.sql", "select *\nfrom {{ ref('slaes') }}\n");
    p
}

#[test]
fn check_reports_every_error_with_its_place() {
    let p = broken_project();
    let out = p.run(&["check"]);
    out.expect_code(2);
    let headlines: Vec<&str> = out.stdout.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(
        headlines,
        vec![
            "models/agg_sales.sql:1:46: found a cycle between models: models/agg_sales.sql -> models/other.sql -> models/agg_sales.sql",
            "models/bad.sql:1:24: template syntax error: unexpected `}`, expected end of variable block",
            "models/unknown_ref.sql:2:13: unknown model or table `slaes` in ref()",
            "pipelines/daily.toml:2:8: invalid cron expression \"0 25 * * *\": hour 25 is out of range (0-23)",
            "pipelines/daily.toml:7:10: source file not found: data/missing.csv",
            "pipelines/daily.toml:14:1: unknown key `conection` in step `load`",
            "pipelines/daily.toml:15:11: wrong type for `retries`: expected a non-negative integer, found a string",
            "pipelines/daily.toml:17:6: column `id`: unknown type \"intger\"; did you mean `integer`?",
            "pipelines/daily.toml:22:15: dependency cycle in pipeline `daily`: a -> b -> a",
            "pipelines/daily.toml:23:11: unknown model `agg_sale` in step `a`",
            "pipelines/daily.toml:28:20: unknown step `lod` in depends_on of step `b`",
            "sluice.toml:2:1: unknown key `colour` in sluice.toml",
            "sluice.toml:8:14: unknown connection `mian`",
            "sluice.toml:9:12: unknown time zone \"Europe/Helsnki\"",
            "14 errors in project `broken`",
        ]
    );
    // Each problem says how to fix it where there is something to say.
    for help in [
        "= help: did you mean `connection`?",
        "= help: did you mean `agg_sales`?",
        "= help: did you mean `load`?",
        "= help: did you mean `main`?",
        "= help: did you mean `Europe/Helsinki`?",
        "= help: did you mean `sales`?",
        "= help: valid keys here: name, description, connections, storage, defaults, vars, models, state",
    ] {
        assert!(out.stdout.contains(help), "missing {help:?} in:\n{}", out.stdout);
    }
    // The source line is shown under each problem with the span underlined.
    assert!(out.stdout.contains(" 14 | conection = \"main\"\n    | ^^^^^^^^^\n"), "{}", out.stdout);
}

#[test]
fn run_refuses_a_broken_project_with_the_same_errors() {
    let p = broken_project();
    let out = p.run(&["run", "daily"]);
    out.expect_code(2);
    assert!(out.stderr.starts_with("error: models/agg_sales.sql:1:46: found a cycle"), "{}", out.stderr);
    assert!(out.stderr.contains("14 errors found"), "{}", out.stderr);
    assert!(!p.file(".sluice").exists(), "a refused run must not create anything");
}

#[test]
fn a_valid_project_checks_clean() {
    let p = TestProject::new();
    let init = crate::support::run_in(p.path(), &["init", "demo"], &[]);
    init.expect_code(0);
    let out = crate::support::run_in(p.path(), &["check", "-p", "demo"], &[]);
    out.expect_code(0);
    assert_eq!(out.stdout, "project `demo` is valid: 1 pipeline, 4 steps, 2 models\n");
}

#[test]
fn toml_syntax_errors_and_missing_project_files() {
    let p = TestProject::new();
    let out = p.run(&["check"]);
    out.expect_code(2);
    assert!(out.stderr.contains("has no sluice.toml: not a sluice project"), "{}", out.stderr);
    p.write("sluice.toml", "name = \"x\"\n[storage\nurl = 1\n");
    let out = p.run(&["check"]);
    out.expect_code(2);
    assert!(out.stdout.starts_with("sluice.toml:2:"), "{}", out.stdout);
    assert!(out.stdout.contains("invalid TOML"), "{}", out.stdout);
}

#[test]
fn a_glob_that_matches_nothing_yet_is_a_warning() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"w\"\n");
    p.write("pipelines/p.toml", "[[steps]]\nname = \"i\"\nkind = \"ingest\"\nsource = \"drops/*.csv\"\n");
    let out = p.run(&["check"]);
    out.expect_code(0);
    assert!(
        out.stdout.starts_with("pipelines/p.toml:4:10: warning: no file matches \"drops/*.csv\" yet"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.ends_with("project `w` is valid: 1 pipeline, 1 step, 0 models (1 warning)\n"), "{}", out.stdout);
}
