//! lab-vpn's inbound path and control socket.
//!
//! The inbound path (`vpn/src/device/inbound.rs`) is a method of the `Device`, which owns a
//! TUN device and a UDP socket; an entry point there would mean restructuring it. So this
//! target drives a pair of boringtun `Tunn`s, the gateway's side built as lab-vpn builds a
//! peer's (its own rate limiter for handshake load, a MAC-only one inside the session), with an
//! established session, and repeats the inbound path's dispatch around the gateway's
//! `decapsulate`: parse, the device's MAC and load check for handshake messages, the peer by
//! public key or by the peer index in the upper 24 bits of the receiver index, then lab-vpn's
//! reading of boringtun's answers (`COOKIE_REPLY`, `drop_reason`) and its rule that only a
//! message that proved the peer's keys moves its endpoint.

use crate::shown;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use lab_vpn::device::{
    drop_reason, feed_session, PeerSet, PeerSettings, SessionKeys, COOKIE_REPLY,
};
use lab_vpn::key::PrivateKey;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

const GATEWAY_KEY: [u8; 32] = [0x11; 32];
const PEER_KEY: [u8; 32] = [0x22; 32];
const PRESHARED_KEY: [u8; 32] = [0x33; 32];
/// The peer's index at the gateway (lab-vpn draws them at random below 2^24).
const PEER_INDEX: u32 = 0x00ab_cdef;
const GATEWAY_INDEX_AT_PEER: u32 = 7;
const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
/// Room for any datagram and any decrypted packet.
const BUFFER: usize = 65536 + 256;
/// Messages one datagram may cause back and forth before the exchange is cut.
const MAX_HOPS: usize = 16;

struct Lab {
    gateway: Tunn,
    peer: Tunn,
    gateway_secret: StaticSecret,
    gateway_public: PublicKey,
    peer_public: PublicKey,
    /// The device's handshake load check (lab-vpn's `Device::limiter`).
    limiter: RateLimiter,
    /// Datagrams the peer's `Tunn` made: the only ones that may prove its keys.
    genuine: HashSet<Vec<u8>>,
    /// Datagrams the gateway took as proof of the peer's keys: none may do so twice.
    accepted: HashSet<Vec<u8>>,
    /// Every datagram sent to the gateway, for replays.
    sent: Vec<Vec<u8>>,
    buffer: Vec<u8>,
}

/// What the gateway did with one datagram.
#[derive(Default)]
struct Handled {
    /// The endpoint would follow the datagram.
    authenticated: bool,
    /// Written to the TUN device.
    delivered: Vec<Vec<u8>>,
    /// Datagrams for the peer.
    replies: Vec<Vec<u8>>,
}

impl Lab {
    fn new(preshared: bool, under_load: bool) -> Self {
        let gateway_secret = StaticSecret::from(GATEWAY_KEY);
        let gateway_public = PublicKey::from(&gateway_secret);
        let peer_secret = StaticSecret::from(PEER_KEY);
        let peer_public = PublicKey::from(&peer_secret);
        let psk = preshared.then_some(PRESHARED_KEY);
        let mac_check = Arc::new(RateLimiter::new(&gateway_public, u64::MAX));
        let gateway = Tunn::new(
            gateway_secret.clone(),
            peer_public,
            psk,
            None,
            PEER_INDEX,
            Some(mac_check),
        );
        let peer = Tunn::new(
            peer_secret,
            gateway_public,
            psk,
            None,
            GATEWAY_INDEX_AT_PEER,
            None,
        );
        Self {
            gateway,
            peer,
            gateway_secret,
            gateway_public,
            peer_public,
            limiter: RateLimiter::new(&gateway_public, if under_load { 0 } else { u64::MAX }),
            genuine: HashSet::new(),
            accepted: HashSet::new(),
            sent: Vec::new(),
            buffer: vec![0; BUFFER],
        }
    }

    /// The peer's handshake, answered by the gateway and confirmed: the session is up. Under
    /// load the first initiation earns a cookie, and the second (with its MAC) an answer.
    fn establish(&mut self) {
        for _ in 0..2 {
            let init = match self
                .peer
                .format_handshake_initiation(&mut self.buffer, true)
            {
                TunnResult::WriteToNetwork(init) => init.to_vec(),
                _ => panic!("the peer does not initiate"),
            };
            self.genuine.insert(init.clone());
            if self.exchange(init).authenticated {
                return;
            }
        }
        panic!("the handshake failed");
    }

    /// Sends `datagram` to the gateway and the answers back and forth until they stop.
    fn exchange(&mut self, datagram: Vec<u8>) -> Handled {
        let first = self.receive_at_gateway(&datagram);
        let mut replies = first.replies.clone();
        for _ in 0..MAX_HOPS {
            let Some(reply) = replies.pop() else {
                break;
            };
            for answer in self.deliver_to_peer(&reply) {
                self.genuine.insert(answer.clone());
                replies.extend(self.receive_at_gateway(&answer).replies);
            }
        }
        first
    }

    /// The peer's `Tunn` taking a datagram from the gateway; what it sends back.
    fn deliver_to_peer(&mut self, datagram: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut result = self
            .peer
            .decapsulate(Some(SOURCE), datagram, &mut self.buffer);
        for _ in 0..MAX_HOPS {
            match result {
                TunnResult::WriteToNetwork(reply) => out.push(reply.to_vec()),
                _ => break,
            }
            result = self.peer.decapsulate(None, &[], &mut self.buffer);
        }
        out
    }

    /// lab-vpn's inbound path (`Device::peer_for` and `Device::handle`) for one datagram.
    fn receive_at_gateway(&mut self, datagram: &[u8]) -> Handled {
        self.sent.push(datagram.to_vec());
        let mut handled = Handled::default();
        let Ok(packet) = Tunn::parse_incoming_packet(datagram) else {
            return handled;
        };
        if matches!(
            packet,
            Packet::HandshakeInit(_) | Packet::HandshakeResponse(_)
        ) {
            let mut cookie = [0u8; 64];
            match self
                .limiter
                .verify_packet(Some(SOURCE), datagram, &mut cookie)
            {
                Ok(_) => {}
                Err(TunnResult::WriteToNetwork(reply)) => {
                    assert_eq!(reply.first(), Some(&COOKIE_REPLY));
                    handled.replies.push(reply.to_vec());
                    return handled;
                }
                Err(_) => return handled,
            }
        }
        let index = match packet {
            Packet::HandshakeInit(ref init) => {
                match parse_handshake_anon(&self.gateway_secret, &self.gateway_public, init) {
                    Ok(half) if half.peer_static_public == *self.peer_public.as_bytes() => None,
                    _ => return handled,
                }
            }
            Packet::HandshakeResponse(ref p) => Some(p.receiver_idx),
            Packet::PacketCookieReply(ref p) => Some(p.receiver_idx),
            Packet::PacketData(ref p) => Some(p.receiver_idx),
        };
        if index.is_some_and(|i| i >> 8 != PEER_INDEX) {
            return handled; // an unknown peer
        }
        let mut decrypted = vec![0u8; BUFFER];
        let (mut replies, mut delivered) = (Vec::new(), Vec::new());
        handled.authenticated = feed_session(
            &mut self.gateway,
            SOURCE,
            datagram,
            &mut decrypted,
            |answer| replies.push(answer.datagram().to_vec()),
            |packet, _| delivered.push(packet.to_vec()),
            |error| {
                let _ = drop_reason(error);
            },
        );
        handled.replies.extend(replies);
        handled.delivered.extend(delivered);
        if handled.authenticated {
            assert!(
                self.genuine.contains(datagram),
                "a datagram the peer never sent proved its keys: {}",
                shown(datagram)
            );
            assert!(
                self.accepted.insert(datagram.to_vec()),
                "a datagram proved the peer's keys twice: {}",
                shown(datagram)
            );
        }
        handled
    }

    /// The peer's packet `payload`, encrypted in the session.
    fn encrypted(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        match self.peer.encapsulate(payload, &mut self.buffer) {
            TunnResult::WriteToNetwork(datagram) => Some(datagram.to_vec()),
            _ => None,
        }
    }
}

/// The next `n` bytes of `input` (fewer at its end).
fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = input.split_at(n.min(input.len()));
    *input = tail;
    head
}

fn take_u8(input: &mut &[u8]) -> u8 {
    take(input, 1).first().copied().unwrap_or(0)
}

/// The first byte picks a preshared key and a device under load; the rest is a program of
/// datagrams for the gateway: raw bytes, the peer's packets (as sent, altered, replayed, or
/// with a message type and the session's receiver index before raw bytes), new handshakes,
/// and the gateway's own packets for the peer.
pub fn wireguard(data: &[u8]) {
    let mut input = data;
    let flags = take_u8(&mut input);
    let mut lab = Lab::new(flags & 1 != 0, flags & 2 != 0);
    lab.establish();
    while let Some((&op, rest)) = input.split_first() {
        input = rest;
        match op % 8 {
            0 => {
                let n = usize::from(take_u8(&mut input));
                let raw = take(&mut input, n).to_vec();
                lab.exchange(raw);
            }
            1 => {
                let n = usize::from(take_u8(&mut input)) * 8;
                let payload = take(&mut input, n).to_vec();
                let Some(datagram) = lab.encrypted(&payload) else {
                    continue;
                };
                lab.genuine.insert(datagram.clone());
                for packet in lab.exchange(datagram).delivered {
                    assert!(
                        payload.starts_with(&packet),
                        "delivered {} for {}",
                        shown(&packet),
                        shown(&payload)
                    );
                }
            }
            2 => {
                let n = usize::from(take_u8(&mut input));
                let payload = take(&mut input, n).to_vec();
                let (at, flip) = (usize::from(take_u8(&mut input)), take_u8(&mut input));
                let Some(mut datagram) = lab.encrypted(&payload) else {
                    continue;
                };
                let at = at % datagram.len();
                datagram[at] ^= flip.max(1);
                lab.exchange(datagram);
            }
            3 => {
                if let Some(earlier) = lab.sent.iter().rev().nth(usize::from(take_u8(&mut input))) {
                    let earlier = earlier.clone();
                    lab.exchange(earlier);
                }
            }
            4 => {
                if let TunnResult::WriteToNetwork(init) =
                    lab.peer.format_handshake_initiation(&mut lab.buffer, true)
                {
                    let init = init.to_vec();
                    lab.genuine.insert(init.clone());
                    lab.exchange(init);
                }
            }
            5 => {
                let n = usize::from(take_u8(&mut input));
                let payload = take(&mut input, n).to_vec();
                if let TunnResult::WriteToNetwork(datagram) =
                    lab.gateway.encapsulate(&payload, &mut lab.buffer)
                {
                    let datagram = datagram.to_vec();
                    lab.deliver_to_peer(&datagram);
                }
            }
            6 => {
                let kind = take_u8(&mut input) % 5;
                let n = usize::from(take_u8(&mut input));
                let mut datagram = vec![kind, 0, 0, 0];
                datagram.extend_from_slice(&(PEER_INDEX << 8 | 1).to_le_bytes());
                datagram.extend_from_slice(take(&mut input, n));
                lab.exchange(datagram);
            }
            _ => {
                let n = usize::from(take_u8(&mut input));
                let raw = take(&mut input, n).to_vec();
                lab.deliver_to_peer(&raw);
            }
        }
    }
}

const OWN_PORT: u16 = 51820;

/// A peer the gateway has before the request, so requests can change one.
fn existing() -> Vec<PeerSettings> {
    let key = PrivateKey::from_bytes(PEER_KEY).public_key();
    vec![PeerSettings {
        name: "existing".parse().expect("a valid name"),
        keys: SessionKeys {
            public_key: key,
            preshared_key: None,
            keepalive: None,
        },
        allowed_ips: vec!["10.0.0.2/32".parse().expect("a network")],
        endpoint: None,
    }]
}

/// `lab_vpn::uapi::apply` on a `set=1` request's lines (up to the empty line that ends it, as
/// the control socket reads them), then the peer set built from the result: keys and prefixes
/// each belong to one peer, and every prefix routes to its peer.
pub fn uapi(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<String> = text
        .lines()
        .take_while(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let mut peers = existing();
    if lab_vpn::uapi::apply(&GATEWAY_KEY, OWN_PORT, &mut peers, &lines).is_err() {
        return;
    }
    let keys: HashSet<_> = peers.iter().map(|p| p.keys.public_key).collect();
    assert_eq!(keys.len(), peers.len(), "a key on two peers");
    let mut nets = HashSet::new();
    for net in peers.iter().flat_map(|p| &p.allowed_ips) {
        assert!(nets.insert(*net), "{net} on two peers");
        assert_eq!(*net, net.trunc(), "{net} kept host bits");
    }
    let own = PrivateKey::from_bytes(GATEWAY_KEY);
    let public = PublicKey::from(own.secret());
    let mac_check = Arc::new(RateLimiter::new(&public, u64::MAX));
    let set = PeerSet::build(&peers, &PeerSet::default(), &own, &mac_check);
    assert_eq!(set.by_key.len(), peers.len());
    assert_eq!(set.by_index.len(), peers.len());
    for settings in &peers {
        for net in &settings.allowed_ips {
            let owner = set.routes.longest_match(net.network());
            assert!(
                owner.is_some_and(|o| o
                    .allowed_ips()
                    .iter()
                    .any(|n| n.contains(&net.network()) && n.prefix_len() >= net.prefix_len())),
                "{net} does not route to a peer that has it"
            );
        }
    }
}
