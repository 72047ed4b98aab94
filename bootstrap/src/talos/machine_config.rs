//! Per-node Talos 1.13 machine configurations: a `v1alpha1` config document followed by the
//! network documents that replaced `machine.network` (link aliases by MAC, static links,
//! resolvers, hostname). Only fields the Talos 1.13 schema defines are written.

use super::secrets::{EncodedCertAndKey, Secrets};
use crate::model::{Lab, Machine, NetworkId, Role};
use serde::Serialize;
use std::collections::BTreeMap;

/// Proxmox attaches the Talos disk as the first virtio-scsi disk.
pub const INSTALL_DISK: &str = "/dev/sda";
const KUBELET_IMAGE: &str = "ghcr.io/siderolabs/kubelet";
/// The control plane's components, as Talos names their images by default.
const API_SERVER_IMAGE: &str = "registry.k8s.io/kube-apiserver";
const CONTROLLER_MANAGER_IMAGE: &str = "registry.k8s.io/kube-controller-manager";
const SCHEDULER_IMAGE: &str = "registry.k8s.io/kube-scheduler";
const PROXY_IMAGE: &str = "registry.k8s.io/kube-proxy";

/// Why a node's machine configuration could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum MachineConfigError {
    /// The machine lacks something its config needs (a NIC without a MAC).
    #[error("machine `{machine}`: {message}")]
    Machine {
        /// The machine's name.
        machine: String,
        /// What it lacks.
        message: String,
    },
    /// A config document could not be written as YAML.
    #[error("serialising the machine config of `{machine}`: {message}")]
    Serialise {
        /// The machine's name.
        machine: String,
        /// The serialiser's error.
        message: String,
    },
}

/// One YAML stream per Talos node (control planes and workers, in `lab.toml` order).
pub fn machine_configs(
    lab: &Lab,
    secrets: &Secrets,
) -> Result<Vec<(String, String)>, MachineConfigError> {
    lab.machines
        .iter()
        .filter(|m| matches!(m.role, Role::ControlPlane | Role::Worker))
        .map(|m| Ok((m.name.to_string(), machine_config(lab, secrets, m)?)))
        .collect()
}

fn machine_config(
    lab: &Lab,
    secrets: &Secrets,
    machine: &Machine,
) -> Result<String, MachineConfigError> {
    let serialise = |message: String| MachineConfigError::Serialise {
        machine: machine.name.to_string(),
        message,
    };
    let mut documents = vec![to_yaml(&config_document(lab, secrets, machine)).map_err(serialise)?];
    for (index, nic) in machine.nics.iter().enumerate() {
        let mac = machine
            .mac(index)
            .ok_or_else(|| MachineConfigError::Machine {
                machine: machine.name.to_string(),
                message: format!("NIC {index} has no MAC"),
            })?;
        let name = nic.network.as_str();
        documents.push(
            to_yaml(&LinkAliasConfig {
                api_version: "v1alpha1",
                kind: "LinkAliasConfig",
                name,
                selector: LinkSelector {
                    // Talos prints hardware addresses in lower case.
                    r#match: format!(
                        "mac(link.permanent_addr) == \"{}\"",
                        mac.to_string().to_ascii_lowercase()
                    ),
                },
            })
            .map_err(serialise)?,
        );
        let network = lab.networks.get(nic.network);
        // The default route leaves through net1's host: VPN peers reach nodes on net1 directly
        // from the VPN container, and their replies must go back the same way (the host routes
        // the tunnel network to the VPN container); net2 stays on-link traffic from the LB.
        let routes = if nic.network == default_route_network(machine) {
            vec![DefaultRouteConfig {
                gateway: network.host.to_string(),
            }]
        } else {
            Vec::new()
        };
        documents.push(
            to_yaml(&LinkConfig {
                api_version: "v1alpha1",
                kind: "LinkConfig",
                name,
                up: true,
                addresses: vec![AddressConfig {
                    address: format!("{}/{}", nic.address, network.cidr.prefix_len()),
                }],
                routes,
            })
            .map_err(serialise)?,
        );
    }
    // The host's DNS on the network the default route leaves through: the lab's names, and
    // the host's own resolvers for the rest.
    let nameserver = lab.networks.get(default_route_network(machine)).host;
    documents.push(
        to_yaml(&ResolverConfig {
            api_version: "v1alpha1",
            kind: "ResolverConfig",
            nameservers: vec![NameserverConfig {
                address: nameserver.to_string(),
            }],
            search_domains: SearchDomainsConfig {
                domains: vec![lab.networks.domain.clone()],
            },
        })
        .map_err(serialise)?,
    );
    documents.push(
        to_yaml(&HostnameConfig {
            api_version: "v1alpha1",
            kind: "HostnameConfig",
            hostname: machine.name.to_string(),
        })
        .map_err(serialise)?,
    );
    Ok(documents.join("---\n"))
}

fn default_route_network(machine: &Machine) -> NetworkId {
    if machine.address_on(NetworkId::Net1).is_some() {
        NetworkId::Net1
    } else {
        NetworkId::Net2
    }
}

fn to_yaml<T: Serialize>(document: &T) -> Result<String, String> {
    serde_norway::to_string(document).map_err(|e| e.to_string())
}

fn version_tag(version: &str) -> String {
    if version.starts_with('v') {
        version.to_owned()
    } else {
        format!("v{version}")
    }
}

/// The host part of `https://host:port`.
pub(crate) fn endpoint_host(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

fn config_document<'a>(lab: &'a Lab, secrets: &'a Secrets, machine: &Machine) -> Config<'a> {
    let control_plane = machine.role == Role::ControlPlane;
    let net2 = lab.networks.net2.cidr.to_string();
    let certs = &secrets.certs;
    // A pinned release names every component's image, so changing it (`upgrade kubernetes`)
    // changes each of them, as `talosctl upgrade-k8s` does; unset, Talos's defaults apply.
    let image = |repository: &str| {
        lab.cluster
            .kubernetes_version
            .as_deref()
            .map(|v| format!("{repository}:{}", version_tag(v)))
    };
    // The control planes run the components, and render kube-proxy's DaemonSet.
    let component = |repository: &str| {
        image(repository)
            .filter(|_| control_plane)
            .map(|image| Component { image })
    };
    Config {
        version: "v1alpha1",
        machine: MachineConfig {
            r#type: if control_plane {
                "controlplane"
            } else {
                "worker"
            },
            token: &secrets.trustdinfo.token,
            ca: CertMaybeKey::of(&certs.os, control_plane),
            cert_sans: machine.nics.iter().map(|n| n.address.to_string()).collect(),
            kubelet: KubeletConfig {
                image: image(KUBELET_IMAGE),
                // Pod and service traffic between nodes and from the LB runs on net2.
                node_ip: NodeIp {
                    valid_subnets: vec![net2.clone()],
                },
            },
            node_labels: lab.storage.as_ref().map(|_| topology_labels(lab)),
            install: InstallConfig {
                disk: INSTALL_DISK,
                // The factory's installer carries `[cluster] talos_extensions`; the stock one
                // would drop them (the guest agent among them) at the first upgrade.
                image: lab.talos_factory().installer,
                wipe: false,
            },
        },
        cluster: ClusterConfig {
            id: &secrets.cluster.id,
            secret: &secrets.cluster.secret,
            control_plane: ControlPlane {
                endpoint: &lab.cluster.endpoint,
            },
            cluster_name: lab.cluster.name.to_string(),
            network: ClusterNetwork {
                pod_subnets: vec![lab.cluster.pod_cidr.to_string()],
                service_subnets: vec![lab.cluster.service_cidr.to_string()],
            },
            token: &secrets.secrets.bootstraptoken,
            secretbox_encryption_secret: control_plane
                .then_some(&secrets.secrets.secretboxencryptionsecret),
            ca: CertMaybeKey::of(&certs.k8s, control_plane),
            aggregator_ca: control_plane.then_some(CertMaybeKey::of(&certs.k8saggregator, true)),
            service_account: control_plane.then_some(ServiceAccount {
                key: &certs.k8sserviceaccount.key,
            }),
            api_server: control_plane.then(|| ApiServer {
                image: image(API_SERVER_IMAGE),
                // Clients reach the API through the load balancer's address.
                cert_sans: vec![endpoint_host(&lab.cluster.endpoint).to_owned()],
            }),
            controller_manager: component(CONTROLLER_MANAGER_IMAGE),
            proxy: component(PROXY_IMAGE),
            scheduler: component(SCHEDULER_IMAGE),
            etcd: control_plane.then_some(Etcd {
                ca: CertMaybeKey::of(&certs.etcd, true),
                advertised_subnets: vec![net2],
            }),
        },
    }
}

/// The labels the Proxmox CSI plugin places volumes by (its docs/install.md, v0.19.1): the
/// region is the `region` of its config (the cluster), the zone the Proxmox node the VM runs on.
/// The kubelet may set both on its own node (NodeRestriction allows `topology.kubernetes.io/`).
fn topology_labels(lab: &Lab) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        (crate::storage::REGION_LABEL, lab.cluster.name.to_string()),
        (crate::storage::ZONE_LABEL, lab.proxmox.node.clone()),
    ])
}

#[derive(Serialize)]
struct Config<'a> {
    version: &'static str,
    machine: MachineConfig<'a>,
    cluster: ClusterConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MachineConfig<'a> {
    r#type: &'static str,
    token: &'a str,
    ca: CertMaybeKey<'a>,
    #[serde(rename = "certSANs")]
    cert_sans: Vec<String>,
    kubelet: KubeletConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_labels: Option<BTreeMap<&'static str, String>>,
    install: InstallConfig,
}

/// A CA certificate, with its key only where the node signs with it (control planes).
#[derive(Serialize)]
struct CertMaybeKey<'a> {
    crt: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
}

impl<'a> CertMaybeKey<'a> {
    fn of(ca: &'a EncodedCertAndKey, with_key: bool) -> Self {
        Self {
            crt: &ca.crt,
            key: with_key.then_some(ca.key.as_str()),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(rename = "nodeIP")]
    node_ip: NodeIp,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeIp {
    valid_subnets: Vec<String>,
}

#[derive(Serialize)]
struct InstallConfig {
    disk: &'static str,
    image: String,
    wipe: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterConfig<'a> {
    id: &'a str,
    secret: &'a str,
    control_plane: ControlPlane<'a>,
    cluster_name: String,
    network: ClusterNetwork,
    token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    secretbox_encryption_secret: Option<&'a String>,
    ca: CertMaybeKey<'a>,
    #[serde(rename = "aggregatorCA", skip_serializing_if = "Option::is_none")]
    aggregator_ca: Option<CertMaybeKey<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_account: Option<ServiceAccount<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_server: Option<ApiServer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    controller_manager: Option<Component>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<Component>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduler: Option<Component>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd: Option<Etcd<'a>>,
}

#[derive(Serialize)]
struct ControlPlane<'a> {
    endpoint: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterNetwork {
    pod_subnets: Vec<String>,
    service_subnets: Vec<String>,
}

#[derive(Serialize)]
struct ServiceAccount<'a> {
    key: &'a str,
}

#[derive(Serialize)]
struct ApiServer {
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(rename = "certSANs")]
    cert_sans: Vec<String>,
}

/// A Kubernetes component Talos runs, by its image.
#[derive(Serialize)]
struct Component {
    image: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Etcd<'a> {
    ca: CertMaybeKey<'a>,
    advertised_subnets: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LinkAliasConfig<'a> {
    api_version: &'static str,
    kind: &'static str,
    name: &'a str,
    selector: LinkSelector,
}

#[derive(Serialize)]
struct LinkSelector {
    r#match: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LinkConfig<'a> {
    api_version: &'static str,
    kind: &'static str,
    name: &'a str,
    up: bool,
    addresses: Vec<AddressConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<DefaultRouteConfig>,
}

#[derive(Serialize)]
struct AddressConfig {
    address: String,
}

/// No destination: the default route.
#[derive(Serialize)]
struct DefaultRouteConfig {
    gateway: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResolverConfig {
    api_version: &'static str,
    kind: &'static str,
    nameservers: Vec<NameserverConfig>,
    search_domains: SearchDomainsConfig,
}

#[derive(Serialize)]
struct SearchDomainsConfig {
    domains: Vec<String>,
}

#[derive(Serialize)]
struct NameserverConfig {
    address: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HostnameConfig {
    api_version: &'static str,
    kind: &'static str,
    hostname: String,
}
