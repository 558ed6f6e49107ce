//! Files in and out (issue 13, "Files"): Parquet and NDJSON loads into every
//! backend with bad rows reported by position; exports in every format
//! compared whole (Parquet read back with pyarrow); exports to `s3://`; an
//! export killed midway leaves no file.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::db::{Kind, TestDb};
use crate::s3::{S3, Server};
use crate::support::{Out, Service, TestProject, run_in, wait_for};

per_backend!(
    [sqlite => Sqlite, postgres => Postgres, mariadb => Mysql]
    parquet_and_ndjson_load_into_every_backend,
    bad_rows_in_ndjson_and_parquet_are_reported_with_their_position,
    exports_of_every_format_have_the_expected_content,
);

per_s3!(an_export_to_s3_is_published_whole);

fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(p.exists(), "{} is missing: run .ci/tools.sh or scripts/test.sh", p.display());
    p
}

/// Runs a Python script (with pyarrow) in `dir`; returns its stdout.
fn py(dir: &Path, script: &str) -> String {
    let out = Command::new(python()).current_dir(dir).arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn sluice(p: &TestProject, args: &[&str]) -> Out {
    run_in(p.path(), args, &[])
}

/// Writes `sales.parquet` with pyarrow: typed columns, a NULL, two row groups.
const WRITE_PARQUET: &str = r#"
import datetime as dt, decimal as d
import pyarrow as pa, pyarrow.parquet as pq
t = pa.table({
    "id": pa.array([1, 2, 3], pa.int64()),
    "name": pa.array(["plain", "tab\there \"q\"", None], pa.string()),
    "price": pa.array([d.Decimal("12.50"), d.Decimal("0.05"), None], pa.decimal128(10, 2)),
    "ok": pa.array([True, False, None]),
    "day": pa.array([dt.date(2024, 2, 29), None, dt.date(1970, 1, 1)], pa.date32()),
    "at": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5), None, dt.datetime(1999, 12, 31, 23, 59, 59, 500000)], pa.timestamp("us")),
})
pq.write_table(t, "sales.parquet", row_group_size=2)
"#;

const NDJSON: &str = r#"{"id": 1, "name": "plain", "price": 12.50, "ok": true, "day": "2024-02-29", "at": "2024-01-02 03:04:05"}
{"id": 2, "name": "tab\there \"q\"", "price": "0.05", "ok": false, "day": null}
{"id": 3, "price": null, "day": "1970-01-01", "at": "1999-12-31T23:59:59.5"}
"#;

fn parquet_and_ndjson_load_into_every_backend(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::new();
    py(p.path(), WRITE_PARQUET);
    p.write("sales.ndjson", NDJSON);
    let url = db.url();
    // The Parquet file's own types make the table.
    let out = sluice(&p, &["load", "sales.parquet", &url, "--table", "from_parquet", "--create"]);
    out.expect_code(0);
    assert!(out.stdout.starts_with("loaded 3 rows into from_parquet from 1 file"), "{}", out.stdout);
    p.write(
        "sales.toml",
        "[columns]\nid = \"bigint not null\"\nname = \"text\"\nprice = \"decimal(10,2)\"\nok = \"boolean\"\nday = \"date\"\nat = \"timestamp\"\n",
    );
    let out =
        sluice(&p, &["load", "sales.ndjson", &url, "--table", "from_ndjson", "--schema", "sales.toml", "--create"]);
    out.expect_code(0);
    let expected = "id\tname\tprice\tok\tday\tat
1\tplain\t12.50\ttrue\t2024-02-29\t2024-01-02 03:04:05
2\t\"tab\there \"\"q\"\"\"\t0.05\tfalse\t\t
3\t\t\t\t1970-01-01\t1999-12-31 23:59:59.5
";
    for table in ["from_parquet", "from_ndjson"] {
        let out = sluice(&p, &["export", &url, "--query", &format!("select * from {table} order by id")]);
        out.expect_code(0);
        assert_eq!(out.stdout, expected, "{table} on {kind:?}");
    }
    // Appending the Parquet file to the NDJSON's table checks its values
    // against the declared types.
    let out = sluice(&p, &["load", "sales.parquet", &url, "--table", "from_ndjson"]);
    out.expect_code(0);
    assert_eq!(db.rows("select count(*) from from_ndjson"), vec![vec!["6"]]);
}

fn bad_rows_in_ndjson_and_parquet_are_reported_with_their_position(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::new();
    let url = db.url();
    py(
        p.path(),
        r#"
import pyarrow as pa, pyarrow.parquet as pq
pq.write_table(pa.table({"id": [1, 2, 3, 4], "qty": ["5", "7", "x7", "9"]}), "bad.parquet", row_group_size=2)
"#,
    );
    p.write(
        "bad.ndjson",
        "{\"id\": 1, \"qty\": 5}\n{\"id\": 2, \"qty\": \"many\"}\n{\"id\": 3, \"qty\": 9}\n{\"id\": 4\n",
    );
    p.write("t.toml", "[columns]\nid = \"integer not null\"\nqty = \"integer\"\n");
    let out = sluice(&p, &["load", "bad.parquet", &url, "--table", "t", "--schema", "t.toml", "--create"]);
    out.expect_code(3);
    assert!(
        out.stderr.contains("bad.parquet: row 3: column `qty`: \"x7\" "),
        "the row number and column of a Parquet file: {}",
        out.stderr
    );
    let out = sluice(&p, &["load", "bad.ndjson", &url, "--table", "t", "--schema", "t.toml", "--create"]);
    out.expect_code(3);
    assert!(out.stderr.contains("bad.ndjson:2: column `qty`: \"many\" "), "{}", out.stderr);
    assert!(out.stderr.contains("bad.ndjson:4: "), "the line of malformed JSON: {}", out.stderr);
    // Quarantine: the rejects file has the positions; the good rows load.
    let out = sluice(
        &p,
        &[
            "load",
            "bad.parquet",
            &url,
            "--table",
            "t",
            "--schema",
            "t.toml",
            "--create",
            "--on-error",
            "quarantine",
            "--rejects",
            "rej.tsv",
        ],
    );
    out.expect_code(0);
    let rej = p.read("rej.tsv");
    let lines: Vec<&str> = rej.lines().collect();
    assert_eq!(lines[0], "line\tcolumn\tvalue\terror\trecord\tfile");
    assert!(lines[1].starts_with("3\tqty\tx7\t"), "{rej}");
    assert_eq!(lines.len(), 2, "{rej}");
    assert_eq!(db.rows("select count(*) from t"), vec![vec!["3"]]);
}

/// Rows with what trips up each format: a tab, quotes, a line break, an
/// empty string, NULLs, a decimal's trailing zero.
const EXPORT_CSV: &str = "id,name,price,ok,day,at
1,plain,12.50,true,2024-01-02,2024-01-02 03:04:05
2,\"tab\there \"\"q\"\"\",0.05,false,2024-02-29,
3,\"line1
line2\",,,,
4,\"\",-7.00,true,1970-01-01,1970-01-01 00:00:00
";

const EXPORT_SCHEMA: &str = "[columns]
id = \"integer not null\"
name = \"text\"
price = \"decimal(10,2)\"
ok = \"boolean\"
day = \"date\"
at = \"timestamp\"
";

fn exports_of_every_format_have_the_expected_content(kind: Kind) {
    let db = TestDb::new(kind);
    let p = TestProject::new();
    let url = db.url();
    p.write("in.csv", EXPORT_CSV);
    p.write("in.toml", EXPORT_SCHEMA);
    sluice(&p, &["load", "in.csv", &url, "--table", "t", "--schema", "in.toml", "--create"]).expect_code(0);
    let export = |dest: &str, extra: &[&str]| {
        let out = sluice(&p, &[&["export", &url, "--table", "t", "-o", dest], extra].concat());
        out.expect_code(0);
        assert_eq!(out.stderr.trim(), format!("wrote 4 rows to {dest}"));
        if dest.ends_with(".parquet") { String::new() } else { p.read(dest) }
    };
    assert_eq!(
        export("out/t.tsv", &[]),
        "id\tname\tprice\tok\tday\tat
1\tplain\t12.50\ttrue\t2024-01-02\t2024-01-02 03:04:05
2\t\"tab\there \"\"q\"\"\"\t0.05\tfalse\t2024-02-29\t
3\t\"line1
line2\"\t\t\t\t
4\t\"\"\t-7.00\ttrue\t1970-01-01\t1970-01-01 00:00:00
",
        "TSV, CSV-style quoting (the default)"
    );
    assert_eq!(
        export("out/t.pg.tsv", &["--quoting", "backslash"]),
        "id\tname\tprice\tok\tday\tat
1\tplain\t12.50\ttrue\t2024-01-02\t2024-01-02 03:04:05
2\ttab\\there \"q\"\t0.05\tfalse\t2024-02-29\t\\N
3\tline1\\nline2\t\\N\t\\N\t\\N\t\\N
4\t\t-7.00\ttrue\t1970-01-01\t1970-01-01 00:00:00
",
        "TSV, backslash escapes"
    );
    assert_eq!(
        export("out/t.csv", &[]),
        "id,name,price,ok,day,at
1,plain,12.50,true,2024-01-02,2024-01-02 03:04:05
2,\"tab\there \"\"q\"\"\",0.05,false,2024-02-29,
3,\"line1
line2\",,,,
4,\"\",-7.00,true,1970-01-01,1970-01-01 00:00:00
"
    );
    let rows = [
        r#"{"id":1,"name":"plain","price":12.50,"ok":true,"day":"2024-01-02","at":"2024-01-02 03:04:05"}"#,
        r#"{"id":2,"name":"tab\there \"q\"","price":0.05,"ok":false,"day":"2024-02-29","at":null}"#,
        r#"{"id":3,"name":"line1\nline2","price":null,"ok":null,"day":null,"at":null}"#,
        r#"{"id":4,"name":"","price":-7.00,"ok":true,"day":"1970-01-01","at":"1970-01-01 00:00:00"}"#,
    ];
    assert_eq!(export("out/t.ndjson", &[]), format!("{}\n", rows.join("\n")));
    assert_eq!(export("out/t.json", &[]), format!("[\n{}\n]\n", rows.join(",\n")));
    // Parquet, read back by pyarrow: types, values, compression, row groups.
    export("out/t.parquet", &[]);
    export("out/t.snappy.parquet", &["--compression", "snappy", "--row-group-size", "3"]);
    let got = py(
        p.path(),
        r#"
import json, pyarrow.parquet as pq
for f in ["out/t.parquet", "out/t.snappy.parquet"]:
    pf = pq.ParquetFile(f)
    md = pf.metadata
    print(md.num_rows, md.num_row_groups, md.row_group(0).column(0).compression)
t = pq.read_table("out/t.parquet")
print(", ".join(f"{x.name}: {x.type}" for x in t.schema))
for r in t.to_pylist():
    print(json.dumps(r, default=str, ensure_ascii=False))
"#,
    );
    assert_eq!(
        got,
        r#"4 1 ZSTD
4 2 SNAPPY
id: int32, name: string, price: decimal128(10, 2), ok: bool, day: date32[day], at: timestamp[us]
{"id": 1, "name": "plain", "price": "12.50", "ok": true, "day": "2024-01-02", "at": "2024-01-02 03:04:05"}
{"id": 2, "name": "tab\there \"q\"", "price": "0.05", "ok": false, "day": "2024-02-29", "at": null}
{"id": 3, "name": "line1\nline2", "price": null, "ok": null, "day": null, "at": null}
{"id": 4, "name": "", "price": "-7.00", "ok": true, "day": "1970-01-01", "at": "1970-01-01 00:00:00"}
"#,
        "{kind:?}"
    );
    // Another export's options are refused, not ignored.
    let out = sluice(&p, &["export", &url, "--table", "t", "-o", "out/x.csv", "--quoting", "backslash"]);
    out.expect_code(2);
    assert!(out.stderr.contains("--quoting backslash applies only to tsv, not csv"), "{}", out.stderr);
}

/// An export step writes to `s3://` like to a file: the object appears only
/// complete, in the format asked for.
fn an_export_to_s3_is_published_whole(server: Server) {
    let s3 = S3::start(server);
    s3.bucket("exports");
    let db = TestDb::new(Kind::Sqlite);
    let p = TestProject::new();
    let url = db.url();
    p.write("in.csv", EXPORT_CSV);
    p.write("in.toml", EXPORT_SCHEMA);
    sluice(&p, &["load", "in.csv", &url, "--table", "t", "--schema", "in.toml", "--create"]).expect_code(0);
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for (key, extra) in [("daily/t.ndjson", &[][..]), ("daily/t.parquet", &["--compression", "snappy"][..])] {
        let dest = format!("s3://exports/{key}?endpoint={}", s3.endpoint());
        let out = run_in(p.path(), &[&["export", &url, "--table", "t", "-o", &dest], extra].concat(), &env);
        out.expect_code(0);
    }
    // Read back with boto3 (another S3 client).
    let (key, secret) = (&env[0].1, &env[1].1);
    py(
        p.path(),
        &format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='{key}', aws_secret_access_key='{secret}', region_name='us-east-1')\nfor k in ['ndjson', 'parquet']:\n    open('got.' + k, 'wb').write(s3.get_object(Bucket='exports', Key='daily/t.' + k)['Body'].read())\nassert [o['Key'] for o in s3.list_objects_v2(Bucket='exports')['Contents']] == ['daily/t.ndjson', 'daily/t.parquet']\n",
            s3.endpoint()
        ),
    );
    let ndjson = std::fs::read(p.file("got.ndjson")).unwrap();
    let parquet = std::fs::read(p.file("got.parquet")).unwrap();
    assert!(String::from_utf8(ndjson).unwrap().starts_with("{\"id\":1,\"name\":\"plain\",\"price\":12.50,"));
    p.write_bytes("back.parquet", &parquet);
    let got = py(p.path(), "import pyarrow.parquet as pq\nprint(pq.read_table('back.parquet').num_rows)\n");
    assert_eq!(got, "4\n");
    // A pipeline's export step writes to s3:// the same way.
    let p2 = TestProject::new();
    p2.write("sluice.toml", "name = \"s3export\"\n");
    p2.write("drops/e.csv", "id,name\n1,a\n2,b\n");
    p2.write(
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
[steps.columns]
id = "bigint not null"
name = "text"

[[steps]]
name = "out"
kind = "export"
depends_on = ["load"]
query = "select * from events order by id"
path = "s3://exports/pipeline/events.ndjson?endpoint={}"
"#,
            s3.endpoint()
        ),
    );
    let out = run_in(p2.path(), &["run"], &env);
    out.expect_code(0);
    py(
        p2.path(),
        &format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='{key}', aws_secret_access_key='{secret}', region_name='us-east-1')\nb = s3.get_object(Bucket='exports', Key='pipeline/events.ndjson')['Body'].read()\nassert b == b'{{\"id\":1,\"name\":\"a\"}}\\n{{\"id\":2,\"name\":\"b\"}}\\n', b\n",
            s3.endpoint()
        ),
    );
    // A destination that names no object is a user error.
    let dest = format!("s3://exports?endpoint={}", s3.endpoint());
    let out = run_in(p.path(), &["export", &url, "--table", "t", "-o", &dest], &env);
    out.expect_code(2);
    assert!(out.stderr.contains("names no object"), "{}", out.stderr);
}

/// Files in the export's folder (temporary ones included).
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Killed midway (kill -9, while the temporary file grows), an export leaves
/// nothing under its name; the next export publishes and sweeps the rest.
#[test]
fn a_killed_export_leaves_no_partial_file() {
    let db = TestDb::new(Kind::Postgres);
    let p = TestProject::new();
    let url = db.url();
    let big = "select g, repeat('x', 200) as pad from generate_series(1, 50000000) g";
    let dir = p.path().join("out");
    let mut s = Service::start(p.path(), "export", &["export", &url, "--query", big, "-o", "out/big.tsv"], &[]);
    let growing = |dir: &Path| {
        std::fs::read_dir(dir).ok().is_some_and(|d| {
            d.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with(".big.tsv.sluice-")
                    && e.metadata().is_ok_and(|m| m.len() > 4 << 20)
            })
        })
    };
    wait_for(120, "the export to be writing", || growing(&dir));
    s.kill9();
    assert!(!dir.join("big.tsv").exists(), "no file under the export's name");
    let out = sluice(&p, &["export", &url, "--query", "select 1 as a, 2 as b", "-o", "out/big.tsv"]);
    out.expect_code(0);
    assert_eq!(p.read("out/big.tsv"), "a\tb\n1\t2\n");
    assert_eq!(names_in(&dir), vec!["big.tsv"], "the killed export's temporary file is swept");
}
