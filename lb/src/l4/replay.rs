//! Bytes our HTTP/1.1 path read from a client before pingora's session took the connection
//! over: given back to it before anything more from the connection.

use bytes::BytesMut;
use tokio::io::ReadBuf;

#[derive(Debug, Default)]
pub struct Replay(BytesMut);

impl Replay {
    /// Bytes to return before what is still kept (which came after them).
    pub fn set(&mut self, mut bytes: BytesMut) {
        if !self.0.is_empty() {
            bytes.extend_from_slice(&self.0);
        }
        self.0 = bytes;
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Fills `buf` from what is kept; false when nothing is.
    pub fn read_into(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let n = self.0.len().min(buf.remaining());
        buf.put_slice(&self.0.split_to(n));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Replay;
    use bytes::BytesMut;
    use tokio::io::ReadBuf;

    #[test]
    fn bytes_given_back_while_some_are_still_kept_come_first() {
        let mut replay = Replay::default();
        replay.set(BytesMut::from(&b"PRI * HTTP/2.0\r\n"[..]));
        // A reader with little room takes the first bytes, then gives them back unhandled:
        // they go before the rest, and nothing is lost.
        let mut room = [0u8; 4];
        let mut read = ReadBuf::new(&mut room);
        assert!(replay.read_into(&mut read));
        assert_eq!(read.filled(), b"PRI ");
        replay.set(BytesMut::from(read.filled()));
        let mut room = [0u8; 32];
        let mut read = ReadBuf::new(&mut room);
        assert!(replay.read_into(&mut read));
        assert_eq!(read.filled(), b"PRI * HTTP/2.0\r\n");
        assert!(replay.is_empty());
    }
}
