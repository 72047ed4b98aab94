//! `lb.toml`: listeners, the backends they send to, and the shared daemon sections.

pub mod headers;
pub mod http;
mod validate;

pub use validate::addresses_clash;

use crate::{
    ConfigFile, DaemonConfig, Issues, LogConfig, MetricsConfig, Name, RuntimeConfig, ShutdownConfig,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// The whole of `lb.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbConfig {
    /// `[log]`.
    #[serde(default)]
    pub log: LogConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[shutdown]`.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// `[runtime]`.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// `[[listener]]`.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Listener>,
    /// `[[backend]]`.
    #[serde(default, rename = "backend")]
    pub backends: Vec<Backend>,
}

/// An address the balancer accepts connections on, and the backend they go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Names the listener in logs and metrics.
    pub name: Name,
    /// Address and port accepted on.
    pub listen: SocketAddr,
    /// What the listener does with a connection.
    pub mode: ListenerMode,
    /// Where connections go; for `tls-passthrough`, those whose SNI matches no `route`.
    pub backend: Name,
    /// `tls-passthrough` only: SNI names (exact, or `*.suffix`) and the backend for each; the
    /// first match wins.
    #[serde(default, rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<SniRoute>,
    /// Connections open at once; more are closed at once (and counted).
    #[serde(default = "Listener::default_max_connections")]
    pub max_connections: u32,
    /// Connections open at once from one client address (sources in `accept_proxy_from`
    /// excepted: they carry many clients); more are closed at once (and counted).
    #[serde(default = "Listener::default_max_connections_per_client")]
    pub max_connections_per_client: u32,
    /// A connection with no bytes either way for this long is closed. Long by default: `kubectl
    /// exec`, `logs -f` and watches sit idle for minutes.
    #[serde(with = "humantime_serde", default = "Listener::default_idle_timeout")]
    pub idle_timeout: Duration,
    /// How long a client may take to send its TLS ClientHello (`tls-passthrough`) or PROXY
    /// header, and how long an untrusted client's first bytes are awaited.
    #[serde(with = "humantime_serde", default = "Listener::default_hello_timeout")]
    pub hello_timeout: Duration,
    /// Upstream proxies (CIDRs) whose connections start with a PROXY protocol header (v1 or v2)
    /// naming the real client. A header from any other source is refused. Meant for protocols
    /// where the client speaks first (TLS, HTTP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accept_proxy_from: Vec<IpNet>,
    /// `http` and `https`: routes, certificates, forwarding and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<http::HttpListener>,
}

impl Listener {
    /// `idle_timeout` when unset.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
    /// `hello_timeout` when unset.
    pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
    /// Two descriptors a proxied connection: four listeners at the limit fit the unit's
    /// `LimitNOFILE` (65536) with room for the pools, the health checks and the metrics.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 8192;
    /// nginx's `limit_conn` examples use tens; browsers open six per host, and a node's kubelet,
    /// kube-proxy and pods behind its address a few dozen to the API.
    pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: u32 = 512;

    fn default_max_connections() -> u32 {
        Self::DEFAULT_MAX_CONNECTIONS
    }

    fn default_max_connections_per_client() -> u32 {
        Self::DEFAULT_MAX_CONNECTIONS_PER_CLIENT
    }

    fn default_idle_timeout() -> Duration {
        Self::DEFAULT_IDLE_TIMEOUT
    }

    fn default_hello_timeout() -> Duration {
        Self::DEFAULT_HELLO_TIMEOUT
    }
}

/// `[[listener.route]]`: TLS connections whose SNI matches one of `sni` go to `backend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniRoute {
    /// Exact names (`a.example`) or wildcards (`*.apps.lab`).
    pub sni: Vec<String>,
    /// Where matching connections go.
    pub backend: Name,
}

/// `mode`: what a listener does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerMode {
    /// Bytes in, bytes out (kube-apiserver and Talos API: mutual TLS end to end).
    Tcp,
    /// TLS left untouched, routed by the SNI of its ClientHello.
    TlsPassthrough,
    /// HTTP/1.1 (and cleartext h2 with prior knowledge) proxied per request.
    Http,
    /// TLS terminated here (certificates by SNI), then as `http`.
    Https,
}

impl ListenerMode {
    /// As written in `lb.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerMode::Tcp => "tcp",
            ListenerMode::TlsPassthrough => "tls-passthrough",
            ListenerMode::Http => "http",
            ListenerMode::Https => "https",
        }
    }
}

/// A named pool of servers and how connections are spread over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// What listeners and routes call it.
    pub name: Name,
    /// How connections are spread over the servers.
    #[serde(default)]
    pub balance: BalanceAlgorithm,
    /// `[[backend.server]]`.
    #[serde(default, rename = "server")]
    pub servers: Vec<Server>,
    /// How long to wait for a server to accept a connection before trying the next one.
    #[serde(with = "humantime_serde", default = "Backend::default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Further servers tried when connecting fails (each server at most once per connection).
    #[serde(default = "Backend::default_retries")]
    pub retries: u32,
    /// A server that refused or timed out a connection gets no new ones for this long.
    #[serde(with = "humantime_serde", default = "Backend::default_failure_hold")]
    pub failure_hold: Duration,
    /// Send a PROXY protocol header with the real client's address to every server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocolVersion>,
    /// Active checks; without them a server counts as up unless connecting to it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

/// `[backend.health_check]`: how servers are probed, and how many results flip their state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// What a probe does.
    pub kind: HealthCheckKind,
    /// Time between the starts of two probes of a server.
    #[serde(with = "humantime_serde", default = "HealthCheck::default_interval")]
    pub interval: Duration,
    /// How long a probe may take before it counts as failed; at most `interval`.
    #[serde(with = "humantime_serde", default = "HealthCheck::default_timeout")]
    pub timeout: Duration,
    /// Consecutive successes that bring a down server up.
    #[serde(default = "HealthCheck::default_rise")]
    pub rise: u32,
    /// Consecutive failures that take an up server down.
    #[serde(default = "HealthCheck::default_fall")]
    pub fall: u32,
    /// `http` and `https`: the path requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `http` and `https`: statuses that count as alive. The kube-apiserver answers anonymous
    /// `/readyz` with 401 when anonymous auth is off, so `[200, 401]` suits it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<u16>,
    /// `Host` header and TLS server name; the server's IP when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// `kind` of a health check: what a probe does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKind {
    /// The server accepts a TCP connection.
    Tcp,
    /// The server completes a TLS handshake (its certificate is not verified: liveness only).
    Tls,
    /// An HTTP request for `path` is answered with one of `expect_status`.
    Http,
    /// As `http`, over TLS (the certificate is not verified).
    Https,
}

impl HealthCheck {
    /// `interval` when unset.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
    /// `timeout` when unset.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    /// `rise` when unset.
    pub const DEFAULT_RISE: u32 = 2;
    /// `fall` when unset.
    pub const DEFAULT_FALL: u32 = 3;

    /// A check of `kind` with every other field at its default, as a file leaving them out
    /// reads.
    pub fn with_defaults(kind: HealthCheckKind) -> Self {
        Self {
            kind,
            interval: Self::DEFAULT_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
            rise: Self::DEFAULT_RISE,
            fall: Self::DEFAULT_FALL,
            path: None,
            expect_status: Vec::new(),
            host: None,
        }
    }

    fn default_interval() -> Duration {
        Self::DEFAULT_INTERVAL
    }

    fn default_timeout() -> Duration {
        Self::DEFAULT_TIMEOUT
    }

    fn default_rise() -> u32 {
        Self::DEFAULT_RISE
    }

    fn default_fall() -> u32 {
        Self::DEFAULT_FALL
    }

    /// The path an HTTP(S) check requests.
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }

    /// Statuses an HTTP(S) check accepts.
    pub fn expected_statuses(&self) -> Vec<u16> {
        if self.expect_status.is_empty() {
            vec![200]
        } else {
            self.expect_status.clone()
        }
    }
}

impl Backend {
    /// `connect_timeout` when unset.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// `retries` when unset.
    pub const DEFAULT_RETRIES: u32 = 2;
    /// `failure_hold` when unset.
    pub const DEFAULT_FAILURE_HOLD: Duration = Duration::from_secs(10);

    fn default_connect_timeout() -> Duration {
        Self::DEFAULT_CONNECT_TIMEOUT
    }

    fn default_retries() -> u32 {
        Self::DEFAULT_RETRIES
    }

    fn default_failure_hold() -> Duration {
        Self::DEFAULT_FAILURE_HOLD
    }
}

/// `balance`: the algorithm that picks a backend's server for each new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BalanceAlgorithm {
    /// Each server in turn (the default).
    #[default]
    RoundRobin,
    /// In turn, each server as often as its weight says.
    WeightedRoundRobin,
    /// The server with the fewest connections open, relative to its weight.
    LeastConnections,
    /// On the client address; only a failed server's clients move.
    ConsistentHash,
}

impl BalanceAlgorithm {
    /// As written in `lb.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            BalanceAlgorithm::RoundRobin => "round-robin",
            BalanceAlgorithm::WeightedRoundRobin => "weighted-round-robin",
            BalanceAlgorithm::LeastConnections => "least-connections",
            BalanceAlgorithm::ConsistentHash => "consistent-hash",
        }
    }
}

/// `[[backend.server]]`: one server of a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Where connections to it go.
    pub address: SocketAddr,
    /// Its share of connections relative to the backend's other servers; 0 sends it none.
    #[serde(default = "Server::default_weight")]
    pub weight: u32,
}

impl Server {
    /// HAProxy's limit; weights only matter relative to each other.
    pub const MAX_WEIGHT: u32 = 256;
    /// `weight` when unset.
    pub const DEFAULT_WEIGHT: u32 = 1;

    fn default_weight() -> u32 {
        Self::DEFAULT_WEIGHT
    }
}

/// `proxy_protocol`: the PROXY protocol header version sent to a backend's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocolVersion {
    /// The text header.
    V1,
    /// The binary header.
    V2,
}

impl ConfigFile for LbConfig {
    const WHAT: &'static str = "a lab-lb configuration ([metrics], [[listener]], [[backend]])";

    fn validate(&self, issues: &mut Issues) {
        self.validate_listeners(issues);
        self.validate_backends(issues);
        if let Some(socket) = &self.runtime.socket {
            if socket.file_name().is_none() {
                issues.add(
                    "runtime.socket",
                    format!(
                        "`{}` names a directory, not a socket file",
                        socket.display()
                    ),
                );
            }
        }
        if self.runtime.socket_group.is_some() && self.runtime.socket.is_none() {
            issues.add(
                "runtime.socket_group",
                "is the runtime API's group: set runtime.socket too",
            );
        }
    }

    /// Certificate, key and CA files are named relative to lb.toml, as lab-bootstrap writes
    /// them, so a config checked beside the one in place names the same files.
    fn resolve_paths(&mut self, dir: &std::path::Path) {
        let resolve = |path: &mut std::path::PathBuf| {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        };
        if let Some(socket) = &mut self.runtime.socket {
            resolve(socket);
        }
        for http in self.listeners.iter_mut().filter_map(|l| l.http.as_mut()) {
            for pair in &mut http.certs {
                resolve(&mut pair.cert);
                resolve(&mut pair.key);
            }
            for ca in http.upstreams.iter_mut().filter_map(|u| u.ca.as_mut()) {
                resolve(ca);
            }
        }
    }

    fn summary(&self) -> String {
        let servers: usize = self.backends.iter().map(|b| b.servers.len()).sum();
        format!(
            "{} listeners, {} backends, {} servers",
            self.listeners.len(),
            self.backends.len(),
            servers
        )
    }
}

impl DaemonConfig for LbConfig {
    const PROGRAM: &'static str = "lab-lb";
    const DEFAULT_PATH: &'static str = "/etc/lab-lb/lb.toml";
    const METRICS_PREFIX: &'static str = "lab_lb";

    fn log(&self) -> &LogConfig {
        &self.log
    }

    fn metrics(&self) -> &MetricsConfig {
        &self.metrics
    }

    fn shutdown(&self) -> &ShutdownConfig {
        &self.shutdown
    }

    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }
}
