//! Free loopback ports for daemons under test.

use std::net::{SocketAddr, TcpListener, UdpSocket};

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it; a collision with a
/// concurrent test would show as a bind error, not a silent pass).
pub fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free TCP port on loopback: {e}"))
}

pub fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap_or_else(|e| panic!("no free UDP port on loopback: {e}"))
}
