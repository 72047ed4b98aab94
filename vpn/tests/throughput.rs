//! Bulk traffic through the real daemons, each in its own namespace, checked the way a user checks
//! a copy: 200 MB of TCP each way between two lab-vpn arrive byte-identical (SHA-256), UDP
//! datagrams of every size from 1 byte to the tunnel's MTU arrive complete and in order per flow,
//! an IPv6 flow crosses the tunnel, and a wireguard-go peer moves a bulk transfer intact. No
//! timed assertion: the rates are printed, the benchmark (bench/vpn.sh) is where they are judged.

mod support;

use lab_tests::netns::Netns;
use ring::digest;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use support::*;

const MB: u64 = 1_000_000;
/// A transfer not finished by then has failed, even in a debug build on a busy machine.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(240);
/// A connection, read, write or acknowledgement blocked this long: the flow has stalled.
const STALL: Duration = Duration::from_secs(20);
const CHUNK: usize = 64 * 1024;
/// IPv6 addresses on the tunnel for the IPv6 flow.
const GATEWAY_TUNNEL_V6: &str = "fd00:77::1";
const CLIENT_TUNNEL_V6: &str = "fd00:77::2";

/// The bytes of a transfer: 64 KiB chunks, each a window into a random megabyte at an offset
/// that moves with the chunk's number and starting with that number, so a chunk lost,
/// duplicated or swapped changes the digest.
struct Pattern {
    block: Vec<u8>,
}

impl Pattern {
    fn new(seed: u64) -> Self {
        let mut state = seed | 1;
        let block = (0..(1 << 20) + CHUNK)
            .map(|_| {
                // xorshift64: fast in a debug build, and random enough to defeat any compression.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        Self { block }
    }

    fn fill(&self, chunk: u64, out: &mut [u8]) {
        let offset = (chunk as usize * 40_503) % (1 << 20);
        out.copy_from_slice(&self.block[offset..offset + out.len()]);
        let number = chunk.to_le_bytes();
        let n = out.len().min(number.len());
        out[..n].copy_from_slice(&number[..n]);
    }
}

fn hex(digest: digest::Digest) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a TCP transfer sent and what arrived.
struct Transfer {
    label: String,
    sent: u64,
    sent_sha256: String,
    received: u64,
    received_sha256: String,
    seconds: f64,
}

impl Transfer {
    fn assert_identical(&self) {
        assert_eq!(
            (self.received, &self.received_sha256),
            (self.sent, &self.sent_sha256),
            "{}: bytes and SHA-256 received differ from those sent",
            self.label
        );
        println!(
            "{}: {} MB byte-identical in {:.1} s ({:.0} Mbit/s)",
            self.label,
            self.sent / MB,
            self.seconds,
            self.sent as f64 * 8.0 / self.seconds / 1e6
        );
    }
}

/// Sends `bytes` of the pattern over TCP from a socket in `from` to a listener on `to_address` in
/// `to`; returns what was sent and what arrived, both hashed as they passed.
fn tcp_transfer(label: &str, from: &Netns, to: &Netns, to_address: IpAddr, bytes: u64) -> Transfer {
    let listener = to
        .enter(|| TcpListener::bind(SocketAddr::new(to_address, 0)))
        .unwrap_or_else(|e| panic!("{label}: cannot listen on {to_address}: {e}"));
    let target = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let (sent_sha256, (received, received_sha256)) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| send_pattern(label, from, target, bytes));
        let received = receive_all(label, &listener, start);
        let sent = sender
            .join()
            .unwrap_or_else(|_| panic!("{label}: the sender failed"));
        (sent, received)
    });
    Transfer {
        label: label.to_owned(),
        sent: bytes,
        sent_sha256,
        received,
        received_sha256,
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn send_pattern(label: &str, from: &Netns, target: SocketAddr, bytes: u64) -> String {
    // The first SYN waits for the handshake: connect_timeout covers its retransmissions.
    let mut stream = from
        .enter(|| TcpStream::connect_timeout(&target, STALL))
        .unwrap_or_else(|e| panic!("{label}: cannot connect to {target} through the tunnel: {e}"));
    stream.set_write_timeout(Some(STALL)).unwrap();
    let pattern = Pattern::new(bytes ^ target.port() as u64);
    let mut digest = digest::Context::new(&digest::SHA256);
    let mut buffer = vec![0; CHUNK];
    let (mut sent, mut chunk) = (0, 0);
    while sent < bytes {
        let len = CHUNK.min((bytes - sent) as usize);
        pattern.fill(chunk, &mut buffer[..len]);
        stream.write_all(&buffer[..len]).unwrap_or_else(|e| {
            panic!("{label}: write stalled after {sent} of {bytes} bytes: {e}")
        });
        digest.update(&buffer[..len]);
        sent += len as u64;
        chunk += 1;
    }
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    hex(digest.finish())
}

/// Accepts one connection and reads it to its end; returns the bytes and their SHA-256.
fn receive_all(label: &str, listener: &TcpListener, start: Instant) -> (u64, String) {
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock && start.elapsed() < STALL => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{label}: no connection through the tunnel: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(STALL)).unwrap();
    let mut digest = digest::Context::new(&digest::SHA256);
    let mut buffer = vec![0; 256 * 1024];
    let mut received = 0;
    loop {
        assert!(
            start.elapsed() < TRANSFER_DEADLINE,
            "{label}: not finished after {TRANSFER_DEADLINE:?} ({received} bytes in)"
        );
        match stream.read(&mut buffer) {
            Ok(0) => return (received, hex(digest.finish())),
            Ok(n) => {
                digest.update(&buffer[..n]);
                received += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("{label}: read stalled after {received} bytes: {e}"),
        }
    }
}

/// Pings the gateway's tunnel address `gateway` from the client: the gateway learns where the
/// client is from its handshake, and has nowhere to send to before.
fn handshake(topology: &Topology, gateway: &str) {
    assert!(
        ping(&topology.client, gateway, &[]),
        "no ping from the client to {gateway} through the tunnel"
    );
}

/// Transfers `bytes` each way at once between the client's and the gateway's tunnel addresses.
fn both_ways(topology: &Topology, client: &str, gateway: &str, bytes: u64) -> [Transfer; 2] {
    handshake(topology, gateway);
    let (client, gateway): (IpAddr, IpAddr) = (client.parse().unwrap(), gateway.parse().unwrap());
    std::thread::scope(|scope| {
        let up = scope.spawn(|| {
            tcp_transfer(
                "client -> gateway",
                &topology.client,
                &topology.gateway,
                gateway,
                bytes,
            )
        });
        let down = tcp_transfer(
            "gateway -> client",
            &topology.gateway,
            &topology.client,
            client,
            bytes,
        );
        [up.join().expect("client -> gateway"), down]
    })
}

/// The gateway's `[[peer]]` for the client, with `allowed_ips`.
fn client_peer(client_key: &KeyPair, allowed_ips: &[&str]) -> String {
    let allowed: Vec<String> = allowed_ips.iter().map(|ip| format!("\"{ip}\"")).collect();
    format!(
        "[[peer]]\nname = \"admin\"\npublic_key = \"{}\"\nallowed_ips = [{}]\n",
        client_key.public,
        allowed.join(", ")
    )
}

/// A gateway (lab-vpn) and a lab-vpn client connected to it.
struct LabVpnPair {
    topology: Topology,
    _gateway: lab_tests::daemon_process::Started,
    _client: lab_tests::daemon_process::Started,
    client_interface: String,
}

fn lab_vpn_pair() -> LabVpnPair {
    let topology = Topology::new();
    let (gateway_key, client_key) = (key_pair(), key_pair());
    let peer = client_peer(&client_key, &[&format!("{CLIENT_TUNNEL}/32")]);
    let gateway = topology.start_gateway(&topology.gateway_config(&gateway_key, &peer));
    let (client, client_interface) = topology.start_lab_vpn_client(&client_key, &gateway_key);
    LabVpnPair {
        topology,
        _gateway: gateway,
        _client: client,
        client_interface,
    }
}

#[test]
fn two_hundred_megabytes_of_tcp_each_way_between_two_lab_vpn_arrive_byte_identical() {
    let pair = lab_vpn_pair();
    for transfer in both_ways(&pair.topology, CLIENT_TUNNEL, GATEWAY_TUNNEL, 200 * MB) {
        transfer.assert_identical();
    }
}

/// The MTU of `interface` in `netns`, as the kernel has it.
fn mtu(netns: &Netns, interface: &str) -> usize {
    // `ip netns exec` mounts the namespace's own /sys.
    let output = netns
        .command("cat")
        .arg(format!("/sys/class/net/{interface}/mtu"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no MTU for {interface} in {}", netns.name))
}

/// Datagram `sequence` of UDP flow `flow`: sizes alternate from both ends of 1..=`largest` (1,
/// largest, 2, largest - 1, …) so that every size is sent and small ones follow big ones; the
/// bytes start with the sequence number (as much of it as fits) and all follow from it.
fn datagram(flow: usize, sequence: u32, largest: usize) -> Vec<u8> {
    let k = (sequence as usize + flow * 7) % largest;
    let size = if k % 2 == 0 {
        1 + k / 2
    } else {
        largest - k / 2
    };
    let mut bytes: Vec<u8> = (0..size)
        .map(|i| (sequence as usize * 31 + i * 7 + flow) as u8)
        .collect();
    let number = sequence.to_le_bytes();
    let n = size.min(number.len());
    bytes[..n].copy_from_slice(&number[..n]);
    bytes
}

/// Datagrams in flight before the sender waits for the receiver's acknowledgement: a flow
/// control, so that nothing is lost to a full socket buffer and every loss is the tunnel's.
const WINDOW: u32 = 32;

/// Sends `count` datagrams of `flow` from `from` (bound to `from_address`) to `to_address` in
/// `to`, `WINDOW` at a time; the receiver checks each against the one expected next and panics
/// on the first that is missing, out of order or different.
fn udp_flow(
    flow: usize,
    (from, from_address): (&Netns, &str),
    (to, to_address): (&Netns, &str),
    count: u32,
    largest: usize,
) {
    let bind = |netns: &Netns, address: &str| {
        let address: IpAddr = address.parse().unwrap();
        let socket = netns
            .enter(|| UdpSocket::bind(SocketAddr::new(address, 0)))
            .unwrap_or_else(|e| panic!("flow {flow}: cannot bind {address}: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        socket
    };
    let (sender, receiver) = (bind(from, from_address), bind(to, to_address));
    let target = receiver.local_addr().unwrap();
    std::thread::scope(|scope| {
        let receiving = scope.spawn(|| {
            let mut buffer = vec![0; 65536];
            let mut last_arrival = Instant::now();
            let acknowledge = |next: u32, peer: SocketAddr| {
                receiver.send_to(&next.to_le_bytes(), peer).unwrap();
            };
            let mut peer = None;
            let mut next = 0;
            while next < count {
                match receiver.recv_from(&mut buffer) {
                    Ok((n, from)) => {
                        let expected = datagram(flow, next, largest);
                        assert!(
                            buffer[..n] == expected[..],
                            "flow {flow}: datagram {next} ({} bytes) expected, got {n} bytes \
                             starting {:02x?}",
                            expected.len(),
                            &buffer[..n.min(8)]
                        );
                        next += 1;
                        last_arrival = Instant::now();
                        peer = Some(from);
                        if next % WINDOW == 0 || next == count {
                            acknowledge(next, from);
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        assert!(
                            last_arrival.elapsed() < STALL,
                            "flow {flow}: datagram {next} of {count} never arrived"
                        );
                        // An acknowledgement can be lost too: say again where we are.
                        if let Some(peer) = peer {
                            acknowledge(next, peer);
                        }
                    }
                    Err(e) => panic!("flow {flow}: {e}"),
                }
            }
            // The last acknowledgement, again, in case the first was lost.
            if let Some(peer) = peer {
                for _ in 0..3 {
                    acknowledge(count, peer);
                }
            }
        });
        let mut acknowledged = 0;
        let mut sent = 0;
        let mut waiting_since = Instant::now();
        let mut answer = [0; 4];
        while acknowledged < count {
            while sent < count && sent < acknowledged + WINDOW {
                sender
                    .send_to(&datagram(flow, sent, largest), target)
                    .unwrap_or_else(|e| panic!("flow {flow}: sending datagram {sent}: {e}"));
                sent += 1;
            }
            match sender.recv_from(&mut answer) {
                Ok((4, _)) => {
                    acknowledged = acknowledged.max(u32::from_le_bytes(answer));
                    waiting_since = Instant::now();
                }
                Ok(_) => {}
                Err(_) if receiving.is_finished() => break,
                Err(_) => assert!(
                    waiting_since.elapsed() < STALL,
                    "flow {flow}: no acknowledgement past datagram {acknowledged}"
                ),
            }
        }
        receiving
            .join()
            .unwrap_or_else(|_| panic!("flow {flow}: the receiver found a datagram missing, out of order or altered (above)"));
    });
}

#[test]
fn udp_datagrams_of_every_size_to_the_mtu_arrive_complete_and_in_order_per_flow() {
    let pair = lab_vpn_pair();
    let topology = &pair.topology;
    handshake(topology, GATEWAY_TUNNEL);
    // The largest UDP payload in one tunnel packet: the MTU less the IPv4 and UDP headers.
    let largest = mtu(&topology.client, &pair.client_interface)
        .min(mtu(&topology.gateway, &topology.interface))
        - 28;
    // Every size twice per flow.
    let count = 2 * largest as u32;
    let client = (&topology.client, CLIENT_TUNNEL);
    let gateway = (&topology.gateway, GATEWAY_TUNNEL);
    let start = Instant::now();
    std::thread::scope(|scope| {
        let flows = [
            scope.spawn(|| udp_flow(0, client, gateway, count, largest)),
            scope.spawn(|| udp_flow(1, client, gateway, count, largest)),
            scope.spawn(|| udp_flow(2, gateway, client, count, largest)),
        ];
        for (flow, handle) in flows.into_iter().enumerate() {
            handle
                .join()
                .unwrap_or_else(|_| panic!("UDP flow {flow} failed (above)"));
        }
    });
    println!(
        "3 UDP flows of {count} datagrams (1 to {largest} bytes) complete and in order in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn an_ipv6_flow_crosses_the_tunnel_byte_identical() {
    let topology = Topology::new();
    let (gateway_key, client_key) = (key_pair(), key_pair());
    let peer = client_peer(
        &client_key,
        &[
            &format!("{CLIENT_TUNNEL}/32"),
            &format!("{CLIENT_TUNNEL_V6}/128"),
        ],
    );
    let mut gateway_doc: toml_edit::DocumentMut = topology
        .gateway_config(&gateway_key, &peer)
        .parse()
        .unwrap();
    let addresses = gateway_doc["interface"]["address"]
        .as_array_mut()
        .expect("interface.address is an array");
    addresses.push(format!("{GATEWAY_TUNNEL_V6}/64"));
    let _gateway = topology.start_gateway(&gateway_doc.to_string());

    let interface = unique_interface("wgl");
    let mut client_doc: toml_edit::DocumentMut = client_config(
        topology.dir.path(),
        &interface,
        &client_key,
        &gateway_key,
        "",
        topology.offload,
    )
    .parse()
    .unwrap();
    client_doc["interface"]["address"]
        .as_array_mut()
        .expect("interface.address is an array")
        .push(format!("{CLIENT_TUNNEL_V6}/128"));
    client_doc["peer"][0]["allowed_ips"]
        .as_array_mut()
        .expect("peer.allowed_ips is an array")
        .push(format!("{GATEWAY_TUNNEL_V6}/128"));
    let _client = lab_tests::daemon_process::Started::start_in(
        Some(&topology.client),
        BIN,
        &client_doc.to_string(),
    );

    for transfer in both_ways(&topology, CLIENT_TUNNEL_V6, GATEWAY_TUNNEL_V6, 50 * MB) {
        transfer.assert_identical();
    }
}

#[test]
fn a_wireguard_go_peer_moves_a_bulk_transfer_byte_identical() {
    let topology = Topology::new();
    let (gateway_key, client_key) = (key_pair(), key_pair());
    let peer = client_peer(&client_key, &[&format!("{CLIENT_TUNNEL}/32")]);
    let _gateway = topology.start_gateway(&topology.gateway_config(&gateway_key, &peer));
    let _go = wireguard_go_client(&topology, &client_key, &gateway_key, None);
    for transfer in both_ways(&topology, CLIENT_TUNNEL, GATEWAY_TUNNEL, 100 * MB) {
        transfer.assert_identical();
    }
}
