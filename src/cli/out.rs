//! Everything the command line prints goes through here (`outln!`, `out!`,
//! `errln!`, and `Stdout` for streams such as an export), so that a reader
//! that goes away (`sluice dag | head`, a closed terminal) never makes
//! Sluice panic. A write that fails marks the stream closed and later output
//! to it is dropped; commands that only print stop early (`closed()`), and
//! commands that do work (`run`, `transform`, `backfill`) finish it and exit
//! with its status, because the work and its record in the state store
//! matter more than the lines about it. The standard macros that print are
//! not used anywhere else in the crate (a test checks).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether stdout's reader has gone away.
pub fn closed() -> bool {
    STDOUT_CLOSED.load(Ordering::SeqCst)
}

fn write(closed: &AtomicBool, w: &mut dyn Write, args: std::fmt::Arguments) {
    if closed.load(Ordering::SeqCst) {
        return;
    }
    if w.write_fmt(args).and_then(|_| w.flush()).is_err() {
        closed.store(true, Ordering::SeqCst);
    }
}

/// Writes to stdout (see `outln!`).
pub fn stdout(args: std::fmt::Arguments) {
    write(&STDOUT_CLOSED, &mut std::io::stdout().lock(), args)
}

/// Writes to stderr (see `errln!`).
pub fn stderr(args: std::fmt::Arguments) {
    write(&STDERR_CLOSED, &mut std::io::stderr().lock(), args)
}

/// Prints to stdout; a closed stdout is not an error.
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::out::stdout(format_args!($($t)*)) };
}

/// Prints a line to stdout; a closed stdout is not an error.
macro_rules! outln {
    () => { $crate::cli::out::stdout(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::out::stdout(format_args!("{}\n", format_args!($($t)*))) };
}

/// Prints a line to stderr; a closed stderr is not an error.
macro_rules! errln {
    ($($t:tt)*) => { $crate::cli::out::stderr(format_args!("{}\n", format_args!($($t)*))) };
}

/// Stdout as a byte stream (exports): a failed write marks stdout closed,
/// so the command can tell a reader that left from a real failure.
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stdout().lock().write(buf).inspect_err(|_| STDOUT_CLOSED.store(true, Ordering::SeqCst))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().lock().flush().inspect_err(|_| STDOUT_CLOSED.store(true, Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    /// The class of bug behind `sluice run | head` panicking: a print that
    /// panics when its reader leaves. Nothing but this module may print.
    #[test]
    fn nothing_prints_except_through_this_module() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        let mut stack = vec![src.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("cli/out.rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    for (i, line) in text.lines().enumerate() {
                        let code = line.split("//").next().unwrap_or("");
                        if ["print!(", "println!(", "dbg!("].iter().any(|m| code.contains(m)) {
                            found.push(format!(
                                "{}:{}: {}",
                                p.strip_prefix(&src).unwrap().display(),
                                i + 1,
                                line.trim()
                            ));
                        }
                    }
                }
            }
        }
        assert!(found.is_empty(), "print through cli::out (outln!, errln!) instead:\n{}", found.join("\n"));
    }
}
