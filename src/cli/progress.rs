//! How a run looks on screen: progress bars when both output streams are
//! terminals, one line per step otherwise.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::Error;
use crate::orchestrate::local::{Observer, StepResult, StepState};
use crate::project::StepConfig;
use crate::steps::{Meter, MeterFactory, NoMeter, thousands};

/// Whether progress bars should be drawn.
pub fn interactive() -> bool {
    std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal()
        && std::env::var_os("SLUICE_NO_PROGRESS").is_none()
}

struct BarMeter {
    bar: ProgressBar,
    started: std::time::Instant,
}

impl Meter for BarMeter {
    fn update(&self, bytes: u64, rows: u64) {
        self.bar.set_position(bytes);
        if rows > 0 {
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            self.bar.set_prefix(format!("{} rows, {} rows/s", thousands(rows), thousands((rows as f64 / secs) as u64)));
        }
    }
    fn message(&self, msg: &str) {
        self.bar.set_message(msg.to_string());
    }
}

/// Draws one bar at a time and prints a line per finished step.
pub struct Screen {
    bars: bool,
    current: Mutex<Option<ProgressBar>>,
}

impl Screen {
    pub fn new() -> Arc<Screen> {
        Arc::new(Screen { bars: interactive(), current: Mutex::new(None) })
    }

    /// The meters steps report to.
    pub fn meters(self: &Arc<Self>) -> MeterFactory {
        let me = self.clone();
        Arc::new(move |what: &str, total: Option<u64>| -> Arc<dyn Meter> {
            if !me.bars {
                return Arc::new(NoMeter);
            }
            let bar = match total {
                Some(t) => ProgressBar::new(t).with_style(
                    ProgressStyle::with_template(
                        "{spinner} {msg:30!} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {prefix} ({eta})",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {msg} {prefix} {elapsed}").expect("valid template"),
                ),
            };
            bar.set_message(what.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            if let Some(old) = me.current.lock().expect("screen lock").replace(bar.clone()) {
                old.finish_and_clear();
            }
            Arc::new(BarMeter { bar, started: std::time::Instant::now() })
        })
    }

    pub fn clear(&self) {
        if let Some(b) = self.current.lock().expect("screen lock").take() {
            b.finish_and_clear();
        }
    }
}

impl Observer for Screen {
    fn finished(&self, _step: &StepConfig, r: &StepResult) {
        self.clear();
        let secs = format_duration(r.duration);
        match &r.state {
            StepState::Success(o) => outln!("{:<20} ok      {secs:>7}  {}", r.name, o.summary),
            StepState::Failed(e) => {
                outln!("{:<20} FAILED  {secs:>7}", r.name);
                print_step_error(e);
            }
            StepState::UpstreamFailed(dep) => {
                outln!("{:<20} skipped           (upstream step `{dep}` failed)", r.name)
            }
            StepState::Cancelled(Some(_)) => {
                outln!("{:<20} CANCELLED {secs:>5}  (stopped: the run was cancelled)", r.name)
            }
            StepState::Cancelled(None) => outln!("{:<20} cancelled         (not started)", r.name),
        }
    }
}

fn print_step_error(e: &Error) {
    // The step name is already on the line above; show the cause below it.
    let text = match e {
        Error::Context { context, source } if context.starts_with("step `") => source.chain(),
        e => e.chain(),
    };
    for (i, l) in text.lines().enumerate() {
        if i == 0 {
            outln!("  error: {l}");
        } else {
            outln!("    {}", l.trim_start());
        }
    }
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}
