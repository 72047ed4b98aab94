//! The device: the logic between the TUN device ([`crate::tun`]) and the UDP socket
//! ([`crate::conn`]), laid out as wireguard-go lays out its `device/`: batches of packets flow
//! outbound (TUN → encrypt → UDP), inbound (UDP → decrypt → TUN), and timers keep sessions alive.

mod counters;
mod handshakes;
mod inbound;
mod outbound;
pub mod peer;
pub mod peers;
mod source_limit;
mod timers;

pub use counters::{DeviceMetrics, Direction, Drop, HandshakeRole};
/// How the inbound path reads boringtun's answers, for the fuzz targets.
#[doc(hidden)]
pub use inbound::{drop_reason, feed_session, Answer, COOKIE_REPLY};
pub use peer::{Endpoint, Peer, PeerSettings, SessionKeys};
pub use peers::PeerSet;

use crate::conn::{Conn, Datagrams};
use crate::key::PrivateKey;

use crate::tun::Tun;
use arc_swap::ArcSwap;
use boringtun::noise::rate_limiter::RateLimiter;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Handshake messages (initiations and responses) per second, over all peers, before cookie
/// replies are required (the value wireguard-go and boringtun use).
const HANDSHAKE_RATE_LIMIT: u64 = 100;

/// The gateway's one WireGuard device: its key, its peers, its UDP socket and TUN device.
pub struct Device {
    /// The TUN interface's name (`wg0`), for logs, metrics and the control socket.
    pub interface: String,
    key: PrivateKey,
    public: boringtun::x25519::PublicKey,
    /// Decides, for every handshake message before any peer sees it, whether the gateway is
    /// under load (a cookie reply instead of an answer).
    limiter: Arc<RateLimiter>,
    /// Verifies MACs inside the peers' sessions, never under load: the load decision is
    /// `limiter`'s alone.
    mac_check: Arc<RateLimiter>,
    peers: ArcSwap<PeerSet>,
    /// What `peers` was built from; changes go through it so they are never lost.
    settings: std::sync::Mutex<Vec<PeerSettings>>,
    conn: Conn,
    tun: Tun,
    /// What the data path counts.
    pub metrics: DeviceMetrics,
}

impl Device {
    /// A device with no peers yet (see [`set_peers`](Self::set_peers)); nothing runs until
    /// [`spawn`](Self::spawn).
    pub fn new(
        interface: String,
        key: PrivateKey,
        conn: Conn,
        tun: Tun,
        metrics: DeviceMetrics,
    ) -> Self {
        let public = boringtun::x25519::PublicKey::from(key.secret());
        metrics.offloads(tun.offloads);
        Self {
            interface,
            limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            mac_check: Arc::new(RateLimiter::new(&public, u64::MAX)),
            key,
            public,
            peers: ArcSwap::from_pointee(PeerSet::default()),
            settings: std::sync::Mutex::new(Vec::new()),
            conn,
            tun,
            metrics,
        }
    }

    /// The gateway's public key, as peers configure it.
    pub fn public_key(&self) -> crate::key::PublicKey {
        self.key.public_key()
    }

    /// The UDP port the socket is bound to; 0 if the socket cannot say.
    pub fn listen_port(&self) -> u16 {
        self.conn.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The peer set now; a change of peers builds a new set, so this one stays whole while held.
    pub fn peers(&self) -> Arc<PeerSet> {
        self.peers.load_full()
    }

    /// Makes the peers those of `wanted`; unchanged peers keep their sessions.
    pub fn set_peers(&self, wanted: &[PeerSettings]) {
        let mut settings = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.peers.load();
        let next = PeerSet::build(wanted, &previous, &self.key, &self.mac_check);
        self.peers.store(Arc::new(next));
        *settings = wanted.to_vec();
    }

    /// The peers as last set (by the config or the control socket), in order.
    pub fn peer_settings(&self) -> Vec<PeerSettings> {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes the peers with `edit` applied to their current settings, atomically with respect
    /// to other changes.
    pub fn edit_peers<E>(
        &self,
        edit: impl FnOnce(&mut Vec<PeerSettings>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut settings = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        let mut wanted = settings.clone();
        edit(&mut wanted)?;
        let previous = self.peers.load();
        let next = PeerSet::build(&wanted, &previous, &self.key, &self.mac_check);
        self.peers.store(Arc::new(next));
        *settings = wanted;
        Ok(())
    }

    /// The private key, for the control socket's `get` (served to root only).
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// Starts the inbound, handshake, outbound and timer loops, named for the logs; they run until the
    /// handles are aborted, unless one fails for good (the TUN device went away) or panics:
    /// the owner must watch the handles, since the device is no use without all of them.
    pub fn spawn(self: &Arc<Self>) -> Vec<(&'static str, JoinHandle<()>)> {
        let (queue, handshake_messages) = handshakes::queue();
        vec![
            ("inbound", tokio::spawn(inbound::run(self.clone(), queue))),
            (
                "handshakes",
                tokio::spawn(handshakes::run(self.clone(), handshake_messages)),
            ),
            ("outbound", tokio::spawn(outbound::run(self.clone()))),
            ("timers", tokio::spawn(timers::run(self.clone()))),
        ]
    }

    pub(super) async fn send_all(&self, outgoing: &mut Datagrams) {
        if !outgoing.is_empty() {
            self.conn.send_batch(outgoing).await;
            outgoing.clear();
        }
    }

    /// Asks for `bytes` of kernel receive buffer on the UDP socket; returns what was granted.
    pub fn set_receive_buffer(&self, bytes: usize) -> std::io::Result<usize> {
        self.conn.set_receive_buffer(bytes)
    }

    /// Gives the UDP socket back the receive buffer it was made with (the system's default).
    pub fn restore_default_receive_buffer(&self) -> std::io::Result<()> {
        self.conn.restore_default_receive_buffer()
    }

    /// The UDP socket's receive buffer and the datagrams the kernel dropped for a full one.
    pub fn receive_stats(&self) -> std::io::Result<crate::conn::ReceiveStats> {
        self.conn.receive_stats()
    }

    /// The TUN offloads the device runs with.
    pub fn offloads(&self) -> crate::tun::Offloads {
        self.tun.offloads
    }
}
