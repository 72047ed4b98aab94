//! UDP → decrypt → TUN, a batch at a time: find the peer (by public key for a handshake
//! initiation, after the rate limiter; by session index otherwise), decrypt, check the inner
//! source against the peer's allowed IPs, follow the peer's endpoint.

use super::{Device, Endpoint, Outgoing, Peer, PeerSet};
use crate::conn::{Received, RecvBatch};
use crate::key::PublicKey;
use crate::metrics::{Drop, HandshakeRole};
use crate::tun::MAX_PACKET;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use std::sync::Arc;
use std::time::Duration;

pub async fn run(device: Arc<Device>) {
    let mut batch = RecvBatch::default();
    let mut decrypted = vec![0u8; MAX_PACKET];
    let mut replies: Vec<Outgoing> = Vec::new();
    let mut to_tun: Vec<Vec<u8>> = Vec::new();
    loop {
        if let Err(e) = device.conn.recv_batch(&mut batch).await {
            tracing::warn!(error = %e, "cannot receive from the UDP socket");
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let peers = device.peers.load();
        for (received, datagram) in batch.datagrams() {
            device.handle(
                &peers,
                received,
                datagram,
                &mut decrypted,
                &mut replies,
                &mut to_tun,
            );
        }
        device.send_all(&mut replies).await;
        if !to_tun.is_empty() {
            let packets: Vec<&[u8]> = to_tun.iter().map(Vec::as_slice).collect();
            if let Err(e) = device.tun.write_batch(&packets).await {
                tracing::warn!(error = %e, "cannot write to the TUN device");
            }
            to_tun.clear();
        }
    }
}

#[derive(Clone, Copy)]
enum MessageKind {
    Initiation,
    Response,
    CookieReply,
    Data,
}

fn drop_reason(error: &WireGuardError) -> Drop {
    match error {
        WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter => Drop::Replay,
        WireGuardError::InvalidAeadTag | WireGuardError::InvalidMac | WireGuardError::WrongKey => {
            Drop::Decrypt
        }
        WireGuardError::UnderLoad => Drop::UnderLoad,
        _ => Drop::Invalid,
    }
}

impl Device {
    fn peer_for(
        &self,
        peers: &PeerSet,
        received: Received,
        datagram: &[u8],
        replies: &mut Vec<Outgoing>,
    ) -> Option<Arc<Peer>> {
        let packet = match Tunn::parse_incoming_packet(datagram) {
            Ok(packet) => packet,
            Err(_) => {
                self.metrics.dropped(Drop::Invalid);
                return None;
            }
        };
        let index = match packet {
            Packet::HandshakeInit(_) => {
                // MACs and the rate limit first: the DH in parse_handshake_anon is the expensive
                // part a flood would aim at.
                let mut cookie = [0u8; 64];
                let init = match self.limiter.verify_packet(
                    Some(received.source.ip()),
                    datagram,
                    &mut cookie,
                ) {
                    Ok(Packet::HandshakeInit(init)) => init,
                    Err(TunnResult::WriteToNetwork(reply)) => {
                        self.metrics.cookie_replies.inc();
                        replies.push(Outgoing {
                            destination: received.source,
                            local: received.local,
                            datagram: reply.to_vec(),
                        });
                        return None;
                    }
                    _ => {
                        self.metrics.dropped(Drop::BadMac);
                        return None;
                    }
                };
                return match parse_handshake_anon(self.key.secret(), &self.public, &init) {
                    Ok(half) => {
                        let peer = peers
                            .by_key
                            .get(&PublicKey::from_bytes(half.peer_static_public))
                            .cloned();
                        if peer.is_none() {
                            self.metrics.dropped(Drop::UnknownPeer);
                        }
                        peer
                    }
                    Err(_) => {
                        self.metrics.dropped(Drop::Decrypt);
                        None
                    }
                };
            }
            Packet::HandshakeResponse(p) => p.receiver_idx,
            Packet::PacketCookieReply(p) => p.receiver_idx,
            Packet::PacketData(p) => p.receiver_idx,
        };
        let peer = peers.by_index.get(&(index >> 8)).cloned();
        if peer.is_none() {
            self.metrics.dropped(Drop::UnknownPeer);
        }
        peer
    }

    fn handle(
        &self,
        peers: &PeerSet,
        received: Received,
        datagram: &[u8],
        decrypted: &mut [u8],
        replies: &mut Vec<Outgoing>,
        to_tun: &mut Vec<Vec<u8>>,
    ) {
        let Some(peer) = self.peer_for(peers, received, datagram, replies) else {
            return;
        };
        let kind = Tunn::parse_incoming_packet(datagram).map(|p| match p {
            Packet::HandshakeInit(_) => MessageKind::Initiation,
            Packet::HandshakeResponse(_) => MessageKind::Response,
            Packet::PacketCookieReply(_) => MessageKind::CookieReply,
            Packet::PacketData(_) => MessageKind::Data,
        });
        let is_cookie_reply = matches!(kind, Ok(MessageKind::CookieReply));
        let mut handshake_counted = false;
        let mut tunn = peer.tunn();
        let mut result = tunn.decapsulate(Some(received.source.ip()), datagram, decrypted);
        let mut authenticated = false;
        loop {
            match result {
                TunnResult::Done => {
                    authenticated = !is_cookie_reply;
                    break;
                }
                TunnResult::Err(e) => {
                    self.metrics.dropped(drop_reason(&e));
                    break;
                }
                TunnResult::WriteToNetwork(datagram) => {
                    authenticated = true;
                    if !handshake_counted {
                        // Answering an initiation, or confirming our own with a keepalive.
                        match kind {
                            Ok(MessageKind::Initiation) => {
                                self.metrics.handshake(HandshakeRole::Responder)
                            }
                            Ok(MessageKind::Response) => {
                                self.metrics.handshake(HandshakeRole::Initiator)
                            }
                            _ => {}
                        }
                        handshake_counted = true;
                    }
                    peer.count_sent(datagram.len());
                    replies.push(Outgoing {
                        destination: received.source,
                        local: received.local,
                        datagram: datagram.to_vec(),
                    });
                    // Packets queued while the handshake was in flight.
                    result = tunn.decapsulate(None, &[], decrypted);
                }
                TunnResult::WriteToTunnelV4(packet, source) => {
                    authenticated = true;
                    self.deliver(peers, &peer, packet, source.into(), to_tun);
                    break;
                }
                TunnResult::WriteToTunnelV6(packet, source) => {
                    authenticated = true;
                    self.deliver(peers, &peer, packet, source.into(), to_tun);
                    break;
                }
            }
        }
        drop(tunn);
        if authenticated {
            peer.count_received(datagram.len());
            peer.set_endpoint(Endpoint {
                address: received.source,
                local: received.local,
            });
        }
    }

    fn deliver(
        &self,
        peers: &PeerSet,
        peer: &Arc<Peer>,
        packet: &[u8],
        source: std::net::IpAddr,
        to_tun: &mut Vec<Vec<u8>>,
    ) {
        if packet.is_empty() {
            return; // keepalive
        }
        if peers.is_allowed_source(peer, source) {
            to_tun.push(packet.to_vec());
        } else {
            self.metrics.dropped(Drop::SourceNotAllowed);
            tracing::debug!(peer = %peer.name, %source, "inner source outside the peer's allowed IPs");
        }
    }
}
