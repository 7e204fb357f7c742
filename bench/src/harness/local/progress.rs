//! The progress bar of a `local` run.

use indicatif::{ProgressBar, ProgressStyle};

use crate::harness::report::thousands;
use crate::node::observe::Observed;

/// A one-line progress bar on stderr (indicatif): elapsed/total seconds, phase, committed tx/s and
/// latency of the last full second. On a terminal it redraws in place; otherwise (indicatif then
/// draws nothing) it prints the same figures, without the bar, on a line every 5 s.
pub struct Progress {
    bar: ProgressBar,
    /// The second of the latest line printed (when not on a terminal).
    last_line_s: Option<u64>,
}

impl Progress {
    /// A bar for a load of `total_s` seconds.
    pub fn new(total_s: u64) -> Progress {
        let bar = ProgressBar::new(total_s);
        bar.set_style(
            ProgressStyle::with_template("[{bar:30}] {pos:>3}/{len} s {msg}")
                .expect("a valid template")
                .progress_chars("#."),
        );
        Progress {
            bar,
            last_line_s: None,
        }
    }

    /// Redraws for time `now` (µs).
    pub fn show(&mut self, o: &Observed, now: u64) {
        let elapsed = now.saturating_sub(o.load_start_us) / 1_000_000;
        let hidden = self.bar.is_hidden();
        if hidden && (elapsed % 5 != 0 || self.last_line_s == Some(elapsed)) {
            return;
        }
        self.last_line_s = Some(elapsed);
        let (tps, p50) = (elapsed as usize)
            .checked_sub(1)
            .and_then(|s| o.seconds.get(s))
            .map(|s| {
                let p50 = if s.latency.is_empty() {
                    0.0
                } else {
                    s.latency.value_at_quantile(0.5) as f64 / 1e3
                };
                (s.transactions, p50)
            })
            .unwrap_or((0, 0.0));
        let phase = if now < o.window.0 {
            "warm-up"
        } else if now <= o.window.1 {
            "measure"
        } else {
            "drain  "
        };
        let figures = format!(
            "{phase} | {:>9} tx/s committed | p50 {p50:>6.0} ms",
            thousands(tps as f64)
        );
        if hidden {
            let total_s = self.bar.length().unwrap_or(0);
            eprintln!("{elapsed:>3}/{total_s} s {figures}");
        } else {
            self.bar.set_position(elapsed);
            self.bar.set_message(figures);
        }
    }

    /// Leaves the bar as last drawn and ends its line.
    pub fn finish(&mut self) {
        self.bar.abandon();
    }
}
