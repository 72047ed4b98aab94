//! The host-side files lab-bootstrap installs, rendered from `lab.toml` as text: one dnsmasq
//! per lab bridge, the nftables table, the sysctl drop-in and the units that start them.
//! Rendering is pure; [`files`] writes the result.

pub mod backup;
pub mod containers;
pub mod daemons;
pub mod dnsmasq;
pub mod files;
pub mod guest_routes;
pub mod keepalived;
pub mod manager;
pub mod nftables;
pub mod observability;
pub mod state;
pub mod sysctl;

use crate::model::{Lab, NetworkId, Role};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Where the host's lab configuration lives; dnsmasq's own `/etc/dnsmasq.d` is avoided so a
/// system dnsmasq, if one is installed, never picks these files up.
pub const CONFIG_DIR: &str = "/etc/lab";
/// Leases survive restarts here (systemd's `StateDirectory=lab`).
pub const STATE_DIR: &str = "/var/lib/lab";

/// Why a file could not be rendered from the lab.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A file needs the address of the machine with a role on a network, and there is none.
    #[error(
        "the lab has no machine with role = \"{role}\" on {network}; run `lab-bootstrap validate`"
    )]
    MissingRole {
        /// The role, as lab.toml spells it.
        role: &'static str,
        /// The network, as lab.toml spells it.
        network: &'static str,
    },
    /// A vpn peer's public key could not be read or is no WireGuard key.
    #[error("vpn.peer `{peer}`: {source}")]
    PeerKey {
        /// The peer's name.
        peer: String,
        /// What is wrong with its key.
        source: crate::model::PeerKeyError,
    },
    /// lab-lb's or lab-vpn's config could not be written as TOML.
    #[error("cannot write {what}'s file: {reason}")]
    Serialize {
        /// The command that checks the file (`lab-lb check PATH`), which names it.
        what: String,
        /// The serializer's error.
        reason: String,
    },
    /// A certificate or key an `https` route names could not be read.
    #[error("lb.route: cannot read {}: {reason}", path.display())]
    RouteFile {
        /// The file, as lab.toml names it (relative to lab.toml's directory).
        path: PathBuf,
        /// The underlying error.
        reason: String,
    },
    /// A peer's client config cannot be made (the gateway has no public endpoint).
    #[error("a VPN client config: {0}")]
    ClientConfig(lab_schema::vpn::client_config::NoEndpoint),
}

/// A file as it is installed on the host: absolute path, contents and permission bits.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Where it goes on the host.
    pub path: PathBuf,
    /// What it holds.
    pub contents: String,
    /// Its permission bits; 0600 keeps it private, in debug output too.
    pub mode: u32,
}

// Private files (0600: machine configs with the cluster's CA keys, the VPN gateway's key) are
// private in debug output too; what anyone may read on the host may be printed.
impl std::fmt::Debug for RenderedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("RenderedFile");
        out.field("path", &self.path)
            .field("mode", &format_args!("{:04o}", self.mode));
        if crate::state_dir::private::is_private(self.mode) {
            out.field(
                "contents",
                &format_args!("<{} bytes, redacted>", self.contents.len()),
            );
        } else {
            out.field("contents", &self.contents);
        }
        out.finish()
    }
}

/// A static route the host needs: `destination via gateway dev bridge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    /// The network it reaches.
    pub destination: Ipv4Net,
    /// The next hop, on the bridge's network.
    pub gateway: Ipv4Addr,
    /// The host bridge it leaves through.
    pub bridge: String,
}

/// The lab networks the host serves with DHCP: net1 and net2, never the uplink. Without a
/// `dhcp` range a network still gets its reservations.
pub const DHCP_NETWORKS: [NetworkId; 2] = [NetworkId::Net1, NetworkId::Net2];

/// The address of the machine with `role` on `network`.
pub fn role_address(lab: &Lab, role: Role, network: NetworkId) -> Result<Ipv4Addr, RenderError> {
    lab.machines
        .iter()
        .find(|m| m.role == role)
        .and_then(|m| m.address_on(network))
        .ok_or(RenderError::MissingRole {
            role: role.as_str(),
            network: network.as_str(),
        })
}

/// VPN peers reach the lab through the vpn container's net1 address.
pub fn routes(lab: &Lab) -> Result<Vec<HostRoute>, RenderError> {
    Ok(vec![HostRoute {
        destination: lab.vpn.tunnel,
        gateway: role_address(lab, Role::Vpn, NetworkId::Net1)?,
        bridge: lab.networks.net1.bridge.clone(),
    }])
}

/// An address the host puts on a bridge itself: `address/prefix dev bridge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddress {
    /// The host's address with its network's prefix.
    pub address: Ipv4Net,
    /// The bridge it goes on.
    pub bridge: String,
}

/// On several nodes, the router node's gateway addresses on the VNets' bridges: SDN makes a
/// VXLAN VNet's bridge on every node without an address, where on one node Proxmox's own
/// bridge carries it. None on one node.
pub fn gateway_addresses(lab: &Lab) -> Vec<HostAddress> {
    if !lab.is_cluster() {
        return Vec::new();
    }
    DHCP_NETWORKS
        .iter()
        .filter_map(|id| {
            let net = lab.networks.get(*id);
            Some(HostAddress {
                address: Ipv4Net::new(net.host, net.cidr.prefix_len()).ok()?,
                bridge: net.bridge.clone(),
            })
        })
        .collect()
}

/// Every host file, in a stable order.
pub fn host_files(lab: &Lab) -> Result<Vec<RenderedFile>, RenderError> {
    let mut out = Vec::new();
    for id in DHCP_NETWORKS {
        let bridge = &lab.networks.get(id).bridge;
        out.push(RenderedFile {
            path: dnsmasq::config_path(bridge),
            contents: dnsmasq::config(lab, id, &dnsmasq::lease_path(bridge)),
            mode: 0o644,
        });
    }
    out.push(RenderedFile {
        path: PathBuf::from(daemons::DNSMASQ_UNIT_PATH),
        contents: daemons::dnsmasq_unit(),
        mode: 0o644,
    });
    out.push(RenderedFile {
        path: PathBuf::from(nftables::PATH),
        contents: nftables::ruleset(lab)?,
        mode: 0o644,
    });
    out.push(RenderedFile {
        path: PathBuf::from(daemons::NETWORK_UNIT_PATH),
        contents: daemons::network_unit(&gateway_addresses(lab), &routes(lab)?),
        mode: 0o644,
    });
    out.push(RenderedFile {
        path: PathBuf::from(sysctl::PATH),
        contents: sysctl::dropin(),
        mode: 0o644,
    });
    out.extend(containers::files(lab)?);
    out.extend(keepalived::files(lab)?);
    out.extend(observability::host_files(lab));
    Ok(out)
}
