//! A Talos node whose `[[machine]]` was deleted from lab.toml while its VM exists leaves the
//! cluster before `apply` destroys the VM: its servers drained at the balancer until nothing
//! runs through them, for a control plane `EtcdLeaveCluster` (refused here first when the
//! members left would lose quorum, as etcd would, or when it is etcd's last member), a
//! graceful `Reset`, and only then the VM destroyed (the Proxmox plan's deletion, after these).
//! lab.toml no longer has the node's addresses: they are those the host's dnsmasq still
//! reserves for it (apply rewrites the reservations only after the Proxmox side).

use crate::balancer::{Balancer, BalancerError, Server};
use crate::model::{Lab, NetworkId, Role};
use crate::proxmox::desired::Kind;
use crate::proxmox::plan::{ChangeKind, Live, Plan};
use crate::render::dnsmasq;
use crate::talos::cluster::{Access, ClusterError};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

/// How long a removed node's servers may take to finish what runs through them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// A Talos node the plan destroys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Its name (the VM's).
    pub name: String,
    /// Its VMID.
    pub vmid: String,
    /// Control plane or worker, from the VM's tags.
    pub role: Role,
    /// Its net1 address (Talos API), as the host's dnsmasq reserves it.
    pub admin: Option<Ipv4Addr>,
    /// Its net2 address (the balancer's servers), as the host's dnsmasq reserves it.
    pub kubelet: Option<Ipv4Addr>,
}

impl Removal {
    fn label(&self) -> String {
        match self.admin {
            Some(address) => format!("{} ({address})", self.name),
            None => self.name.clone(),
        }
    }
}

/// Why a node was not removed; its VM is not destroyed.
#[derive(Debug, thiserror::Error)]
pub enum RemovalError {
    /// The host's dnsmasq has no reservation for it.
    #[error("not removing {name}: the host's {file} has no reservation for it, so its address is unknown (run apply on the Proxmox host, with the host's files of the lab before {name} was deleted from lab.toml); its VM is not destroyed")]
    NoAddress {
        /// The node.
        name: String,
        /// The reservations read.
        file: String,
    },
    /// Leaving etcd would cost it its quorum, or the node is its last member.
    #[error("not removing {node}: {why}; its VM is not destroyed")]
    Quorum {
        /// The node.
        node: String,
        /// What etcd would lose.
        why: String,
    },
    /// The balancer could not be asked.
    #[error("removing {node}: {source}; its VM is not destroyed")]
    Balancer {
        /// The node.
        node: String,
        /// What failed.
        source: BalancerError,
    },
    /// A Talos call failed.
    #[error("removing {node}: {source}; its VM is not destroyed")]
    Cluster {
        /// The node.
        node: String,
        /// What failed.
        source: ClusterError,
    },
}

/// The Talos VMs `plan` deletes, with their addresses from the host's dnsmasq reservations
/// under `root` (the files apply wrote for the lab as it was).
pub fn removals(plan: &Plan, live: &Live, lab: &Lab, root: &Path) -> Vec<Removal> {
    plan.changes
        .iter()
        .filter(|c| c.action == ChangeKind::Delete && c.resource.kind == Kind::Vm)
        .filter_map(|c| {
            let guest = live.guests.get(&c.resource.id.parse().ok()?)?;
            let tags = guest.config.get("tags")?;
            let role = [Role::ControlPlane, Role::Worker]
                .into_iter()
                .find(|r| tags.split([';', ',', ' ']).any(|t| t == r.as_str()))?;
            let name = c.resource.name.clone();
            Some(Removal {
                admin: reserved(lab, root, NetworkId::Net1, &name),
                kubelet: reserved(lab, root, NetworkId::Net2, &name),
                name,
                vmid: c.resource.id.clone(),
                role,
            })
        })
        .collect()
}

/// The host's dnsmasq config of `network`'s bridge, under `root`.
fn reservations_file(lab: &Lab, root: &Path, network: NetworkId) -> std::path::PathBuf {
    let path = dnsmasq::config_path(&lab.networks.get(network).bridge);
    root.join(path.strip_prefix("/").unwrap_or(&path))
}

/// The address dnsmasq reserves for `name` on `network` (`dhcp-host=MAC,ADDRESS,NAME`).
fn reserved(lab: &Lab, root: &Path, network: NetworkId, name: &str) -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string(reservations_file(lab, root, network)).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.strip_prefix("dhcp-host=")?.split(',').collect();
        match fields.as_slice() {
            [_, address, host] if *host == name => address.parse().ok(),
            _ => None,
        }
    })
}

/// What `plan` shows of the removals, before the Proxmox changes that destroy the VMs.
pub fn render(removals: &[Removal]) -> String {
    let mut out = String::new();
    if removals.is_empty() {
        return out;
    }
    out.push_str("Nodes leaving the cluster before their VM is destroyed:\n");
    for r in removals {
        let drain = match r.kubelet {
            Some(address) => format!("drain its servers at the balancer ({address})"),
            None => "its net2 address unknown: apply refuses".to_owned(),
        };
        let etcd = if r.role == Role::ControlPlane {
            "EtcdLeaveCluster (refused if etcd would lose quorum), "
        } else {
            ""
        };
        out.push_str(&format!(
            "  - {} ({}, VM {}): {drain}, {etcd}Reset (graceful), then VM {} destroyed\n",
            r.label(),
            r.role.as_str(),
            r.vmid,
            r.vmid
        ));
    }
    out.push('\n');
    out
}

/// Takes each of `removals` out of the cluster as [`render`] says, in order; stops at the
/// first that cannot be (its VM and those after it are then not destroyed).
pub fn run(
    lab: &Lab,
    root: &Path,
    removals: &[Removal],
    access: &Access,
    balancer: &mut Balancer<'_>,
    out: &mut dyn Write,
) -> Result<(), RemovalError> {
    for removal in removals {
        let (Some(admin), Some(kubelet)) = (removal.admin, removal.kubelet) else {
            let network = if removal.admin.is_none() {
                NetworkId::Net1
            } else {
                NetworkId::Net2
            };
            return Err(RemovalError::NoAddress {
                name: removal.name.clone(),
                file: reservations_file(lab, root, network).display().to_string(),
            });
        };
        let node = removal.label();
        // Asked before anything changes, so a refusal leaves the node as it was.
        let in_etcd = removal.role == Role::ControlPlane
            && ensure_quorum(lab, removals, access, removal, &node)?;
        let at_balancer = |source| RemovalError::Balancer {
            node: node.clone(),
            source,
        };
        let servers = balancer
            .servers_of(IpAddr::V4(kubelet))
            .map_err(at_balancer)?;
        for server in &servers {
            balancer.drain(server).map_err(at_balancer)?;
        }
        for server in &servers {
            balancer
                .wait_drained(server, DRAIN_TIMEOUT)
                .map_err(at_balancer)?;
        }
        let _ = writeln!(
            out,
            "  {node}: drained at the balancer: {}",
            Server::names(&servers)
        );
        let talos = |source| RemovalError::Cluster {
            node: node.clone(),
            source,
        };
        let admin = admin.to_string();
        if in_etcd {
            access.leave_etcd(&admin).map_err(talos)?;
            let _ = writeln!(out, "  {node}: left etcd");
        } else if removal.role == Role::ControlPlane {
            let _ = writeln!(out, "  {node}: not an etcd member (left already)");
        }
        match access.reset_node(&admin) {
            Ok(()) => {
                let _ = writeln!(out, "  {node}: reset (graceful)");
            }
            // A node reset already (an apply stopped before destroying its VM) is gone.
            Err(ClusterError::Api(e)) if e.is_not_ready() => {
                let _ = writeln!(
                    out,
                    "  {node}: does not answer ({}): taken as reset already",
                    e.problem
                );
            }
            Err(e) => return Err(talos(e)),
        }
    }
    Ok(())
}

/// Whether `removal` is an etcd member (false: nothing to leave), refusing when the members
/// left would be fewer started ones than their quorum, or none.
fn ensure_quorum(
    lab: &Lab,
    removals: &[Removal],
    access: &Access,
    removal: &Removal,
    node: &str,
) -> Result<bool, RemovalError> {
    let refused = |why: String| RemovalError::Quorum {
        node: node.to_owned(),
        why,
    };
    let members: Vec<String> = access
        .etcd_members()
        .map_err(|source| RemovalError::Cluster {
            node: node.to_owned(),
            source,
        })?
        .into_iter()
        .map(|m| m.hostname)
        .collect();
    if !members.contains(&removal.name) {
        return Ok(false);
    }
    let rest: Vec<&String> = members.iter().filter(|m| **m != removal.name).collect();
    if rest.is_empty() {
        return Err(refused(format!(
            "it is etcd's last member (members: {})",
            members.join(", ")
        )));
    }
    // A member answers when its Talos API does, at the address lab.toml gives it (or the
    // host's reservations, for another node being removed).
    let address_of = |member: &str| {
        lab.machines
            .iter()
            .find(|m| m.name.as_str() == member)
            .and_then(|m| m.address_on(NetworkId::Net1))
            .or_else(|| removals.iter().find(|r| r.name == member)?.admin)
    };
    let (started, down): (Vec<&String>, Vec<&String>) = rest.iter().partition(|member| {
        address_of(member).is_some_and(|address| access.node_version(&address.to_string()).is_ok())
    });
    let quorum = rest.len() / 2 + 1;
    if started.len() < quorum {
        return Err(refused(format!(
            "etcd would keep {} members of which {} answer{}, below its quorum of {quorum} (not answering: {}); bring them back first",
            rest.len(),
            started.len(),
            if started.len() == 1 { "s" } else { "" },
            down.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(true)
}
