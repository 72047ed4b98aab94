//! On several nodes, net1 and net2 are SDN VNets in a VXLAN zone: their names and VXLAN
//! identifiers as Proxmox's SDN takes them.

use super::{Lab, NetworkId};
use lab_daemon::Issues;

/// The largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = 16_777_215;

/// Proxmox's rule for SDN zone and VNet ids (pve-sdn-zone-id, pve-sdn-vnet-id): a letter, then
/// letters and digits, 8 characters at most.
pub fn is_sdn_id(id: &str) -> bool {
    let mut chars = id.chars();
    id.len() <= 8
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric())
}

impl Lab {
    /// The VXLAN network identifier of `network`'s VNet: its `vni`, or 10001 for net1 and
    /// 10002 for net2.
    pub fn vni(&self, network: NetworkId) -> u32 {
        let default = match network {
            NetworkId::Net0 => 10000,
            NetworkId::Net1 => 10001,
            NetworkId::Net2 => 10002,
        };
        self.networks.get(network).vni.unwrap_or(default)
    }

    /// On several nodes: the zone and VNet names Proxmox accepts, and distinct VXLAN ids.
    pub(crate) fn validate_sdn(&self, issues: &mut Issues) {
        if !self.is_cluster() {
            return;
        }
        let zone = self.proxmox.sdn_zone();
        if !is_sdn_id(zone) {
            issues.add(
                "proxmox.sdn_zone",
                format!("`{zone}` is not an SDN zone name: a letter, then letters and digits, 8 at most"),
            );
        }
        for id in [NetworkId::Net1, NetworkId::Net2] {
            let key = format!("networks.{}", id.as_str());
            let bridge = &self.networks.get(id).bridge;
            if !is_sdn_id(bridge) {
                issues.add(
                    format!("{key}.bridge"),
                    format!("`{bridge}` is not an SDN VNet name (on several nodes the network is a VNet): a letter, then letters and digits, 8 at most"),
                );
            }
            let vni = self.vni(id);
            if !(1..=MAX_VNI).contains(&vni) {
                issues.add(
                    format!("{key}.vni"),
                    format!("{vni} is not a VXLAN id (1 to {MAX_VNI})"),
                );
            }
        }
        if self.vni(NetworkId::Net1) == self.vni(NetworkId::Net2) {
            issues.add(
                "networks.net2.vni",
                format!(
                    "{} is net1's VXLAN id too; each VNet needs its own",
                    self.vni(NetworkId::Net2)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdn_ids_follow_proxmox() {
        for ok in ["lab", "vmbr1", "a", "abcdefgh"] {
            assert!(is_sdn_id(ok), "{ok}");
        }
        for bad in ["", "1lab", "lab-1", "abcdefghi", "lab_1", "vmbr1.2"] {
            assert!(!is_sdn_id(bad), "{bad}");
        }
    }
}
