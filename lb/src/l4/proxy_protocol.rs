//! The PROXY protocol (HAProxy's `proxy-protocol.txt`), versions 1 and 2: writing the header that
//! tells a backend who the client really is, and reading one from a trusted upstream.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `proxy_protocol` of a backend in `lb.toml`.
pub use lab_schema::lb::ProxyProtocolVersion as Version;

/// The 12 bytes every version-2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;

/// The header announcing a connection from `source` to `destination`.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    match version {
        Version::V1 => encode_v1(source, destination),
        Version::V2 => encode_v2(source, destination),
    }
}

/// Both addresses in one family: IPv4 pairs stay IPv4, anything else becomes IPv6.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    if source.is_ipv4() && destination.is_ipv4() {
        (source, destination)
    } else {
        (v6(source), v6(destination))
    }
}

fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    let mut header = V2_SIGNATURE.to_vec();
    header.push(0x21); // version 2, command PROXY
    let mut addresses = Vec::with_capacity(36);
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            addresses.extend_from_slice(&s.octets());
            addresses.extend_from_slice(&d.octets());
            0x11 // AF_INET, STREAM
        }
        (s, d) => {
            let as_v6 = |ip: IpAddr| match ip {
                IpAddr::V6(v6) => v6,
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            };
            addresses.extend_from_slice(&as_v6(s).octets());
            addresses.extend_from_slice(&as_v6(d).octets());
            0x21 // AF_INET6, STREAM
        }
    };
    addresses.extend_from_slice(&source.port().to_be_bytes());
    addresses.extend_from_slice(&destination.port().to_be_bytes());
    header.push(family);
    header.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    header.extend_from_slice(&addresses);
    header
}

/// What the first bytes from a trusted upstream say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// A complete header of `length` bytes; `addresses` is `None` for `LOCAL`/`UNKNOWN`
    /// (health checks from the upstream itself): the connection's own addresses stand.
    Header {
        /// Bytes the header takes; the client's own data follows them.
        length: usize,
        /// The client (source) and the address it connected to (destination).
        addresses: Option<(SocketAddr, SocketAddr)>,
    },
    /// Not a PROXY header, or a malformed one: why.
    Invalid(&'static str),
}

/// Whether `received` could be the start of a PROXY header (used to refuse one from an
/// upstream that is not trusted to send it).
pub fn looks_like_header(received: &[u8]) -> bool {
    let n = received.len().min(V2_SIGNATURE.len());
    n > 0
        && (received[..n] == V2_SIGNATURE[..n]
            || received[..n.min(V1_PREFIX.len())] == V1_PREFIX[..n.min(V1_PREFIX.len())])
}

/// What the first bytes of a connection from a trusted upstream say: `received` is every byte so
/// far, a v1 or v2 header at its start.
pub fn parse(received: &[u8]) -> Parsed {
    if received.is_empty() {
        return Parsed::NeedMore;
    }
    let n = received.len().min(V2_SIGNATURE.len());
    if received[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Parsed::NeedMore
        } else {
            parse_v2(received)
        };
    }
    let n = received.len().min(V1_PREFIX.len());
    if received[..n] == V1_PREFIX[..n] {
        return if n < V1_PREFIX.len() {
            Parsed::NeedMore
        } else {
            parse_v1(received)
        };
    }
    Parsed::Invalid("no PROXY protocol header")
}

fn parse_v1(received: &[u8]) -> Parsed {
    let window = &received[..received.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if received.len() >= V1_MAX {
            Parsed::Invalid("PROXY v1 header longer than 107 bytes")
        } else {
            Parsed::NeedMore
        };
    };
    let Ok(line) = std::str::from_utf8(&window[..end]) else {
        return Parsed::Invalid("PROXY v1 header is not ASCII");
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let length = end + 2;
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Parsed::Header {
            length,
            addresses: None,
        },
        ["PROXY", family @ ("TCP4" | "TCP6"), source, destination, source_port, destination_port] =>
        {
            let parsed = (|| {
                let source: IpAddr = source.parse().ok()?;
                let destination: IpAddr = destination.parse().ok()?;
                // Both addresses of the family named: TCP6 with an IPv4 address was taken.
                let family_matches = if *family == "TCP4" {
                    source.is_ipv4() && destination.is_ipv4()
                } else {
                    source.is_ipv6() && destination.is_ipv6()
                };
                if !family_matches {
                    return None;
                }
                let source_port: u16 = source_port.parse().ok()?;
                let destination_port: u16 = destination_port.parse().ok()?;
                Some((
                    SocketAddr::new(source, source_port),
                    SocketAddr::new(destination, destination_port),
                ))
            })();
            match parsed {
                Some(addresses) => Parsed::Header {
                    length,
                    addresses: Some(addresses),
                },
                None => Parsed::Invalid("malformed PROXY v1 addresses"),
            }
        }
        _ => Parsed::Invalid("malformed PROXY v1 header"),
    }
}

fn parse_v2(received: &[u8]) -> Parsed {
    if received.len() < 16 {
        return Parsed::NeedMore;
    }
    let version_command = received[12];
    if version_command >> 4 != 2 {
        return Parsed::Invalid("PROXY v2 header with another version");
    }
    let family = received[13];
    let body_length = usize::from(u16::from_be_bytes([received[14], received[15]]));
    let length = 16 + body_length;
    let Some(body) = received.get(16..length) else {
        return Parsed::NeedMore;
    };
    match version_command & 0x0f {
        0x0 => Parsed::Header {
            length,
            addresses: None,
        }, // LOCAL
        0x1 => match family {
            0x11 if body.len() >= 12 => {
                let source = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
                let destination = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
                let source_port = u16::from_be_bytes([body[8], body[9]]);
                let destination_port = u16::from_be_bytes([body[10], body[11]]);
                Parsed::Header {
                    length,
                    addresses: Some((
                        SocketAddr::from((source, source_port)),
                        SocketAddr::from((destination, destination_port)),
                    )),
                }
            }
            0x21 if body.len() >= 36 => {
                let ip = |b: &[u8]| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&b[..16]);
                    Ipv6Addr::from(octets)
                };
                let source_port = u16::from_be_bytes([body[32], body[33]]);
                let destination_port = u16::from_be_bytes([body[34], body[35]]);
                Parsed::Header {
                    length,
                    addresses: Some((
                        SocketAddr::from((ip(&body[0..16]), source_port)),
                        SocketAddr::from((ip(&body[16..32]), destination_port)),
                    )),
                }
            }
            // UNSPEC or a family we do not proxy (UNIX): keep the connection's own addresses.
            0x00 | 0x31 | 0x32 => Parsed::Header {
                length,
                addresses: None,
            },
            _ => Parsed::Invalid("PROXY v2 address block too short for its family"),
        },
        _ => Parsed::Invalid("PROXY v2 header with an unknown command"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_round_trip() {
        let header = encode(
            Version::V1,
            addr("203.0.113.7:40000"),
            addr("10.10.2.2:443"),
        );
        assert_eq!(header, b"PROXY TCP4 203.0.113.7 10.10.2.2 40000 443\r\n");
        assert_eq!(
            parse(&header),
            Parsed::Header {
                length: header.len(),
                addresses: Some((addr("203.0.113.7:40000"), addr("10.10.2.2:443")))
            }
        );
    }

    #[test]
    fn v2_round_trip_v4_and_v6() {
        for (source, destination) in [
            ("203.0.113.7:40000", "10.10.2.2:443"),
            ("[2001:db8::1]:5000", "[2001:db8::2]:443"),
        ] {
            let header = encode(Version::V2, addr(source), addr(destination));
            let mut with_payload = header.clone();
            with_payload.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(
                parse(&with_payload),
                Parsed::Header {
                    length: header.len(),
                    addresses: Some((addr(source), addr(destination)))
                }
            );
        }
    }

    #[test]
    fn mixed_families_are_sent_as_ipv6() {
        let header = encode(Version::V1, addr("[2001:db8::1]:5000"), addr("10.0.0.1:80"));
        assert_eq!(
            header,
            b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 5000 80\r\n"
        );
    }

    #[test]
    fn partial_headers_need_more_and_garbage_is_refused() {
        let header = encode(Version::V2, addr("1.2.3.4:5"), addr("6.7.8.9:10"));
        for cut in 0..header.len() {
            assert_eq!(parse(&header[..cut]), Parsed::NeedMore, "v2 cut at {cut}");
        }
        let header = encode(Version::V1, addr("1.2.3.4:5"), addr("6.7.8.9:10"));
        for cut in 0..header.len() {
            assert_eq!(parse(&header[..cut]), Parsed::NeedMore, "v1 cut at {cut}");
        }
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Invalid(_)));
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 nonsense\r\n"),
            Parsed::Invalid(_)
        ));
        // Addresses of another family than the one named (the second found by the
        // `proxy_protocol` fuzz target).
        for mixed in [
            &b"PROXY TCP6 b8::1 0.0.0.1 5000 00\r\n"[..],
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
        ] {
            assert!(matches!(parse(mixed), Parsed::Invalid(_)));
        }
        assert!(matches!(parse(&[b'P'; 1]), Parsed::NeedMore));
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2"),
            Parsed::NeedMore
        ));
        assert!(matches!(
            parse(&[b"PROXY ".as_slice(), &[b'x'; 120]].concat()),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn local_and_unknown_keep_the_connection_addresses() {
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                length: 15,
                addresses: None
            }
        );
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(
            parse(&local),
            Parsed::Header {
                length: 16,
                addresses: None
            }
        );
    }

    #[test]
    fn recognises_the_start_of_a_header() {
        assert!(looks_like_header(b"PROX"));
        assert!(looks_like_header(&V2_SIGNATURE[..5]));
        assert!(!looks_like_header(b"GET /"));
        assert!(!looks_like_header(&[0x16, 0x03, 0x01]));
    }
}
