//! Passwords in connection URLs: any character connects, none is ever shown
//! (issue 11, item 8), on real servers that check passwords.

use crate::db::{Kind, PasswordPg, TestDb, sql_literal};
use crate::support::{Service, TestProject, free_port, http, run_in};

/// Every ASCII punctuation character, a space and non-ASCII letters.
const SPECIALS: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ é€";

/// The password of user `i`: the character `c` among the ones that cut a
/// URL (`@`, `:`, `/`, `?`, `#`, `%`), between markers that no output may
/// hold (`Zq`), so any part of it that leaks is found.
fn password(i: usize, c: char) -> String {
    format!("Zq{i}{c}p@ss:w/rd?#%{c}Zq")
}

/// Issue 11, item 8: a password with `?`, `#` or `/` was printed (in load
/// summaries, run errors, the state store and the API) and did not connect.
/// Here a PostgreSQL role and a MariaDB user per special character, each
/// with its password in an environment variable: each connects through
/// sluice (both servers check passwords: a wrong one is refused), and no
/// output, state store row or API answer holds any part of any password.
#[test]
fn passwords_with_any_special_character_connect_and_are_never_shown() {
    let pg = PasswordPg::start();
    let my = TestDb::new(Kind::Mysql);
    let chars: Vec<char> = SPECIALS.chars().collect();
    let my_user = |i: usize| format!("{}_u{i}", my.name);
    let mut pg_sql = String::from("GRANT ALL ON SCHEMA public TO PUBLIC;");
    let mut my_sql = String::new();
    let mut env: Vec<(String, String)> = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        let pw = password(i, c);
        pg_sql.push_str(&format!("CREATE ROLE sl_pw_{i} LOGIN PASSWORD {};", sql_literal(&pw, Kind::Postgres)));
        my_sql.push_str(&format!(
            "CREATE USER '{u}'@'127.0.0.1' IDENTIFIED BY {}; GRANT ALL ON {}.* TO '{u}'@'127.0.0.1';",
            sql_literal(&pw, Kind::Mysql),
            my.name,
            u = my_user(i)
        ));
        env.push((format!("SLUICE_IT_PW_{i}"), pw));
    }
    pg.exec(&pg_sql);
    let _users = DropUsers((0..chars.len()).map(my_user).collect());
    let created = std::process::Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-u", "root", "--default-character-set=utf8mb4", "-e", &my_sql])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

    let q = chars.iter().position(|&c| c == '?').unwrap();
    let mut toml = String::from("name = \"pw\"\n");
    let mut ok = String::new();
    for i in 0..chars.len() {
        toml.push_str(&format!(
            "[connections.pg{i}]\nurl = \"postgres://sl_pw_{i}:${{env:SLUICE_IT_PW_{i}}}@127.0.0.1:{}/postgres\"\n\
             [connections.my{i}]\nurl = \"mysql://{}:${{env:SLUICE_IT_PW_{i}}}@127.0.0.1:3306/{}\"\n",
            pg.port,
            my_user(i),
            my.name
        ));
        for b in ["pg", "my"] {
            ok.push_str(&format!(
                "[[steps]]\nname = \"{b}{i}\"\nkind = \"export\"\nconnection = \"{b}{i}\"\nquery = \"select {i} as n\"\npath = \"out/{b}{i}.tsv\"\n\n"
            ));
        }
    }
    // The wrong password (the next user's), and a database that is not there.
    toml.push_str(&format!(
        "[connections.pg_wrong]\nurl = \"postgres://sl_pw_{q}:${{env:SLUICE_IT_PW_0}}@127.0.0.1:{port}/postgres\"\n\
         [connections.my_wrong]\nurl = \"mysql://{mu}:${{env:SLUICE_IT_PW_0}}@127.0.0.1:3306/{db}\"\n\
         [connections.pg_nodb]\nurl = \"postgres://sl_pw_{q}:${{env:SLUICE_IT_PW_{q}}}@127.0.0.1:{port}/nodb\"\n\
         [connections.my_nodb]\nurl = \"mysql://{mu}:${{env:SLUICE_IT_PW_{q}}}@127.0.0.1:3306/nodb\"\n",
        port = pg.port,
        mu = my_user(q),
        db = my.name
    ));
    // Loads print the warehouse in their summary.
    ok.push_str(&format!(
        "[[steps]]\nname = \"land\"\nkind = \"ingest\"\nsource = \"data/t.csv\"\n\n\
         [[steps]]\nname = \"load_pg\"\nkind = \"load\"\nfrom = \"land\"\ntable = \"t\"\nconnection = \"pg{q}\"\ncolumns = {{ id = \"integer\" }}\n\n\
         [[steps]]\nname = \"load_my\"\nkind = \"load\"\nfrom = \"land\"\ntable = \"t\"\nconnection = \"my{q}\"\ncolumns = {{ id = \"integer\" }}\n"
    ));
    let mut bad = String::new();
    for c in ["pg_wrong", "my_wrong", "pg_nodb", "my_nodb"] {
        bad.push_str(&format!(
            "[[steps]]\nname = \"{c}\"\nkind = \"export\"\nconnection = \"{c}\"\nquery = \"select 1\"\npath = \"out/{c}.tsv\"\n\n"
        ));
    }
    let p = TestProject::new();
    p.write("sluice.toml", &toml).write("pipelines/ok.toml", &ok).write("pipelines/bad.toml", &bad);
    p.write("data/t.csv", "id\n1\n2\n");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut shown = String::new();

    let out = p.run_env(&["run", "ok"], &env);
    shown.push_str(&format!("{}{}", out.stdout, out.stderr));
    out.expect_code(0);
    for (i, c) in chars.iter().enumerate() {
        assert_eq!(p.read(&format!("out/pg{i}.tsv")), format!("n\n{i}\n"), "{c:?}");
        assert_eq!(p.read(&format!("out/my{i}.tsv")), format!("n\n{i}\n"), "{c:?}");
    }

    // Both servers check the password: the wrong one is refused.
    let out = p.run_env(&["run", "bad"], &env);
    shown.push_str(&format!("{}{}", out.stdout, out.stderr));
    assert_ne!(out.code, 0);
    assert!(out.stdout.contains("password authentication failed for user \"sl_pw_"), "{}", out.stdout);
    assert!(out.stdout.contains("Access denied for user"), "{}", out.stdout);
    assert!(out.stdout.contains("database \"nodb\" does not exist"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("connection `pg_nodb` (postgres://sl_pw_{q}:***@127.0.0.1:")),
        "{}",
        out.stdout
    );

    // A URL on the command line, its password from the environment.
    let pw_url = format!("postgres://sl_pw_{q}:${{env:SLUICE_IT_PW_{q}}}@127.0.0.1:{}/postgres", pg.port);
    let out = run_in(p.path(), &["load", "data/t.csv", &pw_url, "--table", "t_cli", "--create"], &env);
    shown.push_str(&format!("{}{}", out.stdout, out.stderr));
    out.expect_code(0);
    let out = run_in(p.path(), &["export", &pw_url, "--table", "t_cli", "-o", "out/cli.tsv"], &env);
    shown.push_str(&format!("{}{}", out.stdout, out.stderr));
    out.expect_code(0);
    assert_eq!(p.read("out/cli.tsv"), "id\n1\n2\n");

    // The API, on the state store those runs were recorded in.
    let addr = format!("127.0.0.1:{}", free_port());
    let mut api = Service::start(p.path(), "api", &["api", "--listen", &addr], &env);
    crate::support::wait_ready(&addr);
    let mut api_text = String::new();
    let mut get = |path: &str| {
        let (code, body) = http("GET", &addr, path, None);
        assert_eq!(code, 200, "{path}: {body}");
        api_text.push_str(&body);
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    get("/api/pipelines");
    let runs = get("/api/runs");
    for r in runs["runs"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        get(&format!("/api/runs/{id}"));
        let tasks = get(&format!("/api/runs/{id}/tasks"));
        for t in tasks["tasks"].as_array().unwrap() {
            get(&format!("/api/runs/{id}/tasks/{}/logs", t["step"].as_str().unwrap()));
        }
    }
    assert!(api_text.contains("password authentication failed"), "{api_text}");
    api.stop(10);
    shown.push_str(&api_text);
    shown.push_str(&api.output());

    // The state store, every table.
    let dump = std::process::Command::new("sqlite3").arg(p.file(".sluice/state.db")).arg(".dump").output().unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(dump.contains("sluice_runs") && dump.contains("Access denied"), "{dump}");
    shown.push_str(&dump);

    assert!(!shown.contains("Zq"), "a password (or part of one) was shown:\n{shown}");
}

/// Drops the MariaDB users a test created (users outlive databases).
struct DropUsers(Vec<String>);

impl Drop for DropUsers {
    fn drop(&mut self) {
        let sql: String = self.0.iter().map(|u| format!("DROP USER IF EXISTS '{u}'@'127.0.0.1';")).collect();
        let _ = std::process::Command::new("mariadb").args(["-h", "127.0.0.1", "-u", "root", "-e", &sql]).output();
    }
}
