//! On several nodes, net1 and net2 as Proxmox SDN objects: one VXLAN zone whose peers are the
//! nodes' management addresses, a VNet per network (named as lab.toml's `bridge`, so guests'
//! NICs and the router node's dnsmasq and firewall keep the name), and its subnet. The VNet's
//! bridge exists on every node; on the router node it also carries the gateway address
//! (`lab-network.service` adds it, as the node's own bridge carries it on one node). A VXLAN
//! zone routes nothing itself: the subnet's gateway records where the router is.

use super::desired::{params, Kind, Resource, MANAGED_COMMENT};
use crate::model::{Lab, NetworkId};

/// Proxmox's id of `cidr`'s subnet in `zone`: `lab-10.10.1.0-24`.
pub fn subnet_id(zone: &str, cidr: &ipnet::Ipv4Net) -> String {
    format!("{zone}-{}-{}", cidr.network(), cidr.prefix_len())
}

/// The VNet's alias, which marks it as this lab's (as a bridge's comments do).
pub fn vnet_alias(lab: &Lab, network: NetworkId) -> String {
    format!(
        "{MANAGED_COMMENT}: {} of lab {}",
        network.as_str(),
        lab.cluster.name
    )
}

/// The zone, then each network's VNet and subnet, in the order they are created.
pub fn desired(lab: &Lab) -> Vec<Resource> {
    let zone = lab.proxmox.sdn_zone();
    let router = &lab.proxmox.node;
    let peers: Vec<String> = lab.nodes.iter().map(|n| n.address.to_string()).collect();
    let mut out = vec![Resource {
        kind: Kind::Zone,
        id: zone.to_owned(),
        name: format!("lab {}", lab.cluster.name),
        node: router.clone(),
        create: params(&[
            ("zone", zone),
            ("type", "vxlan"),
            ("peers", &peers.join(",")),
        ]),
    }];
    for id in [NetworkId::Net1, NetworkId::Net2] {
        let net = lab.networks.get(id);
        out.push(Resource {
            kind: Kind::Vnet,
            id: net.bridge.clone(),
            name: id.as_str().to_owned(),
            node: router.clone(),
            create: params(&[
                ("vnet", &net.bridge),
                ("zone", zone),
                ("tag", &lab.vni(id).to_string()),
                ("alias", &vnet_alias(lab, id)),
            ]),
        });
    }
    for id in [NetworkId::Net1, NetworkId::Net2] {
        let net = lab.networks.get(id);
        out.push(Resource {
            kind: Kind::Subnet,
            id: format!("{}/{}", net.bridge, subnet_id(zone, &net.cidr)),
            name: id.as_str().to_owned(),
            node: router.clone(),
            create: params(&[
                ("subnet", &net.cidr.to_string()),
                ("type", "subnet"),
                ("vnet", &net.bridge),
                ("gateway", &net.host.to_string()),
            ]),
        });
    }
    out
}
