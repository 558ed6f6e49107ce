//! Bad input gets a clear error naming file, line, column and value, and the
//! target is left exactly as it was.

use crate::support::{TestProject, simple_project};

const COLUMNS: &str = "id = \"integer not null\"\nname = \"text\"\nqty = \"integer\"\nprice = \"decimal(8,2)\"";
const GOOD: &[u8] = b"id,name,qty,price\n1,apple,3,1.50\n2,\"pear, green\",1,2.00\n";

/// A project loaded once with good data; returns it with the table's rows.
fn loaded() -> (TestProject, Vec<Vec<String>>, String) {
    let p = simple_project(COLUMNS, GOOD);
    p.run(&["run"]).expect_code(0);
    let rows = p.query("select id, name, qty, price from t order by id");
    assert_eq!(rows, vec![vec!["1", "apple", "3", "1.5"], vec!["2", "pear, green", "1", "2"]]);
    let tsv = p.read("out/t.tsv");
    assert_eq!(tsv, "id\tname\tqty\tprice\n1\tapple\t3\t1.50\n2\tpear, green\t1\t2.00\n");
    (p, rows, tsv)
}

/// Replaces the input, runs, and checks the load failed leaving everything as before.
fn fails_with(csv: &[u8], expected_errors: &[&str]) -> String {
    let (p, rows, tsv) = loaded();
    let loads = p.query("select object from _sluice_loads order by 1");
    assert_eq!(loads.len(), 2, "the landing and its one file: {loads:?}");
    p.write_bytes("data/in.csv", csv);
    let out = p.run(&["run"]);
    out.expect_code(3);
    let errs: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("    data/")).map(|l| l.trim_start()).collect();
    assert_eq!(errs, expected_errors, "\n{}", out.stdout);
    assert_eq!(p.query("select id, name, qty, price from t order by id"), rows, "the table changed");
    assert_eq!(p.query("select object from _sluice_loads order by 1"), loads, "a failed load was recorded");
    assert_eq!(p.read("out/t.tsv"), tsv, "the export changed");
    assert!(
        out.stdout.contains("export               skipped           (upstream step `load` failed)"),
        "{}",
        out.stdout
    );
    out.stdout
}

#[test]
fn a_row_with_missing_columns() {
    let out = fails_with(
        b"id,name,qty,price\n1,apple,3,1.50\n2,pear\n3,plum,1,0.50\n",
        &["data/in.csv:3: has 2 fields, expected 4 (no value for `qty`, `price`)"],
    );
    assert!(out.contains("  error: 1 bad row; nothing was loaded; table `t` is unchanged\n"), "{out}");
}

#[test]
fn values_that_are_not_of_their_type() {
    fails_with(
        b"id,name,qty,price\n1,apple,three,1.50\n2,pear,1,12.345\n3,plum,1,$1\n,fig,1,1.00\n",
        &[
            "data/in.csv:2: column `qty`: \"three\" is not an integer",
            "data/in.csv:3: column `price`: \"12.345\" has 3 decimal places; decimal(8,2) allows 2 (values are never rounded)",
            "data/in.csv:4: column `price`: \"$1\" is not a decimal(8,2) number",
            "data/in.csv:5: column `id`: \"\" is missing; the column is declared not null",
        ],
    );
}

#[test]
fn an_unterminated_quote_is_reported_where_it_opens_and_later_rows_are_still_checked() {
    fails_with(
        b"id,name,qty,price\n1,\"fig,5,3.00\n2,kiwi,1,0.99\n3,\"Acme \"\"Pro\"\" Mouse\",x,1.00\n4,lime,1,1.00\n",
        &[
            "data/in.csv:2: column `name`: \"\\\"fig,5,3.00\" opens a quote that is never closed on this line",
            "data/in.csv:4: column `qty`: \"x\" is not an integer",
        ],
    );
}

#[test]
fn invalid_utf8_names_the_byte() {
    fails_with(
        b"id,name,qty,price\n1,\"caf\xe9\",1,1.00\n",
        &["data/in.csv:2: column `name`: \"caf\\xe9\" is not valid UTF-8 (invalid byte at offset 3)"],
    );
}

#[test]
fn a_header_missing_a_required_column() {
    let (p, rows, _) = loaded();
    p.write("data/in.csv", "id,name,qty\n1,a,1\n");
    let out = p.run(&["run"]);
    out.expect_code(3);
    assert!(
        out.stdout.contains(
            "  error: data/in.csv:1: the header does not match the columns declared for `t`; missing column `price`\n    expected: id, name, qty, price\n    found:    id, name, qty\n"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(p.query("select id, name, qty, price from t order by id"), rows);
}

#[test]
fn a_load_failing_on_its_last_row_leaves_the_table_unchanged() {
    // Enough rows for many batches to reach the database before the bad one.
    let (p, rows, tsv) = loaded();
    let mut csv = String::from("id,name,qty,price\n");
    for i in 0..20_000 {
        csv.push_str(&format!("{i},item {i},{},{}.{:02}\n", i % 7, i % 100, i % 100));
    }
    csv.push_str("20000,last,1,not-a-price\n");
    p.write("data/in.csv", &csv);
    let out = p.run(&["run"]);
    out.expect_code(3);
    assert!(
        out.stdout.contains("    data/in.csv:20002: column `price`: \"not-a-price\" is not a decimal(8,2) number\n"),
        "{}",
        out.stdout
    );
    assert_eq!(p.query("select id, name, qty, price from t order by id"), rows);
    assert_eq!(p.read("out/t.tsv"), tsv);
    // Fixing the last row loads everything, exactly once.
    p.write("data/in.csv", &csv.replace("not-a-price", "1.00"));
    p.run(&["run"]).expect_code(0);
    assert_eq!(p.query("select count(*), count(distinct id) from t"), vec![vec!["20001", "20001"]]);
}

#[test]
fn a_missing_source_file_stops_the_run_before_it_starts() {
    let p = simple_project(COLUMNS, GOOD);
    std::fs::remove_file(p.file("data/in.csv")).unwrap();
    let out = p.run(&["run"]);
    out.expect_code(2);
    assert!(
        out.stderr.starts_with("error: pipelines/p.toml:4:10: source file not found: data/in.csv\n"),
        "{}",
        out.stderr
    );
    assert!(!p.file(".sluice").exists());
}

#[test]
fn an_unwritable_output_folder_leaves_no_partial_file() {
    let p = simple_project(COLUMNS, GOOD);
    // A file where the output folder should be: no one can create it, not even root.
    p.write("out", "not a folder");
    let out = p.run(&["run"]);
    out.expect_code(2);
    assert!(out.stdout.contains("export               FAILED"), "{}", out.stdout);
    assert!(out.stdout.contains("  error: cannot create the output folder "), "{}", out.stdout);
    assert_eq!(p.read("out"), "not a folder");
}

#[test]
fn an_output_path_that_is_a_folder_leaves_no_temporary_file() {
    let p = simple_project(COLUMNS, GOOD);
    std::fs::create_dir_all(p.file("out/t.tsv")).unwrap();
    let out = p.run(&["run"]);
    assert_ne!(out.code, 0);
    assert!(out.stdout.contains("export               FAILED"), "{}", out.stdout);
    let left: Vec<String> = std::fs::read_dir(p.file("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["t.tsv"], "a temporary file was left behind");
}

#[test]
fn a_model_with_a_sql_error_names_its_file_and_the_database_message() {
    let p = simple_project(COLUMNS, GOOD);
    p.write("models/good.sql", "select id, qty * price as amount from {{ ref('t') }}\n");
    p.write("models/bad.sql", "select nope from {{ ref('good') }}\n");
    p.write(
        "pipelines/p.toml",
        &(p.read("pipelines/p.toml") + "\n[[steps]]\nname = \"models\"\nkind = \"sql\"\ndepends_on = [\"load\"]\n"),
    );
    let out = p.run(&["run"]);
    out.expect_code(2);
    assert!(out.stdout.contains("models               FAILED"), "{}", out.stdout);
    assert!(
        out.stdout.contains("  error: 1 of 2 models failed (1 built): model `bad` (models/bad.sql:1:8, compiled in target/compiled/models/bad.sql:1:8): cannot build bad: no such column: nope\n"),
        "{}",
        out.stdout
    );
    // The model built before the failure is there; the failed one does not exist.
    assert_eq!(p.query("select count(*) from good"), vec![vec!["2"]]);
    assert_eq!(p.query("select count(*) from sqlite_master where name = 'bad'"), vec![vec!["0"]]);
}

/// Issue 11, item 22: headers with an empty or repeated name are reported at
/// the header's line before anything is created, not by the database.
#[test]
fn header_names_must_be_present_and_unique() {
    let p = crate::support::TestProject::new();
    for (csv, err) in [
        ("a,,c\n1,2,3\n", "h.csv:1: field 2 of the header has no name; every column needs one (the header is: a,,c)"),
        ("a,b,a\n1,2,3\n", "h.csv:1: the header names column `a` twice (fields 1 and 3); column names must be unique"),
    ] {
        p.write("h.csv", csv);
        let out = p.run(&["load", "h.csv", "sqlite://w.db", "--table", "h", "--create"]);
        out.expect_code(3);
        assert!(out.stderr.contains(err), "{}", out.stderr);
        assert!(crate::support::query_sqlite(&p.file("w.db"), "select name from sqlite_master").is_empty());
    }
    // An empty table name is refused before anything else.
    let out = p.run(&["load", "h.csv", "sqlite://w.db", "--table", "", "--create"]);
    out.expect_code(2);
    assert!(out.stderr.contains("the table name is empty"), "{}", out.stderr);
}

/// Issue 11, item 22: a line far longer than a record may be is reported as
/// too long at its own line, and a file with CR-only line ends loads by line.
#[test]
fn overlong_lines_and_cr_only_files() {
    let p = crate::support::TestProject::new();
    let mut big = b"id,name\n1,a\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 70 << 20));
    big.extend_from_slice(b",b\n");
    p.write_bytes("big.csv", &big);
    p.write("s.toml", "[columns]\nid = \"integer\"\nname = \"text\"\n");
    let out = p.run(&["load", "big.csv", "sqlite://w.db", "--table", "t", "--schema", "s.toml", "--create"]);
    out.expect_code(3);
    assert!(
        out.stderr.contains("big.csv:3: column `id`:") && out.stderr.contains("is on a line longer than 64 MiB"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("quote"), "{}", out.stderr);
    p.write("mac.csv", "id,name\r1,a\r2,b\r");
    p.run(&["load", "mac.csv", "sqlite://w.db", "--table", "m", "--schema", "s.toml", "--create"]).expect_code(0);
    assert_eq!(
        crate::support::query_sqlite(&p.file("w.db"), "select id, name from m order by id"),
        [["1", "a"], ["2", "b"]]
    );
}
