//! Choosing a server for a new connection: one algorithm per file behind [`Balance`], as
//! pingora's `selection` module lays them out. Algorithms are pure: they see weights and live
//! connection counts, and which servers the caller will accept (healthy, not yet tried).

mod consistent;
mod least_connections;
#[cfg(test)]
mod properties;
mod round_robin;
mod weighted_round_robin;

pub use consistent::ConsistentHash;
pub use least_connections::LeastConnections;
pub use round_robin::RoundRobin;
pub use weighted_round_robin::WeightedRoundRobin;

use crate::config::BalanceAlgorithm as Algorithm;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What an algorithm may know about a server.
#[derive(Debug)]
pub struct Candidate {
    pub address: SocketAddr,
    /// Relative share of connections; 0 means never chosen.
    pub weight: u32,
    /// Connections currently proxied to this server. Shared with the previous configuration's
    /// candidate for the same server, so a reload does not forget the load.
    pub active: Arc<AtomicUsize>,
}

impl Candidate {
    #[cfg(test)]
    pub fn new(address: SocketAddr, weight: u32) -> Self {
        Self::with_counter(address, weight, Arc::default())
    }

    pub fn with_counter(address: SocketAddr, weight: u32, active: Arc<AtomicUsize>) -> Self {
        Self {
            address,
            weight,
            active,
        }
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// A balancing algorithm over a fixed list of servers.
pub trait Balance: Send + Sync + std::fmt::Debug {
    /// Index of the server for a new connection from `client`, among those for which
    /// `eligible` is true; `None` when there is none.
    fn pick(
        &self,
        client: IpAddr,
        servers: &[Candidate],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize>;
}

/// The algorithm `balance = "..."` names, set up for `servers`.
pub fn build(algorithm: Algorithm, servers: &[Candidate]) -> Box<dyn Balance> {
    match algorithm {
        Algorithm::RoundRobin => Box::new(RoundRobin::default()),
        Algorithm::WeightedRoundRobin => Box::new(WeightedRoundRobin::new(servers)),
        Algorithm::LeastConnections => Box::new(LeastConnections::default()),
        Algorithm::ConsistentHash => Box::new(ConsistentHash::new(servers)),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn servers(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Candidate::new(SocketAddr::from(([10, 0, 0, i as u8 + 1], 80)), *w))
            .collect()
    }

    pub fn client(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    /// How many of `picks` connections each server gets.
    pub fn distribution(balance: &dyn Balance, servers: &[Candidate], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; servers.len()];
        for i in 0..picks {
            if let Some(s) = balance.pick(client(i as u32), servers, &|_| true) {
                counts[s] += 1;
            }
        }
        counts
    }
}
