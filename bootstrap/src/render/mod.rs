//! The host-side files lab-bootstrap installs, rendered from `lab.toml` as text: one dnsmasq
//! per lab bridge, the nftables table, the sysctl drop-in and the units that start them.
//! Rendering is pure; [`files`] writes the result.

pub mod containers;
pub mod daemons;
pub mod dnsmasq;
pub mod files;
pub mod guest_routes;
pub mod nftables;
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

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "the lab has no machine with role = \"{role}\" on {network}; run `lab-bootstrap validate`"
    )]
    MissingRole {
        role: &'static str,
        network: &'static str,
    },
    #[error("`{name}` is not a valid name: {reason}")]
    Name { name: String, reason: String },
    #[error("vpn.peer `{peer}`: {source}")]
    PeerKey {
        peer: String,
        source: crate::model::PeerKeyError,
    },
    #[error("cannot write {what}'s file: {reason}")]
    Serialize { what: String, reason: String },
    #[error("a VPN client config: {0}")]
    ClientConfig(lab_schema::vpn::client_config::NoEndpoint),
}

/// A file as it is installed on the host: absolute path, contents and permission bits.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: PathBuf,
    pub contents: String,
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
    pub destination: Ipv4Net,
    pub gateway: Ipv4Addr,
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
        contents: daemons::network_unit(&routes(lab)?),
        mode: 0o644,
    });
    out.push(RenderedFile {
        path: PathBuf::from(sysctl::PATH),
        contents: sysctl::dropin(),
        mode: 0o644,
    });
    out.extend(containers::files(lab)?);
    Ok(out)
}
