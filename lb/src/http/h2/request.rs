//! An h2 request as the HTTP/1.1 request its server gets: request line, `Host` from the
//! `:authority`, the end-to-end fields in order (cookie crumbs joined into one field, RFC 9113
//! §8.2.3), the forwarding fields and the route's, and the body's framing.

use crate::http::h1::head::{decimal, replaced};
use crate::http::router::{host_without_port, Forwarding, Route, HOP_BY_HOP};

/// Set by the proxy on every request; what the client sent is read, not passed on.
const FORWARDING: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

/// What the proxy needs of an h2 request, read from its head.
pub(super) struct Request {
    /// As the client sent it: `:authority`, or else `Host`.
    pub authority: String,
    /// As routes match it: lower-case, without port.
    pub host: String,
    pub path: String,
    /// `Content-Length` when the client declared one.
    pub length: Option<u64>,
    /// The request head's size as HTTP/1.1 would carry it: what `max_header_bytes` limits.
    pub head_bytes: usize,
}

/// A head the proxy refuses: 400.
pub(super) struct Malformed(pub &'static str);

/// Reads what the proxy needs of `parts`.
pub(super) fn read(parts: &http::request::Parts) -> Result<Request, Malformed> {
    let authority = match parts.uri.authority() {
        Some(a) => a.as_str().to_owned(),
        None => match parts.headers.get(http::header::HOST).map(|h| h.to_str()) {
            Some(Ok(host)) => host.to_owned(),
            Some(Err(_)) => return Err(Malformed("a Host that is not text")),
            None => String::new(),
        },
    };
    let mut length = None;
    for value in parts.headers.get_all(http::header::CONTENT_LENGTH) {
        let Some(n) = decimal(value.as_bytes()) else {
            return Err(Malformed("malformed Content-Length"));
        };
        if length.is_some_and(|l| l != n) {
            return Err(Malformed("conflicting Content-Length"));
        }
        length = Some(n);
    }
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let head_bytes = parts.method.as_str().len()
        + target.len()
        + authority.len()
        + parts
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
        + 20;
    Ok(Request {
        host: host_without_port(&authority),
        path: parts.uri.path().to_owned(),
        authority,
        length,
        head_bytes,
    })
}

/// Writes the request for the server into `out`. A body of unknown length goes chunked.
pub(super) fn write(
    parts: &http::request::Parts,
    request: &Request,
    route: Option<&Route>,
    forwarding: &Forwarding,
    has_body: bool,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !request.authority.is_empty() {
        field(out, b"host", request.authority.as_bytes());
    }
    let mut cookies = 0;
    let mut trailers = false;
    for (name, value) in &parts.headers {
        let name = name.as_str();
        if name == "cookie" {
            cookies += 1;
            continue;
        }
        if name == "te" {
            // The only `te` h2 allows (RFC 9113 §8.2.2): the client takes trailers, which a
            // gRPC server needs to hear to send its status.
            trailers |= value.as_bytes().eq_ignore_ascii_case(b"trailers");
            continue;
        }
        let dropped = name == "host"
            || HOP_BY_HOP.contains(&name)
            || FORWARDING.contains(&name)
            || route.is_some_and(|r| replaced(name, &r.remove_request, &r.add_request));
        if !dropped {
            field(out, name.as_bytes(), value.as_bytes());
        }
    }
    if cookies > 0 && !route.is_some_and(|r| replaced("cookie", &r.remove_request, &r.add_request))
    {
        out.extend_from_slice(b"cookie: ");
        for (i, crumb) in parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .enumerate()
        {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(crumb.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    if trailers {
        field(out, b"te", b"trailers");
    }
    field(out, b"x-forwarded-for", forwarding.xff.as_bytes());
    field(out, b"x-forwarded-proto", forwarding.proto.as_bytes());
    if !request.host.is_empty() {
        field(out, b"x-forwarded-host", request.host.as_bytes());
    }
    field(out, b"forwarded", forwarding.forwarded.as_bytes());
    if let Some(route) = route {
        for (name, value) in &route.add_request {
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if has_body && request.length.is_none() {
        field(out, b"transfer-encoding", b"chunked");
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_h2_request_reaches_the_server_as_one_http11_head() {
        let request = http::Request::builder()
            .method("POST")
            .uri("https://App.Test:8443/a/b?x=1")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("te", "trailers")
            .header("x-forwarded-for", "6.6.6.6")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let Ok(read) = read(&parts) else {
            panic!("refused");
        };
        assert_eq!(
            (read.host.as_str(), read.path.as_str()),
            ("app.test", "/a/b")
        );
        let forwarding = Forwarding {
            xff: "10.0.0.1".into(),
            proto: "https",
            forwarded: "for=10.0.0.1;proto=https;host=app.test".into(),
        };
        let mut out = Vec::new();
        write(&parts, &read, None, &forwarding, true, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a/b?x=1 HTTP/1.1\r\nhost: App.Test:8443\r\n\
             content-type: application/grpc\r\ncookie: a=1; b=2\r\nte: trailers\r\n\
             x-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: https\r\n\
             x-forwarded-host: app.test\r\nforwarded: for=10.0.0.1;proto=https;host=app.test\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn conflicting_lengths_are_refused() {
        let request = http::Request::builder()
            .uri("https://a/")
            .header("content-length", "1")
            .header("content-length", "2")
            .body(())
            .unwrap();
        assert!(read(&request.into_parts().0).is_err());
    }
}
