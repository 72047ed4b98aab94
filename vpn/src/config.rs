//! `vpn.toml`: the WireGuard interface, its peers, the networks peers may reach, and the shared
//! daemon sections.
//!
//! Keys live in files referenced from here, never in this file, so it can be read, diffed and
//! logged freely.

use crate::key::PublicKey;
use ipnet::IpNet;
use lab_daemon::{
    ConfigFile, DaemonConfig, Issues, LogConfig, MetricsConfig, Name, RuntimeConfig, ShutdownConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpnConfig {
    #[serde(default)]
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    pub interface: Interface,
    #[serde(default, rename = "peer")]
    pub peers: Vec<Peer>,
}

/// `[interface]`: the tunnel device and the gateway's side of the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// Name of the TUN device, also the control socket's name (`/var/run/wireguard/<name>.sock`).
    pub name: String,
    /// File holding the gateway's private key in `wg genkey` format; mode 0600 or stricter.
    pub private_key_file: PathBuf,
    pub listen_port: u16,
    /// The gateway's tunnel addresses, with the tunnel's prefix: `10.10.100.1/24`.
    pub address: Vec<IpNet>,
    #[serde(default = "Interface::default_mtu")]
    pub mtu: u16,
    /// Networks behind the gateway that peers may reach (net1, and what the host routes on).
    pub reach: Vec<IpNet>,
    /// Source-NAT peer traffic towards `reach` to the gateway's address there, for networks
    /// whose hosts have no route back to the tunnel.
    #[serde(default)]
    pub masquerade: bool,
    /// DNS servers written into generated client configs.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// `host:port` clients use to reach the gateway, written into generated client configs.
    #[serde(default)]
    pub public_endpoint: Option<String>,
}

impl Interface {
    /// wireguard-go's default: 1500 minus the largest (IPv6) WireGuard overhead.
    pub const DEFAULT_MTU: u16 = 1420;
    /// Linux refuses longer interface names (IFNAMSIZ − 1).
    pub const MAX_NAME_LEN: usize = 15;

    fn default_mtu() -> u16 {
        Self::DEFAULT_MTU
    }
}

/// `[[peer]]`: one admin device allowed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub name: Name,
    pub public_key: PublicKey,
    #[serde(default)]
    pub preshared_key_file: Option<PathBuf>,
    /// Tunnel addresses this peer may send from, and that are routed to it.
    pub allowed_ips: Vec<IpNet>,
    #[serde(default)]
    pub endpoint: Option<SocketAddr>,
    #[serde(default, with = "humantime_serde")]
    pub persistent_keepalive: Option<Duration>,
}

impl ConfigFile for VpnConfig {
    const WHAT: &'static str = "a lab-vpn configuration ([metrics], [interface], [[peer]])";

    fn validate(&self, issues: &mut Issues) {
        self.validate_interface(issues);
        self.validate_peers(issues);
    }

    fn resolve_paths(&mut self, dir: &std::path::Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        };
        resolve(&mut self.interface.private_key_file);
        for peer in &mut self.peers {
            if let Some(psk) = &mut peer.preshared_key_file {
                resolve(psk);
            }
        }
    }

    fn summary(&self) -> String {
        format!(
            "interface {} on UDP {}, {} peers, reaching {}",
            self.interface.name,
            self.interface.listen_port,
            self.peers.len(),
            self.interface
                .reach
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl DaemonConfig for VpnConfig {
    const PROGRAM: &'static str = "lab-vpn";
    const DEFAULT_PATH: &'static str = "/etc/lab-vpn/vpn.toml";
    const METRICS_PREFIX: &'static str = "lab_vpn";

    fn log(&self) -> &LogConfig {
        &self.log
    }

    fn metrics(&self) -> &MetricsConfig {
        &self.metrics
    }

    fn shutdown(&self) -> &ShutdownConfig {
        &self.shutdown
    }

    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }
}

impl VpnConfig {
    fn validate_interface(&self, issues: &mut Issues) {
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
        if interface.reach.is_empty() {
            issues.add(
                "interface.reach",
                "no networks to reach; peers would get nowhere through the gateway",
            );
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

    fn validate_peers(&self, issues: &mut Issues) {
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
