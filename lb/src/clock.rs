//! A process-wide monotonic clock in milliseconds, cheap to store in an atomic and to read.

use nix::time::{clock_gettime, ClockId};
use std::sync::OnceLock;
use std::time::Duration;

/// Milliseconds since the first call in this process; never 0, so 0 can mean "never".
///
/// Read from the coarse monotonic clock (the kernel's tick, a few ms): what it times are
/// failure holds and health states of seconds, and the HTTP proxies read it for every request,
/// where the fine clock costs several times as much on a virtual machine.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Duration> = OnceLock::new();
    let now = coarse_monotonic();
    let epoch = *EPOCH.get_or_init(|| now);
    ms(now.saturating_sub(epoch)) + 1
}

fn coarse_monotonic() -> Duration {
    // Cannot fail: Linux has had this clock since 2.6.32 and nothing else is asked.
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
        .map(Duration::from)
        .unwrap_or_default()
}

pub fn ms(duration: Duration) -> u64 {
    duration.as_millis().min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_milliseconds_from_one() {
        let started = std::time::Instant::now();
        let first = now_ms();
        assert!(first >= 1);
        std::thread::sleep(Duration::from_millis(60));
        let later = now_ms();
        let elapsed = ms(started.elapsed());
        // At least the sleep, at most what the fine clock saw around both reads, whatever the
        // machine's load: the coarse clock moves in ticks of at most 10 ms (HZ >= 100).
        assert!(
            (40..=elapsed + 20).contains(&(later - first)),
            "{first} -> {later} in {elapsed} ms"
        );
    }
}
