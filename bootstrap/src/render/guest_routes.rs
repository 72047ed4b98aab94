//! The routes a machine needs beyond its connected networks. Containers sit on net0 with their
//! default route to the home router, so they also need the lab networks they are not on (and
//! the VPN tunnel) via the host, or their replies would leave through net0. VMs route everything
//! through the host on their first lab network.

use crate::model::{Lab, Machine, NetworkId, Role};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// A route inside a guest; `destination` None is the default route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRoute {
    /// The network it reaches; `None` for the default route.
    pub destination: Option<Ipv4Net>,
    /// The next hop: the home router on net0, or the host on a lab network.
    pub gateway: Ipv4Addr,
}

/// The routes `machine` needs, the default route first; none when it is only on net0 and net0
/// has no gateway.
pub fn guest_routes(lab: &Lab, machine: &Machine) -> Vec<GuestRoute> {
    let on = |id: NetworkId| machine.nics.iter().any(|n| n.network == id);
    let lab_networks = [NetworkId::Net1, NetworkId::Net2];
    let Some(via) = lab_networks.iter().copied().find(|id| on(*id)) else {
        // Only on net0: the home router's network is all it has.
        return lab
            .networks
            .net0
            .gateway
            .map(|gateway| GuestRoute {
                destination: None,
                gateway,
            })
            .into_iter()
            .collect();
    };
    let host = lab.networks.get(via).host;
    match (on(NetworkId::Net0), lab.networks.net0.gateway) {
        (true, Some(gateway)) => {
            let mut routes = vec![GuestRoute {
                destination: None,
                gateway,
            }];
            let elsewhere = lab_networks
                .iter()
                .filter(|id| !on(**id))
                .map(|id| lab.networks.get(*id).cidr)
                // The gateway itself holds the tunnel network.
                .chain((machine.role != Role::Vpn).then_some(lab.vpn.tunnel));
            routes.extend(elsewhere.map(|net| GuestRoute {
                destination: Some(net),
                gateway: host,
            }));
            routes
        }
        _ => vec![GuestRoute {
            destination: None,
            gateway: host,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> Lab {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lab.toml");
        lab_daemon::config::load::<Lab>(&path).unwrap()
    }

    fn routes_of(lab: &Lab, name: &str) -> Vec<String> {
        let machine = lab
            .machines
            .iter()
            .find(|m| m.name.to_string() == name)
            .unwrap();
        guest_routes(lab, machine)
            .iter()
            .map(|r| {
                let to = r
                    .destination
                    .map_or("default".to_owned(), |d| d.to_string());
                format!("{to} via {}", r.gateway)
            })
            .collect()
    }

    #[test]
    fn containers_reach_the_other_lab_networks_through_the_host() {
        let lab = lab();
        assert_eq!(
            routes_of(&lab, "lb"),
            [
                "default via 192.168.1.1",
                "10.10.1.0/24 via 10.10.2.1",
                "10.10.100.0/24 via 10.10.2.1"
            ]
        );
        assert_eq!(
            routes_of(&lab, "vpn"),
            ["default via 192.168.1.1", "10.10.2.0/24 via 10.10.1.1"]
        );
        assert_eq!(routes_of(&lab, "cp1"), ["default via 10.10.1.1"]);
        assert_eq!(routes_of(&lab, "manager"), ["default via 10.10.1.1"]);
    }
}
