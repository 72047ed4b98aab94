//! Bytes our HTTP/1.1 path read from a client before pingora's session took the connection
//! over: given back to it before anything more from the connection.

use bytes::BytesMut;
use tokio::io::ReadBuf;

#[derive(Debug, Default)]
pub struct Replay(BytesMut);

impl Replay {
    pub fn set(&mut self, bytes: BytesMut) {
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
