//! Cryptokey routing: a longest-prefix-match table from allowed IPs to peers. Outgoing packets
//! go to the peer whose allowed IPs hold the destination most specifically; incoming packets are
//! accepted only from a source the sending peer is allowed to use.

use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

/// Prefixes bucketed by length, looked up from the longest: at most 33 (IPv4) or 129 (IPv6)
/// hash lookups, whatever the number of peers.
#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    v4: Vec<HashMap<u32, T>>,
    v6: Vec<HashMap<u128, T>>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self {
            v4: (0..=32).map(|_| HashMap::new()).collect(),
            v6: (0..=128).map(|_| HashMap::new()).collect(),
        }
    }
}

fn mask_v4(address: u32, length: u8) -> u32 {
    if length == 0 {
        0
    } else {
        address & (u32::MAX << (32 - u32::from(length)))
    }
}

fn mask_v6(address: u128, length: u8) -> u128 {
    if length == 0 {
        0
    } else {
        address & (u128::MAX << (128 - u32::from(length)))
    }
}

impl<T: Clone> AllowedIps<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `net` to `value`; a prefix already present moves to `value` (as `wg set` does).
    pub fn insert(&mut self, net: IpNet, value: T) {
        match net {
            IpNet::V4(n) => {
                let length = n.prefix_len();
                self.v4[usize::from(length)].insert(mask_v4(u32::from(n.addr()), length), value);
            }
            IpNet::V6(n) => {
                let length = n.prefix_len();
                self.v6[usize::from(length)].insert(mask_v6(u128::from(n.addr()), length), value);
            }
        }
    }

    /// The value of the most specific prefix holding `address`.
    pub fn longest_match(&self, address: IpAddr) -> Option<&T> {
        match address {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                (0..=32u8)
                    .rev()
                    .find_map(|length| self.v4[usize::from(length)].get(&mask_v4(a, length)))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                (0..=128u8)
                    .rev()
                    .find_map(|length| self.v6[usize::from(length)].get(&mask_v6(a, length)))
            }
        }
    }

    /// Drops every prefix whose value `is_gone` says so.
    pub fn retain(&mut self, keep: impl Fn(&T) -> bool) {
        for bucket in &mut self.v4 {
            bucket.retain(|_, v| keep(v));
        }
        for bucket in &mut self.v6 {
            bucket.retain(|_, v| keep(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_most_specific_prefix_wins() {
        let mut table = AllowedIps::new();
        table.insert(net("0.0.0.0/0"), "default");
        table.insert(net("10.10.0.0/16"), "lab");
        table.insert(net("10.10.100.2/32"), "laptop");
        table.insert(net("fd00::/8"), "ula");
        assert_eq!(table.longest_match(ip("10.10.100.2")), Some(&"laptop"));
        assert_eq!(table.longest_match(ip("10.10.100.3")), Some(&"lab"));
        assert_eq!(table.longest_match(ip("192.0.2.1")), Some(&"default"));
        assert_eq!(table.longest_match(ip("fd12::1")), Some(&"ula"));
        assert_eq!(table.longest_match(ip("2001:db8::1")), None);
    }

    /// What the table must agree with: every prefix in a list, the longest that holds the
    /// address wins, a prefix inserted again moves.
    #[derive(Default)]
    struct Reference(Vec<(IpNet, u8)>);

    impl Reference {
        fn insert(&mut self, net: IpNet, value: u8) {
            let net = net.trunc();
            self.0.retain(|(n, _)| *n != net);
            self.0.push((net, value));
        }

        fn longest_match(&self, address: IpAddr) -> Option<u8> {
            self.0
                .iter()
                .filter(|(n, _)| n.contains(&address))
                .max_by_key(|(n, _)| n.prefix_len())
                .map(|(_, v)| *v)
        }
    }

    mod property {
        use super::*;
        use proptest::prelude::*;
        use std::net::{Ipv4Addr, Ipv6Addr};

        // Few distinct leading bits, so that random prefixes nest and compete for the same
        // addresses instead of all being disjoint.
        fn v4() -> impl Strategy<Value = IpAddr> {
            (0u32..4, 0u32..4, any::<u32>()).prop_map(|(high, mid, low)| {
                IpAddr::V4(Ipv4Addr::from(
                    (high << 30) | (mid << 24) | (low & 0x00ff_ffff),
                ))
            })
        }

        fn v6() -> impl Strategy<Value = IpAddr> {
            (0u128..4, 0u128..4, any::<u64>()).prop_map(|(high, mid, low)| {
                IpAddr::V6(Ipv6Addr::from(
                    (high << 126) | (mid << 96) | u128::from(low),
                ))
            })
        }

        fn net() -> impl Strategy<Value = IpNet> {
            prop_oneof![(v4(), 0u8..=32), (v6(), 0u8..=128)]
                .prop_map(|(address, length)| IpNet::new(address, length).unwrap())
        }

        fn address() -> impl Strategy<Value = IpAddr> {
            prop_oneof![v4(), v6()]
        }

        /// `net`'s address with the host bits from `noise`: an address inside it.
        fn inside(net: &IpNet, noise: u128) -> IpAddr {
            match net {
                IpNet::V4(n) => {
                    let host = u32::MAX.checked_shr(u32::from(n.prefix_len())).unwrap_or(0);
                    IpAddr::V4(Ipv4Addr::from(
                        u32::from(n.network()) | (noise as u32 & host),
                    ))
                }
                IpNet::V6(n) => {
                    let host = u128::MAX
                        .checked_shr(u32::from(n.prefix_len()))
                        .unwrap_or(0);
                    IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | (noise & host)))
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn longest_match_agrees_with_a_linear_scan(
                entries in proptest::collection::vec((net(), any::<u8>()), 0..48),
                lookups in proptest::collection::vec(address(), 0..48),
                noise in proptest::collection::vec(any::<u128>(), 48),
                gone in 0u8..4,
            ) {
                let mut table = AllowedIps::new();
                let mut reference = Reference::default();
                for (net, value) in &entries {
                    table.insert(*net, *value);
                    reference.insert(*net, *value);
                }
                // Random addresses, and one inside each prefix (where the answers differ).
                let mut addresses = lookups.clone();
                addresses.extend(entries.iter().zip(&noise).map(|((n, _), x)| inside(n, *x)));
                addresses.extend(entries.iter().map(|(n, _)| n.addr()));
                for address in &addresses {
                    prop_assert_eq!(
                        table.longest_match(*address).copied(),
                        reference.longest_match(*address),
                        "address {}", address
                    );
                }
                table.retain(|v| v % 4 != gone);
                reference.0.retain(|(_, v)| v % 4 != gone);
                for address in &addresses {
                    prop_assert_eq!(
                        table.longest_match(*address).copied(),
                        reference.longest_match(*address),
                        "address {} after retain", address
                    );
                }
            }
        }
    }

    #[test]
    fn reinserting_moves_a_prefix_and_retain_removes() {
        let mut table = AllowedIps::new();
        table.insert(net("10.0.0.0/24"), 1);
        table.insert(net("10.0.0.0/24"), 2);
        assert_eq!(table.longest_match(ip("10.0.0.9")), Some(&2));
        table.retain(|v| *v != 2);
        assert_eq!(table.longest_match(ip("10.0.0.9")), None);
    }
}
