//! Progress of what apply and `up --local` wait for: one line per stage with its elapsed time
//! and what it waits for, redrawn in place on a terminal (indicatif), printed as plain lines
//! when stdout is a file or a pipe (logs, CI), where a redrawn line would be noise.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// One stage being waited for.
pub struct Stage {
    label: String,
    started: Instant,
    bar: Option<ProgressBar>,
    last: String,
}

impl Stage {
    /// Starts stage `label` ("etcd", "cluster health"), waiting for `what`.
    pub fn start(label: &str, what: &str) -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) =
                ProgressStyle::with_template("  {spinner} {prefix} [{elapsed}] {wide_msg}")
            {
                bar.set_style(style);
            }
            bar.set_prefix(label.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let mut stage = Self {
            label: label.to_owned(),
            started: Instant::now(),
            bar,
            last: String::new(),
        };
        stage.waiting_for(what);
        stage
    }

    /// Says what the stage waits for now; a plain line only when it changed.
    pub fn waiting_for(&mut self, what: &str) {
        if what == self.last {
            return;
        }
        what.clone_into(&mut self.last);
        match &self.bar {
            Some(bar) => bar.set_message(what.to_owned()),
            None => lab_daemon::cli::out(&format!(
                "  {} [{}s] {what}\n",
                self.label,
                self.started.elapsed().as_secs()
            )),
        }
    }

    /// Ends the stage with its outcome, `✓` or `✗` and the time it took.
    pub fn finish(self, ok: bool, outcome: &str) {
        let line = format!(
            "  {} {} [{}s] {outcome}",
            if ok { "✓" } else { "✗" },
            self.label,
            self.started.elapsed().as_secs()
        );
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        // A closed stdout (`| head`) is no reason to panic in the middle of an apply.
        lab_daemon::cli::out(&format!("{line}\n"));
    }
}
