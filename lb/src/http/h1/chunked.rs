//! Where a chunked body (RFC 9112 §7.1) ends, found without decoding it: the bytes pass
//! through unchanged and the scanner only follows chunk sizes, data and trailers, so the
//! proxy knows when the response is over and the upstream connection free for the next one.

/// A chunk size past this is refused: no honest server sends a chunk of 2^60 bytes, and the
/// arithmetic stays far from overflow.
const MAX_CHUNK: u64 = 1 << 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line: the size so far, whether any digit was seen, whether in an
    /// extension (`;name=value`, skipped).
    Size {
        size: u64,
        digits: bool,
        extension: bool,
    },
    /// Seen CR at the end of a size line.
    SizeLf {
        size: u64,
    },
    /// Bytes of chunk data still to come.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// Seen CR at the start of a line: the body ends at the LF.
    FinalLf,
    TrailerLf,
    Done,
}

/// A body that is not valid chunked coding: what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkError(&'static str);

/// Follows one chunked body as its bytes pass, from the first chunk size to the end of the
/// trailers.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        Self {
            state: State::Size {
                size: 0,
                digits: false,
                extension: false,
            },
        }
    }
}

impl ChunkedScanner {
    /// Whether the body's last byte (the final CRLF) has been fed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Follows `bytes`; returns how many of them belong to the body (all of them unless the
    /// body ends inside, in which case the rest belong to whatever follows).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                State::Done => return Ok(i),
                State::Data(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.state = if take == left {
                        State::DataCr
                    } else {
                        State::Data(left - take)
                    };
                    continue;
                }
                State::Size {
                    size,
                    digits,
                    extension,
                } => match b {
                    b'\r' if digits => State::SizeLf { size },
                    // httparse (and others) read a bare LF inside an extension as part of it,
                    // on to the next CRLF: ending the line here instead would make the two
                    // disagree on where the chunk's data starts, so a server's body could end
                    // its response early for us and not for the client (or the other way), and
                    // the client read the next response as part of this one.
                    b'\n' if extension => {
                        return Err(ChunkError("a chunk extension holds a bare LF"))
                    }
                    b'\n' if digits => after_size(size),
                    _ if extension => State::Size {
                        size,
                        digits,
                        extension,
                    },
                    b';' if digits => State::Size {
                        size,
                        digits,
                        extension: true,
                    },
                    // Whitespace before an extension (RFC 9112 §7.1.1 BWS).
                    b' ' | b'\t' if digits => State::Size {
                        size,
                        digits,
                        extension: true,
                    },
                    _ => {
                        let digit = (b as char)
                            .to_digit(16)
                            .ok_or(ChunkError("a chunk size is not hexadecimal"))?;
                        let size = size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(digit)))
                            .filter(|&s| s <= MAX_CHUNK)
                            .ok_or(ChunkError("a chunk size is too large"))?;
                        State::Size {
                            size,
                            digits: true,
                            extension: false,
                        }
                    }
                },
                State::SizeLf { size } => match b {
                    b'\n' => after_size(size),
                    _ => return Err(ChunkError("a chunk size line ends without LF")),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    b'\n' => next_size(),
                    _ => return Err(ChunkError("chunk data is longer than its size")),
                },
                State::DataLf => match b {
                    b'\n' => next_size(),
                    _ => return Err(ChunkError("chunk data ends without CRLF")),
                },
                State::TrailerStart => match b {
                    b'\r' => State::FinalLf,
                    b'\n' => State::Done,
                    _ => State::Trailer,
                },
                State::Trailer => match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => State::TrailerStart,
                    _ => State::Trailer,
                },
                State::TrailerLf => match b {
                    b'\n' => State::TrailerStart,
                    _ => return Err(ChunkError("a trailer line ends without LF")),
                },
                State::FinalLf => match b {
                    b'\n' => State::Done,
                    _ => return Err(ChunkError("the body ends without CRLF")),
                },
            };
            i += 1;
        }
        Ok(i)
    }
}

fn after_size(size: u64) -> State {
    if size == 0 {
        State::TrailerStart
    } else {
        State::Data(size)
    }
}

fn next_size() -> State {
    State::Size {
        size: 0,
        digits: false,
        extension: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes; the body's length as the scanner saw it.
    fn scan(body: &[u8], step: usize) -> Result<Option<usize>, ChunkError> {
        let mut scanner = ChunkedScanner::default();
        let mut seen = 0;
        for piece in body.chunks(step) {
            let used = scanner.feed(piece)?;
            seen += used;
            if scanner.is_done() {
                return Ok(Some(seen));
            }
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_of_a_body_however_it_is_split() {
        let body = b"5\r\nhello\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
        for step in 1..=body.len() {
            assert_eq!(scan(body, step), Ok(Some(body.len())), "step {step}");
        }
    }

    #[test]
    fn stops_where_the_body_ends_and_leaves_what_follows() {
        let mut bytes = b"3\r\nabc\r\n0\r\n\r\n".to_vec();
        let end = bytes.len();
        bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let mut scanner = ChunkedScanner::default();
        assert_eq!(scanner.feed(&bytes), Ok(end));
        assert!(scanner.is_done());
    }

    #[test]
    fn trailers_and_bare_lf_line_ends() {
        let body = b"4\nwiki\n0\nExpires: never\r\nX-Other: 1\n\r\n";
        assert_eq!(scan(body, 3), Ok(Some(body.len())));
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        assert_eq!(scan(b"5\r\nhel", 2), Ok(None));
        assert_eq!(scan(b"5\r\nhello\r\n0\r\n", 4), Ok(None));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            &b"z\r\n"[..],
            b"\r\n",
            b"5\r\nhello!!\r\n",
            b"5\rxhello",
            b"fffffffffffffffffff\r\n",
            b"1000000000000000000\r\n",
            b"0\r\n\rX",
            // Found by the `chunked` fuzz target: a bare LF inside an extension.
            b"1a;name=value\x8d\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
            b"1;x\nA\r\n0\r\n\r\n",
        ] {
            assert!(scan(bad, 1).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
