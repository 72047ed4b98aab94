use super::{Balance, Candidate};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server with the fewest active connections for its weight (active / weight); ties go
/// round-robin so an idle pool still spreads new connections. pingora has none; this is ours.
#[derive(Debug, Default)]
pub struct LeastConnections {
    tie_breaker: AtomicUsize,
}

impl Balance for LeastConnections {
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
        let start = self.tie_breaker.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, u64, u64)> = None;
        for offset in 0..n {
            let i = (start + offset) % n;
            let server = &servers[i];
            if server.weight == 0 || !eligible(i) {
                continue;
            }
            let (load, weight) = (server.active() as u64, u64::from(server.weight));
            // load / weight < best_load / best_weight, without division.
            let better = match best {
                None => true,
                Some((_, best_load, best_weight)) => load * best_weight < best_load * weight,
            };
            if better {
                best = Some((i, load, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn prefers_the_least_loaded() {
        let servers = servers(&[1, 1, 1]);
        servers[0].active.store(5, Ordering::Relaxed);
        servers[1].active.store(2, Ordering::Relaxed);
        servers[2].active.store(7, Ordering::Relaxed);
        let lc = LeastConnections::default();
        for i in 0..5 {
            assert_eq!(lc.pick(client(i), &servers, &|_| true), Some(1));
        }
        assert_eq!(lc.pick(client(0), &servers, &|s| s != 1), Some(0));
    }

    #[test]
    fn weighs_load_by_weight() {
        let servers = servers(&[4, 1]);
        servers[0].active.store(6, Ordering::Relaxed);
        servers[1].active.store(2, Ordering::Relaxed);
        // 6/4 < 2/1
        assert_eq!(
            LeastConnections::default().pick(client(0), &servers, &|_| true),
            Some(0)
        );
    }

    #[test]
    fn keeps_connections_level_as_they_accumulate() {
        let servers = servers(&[1, 1, 1]);
        let lc = LeastConnections::default();
        for i in 0..300 {
            if let Some(s) = lc.pick(client(i), &servers, &|_| true) {
                servers[s].active.fetch_add(1, Ordering::Relaxed);
            }
        }
        let counts: Vec<usize> = servers.iter().map(Candidate::active).collect();
        assert_eq!(counts, [100, 100, 100]);
    }
}
