//! `lab.toml`: the Proxmox host, the three networks, the machines and the cluster, and every
//! check that can be made before anything is touched.

mod access;
mod backup;
mod factory;
mod gitops;
mod images;
mod lb;
pub mod names;
mod pairs;
mod peers;
mod placement;
mod route_certs;
mod sdn;
mod storage;
mod tools;

pub use access::{HostAccess, Manager};
pub use backup::{Backup, DEFAULT_BACKUP_DIR};
pub use factory::{FactoryImage, Schematic, DEFAULT_TALOS_EXTENSIONS};
pub use gitops::Gitops;
pub use images::{Image, Images, TalosImage};
pub use lb::{default_routes, HttpRule, Lb, LbRoute, RouteCert, LB_METRICS_PORT};
pub use pairs::{instance_address, Replicas, SECOND_NAME_SUFFIX, SECOND_VMID_OFFSET};
pub use peers::{PeerKeyError, VpnPeer};
pub use placement::{place, spread_group, Budget, Guest, PlacementError, ProxmoxNode};
pub use sdn::{is_sdn_id, MAX_VNI};
pub use storage::{parse_size, Storage};
pub use tools::{
    talos_default_kubernetes, talos_line_kubernetes, Checksum, ManagerTool, ManagerTools,
    ToolError, ToolPin, FLUX_VERSION, HELM_VERSION,
};

use crate::mac::MacAddr;
use ipnet::{IpNet, Ipv4Net};
use lab_daemon::{Issues, Name};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// A whole `lab.toml`: everything one lab on one Proxmox host is built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lab {
    /// `[proxmox]`: the host, its storages and its memory.
    pub proxmox: Proxmox,
    /// `[[node]]`: the Proxmox cluster's nodes the lab spreads over; none for the one-node
    /// lab `[proxmox]` describes.
    #[serde(default, rename = "node", skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<ProxmoxNode>,
    /// `[networks]`: the uplink and the two lab networks.
    pub networks: Networks,
    /// `[cluster]`: the Talos cluster the control planes and workers form.
    pub cluster: Cluster,
    /// `[[machine]]`: every container and VM of the lab.
    #[serde(rename = "machine")]
    pub machines: Vec<Machine>,
    /// `[vpn]`: the tunnel network and its peers; 10.10.100.0/24 and no peers when absent.
    #[serde(default)]
    pub vpn: Vpn,
    /// `[lb]`: what lab-lb publishes; the routes of [`default_routes`] when absent.
    #[serde(default)]
    pub lb: Lb,
    /// `[images]`: where the images come from; when absent, all are expected on the file
    /// storage under their default names.
    #[serde(default)]
    pub images: Images,
    /// `[manager]`: the login on the manager VM; user `lab` and no SSH keys when absent.
    #[serde(default)]
    pub manager: Manager,
    /// `[host]`: what stays open on the host; SSH and the Proxmox UI when absent.
    #[serde(default)]
    pub host: HostAccess,
    /// `[gitops]`: the repository the manager bootstraps Flux from; no GitOps when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<Gitops>,
    /// `[backup]`: where `lab-bootstrap backup` writes its archives and how many it keeps;
    /// the defaults of [`Backup`] when absent.
    #[serde(default)]
    pub backup: Backup,
    /// `[storage]`: persistent volumes for workloads through the Proxmox CSI plugin; none
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
}

/// `[vpn]`: the network lab-vpn gives its peers. The host routes it to the vpn container's net1
/// address, so the firewall sees real peer addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vpn {
    /// The tunnel network: lab-vpn takes its first host, each peer another; 10.10.100.0/24
    /// when unset.
    #[serde(default = "Vpn::default_tunnel")]
    pub tunnel: Ipv4Net,
    /// `[[vpn.peer]]`: the clients let in; none when absent.
    #[serde(default, rename = "peer")]
    pub peers: Vec<VpnPeer>,
    /// `HOST:PORT` the clients dial, written into every client config: for access from
    /// outside the home network, a (dynamic) DNS name or the public address of the home router,
    /// which forwards that UDP port to the vpn container. When unset, the vpn container's net0
    /// address and port 51820, which only reach it from the LAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_endpoint: Option<String>,
    /// 2: two vpn containers sharing the gateway's key, keepalived moving the published
    /// addresses between them (docs/ARCHITECTURE.md, "Pairs"); 1 when unset.
    #[serde(default, skip_serializing_if = "Replicas::is_single")]
    pub replicas: Replicas,
    /// A pair's first container takes the addresses back once healthy again; when unset, the
    /// addresses stay where they are until that side fails (keepalived's `nopreempt`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preempt: bool,
    /// vpn.toml's `[interface] udp_receive_buffer`: bytes of kernel receive buffer for the
    /// gateway's UDP socket (64 KiB to 64 MiB); the system's default when unset. More carries
    /// bulk transfers faster on a busy host, at the cost of latency under load. The container's
    /// kernel caps it at the host's `net.core.rmem_max` (lab-vpn logs what it was granted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_receive_buffer: Option<u32>,
}

impl Vpn {
    /// configs/vpn.toml's `[interface] address`.
    pub const DEFAULT_TUNNEL: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(10, 10, 100, 0), 24) {
        Ok(net) => net,
        Err(_) => panic!("10.10.100.0/24 is a network"),
    };

    fn default_tunnel() -> Ipv4Net {
        Self::DEFAULT_TUNNEL
    }
}

impl Default for Vpn {
    fn default() -> Self {
        Self {
            tunnel: Self::DEFAULT_TUNNEL,
            peers: Vec::new(),
            public_endpoint: None,
            replicas: Replicas::default(),
            preempt: false,
            udp_receive_buffer: None,
        }
    }
}

/// `[proxmox]`: the host everything runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxmox {
    /// Node name as Proxmox knows it (`pvesh get /nodes`): the node lab-bootstrap runs on,
    /// which holds the lab router (gateway, DHCP, firewall); with `[[node]]` entries, one of them.
    pub node: String,
    /// Storage for VM disks and container root filesystems.
    pub storage: String,
    /// Storage with the `snippets` and `vztmpl` content types (cloud-init, container templates).
    pub file_storage: String,
    /// Where `file_storage` keeps its files on the host (its `path` in storage.cfg); only
    /// Proxmox's own `local` (`/var/lib/vz`) is known without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_storage_path: Option<std::path::PathBuf>,
    /// The host's memory; what the machines ask for must fit with `host_reserve_mib` to spare.
    /// Only for the one-node lab: with `[[node]]` entries each has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
    /// MiB of `memory_mib` kept for Proxmox itself, never given to machines; 2048 when unset.
    #[serde(default = "Proxmox::default_host_reserve_mib")]
    pub host_reserve_mib: u32,
    /// On several nodes: the SDN VXLAN zone carrying net1 and net2 between them; `lab` when
    /// unset. Up to 8 letters and digits, starting with a letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdn_zone: Option<String>,
}

impl Proxmox {
    /// The directory of `file_storage` on the host, when known.
    pub fn file_storage_dir(&self) -> Option<std::path::PathBuf> {
        match &self.file_storage_path {
            Some(path) => Some(path.clone()),
            None if self.file_storage == "local" => Some("/var/lib/vz".into()),
            None => None,
        }
    }

    /// What Proxmox itself, ZFS ARC limits aside, needs to stay responsive.
    pub const DEFAULT_HOST_RESERVE_MIB: u32 = 2048;

    fn default_host_reserve_mib() -> u32 {
        Self::DEFAULT_HOST_RESERVE_MIB
    }

    /// The SDN zone when lab.toml names none.
    pub const DEFAULT_SDN_ZONE: &'static str = "lab";

    /// `sdn_zone`, or its default.
    pub fn sdn_zone(&self) -> &str {
        self.sdn_zone.as_deref().unwrap_or(Self::DEFAULT_SDN_ZONE)
    }
}

/// `[networks]`: the uplink and the two lab networks, each with its fixed role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Networks {
    /// The lab's DNS domain: the host's DNS on net1 and net2 answers `<machine>.<domain>`
    /// (and the short names), hands the domain out as the search domain; `lab` when unset.
    #[serde(default = "Networks::default_domain")]
    pub domain: String,
    /// The existing uplink bridge; the home router does its DHCP. Never created or changed.
    pub net0: Network,
    /// Administration: reachable only through the VPN and from the host.
    pub net1: Network,
    /// Application traffic from the load balancer to the nodes.
    pub net2: Network,
}

/// One of the three networks, as lab.toml names it: `net0`, `net1` or `net2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkId {
    /// The uplink (`[networks.net0]`).
    Net0,
    /// Administration (`[networks.net1]`).
    Net1,
    /// Application traffic (`[networks.net2]`).
    Net2,
}

impl NetworkId {
    /// The three networks, in order.
    pub const ALL: [NetworkId; 3] = [NetworkId::Net0, NetworkId::Net1, NetworkId::Net2];

    /// Its lab.toml spelling: `net1`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkId::Net0 => "net0",
            NetworkId::Net1 => "net1",
            NetworkId::Net2 => "net2",
        }
    }
}

impl Networks {
    /// The domain when lab.toml names none.
    pub const DEFAULT_DOMAIN: &'static str = "lab";

    fn default_domain() -> String {
        Self::DEFAULT_DOMAIN.to_owned()
    }

    /// The network `id` names.
    pub fn get(&self, id: NetworkId) -> &Network {
        match id {
            NetworkId::Net0 => &self.net0,
            NetworkId::Net1 => &self.net1,
            NetworkId::Net2 => &self.net2,
        }
    }
}

/// `[networks.net0]` and the others: one network and the host's place on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Linux bridge on the host: `vmbr1`. On several nodes (net1 and net2) the name of the SDN
    /// VNet, whose bridge on every node carries the network: up to 8 letters and digits.
    pub bridge: String,
    /// The network's range, `10.10.1.0/24`; every address on it must be a usable host of it,
    /// and it may overlap no other network of the lab.
    pub cidr: Ipv4Net,
    /// The host's address on this bridge (the lab networks' router).
    pub host: Ipv4Addr,
    /// The next hop to the internet; on net0 the home router.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Dynamic range served by the host's dnsmasq; static reservations are always served.
    #[serde(default)]
    pub dhcp: Option<DhcpRange>,
    /// On several nodes: the VXLAN network identifier of this network's VNet, unique in the
    /// Proxmox cluster; 10001 for net1 and 10002 for net2 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

/// `dhcp`: the addresses dnsmasq hands out dynamically, first and last included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpRange {
    /// The first address handed out.
    pub start: Ipv4Addr,
    /// The last address handed out; not before `start`.
    pub end: Ipv4Addr,
}

impl DhcpRange {
    /// Whether `address` is in the range, both ends included.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        self.start <= address && address <= self.end
    }
}

/// `[cluster]`: the Talos Kubernetes cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Names the Talos cluster and the lab on the Proxmox node; an RFC 1123 label.
    pub name: Name,
    /// Talos release the machine configs target: `v1.13.0`.
    pub talos_version: String,
    /// Official Talos system extensions (`owner/name`) baked into the Image Factory image and
    /// installer; [`DEFAULT_TALOS_EXTENSIONS`] when unset. The order is part of the schematic ID.
    #[serde(default = "Cluster::default_talos_extensions")]
    pub talos_extensions: Vec<String>,
    /// Kubernetes release; unset means the default of `talos_version`.
    #[serde(default)]
    pub kubernetes_version: Option<String>,
    /// The Kubernetes API endpoint: the load balancer's net2 address.
    pub endpoint: String,
    /// The pods' network; it may overlap none of the three networks.
    pub pod_cidr: IpNet,
    /// The Services' network; it may overlap none of the three networks nor `pod_cidr`.
    pub service_cidr: IpNet,
}

impl Cluster {
    fn default_talos_extensions() -> Vec<String> {
        DEFAULT_TALOS_EXTENSIONS
            .iter()
            .map(|e| (*e).to_owned())
            .collect()
    }
}

/// `role`: what a machine is for, and so whether it is a container or a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// LXC container running lab-lb.
    Lb,
    /// LXC container running lab-vpn.
    Vpn,
    /// VM with talosctl, kubectl and GitOps tooling.
    Manager,
    /// Talos VM running etcd and the Kubernetes control plane.
    ControlPlane,
    /// Talos VM running the cluster's workloads.
    Worker,
}

impl Role {
    /// Whether machines of this role are LXC containers (lb, vpn) rather than VMs.
    pub fn is_container(self) -> bool {
        matches!(self, Role::Lb | Role::Vpn)
    }

    /// Its lab.toml spelling: `control-plane`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Lb => "lb",
            Role::Vpn => "vpn",
            Role::Manager => "manager",
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }
}

/// `[[machine]]`: a container or VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// Unique in the lab: the guest's hostname and its name in dnsmasq's reservations.
    pub name: Name,
    /// What the machine is for.
    pub role: Role,
    /// The Proxmox VMID, unique in the lab; 100 to 999999999.
    pub vmid: u32,
    /// CPU cores; at least one.
    pub cores: u16,
    /// Memory in MiB; at least the role's minimum (2048 for a control plane, 1024 for a
    /// worker, 512 for the manager, 128 for a container).
    pub memory_mib: u32,
    /// Size of the root disk (a container's root filesystem) in GiB, on `proxmox.storage`.
    pub disk_gib: u32,
    /// `[[machine.nic]]`: at most one per network and 16 in all; the guest's net0, net1, …
    /// in this order.
    #[serde(rename = "nic")]
    pub nics: Vec<Nic>,
    /// The Proxmox node it runs on, one of the `[[node]]` entries; placed by lab-bootstrap
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Whether Proxmox HA restarts it on another node when its node fails (a VM on several
    /// nodes only); off when unset.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ha: bool,
}

/// `[[machine.nic]]`: a machine's interface on one network, with its fixed address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// The network the NIC is on.
    pub network: NetworkId,
    /// Its address: a usable host of the network, outside its DHCP range, used by nothing
    /// else; dnsmasq reserves it for the NIC's MAC.
    pub address: Ipv4Addr,
    /// Derived from the VMID and NIC index under Proxmox's prefix when not given.
    #[serde(default)]
    pub mac: Option<MacAddr>,
}

impl Machine {
    /// The MAC of NIC `index`: the one given, or the derived one.
    pub fn mac(&self, index: usize) -> Option<MacAddr> {
        let nic = self.nics.get(index)?;
        Some(
            nic.mac
                .unwrap_or_else(|| MacAddr::derived(self.vmid, index as u8)),
        )
    }

    /// The machine's address on `network`, if it has a NIC there.
    pub fn address_on(&self, network: NetworkId) -> Option<Ipv4Addr> {
        self.nics
            .iter()
            .find(|n| n.network == network)
            .map(|n| n.address)
    }
}

/// Proxmox refuses VMIDs below 100.
pub const MIN_VMID: u32 = 100;
/// The largest VMID Proxmox accepts.
pub const MAX_VMID: u32 = 999_999_999;

/// NICs a Proxmox guest can have (net0..net31); derived MACs cover the first 16.
const MAX_NICS: usize = 16;

impl Lab {
    /// The addresses on `network` of the machines with `role`, in lab.toml order (machines
    /// without a NIC there left out).
    pub fn addresses_of(&self, role: Role, network: NetworkId) -> Vec<Ipv4Addr> {
        self.machines
            .iter()
            .filter(|m| m.role == role)
            .filter_map(|m| m.address_on(network))
            .collect()
    }

    /// Every check of the lab itself, each problem under its lab.toml key. The checks of what
    /// it renders come after these (`crate::lab_file`).
    pub(crate) fn validate_model(&self, issues: &mut Issues) {
        self.validate_names(issues);
        self.validate_networks(issues);
        self.validate_machines(issues);
        self.validate_roles(issues);
        self.validate_cluster(issues);
        self.validate_talos_extensions(issues);
        self.validate_talos_image_url(issues);
        self.validate_memory(issues);
        self.validate_storage(issues);
        self.validate_vpn(issues);
        self.validate_peers(issues);
        self.validate_lb(issues);
        self.validate_pairs(issues);
        self.validate_images(issues);
        self.validate_access(issues);
        self.validate_manager_tools(issues);
        self.validate_gitops(issues);
        self.validate_backup(issues);
        self.validate_workload_storage(issues);
        self.validate_placement(issues);
        self.validate_sdn(issues);
    }
}

fn is_usable_host(net: &Ipv4Net, address: Ipv4Addr) -> bool {
    net.contains(&address) && address != net.network() && address != net.broadcast()
}

fn usable_host_problem(net: &Ipv4Net, address: Ipv4Addr) -> Option<String> {
    if !net.contains(&address) {
        Some(format!("{address} is outside {net}"))
    } else if address == net.network() {
        Some(format!("{address} is the network address of {net}"))
    } else if address == net.broadcast() {
        Some(format!("{address} is the broadcast address of {net}"))
    } else {
        None
    }
}

impl Lab {
    fn validate_networks(&self, issues: &mut Issues) {
        let mut bridges: HashMap<&str, NetworkId> = HashMap::new();
        for (i, id) in NetworkId::ALL.into_iter().enumerate() {
            let net = self.networks.get(id);
            let key = format!("networks.{}", id.as_str());
            if let Some(other) = bridges.insert(net.bridge.as_str(), id) {
                issues.add(
                    format!("{key}.bridge"),
                    format!("bridge {} is already {}'s", net.bridge, other.as_str()),
                );
            }
            for earlier in &NetworkId::ALL[..i] {
                let other = self.networks.get(*earlier);
                if net.cidr.contains(&other.cidr.network())
                    || other.cidr.contains(&net.cidr.network())
                {
                    issues.add(
                        format!("{key}.cidr"),
                        format!(
                            "{} overlaps {} ({})",
                            net.cidr,
                            earlier.as_str(),
                            other.cidr
                        ),
                    );
                }
            }
            if let Some(problem) = usable_host_problem(&net.cidr, net.host) {
                issues.add(format!("{key}.host"), problem);
            }
            if let Some(gateway) = net.gateway {
                if let Some(problem) = usable_host_problem(&net.cidr, gateway) {
                    issues.add(format!("{key}.gateway"), problem);
                }
            }
            if let Some(range) = &net.dhcp {
                if id == NetworkId::Net0 {
                    issues.add(
                        format!("{key}.dhcp"),
                        "net0 is the existing uplink; its DHCP belongs to the home router",
                    );
                }
                for (field, address) in [("start", range.start), ("end", range.end)] {
                    if !is_usable_host(&net.cidr, address) {
                        issues.add(
                            format!("{key}.dhcp.{field}"),
                            format!("{address} is not a usable address of {}", net.cidr),
                        );
                    }
                }
                if range.start > range.end {
                    issues.add(
                        format!("{key}.dhcp.end"),
                        format!(
                            "the range ends ({}) before it starts ({})",
                            range.end, range.start
                        ),
                    );
                }
                if range.contains(net.host) {
                    issues.add(
                        format!("{key}.dhcp"),
                        format!(
                            "the range {}-{} contains the host's address {}",
                            range.start, range.end, net.host
                        ),
                    );
                }
            }
        }
    }

    fn validate_machines(&self, issues: &mut Issues) {
        let mut names: HashMap<&Name, usize> = HashMap::new();
        let mut vmids: HashMap<u32, usize> = HashMap::new();
        let mut macs: HashMap<MacAddr, String> = HashMap::new();
        let mut addresses: HashMap<Ipv4Addr, String> = HashMap::new();
        for id in NetworkId::ALL {
            let net = self.networks.get(id);
            addresses.insert(net.host, format!("the host's {} address", id.as_str()));
            if let Some(gateway) = net.gateway {
                addresses.insert(gateway, format!("the {} gateway", id.as_str()));
            }
        }
        for (i, machine) in self.machines.iter().enumerate() {
            let key = format!("machine[{i}]");
            if let Some(first) = names.insert(&machine.name, i) {
                issues.add(
                    format!("{key}.name"),
                    format!(
                        "machine `{}` is already defined as machine[{first}]",
                        machine.name
                    ),
                );
            }
            if !(MIN_VMID..=MAX_VMID).contains(&machine.vmid) {
                issues.add(
                    format!("{key}.vmid"),
                    format!(
                        "VMID {} is outside Proxmox's range {MIN_VMID}..={MAX_VMID}",
                        machine.vmid
                    ),
                );
            }
            if let Some(first) = vmids.insert(machine.vmid, i) {
                issues.add(
                    format!("{key}.vmid"),
                    format!(
                        "VMID {} is already used by `{}`",
                        machine.vmid, self.machines[first].name
                    ),
                );
            }
            if machine.cores == 0 {
                issues.add(format!("{key}.cores"), "a machine needs at least one core");
            }
            if machine.nics.is_empty() {
                issues.add(
                    format!("{key}.nic"),
                    format!("machine `{}` has no [[machine.nic]]", machine.name),
                );
            }
            if machine.nics.len() > MAX_NICS {
                issues.add(
                    format!("{key}.nic"),
                    format!("at most {MAX_NICS} NICs per machine"),
                );
            }
            for (j, nic) in machine.nics.iter().enumerate() {
                let nic_key = format!("{key}.nic[{j}]");
                if machine.nics[..j].iter().any(|n| n.network == nic.network) {
                    issues.add(
                        format!("{nic_key}.network"),
                        format!(
                            "`{}` already has a NIC on {}",
                            machine.name,
                            nic.network.as_str()
                        ),
                    );
                }
                let net = self.networks.get(nic.network);
                if let Some(problem) = usable_host_problem(&net.cidr, nic.address) {
                    issues.add(
                        format!("{nic_key}.address"),
                        format!("{problem} ({})", nic.network.as_str()),
                    );
                }
                let owner = format!("`{}` ({})", machine.name, nic.network.as_str());
                if let Some(other) = addresses.insert(nic.address, owner.clone()) {
                    issues.add(
                        format!("{nic_key}.address"),
                        format!("{} is already {other}", nic.address),
                    );
                }
                if net.dhcp.as_ref().is_some_and(|r| r.contains(nic.address)) {
                    issues.add(
                        format!("{nic_key}.address"),
                        format!(
                            "{} is inside {}'s DHCP range; static addresses must be outside it",
                            nic.address,
                            nic.network.as_str()
                        ),
                    );
                }
                if let Some(mac) = machine.mac(j) {
                    if mac.is_multicast() {
                        issues.add(
                            format!("{nic_key}.mac"),
                            format!("{mac} is a multicast address"),
                        );
                    }
                    if let Some(other) = macs.insert(mac, owner) {
                        issues.add(
                            format!("{nic_key}.mac"),
                            format!("MAC {mac} is already {other}'s"),
                        );
                    }
                }
            }
        }
    }

    fn validate_roles(&self, issues: &mut Issues) {
        let count = |role| self.machines.iter().filter(|m| m.role == role).count();
        for (role, needs) in [
            (Role::Lb, [NetworkId::Net0, NetworkId::Net2]),
            (Role::Vpn, [NetworkId::Net0, NetworkId::Net1]),
        ] {
            if count(role) != 1 {
                issues.add(
                    "machine",
                    format!(
                        "the lab needs exactly one machine with role = \"{}\", found {}",
                        role.as_str(),
                        count(role)
                    ),
                );
            }
            for (i, machine) in self
                .machines
                .iter()
                .enumerate()
                .filter(|(_, m)| m.role == role)
            {
                for network in needs {
                    if machine.address_on(network).is_none() {
                        issues.add(
                            format!("machine[{i}].nic"),
                            format!(
                                "the {} machine needs a NIC on {}",
                                role.as_str(),
                                network.as_str()
                            ),
                        );
                    }
                }
            }
        }
        if count(Role::ControlPlane) == 0 {
            issues.add(
                "machine",
                "the cluster needs at least one machine with role = \"control-plane\"",
            );
        } else if count(Role::ControlPlane) % 2 == 0 {
            issues.add(
                "machine",
                format!(
                    "{} control planes cannot keep etcd quorum better than {}; use an odd number",
                    count(Role::ControlPlane),
                    count(Role::ControlPlane) - 1
                ),
            );
        }
        for (i, machine) in self.machines.iter().enumerate() {
            let talos = matches!(machine.role, Role::ControlPlane | Role::Worker);
            for network in [NetworkId::Net1, NetworkId::Net2] {
                if talos && machine.address_on(network).is_none() {
                    issues.add(
                        format!("machine[{i}].nic"),
                        format!(
                            "Talos node `{}` needs a NIC on {}",
                            machine.name,
                            network.as_str()
                        ),
                    );
                }
            }
            if talos && machine.address_on(NetworkId::Net0).is_some() {
                issues.add(
                    format!("machine[{i}].nic"),
                    format!(
                        "Talos node `{}` must not be on net0: only the lb and vpn face the outside",
                        machine.name
                    ),
                );
            }
        }
    }

    fn validate_cluster(&self, issues: &mut Issues) {
        let cluster = &self.cluster;
        let lb_address = self
            .machines
            .iter()
            .find(|m| m.role == Role::Lb)
            .and_then(|m| m.address_on(NetworkId::Net2));
        if let Some(lb) = lb_address {
            let expected = format!("https://{lb}:6443");
            if cluster.endpoint != expected {
                issues.add(
                    "cluster.endpoint",
                    format!("the Kubernetes endpoint is the load balancer's net2 address: expected `{expected}`, found `{}`", cluster.endpoint),
                );
            }
        }
        if !cluster.talos_version.starts_with("v1.") {
            issues.add(
                "cluster.talos_version",
                format!(
                    "`{}` is not a Talos release like `v1.13.0`",
                    cluster.talos_version
                ),
            );
        }
        let mut ranges: Vec<(String, IpNet)> = NetworkId::ALL
            .into_iter()
            .map(|id| {
                (
                    id.as_str().to_owned(),
                    IpNet::V4(self.networks.get(id).cidr),
                )
            })
            .collect();
        for (field, net) in [
            ("pod_cidr", cluster.pod_cidr),
            ("service_cidr", cluster.service_cidr),
        ] {
            if let Some((name, other)) = ranges
                .iter()
                .find(|(_, o)| o.contains(&net.network()) || net.contains(&o.network()))
            {
                issues.add(
                    format!("cluster.{field}"),
                    format!("{net} overlaps {name} ({other})"),
                );
            }
            ranges.push((field.to_owned(), net));
        }
    }

    fn validate_storage(&self, issues: &mut Issues) {
        match &self.proxmox.file_storage_path {
            Some(path) if !path.is_absolute() => issues.add(
                "proxmox.file_storage_path",
                format!("`{}` is not an absolute path", path.display()),
            ),
            None if self.proxmox.file_storage_dir().is_none() => issues.add(
                "proxmox.file_storage_path",
                format!(
                    "where does storage `{}` keep its files? Its `path` from /etc/pve/storage.cfg is needed for the Talos cloud-init snippets",
                    self.proxmox.file_storage
                ),
            ),
            _ => {}
        }
    }

    fn validate_memory(&self, issues: &mut Issues) {
        let wanted: u64 = self.machines.iter().map(|m| u64::from(m.memory_mib)).sum();
        // On several nodes each node's budget is placement's to check.
        if let (Some(memory_mib), true) = (self.proxmox.memory_mib, self.nodes.is_empty()) {
            let available =
                u64::from(memory_mib).saturating_sub(u64::from(self.proxmox.host_reserve_mib));
            if wanted > available {
                issues.add(
                    "proxmox.memory_mib",
                    format!(
                        "the machines ask for {wanted} MiB but the host has {} MiB, {} of them kept for Proxmox itself",
                        memory_mib, self.proxmox.host_reserve_mib
                    ),
                );
            }
        }
        for (i, machine) in self.machines.iter().enumerate() {
            // Talos refuses to install below these (its documented minimums).
            let minimum = match machine.role {
                Role::ControlPlane => 2048,
                Role::Worker => 1024,
                Role::Manager => 512,
                Role::Lb | Role::Vpn => 128,
            };
            if machine.memory_mib < minimum {
                issues.add(
                    format!("machine[{i}].memory_mib"),
                    format!("a {} needs at least {minimum} MiB", machine.role.as_str()),
                );
            }
        }
    }
    fn validate_vpn(&self, issues: &mut Issues) {
        if let Some(endpoint) = &self.vpn.public_endpoint {
            if let Err(problem) = lab_schema::vpn::check_endpoint(endpoint) {
                issues.add("vpn.public_endpoint", problem);
            }
        }
        let tunnel = self.vpn.tunnel;
        if tunnel.prefix_len() > 30 {
            issues.add(
                "vpn.tunnel",
                format!("{tunnel} has no room for the gateway and a peer; use /30 or wider"),
            );
        }
        let mut others: Vec<(String, IpNet)> = NetworkId::ALL
            .into_iter()
            .map(|id| {
                (
                    id.as_str().to_owned(),
                    IpNet::V4(self.networks.get(id).cidr),
                )
            })
            .collect();
        others.push(("cluster.pod_cidr".to_owned(), self.cluster.pod_cidr));
        others.push(("cluster.service_cidr".to_owned(), self.cluster.service_cidr));
        let tunnel = IpNet::V4(tunnel);
        for (name, other) in others {
            if tunnel.contains(&other.network()) || other.contains(&tunnel.network()) {
                issues.add("vpn.tunnel", format!("{tunnel} overlaps {name} ({other})"));
            }
        }
    }
}
