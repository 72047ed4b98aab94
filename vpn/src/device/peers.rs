//! The peer set: lookups by public key (handshakes), by index (data), and by allowed IP
//! (outgoing packets). Replaced whole when peers change; packets in flight keep the old one.

use super::peer::{Peer, PeerSettings};
use crate::allowed_ips::AllowedIps;
use crate::key::{PrivateKey, PublicKey};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

#[derive(Default)]
pub struct PeerSet {
    pub by_key: HashMap<PublicKey, Arc<Peer>>,
    pub by_index: HashMap<u32, Arc<Peer>>,
    pub routes: AllowedIps<Arc<Peer>>,
}

/// Session ids carry the peer index in their upper 24 bits.
const MAX_INDEX: u32 = (1 << 24) - 1;

impl PeerSet {
    /// The set for `wanted`: a peer whose session keys are unchanged is carried over with its
    /// session; its allowed IPs and configured endpoint are updated in place.
    pub fn build(
        wanted: &[PeerSettings],
        previous: &PeerSet,
        own_key: &PrivateKey,
        next_index: &AtomicU32,
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
                    let index = next_index.fetch_add(1, Ordering::Relaxed) & MAX_INDEX;
                    Arc::new(Peer::new(settings, own_key, index))
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

    pub fn is_allowed_source(&self, peer: &Arc<Peer>, source: std::net::IpAddr) -> bool {
        self.routes
            .longest_match(source)
            .is_some_and(|owner| Arc::ptr_eq(owner, peer))
    }
}
