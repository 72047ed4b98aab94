use super::{Balance, Candidate};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;

/// A hash ring over the client address (Ketama-style: many points per server, in proportion to
/// its weight). A client keeps its server while that server is eligible; when it is not, only
/// its clients move, each to the next server on the ring.
#[derive(Debug)]
pub struct ConsistentHash {
    /// (point, server index), sorted by point.
    ring: Vec<(u64, usize)>,
}

/// Points per unit of weight: enough for an even spread over a handful of servers.
const POINTS_PER_WEIGHT: u32 = 160;

fn hash(value: impl Hash) -> u64 {
    // SipHash with fixed keys: the same ring in every process of the same build.
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

impl ConsistentHash {
    pub fn new(servers: &[Candidate]) -> Self {
        let mut ring = Vec::new();
        for (i, server) in servers.iter().enumerate() {
            for point in 0..server.weight.saturating_mul(POINTS_PER_WEIGHT) {
                // Keyed by address, not index, so reordering servers keeps clients in place.
                ring.push((hash((server.address, point)), i));
            }
        }
        ring.sort_unstable();
        Self { ring }
    }
}

impl Balance for ConsistentHash {
    fn pick(
        &self,
        client: IpAddr,
        _servers: &[Candidate],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let key = hash(client);
        let start = self.ring.partition_point(|(point, _)| *point < key);
        let n = self.ring.len();
        (0..n)
            .map(|offset| self.ring[(start + offset) % n].1)
            .find(|&i| eligible(i))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn same_client_same_server() {
        let servers = servers(&[1, 1, 1]);
        let ch = ConsistentHash::new(&servers);
        for c in 0..100 {
            let first = ch.pick(client(c), &servers, &|_| true);
            assert_eq!(ch.pick(client(c), &servers, &|_| true), first);
        }
    }

    #[test]
    fn spreads_clients_roughly_evenly() {
        let servers = servers(&[1, 1, 1]);
        let ch = ConsistentHash::new(&servers);
        for count in distribution(&ch, &servers, 3000) {
            assert!((700..=1300).contains(&count), "{count} of 3000");
        }
    }

    #[test]
    fn only_the_down_servers_clients_move() {
        let servers = servers(&[1, 1, 1]);
        let ch = ConsistentHash::new(&servers);
        let mut moved_from_others = 0;
        let mut moved_from_down = 0;
        for c in 0..2000 {
            let before = ch.pick(client(c), &servers, &|_| true);
            let after = ch.pick(client(c), &servers, &|s| s != 1);
            if before == Some(1) {
                assert_ne!(after, Some(1));
                moved_from_down += 1;
            } else if before != after {
                moved_from_others += 1;
            }
        }
        assert_eq!(moved_from_others, 0);
        assert!(moved_from_down > 0);
    }
}
