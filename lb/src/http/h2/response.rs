//! A server's HTTP/1.1 response head as an h2 response: status and end-to-end fields (the
//! hop-by-hop ones, framing fields h2 does not use and what the route removes left out, the
//! route's own added), and how its body is framed on the server's connection.

use crate::http::h1::head::{replaced, response_framing, Framing, ResponseFraming};
use crate::http::router::{Route, HOP_BY_HOP};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::mem::MaybeUninit;

/// Header fields a response head may have (as on the HTTP/1.1 path).
const MAX_FIELDS: usize = 256;

/// A final response head, ready for the client.
pub(super) struct Head {
    pub status: http::StatusCode,
    pub fields: HeaderMap,
    pub framing: Framing,
    /// The server keeps its connection open after this response.
    pub keep_alive: bool,
}

/// What the bytes received so far make of a response head.
pub(super) enum Parsed {
    Partial,
    /// An interim (1xx) head, dropped: the bytes it took.
    Interim(usize),
    /// The final head and the bytes it took.
    Final(Head, usize),
    /// Not a response the proxy can pass on: the server is broken (502).
    Broken(&'static str),
}

/// Parses a response to a request (`to_head`: a HEAD, whose response has no body).
pub(super) fn parse(bytes: &[u8], to_head: bool, route: Option<&Route>) -> Parsed {
    let mut slots = [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, bytes, &mut slots);
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Broken("malformed response head"),
    };
    let (Some(code), Some(version)) = (resp.code, resp.version) else {
        return Parsed::Broken("malformed response head");
    };
    // No upgrade was asked for: h2 has none (RFC 9113 §8.6).
    if code == 101 {
        return Parsed::Broken("a 101 to a request that asked for no upgrade");
    }
    if code < 200 {
        return Parsed::Interim(head_len);
    }
    let Ok(status) = http::StatusCode::from_u16(code) else {
        return Parsed::Broken("malformed status");
    };
    let ResponseFraming {
        framing,
        keep_alive,
        transfer_coded,
        nominated,
    } = match response_framing(resp.headers, version, code, to_head) {
        Ok(framing) => framing,
        Err(why) => return Parsed::Broken(why),
    };
    let mut fields = HeaderMap::with_capacity(resp.headers.len() + 2);
    for f in resp.headers.iter() {
        let name = f.name;
        let dropped = HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || nominated.iter().any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            || name.eq_ignore_ascii_case("transfer-encoding")
            // A length goes on only where it frames the body the client gets (a HEAD's
            // answer keeps the length of the body it would have had); never on a 204.
            || (name.eq_ignore_ascii_case("content-length")
                && (transfer_coded || code == 204))
            || route.is_some_and(|r| replaced(name, &r.remove_response, &r.add_response));
        if dropped {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(f.value),
        ) else {
            return Parsed::Broken("a response field h2 cannot carry");
        };
        fields.append(name, value);
    }
    if let Some(route) = route {
        for (name, value) in &route.add_response {
            fields.append(name.clone(), value.clone());
        }
    }
    Parsed::Final(
        Head {
            status,
            fields,
            framing,
            keep_alive,
        },
        head_len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> Head {
        match parse(bytes, false, None) {
            Parsed::Final(head, n) => {
                assert_eq!(n, bytes.len());
                head
            }
            _ => panic!("not a final head: {}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn hop_by_hop_and_chunked_framing_fields_stay_on_the_servers_hop() {
        let got = head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\
              Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
              Trailer: grpc-status\r\nX-App: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
        );
        assert_eq!(got.framing, Framing::Chunked);
        assert!(got.keep_alive);
        let names: Vec<&str> = got.fields.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-app", "set-cookie"]);
        assert_eq!(got.fields.get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn framing_of_the_servers_body() {
        let got = head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(got.framing, Framing::Length(3));
        assert_eq!(got.fields["content-length"], "3");
        let got = head(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((got.framing, got.keep_alive), (Framing::UntilClose, false));
        let got = head(b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(got.framing, Framing::None);
        assert!(got.fields.is_empty());
        assert!(matches!(
            parse(b"HTTP/1.1 100 Continue\r\n\r\n", false, None),
            Parsed::Interim(25)
        ));
        for broken in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\n\r\n",
            b"nonsense\r\n\r\n",
        ] {
            assert!(matches!(parse(broken, false, None), Parsed::Broken(_)));
        }
    }
}
