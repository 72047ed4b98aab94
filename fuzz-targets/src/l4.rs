//! The first bytes of an L4 connection: the TLS ClientHello read for its server name, and the
//! PROXY protocol header from a trusted upstream.

use crate::shown;
use lab_lb::l4::proxy_protocol::{self, Parsed, Version};
use lab_lb::l4::sni::{parse_client_hello, Hello, MAX_HELLO_BYTES};

/// `lab_lb::l4::sni::parse_client_hello`: a name it returns is one a route can match and a log
/// line can carry; a verdict does not change as more bytes arrive.
pub fn sni(data: &[u8]) {
    let whole = parse_client_hello(data);
    if let Hello::Complete {
        server_name: Some(name),
    } = &whole
    {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)),
            "server name {name:?} is not a lower-case DNS name"
        );
    }
    if data.len() > MAX_HELLO_BYTES {
        return;
    }
    for cut in [data.len() / 2, data.len().saturating_sub(1)] {
        match parse_client_hello(&data[..cut]) {
            Hello::NeedMore => {}
            Hello::Invalid(_) => assert!(
                matches!(whole, Hello::Invalid(_)),
                "invalid at {cut} bytes, then {whole:?}: {}",
                shown(data)
            ),
            complete => assert_eq!(complete, whole, "at {cut} bytes: {}", shown(data)),
        }
    }
}

/// `lab_lb::l4::proxy_protocol::parse`: a header is found within the bytes, reads the same alone
/// and cut short needs more; its addresses written again (either version) read the same.
pub fn proxy_protocol(data: &[u8]) {
    let parsed = proxy_protocol::parse(data);
    match &parsed {
        Parsed::NeedMore => assert!(
            data.is_empty() || proxy_protocol::looks_like_header(data),
            "needs more, but no header starts so: {}",
            shown(data)
        ),
        Parsed::Invalid(_) => {}
        Parsed::Header { length, addresses } => {
            let length = *length;
            assert!(
                length <= data.len() && proxy_protocol::looks_like_header(data),
                "header of {length} bytes in {}",
                shown(data)
            );
            assert_eq!(proxy_protocol::parse(&data[..length]), parsed);
            assert_eq!(
                proxy_protocol::parse(&data[..length - 1]),
                Parsed::NeedMore,
                "{}",
                shown(data)
            );
            if let Some((source, destination)) = *addresses {
                assert_eq!(
                    source.is_ipv4(),
                    destination.is_ipv4(),
                    "one header, two families"
                );
                for version in [Version::V1, Version::V2] {
                    let header = proxy_protocol::encode(version, source, destination);
                    assert_eq!(
                        proxy_protocol::parse(&header),
                        Parsed::Header {
                            length: header.len(),
                            addresses: Some((source, destination))
                        },
                        "{version:?} of {source} -> {destination}"
                    );
                }
            }
        }
    }
}
