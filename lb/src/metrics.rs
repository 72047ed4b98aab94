//! `lab_lb_*` metrics describing what the balancer is configured to do.

use crate::config::LbConfig;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

#[derive(Clone, Default)]
pub struct LbMetrics {
    listeners: Family<ListenerLabels, Gauge>,
    backend_servers: Family<BackendLabel, Gauge>,
}

impl LbMetrics {
    /// Registers on a registry already prefixed with `lab_lb`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
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
        metrics
    }

    /// Makes the configuration metrics describe `config`, dropping series of removed listeners
    /// and backends.
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
}
