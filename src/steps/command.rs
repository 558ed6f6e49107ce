//! `command`: runs a program in the project folder, with the run's facts in
//! its environment (`SLUICE_RUN_ID`, `SLUICE_LOGICAL_DATE`, `SLUICE_PIPELINE`,
//! `SLUICE_STEP`, `SLUICE_PROJECT_DIR`). Its output is kept (the last 64 KiB)
//! for the run record. Exit 0 is success; exit 75 (`EX_TEMPFAIL`) is a failure
//! that may pass on a retry; any other code fails the step. On cancel, timeout
//! or shutdown the program's whole process group gets SIGTERM, then SIGKILL
//! after 5 seconds.
//!
//! The program never outlives the process that started it: it runs under a
//! small supervisor (this binary again, `sluice __supervise`) that leads the
//! step's process group and is told by the kernel when its parent dies
//! (`PR_SET_PDEATHSIG`), even by `kill -9`; it then stops the whole group
//! the same way, so a killed worker's task is not still running when its
//! lease runs out and another worker takes it.

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

/// The first argument that makes `sluice` a command's supervisor.
pub const SUPERVISE: &str = "__supervise";

static SUPERVISED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs command steps under the supervisor. The `sluice` binary turns this on
/// (it answers `__supervise`); a program that embeds the library and does
/// not leaves it off, and its commands are only stopped by the kernel when
/// the thread that started them dies (the direct child, not its children).
pub fn use_supervisor() {
    SUPERVISED.store(true, std::sync::atomic::Ordering::SeqCst);
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
    let supervised = SUPERVISED.load(std::sync::atomic::Ordering::SeqCst);
    if supervised {
        // The supervisor starts the program; a missing one is reported here.
        let path = env.iter().rev().find(|(k, _)| *k == "PATH").map(|(_, v)| std::ffi::OsString::from(v));
        findable(&argv[0], &ctx.project.dir, path).map_err(|e| start_error(&what, e))?;
    }
    let mut cmd = if supervised {
        // /proc/self/exe is this binary even if its file was replaced since.
        let mut c = Command::new("/proc/self/exe");
        c.arg(SUPERVISE).arg("--").args(&argv);
        c
    } else {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Told with SIGTERM when the thread that started us ends, however it ends.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the line above: nobody would tell us.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("sluice exited while the command was starting"));
            }
            Ok(())
        });
    }
    cmd.current_dir(&ctx.project.dir)
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
    let mut child = cmd.spawn().map_err(|e| start_error(&what, e))?;
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
            ..Default::default()
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

/// Whether `program` can be started from `dir`: a path that exists, or a
/// name found on `PATH`.
fn findable(program: &str, dir: &std::path::Path, path: Option<std::ffi::OsString>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let runnable =
        |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let found = if program.contains('/') {
        let p = dir.join(program);
        if std::fs::metadata(&p).is_err() {
            false
        } else if !runnable(&p) {
            return Err(std::io::Error::from_raw_os_error(libc::EACCES));
        } else {
            true
        }
    } else {
        let path = path.or_else(|| std::env::var_os("PATH")).unwrap_or_default();
        std::env::split_paths(&path).any(|d| runnable(&dir.join(d).join(program)))
    };
    if found { Ok(()) } else { Err(std::io::Error::from_raw_os_error(libc::ENOENT)) }
}

fn start_error(what: &str, e: std::io::Error) -> Error {
    let retry = e.kind() != std::io::ErrorKind::NotFound && e.kind() != std::io::ErrorKind::PermissionDenied;
    Error::external(format!("cannot start `{what}`: {e}"), retry)
}

/// Exit status of the supervisor when the program cannot be started: the
/// shell's "command not found".
const NOT_FOUND: i32 = 127;

/// `sluice __supervise -- PROGRAM ARGS…`: runs the program in this process's
/// group and waits for it. On SIGTERM, SIGINT or SIGHUP (sent by the kernel
/// when sluice dies, or by sluice to stop the step) the whole group gets
/// SIGTERM, then SIGKILL 5 seconds later; once the program has ended after
/// such a signal, what is left of the group is killed. Exits as the program
/// did (the same code, or the same signal).
pub fn supervise(args: &[std::ffi::OsString]) -> i32 {
    let argv: Vec<&std::ffi::OsString> = args.iter().skip_while(|a| *a != "--").skip(1).collect();
    let Some(program) = argv.first() else {
        return 2;
    };
    // SAFETY: plain libc calls on a set this function owns; the process is
    // single-threaded here.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        // SIGCHLD too: the program's end wakes the wait below at once.
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD] {
            libc::sigaddset(&mut set, s);
        }
        // Blocked, and taken with sigtimedwait below (the child starts
        // with an empty mask: std resets it).
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    // The parent may have died before the mask was set: its SIGTERM then
    // ended this process already; one that dies later is seen below.
    let mut child = match Command::new(program).args(&argv[1..]).spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("cannot start `{}`: {e}\n", program.to_string_lossy()).as_bytes(),
            );
            return if e.kind() == std::io::ErrorKind::NotFound { NOT_FOUND } else { 126 };
        }
    };
    // SAFETY: getpgrp cannot fail.
    let group = unsafe { libc::getpgrp() };
    let mut stopping: Option<Instant> = None;
    let mut killed = false;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if stopping.is_some() {
                    // Stragglers of a stopped step go with it (this process too).
                    signal_group(group, libc::SIGKILL);
                }
                return mirror(status);
            }
            Ok(None) => {}
            Err(_) => return 70,
        }
        let wait = libc::timespec { tv_sec: 0, tv_nsec: 50_000_000 };
        // SAFETY: waits for one of the blocked signals, at most 50 ms.
        let got = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &wait) };
        if got > 0 && got != libc::SIGCHLD && stopping.is_none() {
            stopping = Some(Instant::now());
            signal_group(group, libc::SIGTERM);
        }
        if let Some(t) = stopping
            && !killed
            && t.elapsed() > Duration::from_secs(5)
        {
            killed = true;
            signal_group(group, libc::SIGKILL);
        }
    }
}

/// Ends this process the way the program ended.
fn mirror(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return code;
    }
    if let Some(sig) = status.signal() {
        // SAFETY: restores the default action and raises the same signal,
        // so the parent sees "killed by a signal" as without a supervisor.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
        return 128 + sig;
    }
    70
}
