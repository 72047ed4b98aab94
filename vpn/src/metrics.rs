//! Metrics: per peer under the names the widely used WireGuard exporters use
//! (`wireguard_sent_bytes_total`, `wireguard_received_bytes_total`,
//! `wireguard_latest_handshake_seconds`, labelled `interface`, `public_key`, `allowed_ips`,
//! `friendly_name`), so existing dashboards work; and ours under `lab_vpn_*`.

use crate::config::VpnConfig;
use crate::device::Device;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// Why a packet was not passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Not a WireGuard message, or a malformed one.
    Invalid,
    /// A handshake initiation with a wrong MAC (not for this gateway's key).
    BadMac,
    /// From a key or session index no configured peer has.
    UnknownPeer,
    /// Failed authentication or decryption.
    Decrypt,
    /// A counter already seen or too old: a replay.
    Replay,
    /// Refused by the rate limiter while under load.
    UnderLoad,
    /// Inner source address outside the sending peer's allowed IPs.
    SourceNotAllowed,
    /// Outgoing: no peer's allowed IPs hold the destination.
    NoRoute,
    /// Outgoing: the peer's endpoint is not known yet.
    NoEndpoint,
    /// Outgoing: not an IPv4 or IPv6 packet.
    NotIp,
    /// Outgoing: encryption failed.
    Encrypt,
}

impl Drop {
    pub const ALL: [Drop; 11] = [
        Drop::Invalid,
        Drop::BadMac,
        Drop::UnknownPeer,
        Drop::Decrypt,
        Drop::Replay,
        Drop::UnderLoad,
        Drop::SourceNotAllowed,
        Drop::NoRoute,
        Drop::NoEndpoint,
        Drop::NotIp,
        Drop::Encrypt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Drop::Invalid => "invalid",
            Drop::BadMac => "bad_mac",
            Drop::UnknownPeer => "unknown_peer",
            Drop::Decrypt => "decrypt",
            Drop::Replay => "replay",
            Drop::UnderLoad => "under_load",
            Drop::SourceNotAllowed => "source_not_allowed",
            Drop::NoRoute => "no_route",
            Drop::NoEndpoint => "no_endpoint",
            Drop::NotIp => "not_ip",
            Drop::Encrypt => "encrypt",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

/// Which side of a completed handshake the gateway was.
#[derive(Debug, Clone, Copy)]
pub enum HandshakeRole {
    /// The peer initiated; the gateway answered.
    Responder,
    /// The gateway initiated (it has an endpoint for the peer); the peer answered.
    Initiator,
}

impl HandshakeRole {
    fn as_str(self) -> &'static str {
        match self {
            HandshakeRole::Responder => "responder",
            HandshakeRole::Initiator => "initiator",
        }
    }
}

/// What the data path counts as it goes.
#[derive(Clone, Default)]
pub struct DeviceMetrics {
    dropped: Family<ReasonLabel, Counter>,
    handshakes: Family<RoleLabel, Counter>,
    pub cookie_replies: Counter,
}

impl DeviceMetrics {
    pub fn dropped(&self, reason: Drop) {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    pub fn handshake(&self, role: HandshakeRole) {
        self.handshakes
            .get_or_create(&RoleLabel {
                role: role.as_str(),
            })
            .inc();
    }
}

#[derive(Clone, Default)]
pub struct VpnMetrics {
    peers: Gauge,
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
        registry.register(
            "packets_dropped",
            "Packets not passed on, by reason",
            metrics.device.dropped.clone(),
        );
        for reason in Drop::ALL {
            drop(metrics.device.dropped.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            }));
        }
        registry.register(
            "handshakes",
            "Handshakes completed, by the gateway's role in them",
            metrics.device.handshakes.clone(),
        );
        for role in [HandshakeRole::Responder, HandshakeRole::Initiator] {
            drop(metrics.device.handshakes.get_or_create(&RoleLabel {
                role: role.as_str(),
            }));
        }
        registry.register(
            "cookie_replies",
            "Cookie replies sent to handshake initiations while under load",
            metrics.device.cookie_replies.clone(),
        );
        metrics
    }

    pub fn describe(&self, config: &VpnConfig) {
        self.peers.set(config.peers.len() as i64);
    }
}

/// Per-peer metrics read from the running peers at each scrape.
pub struct PeerCollector {
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
