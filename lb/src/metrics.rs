//! `lab_lb_*` metrics: what the balancer is configured to do, and what it does per listener and
//! per backend server. Handles are resolved once per listener and server, so the data path only
//! touches atomics.

use crate::config::LbConfig;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    pub backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
    pub address: String,
    pub mode: String,
    pub backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub listener: String,
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub backend: String,
    pub server: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub backend: String,
    pub server: String,
    pub result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // From a health probe's milliseconds to an hour-long `kubectl logs -f`.
    Histogram::new([0.005, 0.05, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0])
}

/// Why a connection was closed without reaching a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener's `max_connections` was reached.
    Limit,
    /// The client's address had `max_connections_per_client` open.
    ClientLimit,
    /// No server of the backend was up, or every one tried failed to connect.
    NoServer,
    /// `tls-passthrough`: no ClientHello, a malformed one, or none in time.
    BadHello,
    /// A trusted upstream sent no valid PROXY header.
    BadProxyHeader,
    /// A PROXY header from a source not in `accept_proxy_from`.
    UntrustedProxyHeader,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::ClientLimit => "client_limit",
            Refusal::NoServer => "no_server",
            Refusal::BadHello => "bad_hello",
            Refusal::BadProxyHeader => "bad_proxy_header",
            Refusal::UntrustedProxyHeader => "untrusted_proxy_header",
        }
    }
}

#[derive(Clone)]
pub struct LbMetrics {
    listeners: Family<ListenerLabels, Gauge>,
    backend_servers: Family<BackendLabel, Gauge>,
    accepted: Family<ListenerLabel, Counter>,
    active: Family<ListenerLabel, Gauge>,
    refused: Family<RefusedLabels, Counter>,
    received: Family<ListenerLabel, Counter>,
    sent: Family<ListenerLabel, Counter>,
    duration: HistogramFamily<ListenerLabel>,
    server_up: Family<ServerLabels, Gauge>,
    server_active: Family<ServerLabels, Gauge>,
    server_draining: Family<ServerLabels, Gauge>,
    server_disabled: Family<ServerLabels, Gauge>,
    server_weight: Family<ServerLabels, Gauge>,
    server_connect_failures: Family<ServerLabels, Counter>,
    health_checks: Family<CheckLabels, Counter>,
    health_check_duration: HistogramFamily<ServerLabels>,
}

fn check_duration_histogram() -> Histogram {
    Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
}

/// One listener's handles.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub accepted: Counter,
    pub active: Gauge,
    pub received_bytes: Counter,
    pub sent_bytes: Counter,
    pub duration: Histogram,
    refused: Family<RefusedLabels, Counter>,
    name: String,
}

impl ListenerMetrics {
    pub fn refused(&self, why: Refusal) {
        self.refused
            .get_or_create(&RefusedLabels {
                listener: self.name.clone(),
                reason: why.as_str().to_owned(),
            })
            .inc();
    }
}

/// One backend server's handles.
#[derive(Clone)]
pub struct ServerMetrics {
    pub up: Gauge,
    pub active: Gauge,
    pub draining: Gauge,
    pub disabled: Gauge,
    pub weight: Gauge,
    pub connect_failures: Counter,
    pub checks_passed: Counter,
    pub checks_failed: Counter,
    pub check_duration: Histogram,
}

impl LbMetrics {
    /// Registers on a registry already prefixed with `lab_lb`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            listeners: Family::default(),
            backend_servers: Family::default(),
            accepted: Family::default(),
            active: Family::default(),
            refused: Family::default(),
            received: Family::default(),
            sent: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            server_up: Family::default(),
            server_active: Family::default(),
            server_draining: Family::default(),
            server_disabled: Family::default(),
            server_weight: Family::default(),
            server_connect_failures: Family::default(),
            health_checks: Family::default(),
            health_check_duration: Family::new_with_constructor(check_duration_histogram),
        };
        registry.register(
            "listener_configured",
            "Listeners in the running configuration (always 1; the labels describe each)",
            metrics.listeners.clone(),
        );
        registry.register(
            "backend_servers",
            "Servers configured in each backend",
            metrics.backend_servers.clone(),
        );
        registry.register(
            "connections_accepted",
            "Connections accepted, per listener",
            metrics.accepted.clone(),
        );
        registry.register(
            "connections_active",
            "Connections open now, per listener",
            metrics.active.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed without reaching a server, per listener and reason",
            metrics.refused.clone(),
        );
        registry.register_with_unit(
            "client_received",
            "Bytes received from clients, per listener",
            Unit::Bytes,
            metrics.received.clone(),
        );
        registry.register_with_unit(
            "client_sent",
            "Bytes sent to clients, per listener",
            Unit::Bytes,
            metrics.sent.clone(),
        );
        registry.register_with_unit(
            "connection_duration",
            "How long proxied connections lasted, per listener",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register(
            "server_up",
            "Whether a backend server takes new connections (1) or is held down (0)",
            metrics.server_up.clone(),
        );
        registry.register(
            "server_draining",
            "Whether a backend server is drained by the runtime API (1): no new connections or requests, open ones finish",
            metrics.server_draining.clone(),
        );
        registry.register(
            "server_disabled",
            "Whether a backend server is disabled by the runtime API (1): no new connections or requests, idle ones closed",
            metrics.server_disabled.clone(),
        );
        registry.register(
            "server_weight",
            "A backend server's weight now (lb.toml's, or the runtime API's)",
            metrics.server_weight.clone(),
        );
        registry.register(
            "server_active_connections",
            "Connections open now to each backend server",
            metrics.server_active.clone(),
        );
        registry.register(
            "server_connect_failures",
            "Connections to a backend server that failed or timed out",
            metrics.server_connect_failures.clone(),
        );
        registry.register(
            "health_checks",
            "Active health checks of each backend server, by result",
            metrics.health_checks.clone(),
        );
        registry.register_with_unit(
            "health_check_duration",
            "How long active health checks took",
            Unit::Seconds,
            metrics.health_check_duration.clone(),
        );
        metrics
    }

    pub fn listener(&self, name: &str) -> ListenerMetrics {
        let label = ListenerLabel {
            listener: name.to_owned(),
        };
        for reason in [
            Refusal::Limit,
            Refusal::ClientLimit,
            Refusal::NoServer,
            Refusal::BadHello,
            Refusal::BadProxyHeader,
            Refusal::UntrustedProxyHeader,
        ] {
            drop(self.refused.get_or_create(&RefusedLabels {
                listener: name.to_owned(),
                reason: reason.as_str().to_owned(),
            }));
        }
        ListenerMetrics {
            accepted: self.accepted.get_or_create(&label).clone(),
            active: self.active.get_or_create(&label).clone(),
            received_bytes: self.received.get_or_create(&label).clone(),
            sent_bytes: self.sent.get_or_create(&label).clone(),
            duration: self.duration.get_or_create(&label).clone(),
            refused: self.refused.clone(),
            name: name.to_owned(),
        }
    }

    pub fn server(&self, backend: &str, server: &str) -> ServerMetrics {
        let labels = ServerLabels {
            backend: backend.to_owned(),
            server: server.to_owned(),
        };
        let check = |result: &str| {
            self.health_checks
                .get_or_create(&CheckLabels {
                    backend: backend.to_owned(),
                    server: server.to_owned(),
                    result: result.to_owned(),
                })
                .clone()
        };
        ServerMetrics {
            up: self.server_up.get_or_create(&labels).clone(),
            active: self.server_active.get_or_create(&labels).clone(),
            draining: self.server_draining.get_or_create(&labels).clone(),
            disabled: self.server_disabled.get_or_create(&labels).clone(),
            weight: self.server_weight.get_or_create(&labels).clone(),
            connect_failures: self.server_connect_failures.get_or_create(&labels).clone(),
            checks_passed: check("passed"),
            checks_failed: check("failed"),
            check_duration: self.health_check_duration.get_or_create(&labels).clone(),
        }
    }

    /// Makes the configuration metrics describe `config`, dropping series of removed listeners,
    /// backends and servers.
    pub fn describe(&self, config: &LbConfig) {
        self.listeners.clear();
        for listener in &config.listeners {
            self.listeners
                .get_or_create(&ListenerLabels {
                    listener: listener.name.to_string(),
                    address: listener.listen.to_string(),
                    mode: listener.mode.as_str().to_owned(),
                    backend: listener.backend.to_string(),
                })
                .set(1);
        }
        self.backend_servers.clear();
        for backend in &config.backends {
            self.backend_servers
                .get_or_create(&BackendLabel {
                    backend: backend.name.to_string(),
                })
                .set(backend.servers.len() as i64);
        }
    }

    /// Drops the series of servers that `previous` had and `current` no longer has.
    pub fn forget_removed_servers(&self, previous: &LbConfig, current: &LbConfig) {
        let servers = |config: &LbConfig| -> Vec<ServerLabels> {
            config
                .backends
                .iter()
                .flat_map(|b| {
                    b.servers.iter().map(|s| ServerLabels {
                        backend: b.name.to_string(),
                        server: s.address.to_string(),
                    })
                })
                .collect()
        };
        let kept = servers(current);
        for gone in servers(previous).into_iter().filter(|s| !kept.contains(s)) {
            self.server_up.remove(&gone);
            self.server_active.remove(&gone);
            self.server_draining.remove(&gone);
            self.server_disabled.remove(&gone);
            self.server_weight.remove(&gone);
            self.server_connect_failures.remove(&gone);
            self.health_check_duration.remove(&gone);
            for result in ["passed", "failed"] {
                self.health_checks.remove(&CheckLabels {
                    backend: gone.backend.clone(),
                    server: gone.server.clone(),
                    result: result.to_owned(),
                });
            }
        }
    }
}
