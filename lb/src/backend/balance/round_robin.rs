use super::{Balance, Candidate};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Each server in turn, skipping those not eligible and those of weight 0.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balance for RoundRobin {
    fn pick(
        &self,
        _client: IpAddr,
        servers: &[Candidate],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = servers.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|offset| (start + offset) % n)
            .find(|&i| servers[i].weight > 0 && eligible(i))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn takes_turns() {
        let servers = servers(&[1, 1, 1]);
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..6)
            .filter_map(|i| rr.pick(client(i), &servers, &|_| true))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn skips_ineligible_and_zero_weight() {
        let servers = servers(&[1, 0, 1]);
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..4)
            .filter_map(|i| rr.pick(client(i), &servers, &|s| s != 2))
            .collect();
        assert_eq!(picks, [0, 0, 0, 0]);
        assert_eq!(rr.pick(client(0), &servers, &|_| false), None);
    }
}
