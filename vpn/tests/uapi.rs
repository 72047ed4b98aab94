//! The control socket under clients that are not `wg`: stalled, flooding, overlong, or sending
//! `set` sequences that make no sense. Each is answered or dropped while `wg show` keeps working
//! and the daemon keeps running.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::*;

/// What the daemon allows; the same numbers as `lab_vpn::uapi`.
const REQUEST_TIMEOUT: Duration = lab_vpn::uapi::REQUEST_TIMEOUT;
const MAX_CONNECTIONS: usize = lab_vpn::uapi::MAX_CONNECTIONS;

fn socket(topology: &Topology) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{}.sock", topology.interface))
}

fn connect(topology: &Topology) -> UnixStream {
    let stream = UnixStream::connect(socket(topology)).unwrap();
    // Well past the daemon's own timeout: a hang here is the daemon's failure, not the test's.
    stream.set_read_timeout(Some(REQUEST_TIMEOUT * 3)).unwrap();
    stream
}

/// Everything the daemon sends until it closes the connection (or the read times out). A close
/// with some of our request unread shows here as a reset after its answer: closed all the same.
fn read_to_close(stream: &mut UnixStream) -> (String, bool) {
    let mut text = Vec::new();
    let closed = match stream.read_to_end(&mut text) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    (String::from_utf8_lossy(&text).into_owned(), closed)
}

/// One request and its answer (up to the blank line that ends it).
fn request(topology: &Topology, text: &str) -> String {
    let mut stream = connect(topology);
    stream.write_all(text.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\n\n") {
        match stream.read(&mut byte) {
            Ok(1) => answer.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn wg_show_works(topology: &Topology) -> bool {
    topology
        .gateway
        .command("wg")
        .args(["show", &topology.interface, "dump"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn hex(base64_key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(base64_key)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Gateway {
    topology: Topology,
    daemon: lab_tests::daemon_process::Started,
    peer: KeyPair,
}

/// A gateway with one configured peer.
fn gateway() -> Gateway {
    let topology = Topology::new();
    let peer = key_pair();
    let config = topology.gateway_config(
        &key_pair(),
        &format!(
            "[[peer]]\nname = \"admin\"\npublic_key = \"{}\"\nallowed_ips = [\"{CLIENT_TUNNEL}/32\"]\n",
            peer.public
        ),
    );
    let daemon = topology.start_gateway(&config);
    Gateway {
        topology,
        daemon,
        peer,
    }
}

impl Gateway {
    fn assert_alive(&mut self) {
        assert!(!self.daemon.process.exited(), "lab-vpn exited");
        let logs = self.daemon.process.stderr().join("\n");
        assert!(!logs.contains("panicked"), "lab-vpn panicked: {logs}");
        assert!(wg_show_works(&self.topology), "wg show failed");
    }
}

#[test]
fn a_stalled_client_is_dropped_while_wg_show_works() {
    let mut gateway = gateway();
    let mut stalled = connect(&gateway.topology);
    // Half a request: a command, a key with no value and no newline.
    stalled.write_all(b"set=1\npublic_key=").unwrap();
    let since = Instant::now();
    for _ in 0..3 {
        gateway.assert_alive();
    }
    let (answer, closed) = read_to_close(&mut stalled);
    let waited = since.elapsed();
    assert!(closed, "the stalled client was not dropped");
    assert_eq!(answer, "", "a half request was answered");
    assert!(
        waited >= REQUEST_TIMEOUT - Duration::from_millis(500) && waited < REQUEST_TIMEOUT * 2,
        "dropped after {waited:?}, not about {REQUEST_TIMEOUT:?}"
    );
    // A client that connects and sends nothing at all goes the same way.
    let mut silent = connect(&gateway.topology);
    assert_eq!(read_to_close(&mut silent), (String::new(), true));
    gateway.assert_alive();
}

#[test]
fn overlong_lines_and_requests_are_refused_with_an_errno() {
    let mut gateway = gateway();
    let long = format!("set=1\nendpoint={}\n\n", "1".repeat(8192));
    let mut stream = connect(&gateway.topology);
    stream.write_all(long.as_bytes()).unwrap();
    let (answer, closed) = read_to_close(&mut stream);
    assert_eq!(answer, "errno=90\n\n");
    assert!(closed, "the connection stayed open after a refused line");

    // Short lines, too many of them: the whole request is bounded as well. The daemon stops
    // reading, so the writer runs on its own thread and may see the connection close.
    let mut stream = connect(&gateway.topology);
    let mut writer = stream.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        let _ = writer.write_all(b"set=1\n");
        let line = b"protocol_version=1\n";
        for _ in 0..(2 * lab_vpn::uapi::MAX_REQUEST / line.len()) {
            if writer.write_all(line).is_err() {
                return;
            }
        }
        let _ = writer.write_all(b"\n");
    });
    let (answer, closed) = read_to_close(&mut stream);
    assert_eq!(answer, "errno=90\n\n");
    assert!(closed);
    flood.join().unwrap();

    // A line just under the limit is read and judged like any other (a bad endpoint here).
    let fine = format!("set=1\nendpoint={}\n\n", "1".repeat(4000));
    assert_eq!(request(&gateway.topology, &fine), "errno=22\n\n");
    gateway.assert_alive();
}

#[test]
fn connections_are_bounded_and_the_slots_come_back() {
    let mut gateway = gateway();
    let held: Vec<UnixStream> = (0..MAX_CONNECTIONS)
        .map(|_| connect(&gateway.topology))
        .collect();
    // The daemon takes them in order; give it a moment to have accepted them all.
    std::thread::sleep(Duration::from_millis(500));
    let mut extra = connect(&gateway.topology);
    let since = Instant::now();
    let (answer, closed) = read_to_close(&mut extra);
    assert!(closed && answer.is_empty());
    assert!(
        since.elapsed() < REQUEST_TIMEOUT / 2,
        "the connection over the limit was not closed at once ({:?})",
        since.elapsed()
    );
    // The held ones time out and give their slots back.
    let deadline = Instant::now() + REQUEST_TIMEOUT * 3;
    while !wg_show_works(&gateway.topology) {
        assert!(Instant::now() < deadline, "wg show never worked again");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(held);
    gateway.assert_alive();
}

/// Before the fix, the first of these panicked the connection's task on `peers[index]` (index
/// past the end after `replace_peers=true` emptied the list): no answer, and `wg` saw the
/// connection reset.
#[test]
fn set_sequences_that_make_no_sense_get_an_errno_not_a_panic() {
    let mut gateway = gateway();
    let peer = hex(&gateway.peer.public);
    let other = hex(&key_pair().public);
    for (body, errno) in [
        (
            format!("public_key={peer}\nreplace_peers=true\nallowed_ip=10.10.100.7/32\n"),
            22,
        ),
        (
            format!("public_key={other}\nreplace_peers=true\nremove=true\n"),
            22,
        ),
        (
            format!("public_key={other}\nreplace_peers=true\npreshared_key={peer}\n"),
            22,
        ),
        (format!("public_key={other}\nlisten_port=1\n"), 22),
        // Lines after a removal belong to the removed peer and are skipped, as in wireguard-go.
        (
            format!("public_key={other}\nremove=true\nallowed_ip=10.10.100.7/32\n"),
            0,
        ),
        (
            format!("public_key={other}\nupdate_only=true\nendpoint=192.0.2.1:1\n"),
            0,
        ),
        (
            format!("public_key={other}\nupdate_only=true\nremove=true\n"),
            0,
        ),
        ("allowed_ip=10.10.100.7/32\n".to_owned(), 71),
        ("remove=true\n".to_owned(), 71),
        (format!("public_key=+{}\n", &peer[1..]), 22),
        ("public_key\n".to_owned(), 71),
        ("=\n".to_owned(), 22),
        (
            format!("public_key={peer}\npersistent_keepalive_interval=99999\n"),
            22,
        ),
        (
            format!("public_key={peer}\nallowed_ip=10.10.100.7/99\n"),
            22,
        ),
        (format!("public_key={peer}\nendpoint=[::1\n"), 22),
    ] {
        let answer = request(&gateway.topology, &format!("set=1\n{body}\n"));
        assert_eq!(answer, format!("errno={errno}\n\n"), "for:\n{body}");
        gateway.assert_alive();
    }
    // The refused requests changed nothing: the configured peer is still the only one, with
    // its allowed IP.
    let (_, peers) = wg_dump(&gateway.topology.gateway, &gateway.topology.interface);
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0][0], gateway.peer.public);
    assert_eq!(peers[0][3], format!("{CLIENT_TUNNEL}/32"));

    // What `wg set` sends for a real replacement still works.
    let new = key_pair();
    let answer = request(
        &gateway.topology,
        &format!(
            "set=1\nreplace_peers=true\npublic_key={}\nallowed_ip=10.10.100.9/32\n\n",
            hex(&new.public)
        ),
    );
    assert_eq!(answer, "errno=0\n\n");
    let (_, peers) = wg_dump(&gateway.topology.gateway, &gateway.topology.interface);
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0][0], new.public);
    gateway.assert_alive();
}
