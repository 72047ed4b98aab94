//! What the data path counts as it goes: packets dropped by reason, handshakes by role, cookie
//! replies. The device owns these; `crate::metrics` registers them with the rest.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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
    /// Refused while under load: by the rate limiter, past the source's own handshake rate, or
    /// past a full handshake queue.
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
    /// Every reason, for label values present from the start.
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

    /// The reason as the `reason` label of `lab_vpn_packets_dropped_total` shows it.
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

/// Which way a batch went through the data path.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// From the peers: UDP → decrypt → TUN.
    Inbound,
    /// To the peers: TUN → encrypt → UDP.
    Outbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

fn batch_histogram() -> Histogram {
    // 1 to 1024 packets: one packet a wake-up up to a thousand from one recvmmsg of GRO bundles.
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

/// What the data path counts as it goes.
#[derive(Clone)]
pub struct DeviceMetrics {
    dropped: Family<ReasonLabel, Counter>,
    handshakes: Family<RoleLabel, Counter>,
    /// Cookie replies sent to handshake messages while under load.
    pub cookie_replies: Counter,
    batch_packets: Family<DirectionLabel, Histogram, fn() -> Histogram>,
    offload: Family<KindLabel, Gauge>,
}

impl Default for DeviceMetrics {
    fn default() -> Self {
        Self {
            dropped: Family::default(),
            handshakes: Family::default(),
            cookie_replies: Counter::default(),
            batch_packets: Family::new_with_constructor(batch_histogram),
            offload: Family::default(),
        }
    }
}

impl DeviceMetrics {
    /// Registers the counters on a registry already prefixed with `lab_vpn`, every label
    /// value present from the start.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "packets_dropped",
            "Packets not passed on, by reason",
            self.dropped.clone(),
        );
        for reason in Drop::ALL {
            drop(self.dropped.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            }));
        }
        registry.register(
            "handshakes",
            "Handshakes completed, by the gateway's role in them",
            self.handshakes.clone(),
        );
        for role in [HandshakeRole::Responder, HandshakeRole::Initiator] {
            drop(self.handshakes.get_or_create(&RoleLabel {
                role: role.as_str(),
            }));
        }
        registry.register(
            "cookie_replies",
            "Cookie replies sent to handshake initiations while under load",
            self.cookie_replies.clone(),
        );
        registry.register(
            "batch_packets",
            "Packets handled per batch (one TUN read or one recvmmsg), by direction",
            self.batch_packets.clone(),
        );
        for direction in [Direction::Inbound, Direction::Outbound] {
            drop(self.batch_packets.get_or_create(&DirectionLabel {
                direction: direction.as_str(),
            }));
        }
        registry.register(
            "offload",
            "TUN offloads in effect (1) or not (0): tso (TCP segmentation), uso (UDP \
             segmentation, Linux 6.2), gro (packets of a flow coalesced before the TUN)",
            self.offload.clone(),
        );
        for kind in ["tso", "uso", "gro"] {
            drop(self.offload.get_or_create(&KindLabel { kind }));
        }
    }

    /// Sets the offload gauges to what the TUN device runs with.
    pub fn offloads(&self, offloads: crate::tun::Offloads) {
        for (kind, on) in [
            ("tso", offloads.tso),
            // Coalescing needs the virtio-net header that comes with TSO.
            ("gro", offloads.tso),
            ("uso", offloads.uso),
        ] {
            self.offload
                .get_or_create(&KindLabel { kind })
                .set(i64::from(on));
        }
    }

    /// Counts a batch of `packets` that went `direction`.
    pub fn batch(&self, direction: Direction, packets: usize) {
        self.batch_packets
            .get_or_create(&DirectionLabel {
                direction: direction.as_str(),
            })
            .observe(packets as f64);
    }

    /// Counts a packet dropped for `reason`.
    pub fn dropped(&self, reason: Drop) {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts a completed handshake.
    pub fn handshake(&self, role: HandshakeRole) {
        self.handshakes
            .get_or_create(&RoleLabel {
                role: role.as_str(),
            })
            .inc();
    }
}
