//! Traffic an attacker on net0 can send: garbage datagrams, truncated handshakes, replayed data
//! packets, a peer claiming another's address, a handshake flood. Each is dropped and counted,
//! cookie replies engage under load, and the gateway keeps serving its real peer throughout.
//! The attacker is a WireGuard implementation of its own here: boringtun's `Tunn`, driven by
//! the test over a UDP socket in the client namespace.

mod support;

use boringtun::noise::{Tunn, TunnResult};
use lab_tests::daemon_process::Started;
use lab_tests::netns::Netns;
use lab_vpn::key::{PrivateKey, PublicKey};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;
use support::*;

/// A UDP socket bound in `netns` (sockets stay in the namespace they were made in, whichever
/// thread uses them later).
fn udp_socket_in(netns: &Netns, address: &str) -> UdpSocket {
    let path = format!("/run/netns/{}", netns.name);
    let address = address.to_owned();
    std::thread::spawn(move || {
        let namespace = std::fs::File::open(&path).unwrap();
        nix::sched::setns(namespace.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = UdpSocket::bind(address).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        socket
    })
    .join()
    .unwrap()
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request from `source` to `destination`, as an IPv4 packet.
fn echo_request(source: Ipv4Addr, destination: Ipv4Addr, sequence: u16) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34];
    icmp.extend(sequence.to_be_bytes());
    icmp.extend(b"lab-vpn hostile test");
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut packet = vec![0x45, 0];
    packet.extend(total.to_be_bytes());
    packet.extend([0, 0, 0x40, 0, 64, 1, 0, 0]);
    packet.extend(source.octets());
    packet.extend(destination.octets());
    let sum = checksum(&packet);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet.extend(icmp);
    packet
}

/// A peer of the gateway speaking WireGuard from the test itself.
struct TestPeer {
    tunn: Tunn,
    socket: UdpSocket,
    gateway: SocketAddr,
}

impl TestPeer {
    fn new(netns: &Netns, key: &KeyPair, gateway_key: &KeyPair, index: u32) -> Self {
        let own: PrivateKey = key.private.parse().unwrap();
        let theirs: PublicKey = gateway_key.public.parse().unwrap();
        Self {
            tunn: Tunn::new(
                own.secret().clone(),
                boringtun::x25519::PublicKey::from(*theirs.as_bytes()),
                None,
                None,
                index,
                None,
            ),
            socket: udp_socket_in(netns, &format!("{CLIENT_UNDERLAY}:0")),
            gateway: format!("{GATEWAY_UNDERLAY}:{PORT}").parse().unwrap(),
        }
    }

    fn receive(&self) -> Option<Vec<u8>> {
        let mut buffer = [0u8; 2048];
        let (n, _) = self.socket.recv_from(&mut buffer).ok()?;
        Some(buffer[..n].to_vec())
    }

    /// Completes a handshake with the gateway; returns the initiation as sent and the
    /// gateway's response, as anyone on the path sees them.
    fn handshake(&mut self) -> (Vec<u8>, Vec<u8>) {
        let mut buffer = [0u8; 2048];
        let TunnResult::WriteToNetwork(init) =
            self.tunn.format_handshake_initiation(&mut buffer, false)
        else {
            panic!("no initiation");
        };
        let init = init.to_vec();
        self.socket.send_to(&init, self.gateway).unwrap();
        let response = self.receive().expect("no handshake response");
        if let TunnResult::WriteToNetwork(keepalive) =
            self.tunn.decapsulate(None, &response, &mut buffer)
        {
            self.socket.send_to(keepalive, self.gateway).unwrap();
        }
        (init, response)
    }

    /// Encrypts `packet` and sends it; returns the datagram, for replaying.
    fn send(&mut self, packet: &[u8]) -> Vec<u8> {
        let mut buffer = [0u8; 2048];
        let TunnResult::WriteToNetwork(datagram) = self.tunn.encapsulate(packet, &mut buffer)
        else {
            panic!("no session to send on");
        };
        self.socket.send_to(datagram, self.gateway).unwrap();
        datagram.to_vec()
    }

    /// The next packet the gateway tunnels to us, if one comes within the socket timeout.
    fn receive_packet(&mut self) -> Option<Vec<u8>> {
        let mut buffer = [0u8; 2048];
        for _ in 0..5 {
            let datagram = self.receive()?;
            if let TunnResult::WriteToTunnelV4(packet, _) =
                self.tunn.decapsulate(None, &datagram, &mut buffer)
            {
                if !packet.is_empty() {
                    return Some(packet.to_vec());
                }
            }
        }
        None
    }
}

fn is_echo_reply_to(packet: &[u8], address: Ipv4Addr) -> bool {
    packet.len() > 28 && packet[9] == 1 && packet[20] == 0 && packet[16..20] == address.octets()
}

fn dropped(topology: &Topology, reason: &str) -> f64 {
    topology
        .gateway_metric(&format!(
            "lab_vpn_packets_dropped_total{{reason=\"{reason}\"}}"
        ))
        .unwrap_or_else(|| panic!("no drop counter for {reason}"))
}

fn hostile_traffic_is_dropped_and_counted_while_the_real_peer_carries_on(offload: bool) {
    let topology = Topology::with_offload(offload);
    let (gateway_key, admin_key, other_key) = (key_pair(), key_pair(), key_pair());
    let other_address: Ipv4Addr = "10.10.100.3".parse().unwrap();
    let peers = format!(
        "[[peer]]\nname = \"admin\"\npublic_key = \"{}\"\nallowed_ips = [\"{CLIENT_TUNNEL}/32\"]\n\
         [[peer]]\nname = \"other\"\npublic_key = \"{}\"\nallowed_ips = [\"{other_address}/32\"]\n",
        admin_key.public, other_key.public
    );
    let _gateway = topology.start_gateway(&topology.gateway_config(&gateway_key, &peers));
    let gateway_tunnel: Ipv4Addr = GATEWAY_TUNNEL.parse().unwrap();

    // The real peer: a session from the test, pinging the gateway through the tunnel.
    let mut admin = TestPeer::new(&topology.client, &admin_key, &gateway_key, 1);
    admin.handshake();
    let client_tunnel: Ipv4Addr = CLIENT_TUNNEL.parse().unwrap();
    let echo = admin.send(&echo_request(client_tunnel, gateway_tunnel, 1));
    let reply = admin
        .receive_packet()
        .expect("no echo reply through the tunnel");
    assert!(is_echo_reply_to(&reply, client_tunnel));
    assert_eq!(
        topology.gateway_metric("lab_vpn_handshakes_total{role=\"responder\"}"),
        Some(1.0)
    );

    // Replayed: the same datagram again is refused, and no second reply comes.
    let replays = dropped(&topology, "replay");
    admin.socket.send_to(&echo, admin.gateway).unwrap();
    assert_eq!(
        admin.receive_packet(),
        None,
        "a replayed packet was answered"
    );
    assert_eq!(dropped(&topology, "replay"), replays + 1.0);

    // Garbage and truncated messages, from an address with no session.
    let attacker = udp_socket_in(&topology.client, &format!("{CLIENT_UNDERLAY}:0"));
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff],
        vec![1, 0, 0, 0],
        vec![1, 0, 0, 0, 9, 9, 9],
        [vec![2, 0, 0, 0], vec![7; 40]].concat(),
        [vec![4, 0, 0, 0], vec![0; 12]].concat(),
        vec![0x41; 1400],
    ];
    let invalid = dropped(&topology, "invalid");
    for datagram in &garbage {
        attacker.send_to(datagram, admin.gateway).unwrap();
    }
    // A well-formed initiation for some other gateway: its MAC does not verify.
    let stranger = key_pair();
    let mut misdirected = TestPeer::new(&topology.client, &admin_key, &stranger, 9);
    let mut buffer = [0u8; 256];
    let TunnResult::WriteToNetwork(init) = misdirected
        .tunn
        .format_handshake_initiation(&mut buffer, false)
    else {
        panic!()
    };
    attacker.send_to(init, admin.gateway).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        dropped(&topology, "invalid") >= invalid + 5.0,
        "garbage not counted"
    );
    assert!(dropped(&topology, "bad_mac") >= 1.0);

    // Another configured peer sending with the admin's address is not let through.
    let mut other = TestPeer::new(&topology.client, &other_key, &gateway_key, 2);
    other.handshake();
    let impersonations = dropped(&topology, "source_not_allowed");
    other.send(&echo_request(client_tunnel, gateway_tunnel, 2));
    assert_eq!(other.receive_packet(), None);
    assert_eq!(
        admin.receive_packet(),
        None,
        "the impersonation was answered"
    );
    assert_eq!(
        dropped(&topology, "source_not_allowed"),
        impersonations + 1.0
    );

    // A flood of valid-looking initiations from a key the gateway does not know: past the
    // rate limit it answers with cookie replies instead of doing the Diffie-Hellman work.
    let flooder_key = key_pair();
    let mut flooder = TestPeer::new(&topology.client, &flooder_key, &gateway_key, 3);
    flooder
        .socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    // Made first, then sent back to back: a flood is a rate, and making each message costs a
    // Diffie-Hellman that, on a busy machine, can slow the sender below the limit.
    let initiations: Vec<Vec<u8>> = (0..400)
        .filter_map(|_| {
            let mut buffer = [0u8; 256];
            match flooder.tunn.format_handshake_initiation(&mut buffer, true) {
                TunnResult::WriteToNetwork(init) => Some(init.to_vec()),
                _ => None,
            }
        })
        .collect();
    let mut cookies_seen = 0;
    let mut collect = |flooder: &TestPeer| {
        while let Some(reply) = flooder.receive() {
            // A cookie reply is message type 3.
            cookies_seen += usize::from(reply.first() == Some(&3));
        }
    };
    for init in &initiations {
        flooder.socket.send_to(init, flooder.gateway).unwrap();
        collect(&flooder);
    }
    // On a busy machine the gateway may still be working through the flood.
    let waiting = std::time::Instant::now();
    while waiting.elapsed() < Duration::from_secs(3)
        && topology
            .gateway_metric("lab_vpn_cookie_replies_total")
            .unwrap_or(0.0)
            == 0.0
    {
        collect(&flooder);
    }
    collect(&flooder);
    let cookie_replies = topology
        .gateway_metric("lab_vpn_cookie_replies_total")
        .unwrap();
    assert!(
        cookie_replies > 0.0 && cookies_seen > 0,
        "no cookie replies under a flood (metric {cookie_replies}, seen {cookies_seen})"
    );

    // Through all of it, the real peer's session works.
    admin.send(&echo_request(client_tunnel, gateway_tunnel, 3));
    let reply = admin
        .receive_packet()
        .expect("the real peer lost its service");
    assert!(is_echo_reply_to(&reply, client_tunnel));
    lab_tests::promtool::check_metrics(&topology.gateway_metrics()).unwrap();
}

/// Sets the mac1 of a handshake message to the gateway: BLAKE2s-128 of all before it, keyed with
/// BLAKE2s-256("mac1----" ‖ the gateway's public key). Every holder of a client config can.
fn sign_mac1(message: &mut [u8], gateway: &PublicKey) {
    use blake2::digest::{Digest, KeyInit, Mac};
    let mut hash = blake2::Blake2s256::new();
    Digest::update(&mut hash, b"mac1----");
    Digest::update(&mut hash, gateway.as_bytes());
    let key = hash.finalize();
    let end = message.len() - 32;
    let mut mac =
        <blake2::Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new_from_slice(&key).unwrap();
    Mac::update(&mut mac, &message[..end]);
    message[end..end + 16].copy_from_slice(&mac.finalize().into_bytes());
}

/// A gateway whose one peer is the admin, its public key, and the admin's side (no handshake yet).
fn gateway_with_admin(topology: &Topology) -> (Started, PublicKey, TestPeer) {
    let (gateway_key, admin_key) = (key_pair(), key_pair());
    let peers = format!(
        "[[peer]]\nname = \"admin\"\npublic_key = \"{}\"\nallowed_ips = [\"{CLIENT_TUNNEL}/32\"]\n",
        admin_key.public
    );
    let gateway = topology.start_gateway(&topology.gateway_config(&gateway_key, &peers));
    let admin = TestPeer::new(&topology.client, &admin_key, &gateway_key, 1);
    (gateway, gateway_key.public.parse().unwrap(), admin)
}

/// A socket of the attacker's own address on the client's link, reads waiting 1 ms at most.
fn attacker_socket(topology: &Topology) -> UdpSocket {
    let attacker_address = "198.51.100.3";
    topology.client.run(&[
        "ip",
        "address",
        "add",
        &format!("{attacker_address}/24"),
        "dev",
        &topology.client_link,
    ]);
    let attacker = udp_socket_in(&topology.client, &format!("{attacker_address}:0"));
    attacker
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    attacker
}

/// The cookie replies (message type 3) among the datagrams waiting on `socket`, read.
fn cookie_replies_waiting(socket: &UdpSocket) -> usize {
    let mut buffer = [0u8; 256];
    let mut cookies = 0;
    while let Ok((n, _)) = socket.recv_from(&mut buffer) {
        cookies += usize::from(n > 0 && buffer[0] == 3);
    }
    cookies
}

/// A handshake response no one could have made (its ephemeral key and empty payload are
/// noise) for the gateway's session `receiver`, with a valid mac1.
fn forged_response(receiver: u32, sender: u32, gateway: &PublicKey) -> Vec<u8> {
    let mut message = vec![2, 0, 0, 0];
    message.extend(sender.to_le_bytes());
    message.extend(receiver.to_le_bytes());
    message.extend([0x5a; 32 + 16 + 16 + 16]);
    sign_mac1(&mut message, gateway);
    message
}

/// A peer's endpoint follows only messages that prove the peer's keys. An attacker holding a
/// client config (so the gateway's public key, for a valid mac1) and watching the wire (so the
/// session's index and the admin's last initiation) floods the gateway from an address of its
/// own with forged handshake responses and replayed initiations, faster than any limit. The
/// admin's endpoint stays where it is, the admin's traffic keeps coming back to the admin, and
/// the responses meet the same cookie replies as initiations.
fn forged_and_replayed_handshakes_do_not_move_a_peers_endpoint(offload: bool) {
    let topology = Topology::with_offload(offload);
    let (_gateway, gateway_public, mut admin) = gateway_with_admin(&topology);
    let (client_tunnel, gateway_tunnel): (Ipv4Addr, Ipv4Addr) = (
        CLIENT_TUNNEL.parse().unwrap(),
        GATEWAY_TUNNEL.parse().unwrap(),
    );
    let (initiation, response) = admin.handshake();
    let session = u32::from_le_bytes(response[4..8].try_into().unwrap());
    let endpoint = || {
        let (_, peers) = wg_dump(&topology.gateway, &topology.interface);
        peers[0][2].clone()
    };
    let admin_endpoint = admin.socket.local_addr().unwrap().to_string();
    admin.send(&echo_request(client_tunnel, gateway_tunnel, 1));
    assert!(
        admin.receive_packet().is_some(),
        "no echo reply before the attack"
    );
    assert_eq!(endpoint(), admin_endpoint);

    let attacker = attacker_socket(&topology);
    let drain = |cookies: &mut usize| *cookies += cookie_replies_waiting(&attacker);

    let cookie_metric = || {
        topology
            .gateway_metric("lab_vpn_cookie_replies_total")
            .unwrap()
    };
    let before = cookie_metric();
    let mut cookies = 0;
    for sender in 0..400u32 {
        let forged = forged_response(session, sender, &gateway_public);
        attacker.send_to(&forged, admin.gateway).unwrap();
        if sender % 50 == 49 {
            drain(&mut cookies);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    drain(&mut cookies);
    assert_eq!(
        endpoint(),
        admin_endpoint,
        "forged responses moved the endpoint"
    );
    assert!(
        cookie_metric() > before && cookies > 0,
        "forged responses met no cookie replies (metric {} before, {}; {cookies} seen)",
        before,
        cookie_metric()
    );

    for _ in 0..400 {
        attacker.send_to(&initiation, admin.gateway).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    drain(&mut cookies);
    assert_eq!(
        endpoint(),
        admin_endpoint,
        "replayed initiations moved the endpoint"
    );

    // The admin's traffic still comes back to the admin.
    admin.send(&echo_request(client_tunnel, gateway_tunnel, 2));
    let reply = admin
        .receive_packet()
        .expect("the admin's replies went elsewhere after the attack");
    assert!(is_echo_reply_to(&reply, client_tunnel));
    assert_eq!(endpoint(), admin_endpoint);
}

in_both_offload_modes!(
    hostile_traffic_is_dropped_and_counted_while_the_real_peer_carries_on,
    forged_and_replayed_handshakes_do_not_move_a_peers_endpoint,
);

/// One source flooding initiations with a valid mac1 (anyone holding a client config can make
/// them) is held to its own handshake rate: past a burst, its messages are dropped before any
/// MAC check or cookie reply, so the gateway's handshake work stays for other sources, and the
/// real peer's session carries on.
#[test]
fn one_source_flooding_handshakes_is_held_to_its_own_rate() {
    const FLOOD: usize = 3000;
    // The gateway's limit for one source (vpn/src/device/source_limit.rs): a burst of 250, then
    // 100 a second.
    const BURST: f64 = 250.0;
    const RATE: f64 = 100.0;
    let topology = Topology::new();
    let (_gateway, gateway_public, mut admin) = gateway_with_admin(&topology);
    let (client_tunnel, gateway_tunnel): (Ipv4Addr, Ipv4Addr) = (
        CLIENT_TUNNEL.parse().unwrap(),
        GATEWAY_TUNNEL.parse().unwrap(),
    );
    admin.handshake();

    let attacker = attacker_socket(&topology);
    let mut cookies = 0usize;
    let drain = |cookies: &mut usize| *cookies += cookie_replies_waiting(&attacker);
    let refused = dropped(&topology, "under_load");
    // Initiations of random contents (each a distinct sender index and ephemeral key) with a
    // valid mac1, made first and then sent back to back.
    let initiations: Vec<Vec<u8>> = (0..FLOOD as u32)
        .map(|i| {
            let mut message = vec![1, 0, 0, 0];
            message.extend(i.to_le_bytes());
            message.extend((0..108u32).map(|j| (i.wrapping_mul(31) ^ j) as u8));
            message.extend([0; 32]);
            sign_mac1(&mut message, &gateway_public);
            message
        })
        .collect();
    let started = std::time::Instant::now();
    for (i, initiation) in initiations.iter().enumerate() {
        attacker.send_to(initiation, admin.gateway).unwrap();
        if i % 100 == 99 {
            drain(&mut cookies);
        }
    }
    let flooding = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    drain(&mut cookies);

    // Past the device-wide limit the burst met cookie replies; past the burst, nothing did.
    let most = BURST + RATE * (flooding.as_secs_f64() + 0.3);
    assert!(
        cookies > 0 && (cookies as f64) < most,
        "{cookies} cookie replies to {FLOOD} initiations from one source in {flooding:?} \
         (at most {most:.0} expected)"
    );
    assert!(
        dropped(&topology, "under_load") > refused,
        "nothing counted as refused under load"
    );
    admin.send(&echo_request(client_tunnel, gateway_tunnel, 1));
    let reply = admin
        .receive_packet()
        .expect("the real peer lost its service");
    assert!(is_echo_reply_to(&reply, client_tunnel));
}
