//! `lab_vpn_*` metrics describing the running configuration. Per-peer traffic and handshake
//! metrics use the WireGuard exporters' names and come with the data path.

use crate::config::VpnConfig;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Default)]
pub struct VpnMetrics {
    peers: Gauge,
}

impl VpnMetrics {
    /// Registers on a registry already prefixed with `lab_vpn`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "peers_configured",
            "Peers in the running configuration",
            metrics.peers.clone(),
        );
        metrics
    }

    pub fn describe(&self, config: &VpnConfig) {
        self.peers.set(config.peers.len() as i64);
    }
}
