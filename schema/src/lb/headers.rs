//! The header fields the proxy writes itself on every message, which no route may add or
//! remove: lab-lb's HTTP path and the route checks of `lb.toml` use these same lists.

/// Fields that describe one hop, never forwarded (RFC 9110 §7.6.1); `Transfer-Encoding` goes
/// with the framing.
pub const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Fields that frame a message. They are never hop-by-hop (RFC 9110 §7.6.1): a `Connection`
/// naming one asks a proxy to drop the framing while the body still follows, so that the body
/// reads as the next message on a kept-alive connection (request smuggling, or a server
/// desynchronising the client). Such a message is refused: 400 from a client, 502 from a server.
pub const FRAMING: [&str; 2] = ["content-length", "transfer-encoding"];

/// Whether `name` (any case, surrounding whitespace ignored) is a framing or hop-by-hop field.
pub fn is_proxys_own(name: &str) -> bool {
    FRAMING
        .iter()
        .chain(&HOP_BY_HOP)
        .any(|field| name.trim().eq_ignore_ascii_case(field))
}
