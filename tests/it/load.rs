//! `sluice load` against real SQLite, PostgreSQL and MariaDB: the same cases for
//! every backend (a conformance suite), each in its own database.

use std::process::Command;

use crate::db::{Kind, SALES_SCHEMA, TestDb, gen_sales, tool};
use crate::support::{Out, TestProject, run_in};

per_backend!(
    [sqlite => Sqlite, postgres => Postgres, mariadb => Mysql]
    every_type_round_trips,
    dirty_rows_are_reported_at_their_manifest_lines,
    fail_publishes_nothing_and_lists_the_first_ten,
    skip_loads_good_rows_up_to_max_errors,
    replace_swaps_in_a_new_table_and_keeps_views,
    merge_updates_and_inserts_by_key,
    schema_drift_follows_the_policy,
    json_and_ndjson_load_like_csv,
    a_killed_load_leaves_the_table_unchanged_and_reruns_once,
);

fn load(p: &TestProject, args: &[&str]) -> Out {
    run_in(p.path(), &[&["load"], args].concat(), &[])
}

fn export(p: &TestProject, url: &str, sql: &str) -> String {
    let out = run_in(p.path(), &["export", url, "--query", sql], &[]);
    out.expect_code(0);
    out.stdout
}

const ROUND_TRIP_CSV: &str = "id,i16,i64,amount,f,txt,vc,b,d,ts,tstz,j
1,-32768,9223372036854775807,-1234567890123.45,1.5,\"héllo, \"\"world\"\"\",abc,true,2024-02-29,2024-02-29 23:59:59.123456,2024-02-29T23:59:59+02:00,\"{\"\"a\"\": [1, 2]}\"
2,,,,,\"\",,,,,,
3,32767,-9223372036854775808,0.01,-0.25,\"line1
line2\ttab\\back\",,false,1970-01-01,1970-01-01 00:00:00,1970-01-01T00:00:00Z,[]
4,0,0,9999999999999.99,1e10,日本語 ✓,x,yes,9999-12-31,2000-01-01T12:00:00,2000-01-01 12:00:00.5-05:30,null
";

const ROUND_TRIP_SCHEMA: &str = "[columns]
id = \"integer not null\"
i16 = \"smallint\"
i64 = \"bigint\"
amount = \"decimal(15,2)\"
f = \"float\"
txt = \"text\"
vc = \"varchar(3)\"
b = \"boolean\"
d = \"date\"
ts = \"timestamp\"
tstz = \"timestamptz\"
j = \"json\"
";

fn every_type_round_trips(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::new();
    p.write("rt.csv", ROUND_TRIP_CSV);
    p.write("rt.toml", ROUND_TRIP_SCHEMA);
    let url = db.url();
    let out = load(&p, &["rt.csv", &url, "--table", "t", "--schema", "rt.toml", "--create"]);
    out.expect_code(0);
    assert!(out.stdout.starts_with("loaded 4 rows into t from 1 file"), "{}", out.stdout);
    // MySQL has no time-zone type: timestamptz is stored as UTC without an offset.
    let tz = if kind == Kind::Mysql { "" } else { "+00" };
    let expected = format!(
        "id\ti16\ti64\tamount\tf\ttxt\tvc\tb\td\tts\ttstz\tj
1\t-32768\t9223372036854775807\t-1234567890123.45\t1.5\t\"héllo, \"\"world\"\"\"\tabc\ttrue\t2024-02-29\t2024-02-29 23:59:59.123456\t2024-02-29 21:59:59{tz}\t\"{{\"\"a\"\": [1, 2]}}\"
2\t\t\t\t\t\"\"\t\t\t\t\t\t
3\t32767\t-9223372036854775808\t0.01\t-0.25\t\"line1
line2\ttab\\back\"\t\tfalse\t1970-01-01\t1970-01-01 00:00:00\t1970-01-01 00:00:00{tz}\t[]
4\t0\t0\t9999999999999.99\t10000000000.0\t日本語 ✓\tx\ttrue\t9999-12-31\t2000-01-01 12:00:00\t2000-01-01 17:30:00.5{tz}\tnull
"
    );
    assert_eq!(export(&p, &url, "select * from t order by id"), expected);
    // Read back with the database's own client: exact decimals, NULL apart from ''.
    assert_eq!(db.rows("select amount from t where id = 1"), vec![vec!["-1234567890123.45"]]);
    assert_eq!(db.rows("select count(*) from t where txt = ''"), vec![vec!["1"]]);
    assert_eq!(db.rows("select count(*) from t where txt is null"), vec![vec!["0"]]);
    assert_eq!(db.rows("select count(*) from t where i16 is null"), vec![vec!["1"]]);
    // The table's own types are the schema of the next load.
    p.write("more.csv", "id,i16,i64,amount,f,txt,vc,b,d,ts,tstz,j\n5,1,1,1.10,1,a,b,f,2024-01-01,2024-01-01 00:00:00,2024-01-01T00:00:00Z,{}\n");
    load(&p, &["more.csv", &url, "--table", "t"]).expect_code(0);
    assert_eq!(db.count("t"), 5);
}

fn dirty_rows_are_reported_at_their_manifest_lines(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::new();
    gen_sales(20_000, &p.file("d.csv"), true);
    p.write("s.toml", SALES_SCHEMA);
    let url = db.url();
    let out = load(
        &p,
        &[
            "d.csv",
            &url,
            "--table",
            "sales",
            "--schema",
            "s.toml",
            "--create",
            "--on-error",
            "quarantine",
            "--rejects",
            "rej.tsv",
        ],
    );
    out.expect_code(0);
    let ids: Vec<String> = db.rows("select sale_id from sales").into_iter().map(|r| r[0].clone()).collect();
    p.write("ids", &(ids.join("\n") + "\n"));
    let check = Command::new("python3")
        .arg(tool("check_load.py"))
        .arg(p.file("d.csv"))
        .arg(p.file("rej.tsv"))
        .arg(p.file("ids"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "check_load.py:\n{report}{}", String::from_utf8_lossy(&check.stderr));
    // The same rows are kept in the warehouse's rejects table.
    let rejected = p.read("rej.tsv").lines().count() as u64 - 1;
    assert!(rejected > 50, "{rejected}");
    assert_eq!(db.count("_sluice_rejects"), rejected);
    assert!(out.stdout.contains(&format!("rejected {rejected} rows (in rej.tsv)")), "{}", out.stdout);
    // Every defect kind the generator makes is among them.
    let kinds = p.read("d.csv.defects.tsv");
    for k in ["bad_int", "bad_decimal", "bad_timestamp", "missing_columns", "unterminated_quote", "invalid_utf8"] {
        assert!(kinds.contains(k), "the generated file has no {k} defect; use more rows");
    }
}

fn fail_publishes_nothing_and_lists_the_first_ten(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::new();
    p.write("s.toml", SALES_SCHEMA);
    gen_sales(5_000, &p.file("d.csv"), true);
    gen_sales(100, &p.file("c.csv"), false);
    let url = db.url();
    load(&p, &["c.csv", &url, "--table", "sales", "--schema", "s.toml", "--create"]).expect_code(0);
    let out = load(&p, &["d.csv", &url, "--table", "sales"]);
    out.expect_code(3);
    let first = out.stderr.lines().next().unwrap();
    assert!(
        first.starts_with("error: ") && first.ends_with(" bad rows; nothing was loaded; table `sales` is unchanged"),
        "{}",
        out.stderr
    );
    let listed = out.stderr.lines().filter(|l| l.trim_start().starts_with("d.csv:")).count();
    assert_eq!(listed, 10, "{}", out.stderr);
    assert!(out.stderr.contains("… and "), "{}", out.stderr);
    assert_eq!(db.count("sales"), 100);
}

fn skip_loads_good_rows_up_to_max_errors(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::new();
    p.write("s.toml", "[columns]\nid = \"integer not null\"\nqty = \"integer\"\n");
    p.write("in.csv", "id,qty\n1,1\n2,x\n3,3\n4,y\n5,5\n");
    let url = db.url();
    let out = load(
        &p,
        &["in.csv", &url, "--table", "t", "--schema", "s.toml", "--create", "--on-error", "skip", "--max-errors", "1"],
    );
    out.expect_code(3);
    assert!(out.stderr.contains("2 bad rows; more than max_errors = 1; nothing was loaded"), "{}", out.stderr);
    let out = load(
        &p,
        &["in.csv", &url, "--table", "t", "--schema", "s.toml", "--create", "--on-error", "skip", "--max-errors", "2"],
    );
    out.expect_code(0);
    assert!(out.stdout.contains("read 5 rows, loaded 3, rejected 2"), "{}", out.stdout);
    assert_eq!(db.rows("select id from t order by id"), vec![vec!["1"], vec!["3"], vec!["5"]]);
}

fn replace_swaps_in_a_new_table_and_keeps_views(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::new();
    p.write("s.toml", "[columns]\nid = \"integer not null\"\nname = \"text\"\n");
    p.write("a.csv", "id,name\n1,a\n2,b\n");
    p.write("b.csv", "id,name\n3,c\n");
    let url = db.url();
    load(&p, &["a.csv", &url, "--table", "t", "--schema", "s.toml", "--create"]).expect_code(0);
    db.exec("CREATE VIEW v AS SELECT id, name FROM t WHERE id > 0");
    load(&p, &["b.csv", &url, "--table", "t", "--schema", "s.toml", "--mode", "replace"]).expect_code(0);
    assert_eq!(db.rows("select id, name from t"), vec![vec!["3", "c"]]);
    assert_eq!(db.rows("select id, name from v"), vec![vec!["3", "c"]], "the view must see the new table");
    // A failed replace leaves the old table, and no half-built new one.
    p.write("bad.csv", "id,name\n4,d\nx,e\n");
    load(&p, &["bad.csv", &url, "--table", "t", "--schema", "s.toml", "--mode", "replace"]).expect_code(3);
    assert_eq!(db.rows("select id, name from t"), vec![vec!["3", "c"]]);
    let leftovers = match kind {
        Kind::Sqlite => db.rows("select count(*) from sqlite_master where name like '%sluice_new%'"),
        Kind::Postgres => db.rows("select count(*) from pg_tables where tablename like '%sluice_new%'"),
        Kind::Mysql => db.rows("select count(*) from information_schema.tables where table_schema = database() and table_name like '%sluice_new%'"),
    };
    assert_eq!(leftovers, vec![vec!["0"]]);
}

fn merge_updates_and_inserts_by_key(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::new();
    p.write("s.toml", "[columns]\nid = \"integer not null\"\nname = \"text\"\n");
    p.write("a.csv", "id,name\n1,a\n2,b\n");
    p.write("b.csv", "id,name\n2,B\n3,C\n");
    let url = db.url();
    load(&p, &["a.csv", &url, "--table", "t", "--schema", "s.toml", "--create"]).expect_code(0);
    let out = load(&p, &["b.csv", &url, "--table", "t", "--mode", "merge", "--key", "id"]);
    out.expect_code(0);
    assert_eq!(db.rows("select id, name from t order by id"), vec![vec!["1", "a"], vec!["2", "B"], vec!["3", "C"]]);
    // The same key twice in the source is refused, and nothing changes.
    p.write("dup.csv", "id,name\n1,x\n1,y\n");
    let out = load(&p, &["dup.csv", &url, "--table", "t", "--mode", "merge", "--key", "id"]);
    out.expect_code(3);
    assert!(
        out.stderr.contains("dup.csv has rows with the same merge key (id) more than once: 1; within one file"),
        "{}",
        out.stderr
    );
    assert_eq!(db.rows("select id, name from t order by id"), vec![vec!["1", "a"], vec!["2", "B"], vec!["3", "C"]]);
    // A NULL key is a bad row.
    p.write("nokey.csv", "id,name\n,z\n");
    let out = load(&p, &["nokey.csv", &url, "--table", "t", "--mode", "merge", "--key", "id"]);
    out.expect_code(3);
    assert!(out.stderr.contains("nokey.csv:2: column `id`: \"\" is missing"), "{}", out.stderr);
}

fn schema_drift_follows_the_policy(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::new();
    p.write("s.toml", "[columns]\nid = \"integer not null\"\nname = \"varchar(8)\"\nnote = \"text\"\n");
    p.write("a.csv", "id,name,note\n1,short,x\n");
    let url = db.url();
    load(&p, &["a.csv", &url, "--table", "t", "--schema", "s.toml", "--create"]).expect_code(0);
    // A new column, a missing one, and a wider type.
    p.write("w.toml", "[columns]\nid = \"integer not null\"\nname = \"varchar(32)\"\nscore = \"decimal(5,2)\"\n");
    p.write("b.csv", "id,name,score\n2,a much longer name,9.50\n");
    let out = load(&p, &["b.csv", &url, "--table", "t", "--schema", "w.toml"]);
    out.expect_code(2);
    assert_eq!(
        out.stderr,
        "error: the source's columns differ from table `t` (schema_change = \"fail\"):\n    \
         wider `name`: varchar(32) in the source, varchar(8) in the table\n    \
         new column `score` (decimal(5,2))\n    \
         missing column `note` (text)\n  \
         set schema_change = \"add_columns\" to add and widen columns, or \"ignore_extra\" to load only the table's columns\n"
    );
    let out = load(&p, &["b.csv", &url, "--table", "t", "--schema", "w.toml", "--schema-change", "ignore_extra"]);
    out.expect_code(2);
    assert!(out.stderr.contains("wider `name`"), "{}", out.stderr);
    let out = load(&p, &["b.csv", &url, "--table", "t", "--schema", "w.toml", "--schema-change", "add_columns"]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("; widened `name` to varchar(32); added column `score` (decimal(5,2))"),
        "{}",
        out.stdout
    );
    assert_eq!(
        export(&p, &url, "select id, name, note, score from t order by id"),
        "id\tname\tnote\tscore\n1\tshort\tx\t\n2\ta much longer name\t\t9.50\n"
    );
    // ignore_extra loads only the table's columns.
    p.write("c.csv", "id,name,extra\n3,c,zzz\n");
    load(&p, &["c.csv", &url, "--table", "t", "--schema-change", "ignore_extra"]).expect_code(0);
    assert_eq!(db.rows("select name from t where id = 3"), vec![vec!["c"]]);
}

fn json_and_ndjson_load_like_csv(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::new();
    p.write(
        "s.toml",
        "[columns]\nid = \"integer not null\"\nname = \"text\"\nprice = \"decimal(8,2)\"\ntags = \"json\"\n",
    );
    p.write(
        "a.ndjson",
        "{\"id\": 1, \"name\": \"a\", \"price\": 1.50, \"tags\": [\"x\"]}\n{\"id\": 2, \"price\": \"2.25\"}\n",
    );
    p.write("b.json", "[\n  {\"id\": 3, \"name\": \"c\\u00e9\", \"price\": 3},\n  {\"id\": 4, \"name\": null, \"tags\": {\"k\": 1}}\n]\n");
    let url = db.url();
    load(&p, &["a.ndjson", &url, "--table", "t", "--schema", "s.toml", "--create"]).expect_code(0);
    load(&p, &["b.json", &url, "--table", "t"]).expect_code(0);
    assert_eq!(
        export(&p, &url, "select id, name, price from t order by id"),
        "id\tname\tprice\n1\ta\t1.50\n2\t\t2.25\n3\tcé\t3.00\n4\t\t\n"
    );
    p.write("bad.ndjson", "{\"id\": 5, \"price\": 1.234}\n{\"id\": 6, \"oops\": 1}\nnot json\n");
    let out = load(&p, &["bad.ndjson", &url, "--table", "t"]);
    out.expect_code(3);
    assert!(out.stderr.contains("bad.ndjson:1: column `price`: \"1.234\" has 3 decimal places"), "{}", out.stderr);
    assert!(out.stderr.contains("bad.ndjson:2: column `oops`: is a key that is not a column of `t`"), "{}", out.stderr);
    assert!(out.stderr.contains("bad.ndjson:3: is not a JSON object"), "{}", out.stderr);
}

/// A pipeline project loading a big file into the backend.
fn big_project(db: &TestDb, rows: u64) -> TestProject {
    let p = TestProject::new();
    p.write("sluice.toml", &format!("name = \"k\"\n[connections.w]\nurl = \"{}\"\n", db.url()));
    p.write(
        "pipelines/p.toml",
        "[[steps]]\nname = \"ingest\"\nkind = \"ingest\"\nsource = \"data/big.csv\"\n\n[[steps]]\nname = \"load\"\nkind = \"load\"\nfrom = \"ingest\"\ntable = \"sales\"\nschema = \"sales.toml\"\n",
    );
    p.write("sales.toml", SALES_SCHEMA);
    std::fs::create_dir_all(p.file("data")).unwrap();
    gen_sales(rows, &p.file("data/big.csv"), false);
    p
}

/// Waits until the load has written rows (seen from outside the process).
fn wait_mid_load(db: &TestDb, child: &mut std::process::Child) {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the load ended ({status}) before it could be killed; use a bigger file");
        }
        let progressed = match db.kind {
            Kind::Postgres => {
                db.rows("select coalesce(max(tuples_processed), 0) from pg_stat_progress_copy")
                    .first()
                    .and_then(|r| r[0].parse::<u64>().ok())
                    .unwrap_or(0)
                    > 50_000
            }
            // MariaDB shows LOAD DATA in the process list; 300 ms in, it is well under way.
            Kind::Mysql => {
                db.rows(
                    "select coalesce(max(time_ms), 0) from information_schema.processlist where info like 'LOAD DATA%'",
                )
                .first()
                .and_then(|r| r[0].split('.').next().and_then(|x| x.parse::<u64>().ok()))
                .unwrap_or(0)
                    > 300
            }
            Kind::Sqlite => std::fs::metadata(format!("{}-wal", db.name)).map(|m| m.len()).unwrap_or(0) > 8 << 20,
        };
        if progressed {
            return;
        }
        assert!(start.elapsed().as_secs() < 120, "the load never got going");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn a_killed_load_leaves_the_table_unchanged_and_reruns_once(kind: Kind) {
    let db = TestDb::new(kind);
    let rows = 400_000;
    let p = big_project(&db, rows);
    // The table holds rows from before.
    p.write("old.csv", "sale_id,sale_ts,store_id,channel,product_id,product_name,category,quantity,unit_price,customer_email\n-1,2020-01-01 00:00:00,1,x,1,old,old,1,1.00,\n");
    run_in(p.path(), &["load", "old.csv", &db.url(), "--table", "sales", "--schema", "sales.toml", "--create"], &[])
        .expect_code(0);
    let mut child = crate::support::bin()
        .current_dir(p.path())
        .args(["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_mid_load(&db, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    // The server notices the dropped client and rolls back.
    let start = std::time::Instant::now();
    while db.count("sales") != 1 && start.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(db.rows("select sale_id from sales"), vec![vec!["-1"]], "a killed load left rows behind");
    // Running again loads the landed file exactly once.
    p.run(&["run"]).expect_code(0);
    assert_eq!(db.count("sales"), rows + 1);
    assert_eq!(db.rows("select count(distinct sale_id) from sales"), vec![vec![(rows + 1).to_string()]]);
    let again = p.run(&["run"]);
    again.expect_code(0);
    assert!(again.stdout.contains("nothing new to load into sales"), "{}", again.stdout);
    assert_eq!(db.count("sales"), rows + 1);
}

#[test]
fn a_dropped_postgres_connection_is_a_clear_error_and_loads_nothing() {
    dropped_connection(Kind::Postgres)
}

#[test]
fn a_dropped_mariadb_connection_is_a_clear_error_and_loads_nothing() {
    dropped_connection(Kind::Mysql)
}

fn dropped_connection(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::new();
    gen_sales(400_000, &p.file("big.csv"), false);
    p.write("s.toml", SALES_SCHEMA);
    let mut child = crate::support::bin()
        .current_dir(p.path())
        .args(["load", "big.csv", &db.url(), "--table", "sales", "--schema", "s.toml", "--create"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_mid_load(&db, &mut child);
    match kind {
        Kind::Postgres => {
            db.exec("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'sluice' and query like 'COPY%'");
        }
        _ => {
            let ids = db.rows("select id from information_schema.processlist where info like 'LOAD DATA%'");
            for r in ids {
                db.exec(&format!("KILL CONNECTION {}", r[0]));
            }
        }
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.starts_with("error: cannot "), "{stderr}");
    let table_rows = match kind {
        Kind::Postgres => db
            .rows("select count(*) from pg_tables where schemaname = current_schema() and tablename = 'sales'")[0][0]
            .clone(),
        _ => db.rows(
            "select count(*) from information_schema.tables where table_schema = database() and table_name = 'sales'",
        )[0][0]
            .clone(),
    };
    if table_rows == "1" {
        assert_eq!(db.count("sales"), 0, "a dropped connection left rows behind");
    }
}

#[test]
fn infer_prints_a_schema_that_loads_back() {
    let p = TestProject::new();
    gen_sales(2_000, &p.file("c.csv"), false);
    let out = run_in(p.path(), &["infer", "c.csv"], &[]);
    out.expect_code(0);
    assert_eq!(
        out.stdout,
        "# inferred by `sluice infer` from 2,000 records of c.csv
[columns]
sale_id = \"integer\"
sale_ts = \"timestamp\"
store_id = \"integer\"
channel = \"text\"
product_id = \"integer\"
product_name = \"text\"
category = \"text\"
quantity = \"integer\"
unit_price = \"decimal(18,2)\"
customer_email = \"text\"
"
    );
    p.write("c.toml", &out.stdout);
    let db = TestDb::new(Kind::Sqlite);
    load(&p, &["c.csv", &db.url(), "--table", "s", "--schema", "c.toml", "--create"]).expect_code(0);
    assert_eq!(db.count("s"), 2_000);
}

#[test]
fn latin1_input_is_transcoded() {
    let p = TestProject::new();
    p.write_bytes("l.csv", b"id,name\n1,caf\xe9\n2,M\xfcller\n");
    let db = TestDb::new(Kind::Sqlite);
    p.write("s.toml", "[columns]\nid = \"integer\"\nname = \"text\"\n");
    let out = load(&p, &["l.csv", &db.url(), "--table", "t", "--schema", "s.toml", "--create"]);
    out.expect_code(3);
    assert!(out.stderr.contains("l.csv:2: column `name`: \"caf\\xe9\" is not valid UTF-8"), "{}", out.stderr);
    load(&p, &["l.csv", &db.url(), "--table", "t", "--schema", "s.toml", "--create", "--encoding", "latin1"])
        .expect_code(0);
    assert_eq!(db.rows("select name from t order by id"), vec![vec!["café"], vec!["Müller"]]);
}

#[test]
fn a_missing_table_without_create_is_refused() {
    let p = TestProject::new();
    p.write("a.csv", "id\n1\n");
    let db = TestDb::new(Kind::Sqlite);
    let out = load(&p, &["a.csv", &db.url(), "--table", "nope"]);
    out.expect_code(2);
    assert!(out.stderr.contains("table `nope` does not exist in sqlite://"), "{}", out.stderr);
    assert!(out.stderr.contains("pass --create"), "{}", out.stderr);
    // With --create and no schema, the inferred one is used.
    load(&p, &["a.csv", &db.url(), "--table", "nope", "--create"]).expect_code(0);
    assert_eq!(db.count("nope"), 1);
}

/// The Oracle backend against a live server. No Oracle server can be had where
/// Sluice is built and tested, so this runs only when asked for.
#[cfg(feature = "oracle")]
#[test]
#[ignore = "needs a live Oracle server: set SLUICE_TEST_ORACLE_URL=oracle://user:password@host:1521/service and run `cargo test --features oracle -- --ignored oracle`"]
fn oracle_round_trip_against_a_live_server() {
    let url = std::env::var("SLUICE_TEST_ORACLE_URL")
        .expect("SLUICE_TEST_ORACLE_URL names the Oracle server to test against");
    let p = TestProject::new();
    let table = format!("it_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    p.write("s.toml", "[columns]\nid = \"integer not null\"\nname = \"varchar(20)\"\nprice = \"decimal(8,2)\"\nat = \"timestamp\"\nday = \"date\"\n");
    p.write("a.csv", "id,name,price,at,day\n1,apple,1.50,2024-01-01 10:00:00,2024-01-01\n2,\"pear, green\",,2024-01-02 11:30:00.25,\n");
    load(&p, &["a.csv", &url, "--table", &table, "--schema", "s.toml", "--create"]).expect_code(0);
    let out = export(&p, &url, &format!("SELECT \"id\", \"name\", \"price\" FROM \"{table}\" ORDER BY \"id\""));
    assert_eq!(out, "id\tname\tprice\n1\tapple\t1.5\n2\tpear, green\t\n");
    p.write("b.csv", "id,name,price,at,day\n2,pear,2.00,2024-01-02 11:30:00,2024-01-02\n3,plum,3.00,2024-01-03 09:00:00,2024-01-03\n");
    load(&p, &["b.csv", &url, "--table", &table, "--mode", "merge", "--key", "id"]).expect_code(0);
    let out = export(&p, &url, &format!("SELECT \"id\", \"name\" FROM \"{table}\" ORDER BY \"id\""));
    assert_eq!(out, "id\tname\n1\tapple\n2\tpear\n3\tplum\n");
    run_in(p.path(), &["export", &url, "--query", &format!("DROP TABLE \"{table}\"")], &[]);
}

/// Issue 11, item 6: `infer` keeps leading zeros, signs, exponents and
/// decimal places: such columns stay text, and a load with the inferred
/// schema stores them as written.
#[test]
fn infer_keeps_values_that_would_not_print_back_the_same() {
    let db = TestDb::new(Kind::Postgres);
    let p = TestProject::new();
    p.write("z.csv", "zip,phone,code,qty,price\n08123,+1,1e3,3,1.50\n00501,+44,2E5,12,20.00\n");
    let inferred = run_in(p.path(), &["infer", "z.csv"], &[]);
    inferred.expect_code(0);
    assert!(inferred.stdout.contains("zip = \"text\""), "{}", inferred.stdout);
    assert!(inferred.stdout.contains("phone = \"text\""), "{}", inferred.stdout);
    assert!(inferred.stdout.contains("code = \"text\""), "{}", inferred.stdout);
    assert!(inferred.stdout.contains("qty = \"integer\""), "{}", inferred.stdout);
    assert!(inferred.stdout.contains("price = \"decimal(18,2)\""), "{}", inferred.stdout);
    p.write("z.toml", &inferred.stdout);
    load(&p, &["z.csv", &db.url(), "--table", "z", "--schema", "z.toml", "--create"]).expect_code(0);
    assert_eq!(
        db.rows("select zip, phone, code, qty, price from z order by zip"),
        [["00501", "+44", "2E5", "12", "20.00"], ["08123", "+1", "1e3", "3", "1.50"]]
    );
}

/// Issue 11, item 7: SQLite keeps non-integer decimals as 64-bit floats; a
/// value it would round is a bad row at its line, and one it keeps exactly
/// reads back as written.
#[test]
fn sqlite_refuses_decimals_it_would_round() {
    let db = TestDb::new(Kind::Sqlite);
    let p = TestProject::new();
    p.write("s.toml", "[columns]\nid = \"integer\"\namount = \"decimal(18,2)\"\n");
    p.write("ok.csv", "id,amount\n1,1234567890123.45\n2,-0.01\n3,1234567890123456\n");
    load(&p, &["ok.csv", &db.url(), "--table", "m", "--schema", "s.toml", "--create"]).expect_code(0);
    let out = run_in(p.path(), &["export", &db.url(), "--table", "m", "--format", "csv"], &[]);
    out.expect_code(0);
    assert_eq!(out.stdout, "id,amount\n1,1234567890123.45\n2,-0.01\n3,1234567890123456.00\n");
    p.write("big.csv", "id,amount\n4,1.00\n5,1234567890123456.78\n");
    let out = load(&p, &["big.csv", &db.url(), "--table", "m", "--schema", "s.toml"]);
    out.expect_code(3);
    assert!(
        out.stderr.contains(
            "big.csv:3: column `amount`: \"1234567890123456.78\" has 18 significant digits; SQLite stores decimals exactly only to 15"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(db.rows("select count(*) from m"), [["3"]]);
}
