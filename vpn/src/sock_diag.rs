//! The kernel's own account of a UDP socket (what `ss -uam` shows), asked over netlink
//! (`NETLINK_SOCK_DIAG`): the daemon runs with `ProcSubset=pid`, so `/proc/net` is not there to
//! read. One request per metrics scrape.

use nix::sys::socket::AddressFamily;
use std::io;

const NLMSG_HEADER: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
/// `struct inet_diag_req_v2`: family, protocol, extensions, pad, states, then the 48-byte
/// `inet_diag_sockid`.
const REQUEST: usize = 56;
/// `struct inet_diag_msg`, after which its attributes follow.
const RESPONSE: usize = 72;
/// The attribute with the socket's `sk_meminfo` counters, and the one of them that counts drops.
const INET_DIAG_SKMEMINFO: u16 = 7;
const SK_MEMINFO_DROPS: usize = 8;

/// Datagrams the kernel dropped for a full receive buffer, over the UDP sockets bound to `port`
/// (the gateway has one), IPv4 or IPv6 as `ipv6` says.
pub fn udp_drops(port: u16, ipv6: bool) -> io::Result<u64> {
    let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_SOCK_DIAG)?;
    // The kernel answers at once; the timeout only bounds a scrape if it ever did not.
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(1, 0),
    )?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    socket.send(&request(port, ipv6), 0)?;
    let mut drops = 0;
    loop {
        let (datagram, _) = socket.recv_from_full()?;
        match read_drops(&datagram, port)? {
            Reply::More(found) => drops += found,
            Reply::Done(found) => return Ok(drops + found),
        }
    }
}

/// A dump request for the family's UDP sockets with their memory counters. The kernel's UDP dump
/// does not filter by the socket id's port (only by bytecode, which this sends none of), so it
/// answers with every UDP socket of the namespace and [`socket_drops`] picks `port`'s.
fn request(port: u16, ipv6: bool) -> Vec<u8> {
    let length = (NLMSG_HEADER + REQUEST) as u32;
    let mut out = Vec::with_capacity(length as usize);
    out.extend_from_slice(&length.to_ne_bytes());
    out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    let family = if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    out.push(family as i32 as u8);
    out.push(17); // IPPROTO_UDP
    out.push(1 << (INET_DIAG_SKMEMINFO - 1));
    out.push(0);
    out.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    out.extend_from_slice(&port.to_be_bytes()); // source port
    out.resize(NLMSG_HEADER + REQUEST, 0); // the rest of the socket id: any
    out
}

enum Reply {
    /// The drops of the sockets in this datagram; more datagrams follow.
    More(u64),
    /// The drops of the sockets in this datagram, the last of the dump.
    Done(u64),
}

/// The drops of the sockets bound to `port` in one datagram of the kernel's reply.
fn read_drops(datagram: &[u8], port: u16) -> io::Result<Reply> {
    let malformed = || io::Error::other("malformed sock_diag reply");
    let mut drops = 0;
    let mut rest = datagram;
    while rest.len() >= NLMSG_HEADER {
        let length = u32::from_ne_bytes(rest[0..4].try_into().map_err(|_| malformed())?) as usize;
        let kind = u16::from_ne_bytes(rest[4..6].try_into().map_err(|_| malformed())?);
        if length < NLMSG_HEADER || length > rest.len() {
            return Err(malformed());
        }
        let payload = &rest[NLMSG_HEADER..length];
        match kind {
            NLMSG_DONE => return Ok(Reply::Done(drops)),
            NLMSG_ERROR => {
                let code = payload
                    .get(0..4)
                    .and_then(|b| b.try_into().ok())
                    .map(i32::from_ne_bytes)
                    .ok_or_else(malformed)?;
                return Err(io::Error::from_raw_os_error(-code));
            }
            SOCK_DIAG_BY_FAMILY => drops += socket_drops(payload, port).unwrap_or(0),
            _ => {}
        }
        // Messages are aligned to 4 bytes.
        rest = rest.get(length.next_multiple_of(4)..).unwrap_or(&[]);
    }
    Ok(Reply::More(drops))
}

/// One socket's drops, from its `inet_diag_msg` and attributes, if it is bound to `port`.
fn socket_drops(message: &[u8], port: u16) -> Option<u64> {
    // idiag_family, state, timer, retrans, then the socket id: its source port first.
    let source_port = u16::from_be_bytes(message.get(4..6)?.try_into().ok()?);
    if source_port != port {
        return None;
    }
    let mut attributes = message.get(RESPONSE..)?;
    while attributes.len() >= 4 {
        let length = usize::from(u16::from_ne_bytes(attributes[0..2].try_into().ok()?));
        let kind = u16::from_ne_bytes(attributes[2..4].try_into().ok()?);
        if length < 4 || length > attributes.len() {
            return None;
        }
        if kind == INET_DIAG_SKMEMINFO {
            let at = 4 + 4 * SK_MEMINFO_DROPS;
            let counter = attributes.get(at..at + 4)?;
            return Some(u64::from(u32::from_ne_bytes(counter.try_into().ok()?)));
        }
        attributes = attributes.get(length.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_that_dropped_nothing_reads_zero_and_junk_is_an_error_not_a_panic() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        assert_eq!(udp_drops(port, false).unwrap(), 0);
        for junk in [
            &[][..],
            &[0xff; 15],
            &[0xff; 64],
            &[20, 0, 0, 0, 20, 0, 0, 0],
        ] {
            let _ = read_drops(junk, port);
        }
        assert!(read_drops(&[8, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], port).is_err());
    }
}
