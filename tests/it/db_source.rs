//! Database sources (issue 13): an ingest step reads a table or a query of
//! a named connection on real PostgreSQL, MariaDB and SQLite, lands it raw as
//! CSV, and a load reads it back with exact types; with a `cursor` column
//! each run lands only rows above the high-water mark the previous landing's
//! manifest keeps, so kills and re-runs land every row exactly once.

use crate::db::{Kind, TestDb};
use crate::support::{Service, TestProject, free_port};

/// The source table, in each backend's own types.
fn create_orders(db: &TestDb) {
    let ddl = match db.kind {
        Kind::Postgres => {
            "CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(12,2), day date, at timestamp(6), note text, ok boolean)"
        }
        Kind::Mysql => {
            "CREATE TABLE orders (id bigint PRIMARY KEY, amount decimal(12,2), day date, at datetime(6), note text, ok boolean)"
        }
        Kind::Sqlite => {
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, amount DECIMAL(12,2), day DATE, at TIMESTAMP, note TEXT, ok BOOLEAN)"
        }
    };
    db.exec(ddl);
}

/// Rows with every awkward value: decimals, dates, timestamps with
/// microseconds, NULLs in every column, an empty text, text with commas,
/// quotes, a newline and non-ASCII.
fn insert_orders(db: &TestDb, ids: std::ops::RangeInclusive<u64>) {
    let (t, f) = if db.kind == Kind::Sqlite { ("1", "0") } else { ("true", "false") };
    let mut values = Vec::new();
    for id in ids {
        let v = match id % 5 {
            0 => format!("({id}, 12.50, '2024-02-29', '2024-02-29 23:59:59.123456', 'plain', {t})"),
            1 => format!(
                "({id}, -0.05, '1999-12-31', '2000-01-01 00:00:00', 'comma, \"quote\" and ''apostrophe''', {f})"
            ),
            2 => format!("({id}, NULL, NULL, NULL, NULL, NULL)"),
            3 => format!("({id}, 9999999999.99, '2024-01-01', '2024-06-15 12:30:00.5', '', {t})"),
            _ => format!("({id}, 0.00, '2024-03-01', '2024-03-01 08:00:00', 'line one\nline two, é€', {f})"),
        };
        values.push(v);
    }
    db.exec(&format!("INSERT INTO orders (id, amount, day, at, note, ok) VALUES {}", values.join(", ")));
}

/// A project reading `what` of connection `src` (the test database) and
/// loading it into `orders_copy` of the same database.
fn project(db: &TestDb, what: &str) -> TestProject {
    let p = TestProject::new();
    p.write("sluice.toml", &format!("name = \"dbsrc\"\n[connections.src]\nurl = \"{}\"\n", db.url()));
    p.write(
        "pipelines/p.toml",
        &format!(
            r#"[[steps]]
name = "ingest"
kind = "ingest"
connection = "src"
dataset = "orders"
{what}

[[steps]]
name = "load"
kind = "load"
from = "ingest"
connection = "src"
table = "orders_copy"
mode = "append"
[steps.columns]
id = "bigint not null"
amount = "decimal(12,2)"
day = "date"
at = "timestamp"
note = "text"
ok = "boolean"
"#
        ),
    );
    p
}

/// The rows of a table as the database's own client prints them.
fn dump(db: &TestDb, table: &str) -> Vec<Vec<String>> {
    db.rows(&format!("SELECT id, amount, day, at, note, ok FROM {table} ORDER BY id"))
}

/// The newest manifest's cursor.
fn cursor(p: &TestProject) -> serde_json::Value {
    let mut manifests = Vec::new();
    for f in crate::support::files_under(&p.file(".sluice/lake/raw/orders")) {
        if f.ends_with("_manifest.json") {
            manifests.push(f);
        }
    }
    manifests.sort();
    let newest = manifests.last().expect("a manifest");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(newest).unwrap()).unwrap();
    m["cursor"].clone()
}

fn full_table(kind: Kind) {
    let db = TestDb::new(kind);
    create_orders(&db);
    insert_orders(&db, 1..=10);
    let p = project(&db, "table = \"orders\"");
    let out = p.run(&["run"]);
    out.expect_code(0);
    assert!(out.stdout.contains("landed 1 file (10 rows"), "{}", out.stdout);
    assert_eq!(dump(&db, "orders_copy"), dump(&db, "orders"), "types round-trip exactly");
    // NULL and the empty text stay apart.
    assert_eq!(db.rows("SELECT COUNT(*) FROM orders_copy WHERE note IS NULL")[0][0], "2");
    assert_eq!(db.rows("SELECT COUNT(*) FROM orders_copy WHERE note = ''")[0][0], "2");
    // Landed raw, as CSV with a header.
    let raw: Vec<String> = crate::support::files_under(&p.file(".sluice/lake/raw/orders"))
        .into_iter()
        .filter(|f| f.ends_with("orders.csv"))
        .collect();
    assert_eq!(raw.len(), 1, "{raw:?}");
    assert!(std::fs::read_to_string(&raw[0]).unwrap().starts_with("id,amount,day,at,note,ok\n"));
    // Without a cursor a run lands the whole table again; same bytes, nothing new.
    let again = p.run(&["run"]);
    again.expect_code(0);
    assert!(again.stdout.contains("nothing new"), "{}", again.stdout);
    assert_eq!(db.count("orders_copy"), 10);
}

fn query(kind: Kind) {
    let db = TestDb::new(kind);
    create_orders(&db);
    insert_orders(&db, 1..=10);
    let p = project(
        &db,
        "query = \"\"\"\nselect id, amount, day, at, note, ok from orders\nwhere id % 5 = 0 or id = 3;\n\"\"\"",
    );
    p.run(&["run"]).expect_code(0);
    assert_eq!(dump(&db, "orders_copy"), dump(&db, "orders WHERE id IN (3, 5, 10)"));
}

fn incremental(kind: Kind) {
    let db = TestDb::new(kind);
    create_orders(&db);
    insert_orders(&db, 1..=7);
    let p = project(&db, "table = \"orders\"\ncursor = \"id\"");
    let out = p.run(&["run"]);
    out.expect_code(0);
    assert!(out.stdout.contains("landed 1 file (7 rows"), "{}", out.stdout);
    assert_eq!(cursor(&p), serde_json::json!({"column": "id", "high_water": "7"}));
    // Only the new rows land next time, and the mark moves on.
    insert_orders(&db, 8..=12);
    let out = p.run(&["run"]);
    out.expect_code(0);
    assert!(out.stdout.contains("landed 1 file (5 rows"), "{}", out.stdout);
    assert_eq!(cursor(&p), serde_json::json!({"column": "id", "high_water": "12"}));
    assert_eq!(dump(&db, "orders_copy"), dump(&db, "orders"));
    // Nothing new: nothing landed, nothing loaded, the mark stays.
    let out = p.run(&["run"]);
    out.expect_code(0);
    assert!(out.stdout.contains("no new rows in src.orders"), "{}", out.stdout);
    assert_eq!(cursor(&p), serde_json::json!({"column": "id", "high_water": "12"}));
    assert_eq!(db.count("orders_copy"), 12);
}

/// A timestamp cursor: the mark is the database's own text for it, and is
/// compared as a timestamp (not as text) next time.
fn timestamp_cursor(kind: Kind) {
    let db = TestDb::new(kind);
    create_orders(&db);
    insert_orders(&db, 1..=5);
    let p = project(&db, "table = \"orders\"\ncursor = \"at\"");
    p.run(&["run"]).expect_code(0);
    // The NULL timestamp never lands; the others do, once.
    assert_eq!(db.count("orders_copy"), 4);
    db.exec("INSERT INTO orders (id, amount, day, at, note, ok) VALUES (100, 1.00, '2025-01-01', '2025-01-01 00:00:00.000001', 'later', NULL)");
    let out = p.run(&["run"]);
    out.expect_code(0);
    assert!(out.stdout.contains("landed 1 file (1 row"), "{}", out.stdout);
    assert_eq!(db.rows("SELECT id FROM orders_copy WHERE id = 100").len(), 1);
    assert_eq!(db.count("orders_copy"), 5);
}

per_backend!([sqlite => Sqlite, postgres => Postgres, mysql => Mysql] full_table, query, incremental, timestamp_cursor);

/// kill -9 a run landing 300,000 rows at points spread over it; each re-run
/// lands and loads every row exactly once, and new rows after that too.
fn killed_mid_landing(kind: Kind) {
    const ROWS: u64 = 300_000;
    let db = TestDb::new(kind);
    let ddl = "CREATE TABLE orders (id bigint PRIMARY KEY, amount decimal(12,2), day date, at timestamp, note text, ok boolean)";
    db.exec(&ddl.replace("at timestamp", if kind == Kind::Mysql { "at datetime" } else { "at timestamp" }));
    let fill = |from: u64, to: u64| {
        let sql = match kind {
            Kind::Postgres => format!(
                "INSERT INTO orders SELECT g, g / 100.0, DATE '2024-01-01' + (g % 365)::int, TIMESTAMP '2024-01-01' + g * INTERVAL '1 second', 'note ' || g, g % 2 = 0 FROM generate_series({from}, {to}) g"
            ),
            _ => format!(
                "INSERT INTO orders SELECT seq, seq / 100.0, '2024-01-01', '2024-01-01 00:00:00', CONCAT('note ', seq), seq % 2 = 0 FROM seq_{from}_to_{to}"
            ),
        };
        db.exec(&sql);
    };
    fill(1, ROWS);
    let fresh = || {
        let p = project(&db, "table = \"orders\"\ncursor = \"id\"");
        db.exec("DROP TABLE IF EXISTS orders_copy");
        db.exec("DROP TABLE IF EXISTS _sluice_loads");
        p
    };
    let loaded = || {
        let r = db.rows("SELECT COUNT(*), COUNT(DISTINCT id) FROM orders_copy");
        (r[0][0].parse::<u64>().unwrap(), r[0][1].parse::<u64>().unwrap())
    };
    let p = fresh();
    let start = std::time::Instant::now();
    p.run(&["run"]).expect_code(0);
    let whole = start.elapsed();
    assert_eq!(loaded(), (ROWS, ROWS));
    let kills = 5u32;
    let mut hit = 0;
    let mut last = None;
    for k in 0..kills {
        let p = fresh();
        let mut run = Service::start(p.path(), "killed", &["run"], &[]);
        std::thread::sleep(whole * (2 * k + 1) / (2 * kills));
        if run.child.try_wait().unwrap().is_none() {
            hit += 1;
        }
        run.kill9();
        let out = p.run(&["run"]);
        out.expect_code(0);
        assert_eq!(loaded(), (ROWS, ROWS), "kill {k}: not every row once\n{}", out.stdout);
        let again = p.run(&["run"]);
        again.expect_code(0);
        assert!(again.stdout.contains("no new rows"), "{}", again.stdout);
        assert_eq!(loaded(), (ROWS, ROWS));
        last = Some(p);
    }
    assert!(hit >= kills / 2, "only {hit} of {kills} kills hit a running run");
    // Rows added after that are landed and loaded once, next to the others.
    let p = last.expect("a project");
    fill(ROWS + 1, ROWS + 1000);
    let out = p.run(&["run"]);
    out.expect_code(0);
    assert!(out.stdout.contains("landed 1 file (1,000 rows"), "{}", out.stdout);
    assert_eq!(loaded(), (ROWS + 1000, ROWS + 1000));
}

per_backend!([postgres => Postgres, mysql => Mysql] killed_mid_landing);

/// Whether the run's output shows step `step` failed.
fn failed(out: &str, step: &str) -> bool {
    out.lines().any(|l| l.starts_with(&format!("{step} ")) && l.contains("FAILED"))
}

fn error_of(p: &TestProject) -> String {
    let out = p.run(&["run"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    format!("{}{}", out.stdout, out.stderr)
}

fn wrong_table_and_column(kind: Kind) {
    let db = TestDb::new(kind);
    create_orders(&db);
    let e = error_of(&project(&db, "table = \"nope\""));
    assert!(failed(&e, "ingest") && e.contains("table `nope` not found on connection `src`"), "{e}");
    let e = error_of(&project(&db, "table = \"orders\"\ncursor = \"idd\""));
    assert!(
        e.contains("cursor column `idd` is not a column of src.orders; its columns: id, amount, day, at, note, ok"),
        "{e}"
    );
    let e = error_of(&project(&db, "query = \"select idd from orders\""));
    assert!(
        failed(&e, "ingest") && e.contains("connection `src`: read the columns of a query") && e.contains("idd"),
        "{e}"
    );
}

per_backend!([sqlite => Sqlite, postgres => Postgres, mysql => Mysql] wrong_table_and_column);

#[test]
fn an_unreachable_server_names_step_and_connection_never_the_password() {
    for scheme in ["postgres", "mysql"] {
        let p = TestProject::new();
        let port = free_port();
        p.write(
            "sluice.toml",
            &format!("name = \"x\"\n[connections.shop]\nurl = \"{scheme}://app:s3cretpw@127.0.0.1:{port}/shop\"\n"),
        );
        p.write(
            "pipelines/p.toml",
            "[[steps]]\nname = \"pull\"\nkind = \"ingest\"\nconnection = \"shop\"\ntable = \"orders\"\n",
        );
        let e = error_of(&p);
        assert!(failed(&e, "pull") && e.contains("connection `shop`"), "{e}");
        assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(!e.contains("s3cretpw"), "the password is shown: {e}");
    }
}

#[test]
fn an_unknown_connection_is_found_by_check() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"x\"\n[connections.shop]\nurl = \"sqlite://w.db\"\n");
    p.write(
        "pipelines/p.toml",
        "[[steps]]\nname = \"pull\"\nkind = \"ingest\"\nconnection = \"shpo\"\ntable = \"orders\"\n",
    );
    let out = p.run(&["check"]);
    assert_ne!(out.code, 0);
    let e = format!("{}{}", out.stdout, out.stderr);
    assert!(e.contains("unknown connection `shpo`") && e.contains("shop"), "{e}");
}

/// Each landing of an incremental source holds only its new rows: one whose
/// load failed is loaded by a later run, next to the later landings, never
/// skipped as superseded by them.
#[test]
fn a_landing_whose_load_failed_is_loaded_by_a_later_run() {
    let db = TestDb::new(Kind::Postgres);
    create_orders(&db);
    insert_orders(&db, 1..=5);
    let p = project(&db, "table = \"orders\"\ncursor = \"id\"");
    let good = p.read("pipelines/p.toml");
    // A column too narrow for the notes: the load fails, the landing stays.
    p.write("pipelines/p.toml", &good.replace("note = \"text\"", "note = \"varchar(3)\""));
    let out = p.run(&["run"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("landed 1 file (5 rows"), "{}", out.stdout);
    // More rows arrive; the pipeline is fixed; both landings are loaded.
    insert_orders(&db, 6..=9);
    p.write("pipelines/p.toml", &good);
    let out = p.run(&["run"]);
    out.expect_code(0);
    assert!(out.stdout.contains("landed 1 file (4 rows"), "{}", out.stdout);
    assert_eq!(dump(&db, "orders_copy"), dump(&db, "orders"));
}
