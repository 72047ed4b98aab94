//! `lb.toml` and `vpn.toml` for the containers, built as lab_lb's and lab_vpn's own config types
//! and serialised, so the three programs can never disagree about a field. They are staged on
//! the host under [`STAGING_DIR`]`/<machine>/` mirroring the container's own paths.

use super::{role_address, RenderError, RenderedFile};
use crate::model::{Lab, NetworkId, Role};
use ipnet::{IpNet, Ipv4Net};
use lab_daemon::{LogConfig, MetricsConfig, Name, RuntimeConfig, ShutdownConfig};
use lab_lb::config::{
    Backend, Balance, HealthCheck, HealthCheckKind, LbConfig, Listener, ListenerMode, Server,
};
use lab_vpn::config::{Interface, VpnConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where container files wait on the host before they are pushed in.
pub const STAGING_DIR: &str = "/var/lib/lab/containers";
pub const LB_CONFIG: &str = "/etc/lab-lb/lb.toml";
pub const VPN_CONFIG: &str = "/etc/lab-vpn/vpn.toml";
pub const VPN_PRIVATE_KEY: &str = "/etc/lab-vpn/private.key";
pub const VPN_PORT: u16 = 51820;
/// The metrics ports of configs/lb.toml and configs/vpn.toml (9586: the WireGuard exporters').
pub const LB_METRICS_PORT: u16 = 8404;
pub const VPN_METRICS_PORT: u16 = 9586;

fn name(s: &str) -> Result<Name, RenderError> {
    s.parse().map_err(|e| RenderError::Name {
        name: s.to_owned(),
        reason: format!("{e}"),
    })
}

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

/// The net2 addresses of every machine with `role`, each with `port`.
fn servers(lab: &Lab, role: Role, port: u16) -> Vec<Server> {
    lab.machines
        .iter()
        .filter(|m| m.role == role)
        .filter_map(|m| m.address_on(NetworkId::Net2))
        .map(|address| Server {
            address: SocketAddr::new(IpAddr::V4(address), port),
            weight: 1,
        })
        .collect()
}

fn health(kind: HealthCheckKind, path: Option<&str>, expect_status: &[u16]) -> HealthCheck {
    HealthCheck {
        kind,
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
        rise: 2,
        fall: 3,
        path: path.map(str::to_owned),
        expect_status: expect_status.to_vec(),
        host: None,
    }
}

fn backend(
    name_: &str,
    balance: Balance,
    servers: Vec<Server>,
    check: HealthCheck,
) -> Result<Backend, RenderError> {
    Ok(Backend {
        name: name(name_)?,
        balance,
        servers,
        connect_timeout: Backend::DEFAULT_CONNECT_TIMEOUT,
        retries: Backend::DEFAULT_RETRIES,
        failure_hold: Backend::DEFAULT_FAILURE_HOLD,
        proxy_protocol: None,
        health_check: Some(check),
    })
}

fn listener(
    name_: &str,
    address: Ipv4Addr,
    port: u16,
    mode: ListenerMode,
    backend: &str,
) -> Result<Listener, RenderError> {
    Ok(Listener {
        name: name(name_)?,
        listen: SocketAddr::new(IpAddr::V4(address), port),
        mode,
        backend: name(backend)?,
        routes: Vec::new(),
        max_connections: None,
        idle_timeout: Listener::DEFAULT_IDLE_TIMEOUT,
        hello_timeout: Listener::DEFAULT_HELLO_TIMEOUT,
        accept_proxy_from: Vec::new(),
    })
}

/// The balancer: the API (6443) and Talos (50000) on its net2 address to the control planes,
/// ingress (80, 443) on its net0 address to the workers, all over net2.
pub fn lb_config(lab: &Lab) -> Result<LbConfig, RenderError> {
    let net0 = role_address(lab, Role::Lb, NetworkId::Net0)?;
    let net2 = role_address(lab, Role::Lb, NetworkId::Net2)?;
    let mut listeners = vec![
        listener(
            "kube-apiserver",
            net2,
            6443,
            ListenerMode::Tcp,
            "control-plane-apiserver",
        )?,
        listener(
            "talos-api",
            net2,
            50000,
            ListenerMode::Tcp,
            "control-plane-talos",
        )?,
    ];
    let mut backends = vec![
        backend(
            "control-plane-apiserver",
            Balance::LeastConnections,
            servers(lab, Role::ControlPlane, 6443),
            // Anonymous /readyz gets 401 when anonymous auth is off: still a live apiserver.
            health(HealthCheckKind::Https, Some("/readyz"), &[200, 401]),
        )?,
        backend(
            "control-plane-talos",
            Balance::LeastConnections,
            servers(lab, Role::ControlPlane, 50000),
            health(HealthCheckKind::Tls, None, &[]),
        )?,
    ];
    // A lab without workers publishes no ingress (a backend without servers is refused).
    let http = servers(lab, Role::Worker, 80);
    if !http.is_empty() {
        listeners.push(listener(
            "ingress-http",
            net0,
            80,
            ListenerMode::Tcp,
            "workers-http",
        )?);
        listeners.push(listener(
            "ingress-https",
            net0,
            443,
            ListenerMode::TlsPassthrough,
            "workers-https",
        )?);
        backends.push(backend(
            "workers-http",
            Balance::RoundRobin,
            http,
            health(HealthCheckKind::Tcp, None, &[]),
        )?);
        backends.push(backend(
            "workers-https",
            Balance::ConsistentHash,
            servers(lab, Role::Worker, 443),
            health(HealthCheckKind::Tcp, None, &[]),
        )?);
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

/// The gateway: the tunnel's first address, reaching net1 and net2; no peers until
/// `lab-vpn peer add` (lab.toml has none).
pub fn vpn_config(lab: &Lab) -> Result<VpnConfig, RenderError> {
    let net0 = role_address(lab, Role::Vpn, NetworkId::Net0)?;
    let net1 = role_address(lab, Role::Vpn, NetworkId::Net1)?;
    let network = lab.vpn.tunnel;
    let gateway = network.hosts().next().unwrap_or(network.network());
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
            // The host serves no DNS and peers have no internet: none is handed out.
            dns: Vec::new(),
            public_endpoint: Some(SocketAddr::new(IpAddr::V4(net0), VPN_PORT).to_string()),
        },
        peers: Vec::new(),
    })
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

/// The containers' files, staged on the host.
pub fn files(lab: &Lab) -> Result<Vec<RenderedFile>, RenderError> {
    Ok(vec![
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
    ])
}
