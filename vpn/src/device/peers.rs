//! The peer set: lookups by public key (handshakes), by index (data), and by allowed IP
//! (outgoing packets). Replaced whole when peers change; packets in flight keep the old one.

use super::peer::{Peer, PeerSettings};
use crate::allowed_ips::AllowedIps;
use crate::key::{PrivateKey, PublicKey};
use boringtun::noise::rate_limiter::RateLimiter;
use rand_core::RngCore;
use std::collections::HashMap;
use std::sync::Arc;

/// The running peers, found three ways.
#[derive(Default)]
pub struct PeerSet {
    /// By public key: whom a handshake initiation is from.
    pub by_key: HashMap<PublicKey, Arc<Peer>>,
    /// By peer index (a session id's upper 24 bits): whom a response or data packet is for.
    pub by_index: HashMap<u32, Arc<Peer>>,
    /// By allowed IP: which peer an outgoing packet goes to.
    pub routes: AllowedIps<Arc<Peer>>,
}

/// Session ids carry the peer index in their upper 24 bits.
const MAX_INDEX: u32 = (1 << 24) - 1;

/// A peer index no peer of `taken` (nor of `also`) has, drawn at random as the kernel draws its
/// session ids: an attacker off the path cannot name a peer's session by counting up.
fn fresh_index(taken: &PeerSet, also: &PeerSet) -> u32 {
    loop {
        let index = rand_core::OsRng.next_u32() & MAX_INDEX;
        if index != 0 && !taken.by_index.contains_key(&index) && !also.by_index.contains_key(&index)
        {
            return index;
        }
    }
}

impl PeerSet {
    /// The set for `wanted`: a peer whose session keys are unchanged is carried over with its
    /// session; its allowed IPs and configured endpoint are updated in place.
    pub fn build(
        wanted: &[PeerSettings],
        previous: &PeerSet,
        own_key: &PrivateKey,
        mac_check: &Arc<RateLimiter>,
    ) -> Self {
        let mut set = PeerSet::default();
        for settings in wanted {
            let peer = match previous.by_key.get(&settings.keys.public_key) {
                Some(existing) if existing.keys == settings.keys => {
                    existing.set_allowed_ips(settings.allowed_ips.clone());
                    existing.configure_endpoint(settings.endpoint);
                    existing.clone()
                }
                _ => {
                    let index = fresh_index(&set, previous);
                    Arc::new(Peer::new(settings, own_key, index, mac_check.clone()))
                }
            };
            set.insert(peer);
        }
        set
    }

    fn insert(&mut self, peer: Arc<Peer>) {
        for net in peer.allowed_ips() {
            self.routes.insert(net, peer.clone());
        }
        self.by_index.insert(peer.index, peer.clone());
        self.by_key.insert(peer.keys.public_key, peer);
    }

    /// Whether `source` (a decrypted packet's inner source) is `peer`'s to use: its allowed IPs
    /// hold it most specifically.
    pub fn is_allowed_source(&self, peer: &Arc<Peer>, source: std::net::IpAddr) -> bool {
        self.routes
            .longest_match(source)
            .is_some_and(|owner| Arc::ptr_eq(owner, peer))
    }
}
