//! `command`: runs a program in the project folder, with the run's facts in
//! its environment (`SLUICE_RUN_ID`, `SLUICE_LOGICAL_DATE`, `SLUICE_PIPELINE`,
//! `SLUICE_STEP`, `SLUICE_PROJECT_DIR`). Its output is kept (the last 64 KiB)
//! for the run record. Exit 0 is success; exit 75 (`EX_TEMPFAIL`) is a failure
//! that may pass on a retry; any other code fails the step. On cancel, timeout
//! or shutdown the program's whole process group gets SIGTERM, then SIGKILL
//! after 5 seconds.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{RunCtx, StepOutput};
use crate::error::{Error, Result};
use crate::project::tree::Spanned;
use crate::project::{CommandStep, StepConfig};

/// What is kept of the program's output.
const KEEP: usize = 64 * 1024;

/// The command as a person would type it.
pub fn shown(argv: &[String]) -> String {
    if argv.len() == 3 && argv[0] == "sh" && argv[1] == "-c" {
        return argv[2].clone();
    }
    argv.iter()
        .map(|a| if a.contains(' ') || a.is_empty() { format!("'{a}'") } else { a.clone() })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A value as written, its references resolved now; an error names the
/// variable and where the value is written.
fn resolve(ctx: &RunCtx, s: &Spanned<String>) -> Result<String> {
    if !crate::secret::has_refs(&s.v) {
        return Ok(s.v.clone());
    }
    ctx.project.env.resolve(&s.v).map_err(|e| Error::user(format!("{}: {e}", ctx.project.sources.position(&s.loc))))
}

pub fn run(ctx: &RunCtx, pipeline: &str, step: &StepConfig, cfg: &CommandStep) -> Result<StepOutput> {
    // Shown and recorded as written: resolved values may be secrets.
    let what = shown(&cfg.written());
    let argv: Vec<String> =
        if cfg.shell { cfg.written() } else { cfg.argv.iter().map(|a| resolve(ctx, a)).collect::<Result<_>>()? };
    let env: Vec<(&str, String)> =
        cfg.env.iter().map(|(k, v)| Ok((k.as_str(), resolve(ctx, v)?))).collect::<Result<_>>()?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(&ctx.project.dir)
        .env("SLUICE_RUN_ID", &ctx.run_id)
        .env("SLUICE_LOGICAL_DATE", &ctx.logical_date)
        .env("SLUICE_PIPELINE", pipeline)
        .env("SLUICE_STEP", &step.name.v)
        .env("SLUICE_PROJECT_DIR", &ctx.project.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        let retry = e.kind() != std::io::ErrorKind::NotFound && e.kind() != std::io::ErrorKind::PermissionDenied;
        Error::external(format!("cannot start `{what}`: {e}"), retry)
    })?;
    let pgid = child.id() as i32;
    let output = Arc::new(Mutex::new(Vec::<u8>::new()));
    let readers: Vec<_> = [
        child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>),
        child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        let out = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut o = out.lock().expect("output");
                o.extend_from_slice(&buf[..n]);
                if o.len() > 2 * KEEP {
                    let cut = o.len() - KEEP;
                    o.drain(..cut);
                }
            }
        })
    })
    .collect();
    let mut signalled: Option<Instant> = None;
    let mut nap = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => return Err(Error::external(format!("cannot wait for `{what}`: {e}"), true)),
        }
        if ctx.cancel.reason().is_some() {
            match signalled {
                None => {
                    signal_group(pgid, libc::SIGTERM);
                    signalled = Some(Instant::now());
                }
                Some(t) if t.elapsed() > Duration::from_secs(5) => signal_group(pgid, libc::SIGKILL),
                Some(_) => {}
            }
        }
        // Short commands end quickly; long ones are looked at every 20 ms.
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    };
    for r in readers {
        let _ = r.join();
    }
    let out = output.lock().expect("output");
    let start = out.len().saturating_sub(KEEP);
    let text = String::from_utf8_lossy(&out[start..]).into_owned();
    ctx.cancel.check()?;
    let took = started.elapsed();
    match status.code() {
        Some(0) => Ok(StepOutput {
            summary: format!("`{what}` exited 0 in {:.1}s", took.as_secs_f64()),
            rows: None,
            bytes: Some(out.len() as u64),
            details: json!({ "command": cfg.written(), "exit_code": 0, "output": text }),
        }),
        code => {
            let tail: Vec<&str> = text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
            let how = match code {
                Some(c) => format!("exited with status {c}"),
                None => "was killed by a signal".into(),
            };
            let mut msg = format!("`{what}` {how}");
            if !tail.is_empty() {
                msg.push_str(&format!("; its last output:\n{}", tail.join("\n")));
            }
            // The program's own failure (exit 1 of sluice), not a server's;
            // status 75 (EX_TEMPFAIL) may pass on a retry.
            Err(Error::Command { message: msg, status: code })
        }
    }
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; the group
    // is the child's own (process_group(0) above), so nothing else is touched.
    unsafe {
        libc::kill(-pgid, sig);
    }
}
