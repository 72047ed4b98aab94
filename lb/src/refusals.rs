//! Connections refused before they reach a server (past a connection limit, a broken
//! ClientHello or PROXY header, a failed TLS handshake, no server up): every one counted, and
//! logged within a budget.
//! A flood of refusals would otherwise be a flood of access-log lines: CPU spent formatting
//! them for whoever sends the flood, and journald, past its rate limit for the unit, dropping
//! the daemon's other lines with them.

use crate::metrics::{ListenerMetrics, Refusal};
use lab_daemon::logging::Escaped;
use lab_daemon::Name;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Lines logged at once before the budget holds refusals back.
const BURST: f64 = 20.0;
/// Lines a second after that.
const PER_SECOND: f64 = 10.0;

/// One listener's refusals: counted in `lab_lb_connections_refused_total`, logged within budget.
pub struct Refusals {
    listener: Name,
    metrics: ListenerMetrics,
    budget: Mutex<Budget>,
}

/// One refused connection, for its log line.
pub struct Refused<'a> {
    pub client: SocketAddr,
    pub why: Refusal,
    pub detail: &'a str,
    /// `tls-passthrough`: the name the ClientHello asked for, when it was read.
    pub server_name: Option<&'a str>,
    pub started: Instant,
}

impl Refusals {
    pub fn new(listener: Name, metrics: ListenerMetrics) -> Self {
        Self {
            listener,
            metrics,
            budget: Mutex::new(Budget::new(crate::clock::now_ms())),
        }
    }

    pub fn refuse(&self, refused: Refused<'_>) {
        self.metrics.refused(refused.why);
        let Some(unlogged) = self.within_budget() else {
            return;
        };
        tracing::info!(
            target: "access",
            client = %refused.client,
            listener = %self.listener,
            sni = %Escaped(refused.server_name.unwrap_or("-")),
            outcome = %refused.why.as_str(),
            detail = %Escaped(refused.detail),
            duration_ms = refused.started.elapsed().as_millis() as u64,
            unlogged,
            "refused"
        );
    }

    /// Some(lines held back before this one) when a line about a refused connection (counted
    /// by the caller) may be logged now.
    pub fn within_budget(&self) -> Option<u64> {
        match self.budget.lock() {
            Ok(mut budget) => budget.take(crate::clock::now_ms()),
            // A thread that panicked holding it left a counter behind: log, as before budgets.
            Err(_) => Some(0),
        }
    }
}

/// A token bucket of log lines; what it holds back is counted and reported (`unlogged`) on the
/// next line it lets through.
struct Budget {
    tokens: f64,
    at_ms: u64,
    held_back: u64,
}

impl Budget {
    fn new(now_ms: u64) -> Self {
        Self {
            tokens: BURST,
            at_ms: now_ms,
            held_back: 0,
        }
    }

    /// Some(refusals held back since the last line) when this one may be logged.
    fn take(&mut self, now_ms: u64) -> Option<u64> {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * PER_SECOND).min(BURST);
        self.at_ms = self.at_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.held_back))
        } else {
            self.held_back = self.held_back.saturating_add(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_logged_then_lines_come_at_the_rate_and_say_what_was_held_back() {
        let mut budget = Budget::new(1_000);
        let logged: Vec<Option<u64>> = (0..25).map(|_| budget.take(1_000)).collect();
        assert!(logged[..20].iter().all(|l| *l == Some(0)), "{logged:?}");
        assert!(logged[20..].iter().all(Option::is_none), "{logged:?}");
        // A tenth of a second buys one line, which reports the five held back.
        assert_eq!(budget.take(1_100), Some(5));
        assert_eq!(budget.take(1_100), None);
        // A quiet while refills the burst, not more.
        let after_quiet: Vec<Option<u64>> = (0..21).map(|_| budget.take(100_000)).collect();
        assert_eq!(after_quiet[0], Some(1));
        assert!(after_quiet[1..20].iter().all(|l| *l == Some(0)));
        assert_eq!(after_quiet[20], None);
    }

    #[test]
    fn a_clock_that_steps_back_spends_no_more_than_it_has() {
        let mut budget = Budget::new(5_000);
        for _ in 0..20 {
            assert!(budget.take(5_000).is_some());
        }
        assert_eq!(budget.take(1_000), None);
        assert_eq!(budget.take(5_000), None);
    }
}
