//! One peer: its noise state (boringtun's `Tunn`), where it is, what it may send, what it moved.

use crate::config;
use crate::key::{read_key_file, KeyFileError, PrivateKey, PublicKey};
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::Tunn;
use ipnet::IpNet;
use lab_daemon::Name;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Where a peer is, and which of the gateway's addresses it talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The peer's address and port.
    pub address: SocketAddr,
    /// The local address its last authenticated packet arrived on; replies leave from it.
    pub local: Option<IpAddr>,
}

/// What fixes a peer's noise session: changing any of it starts a new one.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// The peer's public key.
    pub public_key: PublicKey,
    /// The preshared key mixed into the handshake, if the peer has one.
    pub preshared_key: Option<[u8; 32]>,
    /// Seconds between keepalives sent to the peer (`persistent_keepalive`); `None` for none.
    pub keepalive: Option<u16>,
}

/// Says whether there is a preshared key, never what it is.
impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("public_key", &self.public_key)
            .field("preshared_key", &self.preshared_key.map(|_| "<secret>"))
            .field("keepalive", &self.keepalive)
            .finish()
    }
}

/// A running peer: its session and what may change without ending it.
pub struct Peer {
    /// The peer's name in `vpn.toml`, for logs and metrics.
    pub name: Name,
    /// What its session was made from.
    pub keys: SessionKeys,
    /// Index in the upper 24 bits of this peer's session ids, to find it from a data packet.
    pub index: u32,
    tunn: Mutex<Tunn>,
    endpoint: Mutex<Option<Endpoint>>,
    allowed_ips: Mutex<Vec<IpNet>>,
    received: AtomicU64,
    sent: AtomicU64,
}

/// A peer as configured, its files read.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// The peer's name in `vpn.toml`.
    pub name: Name,
    /// What its session is made from.
    pub keys: SessionKeys,
    /// The source addresses the peer may use, and the destinations routed to it.
    pub allowed_ips: Vec<IpNet>,
    /// Where to reach the peer before it has sent anything; `None` waits for it to come.
    pub endpoint: Option<SocketAddr>,
}

impl PeerSettings {
    /// The settings of a configured peer, its preshared key file read.
    pub fn from_config(peer: &config::Peer) -> Result<Self, KeyFileError> {
        let preshared_key = match &peer.preshared_key_file {
            Some(path) => Some(read_key_file(path)?),
            None => None,
        };
        Ok(Self {
            name: peer.name.clone(),
            keys: SessionKeys {
                public_key: peer.public_key,
                preshared_key,
                keepalive: peer
                    .persistent_keepalive
                    .map(|d| u16::try_from(d.as_secs()).unwrap_or(u16::MAX)),
            },
            allowed_ips: peer.allowed_ips.clone(),
            endpoint: peer.endpoint,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a peer lock would be a bug; the state is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Peer {
    /// `mac_check` is the limiter the peer's `Tunn` verifies handshake MACs with: one that is
    /// never under load, as the device's limiter has already decided on load for every
    /// handshake message (a `Tunn` of its own would answer with cookie replies of its own).
    pub fn new(
        settings: &PeerSettings,
        own_key: &PrivateKey,
        index: u32,
        mac_check: Arc<RateLimiter>,
    ) -> Self {
        let tunn = Tunn::new(
            own_key.secret().clone(),
            boringtun::x25519::PublicKey::from(*settings.keys.public_key.as_bytes()),
            settings.keys.preshared_key,
            settings.keys.keepalive,
            index,
            Some(mac_check),
        );
        Self {
            name: settings.name.clone(),
            keys: settings.keys.clone(),
            index,
            tunn: Mutex::new(tunn),
            endpoint: Mutex::new(settings.endpoint.map(|address| Endpoint {
                address,
                local: None,
            })),
            allowed_ips: Mutex::new(settings.allowed_ips.clone()),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        }
    }

    /// The peer's noise session, locked.
    pub fn tunn(&self) -> MutexGuard<'_, Tunn> {
        lock(&self.tunn)
    }

    /// Where the peer is now: configured, or where its last authenticated packet came from.
    pub fn endpoint(&self) -> Option<Endpoint> {
        *lock(&self.endpoint)
    }

    /// Roaming: the endpoint follows the latest authenticated packet (one that decrypted, or a
    /// handshake message that the session accepted), never a message that merely parsed.
    pub fn set_endpoint(&self, endpoint: Endpoint) {
        *lock(&self.endpoint) = Some(endpoint);
    }

    /// Replaces the configured endpoint (reload, `wg set`), keeping the session.
    pub fn configure_endpoint(&self, address: Option<SocketAddr>) {
        if let Some(address) = address {
            let mut current = lock(&self.endpoint);
            if current.map(|e| e.address) != Some(address) {
                *current = Some(Endpoint {
                    address,
                    local: None,
                });
            }
        }
    }

    /// The peer's allowed IPs now.
    pub fn allowed_ips(&self) -> Vec<IpNet> {
        lock(&self.allowed_ips).clone()
    }

    /// Replaces the allowed IPs, keeping the session; a new peer set routes by them.
    pub fn set_allowed_ips(&self, allowed: Vec<IpNet>) {
        *lock(&self.allowed_ips) = allowed;
    }

    /// Adds `bytes` of WireGuard datagrams received from the peer.
    pub fn count_received(&self, bytes: usize) {
        self.received.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Adds `bytes` of WireGuard datagrams sent to the peer.
    pub fn count_sent(&self, bytes: usize) {
        self.sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// WireGuard bytes received from and sent to this peer (as `wg show` reports transfer).
    pub fn transfer(&self) -> (u64, u64) {
        (
            self.received.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
        )
    }

    /// Wall-clock time of the last completed handshake, as the UAPI defines it (not the time
    /// elapsed since, which boringtun's own device reports).
    pub fn last_handshake(&self) -> Option<SystemTime> {
        let since: Option<Duration> = self.tunn().stats().0;
        since.and_then(|d| SystemTime::now().checked_sub(d))
    }
}
