//! UDP → decrypt → TUN, a batch at a time (initiations and responses are queued for
//! [`super::handshakes`], which handles them with [`Device::handle`] as well): handshake
//! messages past the MAC check and the rate limiter first, then find the peer (by public key for an initiation, by session index
//! otherwise), decrypt, check the inner source against the peer's allowed IPs, and follow the
//! peer's endpoint only on a message that proved the peer's keys.

use super::outbound::Failures;
use super::source_limit::SourceLimit;
use super::{handshakes, Device, Endpoint, Peer, PeerSet};
use super::{Direction, Drop, HandshakeRole};
use crate::conn::{Datagrams, Received, RecvBatch};
use crate::key::PublicKey;
use crate::tun::{WriteBatch, BATCH, MAX_PACKET};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

pub async fn run(device: Arc<Device>, handshakes: handshakes::Queue) {
    let mut batch = RecvBatch::default();
    let mut scratch = vec![0u8; MAX_PACKET];
    let mut replies = Datagrams::default();
    let mut to_tun = WriteBatch::default();
    let mut failures = Failures::default();
    let mut source_limit = SourceLimit::default();
    loop {
        if let Err(e) = device.conn.recv_batch(&mut batch).await {
            tracing::warn!(error = %e, "cannot receive from the UDP socket");
            if !failures.retry().await {
                return;
            }
            continue;
        }
        failures.reset();
        let peers = device.peers.load();
        let now = Instant::now();
        let mut received = 0;
        for (from, datagram) in batch.datagrams() {
            received += 1;
            if handshakes::is_handshake(datagram) {
                if source_limit.allow(from.source.ip(), now) {
                    handshakes.push(&device, from, datagram);
                } else {
                    device.metrics.dropped(Drop::UnderLoad);
                }
                continue;
            }
            device.handle(
                &peers,
                from,
                datagram,
                &mut scratch,
                &mut replies,
                &mut to_tun,
            );
            // A GRO bundle per slot makes a batch of up to a thousand packets: written in
            // slices, so the buffers waiting for the TUN stay few.
            if to_tun.len() >= BATCH {
                device.write_to_tun(&mut to_tun).await;
            }
        }
        device.metrics.batch(Direction::Inbound, received);
        device.send_all(&mut replies).await;
        device.write_to_tun(&mut to_tun).await;
    }
}

/// A datagram a session answers its sender with.
pub enum Answer<'a> {
    /// A cookie reply: the session's limiter was under load and answered without looking.
    Cookie(&'a [u8]),
    /// A handshake response, the keepalive completing our own handshake, or a packet queued
    /// for the new session.
    Session(&'a [u8]),
}

impl Answer<'_> {
    /// The datagram, whichever it is.
    pub fn datagram(&self) -> &[u8] {
        match self {
            Answer::Cookie(d) | Answer::Session(d) => d,
        }
    }
}

/// Feeds `datagram` from `source` to a peer's session, and then what the session queued:
/// `answer` gets each datagram for the sender, `deliver` each decrypted packet with its inner
/// source, `failed` the session's refusal. Returns whether the datagram proved its sender holds
/// the session's keys: a data packet that decrypted, an initiation the session answered, or a
/// response that completed our handshake. Only then may the peer's endpoint follow it (as
/// wireguard-go and the kernel do); a cookie reply proves nothing of its sender, and neither
/// does any answer of ours that is one. The one place lab-vpn decides this (the `wireguard`
/// fuzz target calls it too).
pub fn feed_session(
    tunn: &mut Tunn,
    source: IpAddr,
    datagram: &[u8],
    decrypted: &mut [u8],
    mut answer: impl FnMut(Answer<'_>),
    mut deliver: impl FnMut(&[u8], IpAddr),
    mut failed: impl FnMut(&WireGuardError),
) -> bool {
    let is_data = matches!(
        Tunn::parse_incoming_packet(datagram),
        Ok(Packet::PacketData(_))
    );
    let mut authenticated = false;
    let mut result = tunn.decapsulate(Some(source), datagram, decrypted);
    // Ends: boringtun's queue of packets waiting for a session is bounded.
    loop {
        match result {
            TunnResult::Done => {
                // A data packet that decrypted to a keepalive; for a cookie reply, Done only
                // says it was taken.
                authenticated |= is_data;
                return authenticated;
            }
            TunnResult::Err(e) => {
                failed(&e);
                return authenticated;
            }
            TunnResult::WriteToNetwork(reply) if reply.first() == Some(&COOKIE_REPLY) => {
                answer(Answer::Cookie(reply));
                return authenticated;
            }
            TunnResult::WriteToNetwork(reply) => {
                authenticated = true;
                answer(Answer::Session(reply));
                result = tunn.decapsulate(None, &[], decrypted);
            }
            TunnResult::WriteToTunnelV4(packet, inner) => {
                deliver(packet, inner.into());
                return true;
            }
            TunnResult::WriteToTunnelV6(packet, inner) => {
                deliver(packet, inner.into());
                return true;
            }
        }
    }
}

/// The first byte of a cookie reply (WireGuard's message type 3).
pub const COOKIE_REPLY: u8 = 3;

#[derive(Clone, Copy)]
enum MessageKind {
    Initiation,
    Response,
    CookieReply,
    Data,
}

/// The drop counted for a datagram boringtun's session refused with `error`.
pub fn drop_reason(error: &WireGuardError) -> Drop {
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
        replies: &mut Datagrams,
    ) -> Option<Arc<Peer>> {
        let packet = match Tunn::parse_incoming_packet(datagram) {
            Ok(packet) => packet,
            Err(_) => {
                self.metrics.dropped(Drop::Invalid);
                return None;
            }
        };
        if matches!(
            packet,
            Packet::HandshakeInit(_) | Packet::HandshakeResponse(_)
        ) {
            // MACs and the rate limit first, for responses as for initiations: the DH work
            // behind either is what a flood would aim at.
            let mut cookie = [0u8; 64];
            match self
                .limiter
                .verify_packet(Some(received.source.ip()), datagram, &mut cookie)
            {
                Ok(_) => {}
                Err(TunnResult::WriteToNetwork(reply)) => {
                    self.metrics.cookie_replies.inc();
                    replies.push(received.source, received.local, reply);
                    return None;
                }
                Err(_) => {
                    self.metrics.dropped(Drop::BadMac);
                    return None;
                }
            }
        }
        let index = match packet {
            Packet::HandshakeInit(init) => {
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

    pub(super) fn handle(
        &self,
        peers: &PeerSet,
        received: Received,
        datagram: &[u8],
        scratch: &mut [u8],
        replies: &mut Datagrams,
        to_tun: &mut WriteBatch,
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
        // A data packet decrypts straight into the buffer it is written to the TUN from; the
        // rest (handshakes, whose answers may carry queued packets of any size) into `scratch`.
        let is_data = matches!(kind, Ok(MessageKind::Data));
        let decrypted = if is_data {
            to_tun.room(datagram.len())
        } else {
            &mut *scratch
        };
        let base = decrypted.as_ptr() as usize;
        let mut delivered: Option<(usize, usize, IpAddr)> = None;
        let mut handshake_counted = false;
        let mut tunn = peer.tunn();
        let authenticated = feed_session(
            &mut tunn,
            received.source.ip(),
            datagram,
            decrypted,
            |answer| {
                match answer {
                    Answer::Cookie(_) => {
                        self.metrics.cookie_replies.inc();
                    }
                    Answer::Session(datagram) => {
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
                    }
                }
                replies.push(received.source, received.local, answer.datagram());
            },
            |packet, source| {
                // Where in `decrypted` the packet is: the borrow ends with this call.
                delivered = Some((packet.as_ptr() as usize - base, packet.len(), source));
            },
            |error| self.metrics.dropped(drop_reason(error)),
        );
        drop(tunn);
        if authenticated {
            peer.count_received(datagram.len());
            peer.set_endpoint(Endpoint {
                address: received.source,
                local: received.local,
            });
        }
        let Some((start, length, source)) = delivered else {
            return;
        };
        if length == 0 {
            return; // keepalive
        }
        if !peers.is_allowed_source(&peer, source) {
            self.metrics.dropped(Drop::SourceNotAllowed);
            tracing::debug!(peer = %peer.name, %source, "inner source outside the peer's allowed IPs");
            return;
        }
        if is_data {
            to_tun.commit(start, length);
        } else {
            to_tun.push(&scratch[start..start + length]);
        }
    }

    pub(super) async fn write_to_tun(&self, to_tun: &mut WriteBatch) {
        if to_tun.is_empty() {
            return;
        }
        if let Err(e) = self.tun.write_batch(to_tun).await {
            tracing::warn!(error = %e, "cannot write to the TUN device");
        }
    }
}
