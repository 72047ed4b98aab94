//! What the lab should look like on the Proxmox node, in the API's own terms: the lab bridges,
//! the `lb` and `vpn` containers, the manager VM and the Talos VMs, each as the parameters of
//! the call that creates it. Everything here is marked as this lab's (bridge comments, guest
//! descriptions naming `[cluster] name`, with the guest tag) so `destroy` can tell it from what
//! the user made by hand and from another lab's on the same node.

use std::collections::BTreeMap;

use crate::model::{Image, Lab, Machine, NetworkId, Role};
use std::path::Path;

/// The tag on every guest we create, and the mark in every bridge's comments.
pub const MANAGED_TAG: &str = "lab-bootstrap";
/// What guest descriptions end with and bridge comments start with.
pub const MANAGED_COMMENT: &str = "managed by lab-bootstrap";

/// The lab a guest's description names, when lab-bootstrap wrote it: the line
/// `<machine>: <role> of lab <lab>; managed by lab-bootstrap` ([`description`]). Lab names have
/// no spaces, so the name ends where the line says it does; other lines (notes added in the
/// UI) are skipped.
pub fn lab_of_description(description: &str) -> Option<&str> {
    let suffix = format!("; {MANAGED_COMMENT}");
    description.lines().find_map(|line| {
        let (_, lab) = line
            .trim()
            .strip_suffix(suffix.as_str())?
            .rsplit_once(" of lab ")?;
        (!lab.is_empty()).then_some(lab)
    })
}

/// The lab a bridge's comments name, when lab-bootstrap wrote them:
/// `managed by lab-bootstrap: <network> of lab <lab>`.
pub fn lab_of_comments(comments: &str) -> Option<&str> {
    comments.lines().find_map(|line| {
        let (_, lab) = line
            .trim()
            .strip_prefix(MANAGED_COMMENT)?
            .strip_prefix(": ")?
            .rsplit_once(" of lab ")?;
        (!lab.is_empty()).then_some(lab)
    })
}

/// Where the images and templates come from on the node's file storage
/// (`[proxmox] file_storage`): `[images]`' file names, or the defaults; and the manager's login.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Debian LXC template (`pveam download local debian-12-standard_…`).
    pub ostemplate: String,
    /// Talos nocloud disk image, imported as each Talos VM's disk.
    pub talos_image: String,
    /// Debian generic cloud image for the manager VM.
    pub manager_image: String,
    /// The manager VM's cloud-init user and authorized keys (OpenSSH lines).
    pub manager_user: String,
    /// The contents of `[manager] ssh_keys_file`; `None` without one (and from
    /// [`Sources::defaults`]).
    pub manager_ssh_keys: Option<String>,
}

fn file_of(image: &Option<Image>, default: String) -> String {
    image
        .as_ref()
        .map(|i| i.file_name().to_owned())
        .unwrap_or(default)
}

impl Sources {
    /// Everything lab.toml says without reading any other file: no SSH keys.
    pub fn defaults(lab: &Lab) -> Self {
        let files = &lab.proxmox.file_storage;
        let images = &lab.images;
        Self {
            ostemplate: format!(
                "{files}:vztmpl/{}",
                file_of(
                    &images.lxc_template,
                    "debian-12-standard_12.12-1_amd64.tar.zst".to_owned()
                )
            ),
            talos_image: format!(
                "{files}:import/{}",
                file_of(&lab.talos_image(), lab.talos_factory().disk_image_file)
            ),
            manager_image: format!(
                "{files}:import/{}",
                file_of(
                    &images.debian,
                    "debian-12-genericcloud-amd64.qcow2".to_owned()
                )
            ),
            manager_user: lab.manager.user.clone(),
            manager_ssh_keys: None,
        }
    }

    /// [`Sources::defaults`] with the manager's keys from `[manager] ssh_keys_file`.
    pub fn read(lab: &Lab) -> Result<Self, String> {
        let mut sources = Self::defaults(lab);
        sources.manager_ssh_keys = lab.manager.ssh_keys().map_err(|e| {
            let file = lab
                .manager
                .ssh_keys_file
                .as_deref()
                .unwrap_or(Path::new(""));
            format!("manager.ssh_keys_file: cannot read {}: {e}", file.display())
        })?;
        Ok(sources)
    }
}

/// What sort of resource on the node (or, on several nodes, of the cluster) a [`Resource`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A Linux bridge of the node's network.
    Bridge,
    /// An LXC container.
    Container,
    /// A QEMU VM.
    Vm,
    /// The SDN zone carrying the lab's VNets between the nodes.
    Zone,
    /// An SDN VNet: a lab network on every node.
    Vnet,
    /// A VNet's subnet (id `vnet/subnet-id`).
    Subnet,
    /// A guest under Proxmox HA (id `vm:211`).
    HaResource,
    /// A Proxmox 9 HA node-affinity rule.
    HaRule,
    /// A Proxmox 8 HA group (what node affinity was before rules).
    HaGroup,
}

impl Kind {
    /// The kind's name in plans and progress lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bridge => "bridge",
            Kind::Container => "container",
            Kind::Vm => "vm",
            Kind::Zone => "sdn-zone",
            Kind::Vnet => "vnet",
            Kind::Subnet => "subnet",
            Kind::HaResource => "ha-resource",
            Kind::HaRule => "ha-rule",
            Kind::HaGroup => "ha-group",
        }
    }

    /// The API collection of guests of this kind.
    pub fn api(self) -> &'static str {
        match self {
            Kind::Bridge => "network",
            Kind::Container => "lxc",
            Kind::Vm => "qemu",
            Kind::Zone => "sdn/zones",
            Kind::Vnet | Kind::Subnet => "sdn/vnets",
            Kind::HaResource => "ha/resources",
            Kind::HaRule => "ha/rules",
            Kind::HaGroup => "ha/groups",
        }
    }

    /// Whether resources of this kind belong to the cluster rather than to one node.
    pub fn is_cluster_wide(self) -> bool {
        !matches!(self, Kind::Bridge | Kind::Container | Kind::Vm)
    }

    /// Whether this is one of the SDN objects `PUT /cluster/sdn` puts into effect.
    pub fn is_sdn(self) -> bool {
        matches!(self, Kind::Zone | Kind::Vnet | Kind::Subnet)
    }
}

/// One resource as the lab wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Bridge, container or VM.
    pub kind: Kind,
    /// The bridge name or the VMID.
    pub id: String,
    /// A human name: the network or the machine.
    pub name: String,
    /// The node it is on (guests, bridges); the router node for what is the cluster's.
    pub node: String,
    /// The parameters of the create call, in wire form.
    pub create: BTreeMap<String, String>,
}

impl Resource {
    /// Parameters that only matter when creating (templates, disk imports, sizes): never
    /// compared with the live config, never sent as updates.
    pub fn create_only(&self, key: &str) -> bool {
        matches!(
            (self.kind, key),
            (_, "vmid" | "iface" | "type" | "start" | "pool")
                | (Kind::Container, "ostemplate" | "rootfs" | "storage")
                | (Kind::Vm, "efidisk0" | "scsi0" | "ide2")
                | (Kind::Zone, "zone")
                | (Kind::Vnet, "vnet")
                | (Kind::Subnet, "subnet" | "vnet")
                | (Kind::HaRule, "rule")
                | (Kind::HaGroup, "group")
                // The HA state is the guest's running or not, which the host side and the
                // user change; it is set once, when the resource is made.
                | (Kind::HaResource, "sid" | "state")
        )
    }

    /// The API path of the collection it is created in.
    pub fn collection(&self) -> String {
        match self.kind {
            Kind::Bridge | Kind::Container | Kind::Vm => {
                format!("/nodes/{}/{}", self.node, self.kind.api())
            }
            Kind::Subnet => {
                let vnet = self.id.split_once('/').map_or("", |(vnet, _)| vnet);
                format!("/cluster/sdn/vnets/{vnet}/subnets")
            }
            _ => format!("/cluster/{}", self.kind.api()),
        }
    }

    /// The API path of the resource itself.
    pub fn item(&self) -> String {
        let id = match self.kind {
            Kind::Subnet => self.id.split_once('/').map_or("", |(_, id)| id),
            _ => self.id.as_str(),
        };
        format!("{}/{id}", self.collection())
    }

    /// Parameters the API cannot change on an existing guest: a difference means replace.
    pub fn forces_replace(&self, key: &str) -> bool {
        matches!((self.kind, key), (Kind::Container, "unprivileged"))
    }
}

/// The lab's bridges and guests, bridges first, in the order they are created. On several
/// nodes there are no bridges (the networks are SDN VNets: `super::sdn`, created before these)
/// and each guest is on its node; HA comes after them (`super::ha`).
pub fn desired(lab: &Lab, sources: &Sources) -> Vec<Resource> {
    let placement = lab.placement().unwrap_or_default();
    let node_of = |m: &Machine| {
        // A lab that passed validation places every machine.
        placement
            .get(m.name.as_str())
            .cloned()
            .unwrap_or_else(|| lab.proxmox.node.clone())
    };
    let mut out = if lab.is_cluster() {
        Vec::new()
    } else {
        bridges(lab)
    };
    // A pair's two containers in place of its machine.
    let guests = lab.guests();
    let mut machines: Vec<&Machine> = guests.iter().collect();
    machines.sort_by_key(|m| (!m.role.is_container(), m.vmid));
    for m in machines {
        out.push(if m.role.is_container() {
            container(lab, sources, m, node_of(m))
        } else {
            vm(lab, sources, m, node_of(m))
        });
    }
    out
}

/// net1 and net2 as bridges of the one node, the host's address on each.
fn bridges(lab: &Lab) -> Vec<Resource> {
    let mut out = Vec::new();
    for id in [NetworkId::Net1, NetworkId::Net2] {
        let net = lab.networks.get(id);
        let cidr = format!("{}/{}", net.host, net.cidr.prefix_len());
        out.push(Resource {
            kind: Kind::Bridge,
            id: net.bridge.clone(),
            name: id.as_str().to_owned(),
            node: lab.proxmox.node.clone(),
            create: params(&[
                ("iface", net.bridge.as_str()),
                ("type", "bridge"),
                ("cidr", &cidr),
                ("autostart", "1"),
                (
                    "comments",
                    &format!(
                        "{MANAGED_COMMENT}: {} of lab {}",
                        id.as_str(),
                        lab.cluster.name
                    ),
                ),
            ]),
        });
    }
    out
}

/// Wire-form parameters from pairs.
pub(crate) fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn description(lab: &Lab, m: &Machine) -> String {
    format!(
        "{}: {} of lab {}; {MANAGED_COMMENT}",
        m.name.as_str(),
        m.role.as_str(),
        lab.cluster.name
    )
}

fn tags(m: &Machine) -> String {
    format!("{MANAGED_TAG};{}", m.role.as_str())
}

fn container(lab: &Lab, sources: &Sources, m: &Machine, node: String) -> Resource {
    let storage = &lab.proxmox.storage;
    let mut create = params(&[
        ("vmid", &m.vmid.to_string()),
        ("hostname", m.name.as_str()),
        ("ostemplate", &sources.ostemplate),
        ("unprivileged", "1"),
        // The daemons' units sandbox themselves with mount namespaces, which need nesting.
        ("features", "nesting=1"),
        ("cores", &m.cores.to_string()),
        ("memory", &m.memory_mib.to_string()),
        ("swap", "0"),
        ("rootfs", &format!("{storage}:{}", m.disk_gib)),
        ("onboot", "1"),
        ("tags", &tags(m)),
        ("description", &description(lab, m)),
    ]);
    for (i, nic) in m.nics.iter().enumerate() {
        let net = lab.networks.get(nic.network);
        let mac = m.mac(i).map(|mac| mac.to_string()).unwrap_or_default();
        let mut value = format!(
            "name=eth{i},bridge={},hwaddr={mac},ip={}/{}",
            net.bridge,
            nic.address,
            net.cidr.prefix_len()
        );
        // The default route goes out of the first NIC: the uplink's gateway, else the host.
        if i == 0 {
            let gw = net.gateway.unwrap_or(net.host);
            value.push_str(&format!(",gw={gw}"));
        }
        value.push_str(",type=veth");
        create.insert(format!("net{i}"), value);
    }
    if m.role == Role::Vpn {
        create.insert("dev0".to_owned(), "/dev/net/tun".to_owned());
    }
    Resource {
        kind: Kind::Container,
        id: m.vmid.to_string(),
        name: m.name.as_str().to_owned(),
        node,
        create,
    }
}

fn vm(lab: &Lab, sources: &Sources, m: &Machine, node: String) -> Resource {
    let storage = &lab.proxmox.storage;
    let image = if m.role == Role::Manager {
        &sources.manager_image
    } else {
        &sources.talos_image
    };
    let mut create = params(&[
        ("vmid", &m.vmid.to_string()),
        ("name", m.name.as_str()),
        ("machine", "q35"),
        ("bios", "ovmf"),
        (
            "efidisk0",
            &format!("{storage}:1,efitype=4m,pre-enrolled-keys=0"),
        ),
        ("cpu", "host"),
        ("cores", &m.cores.to_string()),
        ("sockets", "1"),
        ("memory", &m.memory_mib.to_string()),
        ("scsihw", "virtio-scsi-pci"),
        (
            "scsi0",
            &format!("{storage}:0,import-from={image},discard=on,ssd=1"),
        ),
        ("ide2", &format!("{storage}:cloudinit")),
        ("boot", "order=scsi0"),
        ("ostype", "l26"),
        ("agent", "1"),
        ("onboot", "1"),
        ("tags", &tags(m)),
        ("description", &description(lab, m)),
    ]);
    for (i, nic) in m.nics.iter().enumerate() {
        let net = lab.networks.get(nic.network);
        let mac = m.mac(i).map(|mac| mac.to_string()).unwrap_or_default();
        create.insert(
            format!("net{i}"),
            format!("virtio={mac},bridge={}", net.bridge),
        );
    }
    if m.role == Role::Manager {
        let net1 = &lab.networks.net1;
        if let Some(address) = m.address_on(NetworkId::Net1) {
            create.insert(
                "ipconfig0".to_owned(),
                format!("ip={address}/{},gw={}", net1.cidr.prefix_len(), net1.host),
            );
        }
        create.insert("nameserver".to_owned(), net1.host.to_string());
        create.insert("searchdomain".to_owned(), lab.networks.domain.clone());
        // The snippet of `cicustom` replaces the user-data Proxmox makes from these two; it
        // creates the same login. They stay so the Proxmox UI shows who logs in.
        create.insert("ciuser".to_owned(), sources.manager_user.clone());
        if let Some(keys) = &sources.manager_ssh_keys {
            // The API takes `sshkeys` URL-encoded (spaces as %20, not `+`).
            let encoded =
                percent_encoding::utf8_percent_encode(keys, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            create.insert("sshkeys".to_owned(), encoded);
        }
    }
    // The Talos machine config, or the manager's cloud-config (its tools, talosconfig and
    // kubeconfig), arrives as cloud-init user-data from the snippets storage.
    create.insert(
        "cicustom".to_owned(),
        format!(
            "user={}:snippets/lab-{}.yaml",
            lab.proxmox.file_storage,
            m.name.as_str()
        ),
    );
    Resource {
        kind: Kind::Vm,
        id: m.vmid.to_string(),
        name: m.name.as_str().to_owned(),
        node,
        create,
    }
}
