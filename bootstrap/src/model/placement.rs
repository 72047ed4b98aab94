//! Which Proxmox node each machine runs on: the `[[node]]` entries with their budgets, the
//! machines pinned with `node`, and a deterministic placement of the rest (members of a spread
//! group on different nodes, everything else bin-packed), with the refusal naming the node and
//! the budget that cannot hold what is put on it.

use super::{Lab, Role};
use lab_daemon::Issues;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

/// `[[node]]`: one Proxmox node of the cluster the lab spreads over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxmoxNode {
    /// The node's name as Proxmox knows it (`pvesh get /nodes`).
    pub name: String,
    /// Its management address (the one corosync and `/cluster/status` show): the VXLAN peer
    /// the lab networks are carried to.
    pub address: Ipv4Addr,
    /// The node's memory; the machines placed on it must fit with `host_reserve_mib` to spare.
    pub memory_mib: u32,
    /// MiB of `memory_mib` kept for Proxmox itself; 2048 when unset.
    #[serde(default = "ProxmoxNode::default_host_reserve_mib")]
    pub host_reserve_mib: u32,
    /// GiB of `[proxmox] storage` on this node the lab's disks may take.
    pub disk_gib: u32,
}

impl ProxmoxNode {
    fn default_host_reserve_mib() -> u32 {
        super::Proxmox::DEFAULT_HOST_RESERVE_MIB
    }
}

/// The spread group of a role: machines in one group go on different nodes while there are
/// nodes without one of them (anti-affinity for the lb and vpn containers, control planes
/// spread so a node's loss keeps etcd's quorum).
pub fn spread_group(role: Role) -> Option<&'static str> {
    match role {
        Role::Lb => Some("lb"),
        Role::Vpn => Some("vpn"),
        Role::ControlPlane => Some("control-plane"),
        Role::Manager | Role::Worker => None,
    }
}

/// What a node can give the lab's machines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// The node's name.
    pub node: String,
    /// Memory for machines: `memory_mib` less `host_reserve_mib`.
    pub memory_mib: u64,
    /// Disk on the guests' storage; `None` when unbounded (the one-node form).
    pub disk_gib: Option<u64>,
}

/// One machine to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    /// The machine's name.
    pub name: String,
    /// Its memory.
    pub memory_mib: u64,
    /// Its disk.
    pub disk_gib: u64,
    /// The node lab.toml pins it to.
    pub pinned: Option<String>,
    /// Its spread group ([`spread_group`]).
    pub spread: Option<String>,
}

/// Why the machines cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// A machine is pinned to a node that is not among the nodes.
    #[error("`{guest}` names node `{node}`, which is not a [[node]] (nodes: {known})")]
    UnknownNode {
        /// The guest's index in the list placed.
        index: usize,
        /// The guest's name.
        guest: String,
        /// The node it names.
        node: String,
        /// The nodes there are.
        known: String,
    },
    /// The machines pinned to a node ask for more than its budget.
    #[error("node `{node}`: the machines pinned to it ({guests}) ask for {wanted}, more than its budget of {budget}")]
    Overfull {
        /// The node's index among the nodes.
        index: usize,
        /// The node's name.
        node: String,
        /// The machines pinned there.
        guests: String,
        /// What they ask for (`6144 MiB memory`).
        wanted: String,
        /// What the node has (`4096 MiB memory (memory_mib less host_reserve_mib)`).
        budget: String,
    },
    /// A machine fits on no node next to what is there already.
    #[error("`{guest}` ({memory} MiB, {disk} GiB) fits on no node: {left}")]
    NoRoom {
        /// The guest's index in the list placed.
        index: usize,
        /// The guest's name.
        guest: String,
        /// Its memory.
        memory: u64,
        /// Its disk.
        disk: u64,
        /// What each node has left, `pve1 has 1024 MiB and 10 GiB left of 14336 MiB and 500 GiB`.
        left: String,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Used {
    memory: u64,
    disk: u64,
}

impl Used {
    fn fits(&self, budget: &Budget, guest: &Guest) -> bool {
        self.memory + guest.memory_mib <= budget.memory_mib
            && budget
                .disk_gib
                .is_none_or(|disk| self.disk + guest.disk_gib <= disk)
    }

    fn add(&mut self, guest: &Guest) {
        self.memory += guest.memory_mib;
        self.disk += guest.disk_gib;
    }
}

/// The node of each guest, in `guests`' order. Pinned guests go where they are pinned; then
/// the members of spread groups, each in lab.toml order, on the node with the fewest of its
/// group (ties: the most memory left, then the first node) that fits it; then the rest, the
/// largest first (memory, then disk, then lab.toml order), on the first node that fits them.
pub fn place(nodes: &[Budget], guests: &[Guest]) -> Result<Vec<String>, PlacementError> {
    let known = || {
        nodes
            .iter()
            .map(|n| n.node.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut used = vec![Used::default(); nodes.len()];
    let mut placed: Vec<Option<usize>> = vec![None; guests.len()];
    for (i, guest) in guests.iter().enumerate() {
        let Some(pin) = &guest.pinned else { continue };
        let Some(n) = nodes.iter().position(|b| &b.node == pin) else {
            return Err(PlacementError::UnknownNode {
                index: i,
                guest: guest.name.clone(),
                node: pin.clone(),
                known: known(),
            });
        };
        used[n].add(guest);
        placed[i] = Some(n);
    }
    for (n, budget) in nodes.iter().enumerate() {
        let over_memory = used[n].memory > budget.memory_mib;
        let over_disk = budget.disk_gib.is_some_and(|d| used[n].disk > d);
        if over_memory || over_disk {
            let pinned: Vec<&str> = guests
                .iter()
                .zip(&placed)
                .filter(|(_, p)| **p == Some(n))
                .map(|(g, _)| g.name.as_str())
                .collect();
            let (wanted, budget) = if over_memory {
                (
                    format!("{} MiB memory", used[n].memory),
                    format!(
                        "{} MiB memory (memory_mib less host_reserve_mib)",
                        budget.memory_mib
                    ),
                )
            } else {
                (
                    format!("{} GiB disk", used[n].disk),
                    format!(
                        "{} GiB disk (disk_gib)",
                        budget.disk_gib.unwrap_or_default()
                    ),
                )
            };
            return Err(PlacementError::Overfull {
                index: n,
                node: nodes[n].node.clone(),
                guests: pinned.join(", "),
                wanted,
                budget,
            });
        }
    }
    let mut groups: Vec<&str> = Vec::new();
    for guest in guests {
        if let Some(group) = guest.spread.as_deref() {
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
    }
    for group in groups {
        for i in 0..guests.len() {
            let guest = &guests[i];
            if placed[i].is_some() || guest.spread.as_deref() != Some(group) {
                continue;
            }
            let members = |n: usize| {
                guests
                    .iter()
                    .zip(&placed)
                    .filter(|(g, p)| **p == Some(n) && g.spread.as_deref() == Some(group))
                    .count()
            };
            let best = (0..nodes.len())
                .filter(|&n| used[n].fits(&nodes[n], guest))
                .min_by_key(|&n| {
                    (
                        members(n),
                        std::cmp::Reverse(nodes[n].memory_mib - used[n].memory),
                        n,
                    )
                });
            let n = best.ok_or_else(|| no_room(i, guest, nodes, &used))?;
            used[n].add(guest);
            placed[i] = Some(n);
        }
    }
    let mut rest: Vec<usize> = (0..guests.len()).filter(|&i| placed[i].is_none()).collect();
    rest.sort_by_key(|&i| {
        (
            std::cmp::Reverse(guests[i].memory_mib),
            std::cmp::Reverse(guests[i].disk_gib),
            i,
        )
    });
    for i in rest {
        let guest = &guests[i];
        let n = (0..nodes.len())
            .find(|&n| used[n].fits(&nodes[n], guest))
            .ok_or_else(|| no_room(i, guest, nodes, &used))?;
        used[n].add(guest);
        placed[i] = Some(n);
    }
    Ok(placed
        .into_iter()
        .map(|n| n.map(|n| nodes[n].node.clone()).unwrap_or_default())
        .collect())
}

fn no_room(index: usize, guest: &Guest, nodes: &[Budget], used: &[Used]) -> PlacementError {
    let left: Vec<String> = nodes
        .iter()
        .zip(used)
        .map(|(b, u)| match b.disk_gib {
            Some(disk) => format!(
                "{} has {} MiB and {} GiB left of {} MiB and {disk} GiB",
                b.node,
                b.memory_mib.saturating_sub(u.memory),
                disk.saturating_sub(u.disk),
                b.memory_mib
            ),
            None => format!(
                "{} has {} MiB left of {} MiB",
                b.node,
                b.memory_mib.saturating_sub(u.memory),
                b.memory_mib
            ),
        })
        .collect();
    PlacementError::NoRoom {
        index,
        guest: guest.name.clone(),
        memory: guest.memory_mib,
        disk: guest.disk_gib,
        left: left.join("; "),
    }
}

impl Lab {
    /// Whether the lab spreads over more than one Proxmox node (SDN VNets instead of bridges,
    /// HA possible).
    pub fn is_cluster(&self) -> bool {
        self.nodes.len() > 1
    }

    /// The Proxmox nodes' names: the `[[node]]` entries, or `[proxmox] node` alone.
    pub fn node_names(&self) -> Vec<String> {
        if self.nodes.is_empty() {
            vec![self.proxmox.node.clone()]
        } else {
            self.nodes.iter().map(|n| n.name.clone()).collect()
        }
    }

    /// The node of every machine, by machine name. On one node everything is there (its
    /// memory is checked as a whole by validation); on several, [`place`] decides.
    pub fn placement(&self) -> Result<BTreeMap<String, String>, PlacementError> {
        if self.nodes.is_empty() {
            return Ok(self
                .guests()
                .iter()
                .map(|m| (m.name.as_str().to_owned(), self.proxmox.node.clone()))
                .collect());
        }
        let budgets: Vec<Budget> = self
            .nodes
            .iter()
            .map(|n| Budget {
                node: n.name.clone(),
                memory_mib: u64::from(n.memory_mib).saturating_sub(u64::from(n.host_reserve_mib)),
                disk_gib: Some(u64::from(n.disk_gib)),
            })
            .collect();
        // A pair's two containers (`guests`), in one spread group: on different nodes.
        let guests: Vec<Guest> = self
            .guests()
            .iter()
            .map(|m| Guest {
                name: m.name.as_str().to_owned(),
                memory_mib: u64::from(m.memory_mib),
                disk_gib: u64::from(m.disk_gib),
                pinned: m.node.clone(),
                spread: spread_group(m.role).map(str::to_owned),
            })
            .collect();
        let nodes = place(&budgets, &guests)?;
        Ok(guests.into_iter().map(|g| g.name).zip(nodes).collect())
    }

    /// `[[node]]`, `[proxmox] node` as the router node, each machine's `node` and `ha`, and
    /// whether the placement fits.
    pub(crate) fn validate_placement(&self, issues: &mut Issues) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut addresses: HashMap<Ipv4Addr, usize> = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if !super::names::is_dns_label(&node.name) {
                issues.add(
                    format!("node[{i}].name"),
                    format!(
                        "`{}` is not a Proxmox node name (pve-node: one DNS label)",
                        node.name
                    ),
                );
            }
            if let Some(first) = names.insert(&node.name, i) {
                issues.add(
                    format!("node[{i}].name"),
                    format!("node `{}` is already node[{first}]", node.name),
                );
            }
            if let Some(first) = addresses.insert(node.address, i) {
                issues.add(
                    format!("node[{i}].address"),
                    format!(
                        "{} is already node[{first}] `{}`'s address",
                        node.address, self.nodes[first].name
                    ),
                );
            }
        }
        if !self.nodes.is_empty() && !names.contains_key(self.proxmox.node.as_str()) {
            issues.add(
                "proxmox.node",
                format!(
                    "`{}` is not a [[node]]: on several nodes it names the one holding the lab router (gateway, DHCP, firewall), where lab-bootstrap runs",
                    self.proxmox.node
                ),
            );
        }
        match (self.nodes.is_empty(), self.proxmox.memory_mib) {
            (true, None) => issues.add(
                "proxmox.memory_mib",
                "missing: the host's memory, which the machines must fit in",
            ),
            (false, Some(_)) => issues.add(
                "proxmox.memory_mib",
                "with [[node]] entries each node's memory is its own memory_mib; remove this one",
            ),
            _ => {}
        }
        for (i, machine) in self.machines.iter().enumerate() {
            if let Some(node) = &machine.node {
                if self.nodes.is_empty() && node != &self.proxmox.node {
                    issues.add(
                        format!("machine[{i}].node"),
                        format!(
                            "`{node}` is not the lab's node `{}`; list the cluster's nodes as [[node]] entries",
                            self.proxmox.node
                        ),
                    );
                }
            }
            if machine.ha && !self.is_cluster() {
                issues.add(
                    format!("machine[{i}].ha"),
                    "Proxmox HA moves a guest to another node: it needs more than one [[node]]",
                );
            }
            if machine.ha && machine.role.is_container() {
                issues.add(
                    format!("machine[{i}].ha"),
                    format!(
                        "the {} containers stay on their node; HA is for the manager and the Talos VMs",
                        machine.role.as_str()
                    ),
                );
            }
        }
        match self.placement() {
            Ok(_) => {}
            Err(e @ PlacementError::UnknownNode { index, .. }) => {
                issues.add(format!("machine[{index}].node"), e.to_string());
            }
            Err(e @ PlacementError::Overfull { index, .. }) => {
                issues.add(format!("node[{index}]"), e.to_string());
            }
            Err(e @ PlacementError::NoRoom { index, .. }) => {
                issues.add(format!("machine[{index}]"), e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, memory_mib: u64, disk_gib: u64) -> Budget {
        Budget {
            node: name.to_owned(),
            memory_mib,
            disk_gib: Some(disk_gib),
        }
    }

    fn guest(name: &str, memory_mib: u64, spread: Option<&str>) -> Guest {
        Guest {
            name: name.to_owned(),
            memory_mib,
            disk_gib: 10,
            pinned: None,
            spread: spread.map(str::to_owned),
        }
    }

    fn three() -> Vec<Budget> {
        vec![
            node("pve1", 8192, 200),
            node("pve2", 8192, 200),
            node("pve3", 8192, 200),
        ]
    }

    #[test]
    fn the_lb_and_vpn_pairs_and_the_control_planes_land_on_different_nodes() {
        let guests = vec![
            guest("lb1", 512, Some("lb")),
            guest("lb2", 512, Some("lb")),
            guest("vpn1", 256, Some("vpn")),
            guest("vpn2", 256, Some("vpn")),
            guest("cp1", 2048, Some("control-plane")),
            guest("cp2", 2048, Some("control-plane")),
            guest("cp3", 2048, Some("control-plane")),
        ];
        let placed = place(&three(), &guests).unwrap();
        assert_ne!(placed[0], placed[1], "{placed:?}");
        assert_ne!(placed[2], placed[3], "{placed:?}");
        let mut cps = placed[4..].to_vec();
        cps.sort();
        assert_eq!(cps, ["pve1", "pve2", "pve3"], "{placed:?}");
    }

    #[test]
    fn a_spread_group_larger_than_the_nodes_shares_as_evenly_as_it_can() {
        let guests: Vec<Guest> = (1..=5)
            .map(|i| guest(&format!("cp{i}"), 1024, Some("control-plane")))
            .collect();
        let placed = place(&three(), &guests).unwrap();
        for n in ["pve1", "pve2", "pve3"] {
            let count = placed.iter().filter(|p| *p == n).count();
            assert!((1..=2).contains(&count), "{placed:?}");
        }
    }

    #[test]
    fn the_rest_is_bin_packed_largest_first_and_the_same_every_time() {
        let guests = vec![
            guest("small", 1024, None),
            guest("big", 6144, None),
            guest("mid", 4096, None),
        ];
        let placed = place(&three(), &guests).unwrap();
        // big (6144) fills pve1 but for 2048; mid (4096) goes on pve2; small fits next to big.
        assert_eq!(placed, ["pve1", "pve1", "pve2"]);
        assert_eq!(place(&three(), &guests).unwrap(), placed);
    }

    #[test]
    fn pinned_machines_stay_where_they_are_pinned_and_count_against_that_node() {
        let mut pinned = guest("manager", 6144, None);
        pinned.pinned = Some("pve1".to_owned());
        let guests = vec![guest("w1", 4096, None), pinned];
        let placed = place(&three(), &guests).unwrap();
        assert_eq!(placed, ["pve2", "pve1"]);
    }

    #[test]
    fn a_machine_that_fits_nowhere_is_refused_naming_every_node_and_what_it_has_left() {
        let guests = vec![guest("w1", 6144, None), guest("w2", 6144, None)];
        let nodes = vec![node("pve1", 8192, 200)];
        let e = place(&nodes, &guests).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`w2` (6144 MiB, 10 GiB) fits on no node: pve1 has 2048 MiB and 190 GiB left of 8192 MiB and 200 GiB"
        );
        let mut big_disk = guest("w3", 1024, None);
        big_disk.disk_gib = 500;
        assert!(matches!(
            place(&three(), &[big_disk]),
            Err(PlacementError::NoRoom { index: 0, .. })
        ));
    }

    #[test]
    fn an_overfull_pinned_node_is_refused_naming_the_node_and_its_budget() {
        let mut a = guest("cp1", 6144, None);
        a.pinned = Some("pve2".to_owned());
        let mut b = a.clone();
        b.name = "cp2".to_owned();
        let e = place(&three(), &[a, b]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "node `pve2`: the machines pinned to it (cp1, cp2) ask for 12288 MiB memory, more than its budget of 8192 MiB memory (memory_mib less host_reserve_mib)"
        );
    }

    #[test]
    fn a_pin_to_an_unknown_node_is_refused() {
        let mut a = guest("cp1", 1024, None);
        a.pinned = Some("pve9".to_owned());
        let e = place(&three(), &[a]).unwrap_err();
        assert!(e.to_string().contains("`pve9`"), "{e}");
    }
}
