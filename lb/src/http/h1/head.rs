//! Request and response heads on the HTTP/1.1 path: parsed with httparse, checked for what the
//! path carries, and written out for the other side without the hop-by-hop fields.

use crate::http::router::{host_without_port, names_framing, Forwarding, Route, HOP_BY_HOP};
use std::mem::MaybeUninit;

/// Header fields a head may have, as many as pingora allows (a request with more goes to
/// pingora's session, which refuses it). Left uninitialised until parsed: a request does not
/// pay for filling 256 slots.
const MAX_FIELDS: usize = 256;

/// Set by the proxy on every request; what the client sent is read, not passed on.
const FORWARDING: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

/// What the bytes received so far make of a head.
pub enum Parsed<T> {
    /// More bytes needed.
    Partial,
    /// A head this path does not carry (or not valid at all): pingora's session takes over.
    Other,
    /// The head, and the bytes it took (its body, or the next message, follows them).
    Complete(T, usize),
}

/// What the proxy needs of a request it carries.
#[derive(Debug)]
pub struct Request {
    /// The request method.
    pub method: http::Method,
    /// The target's path, without the query: what routes match.
    pub path: String,
    /// As routes match it: lower-case, without port.
    pub host: String,
    /// The client asked to close after this request.
    pub close: bool,
    /// Bytes of body after the head (`Content-Length`).
    pub body: u64,
    /// The `X-Forwarded-For` fields the client sent, joined with `, `.
    pub xff: Option<String>,
    /// The `Forwarded` fields the client sent, joined with `, `.
    pub forwarded: Option<String>,
    /// A protocol the client asks to switch to (`Upgrade` nominated by `Connection`, on a GET
    /// without a body): a 101 turns the connection into a tunnel to the server.
    pub upgrade: Option<String>,
}

/// Where a request goes, as the router decided from its host and path: the route (for its
/// header changes) and the forwarding fields.
pub struct Plan<'r> {
    pub route: Option<&'r Route>,
    pub forwarding: Forwarding,
}

/// Parses a request head this path carries: HTTP/1.1, origin-form target, exactly one `Host`,
/// a body only by one `Content-Length` of digits (no `Transfer-Encoding`), an upgrade only as
/// a bodiless GET with one `Upgrade` that `Connection` names, no `Expect`, at most `max_head`
/// bytes. Everything else (chunked bodies, HTTP/1.0, anything odd or ambiguous) is pingora's.
/// `plan` decides where a carried request goes (None: pingora's after all); the request for
/// the server is then written into `out` (see [`write_request`]).
pub fn parse_request<'r>(
    bytes: &[u8],
    max_head: usize,
    out: &mut Vec<u8>,
    plan: impl FnOnce(&Request) -> Option<Plan<'r>>,
) -> Parsed<Request> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(bytes, &mut fields) {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(httparse::Status::Partial) if bytes.len() <= max_head => return Parsed::Partial,
        _ => return Parsed::Other,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return Parsed::Other;
    };
    if method == http::Method::CONNECT || !path.starts_with('/') {
        return Parsed::Other;
    }
    let mut host = None;
    let mut hosts = 0;
    let mut close = false;
    let mut xff = None;
    let mut forwarded = None;
    let mut body = 0;
    let mut lengths = 0;
    let mut upgrade = None;
    let mut upgrades = 0;
    let mut connection_upgrade = false;
    for field in req.headers.iter() {
        let name = field.name;
        let value = field.value;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            host = std::str::from_utf8(value).ok();
        } else if name.eq_ignore_ascii_case("content-length") {
            // Digits only: `+5`, `5 5` or `0x5` are read differently by different parsers.
            let Some(length) = decimal(value) else {
                return Parsed::Other;
            };
            body = length;
            lengths += 1;
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
        {
            return Parsed::Other;
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = std::str::from_utf8(value).ok();
            upgrades += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            // Pingora's session refuses it (400).
            if names_framing(value) {
                return Parsed::Other;
            }
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    connection_upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            xff = Some(joined(xff, value));
        } else if name.eq_ignore_ascii_case("forwarded") {
            forwarded = Some(joined(forwarded, value));
        }
    }
    // Several Content-Length fields, even equal ones, are pingora's to refuse.
    let (1, Some(host), true) = (hosts, host, lengths <= 1) else {
        return Parsed::Other;
    };
    // Upgrade asked for properly, on a GET without a body; any other mix of the two fields is
    // pingora's to judge.
    let upgrade = match (upgrades, connection_upgrade, upgrade.map(str::trim)) {
        (0, false, _) => None,
        (1, true, Some(protocol))
            if !protocol.is_empty() && method == http::Method::GET && body == 0 && !close =>
        {
            Some(protocol.to_owned())
        }
        _ => return Parsed::Other,
    };
    let request = Request {
        method,
        path: path.split('?').next().unwrap_or(path).to_owned(),
        host: host_without_port(host),
        close,
        body,
        xff,
        forwarded,
        upgrade,
    };
    let Some(plan) = plan(&request) else {
        return Parsed::Other;
    };
    write_request(&req, &plan, &request, out);
    Parsed::Complete(request, head_len)
}

/// A `Content-Length` value: ASCII digits only (around them optional whitespace), within u64.
pub(crate) fn decimal(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A field repeated over several lines is one comma-separated list.
fn joined(before: Option<String>, value: &[u8]) -> String {
    let value = String::from_utf8_lossy(value);
    match before {
        Some(before) => format!("{before}, {value}"),
        None => value.into_owned(),
    }
}

fn named_by_connection(connection: &[&[u8]], name: &str) -> bool {
    connection
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
}

/// The tokens of every `Connection` field: fields they name are hop-by-hop too.
fn connection_tokens<'b>(fields: &[httparse::Header<'b>]) -> Vec<&'b [u8]> {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
        .flat_map(|f| f.value.split(|&b| b == b','))
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Copies `fields` to `out`, less the hop-by-hop ones (by name, or nominated by `Connection`)
/// and those `dropped` names.
fn copy_fields(out: &mut Vec<u8>, fields: &[httparse::Header<'_>], dropped: impl Fn(&str) -> bool) {
    let connection = connection_tokens(fields);
    for f in fields {
        let name = f.name;
        let hop_by_hop = HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || named_by_connection(&connection, name);
        if !hop_by_hop && !dropped(name) {
            field(out, name.as_bytes(), f.value);
        }
    }
}

/// A field the route removes, or sets itself (its value replaces the sender's).
pub(crate) fn replaced(
    name: &str,
    remove: &[String],
    add: &[(http::HeaderName, http::HeaderValue)],
) -> bool {
    remove.iter().any(|h| name.eq_ignore_ascii_case(h))
        || add
            .iter()
            .any(|(h, _)| name.eq_ignore_ascii_case(h.as_str()))
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes a request for the server: the same request line and fields in order, less the
/// hop-by-hop ones and what the route removes, with the forwarding fields and the route's own
/// added.
fn write_request(
    req: &httparse::Request<'_, '_>,
    plan: &Plan<'_>,
    request: &Request,
    out: &mut Vec<u8>,
) {
    let (route, forwarding, host) = (plan.route, &plan.forwarding, &request.host);
    out.clear();
    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.path.unwrap_or("/").as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    copy_fields(out, req.headers, |name| {
        FORWARDING.iter().any(|h| name.eq_ignore_ascii_case(h))
            || route.is_some_and(|r| replaced(name, &r.remove_request, &r.add_request))
    });
    field(out, b"x-forwarded-for", forwarding.xff.as_bytes());
    field(out, b"x-forwarded-proto", forwarding.proto.as_bytes());
    if !host.is_empty() {
        field(out, b"x-forwarded-host", host.as_bytes());
    }
    field(out, b"forwarded", forwarding.forwarded.as_bytes());
    if let Some(route) = route {
        for (name, value) in &route.add_request {
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if let Some(protocol) = &request.upgrade {
        field(out, b"connection", b"upgrade");
        field(out, b"upgrade", protocol.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a response to HEAD, a 1xx, 204 or 304, or a 101's switch.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked coding, to its final chunk and trailers.
    Chunked,
    /// Until the server closes: the client's connection closes after it too.
    UntilClose,
}

/// What the proxy needs of a response it carries.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// How the body is delimited.
    pub framing: Framing,
    /// The server keeps the connection open after this response.
    pub keep_alive: bool,
}

/// Where a final response head goes for the client as it is parsed: the route whose response
/// fields apply, whether the client's connection closes after it anyway, and the output.
pub struct ForClient<'a> {
    pub route: Option<&'a Route>,
    pub close: bool,
    /// The request asked for an upgrade: a 101 is its answer, not a broken server.
    pub upgrade: bool,
    pub out: &'a mut Vec<u8>,
}

/// Parses a response head and, when it is the final one (not 1xx), writes it for the client
/// into `client.out` (see [`write_response_head`]). `Other` here means a response the proxy
/// cannot pass on (malformed, conflicting lengths, an unasked-for upgrade): the server is
/// broken, a 502.
pub fn parse_response(bytes: &[u8], to_head: bool, client: ForClient<'_>) -> Parsed<Response> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        bytes,
        &mut fields,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Parsed::Other;
    };
    if status == 101 {
        return switching_protocols(&resp, client, head_len);
    }
    let Ok(ResponseFraming {
        framing,
        keep_alive,
        ..
    }) = response_framing(resp.headers, version, status, to_head)
    else {
        return Parsed::Other;
    };
    if status >= 200 {
        let close = client.close || framing == Framing::UntilClose;
        let hop: &[(&[u8], &[u8])] = if close {
            &[(b"connection", b"close")]
        } else {
            &[]
        };
        write_response_head(&resp, client.route, framing, hop, client.out);
    }
    Parsed::Complete(
        Response {
            status,
            framing,
            keep_alive,
        },
        head_len,
    )
}

/// What a response's framing fields say, for either client path.
pub(crate) struct ResponseFraming<'h> {
    pub framing: Framing,
    /// The server keeps the connection open after this response.
    pub keep_alive: bool,
    /// The response has a `Transfer-Encoding` (whatever its codings).
    pub transfer_coded: bool,
    /// The fields the server's `Connection` names as hop-by-hop (besides close/keep-alive).
    pub nominated: Vec<&'h [u8]>,
}

/// How the body of a response to a request (`to_head`: a HEAD, whose response has none) is
/// delimited, from its `Content-Length`, `Transfer-Encoding` and `Connection` fields; an error
/// names what makes the response one a proxy cannot pass on.
pub(crate) fn response_framing<'h>(
    headers: &[httparse::Header<'h>],
    version: u8,
    status: u16,
    to_head: bool,
) -> Result<ResponseFraming<'h>, &'static str> {
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut keep_alive = version == 1;
    let mut nominated = Vec::new();
    for f in headers {
        if f.name.eq_ignore_ascii_case("content-length") {
            let n = decimal(f.value).ok_or("malformed Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length");
            }
            length = Some(n);
        } else if f.name.eq_ignore_ascii_case("transfer-encoding") {
            // The final coding decides: chunked, or the body runs until the close.
            let last = f.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if f.name.eq_ignore_ascii_case("connection") {
            if names_framing(f.value) {
                return Err("the server's Connection names a framing field");
            }
            for token in f.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    keep_alive = true;
                } else if !token.is_empty() {
                    nominated.push(token);
                }
            }
        }
    }
    let framing = if to_head || status < 200 || status == 204 || status == 304 {
        Framing::None
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) | (None, None) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    Ok(ResponseFraming {
        framing,
        keep_alive,
        transfer_coded: chunked.is_some(),
        nominated,
    })
}

/// A 101 to a request that asked for it, with the protocol the server switches to: written
/// for the client with `Connection: upgrade` (hop-by-hop, so made anew for this hop).
fn switching_protocols(
    resp: &httparse::Response<'_, '_>,
    client: ForClient<'_>,
    head_len: usize,
) -> Parsed<Response> {
    let mut protocols = resp
        .headers
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("upgrade"));
    let (true, Some(protocol), None) = (client.upgrade, protocols.next(), protocols.next()) else {
        return Parsed::Other;
    };
    let hop: [(&[u8], &[u8]); 2] = [(b"connection", b"upgrade"), (b"upgrade", protocol.value)];
    write_response_head(resp, client.route, Framing::None, &hop, client.out);
    Parsed::Complete(
        Response {
            status: 101,
            framing: Framing::None,
            keep_alive: false,
        },
        head_len,
    )
}

/// Writes a response head for the client: the status line as HTTP/1.1, the fields less
/// hop-by-hop and what the route removes (a `Content-Length` beside a transfer coding too), the
/// route's added fields, and the fields of this hop made anew (`connection: close` when the
/// response ends the connection; `connection: upgrade` and the protocol after a 101).
fn write_response_head(
    resp: &httparse::Response<'_, '_>,
    route: Option<&Route>,
    framing: Framing,
    hop: &[(&[u8], &[u8])],
    out: &mut Vec<u8>,
) {
    out.clear();
    let status = resp.code.unwrap_or(502);
    out.extend_from_slice(b"HTTP/1.1 ");
    // httparse reads exactly three digits.
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    copy_fields(out, resp.headers, |name| {
        // A transfer coding overrides a length, which must not go on beside it (RFC 9112
        // §6.3); the coding itself goes on, chunked or not (a body until the close may be
        // gzip-coded for the client to decode).
        (matches!(framing, Framing::Chunked | Framing::UntilClose)
            && name.eq_ignore_ascii_case("content-length"))
            // Never on a 204 (RFC 9110 §8.6, §6.1): an h2 client resets the stream over it.
            || (status == 204
                && (name.eq_ignore_ascii_case("content-length")
                    || name.eq_ignore_ascii_case("transfer-encoding")))
            || route.is_some_and(|r| replaced(name, &r.remove_response, &r.add_response))
    });
    if let Some(route) = route {
        for (name, value) in &route.add_response {
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    for (name, value) in hop {
        field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// A response of the proxy's own (an error, or the request limit's 503).
pub fn own_response(status: u16, extra: &[(&str, &str)], body: &[u8], close: bool) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    for (name, value) in extra {
        field(&mut out, name.as_bytes(), value.as_bytes());
    }
    field(
        &mut out,
        b"content-length",
        body.len().to_string().as_bytes(),
    );
    field(&mut out, b"cache-control", b"private, no-store");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a response head goes in these tests: no route.
    fn to_client(out: &mut Vec<u8>, close: bool, upgrade: bool) -> ForClient<'_> {
        ForClient {
            route: None,
            close,
            upgrade,
            out,
        }
    }

    fn carried(_: &Request) -> Option<Plan<'static>> {
        Some(Plan {
            route: None,
            forwarding: Forwarding {
                xff: "10.0.0.1".into(),
                proto: "http",
                forwarded: "for=10.0.0.1;proto=http;host=a".into(),
            },
        })
    }

    fn request(bytes: &[u8]) -> Option<Request> {
        match parse_request(bytes, 1 << 16, &mut Vec::new(), carried) {
            Parsed::Complete(r, n) => {
                assert_eq!(n, bytes.len());
                Some(r)
            }
            Parsed::Partial => panic!("partial"),
            Parsed::Other => None,
        }
    }

    #[test]
    fn carries_http11_requests_with_a_plain_length_and_hands_over_the_rest() {
        let r =
            request(b"GET /a/b?x=1 HTTP/1.1\r\nHost: App.Lab:8080\r\nConnection: close\r\n\r\n")
                .unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.host.as_str(), r.close),
            ("GET", "/a/b", "app.lab", true)
        );
        assert!(request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").is_some());
        let posted = request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!(posted.body, 12);
        for other in [
            &b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            // Upgrades other than a bodiless GET naming one protocol in `Upgrade` and `upgrade`
            // in `Connection`.
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: a\r\nUpgrade: b\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: \r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
        ] {
            assert!(
                request(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        assert!(matches!(
            parse_request(
                b"GET / HTTP/1.1\r\nHost: a\r\n",
                1 << 16,
                &mut Vec::new(),
                carried
            ),
            Parsed::Partial
        ));
        // Too large a head, or one the router sends elsewhere after all.
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(matches!(
            parse_request(head, head.len() - 1, &mut Vec::new(), carried),
            Parsed::Other
        ));
        assert!(matches!(
            parse_request(head, 1 << 16, &mut Vec::new(), |_| None),
            Parsed::Other
        ));
    }

    #[test]
    fn an_upgrade_goes_to_the_server_with_its_hop_fields_made_anew_and_its_101_comes_back() {
        let head = b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\
                     Upgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n";
        let mut out = Vec::new();
        let Parsed::Complete(request, _) = parse_request(head, 1 << 16, &mut out, carried) else {
            panic!("not carried");
        };
        assert_eq!(request.upgrade.as_deref(), Some("websocket"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /chat HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\nx-forwarded-for: 10.0.0.1\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: a\r\n\
             forwarded: for=10.0.0.1;proto=http;host=a\r\nconnection: upgrade\r\n\
             upgrade: websocket\r\n\r\n"
        );

        let answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                       Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\nframe";
        let mut out = Vec::new();
        let client = to_client(&mut out, false, true);
        let Parsed::Complete(response, n) = parse_response(answer, false, client) else {
            panic!("101 refused");
        };
        assert_eq!((response.status, n), (101, answer.len() - 5));
        assert!(!response.keep_alive);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n\
             connection: upgrade\r\nupgrade: websocket\r\n\r\n"
        );
        // Unasked, or without the protocol switched to: a broken server.
        for (answer, asked) in [
            (&answer[..], false),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
                true,
            ),
        ] {
            let mut out = Vec::new();
            let client = to_client(&mut out, false, asked);
            assert!(matches!(
                parse_response(answer, false, client),
                Parsed::Other
            ));
        }
    }

    #[test]
    fn upstream_request_drops_hop_by_hop_and_claimed_forwarding_fields() {
        let head = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 6.6.6.6\r\nAccept: */*\r\n\r\n";
        let mut out = Vec::new();
        assert!(matches!(
            parse_request(head, 1 << 16, &mut out, carried),
            Parsed::Complete(_, _)
        ));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.1\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: a\r\n\
             forwarded: for=10.0.0.1;proto=http;host=a\r\n\r\n"
        );
    }

    fn response(bytes: &[u8], to_head: bool) -> Option<Response> {
        let mut out = Vec::new();
        let client = to_client(&mut out, false, false);
        match parse_response(bytes, to_head, client) {
            Parsed::Complete(r, _) => Some(r),
            _ => None,
        }
    }

    #[test]
    fn a_transfer_coding_goes_on_and_a_length_beside_it_does_not() {
        let head = |bytes: &[u8]| {
            let mut out = Vec::new();
            let parsed = parse_response(bytes, false, to_client(&mut out, false, false));
            assert!(matches!(parsed, Parsed::Complete(_, _)));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 9\r\n\r\n"),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(
            head(
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            ),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        );
    }

    #[test]
    fn a_204_says_nothing_of_a_body() {
        let mut out = Vec::new();
        let bytes = b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\nX-A: 1\r\n\r\n";
        let parsed = parse_response(bytes, false, to_client(&mut out, false, false));
        assert!(matches!(parsed, Parsed::Complete(_, _)));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
        );
    }

    #[test]
    fn response_framing() {
        let framing = |b: &[u8]| response(b, false).map(|r| (r.framing, r.keep_alive));
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"),
            Some((Framing::Length(3), true))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            Some((Framing::Chunked, true))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n\r\n"),
            Some((Framing::UntilClose, false))
        );
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\n\r\n"),
            Some((Framing::None, true))
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"),
            Some((Framing::Length(1), false))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n"),
            Some((Framing::Length(1), false))
        );
        assert_eq!(
            response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).map(|r| r.framing),
            Some(Framing::None)
        );
        // Conflicting lengths, an unasked-for upgrade, garbage: the server is broken.
        assert!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").is_none()
        );
        assert!(framing(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").is_none());
        assert!(framing(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_none());
        assert!(framing(b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n").is_none());
    }

    #[test]
    fn a_response_with_many_fields_passes_as_under_pingora() {
        let mut head = String::from("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n");
        for i in 0..200 {
            head.push_str(&format!("Set-Cookie: c{i}=v\r\n"));
        }
        head.push_str("\r\n");
        let mut out = Vec::new();
        let client = to_client(&mut out, false, false);
        assert!(matches!(
            parse_response(head.as_bytes(), false, client),
            Parsed::Complete(_, _)
        ));
        assert_eq!(out, head.as_bytes());
    }

    #[test]
    fn downstream_response_marks_the_close_and_drops_a_length_beside_chunked() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nKeep-Alive: timeout=5\r\nX-App: 1\r\n\r\n";
        let mut out = Vec::new();
        let client = to_client(&mut out, true, false);
        assert!(matches!(
            parse_response(head, false, client),
            Parsed::Complete(_, _)
        ));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-App: 1\r\nconnection: close\r\n\r\n"
        );
    }
}
