//! `lb.toml`: listeners, the backends they send to, and the shared daemon sections.

use lab_daemon::{
    ConfigFile, DaemonConfig, Issues, LogConfig, MetricsConfig, Name, ShutdownConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbConfig {
    #[serde(default)]
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
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
    pub backend: Name,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerMode {
    /// Bytes in, bytes out (kube-apiserver and Talos API: mutual TLS end to end).
    Tcp,
    /// TLS left untouched, routed by the SNI of its ClientHello.
    TlsPassthrough,
}

impl ListenerMode {
    /// As written in `lb.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerMode::Tcp => "tcp",
            ListenerMode::TlsPassthrough => "tls-passthrough",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_clashes_with_specific_address_on_same_port() {
        let any: SocketAddr = "0.0.0.0:80".parse().unwrap();
        let one: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let other_port: SocketAddr = "10.0.0.1:81".parse().unwrap();
        assert!(addresses_clash(any, one));
        assert!(!addresses_clash(one, other_port));
    }
}
