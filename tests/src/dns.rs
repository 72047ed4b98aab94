//! A DNS client of the tests' own: one A query over UDP or TCP, and the answer's code, its
//! authoritative bit and addresses. Written here rather than parsing `nslookup`'s output, so a
//! test asserts on the answer itself (an NXDOMAIN is not a timeout, a forwarded answer is not
//! an authoritative one).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// The response code of a name that does not exist.
pub const NXDOMAIN: u8 = 3;

/// What a server answered to an A query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The response code: 0 for an answer, [`NXDOMAIN`] for no such name.
    pub rcode: u8,
    /// Whether the server answered from its own data (the AA bit), not from a forwarder.
    pub authoritative: bool,
    /// The A records of the answer section.
    pub addresses: Vec<Ipv4Addr>,
}

/// An A query for `name`, recursion desired, with a fresh id; returns the id and the message.
pub fn a_query(name: &str) -> (u16, Vec<u8>) {
    static NEXT: AtomicU16 = AtomicU16::new(1);
    let id = NEXT
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(std::process::id() as u16);
    let mut message = Vec::with_capacity(18 + name.len());
    message.extend_from_slice(&id.to_be_bytes());
    // RD set; one question.
    message.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        message.push(label.len() as u8);
        message.extend_from_slice(label.as_bytes());
    }
    // The root label, type A, class IN.
    message.extend_from_slice(&[0, 0, 1, 0, 1]);
    (id, message)
}

/// The reply to query `id`, read.
pub fn parse_reply(id: u16, reply: &[u8]) -> Result<Answer, String> {
    let short = || format!("a reply of {} bytes is cut short", reply.len());
    let u16_at = |at: usize| -> Result<u16, String> {
        reply
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(short)
    };
    if u16_at(0)? != id {
        return Err(format!("a reply to another query (id {})", u16_at(0)?));
    }
    let flags = u16_at(2)?;
    if flags & 0x8000 == 0 {
        return Err("a query, not a reply".to_owned());
    }
    let questions = u16_at(4)?;
    let answers = u16_at(6)?;
    let mut at = 12;
    let skip_name = |mut at: usize| -> Result<usize, String> {
        loop {
            let len = *reply.get(at).ok_or_else(short)?;
            match len {
                0 => return Ok(at + 1),
                // A compression pointer ends the name.
                l if l & 0xC0 == 0xC0 => return Ok(at + 2),
                l => at += 1 + usize::from(l),
            }
        }
    };
    for _ in 0..questions {
        at = skip_name(at)? + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..answers {
        at = skip_name(at)?;
        let kind = u16_at(at)?;
        let length = usize::from(u16_at(at + 8)?);
        let data = reply.get(at + 10..at + 10 + length).ok_or_else(short)?;
        if kind == 1 && length == 4 {
            addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + length;
    }
    Ok(Answer {
        rcode: (flags & 0x000F) as u8,
        authoritative: flags & 0x0400 != 0,
        addresses,
    })
}

/// Asks `server` for the A records of `name` over UDP, from the calling thread's namespace;
/// an error when nothing answers within `timeout`.
pub fn resolve_udp(server: SocketAddr, name: &str, timeout: Duration) -> Result<Answer, String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let (id, query) = a_query(name);
    socket
        .send_to(&query, server)
        .map_err(|e| format!("send to {server}: {e}"))?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = socket
            .recv_from(&mut buf)
            .map_err(|e| format!("{name} from {server} over UDP: {e}"))?;
        // A stray datagram from elsewhere is not the answer.
        if from == server {
            return parse_reply(id, &buf[..n]);
        }
    }
}

/// Asks `server` for the A records of `name` over TCP, from the calling thread's namespace.
pub fn resolve_tcp(server: SocketAddr, name: &str, timeout: Duration) -> Result<Answer, String> {
    let mut stream = TcpStream::connect_timeout(&server, timeout)
        .map_err(|e| format!("connect to {server}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let (id, query) = a_query(name);
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    stream
        .write_all(&framed)
        .map_err(|e| format!("send to {server}: {e}"))?;
    let mut length = [0u8; 2];
    stream
        .read_exact(&mut length)
        .map_err(|e| format!("{name} from {server} over TCP: {e}"))?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream
        .read_exact(&mut reply)
        .map_err(|e| format!("{name} from {server} over TCP: {e}"))?;
    parse_reply(id, &reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_a_records_of_a_reply() {
        let (id, query) = a_query("cp1.lab");
        assert_eq!(&query[12..], b"\x03cp1\x03lab\x00\x00\x01\x00\x01");
        let mut reply = query.clone();
        // QR, AA, RD, RA; one answer, its name a pointer to the question.
        reply[2..4].copy_from_slice(&[0x85, 0x80]);
        reply[7] = 1;
        reply.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 10, 1, 11]);
        let answer = parse_reply(id, &reply).unwrap();
        assert_eq!(
            answer,
            Answer {
                rcode: 0,
                authoritative: true,
                addresses: vec![Ipv4Addr::new(10, 10, 1, 11)],
            }
        );
        assert!(parse_reply(id.wrapping_add(1), &reply).is_err());
        assert!(parse_reply(id, &query).is_err(), "the query is no reply");
        assert!(parse_reply(id, &reply[..reply.len() - 1]).is_err());
    }
}
