//! Landing and pipeline loads under kills, re-runs and runs at the same time
//! (issue 11, items 2-5): what a load publishes must not depend on where an
//! earlier run died, a `replace` table follows its source's current content,
//! loads into one table take turns, and a merge's later file wins.

use crate::db::{Kind, TestDb};
use crate::support::{Service, TestProject, wait_for};

/// A project whose pipeline lands `drops/*.csv` into dataset `events` and
/// loads it into `events` with `mode` (on `url`, the embedded SQLite if none).
fn drops_project(mode: &str, url: Option<&str>, extra: &str) -> TestProject {
    let p = TestProject::new();
    let conn = url.map(|u| format!("[connections.wh]\nurl = \"{u}\"\n")).unwrap_or_default();
    p.write("sluice.toml", &format!("name = \"drops\"\n{conn}"));
    p.write(
        "pipelines/p.toml",
        &format!(
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
mode = "{mode}"
{extra}
[steps.columns]
id = "bigint not null"
name = "text"
"#
        ),
    );
    p
}

/// `rows` lines of `id,name` starting at id `first`.
fn csv(first: u64, rows: u64) -> String {
    let mut s = String::with_capacity(rows as usize * 24);
    s.push_str("id,name\n");
    for id in first..first + rows {
        s.push_str(&format!("{id},name number {id}\n"));
    }
    s
}

/// Files left in the lake's staging folder.
fn staging(p: &TestProject) -> Vec<String> {
    std::fs::read_dir(p.file(".sluice/lake/.tmp"))
        .map(|rd| rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn ids(p: &TestProject) -> (String, String) {
    let r = p.query("select count(*), count(distinct id) from events");
    (r[0][0].clone(), r[0][1].clone())
}

/// Issue 11, item 2: kill -9 a run landing and appending three files at
/// points spread over its whole length; after each kill, the next run loads
/// every row exactly once and nothing is left in the staging folder.
#[test]
fn a_killed_multi_file_ingest_loses_nothing() {
    const ROWS: u64 = 150_000;
    let files: Vec<(String, String)> =
        (0..3).map(|i| (format!("drops/part{i}.csv"), csv(1 + i * ROWS, ROWS))).collect();
    let fresh = || {
        let p = drops_project("append", None, "");
        for (name, text) in &files {
            p.write(name, text);
        }
        p
    };
    // How long a whole run takes here, to spread the kills over it.
    let p = fresh();
    let start = std::time::Instant::now();
    p.run(&["run"]).expect_code(0);
    let whole = start.elapsed();
    assert_eq!(ids(&p), ((3 * ROWS).to_string(), (3 * ROWS).to_string()));
    let kills = 10u32;
    let mut died_before_the_end = 0;
    for k in 0..kills {
        let p = fresh();
        let mut run = Service::start(p.path(), "killed", &["run"], &[]);
        std::thread::sleep(whole * k / kills);
        if run.child.try_wait().unwrap().is_none() {
            died_before_the_end += 1;
        }
        run.kill9();
        // The next run finishes what the killed one began.
        let out = p.run(&["run"]);
        out.expect_code(0);
        assert_eq!(
            ids(&p),
            ((3 * ROWS).to_string(), (3 * ROWS).to_string()),
            "kill {k} of {kills}: not every row once\n{}",
            out.stdout
        );
        assert_eq!(staging(&p), Vec::<String>::new(), "kill {k}: staging files left behind");
        // And a run after that has nothing to do.
        let again = p.run(&["run"]);
        again.expect_code(0);
        assert!(again.stdout.contains("nothing new to load into events"), "{}", again.stdout);
        assert_eq!(ids(&p).0, (3 * ROWS).to_string());
    }
    assert!(died_before_the_end >= kills / 2, "only {died_before_the_end} of {kills} kills hit a running run");
}

/// Issue 11, item 3: `replace` makes the table what the source holds now,
/// even when that is content landed before (A, then B, then A again).
#[test]
fn replace_follows_the_source_back_to_earlier_content() {
    let p = drops_project("replace", None, "");
    let a = "id,name\n1,a\n2,b\n";
    let b = "id,name\n1,a\n2,b\n3,c\n";
    let names = |p: &TestProject| p.query("select name from events order by id").concat();
    p.write("drops/in.csv", a);
    p.run(&["run"]).expect_code(0);
    assert_eq!(names(&p), ["a", "b"]);
    p.write("drops/in.csv", b);
    p.run(&["run"]).expect_code(0);
    assert_eq!(names(&p), ["a", "b", "c"]);
    p.write("drops/in.csv", a);
    let out = p.run(&["run"]);
    out.expect_code(0);
    assert!(out.stdout.contains("the source went back to earlier content"), "{}", out.stdout);
    assert_eq!(names(&p), ["a", "b"], "the table keeps content the source no longer holds");
    // Nothing changed since: nothing to do.
    let out = p.run(&["run"]);
    assert!(out.stdout.contains("nothing new to load into events"), "{}", out.stdout);
    // Only two copies of the bytes were ever stored.
    let stored: Vec<String> = crate::support::files_under(&p.file(".sluice/lake/raw"))
        .into_iter()
        .filter(|f| f.ends_with("in.csv"))
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
}

/// Issue 11, item 3: a run fails on a bad file; putting the good file back
/// makes the next run succeed with the good content, in both modes.
#[test]
fn putting_the_good_file_back_after_a_bad_one_is_loaded() {
    for mode in ["replace", "append"] {
        let p = drops_project(mode, None, "");
        let good = "id,name\n1,a\n2,b\n";
        p.write("drops/in.csv", good);
        p.run(&["run"]).expect_code(0);
        // A column missing: a clear error, nothing loaded.
        p.write("drops/in.csv", "name\nz\n");
        let bad = p.run(&["run"]);
        bad.expect_code(3);
        assert!(bad.stdout.contains("drops/in.csv"), "{}", bad.stdout);
        p.write("drops/in.csv", good);
        let out = p.run(&["run"]);
        out.expect_code(0);
        assert_eq!(p.query("select id, name from events order by id"), [["1", "a"], ["2", "b"]], "{mode}");
        if mode == "append" {
            assert!(
                out.stdout.contains("not loaded, as their source has since landed other content: drops/in.csv"),
                "{}",
                out.stdout
            );
        }
    }
}

/// Issue 11, item 3: export → ingest → load replace keeps no deleted row.
#[test]
fn an_export_ingest_replace_chain_drops_deleted_rows() {
    let p = TestProject::new();
    p.write("sluice.toml", "name = \"chain\"\n");
    p.write(
        "pipelines/p.toml",
        r#"[[steps]]
name = "ingest_src"
kind = "ingest"
source = "data/src.csv"

[[steps]]
name = "load_src"
kind = "load"
from = "ingest_src"
table = "src"
mode = "replace"
[steps.columns]
id = "bigint not null"

[[steps]]
name = "export"
kind = "export"
depends_on = ["load_src"]
table = "src"
path = "out/src.csv"

[[steps]]
name = "ingest_copy"
kind = "ingest"
depends_on = ["export"]
source = "out/src.csv"

[[steps]]
name = "load_copy"
kind = "load"
from = "ingest_copy"
table = "copy"
mode = "replace"
[steps.columns]
id = "bigint not null"
"#,
    );
    for (src, want) in
        [("id\n1\n2\n", vec!["1", "2"]), ("id\n1\n2\n3\n", vec!["1", "2", "3"]), ("id\n1\n2\n", vec!["1", "2"])]
    {
        p.write("data/src.csv", src);
        p.run(&["run"]).expect_code(0);
        assert_eq!(p.query("select id from copy order by id").concat(), want);
    }
}

/// Issue 11, item 4: a load starts while another load of overlapping files
/// into the same table is under way: it waits its turn, says so, and loads
/// only what the first did not.
fn concurrent_loads_of_overlapping_files_take_turns(kind: Kind) {
    const BIG: u64 = 400_000;
    let db = TestDb::new(kind);
    let url = db.url();
    let p = drops_project("append", Some(&url), "");
    p.write("drops/a.csv", &csv(1, BIG));
    p.write("drops/b.csv", &csv(1 + BIG, 10));
    p.run(&["run", "--step", "ingest"]).expect_code(0);
    // The first load takes a while (a big file) ...
    let mut first = Service::start(p.path(), "first", &["run", "--step", "load"], &[]);
    wait_for(60, "the first load to take its turn", || {
        assert!(first.child.try_wait().unwrap().is_none(), "the first load ended early\n{}", first.output());
        load_turn_taken(&db, "events")
    });
    // ... while a second run lands one more file and loads everything pending.
    p.write("drops/c.csv", &csv(1 + BIG + 10, 5));
    let second = p.run(&["run"]);
    let code = loop {
        if let Some(s) = first.child.try_wait().unwrap() {
            break s.code();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(code, Some(0), "first load\n{}", first.output());
    second.expect_code(0);
    let total = BIG + 15;
    let r = db.rows("select count(*), count(distinct id) from events");
    assert_eq!(r, [[total.to_string(), total.to_string()]], "{}", second.stdout);
    let sec = &second.stdout;
    assert!(
        sec.contains("waited") && sec.contains("for another load into events"),
        "the second load did not say it waited\n{sec}"
    );
    assert!(sec.contains("loaded 5 rows into events from 1 file"), "{sec}");
}

per_backend!([sqlite => Sqlite, postgres => Postgres, mariadb => Mysql] concurrent_loads_of_overlapping_files_take_turns);

/// Whether some connection holds the turn to load into `table`, asked the way
/// each database shows its locks.
fn load_turn_taken(db: &TestDb, table: &str) -> bool {
    match db.kind {
        Kind::Postgres => {
            // A bigint advisory key shows as (classid, objid) = its high and low halves.
            let key = format!("sluice:load:\"{}\".\"{table}\"", db.name);
            let sql = format!(
                "select count(*) from pg_locks where locktype = 'advisory' and granted \
                 and objid = ((hashtext('{key}')::bigint & 4294967295)::text)::oid"
            );
            db.rows(&sql) != [["0"]]
        }
        Kind::Mysql => {
            let sql = format!(
                "select is_used_lock(concat('sluice_load_', left(sha2(concat(database(), '.{table}'), 256), 40))) is not null"
            );
            db.rows(&sql) == [["1"]]
        }
        Kind::Sqlite => {
            let lock = format!("{}.sluice-load.lock", db.name);
            std::path::Path::new(&lock).exists()
                && !std::process::Command::new("flock").args(["-n", &lock, "true"]).status().unwrap().success()
        }
    }
}

/// Issue 11, item 5: two files landed in one run, the second updating a key
/// of the first: the later file (in landing order) wins. A key twice in one
/// file is refused, naming the file.
fn merge_across_files_takes_the_later_file(kind: Kind) {
    let db = TestDb::new(kind);
    let url = db.url();
    let p = drops_project("merge", Some(&url), "key = [\"id\"]");
    p.write("drops/1.csv", "id,name\n1,one\n2,two\n");
    p.write("drops/2.csv", "id,name\n2,TWO\n3,three\n");
    p.run(&["run"]).expect_code(0);
    assert_eq!(db.rows("select id, name from events order by id"), [["1", "one"], ["2", "TWO"], ["3", "three"]]);
    p.write("drops/3.csv", "id,name\n3,x\n3,y\n");
    let out = p.run(&["run"]);
    out.expect_code(3);
    assert!(
        out.stdout.contains("drops/3.csv has rows with the same merge key (id) more than once: 3"),
        "{}",
        out.stdout
    );
    assert_eq!(db.rows("select id, name from events order by id"), [["1", "one"], ["2", "TWO"], ["3", "three"]]);
}

per_backend!([sqlite => Sqlite, postgres => Postgres, mariadb => Mysql] merge_across_files_takes_the_later_file);

/// `take = "new"`: each landing lists only files whose bytes were not taken
/// from their path before, so a drop folder whose processed files stay put
/// (or go away) lands each file once, and a changed file again.
#[test]
fn take_new_lands_each_files_content_once() {
    let p = drops_project("append", None, "");
    let toml = std::fs::read_to_string(p.file("pipelines/p.toml")).unwrap();
    p.write("pipelines/p.toml", &toml.replace("dataset = \"events\"\n", "dataset = \"events\"\ntake = \"new\"\n"));
    let manifest_files = |p: &TestProject| -> Vec<Vec<String>> {
        let mut ms: Vec<(String, Vec<String>)> = crate::support::files_under(&p.file(".sluice/lake/raw"))
            .into_iter()
            .filter(|f| f.ends_with("_manifest.json"))
            .map(|f| {
                let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
                let names = m["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string());
                (m["landed_at"].as_str().unwrap().to_string(), names.collect())
            })
            .collect();
        ms.sort();
        ms.into_iter().map(|(_, n)| n).collect()
    };
    p.write("drops/a.csv", &csv(1, 2));
    p.run(&["run"]).expect_code(0);
    p.write("drops/b.csv", &csv(3, 2));
    let out = p.run(&["run"]);
    out.expect_code(0);
    assert!(out.stdout.contains("landed 1 file (2 rows"), "{}", out.stdout);
    assert_eq!(ids(&p), ("4".into(), "4".into()));
    let out = p.run(&["run"]);
    out.expect_code(0);
    assert!(out.stdout.contains("nothing new: all 2 objects taken before"), "{}", out.stdout);
    // A processed file removed, another changed: only the change lands.
    std::fs::remove_file(p.file("drops/b.csv")).unwrap();
    p.write("drops/a.csv", &csv(5, 2));
    p.run(&["run"]).expect_code(0);
    assert_eq!(ids(&p), ("6".into(), "6".into()));
    assert_eq!(manifest_files(&p), [vec!["a.csv"], vec!["b.csv"], vec!["a.csv"]]);
}
