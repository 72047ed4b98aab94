//! Handshake messages per source address: a token bucket for each address (an IPv6 source by its
//! /64, what one host holds), checked in the inbound loop before a message is queued, so one
//! source flooding initiations with a valid mac1 costs a map lookup per message instead of MAC
//! checks and a cookie reply each, and leaves the handshake budget to everyone else. Real peers
//! send a handshake every two minutes; a NAT with a lab's worth of peers behind it stays far
//! below the rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Handshake messages a second from one source, once its burst is spent.
const RATE: f64 = 100.0;
/// Handshake messages one source may send back to back: enough for boringtun's device-wide
/// limit (100 a second) to engage cookie replies from a single flooding source, as before this
/// limit.
const BURST: f64 = 250.0;
/// Sources tracked at once; past this, a new source's handshakes are refused until a sweep
/// frees room (a flood from many spoofed addresses must not grow the map).
const SOURCES: usize = 4096;
/// Sweeps of a full map at most this often: a sweep walks every bucket, and sources that keep
/// theirs from filling up would otherwise have each newcomer's message pay for a walk.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// A source's tokens at `at`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets of the sources seen lately.
#[derive(Default)]
pub struct SourceLimit {
    buckets: HashMap<IpAddr, Bucket>,
    swept: Option<Instant>,
}

impl SourceLimit {
    /// Whether a handshake message from `source` may go on, at `now`.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        let key = host_of(source);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= SOURCES {
            if self
                .swept
                .is_none_or(|swept| now.saturating_duration_since(swept) >= SWEEP_EVERY)
            {
                self.sweep(now);
            }
            if self.buckets.len() >= SOURCES {
                return false;
            }
        }
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * RATE;
        bucket.tokens = (bucket.tokens + refill).min(BURST);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets the sources whose buckets have filled up again: they are as good as new.
    fn sweep(&mut self, now: Instant) {
        self.swept = Some(now);
        self.buckets.retain(|_, bucket| {
            bucket.tokens + now.saturating_duration_since(bucket.at).as_secs_f64() * RATE < BURST
        });
    }
}

/// The address a limit applies to: an IPv4 address, or an IPv6 address's /64.
fn host_of(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(limit: &mut SourceLimit, source: &str, count: usize, now: Instant) -> usize {
        let source: IpAddr = source.parse().unwrap();
        (0..count).filter(|_| limit.allow(source, now)).count()
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut limit = SourceLimit::default();
        let start = Instant::now();
        assert_eq!(
            allowed(&mut limit, "192.0.2.1", 1000, start),
            BURST as usize
        );
        let later = start + Duration::from_millis(100);
        assert_eq!(
            allowed(&mut limit, "192.0.2.1", 1000, later),
            (RATE / 10.0) as usize
        );
        // Another source is not held back by the first.
        assert_eq!(allowed(&mut limit, "192.0.2.2", 10, later), 10);
    }

    #[test]
    fn an_ipv6_host_is_its_slash_64() {
        let mut limit = SourceLimit::default();
        let now = Instant::now();
        assert_eq!(allowed(&mut limit, "2001:db8::1", 200, now), 200);
        assert_eq!(
            allowed(&mut limit, "2001:db8::ffff:2", 200, now),
            BURST as usize - 200
        );
        assert_eq!(allowed(&mut limit, "2001:db8:0:1::1", 10, now), 10);
        // An IPv4 peer reached over a dual-stack socket is its IPv4 address.
        assert_eq!(allowed(&mut limit, "::ffff:192.0.2.9", 1, now), 1);
        assert_eq!(limit.buckets.len(), 3);
    }

    #[test]
    fn many_sources_are_bounded_and_forgotten_once_refilled() {
        let mut limit = SourceLimit::default();
        let start = Instant::now();
        for i in 0..SOURCES as u32 {
            assert!(limit.allow(IpAddr::V4((0x0a00_0000 + i).into()), start));
        }
        let newcomer: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(!limit.allow(newcomer, start), "the map grew past its bound");
        assert_eq!(limit.buckets.len(), SOURCES);
        // Not swept again at once: refused without a walk over the map.
        assert!(!limit.allow(newcomer, start + Duration::from_millis(10)));
        assert_eq!(limit.buckets.len(), SOURCES);
        // One message each took one token, refilled within 1/RATE s: swept once it may be.
        assert!(limit.allow(newcomer, start + SWEEP_EVERY));
        assert_eq!(limit.buckets.len(), 1);
    }
}
