//! `vpn.toml`: the WireGuard interface, its peers, the networks peers may reach, and the shared
//! daemon sections.
//!
//! Keys live in files referenced from here, never in this file, so it can be read, diffed and
//! logged freely.

mod addresses;
pub mod client_config;
mod endpoint;
pub mod key;
mod peers_file;
mod validate;

pub use addresses::next_free_address;
pub use endpoint::check_endpoint;
pub use peers_file::PeersFile;

use crate::{
    ConfigFile, DaemonConfig, Issues, LogConfig, MetricsConfig, Name, RuntimeConfig, ShutdownConfig,
};
use ipnet::IpNet;
use key::PublicKey;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The whole of `vpn.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpnConfig {
    /// A file of further `[[peer]]` tables, those `lab-vpn peer add` adds (and `peer remove`
    /// removes), read after this file's own peers. A file written by a tool (lab-bootstrap
    /// writes vpn.toml from lab.toml) names one so that peers added on the gateway survive its
    /// next rewrite; a peer there may not share a name, key or address with one here. Missing
    /// means no peers yet. Relative to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers_file: Option<PathBuf>,
    /// `[log]`.
    #[serde(default)]
    pub log: LogConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[shutdown]`.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// `[runtime]`.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// `[interface]`.
    pub interface: Interface,
    /// `[[peer]]`.
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
    /// The UDP port peers send to.
    pub listen_port: u16,
    /// The gateway's tunnel addresses, with the tunnel's prefix: `10.10.100.1/24`.
    pub address: Vec<IpNet>,
    /// The tunnel device's MTU.
    #[serde(default = "Interface::default_mtu")]
    pub mtu: u16,
    /// Networks behind the gateway that peers may reach (net1, and what the host routes on).
    pub reach: Vec<IpNet>,
    /// Source-NAT peer traffic towards `reach` to the gateway's address there, for networks
    /// whose hosts have no route back to the tunnel.
    #[serde(default)]
    pub masquerade: bool,
    /// TUN offloads (TCP and, on Linux 6.2 and later, UDP segmentation; coalescing of a flow's
    /// packets written to the TUN) where the kernel grants them; `false` moves every packet
    /// on its own, as before.
    #[serde(default = "Interface::default_offload")]
    pub offload: bool,
    /// Bytes of kernel receive buffer to ask for the UDP socket; absent, the system's default
    /// (`net.core.rmem_default`, 208 KiB on most Linux). A larger buffer holds the bursts that
    /// arrive while the daemon is off the CPU instead of dropping them: more TCP throughput
    /// through the tunnel on a busy machine, paid for in latency under load, since a bulk
    /// transfer keeps the buffer full and every other packet of the tunnel waits behind it.
    /// Past `net.core.rmem_max` only with CAP_NET_ADMIN in the host's namespace (what was
    /// granted is logged). Applied again on reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_receive_buffer: Option<u32>,
    /// DNS servers written into generated client configs.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// DNS search domains written into generated client configs (wg-quick's `DNS` line takes
    /// them after the servers): `lab`, so `cp1` resolves as `cp1.lab`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// `host:port` clients use to reach the gateway, written into generated client configs.
    #[serde(default)]
    pub public_endpoint: Option<String>,
}

impl Interface {
    /// wireguard-go's default: 1500 minus the largest (IPv6) WireGuard overhead.
    pub const DEFAULT_MTU: u16 = 1420;
    /// Offloads on unless the config turns them off: the kernel's refusal is handled anyway.
    pub const DEFAULT_OFFLOAD: bool = true;
    /// The range `udp_receive_buffer` may take: below it the kernel would drop a single GRO
    /// bundle; above it one socket could hold a container's memory.
    pub const UDP_RECEIVE_BUFFER: std::ops::RangeInclusive<u32> = (64 << 10)..=(64 << 20);
    /// Linux refuses longer interface names (IFNAMSIZ − 1).
    pub const MAX_NAME_LEN: usize = 15;

    fn default_mtu() -> u16 {
        Self::DEFAULT_MTU
    }

    fn default_offload() -> bool {
        Self::DEFAULT_OFFLOAD
    }
}

/// `[[peer]]`: one admin device allowed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Names the peer in logs, metrics and `peer list`.
    pub name: Name,
    /// The peer's key, as `wg pubkey` prints it.
    pub public_key: PublicKey,
    /// File holding a key shared with this peer alone (`wg genpsk` format, mode 0600).
    #[serde(default)]
    pub preshared_key_file: Option<PathBuf>,
    /// Tunnel addresses this peer may send from, and that are routed to it.
    pub allowed_ips: Vec<IpNet>,
    /// Where the peer is, for a gateway that speaks first; learnt from the peer when unset.
    #[serde(default)]
    pub endpoint: Option<SocketAddr>,
    /// Send a keepalive this often, whole seconds, to keep NAT state open.
    #[serde(default, with = "humantime_serde")]
    pub persistent_keepalive: Option<Duration>,
}

impl ConfigFile for VpnConfig {
    const WHAT: &'static str = "a lab-vpn configuration ([metrics], [interface], [[peer]])";

    fn validate(&self, issues: &mut Issues) {
        self.validate_interface(issues);
        self.validate_peers(issues);
        if self.runtime.socket.is_some() {
            issues.add(
                "runtime.socket",
                "is lab-lb's runtime API; lab-vpn's control socket is /var/run/wireguard/<interface>.sock",
            );
        }
        if self.runtime.socket_group.is_some() {
            issues.add(
                "runtime.socket_group",
                "is lab-lb's runtime API's group; lab-vpn's control socket is root's only",
            );
        }
    }

    fn resolve_paths(&mut self, dir: &std::path::Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        };
        resolve(&mut self.interface.private_key_file);
        if let Some(file) = &mut self.peers_file {
            resolve(file);
        }
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
