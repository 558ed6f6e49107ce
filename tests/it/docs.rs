//! The documentation's shell examples are run (issue 11, item 23), so they
//! cannot drift from what Sluice does.
//!
//! Every ```sh or ```console block of README.md and docs/*.md is preceded by
//! a directive on the line before its fence:
//!
//! - `<!-- doc-test: run -->` runs it; `in=DIR` copies a folder of the
//!   repository to run in (default: an empty folder), `env=K=V;K=V` sets
//!   variables. A ```sh block runs as one bash script with `set -e`; a
//!   ```console block runs each `$ ` line and compares what it printed with
//!   the lines that follow it. In expected output, `…` stands for any text
//!   within a line, and a line that is only `…` for any number of lines.
//! - `<!-- doc-test: skip REASON -->` leaves it out, saying why (it needs a
//!   server elsewhere, it is a sketch with placeholders).
//!
//! A block with neither fails the test: each example is run or knowingly not.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::TestProject;

#[derive(Debug)]
struct Block {
    file: String,
    /// The 1-based line of the opening fence.
    line: usize,
    lang: String,
    directive: Option<String>,
    body: String,
}

fn blocks(file: &Path, shown: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if let Some(lang) = l.strip_prefix("```")
            && !lang.is_empty()
        {
            let lang = lang.trim().to_string();
            let directive = i
                .checked_sub(1)
                .map(|j| lines[j].trim())
                .and_then(|p| p.strip_prefix("<!-- doc-test:"))
                .and_then(|p| p.strip_suffix("-->"))
                .map(|p| p.trim().to_string());
            let start = i;
            i += 1;
            let mut body = String::new();
            while i < lines.len() && !lines[i].starts_with("```") {
                body.push_str(lines[i]);
                body.push('\n');
                i += 1;
            }
            out.push(Block { file: shown.to_string(), line: start + 1, lang, directive, body });
        }
        i += 1;
    }
    out
}

fn doc_files() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![(root.join("README.md"), "README.md".to_string())];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    for d in docs {
        let shown = format!("docs/{}", d.file_name().unwrap().to_string_lossy());
        files.push((d, shown));
    }
    files
}

/// Whether `actual` matches the expected lines (with `…` wildcards).
fn matches(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"…", rest)) => (0..=actual.len()).any(|k| matches(rest, &actual[k..])),
        Some((e, rest)) => actual.split_first().is_some_and(|(a, arest)| line_matches(e, a) && matches(rest, arest)),
    }
}

fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split('…').collect();
    if parts.len() == 1 {
        return expected.trim_end() == actual.trim_end();
    }
    let actual = actual.trim_end();
    let Some(rest) = actual.strip_prefix(parts[0]) else { return false };
    let mut rest = rest;
    for (k, p) in parts[1..].iter().enumerate() {
        let last = k == parts.len() - 2;
        let p = if last { p.trim_end() } else { p };
        if last {
            return rest.ends_with(p);
        }
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

struct Directive {
    dir: Option<String>,
    env: Vec<(String, String)>,
}

fn parse_run(d: &str) -> Directive {
    let mut out = Directive { dir: None, env: Vec::new() };
    for word in d.split_whitespace().skip(1) {
        if let Some(v) = word.strip_prefix("in=") {
            out.dir = Some(v.to_string());
        } else if let Some(v) = word.strip_prefix("env=") {
            for kv in v.split(';') {
                let (k, v) = kv.split_once('=').expect("env=K=V");
                out.env.push((k.to_string(), v.to_string()));
            }
        } else {
            panic!("unknown doc-test option `{word}`");
        }
    }
    out
}

fn shell(dir: &Path, env: &[(String, String)], script: &str) -> (i32, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_sluice")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut c = Command::new("bash");
    c.args(["-c", script]).current_dir(dir).env("PATH", path).env("SLUICE_NO_PROGRESS", "1").env("COLUMNS", "100");
    c.env_remove("SLUICE_PROJECT");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap_or(-1), text)
}

fn run_block(b: &Block, d: &Directive) -> Result<(), String> {
    let p = match &d.dir {
        Some(dir) => TestProject::copy_of(dir),
        None => TestProject::new(),
    };
    let at = format!("{}:{}", b.file, b.line);
    if b.lang == "sh" {
        let (code, out) = shell(p.path(), &d.env, &format!("set -e\n{}", b.body));
        return if code == 0 { Ok(()) } else { Err(format!("{at}: the block exited {code}:\n{out}")) };
    }
    // console: `$ command` lines and the output each should print.
    let mut steps: Vec<(String, Vec<&str>)> = Vec::new();
    for line in b.body.lines() {
        match line.strip_prefix("$ ") {
            Some(cmd) => steps.push((cmd.to_string(), Vec::new())),
            None => match steps.last_mut() {
                Some((_, exp)) => exp.push(line),
                None => return Err(format!("{at}: a console block starts with `$ command`")),
            },
        }
    }
    for (cmd, expected) in steps {
        let (code, out) = shell(p.path(), &d.env, &cmd);
        let actual: Vec<&str> = out.lines().collect();
        if code != 0 {
            return Err(format!("{at}: `{cmd}` exited {code}:\n{out}"));
        }
        if !matches(&expected, &actual) {
            return Err(format!(
                "{at}: `{cmd}` printed something else\n--- the docs say\n{}\n--- it printed\n{out}",
                expected.join("\n")
            ));
        }
    }
    Ok(())
}

/// Issue 11, item 23: every shell example in the docs is run or knowingly
/// skipped, and the run ones do what the docs say.
#[test]
fn documented_commands_do_what_the_docs_say() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for (path, shown) in doc_files() {
        for b in blocks(&path, &shown) {
            if b.lang != "sh" && b.lang != "console" {
                continue;
            }
            match b.directive.as_deref() {
                None => failures.push(format!(
                    "{}:{}: a {} block without a `<!-- doc-test: run -->` or `<!-- doc-test: skip REASON -->` line before it",
                    b.file, b.line, b.lang
                )),
                Some(d) if d.starts_with("skip") => {
                    if d.trim() == "skip" {
                        failures.push(format!("{}:{}: `doc-test: skip` needs a reason", b.file, b.line));
                    }
                }
                Some(d) if d.starts_with("run") => {
                    ran += 1;
                    if let Err(e) = run_block(&b, &parse_run(d)) {
                        failures.push(e);
                    }
                }
                Some(d) => failures.push(format!("{}:{}: unknown doc-test directive `{d}`", b.file, b.line)),
            }
        }
    }
    assert!(failures.is_empty(), "{} of the docs' examples fail:\n\n{}", failures.len(), failures.join("\n\n"));
    assert!(ran >= 5, "only {ran} examples ran");
}

#[test]
fn wildcards_in_expected_output() {
    assert!(line_matches("load  done  …", "load  done  12ms"));
    assert!(line_matches("a … b … c", "a x b yy c"));
    assert!(!line_matches("a … b", "a x c"));
    assert!(matches(&["first", "…", "last"], &["first", "x", "y", "last"]));
    assert!(matches(&["first", "…", "last"], &["first", "last"]));
    assert!(!matches(&["first", "last"], &["first", "x", "last"]));
}
