use super::{Balance, Candidate};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Servers in proportion to their weights, interleaved (nginx's "smooth" order: weights 5,1,1
/// give a a b a c a a, not a a a a a b c), precomputed so picking is one atomic increment.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    schedule: Vec<usize>,
    next: AtomicUsize,
}

/// Weights are reduced by their common divisor first; this bounds the schedule's length.
const MAX_SCHEDULE: usize = 1 << 16;

impl WeightedRoundRobin {
    pub fn new(servers: &[Candidate]) -> Self {
        let divisor = servers
            .iter()
            .map(|s| s.weight)
            .filter(|w| *w > 0)
            .fold(0, gcd)
            .max(1);
        let weights: Vec<i64> = servers
            .iter()
            .map(|s| i64::from(s.weight / divisor))
            .collect();
        let total: i64 = weights.iter().sum();
        let length = usize::try_from(total).unwrap_or(0).min(MAX_SCHEDULE);
        let mut current = vec![0i64; weights.len()];
        let mut schedule = Vec::with_capacity(length);
        for _ in 0..length {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let Some((best, _)) = current
                .iter()
                .enumerate()
                .filter(|(i, _)| weights[*i] > 0)
                .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
            else {
                break;
            };
            current[best] -= total;
            schedule.push(best);
        }
        Self {
            schedule,
            next: AtomicUsize::new(0),
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Balance for WeightedRoundRobin {
    fn pick(
        &self,
        _client: IpAddr,
        _servers: &[Candidate],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = self.schedule.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|offset| self.schedule[(start + offset) % n])
            .find(|&i| eligible(i))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn smooth_interleaving() {
        let servers = servers(&[5, 1, 1]);
        let wrr = WeightedRoundRobin::new(&servers);
        assert_eq!(wrr.schedule, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn shares_follow_weights() {
        let servers = servers(&[3, 2, 1, 0]);
        let wrr = WeightedRoundRobin::new(&servers);
        assert_eq!(distribution(&wrr, &servers, 600), [300, 200, 100, 0]);
    }

    #[test]
    fn a_down_server_share_goes_to_the_others() {
        let servers = servers(&[2, 1]);
        let wrr = WeightedRoundRobin::new(&servers);
        for i in 0..10 {
            assert_eq!(wrr.pick(client(i), &servers, &|s| s == 1), Some(1));
        }
    }
}
