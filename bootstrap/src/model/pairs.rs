//! `[lb] replicas = 2` and `[vpn] replicas = 2`: the lb or vpn container in a pair held together
//! by keepalived. The `[[machine]]` of the role keeps naming the published addresses, which
//! become the pair's VRRP virtual addresses; the two containers ([`Lab::instances`]) each get a
//! fixed address of their own on the same networks, a VMID and a hostname, all derived from the
//! machine so nothing new has to be written into lab.toml.

use super::{usable_host_problem, Lab, Machine, NetworkId, Nic, Role, MAX_VMID, MIN_VMID};
use lab_daemon::{Issues, Name};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// `replicas`: how many containers run the daemon: 1, or 2 as a keepalived pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Replicas(pub u8);

impl Default for Replicas {
    fn default() -> Self {
        Self(1)
    }
}

impl Replicas {
    /// One container, as without the key.
    pub fn is_single(&self) -> bool {
        self.0 == 1
    }

    /// Two containers holding the published addresses with keepalived.
    pub fn is_pair(&self) -> bool {
        self.0 == 2
    }
}

/// The second container's VMID is the machine's plus this: far enough from the machine's own
/// block of VMIDs to stay clear of the neighbours lab.toml numbers it with.
pub const SECOND_VMID_OFFSET: u32 = 100;

/// The second container's hostname is the machine's with this suffix.
pub const SECOND_NAME_SUFFIX: &str = "-2";

/// Counted down from the top of each network, where the lab's own addresses (host, machines,
/// DHCP range) are not by the defaults: the lb pair takes the last two usable addresses, the
/// vpn pair the two below them, so both pairs can share net0.
fn first_offset(role: Role) -> u32 {
    match role {
        Role::Vpn => 2,
        _ => 0,
    }
}

/// The own address of container `index` (0 or 1) of `role`'s pair on a network, counted down
/// from its last usable address; `None` where the network is too small to have it.
pub fn instance_address(cidr: &ipnet::Ipv4Net, role: Role, index: usize) -> Option<Ipv4Addr> {
    let last = u32::from(cidr.broadcast()).checked_sub(1)?;
    let address = last.checked_sub(first_offset(role) + index as u32)?;
    let address = Ipv4Addr::from(address);
    (cidr.contains(&address) && address != cidr.network()).then_some(address)
}

impl Lab {
    /// `[lb] replicas` or `[vpn] replicas`; 1 for the other roles.
    pub fn replicas(&self, role: Role) -> Replicas {
        match role {
            Role::Lb => self.lb.replicas,
            Role::Vpn => self.vpn.replicas,
            _ => Replicas::default(),
        }
    }

    /// `[lb] preempt` or `[vpn] preempt`: whether the first container takes the addresses back
    /// when it is healthy again.
    pub fn preempt(&self, role: Role) -> bool {
        match role {
            Role::Lb => self.lb.preempt,
            Role::Vpn => self.vpn.preempt,
            _ => false,
        }
    }

    /// The containers of `role` as they are built: the lab.toml machine itself when it is
    /// single; for a pair, the machine with its own address on every network (its name, VMID
    /// and MACs kept), then its second (`<name>-2`, VMID + [`SECOND_VMID_OFFSET`], MACs derived
    /// from that VMID). A second container whose name or addresses cannot be made is left out
    /// (the model's checks name why).
    pub fn instances(&self, role: Role) -> Vec<Machine> {
        let replicas = self.replicas(role);
        let machines = self.machines.iter().filter(|m| m.role == role);
        if !replicas.is_pair() {
            return machines.cloned().collect();
        }
        let mut out = Vec::new();
        for machine in machines {
            out.extend(self.instance(machine, 0));
            out.extend(self.instance(machine, 1));
        }
        out
    }

    fn instance(&self, machine: &Machine, index: usize) -> Option<Machine> {
        let nics = machine
            .nics
            .iter()
            .map(|nic| {
                let cidr = self.networks.get(nic.network).cidr;
                Some(Nic {
                    network: nic.network,
                    address: instance_address(&cidr, machine.role, index)?,
                    mac: if index == 0 { nic.mac } else { None },
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let (name, vmid) = if index == 0 {
            (machine.name.clone(), machine.vmid)
        } else {
            (
                format!("{}{SECOND_NAME_SUFFIX}", machine.name)
                    .parse::<Name>()
                    .ok()?,
                machine.vmid.checked_add(SECOND_VMID_OFFSET)?,
            )
        };
        Some(Machine {
            name,
            vmid,
            nics,
            // A machine's `node` pins its first container; placement keeps the second apart.
            node: if index == 0 {
                machine.node.clone()
            } else {
                None
            },
            ..machine.clone()
        })
    }

    /// The own addresses on `network` of `role`'s containers ([`Lab::instances`]).
    pub fn addresses_of_instances(&self, role: Role, network: NetworkId) -> Vec<Ipv4Addr> {
        self.instances(role)
            .iter()
            .filter_map(|m| m.address_on(network))
            .collect()
    }

    /// Every guest as it is built: the machines of lab.toml, a pair's machine replaced by its
    /// two containers. Without pairs, exactly `machines`.
    pub fn guests(&self) -> Vec<Machine> {
        let mut out = Vec::new();
        for machine in &self.machines {
            match machine.role {
                Role::Lb | Role::Vpn if self.replicas(machine.role).is_pair() => {
                    let first_of_role = self
                        .machines
                        .iter()
                        .find(|m| m.role == machine.role)
                        .is_some_and(|m| m.name == machine.name);
                    if first_of_role {
                        out.extend(self.instances(machine.role));
                    }
                }
                _ => out.push(machine.clone()),
            }
        }
        out
    }

    /// The checks of `replicas` and `preempt`: a pair's containers need names, VMIDs and
    /// addresses nothing else has.
    pub(super) fn validate_pairs(&self, issues: &mut Issues) {
        let mut taken: HashMap<Ipv4Addr, String> = HashMap::new();
        for id in NetworkId::ALL {
            let net = self.networks.get(id);
            taken.insert(net.host, format!("the host's {} address", id.as_str()));
            if let Some(gateway) = net.gateway {
                taken.insert(gateway, format!("the {} gateway", id.as_str()));
            }
        }
        for machine in &self.machines {
            for nic in &machine.nics {
                taken.insert(
                    nic.address,
                    format!("`{}`'s ({})", machine.name, nic.network.as_str()),
                );
            }
        }
        for role in [Role::Lb, Role::Vpn] {
            let section = role.as_str();
            let replicas = self.replicas(role);
            if !replicas.is_single() && !replicas.is_pair() {
                issues.add(
                    format!("{section}.replicas"),
                    format!("{} containers: 1, or 2 for a keepalived pair", replicas.0),
                );
                continue;
            }
            if !replicas.is_pair() {
                if self.preempt(role) {
                    issues.add(
                        format!("{section}.preempt"),
                        "only a pair (replicas = 2) has addresses to take back",
                    );
                }
                continue;
            }
            let Some(machine) = self.machines.iter().find(|m| m.role == role) else {
                continue;
            };
            let key = format!("{section}.replicas");
            let second = format!("{}{SECOND_NAME_SUFFIX}", machine.name);
            match second.parse::<Name>() {
                Err(e) => issues.add(
                    key.clone(),
                    format!("the pair's second container cannot be named `{second}`: {e}"),
                ),
                Ok(name) => {
                    if let Some(other) = self.machines.iter().find(|m| m.name == name) {
                        issues.add(
                            key.clone(),
                            format!(
                                "the pair's second container is named `{second}`, already a [[machine]] ({})",
                                other.role.as_str()
                            ),
                        );
                    }
                }
            }
            let vmid = machine.vmid.saturating_add(SECOND_VMID_OFFSET);
            if !(MIN_VMID..=MAX_VMID).contains(&vmid) {
                issues.add(
                    key.clone(),
                    format!("the pair's second container would take VMID {vmid}, outside Proxmox's range"),
                );
            } else if let Some(other) = self.machines.iter().find(|m| m.vmid == vmid) {
                issues.add(
                    key.clone(),
                    format!(
                        "the pair's second container takes VMID {vmid} (`{}`'s + {SECOND_VMID_OFFSET}), already `{}`'s",
                        machine.name, other.name
                    ),
                );
            }
            for nic in &machine.nics {
                let net = self.networks.get(nic.network);
                for index in 0..2 {
                    let container = if index == 0 {
                        machine.name.to_string()
                    } else {
                        second.clone()
                    };
                    let owner = format!("`{container}`'s own ({})", nic.network.as_str());
                    let Some(address) = instance_address(&net.cidr, role, index) else {
                        issues.add(
                            key.clone(),
                            format!(
                                "{} ({}) has no room for {owner} address",
                                nic.network.as_str(),
                                net.cidr
                            ),
                        );
                        continue;
                    };
                    if let Some(problem) = usable_host_problem(&net.cidr, address) {
                        issues.add(key.clone(), format!("{owner} address: {problem}"));
                    }
                    if net.dhcp.as_ref().is_some_and(|r| r.contains(address)) {
                        issues.add(
                            key.clone(),
                            format!(
                                "{owner} address {address} is inside {}'s DHCP range",
                                nic.network.as_str()
                            ),
                        );
                    }
                    if let Some(other) = taken.insert(address, owner.clone()) {
                        issues.add(
                            key.clone(),
                            format!("{owner} address would be {address}, already {other}"),
                        );
                    }
                }
            }
        }
    }
}
