//! Entry points for the fuzz targets (`fuzz-targets/`, `fuzz/`): the head parsers and the
//! chunked scanner of this path, reachable from outside the crate without the connection loop
//! around them. Not an API: nothing else should build on it.

pub use super::chunked::{ChunkError, ChunkedScanner};
pub use super::head::{Framing, Parsed, Request, Response};
use crate::http::router::Forwarding;

/// The client address the forwarding fields name.
const CLIENT: &str = "10.0.0.1";

/// [`super::head::parse_request`] as the connection loop calls it for a request the router
/// sends to a plain HTTP/1.1 backend on a route without header changes, from a trusted proxy
/// (so the client's own `X-Forwarded-For` and `Forwarded` are carried on, the widest case).
pub fn parse_request(bytes: &[u8], max_head: usize, out: &mut Vec<u8>) -> Parsed<Request> {
    super::head::parse_request(bytes, max_head, out, |request| {
        let xff = match &request.xff {
            Some(chain) => format!("{chain}, {CLIENT}"),
            None => CLIENT.to_owned(),
        };
        let element = format!("for={CLIENT};proto=http");
        let forwarded = match &request.forwarded {
            Some(chain) => format!("{chain}, {element}"),
            None => element,
        };
        Some(super::head::Plan {
            route: None,
            forwarding: Forwarding {
                xff,
                proto: "http",
                forwarded,
            },
        })
    })
}

/// [`super::head::parse_response`] for a route without header changes: `to_head` for the
/// answer to a HEAD, `close` when the client's connection ends after it, `upgrade` when the
/// request asked for one.
pub fn parse_response(
    bytes: &[u8],
    to_head: bool,
    close: bool,
    upgrade: bool,
    out: &mut Vec<u8>,
) -> Parsed<Response> {
    let client = super::head::ForClient {
        route: None,
        close,
        upgrade,
        out,
    };
    super::head::parse_response(bytes, to_head, client)
}
