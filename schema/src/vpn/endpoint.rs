//! `host:port` as a WireGuard client's `Endpoint` takes it: what the gateway's clients dial,
//! often a dynamic DNS name on the home router rather than the gateway's own address.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Checks `text` as `HOST:PORT`: HOST a DNS name (`vpn.example.org`), an IPv4 address or an
/// IPv6 address in brackets (`[2001:db8::1]`), PORT 1 to 65535. The message says what is wrong.
pub fn check_endpoint(text: &str) -> Result<(), String> {
    let expected = "expected HOST:PORT, e.g. `vpn.example.org:51820`, `203.0.113.7:51820` or `[2001:db8::1]:51820`";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("`{text}` has no port: {expected}"));
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => {
            return Err(format!(
                "`{port}` in `{text}` is not a port (1 to 65535): {expected}"
            ))
        }
        Ok(_) => {}
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(_)) => Ok(()),
            _ => Err(format!(
                "`{host}` is not an IPv6 address in brackets: {expected}"
            )),
        };
    }
    if host.parse::<Ipv4Addr>().is_ok() || is_dns_name(host) {
        return Ok(());
    }
    Err(format!(
        "`{host}` is neither a DNS name nor an IP address (an IPv6 address goes in brackets): {expected}"
    ))
}

/// A name a resolver can look up: dot-separated labels of 1 to 63 letters, digits and inner
/// `-`, 253 bytes at most, a trailing dot allowed; not all digits (that is an address typo).
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    let label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(label)
        && !name.chars().all(|c| c.is_ascii_digit() || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_with_a_port_are_endpoints() {
        for good in [
            "vpn.example.org:51820",
            "home.duckdns.org.:443",
            "vpn:51820",
            "203.0.113.7:51820",
            "[2001:db8::1]:51820",
        ] {
            assert_eq!(check_endpoint(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        for (bad, says) in [
            ("vpn.example.org", "has no port"),
            ("vpn.example.org:0", "is not a port"),
            ("vpn.example.org:70000", "is not a port"),
            (":51820", "neither a DNS name"),
            ("bad_host!:51820", "neither a DNS name"),
            ("2001:db8::1:51820", "neither a DNS name"),
            ("[2001:db8::zz]:51820", "not an IPv6 address"),
            ("300.1.2.3:51820", "neither a DNS name"),
            ("-vpn.example.org:51820", "neither a DNS name"),
        ] {
            let message = check_endpoint(bad).expect_err(bad);
            assert!(message.contains(says), "{bad}: {message}");
        }
    }
}
