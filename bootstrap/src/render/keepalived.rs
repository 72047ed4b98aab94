//! keepalived (Debian's) in each container of an lb or vpn pair: VRRP over unicast between the
//! two containers' own addresses, one `vrrp_instance` per network the machine is on, held
//! together by a sync group so the net0 and net2 (or net1) addresses always move together, and
//! a `track_script` asking the local daemon's metrics listener whether it runs.
//!
//! VRRP version 3: it has no authentication (RFC 5798 dropped it; version 2's `PASS` is a
//! cleartext password anyone on the segment reads). What stands in for it: adverts are unicast
//! to the peer, and `check_unicast_src` drops adverts from any other address.

use super::containers::{staged_in, LB_METRICS_PORT, VPN_METRICS_PORT};
use super::{RenderError, RenderedFile};
use crate::model::{Lab, Machine, NetworkId, Role};
use std::fmt::Write;

/// keepalived's config in a pair's containers (Debian's unit reads it).
pub const CONFIG: &str = "/etc/keepalived/keepalived.conf";
/// The drop-in on Debian's `keepalived.service`: the capabilities and the ordering.
pub const DROPIN: &str = "/etc/systemd/system/keepalived.service.d/10-lab.conf";
/// The Debian package.
pub const PACKAGE: &str = "keepalived";

/// All keepalived needs: `CAP_NET_ADMIN` to add and remove the virtual addresses, `CAP_NET_RAW`
/// for the VRRP socket (IP protocol 112) and the gratuitous ARPs that move the neighbours'
/// caches, `CAP_SETGID` for the `setgroups` it makes before running the `track_script` as
/// `script_user` (root too: without it the check never runs, and a dead daemon keeps the
/// addresses). The check, curl, needs nothing more.
pub const CAPABILITIES: [&str; 3] = ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SETGID"];

/// Seconds between adverts: a silent master is replaced after about three.
pub const ADVERT_INTERVAL: u32 = 1;
/// Seconds between health checks of the local daemon; two failures in a row hand over.
pub const CHECK_INTERVAL: u32 = 1;

/// The VRRP priorities of the pair's first and second container: the first holds the
/// addresses when both start.
const PRIORITIES: [u32; 2] = [150, 100];

/// The pair's virtual router ID, the same in both containers: derived from the machine's VMID
/// (unique in the lab), in VRRP's 1..=255.
pub fn router_id(machine: &Machine) -> u32 {
    1 + machine.vmid % 255
}

/// The command keepalived runs to ask whether the daemon of `role` in container `instance`
/// works: its metrics listener on the container's own address (lab-lb's `/status`, lab-vpn's
/// `/metrics`), which the standby answers too.
pub fn health_command(role: Role, instance: &Machine) -> Option<String> {
    let (network, port, path) = match role {
        Role::Lb => (NetworkId::Net2, LB_METRICS_PORT, "status"),
        Role::Vpn => (NetworkId::Net1, VPN_METRICS_PORT, "metrics"),
        _ => return None,
    };
    let address = instance.address_on(network)?;
    Some(format!(
        "/usr/bin/curl --silent --fail --max-time 1 --output /dev/null http://{address}:{port}/{path}"
    ))
}

/// The keepalived.conf of container `index` (0 or 1) of `role`'s pair.
pub fn config(lab: &Lab, role: Role, index: usize) -> Result<String, RenderError> {
    let missing = |network: NetworkId| RenderError::MissingRole {
        role: role.as_str(),
        network: network.as_str(),
    };
    let machine = lab
        .machines
        .iter()
        .find(|m| m.role == role)
        .ok_or(missing(NetworkId::Net0))?;
    let instances = lab.instances(role);
    let (Some(own), Some(peer)) = (instances.get(index), instances.get(1 - index.min(1))) else {
        return Err(missing(NetworkId::Net0));
    };
    let group = format!("lab_{}", role.as_str());
    let check = format!("{group}_daemon");
    let mut out = format!(
        "# Written by lab-bootstrap from lab.toml: the {role} pair's addresses, container `{name}`.\n\
         # Check with `keepalived -t -f {CONFIG}`.\n\
         global_defs {{\n  router_id {name}\n  vrrp_version 3\n  enable_script_security\n  script_user root\n}}\n\n",
        role = role.as_str(),
        name = own.name,
    );
    let command = health_command(role, own).ok_or(missing(NetworkId::Net1))?;
    let _ = write!(
        out,
        "vrrp_script {check} {{\n  script \"{command}\"\n  interval {CHECK_INTERVAL}\n  timeout 2\n  fall 2\n  rise 2\n}}\n\n"
    );
    let names: Vec<String> = machine
        .nics
        .iter()
        .map(|nic| format!("{group}_{}", nic.network.as_str()))
        .collect();
    let _ = write!(
        out,
        "vrrp_sync_group {group} {{\n  group {{\n{}  }}\n}}\n",
        names
            .iter()
            .map(|n| format!("    {n}\n"))
            .collect::<String>()
    );
    for (i, (nic, name)) in machine.nics.iter().zip(&names).enumerate() {
        let prefix = lab.networks.get(nic.network).cidr.prefix_len();
        let src = own.address_on(nic.network).ok_or(missing(nic.network))?;
        let peer_address = peer.address_on(nic.network).ok_or(missing(nic.network))?;
        let _ = write!(
            out,
            "\nvrrp_instance {name} {{\n  state BACKUP\n  interface eth{i}\n  virtual_router_id {id}\n  priority {priority}\n  advert_int {ADVERT_INTERVAL}\n{preempt}  unicast_src_ip {src}\n  unicast_peer {{\n    {peer_address}\n  }}\n  check_unicast_src\n  virtual_ipaddress {{\n    {vip}/{prefix} dev eth{i}\n  }}\n  track_script {{\n    {check}\n  }}\n}}\n",
            id = router_id(machine),
            priority = PRIORITIES[index.min(1)],
            preempt = if lab.preempt(role) { "" } else { "  nopreempt\n" },
            vip = nic.address,
        );
    }
    Ok(out)
}

/// The drop-in on Debian's keepalived.service: only [`CAPABILITIES`], and started after the
/// daemon it checks, so a container coming up does not bid for the addresses before its
/// daemon listens.
pub fn dropin(role: Role) -> String {
    let daemon = match role {
        Role::Vpn => "lab-vpn.service",
        _ => "lab-lb.service",
    };
    format!(
        "# Written by lab-bootstrap: keepalived holds the pair's addresses; it needs no more.\n\
         [Unit]\nAfter={daemon}\n\n[Service]\nCapabilityBoundingSet={caps}\nAmbientCapabilities=\nNoNewPrivileges=yes\n",
        caps = CAPABILITIES.join(" "),
    )
}

/// The pairs' keepalived files, staged for each of their containers; none without pairs.
pub fn files(lab: &Lab) -> Result<Vec<RenderedFile>, RenderError> {
    let mut out = Vec::new();
    for role in [Role::Lb, Role::Vpn] {
        if !lab.replicas(role).is_pair() {
            continue;
        }
        for (index, container) in lab.instances(role).iter().enumerate() {
            out.push(RenderedFile {
                path: staged_in(container.name.as_str(), CONFIG),
                contents: config(lab, role, index)?,
                mode: 0o644,
            });
            out.push(RenderedFile {
                path: staged_in(container.name.as_str(), DROPIN),
                contents: dropin(role),
                mode: 0o644,
            });
        }
    }
    Ok(out)
}
