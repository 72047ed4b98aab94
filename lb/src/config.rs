//! `lb.toml`: listeners, the backends they send to, and the shared daemon sections.

use ipnet::IpNet;
use lab_daemon::{
    ConfigFile, DaemonConfig, Issues, LogConfig, MetricsConfig, Name, RuntimeConfig, ShutdownConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbConfig {
    #[serde(default)]
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Listener>,
    #[serde(default, rename = "backend")]
    pub backends: Vec<Backend>,
}

/// An address the balancer accepts connections on, and the backend they go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: Name,
    pub listen: SocketAddr,
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
    pub http: Option<crate::http_config::HttpListener>,
}

impl Listener {
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
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

    /// The limits the accept loop enforces.
    pub fn admission_limits(&self) -> lab_daemon::admission::Limits {
        lab_daemon::admission::Limits {
            total: self.max_connections as usize,
            per_client: self.max_connections_per_client as usize,
            exempt: self.accept_proxy_from.clone(),
        }
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
    pub sni: Vec<String>,
    pub backend: Name,
}

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
    pub name: Name,
    #[serde(default)]
    pub balance: Balance,
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
    pub proxy_protocol: Option<crate::l4::proxy_protocol::Version>,
    /// Active checks; without them a server counts as up unless connecting to it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

/// `[backend.health_check]`: how servers are probed, and how many results flip their state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    #[serde(with = "humantime_serde", default = "HealthCheck::default_interval")]
    pub interval: Duration,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKind {
    /// The server accepts a TCP connection.
    Tcp,
    /// The server completes a TLS handshake (its certificate is not verified: liveness only).
    Tls,
    Http,
    Https,
}

impl HealthCheck {
    fn default_interval() -> Duration {
        Duration::from_secs(2)
    }

    fn default_timeout() -> Duration {
        Duration::from_secs(1)
    }

    fn default_rise() -> u32 {
        2
    }

    fn default_fall() -> u32 {
        3
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
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_RETRIES: u32 = 2;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    #[default]
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    /// On the client address; only a failed server's clients move.
    ConsistentHash,
}

impl Balance {
    /// As written in `lb.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::WeightedRoundRobin => "weighted-round-robin",
            Balance::LeastConnections => "least-connections",
            Balance::ConsistentHash => "consistent-hash",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub address: SocketAddr,
    #[serde(default = "Server::default_weight")]
    pub weight: u32,
}

impl Server {
    /// HAProxy's limit; weights only matter relative to each other.
    pub const MAX_WEIGHT: u32 = 256;

    fn default_weight() -> u32 {
        1
    }
}

impl ConfigFile for LbConfig {
    const WHAT: &'static str = "a lab-lb configuration ([metrics], [[listener]], [[backend]])";

    fn validate(&self, issues: &mut Issues) {
        self.validate_listeners(issues);
        self.validate_backends(issues);
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

/// Two sockets cannot both listen on these addresses: same port, and the same IP or a wildcard
/// that covers the other (`0.0.0.0` and `[::]` take every address on Linux by default).
pub fn addresses_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl LbConfig {
    fn validate_listeners(&self, issues: &mut Issues) {
        if self.listeners.is_empty() {
            issues.add(
                "listener",
                "no [[listener]] is configured; the balancer would serve nothing",
            );
        }
        let backends: HashSet<&Name> = self.backends.iter().map(|b| &b.name).collect();
        for (i, listener) in self.listeners.iter().enumerate() {
            let key = format!("listener[{i}]");
            if let Some(first) = self.listeners[..i]
                .iter()
                .position(|l| l.name == listener.name)
            {
                issues.add(
                    format!("{key}.name"),
                    format!(
                        "listener `{}` is already defined as listener[{first}]",
                        listener.name
                    ),
                );
            }
            if let Some(first) = self.listeners[..i]
                .iter()
                .position(|l| addresses_clash(l.listen, listener.listen))
            {
                issues.add(
                    format!("{key}.listen"),
                    format!(
                        "{} is already taken by listener `{}` ({})",
                        listener.listen, self.listeners[first].name, self.listeners[first].listen
                    ),
                );
            }
            if addresses_clash(self.metrics.listen, listener.listen) {
                issues.add(
                    format!("{key}.listen"),
                    format!(
                        "{} is already taken by [metrics] listen ({})",
                        listener.listen, self.metrics.listen
                    ),
                );
            }
            if !backends.contains(&listener.backend) {
                issues.add(
                    format!("{key}.backend"),
                    format!("no [[backend]] is named `{}`", listener.backend),
                );
            }
            if listener.max_connections == 0 {
                issues.add(
                    format!("{key}.max_connections"),
                    "0 would refuse every connection",
                );
            }
            if listener.max_connections_per_client == 0 {
                issues.add(
                    format!("{key}.max_connections_per_client"),
                    "0 would refuse every connection",
                );
            }
            if !listener.routes.is_empty() && listener.mode != ListenerMode::TlsPassthrough {
                issues.add(
                    format!("{key}.route"),
                    format!(
                        "routes by SNI need mode = \"tls-passthrough\", not \"{}\"",
                        listener.mode.as_str()
                    ),
                );
            }
            let l7 = matches!(listener.mode, ListenerMode::Http | ListenerMode::Https);
            match (&listener.http, l7) {
                (Some(_), false) => issues.add(
                    format!("{key}.http"),
                    format!(
                        "[listener.http] needs mode = \"http\" or \"https\", not \"{}\"",
                        listener.mode.as_str()
                    ),
                ),
                (http, true) => crate::http_config::validate(
                    &http.clone().unwrap_or_default(),
                    listener.mode == ListenerMode::Https,
                    &backends,
                    &format!("{key}.http"),
                    issues,
                ),
                (None, false) => {}
            }
            for (j, route) in listener.routes.iter().enumerate() {
                let route_key = format!("{key}.route[{j}]");
                if !backends.contains(&route.backend) {
                    issues.add(
                        format!("{route_key}.backend"),
                        format!("no [[backend]] is named `{}`", route.backend),
                    );
                }
                if route.sni.is_empty() {
                    issues.add(
                        format!("{route_key}.sni"),
                        "a route needs at least one name",
                    );
                }
                for (k, name) in route.sni.iter().enumerate() {
                    if let Err(problem) = crate::l4::sni::SniPattern::parse(name) {
                        issues.add(format!("{route_key}.sni[{k}]"), problem);
                    }
                }
            }
        }
    }

    fn validate_backends(&self, issues: &mut Issues) {
        let mut seen: HashMap<&Name, usize> = HashMap::new();
        for (i, backend) in self.backends.iter().enumerate() {
            let key = format!("backend[{i}]");
            if let Some(first) = seen.insert(&backend.name, i) {
                issues.add(
                    format!("{key}.name"),
                    format!(
                        "backend `{}` is already defined as backend[{first}]",
                        backend.name
                    ),
                );
            }
            if backend.servers.is_empty() {
                issues.add(
                    key.clone(),
                    format!("backend `{}` has no [[backend.server]]", backend.name),
                );
            }
            for (j, server) in backend.servers.iter().enumerate() {
                let server_key = format!("{key}.server[{j}]");
                if backend.servers[..j]
                    .iter()
                    .any(|s| s.address == server.address)
                {
                    issues.add(
                        format!("{server_key}.address"),
                        format!(
                            "{} is listed twice in backend `{}`",
                            server.address, backend.name
                        ),
                    );
                }
                if server.weight > Server::MAX_WEIGHT {
                    issues.add(
                        format!("{server_key}.weight"),
                        format!(
                            "weight {} is above the maximum of {}",
                            server.weight,
                            Server::MAX_WEIGHT
                        ),
                    );
                }
            }
            if let Some(check) = &backend.health_check {
                validate_health_check(check, &format!("{key}.health_check"), issues);
            }
            if !backend.servers.is_empty() && backend.servers.iter().all(|s| s.weight == 0) {
                issues.add(
                    key,
                    format!(
                        "every server of backend `{}` has weight 0, so none would get traffic",
                        backend.name
                    ),
                );
            }
        }
    }
}

fn validate_health_check(check: &HealthCheck, key: &str, issues: &mut Issues) {
    for (field, value) in [("rise", check.rise), ("fall", check.fall)] {
        if value == 0 {
            issues.add(format!("{key}.{field}"), "must be at least 1");
        }
    }
    if check.interval.is_zero() {
        issues.add(format!("{key}.interval"), "must be longer than 0s");
    }
    if check.timeout.is_zero() || check.timeout > check.interval {
        issues.add(
            format!("{key}.timeout"),
            format!(
                "must be longer than 0s and at most the interval ({:?})",
                check.interval
            ),
        );
    }
    let http = matches!(check.kind, HealthCheckKind::Http | HealthCheckKind::Https);
    if !http && (check.path.is_some() || !check.expect_status.is_empty()) {
        issues.add(
            key.to_owned(),
            "`path` and `expect_status` apply to kind = \"http\" or \"https\" only",
        );
    }
    if let Some(path) = &check.path {
        if !path.starts_with('/')
            || path
                .chars()
                .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            issues.add(
                format!("{key}.path"),
                format!("`{path}` is not a request path like `/readyz`"),
            );
        }
    }
    for (i, status) in check.expect_status.iter().enumerate() {
        if !(100..=599).contains(status) {
            issues.add(
                format!("{key}.expect_status[{i}]"),
                format!("{status} is not an HTTP status"),
            );
        }
    }
    if let Some(host) = &check.host {
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            issues.add(
                format!("{key}.host"),
                format!("`{host}` is not a host name"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn wildcard_clashes_with_specific_address_on_same_port() {
        let any: SocketAddr = "0.0.0.0:80".parse().unwrap();
        let one: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let other_port: SocketAddr = "10.0.0.1:81".parse().unwrap();
        assert!(addresses_clash(any, one));
        assert!(!addresses_clash(one, other_port));
    }

    #[test]
    fn a_route_may_not_change_the_framing_or_hop_by_hop_fields() {
        let config = |changes: &str| {
            format!(
                "[metrics]\nlisten = \"127.0.0.1:9100\"\n[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"\nmode = \"http\"\n\
                 backend = \"b\"\n[listener.http]\n[[listener.http.route]]\npath = \"/\"\nbackend = \"b\"\n\
                 {changes}\n[[backend]]\nname = \"b\"\nserver = [{{ address = \"127.0.0.1:9\" }}]\n"
            )
        };
        let load = |text: &str| lab_daemon::config::parse::<LbConfig>(Path::new("lb.toml"), text);
        if let Err(e) = load(&config("remove_request_headers = [\"x-gone\"]")) {
            panic!("{e}");
        }
        for changes in [
            "remove_request_headers = [\"x-a\", \"Content-Length\"]",
            "add_request_headers = { transfer-encoding = \"chunked\" }",
            "add_response_headers = { content-length = \"0\" }",
            "remove_response_headers = [\"connection\"]",
            "add_request_headers = { upgrade = \"h2c\" }",
        ] {
            let refused = load(&config(changes)).err().map(|e| e.to_string());
            assert!(
                refused
                    .as_deref()
                    .is_some_and(|e| e.contains("is the proxy's to write")),
                "{changes}: {refused:?}"
            );
        }
    }
}
