//! `lb.toml` and `vpn.toml` for the containers, built as lab-schema's config types (the ones
//! lab-lb and lab-vpn load) and serialised, so the three programs can never disagree about a
//! field. They are staged on the host under [`STAGING_DIR`]`/<machine>/` mirroring the
//! container's own paths.

use super::{role_address, RenderError, RenderedFile};
use crate::model::{Lab, LbRoute, Machine, NetworkId, Role};
use ipnet::{IpNet, Ipv4Net};
use lab_daemon::{LogConfig, MetricsConfig, Name, RuntimeConfig, ShutdownConfig};
use lab_schema::lb::http::{CertPair, HttpListener, HttpRoute};
use lab_schema::lb::{Backend, LbConfig, Listener, ListenerMode, Server};
use lab_schema::vpn::{Interface, Peer, VpnConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Where container files wait on the host before they are pushed in.
pub const STAGING_DIR: &str = "/var/lib/lab/containers";
/// lab-lb's config in the lb container.
pub const LB_CONFIG: &str = "/etc/lab-lb/lb.toml";
/// Where an `https` route's certificates and keys go in the lb container; lb.toml names them
/// relative to its own directory, so they resolve wherever the config is checked from.
pub const LB_CERT_DIR: &str = "/etc/lab-lb/certs";
/// lab-vpn's config in the vpn container.
pub const VPN_CONFIG: &str = "/etc/lab-vpn/vpn.toml";
/// The peers `lab-vpn peer add` adds in the vpn container: vpn.toml names it (relative to
/// itself), apply never writes it, so they survive apply; `plan` reads and lists them.
pub const VPN_PEERS_FILE: &str = "/etc/lab-vpn/peers.toml";
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
    staged_in(&machine, path)
}

/// The staged host path of `path` inside container `container` (a pair's second included).
pub fn staged_in(container: &str, path: &str) -> PathBuf {
    PathBuf::from(format!("{STAGING_DIR}/{container}{path}"))
}

fn backend(route: &LbRoute, name: Name, targets: Vec<&Machine>, port: u16) -> Backend {
    let servers = targets
        .into_iter()
        .filter_map(|m| m.address_on(NetworkId::Net2))
        .map(|address| Server {
            address: SocketAddr::new(IpAddr::V4(address), port),
            weight: Server::DEFAULT_WEIGHT,
        })
        .collect();
    Backend {
        name,
        balance: route.balance,
        servers,
        connect_timeout: Backend::DEFAULT_CONNECT_TIMEOUT,
        retries: Backend::DEFAULT_RETRIES,
        failure_hold: Backend::DEFAULT_FAILURE_HOLD,
        proxy_protocol: None,
        health_check: route.health_check.clone(),
    }
}

/// The route's backend, then one per `http` rule (those whose name is no [`Name`] were refused
/// by the model's checks, and are left out).
fn backends_of(route: &LbRoute, lab: &Lab) -> Vec<Backend> {
    let mut out = vec![backend(
        route,
        route.name.clone(),
        route.targets(lab),
        route.target_port(),
    )];
    for (j, rule) in route.http.iter().enumerate() {
        if let Ok(name) = route.rule_backend(j).parse() {
            let port = rule.target_port.unwrap_or(route.target_port());
            out.push(backend(route, name, rule.targets(lab), port));
        }
    }
    out
}

/// Certificate pair `k` of `route` in the lb container: its certificate's and key's paths.
pub fn lb_cert_paths(route: &LbRoute, k: usize) -> (String, String) {
    let base = format!("{LB_CERT_DIR}/{}-{k}", route.name);
    (format!("{base}.crt"), format!("{base}.key"))
}

/// `path` in a container as the daemon config at `config` there names it: relative to the
/// config's directory, so a config checked beside the one in place (or run from the local
/// lab's directory) finds what it names.
pub fn relative_to(config: &str, path: &str) -> PathBuf {
    let dir = Path::new(config).parent().unwrap_or(Path::new("/"));
    Path::new(path)
        .strip_prefix(dir)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| PathBuf::from(path))
}

/// `[listener.http]` of an `http` or `https` route. A route of another mode with certificates
/// or rules gets one too, for lb.toml's own rules to refuse with their words.
fn http_listener(route: &LbRoute) -> Option<HttpListener> {
    let l7 = matches!(route.mode, ListenerMode::Http | ListenerMode::Https);
    if !l7 && route.certs.is_empty() && route.http.is_empty() {
        return None;
    }
    let routes = route
        .http
        .iter()
        .enumerate()
        .map(|(j, rule)| HttpRoute {
            host: rule.host.clone(),
            path: rule.path.clone(),
            backend: route.rule_backend(j).parse().ok(),
            ..HttpRoute::default()
        })
        .collect();
    let certs = route
        .certs
        .iter()
        .enumerate()
        .map(|(k, pair)| {
            let (cert, key) = lb_cert_paths(route, k);
            CertPair {
                cert: relative_to(LB_CONFIG, &cert),
                key: relative_to(LB_CONFIG, &key),
                names: pair.names.clone(),
            }
        })
        .collect();
    Some(HttpListener {
        routes,
        certs,
        ..HttpListener::default()
    })
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
        http: http_listener(route),
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
        backends.extend(backends_of(&route, lab));
    }
    Ok(LbConfig {
        log: LogConfig::default(),
        metrics: MetricsConfig {
            listen: SocketAddr::new(IpAddr::V4(net2), LB_METRICS_PORT),
        },
        shutdown: ShutdownConfig::default(),
        // `lab-lb ctl` in the container drains a control plane before its upgrade.
        runtime: RuntimeConfig {
            socket: Some(RuntimeConfig::LB_SOCKET.into()),
            ..RuntimeConfig::default()
        },
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
        peers_file: Some(relative_to(VPN_CONFIG, VPN_PEERS_FILE)),
        log: LogConfig::default(),
        metrics: MetricsConfig {
            listen: SocketAddr::new(IpAddr::V4(net1), VPN_METRICS_PORT),
        },
        shutdown: ShutdownConfig::default(),
        runtime: RuntimeConfig::default(),
        interface: Interface {
            name: "wg0".to_owned(),
            private_key_file: relative_to(VPN_CONFIG, VPN_PRIVATE_KEY),
            listen_port: VPN_PORT,
            address: vec![IpNet::V4(tunnel)],
            mtu: Interface::DEFAULT_MTU,
            reach: vec![
                IpNet::V4(lab.networks.net1.cidr),
                IpNet::V4(lab.networks.net2.cidr),
            ],
            // The host routes the tunnel back to the gateway, so peers keep their addresses.
            masquerade: false,
            offload: Interface::DEFAULT_OFFLOAD,
            udp_receive_buffer: lab.vpn.udp_receive_buffer,
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

/// lab-lb's config in container `instance` of the lb ([`Lab::instances`]): listening on the
/// published addresses (lab-lb binds with `IP_FREEBIND`, so a pair's standby listens before
/// keepalived gives it the addresses), its metrics on the container's own net2 address, where
/// keepalived's check and Prometheus find each container. Without a pair, [`lb_config`].
pub fn lb_instance_config(lab: &Lab, instance: &Machine) -> Result<LbConfig, RenderError> {
    let mut config = lb_config(lab)?;
    if let Some(own) = instance.address_on(NetworkId::Net2) {
        config.metrics.listen.set_ip(IpAddr::V4(own));
    }
    Ok(config)
}

/// lab-vpn's config in container `instance` of the vpn: as [`lb_instance_config`], metrics on
/// the container's own net1 address. Both containers of a pair have the gateway's key and
/// answer from the address a datagram came to, the published one.
pub fn vpn_instance_config(lab: &Lab, instance: &Machine) -> Result<VpnConfig, RenderError> {
    let mut config = vpn_config(lab)?;
    if let Some(own) = instance.address_on(NetworkId::Net1) {
        config.metrics.listen.set_ip(IpAddr::V4(own));
    }
    Ok(config)
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

/// The certificates and keys of the lab's `https` routes, as they go into the lb container:
/// path there, contents read from the files lab.toml names, and mode (keys 0600).
pub fn lb_cert_files(lab: &Lab) -> Result<Vec<(String, String, u32)>, RenderError> {
    let mut out = Vec::new();
    for route in lab.lb_routes() {
        if route.mode != ListenerMode::Https {
            continue;
        }
        for (k, pair) in route.certs.iter().enumerate() {
            let (cert, key) = lb_cert_paths(&route, k);
            for (target, source, mode) in [(cert, &pair.cert, 0o644), (key, &pair.key, 0o600)] {
                let contents =
                    std::fs::read_to_string(source).map_err(|e| RenderError::RouteFile {
                        path: source.clone(),
                        reason: e.to_string(),
                    })?;
                out.push((target, contents, mode));
            }
        }
    }
    Ok(out)
}

/// The containers' files, staged on the host: each of a pair's containers gets its own.
pub fn files(lab: &Lab) -> Result<Vec<RenderedFile>, RenderError> {
    let lbs = lab.instances(Role::Lb);
    let vpns = lab.instances(Role::Vpn);
    let file = |container: &Machine, path: &str, contents: String, mode: u32| RenderedFile {
        path: staged_in(container.name.as_str(), path),
        contents,
        mode,
    };
    let mut out = Vec::new();
    let certs = lb_cert_files(lab)?;
    for lb in &lbs {
        for (target, contents, mode) in &certs {
            out.push(file(lb, target, contents.clone(), *mode));
        }
    }
    for lb in &lbs {
        out.push(file(
            lb,
            LB_ROUTES_DROPIN,
            routes_dropin(lab, Role::Lb),
            0o644,
        ));
    }
    for vpn in &vpns {
        out.push(file(
            vpn,
            VPN_ROUTES_DROPIN,
            routes_dropin(lab, Role::Vpn),
            0o644,
        ));
    }
    for lb in &lbs {
        let config = lb_instance_config(lab, lb)?;
        let text = toml_text(&format!("lab-lb check {LB_CONFIG}"), &config)?;
        out.push(file(lb, LB_CONFIG, text, 0o644));
    }
    for vpn in &vpns {
        let config = vpn_instance_config(lab, vpn)?;
        let text = toml_text(&format!("lab-vpn check {VPN_CONFIG}"), &config)?;
        out.push(file(vpn, VPN_CONFIG, text, 0o644));
    }
    // The units as the repository ships them; they name the paths above.
    for lb in &lbs {
        let unit = include_str!("../../../systemd/lab-lb.service");
        out.push(file(lb, LB_UNIT, unit.to_owned(), 0o644));
    }
    for vpn in &vpns {
        let unit = include_str!("../../../systemd/lab-vpn.service");
        out.push(file(vpn, VPN_UNIT, unit.to_owned(), 0o644));
    }
    for vpn in &vpns {
        let unit = include_str!("../../../systemd/lab-vpn-guard.service");
        out.push(file(vpn, VPN_GUARD_UNIT, unit.to_owned(), 0o644));
    }
    Ok(out)
}
