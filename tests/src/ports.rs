//! Free loopback ports for daemons under test.
//!
//! A port the kernel picks (`bind` to port 0) comes from the ephemeral range, the same range
//! every outgoing connection of every test takes its local port from: between the pick and
//! the daemon's own `bind`, a client's or a proxy's connection can take it, and the daemon
//! refuses to start. So ports are picked below that range, where no connection is given one,
//! checked free, and never handed out twice by this process.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;

/// Lowest port handed out: above the well-known and most registered services' ports.
const LOWEST: u16 = 20000;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A TCP port on 127.0.0.1 that is free and outside the ephemeral range.
pub fn free_tcp() -> SocketAddr {
    pick(|address| TcpListener::bind(address).is_ok())
}

/// A UDP port on 127.0.0.1 that is free and outside the ephemeral range.
pub fn free_udp() -> SocketAddr {
    pick(|address| UdpSocket::bind(address).is_ok())
}

fn pick(free: impl Fn(SocketAddr) -> bool) -> SocketAddr {
    let highest = ephemeral_start().saturating_sub(1);
    assert!(highest > LOWEST, "the ephemeral range starts at {highest}");
    let span = u64::from(highest - LOWEST) + 1;
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    // Test binaries run one after another and each starts afresh: a start that differs per
    // process and per moment keeps them off each other's recent ports.
    let mut state = seed();
    for _ in 0..span {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = LOWEST + ((state >> 33) % span) as u16;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        if !handed_out.contains(&port) && free(address) {
            handed_out.insert(port);
            return address;
        }
    }
    panic!("no free port on loopback between {LOWEST} and {highest}")
}

/// The first port of the kernel's ephemeral range (Linux's default when unreadable).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_outside_the_ephemeral_range() {
        let ports: Vec<SocketAddr> = (0..200).map(|_| free_tcp()).collect();
        let distinct: BTreeSet<u16> = ports.iter().map(|a| a.port()).collect();
        assert_eq!(distinct.len(), ports.len());
        for address in &ports {
            assert!(address.port() >= LOWEST && address.port() < ephemeral_start());
            TcpListener::bind(address).unwrap_or_else(|e| panic!("{address}: {e}"));
        }
        assert!(free_udp().port() < ephemeral_start());
    }
}
