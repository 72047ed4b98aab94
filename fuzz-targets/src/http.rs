//! lab-lb's own HTTP/1.1 path: request and response heads parsed and written for the other
//! side, and the chunked body scanner. What is written must parse again (with httparse, as a
//! server or client would) to the same framing: a framing field the original lacked, or one it
//! lost, lets the two sides of the proxy disagree on where a message ends (request smuggling,
//! or one client reading another's response). The HTTP/2 path's reader of a server's chunked
//! body must give the same pieces however the reads split it.

use crate::shown;
use lab_lb::h2_fuzzing::Dechunk;
use lab_lb::http1_fuzzing::{self as http1, ChunkedScanner, Framing, Parsed};

/// As large a head as a listener may be configured for (`max_header_bytes`).
const MAX_HEAD: usize = 1_048_575;

/// Room for the most fields a head may have (256) and those the proxy adds.
const FIELDS: usize = 512;

const CONTENT_LENGTH: &str = "content-length";
const TRANSFER_ENCODING: &str = "transfer-encoding";

fn values<'b>(fields: &[httparse::Header<'b>], name: &str) -> Vec<&'b [u8]> {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case(name))
        .map(|f| f.value)
        .collect()
}

/// The tokens of every `Connection` field.
fn connection_tokens<'b>(fields: &[httparse::Header<'b>]) -> Vec<&'b [u8]> {
    values(fields, "connection")
        .into_iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect()
}

/// A field the receiver must drop because `Connection` names it may not be a framing field.
fn assert_framing_not_hop_by_hop(fields: &[httparse::Header<'_>], written: &[u8]) {
    for token in connection_tokens(fields) {
        assert!(
            !token.eq_ignore_ascii_case(CONTENT_LENGTH.as_bytes())
                && !token.eq_ignore_ascii_case(TRANSFER_ENCODING.as_bytes()),
            "Connection names a framing field: {}",
            shown(written)
        );
    }
}

/// `parse_request` with what the proxy writes for the server: it parses as one whole head,
/// the same method and target, and exactly the client's `Content-Length` (no transfer coding).
pub fn http_request(data: &[u8]) {
    let mut written = Vec::new();
    let Parsed::Complete(request, head_len) = http1::parse_request(data, MAX_HEAD, &mut written)
    else {
        return;
    };
    assert!(head_len > 0 && head_len <= data.len());
    assert!(
        matches!(
            http1::parse_request(&data[..head_len - 1], MAX_HEAD, &mut Vec::new()),
            Parsed::Partial
        ),
        "a head cut short is not partial: {}",
        shown(data)
    );
    let mut fields = vec![httparse::EMPTY_HEADER; FIELDS];
    let mut original = httparse::Request::new(&mut fields);
    assert!(
        matches!(original.parse(&data[..head_len]), Ok(httparse::Status::Complete(n)) if n == head_len)
    );

    let mut fields = vec![httparse::EMPTY_HEADER; FIELDS];
    let mut sent = httparse::Request::new(&mut fields);
    match sent.parse(&written) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(
            n,
            written.len(),
            "bytes after the head: {}",
            shown(&written)
        ),
        other => panic!(
            "the request for the server does not parse ({other:?}): {}",
            shown(&written)
        ),
    }
    assert_eq!(
        (sent.method, sent.path, sent.version),
        (original.method, original.path, Some(1))
    );
    let lengths = values(sent.headers, CONTENT_LENGTH);
    assert_eq!(
        lengths,
        values(original.headers, CONTENT_LENGTH),
        "Content-Length changed: {} became {}",
        shown(data),
        shown(&written)
    );
    assert!(lengths.len() <= 1);
    let body = lengths
        .first()
        .and_then(|v| std::str::from_utf8(v.trim_ascii()).ok()?.parse().ok())
        .unwrap_or(0);
    assert_eq!(body, request.body, "{}", shown(data));
    assert!(
        values(sent.headers, TRANSFER_ENCODING).is_empty(),
        "a transfer coding appeared: {}",
        shown(&written)
    );
    assert_framing_not_hop_by_hop(sent.headers, &written);
    if request.upgrade.is_some() {
        assert_eq!(request.body, 0);
        assert_eq!(values(sent.headers, "upgrade").len(), 1);
    }
}

/// How a response's body is delimited (RFC 9112 §6.3), read independently of lab-lb; `None`
/// when its length is ambiguous (lengths that differ or are not plain digits).
fn framing_of(fields: &[httparse::Header<'_>], status: u16, to_head: bool) -> Option<Framing> {
    if status == 101 || to_head || status < 200 || status == 204 || status == 304 {
        return Some(Framing::None);
    }
    if let Some(last) = values(fields, TRANSFER_ENCODING).last() {
        let coding = last.rsplit(|&b| b == b',').next().unwrap_or(b"");
        return Some(if coding.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    let mut length = None;
    for value in values(fields, CONTENT_LENGTH) {
        let digits = value.trim_ascii();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    Some(length.map_or(Framing::UntilClose, Framing::Length))
}

/// `parse_response` with what the proxy writes for the client (the first byte picks a HEAD
/// request, a client closing after it, an upgrade asked for): the framing lab-lb reads is the
/// one the server meant and the one the client will read, with no framing field added or lost.
pub fn http_response(data: &[u8]) {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let (to_head, close, upgrade) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
    let mut written = Vec::new();
    let Parsed::Complete(response, head_len) =
        http1::parse_response(bytes, to_head, close, upgrade, &mut written)
    else {
        return;
    };
    assert!(head_len > 0 && head_len <= bytes.len());
    assert!(
        matches!(
            http1::parse_response(
                &bytes[..head_len - 1],
                to_head,
                close,
                upgrade,
                &mut Vec::new()
            ),
            Parsed::Partial
        ),
        "a head cut short is not partial: {}",
        shown(bytes)
    );
    let mut fields = vec![httparse::EMPTY_HEADER; FIELDS];
    let mut original = httparse::Response::new(&mut fields);
    assert!(
        matches!(original.parse(&bytes[..head_len]), Ok(httparse::Status::Complete(n)) if n == head_len)
    );
    let status = response.status;
    assert_eq!(Some(status), original.code);
    let meant = framing_of(original.headers, status, to_head);
    assert_eq!(
        meant,
        Some(response.framing),
        "lab-lb reads another framing than the server's: {}",
        shown(bytes)
    );
    if status < 200 && status != 101 {
        assert!(written.is_empty(), "an interim response was written");
        return;
    }

    let mut fields = vec![httparse::EMPTY_HEADER; FIELDS];
    let mut sent = httparse::Response::new(&mut fields);
    match sent.parse(&written) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(
            n,
            written.len(),
            "bytes after the head: {}",
            shown(&written)
        ),
        other => panic!(
            "the response for the client does not parse ({other:?}): {}",
            shown(&written)
        ),
    }
    assert_eq!((sent.code, sent.version), (Some(status), Some(1)));
    assert_eq!(
        framing_of(sent.headers, status, to_head),
        Some(response.framing),
        "the client reads another framing: {} became {}",
        shown(bytes),
        shown(&written)
    );
    assert_framing_not_hop_by_hop(sent.headers, &written);
    for name in [CONTENT_LENGTH, TRANSFER_ENCODING] {
        assert!(
            values(sent.headers, name).is_empty() || !values(original.headers, name).is_empty(),
            "{name} appeared: {} became {}",
            shown(bytes),
            shown(&written)
        );
    }
    let codings = values(original.headers, TRANSFER_ENCODING);
    let lengths = values(original.headers, CONTENT_LENGTH);
    if status == 204 {
        assert!(
            values(sent.headers, CONTENT_LENGTH).is_empty()
                && values(sent.headers, TRANSFER_ENCODING).is_empty(),
            "a 204 with a framing field: {}",
            shown(&written)
        );
    } else if !codings.is_empty() {
        assert_eq!(
            values(sent.headers, TRANSFER_ENCODING),
            codings,
            "{}",
            shown(&written)
        );
    } else if !lengths.is_empty() {
        assert_eq!(
            values(sent.headers, CONTENT_LENGTH),
            lengths,
            "{}",
            shown(&written)
        );
    }
    if response.framing == Framing::UntilClose {
        assert!(!response.keep_alive);
        assert!(
            connection_tokens(sent.headers)
                .iter()
                .any(|t| t.eq_ignore_ascii_case(b"close")),
            "a body until the close, and the client may keep the connection: {}",
            shown(&written)
        );
    }
}

/// Where the scanner says a chunked body ends, fed `step` bytes at a time: `Ok(None)` when it
/// wants more.
fn scan(body: &[u8], step: usize) -> Result<Option<usize>, http1::ChunkError> {
    let mut scanner = ChunkedScanner::default();
    let mut seen = 0;
    for piece in body.chunks(step) {
        let used = scanner.feed(piece)?;
        assert!(used <= piece.len());
        seen += used;
        if scanner.is_done() {
            return Ok(Some(seen));
        }
        assert_eq!(used, piece.len(), "stopped before the end, not done");
    }
    Ok(None)
}

/// Where a strict reader (chunk-size lines as httparse reads them, CRLF after chunk data,
/// trailer lines to an empty one) says a chunked body ends: `Ok(None)` for more bytes needed,
/// `Err` for a body it refuses.
fn strict_end(body: &[u8]) -> Result<Option<usize>, ()> {
    let mut at = 0;
    loop {
        let rest = &body[at..];
        // httparse reads an empty size line as 0; no peer sends one.
        if rest.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
            return Err(());
        }
        let (line, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(()),
        };
        at += line;
        if size == 0 {
            break;
        }
        let Some(end) = usize::try_from(size).ok().and_then(|s| at.checked_add(s)) else {
            return Err(());
        };
        if end > body.len() {
            return Ok(None);
        }
        at = end;
        match &body[at..] {
            [b'\r', b'\n', ..] => at += 2,
            [] | [b'\r'] => return Ok(None),
            _ => return Err(()),
        }
    }
    loop {
        let rest = &body[at..];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let Some(line) = rest[..lf].strip_suffix(b"\r") else {
            return Err(());
        };
        if line.contains(&b'\r') {
            return Err(());
        }
        at += lf + 1;
        if line.is_empty() {
            return Ok(Some(at));
        }
    }
}

/// The chunked scanner: fed whole or in pieces (the first byte is the piece size) it ends in
/// the same place; where a strict reader (the client, say) finds an end, the scanner finds
/// the same one or refuses the body, and the other way round.
pub fn chunked(data: &[u8]) {
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let whole = scan(body, body.len().max(1));
    let pieces = scan(body, usize::from(step).max(1));
    assert_eq!(
        whole.as_ref().ok(),
        pieces.as_ref().ok(),
        "whole and in pieces of {step}: {}",
        shown(body)
    );
    assert_eq!(whole.is_err(), pieces.is_err());
    match (whole, strict_end(body)) {
        (Ok(Some(end)), Ok(Some(strict))) => assert_eq!(
            end,
            strict,
            "the scanner ends at {end}, a strict reader at {strict}: {}",
            shown(body)
        ),
        (Ok(Some(end)), Ok(None)) => panic!(
            "the scanner ends at {end}, a strict reader reads on: {}",
            shown(body)
        ),
        (Ok(None), Ok(Some(strict))) => panic!(
            "a strict reader ends at {strict}, the scanner reads on: {}",
            shown(body)
        ),
        _ => {}
    }
}

/// The h2 path's chunked-body reader fed `body` in reads of `step` bytes.
fn dechunk(body: &[u8], step: usize) -> Dechunk {
    let mut dechunk = Dechunk::default();
    for piece in body.chunks(step) {
        dechunk.feed(piece);
    }
    dechunk
}

/// Fields a chunked body's trailer section may carry on HTTP/1.1 but an h2 HEADERS frame may
/// not (RFC 9113 §8.2.2), or that would reframe the response.
const NOT_H2_TRAILERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The h2 path's reader of a server's chunked body (DATA frames and a trailing HEADERS frame):
/// the same data, trailers, error and end whether the body comes whole or in reads of any size
/// (the first byte); never more data than was fed; no trailer h2 may not carry; and the
/// body's data taken as chunks (of the first byte's size) and encoded well comes back whole.
pub fn h2_dechunk(data: &[u8]) {
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let whole = dechunk(body, body.len().max(1));
    let pieces = dechunk(body, usize::from(step).max(1));
    assert_eq!(
        (
            whole.data(),
            whole.trailers(),
            whole.error(),
            whole.unread()
        ),
        (
            pieces.data(),
            pieces.trailers(),
            pieces.error(),
            pieces.unread()
        ),
        "whole and in reads of {step}: {}",
        shown(body)
    );
    assert!(whole.data().len() <= body.len());
    if whole.trailers().is_some() {
        // What follows the body is left for the next response, never taken into this one.
        assert!(whole.unread() < body.len());
    }
    for (name, _) in whole.trailers().unwrap_or_default() {
        assert!(
            !name.starts_with(':') && !NOT_H2_TRAILERS.contains(&name.as_str()),
            "trailer {name} passed to h2: {}",
            shown(body)
        );
    }

    let mut encoded = Vec::new();
    for chunk in body.chunks(usize::from(step).max(1)) {
        encoded.extend_from_slice(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
        encoded.extend_from_slice(chunk);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\ngrpc-status: 0\r\nConnection: close\r\n\r\nHTTP/1.1");
    let decoded = dechunk(&encoded, usize::from(step).max(1) * 3 + 1);
    assert_eq!(decoded.error(), None, "{}", shown(&encoded));
    assert_eq!(decoded.data(), body);
    assert_eq!(
        decoded.trailers(),
        Some(&[("grpc-status".to_owned(), b"0".to_vec())][..])
    );
    assert_eq!(decoded.unread(), b"HTTP/1.1".len());
}
