//! Progress bars on stderr while connecting and running (indicatif), only
//! on a terminal and never with `--quiet`.

use std::io::IsTerminal as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::aggregate::Counters;

/// Progress bars on stderr, only on a terminal.
pub struct Progress {
    multi: MultiProgress,
    ramp: ProgressBar,
    run: Option<ProgressBar>,
}

impl Progress {
    pub fn new(enabled: bool, clients: u64) -> Self {
        let target = if enabled && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let ramp = multi.add(ProgressBar::new(clients));
        ramp.set_style(
            ProgressStyle::with_template("connecting {bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self {
            multi,
            ramp,
            run: None,
        }
    }

    pub fn ramp(&self, c: &Counters) {
        self.ramp.set_position(c.settled());
        self.ramp.set_message(format!(
            "connected {} failed {}",
            c.connected.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed)
        ));
    }

    pub fn start_run(&mut self, duration: Duration) {
        self.ramp.finish();
        let bar = self
            .multi
            .add(ProgressBar::new(duration.as_millis() as u64));
        bar.set_style(
            ProgressStyle::with_template("running    {bar:30} {elapsed}/{duration} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        self.run = Some(bar);
    }

    pub fn run(&self, c: &Counters, elapsed: Duration, rate: f64) {
        if let Some(bar) = &self.run {
            bar.set_position(elapsed.as_millis() as u64);
            let p99 = match c.recent_p99_us.load(Ordering::Relaxed) {
                0 => "-".to_string(),
                us => format!("{:.1} ms", us as f64 / 1000.0),
            };
            bar.set_message(format!(
                "events {} ({:.0}/s) p99 {p99}",
                c.events.load(Ordering::Relaxed),
                rate,
            ));
        }
    }

    pub fn finish(&self) {
        self.ramp.finish_and_clear();
        if let Some(bar) = &self.run {
            bar.finish_and_clear();
        }
    }
}
