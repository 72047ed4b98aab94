//! Property tests of the balancers over random server sets, weights, loads and failures: what
//! the unit tests show for one hand-picked case holds for all of them.

use super::testing::{client, servers};
use super::{Balance, Candidate, ConsistentHash, LeastConnections, WeightedRoundRobin};
use proptest::prelude::*;
use std::sync::atomic::Ordering;

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

proptest! {
    /// When servers go down, only their clients move: every client whose server is still up
    /// keeps it, and the others land on a server that is up.
    #[test]
    fn consistent_hash_moves_only_the_clients_of_servers_that_went_down(
        weights in prop::collection::vec(1u32..=4, 2..=8),
        down_mask in any::<u8>(),
        clients in prop::collection::vec(any::<u32>(), 1..200),
    ) {
        let servers = servers(&weights);
        let down = |i: usize| down_mask & (1 << i) != 0;
        prop_assume!((0..servers.len()).any(|i| !down(i)));
        let ch = ConsistentHash::new(&servers);
        for &c in &clients {
            let before = ch.pick(client(c), &servers, &|_| true);
            let after = ch.pick(client(c), &servers, &|i| !down(i));
            let before = before.expect("every server is up");
            let after = after.expect("a server is up");
            prop_assert!(!down(after));
            if !down(before) {
                prop_assert_eq!(after, before, "client {} moved off a server that is up", c);
            }
        }
    }

    /// Over whole rounds of its schedule each server gets exactly its share of the picks (its
    /// weight over the weights' common divisor per round); over any number of picks no more
    /// than one round's share off; a server of weight 0 never.
    #[test]
    fn weighted_round_robin_respects_weights_over_n_picks(
        weights in prop::collection::vec(0u32..=20, 1..=8),
        picks in 0usize..2000,
    ) {
        prop_assume!(weights.iter().any(|&w| w > 0));
        let servers = servers(&weights);
        let wrr = WeightedRoundRobin::new(&servers);
        let divisor = weights.iter().copied().fold(0, gcd);
        let shares: Vec<usize> = weights.iter().map(|&w| (w / divisor) as usize).collect();
        let round: usize = shares.iter().sum();
        let mut counts = vec![0usize; servers.len()];
        for i in 0..picks {
            let s = wrr.pick(client(i as u32), &servers, &|_| true).expect("a server has weight");
            counts[s] += 1;
            if (i + 1) % round == 0 {
                let rounds = (i + 1) / round;
                let expected: Vec<usize> = shares.iter().map(|s| s * rounds).collect();
                prop_assert_eq!(&counts, &expected, "after {} rounds", rounds);
            }
        }
        let rounds = picks / round;
        for (count, share) in counts.iter().zip(&shares) {
            prop_assert!(*count >= share * rounds && *count <= share * (rounds + 1));
        }
    }

    /// A pick is a server that is up, has weight, and carries no more connections per weight
    /// than any other such server; none only when there is no such server. Ties are taken in
    /// turn: as many picks as servers reach every tied one.
    #[test]
    fn least_connections_picks_a_least_loaded_server(
        loads in prop::collection::vec((0usize..50, 0u32..=5), 1..=8),
        down_mask in any::<u8>(),
    ) {
        let weights: Vec<u32> = loads.iter().map(|(_, w)| *w).collect();
        let servers = servers(&weights);
        for (server, (active, _)) in servers.iter().zip(&loads) {
            server.active.store(*active, Ordering::Relaxed);
        }
        let usable = |i: usize| down_mask & (1 << i) == 0 && servers[i].weight > 0;
        let per_weight = |s: &Candidate| (s.active() as u64, u64::from(s.weight));
        let lc = LeastConnections::default();
        let mut picked = vec![false; servers.len()];
        for _ in 0..servers.len() {
            let pick = lc.pick(client(0), &servers, &|i| down_mask & (1 << i) == 0);
            let Some(p) = pick else {
                prop_assert!(!(0..servers.len()).any(usable), "none picked, yet a server is usable");
                continue;
            };
            prop_assert!(usable(p), "picked {} which is down or without weight", p);
            let (load, weight) = per_weight(&servers[p]);
            for other in (0..servers.len()).filter(|&i| usable(i)) {
                let (other_load, other_weight) = per_weight(&servers[other]);
                prop_assert!(
                    load * other_weight <= other_load * weight,
                    "picked {} ({}/{}) over {} ({}/{})", p, load, weight, other, other_load, other_weight
                );
            }
            picked[p] = true;
        }
        // Every least-loaded server was picked in turn.
        if let Some(best) = (0..servers.len()).filter(|&i| usable(i)).find(|&i| picked[i]) {
            let (load, weight) = per_weight(&servers[best]);
            for tied in (0..servers.len()).filter(|&i| usable(i)) {
                let (l, w) = per_weight(&servers[tied]);
                if l * weight == load * w {
                    prop_assert!(picked[tied], "tied server {} never picked", tied);
                }
            }
        }
    }
}
