//! The checks of `vpn.toml` serde cannot make: a usable interface, and peers whose names, keys
//! and allowed IPs tell them apart.

use super::key::PublicKey;
use super::{Interface, VpnConfig};
use crate::{Issues, Name};
use ipnet::IpNet;
use std::collections::HashMap;

impl VpnConfig {
    pub(super) fn validate_interface(&self, issues: &mut Issues) {
        let interface = &self.interface;
        let name = &interface.name;
        if name.is_empty()
            || name.len() > Interface::MAX_NAME_LEN
            || name == "."
            || name == ".."
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            issues.add(
                "interface.name",
                format!(
                    "`{name}` is not a usable interface name: 1 to {} letters, digits, `-`, `_` or `.`",
                    Interface::MAX_NAME_LEN
                ),
            );
        }
        if let Some(endpoint) = &interface.public_endpoint {
            if let Err(problem) = super::check_endpoint(endpoint) {
                issues.add("interface.public_endpoint", problem);
            }
        }
        if interface.listen_port == 0 {
            issues.add(
                "interface.listen_port",
                "port 0 would pick a random port each start; peers need a fixed one",
            );
        }
        if interface.address.is_empty() {
            issues.add(
                "interface.address",
                "the gateway needs at least one tunnel address",
            );
        }
        let min_mtu = if interface.address.iter().any(|a| matches!(a, IpNet::V6(_))) {
            1280
        } else {
            576
        };
        if interface.mtu < min_mtu {
            issues.add(
                "interface.mtu",
                format!(
                    "MTU {} is below the minimum of {min_mtu} for these addresses",
                    interface.mtu
                ),
            );
        }
        if let Some(bytes) = interface.udp_receive_buffer {
            let range = Interface::UDP_RECEIVE_BUFFER;
            if !range.contains(&bytes) {
                issues.add(
                    "interface.udp_receive_buffer",
                    format!(
                        "{bytes} bytes is outside {}..={} (64 KiB to 64 MiB)",
                        range.start(),
                        range.end()
                    ),
                );
            }
        }
        if interface.reach.is_empty() {
            issues.add(
                "interface.reach",
                "no networks to reach; peers would get nowhere through the gateway",
            );
        }
        for (i, domain) in interface.dns_search.iter().enumerate() {
            if !is_dns_name(domain) {
                issues.add(
                    format!("interface.dns_search[{i}]"),
                    format!(
                        "`{domain}` is not a DNS domain: labels of 1 to 63 letters, digits and `-` (not starting or ending with `-`) joined by `.`, not an address"
                    ),
                );
            }
        }
        for (i, net) in interface.reach.iter().enumerate() {
            if let Some(tunnel) = interface.address.iter().find(|a| overlaps(&a.trunc(), net)) {
                issues.add(
                    format!("interface.reach[{i}]"),
                    format!("{net} overlaps the tunnel network {}", tunnel.trunc()),
                );
            }
        }
    }

    pub(super) fn validate_peers(&self, issues: &mut Issues) {
        let mut names: HashMap<&Name, usize> = HashMap::new();
        let mut keys: HashMap<&PublicKey, usize> = HashMap::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let key = format!("peer[{i}]");
            if let Some(first) = names.insert(&peer.name, i) {
                issues.add(
                    format!("{key}.name"),
                    format!("peer `{}` is already defined as peer[{first}]", peer.name),
                );
            }
            if let Some(first) = keys.insert(&peer.public_key, i) {
                issues.add(
                    format!("{key}.public_key"),
                    format!(
                        "the same public key is already used by peer `{}`",
                        self.peers[first].name
                    ),
                );
            }
            if peer.allowed_ips.is_empty() {
                issues.add(
                    format!("{key}.allowed_ips"),
                    format!(
                        "peer `{}` has no allowed IPs, so no packet could reach it",
                        peer.name
                    ),
                );
            }
            for (j, net) in peer.allowed_ips.iter().enumerate() {
                let net_key = format!("{key}.allowed_ips[{j}]");
                if *net != net.trunc() {
                    issues.add(
                        net_key.clone(),
                        format!("{net} has host bits set; did you mean {}?", net.trunc()),
                    );
                }
                if let Some(own) = self
                    .interface
                    .address
                    .iter()
                    .find(|a| net.contains(&a.addr()))
                {
                    issues.add(
                        net_key.clone(),
                        format!("{net} contains the gateway's own address {}", own.addr()),
                    );
                }
                for (other_index, other) in self.peers[..i].iter().enumerate() {
                    if let Some(clash) = other.allowed_ips.iter().find(|o| overlaps(o, net)) {
                        issues.add(
                            net_key.clone(),
                            format!(
                                "{net} overlaps {clash} of peer `{}` (peer[{other_index}]); a packet could not tell which peer it is for",
                                other.name
                            ),
                        );
                    }
                }
            }
            if let Some(keepalive) = peer.persistent_keepalive {
                if keepalive.subsec_nanos() != 0 || keepalive.as_secs() > u64::from(u16::MAX) {
                    issues.add(
                        format!("{key}.persistent_keepalive"),
                        "persistent keepalive is whole seconds, at most 65535s",
                    );
                }
            }
        }
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Whether wg-quick (and resolvers) take `domain` as a search domain: RFC 1123 labels joined by
/// `.`, at most 253 characters, and not a number (wg-quick reads an address as a server).
fn is_dns_name(domain: &str) -> bool {
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    domain.len() <= 253
        && domain.split('.').all(label)
        && !domain
            .rsplit('.')
            .next()
            .is_some_and(|last| last.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigFile;

    #[test]
    fn search_domains_are_dns_names() {
        for ok in ["lab", "home.example.org", "x-1.lab"] {
            assert!(is_dns_name(ok), "{ok}");
        }
        for bad in ["", "lab.", ".lab", "home_lab", "10.10.1.1", "a b", "-lab"] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
        let text = "[metrics]\nlisten = \"127.0.0.1:9586\"\n[interface]\nname = \"wg0\"\n\
                    private_key_file = \"/k\"\nlisten_port = 51820\naddress = [\"10.10.100.1/24\"]\n\
                    reach = [\"10.10.1.0/24\"]\ndns_search = [\"lab\", \"10.10.1.1\"]\n";
        let config: VpnConfig = toml::from_str(text).unwrap();
        let mut issues = Issues::new();
        config.validate(&mut issues);
        let keys: Vec<String> = issues.into_vec().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["interface.dns_search[1]"]);
    }

    #[test]
    fn the_runtime_socket_is_lab_lbs_and_refused_in_vpn_toml() {
        let text = "[metrics]\nlisten = \"127.0.0.1:9586\"\n[runtime]\nsocket = \"/run/x.sock\"\n\
                    socket_group = \"adm\"\n[interface]\nname = \"wg0\"\nprivate_key_file = \"/k\"\nlisten_port = 51820\n\
                    address = [\"10.10.100.1/24\"]\nreach = [\"10.10.1.0/24\"]\n";
        let config: VpnConfig = toml::from_str(text).unwrap();
        let mut issues = Issues::new();
        config.validate(&mut issues);
        let keys: Vec<String> = issues.into_vec().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["runtime.socket", "runtime.socket_group"]);
    }

    #[test]
    fn a_udp_receive_buffer_outside_its_range_is_refused_by_name() {
        let with = |line: &str| {
            let text = format!(
                "[metrics]\nlisten = \"127.0.0.1:9586\"\n[interface]\nname = \"wg0\"\n\
                 private_key_file = \"/k\"\nlisten_port = 51820\naddress = [\"10.10.100.1/24\"]\n\
                 reach = [\"10.10.1.0/24\"]\n{line}\n"
            );
            let config: VpnConfig = toml::from_str(&text).unwrap();
            let mut issues = Issues::new();
            config.validate(&mut issues);
            issues
                .into_vec()
                .into_iter()
                .map(|i| format!("{}: {}", i.key, i.message))
                .collect::<Vec<_>>()
        };
        assert!(with("").is_empty());
        assert!(with("udp_receive_buffer = 3145728").is_empty());
        assert!(with("udp_receive_buffer = 65536").is_empty());
        assert_eq!(
            with("udp_receive_buffer = 4096"),
            ["interface.udp_receive_buffer: 4096 bytes is outside 65536..=67108864 (64 KiB to 64 MiB)"]
        );
        assert_eq!(with("udp_receive_buffer = 100000000").len(), 1);
    }
}
