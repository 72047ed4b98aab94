//! Metrics: per peer under the names the widely used WireGuard exporters use
//! (`wireguard_sent_bytes_total`, `wireguard_received_bytes_total`,
//! `wireguard_latest_handshake_seconds`, labelled `interface`, `public_key`, `allowed_ips`,
//! `friendly_name`), so existing dashboards work; and ours under `lab_vpn_*`.

use crate::config::VpnConfig;
use crate::device::{Device, DeviceMetrics};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// The gateway's own metrics (`lab_vpn_*`).
#[derive(Clone, Default)]
pub struct VpnMetrics {
    peers: Gauge,
    /// What the data path counts, handed to the device.
    pub device: DeviceMetrics,
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
        metrics.device.register(registry);
        metrics
    }

    /// Sets what follows the config (`lab_vpn_peers_configured`), at start and on reload.
    pub fn describe(&self, config: &VpnConfig) {
        self.peers.set(config.peers.len() as i64);
    }
}

/// Per-peer metrics read from the running peers at each scrape.
pub struct PeerCollector {
    /// The device whose peers are read.
    pub device: Arc<Device>,
}

impl std::fmt::Debug for PeerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerCollector({})", self.device.interface)
    }
}

/// A peer counts as active with a handshake this recent (WireGuard rekeys every 2 minutes).
const ACTIVE_WITHIN: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    interface: String,
    public_key: String,
    allowed_ips: String,
    friendly_name: String,
}

impl Collector for PeerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let peers = self.device.peers();
        let mut rows = Vec::new();
        let mut active = 0i64;
        for peer in peers.by_key.values() {
            let labels = PeerLabels {
                interface: self.device.interface.clone(),
                public_key: peer.keys.public_key.to_string(),
                allowed_ips: peer
                    .allowed_ips()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                friendly_name: peer.name.to_string(),
            };
            let (received, sent) = peer.transfer();
            let handshake = peer.last_handshake();
            if handshake
                .and_then(|h| h.elapsed().ok())
                .is_some_and(|age| age < ACTIVE_WITHIN)
            {
                active += 1;
            }
            let handshake_seconds = handshake
                .and_then(|h| h.duration_since(UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            rows.push((labels, received, sent, handshake_seconds));
        }
        let mut sent_family = encoder.encode_descriptor(
            "wireguard_sent_bytes",
            "Bytes sent to the peer",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (labels, _, sent, _) in &rows {
            ConstCounter::new(*sent).encode(sent_family.encode_family(labels)?)?;
        }
        let mut received_family = encoder.encode_descriptor(
            "wireguard_received_bytes",
            "Bytes received from the peer",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (labels, received, _, _) in &rows {
            ConstCounter::new(*received).encode(received_family.encode_family(labels)?)?;
        }
        let mut handshake_family = encoder.encode_descriptor(
            "wireguard_latest_handshake_seconds",
            "Unix time of the latest handshake with the peer (0: never)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (labels, _, _, seconds) in &rows {
            ConstGauge::new(*seconds).encode(handshake_family.encode_family(labels)?)?;
        }
        // Read from the kernel at each scrape: drops here say the daemon fell behind (the
        // case for a larger `udp_receive_buffer`).
        if let Ok(stats) = self.device.receive_stats() {
            let drops = ConstCounter::new(stats.drops);
            drops.encode(encoder.encode_descriptor(
                "lab_vpn_udp_receive_drops",
                "Datagrams the kernel dropped for a full UDP receive buffer",
                None,
                drops.metric_type(),
            )?)?;
            let buffer = ConstGauge::new(stats.buffer as i64);
            buffer.encode(encoder.encode_descriptor(
                "lab_vpn_udp_receive_buffer_bytes",
                "The UDP socket's receive buffer as the kernel counts it (twice what was asked)",
                None,
                buffer.metric_type(),
            )?)?;
        }
        let active_gauge = ConstGauge::new(active);
        active_gauge.encode(encoder.encode_descriptor(
            "lab_vpn_peers_active",
            "Peers with a handshake in the last 3 minutes",
            None,
            active_gauge.metric_type(),
        )?)?;
        Ok(())
    }
}
