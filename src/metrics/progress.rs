//! The console progress display: a bar with step, reward and ETA on a terminal, plain lines
//! otherwise (logs, CI).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    start_step: u64,
    started: Instant,
}

impl Progress {
    pub fn new(what: &str, start_step: u64, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}").expect("valid template").progress_chars("=> "));
            bar.set_prefix(what.to_string());
            bar.set_position(start_step);
            bar
        });
        Progress { bar, total, start_step, started: Instant::now() }
    }

    /// Reports that `step` is done, with a short summary such as `reward 0.42`.
    pub fn step(&self, step: u64, summary: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(step);
                bar.set_message(summary.to_string());
            }
            None => {
                let done = step.saturating_sub(self.start_step).max(1);
                let per = self.started.elapsed().as_secs_f64() / done as f64;
                let eta = per * self.total.saturating_sub(step) as f64;
                eprintln!("step {step}/{} {summary} ({per:.1}s/step, eta {eta:.0}s)", self.total);
            }
        }
    }

    /// A line that does not disturb the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
