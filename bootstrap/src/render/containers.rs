//! `lb.toml` and `vpn.toml` for the containers, built as lab-schema's config types (the ones
//! lab-lb and lab-vpn load) and serialised, so the three programs can never disagree about a
//! field. They are staged on the host under [`STAGING_DIR`]`/<machine>/` mirroring the
//! container's own paths.

use super::{role_address, RenderError, RenderedFile};
use crate::model::{Lab, LbRoute, NetworkId, Role};
use ipnet::{IpNet, Ipv4Net};
use lab_daemon::{LogConfig, MetricsConfig, RuntimeConfig, ShutdownConfig};
use lab_schema::lb::{Backend, LbConfig, Listener, Server};
use lab_schema::vpn::{Interface, Peer, VpnConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Where container files wait on the host before they are pushed in.
pub const STAGING_DIR: &str = "/var/lib/lab/containers";
/// lab-lb's config in the lb container.
pub const LB_CONFIG: &str = "/etc/lab-lb/lb.toml";
/// lab-vpn's config in the vpn container.
pub const VPN_CONFIG: &str = "/etc/lab-vpn/vpn.toml";
/// The vpn gateway's private key in the vpn container (0600), staged from the state directory.
pub const VPN_PRIVATE_KEY: &str = "/etc/lab-vpn/private.key";
/// lab-vpn's WireGuard UDP port, and the peers' endpoint port on the vpn's net0 address.
pub const VPN_PORT: u16 = 51820;
/// lab-lb's systemd unit in the lb container.
pub const LB_UNIT: &str = "/etc/systemd/system/lab-lb.service";
/// lab-vpn's systemd unit in the vpn container.
pub const VPN_UNIT: &str = "/etc/systemd/system/lab-vpn.service";
/// Pulled in by lab-vpn.service; runs `lab-vpn guard` before the container's network is up.
pub const VPN_GUARD_UNIT: &str = "/etc/systemd/system/lab-vpn-guard.service";
/// Drop-ins adding the routes a container's LXC network config cannot hold (see
/// [`super::guest_routes`]): without them replies to net1 or the VPN tunnel leave through net0.
pub const LB_ROUTES_DROPIN: &str = "/etc/systemd/system/lab-lb.service.d/10-lab-routes.conf";
/// The vpn container's routes drop-in, as [`LB_ROUTES_DROPIN`] is the lb's.
pub const VPN_ROUTES_DROPIN: &str = "/etc/systemd/system/lab-vpn.service.d/10-lab-routes.conf";
/// Where lab-lb's binary is installed in the lb container.
pub const LB_BINARY: &str = "/usr/local/bin/lab-lb";
/// Where lab-vpn's binary is installed in the vpn container.
pub const VPN_BINARY: &str = "/usr/local/bin/lab-vpn";
/// The metrics port of configs/vpn.toml (9586: the WireGuard exporters').
pub const VPN_METRICS_PORT: u16 = 9586;
pub use crate::model::LB_METRICS_PORT;

/// The staged host path of `path` inside the container of the machine with `role`.
pub fn staged_path(lab: &Lab, role: Role, path: &str) -> PathBuf {
    let machine = lab
        .machines
        .iter()
        .find(|m| m.role == role)
        .map(|m| m.name.to_string())
        .unwrap_or_else(|| role.as_str().to_owned());
    PathBuf::from(format!("{STAGING_DIR}/{machine}{path}"))
}

fn backend(route: &LbRoute, lab: &Lab) -> Backend {
    let servers = route
        .targets(lab)
        .into_iter()
        .filter_map(|m| m.address_on(NetworkId::Net2))
        .map(|address| Server {
            address: SocketAddr::new(IpAddr::V4(address), route.target_port()),
            weight: Server::DEFAULT_WEIGHT,
        })
        .collect();
    Backend {
        name: route.name.clone(),
        balance: route.balance,
        servers,
        connect_timeout: Backend::DEFAULT_CONNECT_TIMEOUT,
        retries: Backend::DEFAULT_RETRIES,
        failure_hold: Backend::DEFAULT_FAILURE_HOLD,
        proxy_protocol: None,
        health_check: route.health_check.clone(),
    }
}

fn listener(route: &LbRoute, address: Ipv4Addr) -> Listener {
    Listener {
        name: route.name.clone(),
        listen: SocketAddr::new(IpAddr::V4(address), route.port),
        mode: route.mode,
        backend: route.name.clone(),
        routes: Vec::new(),
        max_connections: Listener::DEFAULT_MAX_CONNECTIONS,
        max_connections_per_client: Listener::DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
        idle_timeout: Listener::DEFAULT_IDLE_TIMEOUT,
        hello_timeout: Listener::DEFAULT_HELLO_TIMEOUT,
        accept_proxy_from: Vec::new(),
        http: None,
    }
}

/// The balancer: one listener and backend per route of lab.toml (or the default routes: API
/// and Talos to the control planes on net2, ingress to the workers on net0), servers on net2.
pub fn lb_config(lab: &Lab) -> Result<LbConfig, RenderError> {
    let net2 = role_address(lab, Role::Lb, NetworkId::Net2)?;
    let mut listeners = Vec::new();
    let mut backends = Vec::new();
    for route in lab.lb_routes() {
        listeners.push(listener(&route, role_address(lab, Role::Lb, route.listen)?));
        backends.push(backend(&route, lab));
    }
    Ok(LbConfig {
        log: LogConfig::default(),
        metrics: MetricsConfig {
            listen: SocketAddr::new(IpAddr::V4(net2), LB_METRICS_PORT),
        },
        shutdown: ShutdownConfig::default(),
        runtime: RuntimeConfig::default(),
        listeners,
        backends,
    })
}

/// The gateway: the tunnel's first address, reaching net1 and net2, with lab.toml's peers
/// (more can come with `lab-vpn peer add`).
pub fn vpn_config(lab: &Lab) -> Result<VpnConfig, RenderError> {
    let net0 = role_address(lab, Role::Vpn, NetworkId::Net0)?;
    let net1 = role_address(lab, Role::Vpn, NetworkId::Net1)?;
    let network = lab.vpn.tunnel;
    let gateway = lab.vpn_gateway();
    let tunnel = Ipv4Net::new(gateway, network.prefix_len()).unwrap_or(network);
    Ok(VpnConfig {
        log: LogConfig::default(),
        metrics: MetricsConfig {
            listen: SocketAddr::new(IpAddr::V4(net1), VPN_METRICS_PORT),
        },
        shutdown: ShutdownConfig::default(),
        runtime: RuntimeConfig::default(),
        interface: Interface {
            name: "wg0".to_owned(),
            private_key_file: PathBuf::from(VPN_PRIVATE_KEY),
            listen_port: VPN_PORT,
            address: vec![IpNet::V4(tunnel)],
            mtu: Interface::DEFAULT_MTU,
            reach: vec![
                IpNet::V4(lab.networks.net1.cidr),
                IpNet::V4(lab.networks.net2.cidr),
            ],
            // The host routes the tunnel back to the gateway, so peers keep their addresses.
            masquerade: false,
            // Peers resolve the lab's names through the host's DNS on net1, where they arrive.
            dns: vec![IpAddr::V4(lab.networks.net1.host)],
            dns_search: vec![lab.networks.domain.clone()],
            public_endpoint: Some(
                lab.vpn
                    .public_endpoint
                    .clone()
                    .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(net0), VPN_PORT).to_string()),
            ),
        },
        peers: peers(lab)?,
    })
}

fn peers(lab: &Lab) -> Result<Vec<Peer>, RenderError> {
    lab.vpn
        .peers
        .iter()
        .map(|peer| {
            Ok(Peer {
                name: peer.name.clone(),
                public_key: peer.key().map_err(|source| RenderError::PeerKey {
                    peer: peer.name.to_string(),
                    source,
                })?,
                preshared_key_file: None,
                allowed_ips: vec![IpNet::V4(Ipv4Net::from(peer.address))],
                endpoint: None,
                persistent_keepalive: None,
            })
        })
        .collect()
}

fn toml_text<T: serde::Serialize>(what: &str, value: &T) -> Result<String, RenderError> {
    let body = toml::to_string(value).map_err(|e| RenderError::Serialize {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(format!(
        "# Written by lab-bootstrap from lab.toml; check with `{what}`.\n\n{body}"
    ))
}

/// The drop-in giving the daemon's container its routes before the daemon starts. `+` runs
/// the commands with full privileges: the daemons' own units keep only what they need.
pub fn routes_dropin(lab: &Lab, role: Role) -> String {
    let mut out = String::from(
        "# Written by lab-bootstrap from lab.toml: routes this container's LXC network config\n\
         # cannot hold (its default route is net0's; the lab networks it is not on go via the host).\n\
         [Service]\n",
    );
    let machine = lab.machines.iter().find(|m| m.role == role);
    let routes = machine.map(|m| super::guest_routes::guest_routes(lab, m));
    for route in routes.into_iter().flatten() {
        if let Some(destination) = route.destination {
            out.push_str(&format!(
                "ExecStartPre=+/usr/sbin/ip route replace {destination} via {}\n",
                route.gateway
            ));
        }
    }
    out
}

/// The containers' files, staged on the host.
pub fn files(lab: &Lab) -> Result<Vec<RenderedFile>, RenderError> {
    Ok(vec![
        RenderedFile {
            path: staged_path(lab, Role::Lb, LB_ROUTES_DROPIN),
            contents: routes_dropin(lab, Role::Lb),
            mode: 0o644,
        },
        RenderedFile {
            path: staged_path(lab, Role::Vpn, VPN_ROUTES_DROPIN),
            contents: routes_dropin(lab, Role::Vpn),
            mode: 0o644,
        },
        RenderedFile {
            path: staged_path(lab, Role::Lb, LB_CONFIG),
            contents: toml_text(&format!("lab-lb check {LB_CONFIG}"), &lb_config(lab)?)?,
            mode: 0o644,
        },
        RenderedFile {
            path: staged_path(lab, Role::Vpn, VPN_CONFIG),
            contents: toml_text(&format!("lab-vpn check {VPN_CONFIG}"), &vpn_config(lab)?)?,
            mode: 0o644,
        },
        // The units as the repository ships them; they name the paths above.
        RenderedFile {
            path: staged_path(lab, Role::Lb, LB_UNIT),
            contents: include_str!("../../../systemd/lab-lb.service").to_owned(),
            mode: 0o644,
        },
        RenderedFile {
            path: staged_path(lab, Role::Vpn, VPN_UNIT),
            contents: include_str!("../../../systemd/lab-vpn.service").to_owned(),
            mode: 0o644,
        },
        RenderedFile {
            path: staged_path(lab, Role::Vpn, VPN_GUARD_UNIT),
            contents: include_str!("../../../systemd/lab-vpn-guard.service").to_owned(),
            mode: 0o644,
        },
    ])
}
