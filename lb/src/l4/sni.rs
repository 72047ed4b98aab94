//! Reading the server name from a TLS ClientHello without terminating TLS, and matching it
//! against route patterns. Pure: bytes in, a verdict out.

pub use lab_schema::SniPattern;

/// What the bytes received so far say about the client's first flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not enough bytes yet to finish the ClientHello.
    NeedMore,
    /// A complete ClientHello; `None` when it names no server (an IP-address client, say).
    Complete {
        /// The name, lower-cased.
        server_name: Option<String>,
    },
    /// Not a TLS ClientHello, or a malformed one.
    Invalid(&'static str),
}

/// The most a ClientHello may take up, records included (a post-quantum key share makes
/// hellos of a few KiB; anything far past that is not a client we serve).
pub const MAX_HELLO_BYTES: usize = 64 * 1024;

const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXTENSION_SERVER_NAME: u16 = 0x0000;
const NAME_TYPE_HOST: u8 = 0x00;

/// Parses the start of a client's stream at once (see [`HelloReader`] for bytes that arrive
/// over several reads).
pub fn parse_client_hello(received: &[u8]) -> Hello {
    HelloReader::default().read(received)
}

/// Reads a ClientHello as its bytes arrive: handshake records until the ClientHello is whole (it
/// may span several records and any number of TCP segments). Each record is looked at once, when
/// it is complete, so a client trickling its hello a byte at a time costs no more than one
/// sending it whole.
#[derive(Debug, Default)]
pub struct HelloReader {
    /// The handshake fragments of the complete records so far.
    handshake: Vec<u8>,
    /// Where the first record not yet complete starts in the received bytes.
    records_end: usize,
    /// Once given, the verdict stands.
    verdict: Option<Hello>,
}

impl HelloReader {
    /// The verdict on `received`: every byte of the stream so far, the same prefix as the last
    /// call's and then more.
    pub fn read(&mut self, received: &[u8]) -> Hello {
        if let Some(verdict) = &self.verdict {
            return verdict.clone();
        }
        let verdict = self.advance(received);
        if verdict != Hello::NeedMore {
            self.verdict = Some(verdict.clone());
        }
        verdict
    }

    fn advance(&mut self, received: &[u8]) -> Hello {
        if received.len() > MAX_HELLO_BYTES {
            return Hello::Invalid("ClientHello larger than 64 KiB");
        }
        loop {
            let rest = received.get(self.records_end..).unwrap_or_default();
            if rest.len() < RECORD_HEADER {
                return if rest.is_empty() || rest[0] == CONTENT_HANDSHAKE {
                    Hello::NeedMore
                } else {
                    Hello::Invalid("not a TLS handshake record")
                };
            }
            if rest[0] != CONTENT_HANDSHAKE {
                return Hello::Invalid("not a TLS handshake record");
            }
            if rest[1] != 0x03 {
                return Hello::Invalid("not a TLS record version");
            }
            let length = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            if length == 0 || length > 16384 + 2048 {
                return Hello::Invalid("TLS record length out of range");
            }
            let Some(fragment) = rest.get(RECORD_HEADER..RECORD_HEADER + length) else {
                return Hello::NeedMore;
            };
            self.handshake.extend_from_slice(fragment);
            self.records_end += RECORD_HEADER + length;
            let handshake = &self.handshake;
            if handshake.len() >= 4 {
                if handshake[0] != HANDSHAKE_CLIENT_HELLO {
                    return Hello::Invalid("first handshake message is not a ClientHello");
                }
                let body_length = (usize::from(handshake[1]) << 16)
                    | (usize::from(handshake[2]) << 8)
                    | usize::from(handshake[3]);
                if handshake.len() >= 4 + body_length {
                    return match server_name(&handshake[4..4 + body_length]) {
                        Ok(server_name) => Hello::Complete { server_name },
                        Err(reason) => Hello::Invalid(reason),
                    };
                }
            }
        }
    }
}

/// A cursor over a byte slice that refuses to read past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("ClientHello truncated inside a field");
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn vector_u8(&mut self) -> Result<&'a [u8], &'static str> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }

    fn vector_u16(&mut self) -> Result<&'a [u8], &'static str> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

fn server_name(body: &[u8]) -> Result<Option<String>, &'static str> {
    let mut hello = Reader(body);
    hello.take(2)?; // legacy_version
    hello.take(32)?; // random
    hello.vector_u8()?; // legacy_session_id
    hello.vector_u16()?; // cipher_suites
    hello.vector_u8()?; // legacy_compression_methods
    if hello.0.is_empty() {
        return Ok(None); // no extensions at all (very old clients)
    }
    let mut extensions = Reader(hello.vector_u16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vector_u16()?;
        if kind != EXTENSION_SERVER_NAME {
            continue;
        }
        let mut list = Reader(Reader(data).vector_u16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vector_u16()?;
            if name_type == NAME_TYPE_HOST {
                // A host name (RFC 6066 §3): letters, digits, `-`, `.`, and `_` as some
                // internal names have. Anything else (NUL, CR/LF, spaces) matches no route and
                // would reach the access log as the client wrote it: a forged log line.
                let host = |b: &u8| b.is_ascii_alphanumeric() || b"-._".contains(b);
                let end = name.iter().rposition(|&b| b != b'.').map_or(0, |i| i + 1);
                let name = &name[..end];
                if name.is_empty() || !name.iter().all(host) {
                    return Err("server name is not a host name");
                }
                return Ok(Some(String::from_utf8_lossy(name).to_ascii_lowercase()));
            }
        }
        return Ok(None);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello record naming `name` (or no SNI extension for `None`).
    pub(crate) fn client_hello(name: Option<&str>) -> Vec<u8> {
        let mut extensions = Vec::new();
        // An unrelated extension first (supported_versions), as real clients send many.
        extensions.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
        if let Some(name) = name {
            let n = name.len() as u16;
            extensions.extend_from_slice(&[0x00, 0x00]);
            extensions.extend_from_slice(&(n + 5).to_be_bytes());
            extensions.extend_from_slice(&(n + 3).to_be_bytes());
            extensions.push(0x00);
            extensions.extend_from_slice(&n.to_be_bytes());
            extensions.extend_from_slice(name.as_bytes());
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(&extensions);
        let mut handshake = vec![HANDSHAKE_CLIENT_HELLO, 0, 0, 0];
        handshake[1..4].copy_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        let mut record = vec![CONTENT_HANDSHAKE, 0x03, 0x01];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    #[test]
    fn reads_the_server_name() {
        assert_eq!(
            parse_client_hello(&client_hello(Some("B.Apps.Lab"))),
            Hello::Complete {
                server_name: Some("b.apps.lab".into())
            }
        );
        assert_eq!(
            parse_client_hello(&client_hello(None)),
            Hello::Complete { server_name: None }
        );
    }

    #[test]
    fn needs_more_at_every_split_point() {
        let hello = client_hello(Some("a.example"));
        for cut in 0..hello.len() {
            assert_eq!(
                parse_client_hello(&hello[..cut]),
                Hello::NeedMore,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn hello_split_across_records() {
        let record = client_hello(Some("a.example"));
        let handshake = &record[RECORD_HEADER..];
        let (first, second) = handshake.split_at(20);
        let mut split = Vec::new();
        for part in [first, second] {
            split.extend_from_slice(&[CONTENT_HANDSHAKE, 0x03, 0x01]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        assert_eq!(
            parse_client_hello(&split),
            Hello::Complete {
                server_name: Some("a.example".into())
            }
        );
    }

    #[test]
    fn refuses_what_is_not_a_client_hello() {
        assert!(matches!(
            parse_client_hello(b"GET / HTTP/1.1\r\n\r\n"),
            Hello::Invalid(_)
        ));
        assert!(matches!(
            parse_client_hello(&[0x16, 0x03, 0x01, 0x00, 0x00]),
            Hello::Invalid(_)
        ));
        let mut server_hello = client_hello(Some("x"));
        server_hello[RECORD_HEADER] = 0x02;
        assert!(matches!(
            parse_client_hello(&server_hello),
            Hello::Invalid(_)
        ));
        // A length field that runs past its parent.
        let mut bad = client_hello(Some("a.example"));
        let last = bad.len() - "a.example".len() - 2;
        bad[last] = 0xff;
        assert!(matches!(parse_client_hello(&bad), Hello::Invalid(_)));
    }

    #[test]
    fn a_hello_read_a_byte_at_a_time_is_looked_at_once_per_record() {
        let hello = client_hello(Some("a.example"));
        let mut reader = HelloReader::default();
        for end in 0..hello.len() {
            assert_eq!(reader.read(&hello[..end]), Hello::NeedMore, "at {end}");
            // Only whole records are taken in: this one is not whole until the last byte.
            assert!(reader.handshake.is_empty(), "at {end}");
        }
        let whole = Hello::Complete {
            server_name: Some("a.example".into()),
        };
        assert_eq!(reader.read(&hello), whole);
        // The verdict stands; nothing is parsed again.
        assert_eq!(reader.read(&hello), whole);
    }

    #[test]
    fn a_server_name_is_a_host_name() {
        // The first found by the `sni` fuzz target: a NUL inside the name.
        for name in [
            "a.apps.l\0a",
            "a.example\r\nforged: line",
            "a b",
            "a\u{1b}[31m",
            "a/b",
            ".",
            "",
        ] {
            assert_eq!(
                parse_client_hello(&client_hello(Some(name))),
                Hello::Invalid("server name is not a host name"),
                "{name:?}"
            );
        }
        assert_eq!(
            parse_client_hello(&client_hello(Some("_acme.A-B.example."))),
            Hello::Complete {
                server_name: Some("_acme.a-b.example".into())
            }
        );
    }
}
