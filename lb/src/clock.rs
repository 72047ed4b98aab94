//! A process-wide monotonic clock in milliseconds, cheap to store in an atomic.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the first call in this process; never 0, so 0 can mean "never".
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

pub fn ms(duration: Duration) -> u64 {
    duration.as_millis().min(u128::from(u64::MAX)) as u64
}
