//! A server's chunked body (RFC 9112 §7.1) taken apart for h2, where DATA frames carry the
//! data and a HEADERS frame the trailers (gRPC's status travels there): the chunks' data is
//! split off the read buffer without copying, the trailer section parsed once whole.

use crate::http::router::{FRAMING, HOP_BY_HOP};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// A chunk-size line or trailer section longer than this is refused: none honest is.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;
const MAX_TRAILER_FIELDS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
    Done,
}

/// What the bytes so far give.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// More bytes needed.
    More,
    Data(Bytes),
    /// The body's end, with its trailer fields (maybe none).
    End(HeaderMap),
}

/// Follows one chunked body.
#[derive(Debug)]
pub(crate) struct Dechunker {
    state: State,
}

impl Dechunker {
    pub(crate) fn new() -> Self {
        Self { state: State::Size }
    }

    /// The next piece of the body from `buf`, taken off it.
    pub(crate) fn next(&mut self, buf: &mut BytesMut) -> Result<Piece, &'static str> {
        loop {
            match self.state {
                State::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        let _ = buf.split_to(n);
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() <= MAX_LINE => {
                        return Ok(Piece::More)
                    }
                    _ => return Err("malformed chunk size"),
                },
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Piece::More);
                    }
                    let n = left.min(buf.len() as u64);
                    let data = buf.split_to(n as usize).freeze();
                    self.state = if n == left {
                        State::DataEnd
                    } else {
                        State::Data(left - n)
                    };
                    return Ok(Piece::Data(data));
                }
                State::DataEnd => {
                    let end = if buf.starts_with(b"\r\n") {
                        2
                    } else if buf.starts_with(b"\n") {
                        1
                    } else if buf.is_empty() || buf[..] == b"\r"[..] {
                        return Ok(Piece::More);
                    } else {
                        return Err("chunk data longer than its size");
                    };
                    let _ = buf.split_to(end);
                    self.state = State::Size;
                }
                State::Trailers => {
                    let mut slots = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
                    match httparse::parse_headers(buf, &mut slots) {
                        Ok(httparse::Status::Complete((n, fields))) => {
                            let trailers = trailer_map(fields)?;
                            let _ = buf.split_to(n);
                            self.state = State::Done;
                            return Ok(Piece::End(trailers));
                        }
                        Ok(httparse::Status::Partial) if buf.len() <= MAX_TRAILERS => {
                            return Ok(Piece::More)
                        }
                        _ => return Err("malformed trailers"),
                    }
                }
                State::Done => return Ok(Piece::End(HeaderMap::new())),
            }
        }
    }
}

/// Trailer fields as h2 sends them: those that may not be trailers in h2 (hop-by-hop, framing,
/// pseudo-fields) left out.
fn trailer_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, &'static str> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = f.name;
        if HOP_BY_HOP
            .iter()
            .chain(&FRAMING)
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(f.value),
        ) else {
            return Err("a trailer field h2 cannot carry");
        };
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` one byte at a time: the pieces come out whole whatever the reads.
    fn pieces(wire: &[u8]) -> (Vec<u8>, HeaderMap) {
        let mut dechunker = Dechunker::new();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        for &b in wire {
            buf.extend_from_slice(&[b]);
            loop {
                match dechunker.next(&mut buf).unwrap() {
                    Piece::More => break,
                    Piece::Data(d) => data.extend_from_slice(&d),
                    Piece::End(trailers) => return (data, trailers),
                }
            }
        }
        panic!("no end");
    }

    #[test]
    fn data_and_trailers_of_a_chunked_body() {
        let (data, trailers) = pieces(
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\nGrpc-Message: ok\r\n\
              Content-Length: 9\r\n\r\n",
        );
        assert_eq!(data, b"hello world");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["grpc-message"], "ok");
        assert_eq!(trailers.len(), 2);
        let (data, trailers) = pieces(b"3\r\nabc\r\n0\r\n\r\n");
        assert_eq!((data.as_slice(), trailers.len()), (&b"abc"[..], 0));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for wire in [&b"zz\r\n"[..], b"3\r\nabcd\r\n", b"0\r\nbad field\r\n\r\n"] {
            let mut buf = BytesMut::from(wire);
            let mut dechunker = Dechunker::new();
            let mut result = Ok(Piece::More);
            for _ in 0..4 {
                result = dechunker.next(&mut buf);
                if !matches!(result, Ok(Piece::Data(_))) {
                    break;
                }
            }
            assert!(result.is_err(), "{}", String::from_utf8_lossy(wire));
        }
    }
}
