//! Proxmox HA for the machines with `ha = true`: an HA resource per guest, kept on its placed
//! node by preference (it may restart on any other). Proxmox 9 says where with a node-affinity
//! rule (`/cluster/ha/rules`); Proxmox 8 with an HA group the resource names
//! (`/cluster/ha/groups`), which 9 replaced by rules.

use super::desired::{params, Kind, Resource, MANAGED_COMMENT};
use crate::model::{Lab, Machine};

/// The first Proxmox VE release with HA rules instead of groups.
pub const RULES_SINCE: u32 = 9;

/// The HA resource id of `m`: `vm:211` (`ct:200` for a container).
pub fn sid(m: &Machine) -> String {
    let kind = if m.role.is_container() { "ct" } else { "vm" };
    format!("{kind}:{}", m.vmid)
}

/// The id of `m`'s rule (Proxmox 9) or group (Proxmox 8): `lab-homelab-cp1`.
pub fn affinity_id(lab: &Lab, m: &Machine) -> String {
    format!("lab-{}-{}", lab.cluster.name, m.name)
}

/// The comment marking an HA object as this lab's, for `m`.
fn comment(lab: &Lab, m: &Machine) -> String {
    format!(
        "{MANAGED_COMMENT}: {} of lab {}",
        m.name.as_str(),
        lab.cluster.name
    )
}

/// The HA objects of the lab's `ha = true` machines, for Proxmox `major` (the node's
/// `/version`; `running` tells whether a guest runs): on 8 each guest's group then its resource, on 9 the resource then its rule.
/// A resource is made `started` when its guest runs already; otherwise `stopped`, so HA
/// does not start a guest before the host side has written what it boots with (the host
/// side's start then asks HA to start it).
pub fn desired(lab: &Lab, major: u32, running: impl Fn(u32) -> bool) -> Vec<Resource> {
    let placement = lab.placement().unwrap_or_default();
    let mut machines: Vec<&Machine> = lab.machines.iter().filter(|m| m.ha).collect();
    machines.sort_by_key(|m| m.vmid);
    let mut out = Vec::new();
    for m in machines {
        let home = placement
            .get(m.name.as_str())
            .cloned()
            .unwrap_or_else(|| lab.proxmox.node.clone());
        // Its own node first; any other node when that one is down.
        let nodes: Vec<String> = std::iter::once(format!("{home}:2"))
            .chain(
                lab.node_names()
                    .into_iter()
                    .filter(|n| *n != home)
                    .map(|n| format!("{n}:1")),
            )
            .collect();
        let nodes = nodes.join(",");
        let sid = sid(m);
        let id = affinity_id(lab, m);
        let comment = comment(lab, m);
        let state = if running(m.vmid) {
            "started"
        } else {
            "stopped"
        };
        let kind = if m.role.is_container() { "ct" } else { "vm" };
        let resource = |extra: &[(&str, &str)]| {
            let mut create = params(&[
                ("sid", &sid),
                ("type", kind),
                ("state", state),
                ("comment", &comment),
            ]);
            create.extend(params(extra));
            Resource {
                kind: Kind::HaResource,
                id: sid.clone(),
                name: m.name.as_str().to_owned(),
                node: home.clone(),
                create,
            }
        };
        if major >= RULES_SINCE {
            out.push(resource(&[]));
            out.push(Resource {
                kind: Kind::HaRule,
                id: id.clone(),
                name: m.name.as_str().to_owned(),
                node: home.clone(),
                create: params(&[
                    ("rule", &id),
                    ("type", "node-affinity"),
                    ("resources", &sid),
                    ("nodes", &nodes),
                    ("comment", &comment),
                ]),
            });
        } else {
            out.push(Resource {
                kind: Kind::HaGroup,
                id: id.clone(),
                name: m.name.as_str().to_owned(),
                node: home.clone(),
                create: params(&[("group", &id), ("nodes", &nodes), ("comment", &comment)]),
            });
            out.push(resource(&[("group", &id)]));
        }
    }
    out
}
