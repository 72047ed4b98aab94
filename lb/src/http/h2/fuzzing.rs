//! Entry point for the fuzz targets (`fuzz-targets/`, `fuzz/`): the chunked-body reader of a
//! server's response on this path, fed as the relay feeds it (what a read brings appended to
//! the buffer, pieces taken off it until more is needed). Not an API: nothing else should
//! build on it.

use super::dechunk::{Dechunker, Piece};
use bytes::BytesMut;

/// One chunked body read piece by piece, and what came of it so far.
#[derive(Debug)]
pub struct Dechunk {
    dechunker: Dechunker,
    buf: BytesMut,
    data: Vec<u8>,
    trailers: Option<Vec<(String, Vec<u8>)>>,
    error: Option<&'static str>,
}

impl Default for Dechunk {
    fn default() -> Self {
        Self {
            dechunker: Dechunker::new(),
            buf: BytesMut::new(),
            data: Vec::new(),
            trailers: None,
            error: None,
        }
    }
}

impl Dechunk {
    /// `bytes` as one read from the server brings them; after the body's end or an error they
    /// are only kept (unread), as the relay leaves them.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while self.trailers.is_none() && self.error.is_none() {
            match self.dechunker.next(&mut self.buf) {
                Ok(Piece::More) => return,
                Ok(Piece::Data(data)) => self.data.extend_from_slice(&data),
                Ok(Piece::End(fields)) => {
                    let fields = fields
                        .iter()
                        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                        .collect();
                    self.trailers = Some(fields);
                }
                Err(why) => self.error = Some(why),
            }
        }
    }

    /// The body's data so far, as the DATA frames carry it.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The trailer fields (name, value) once the body has ended.
    pub fn trailers(&self) -> Option<&[(String, Vec<u8>)]> {
        self.trailers.as_deref()
    }

    /// Why the body was refused, if it was.
    pub fn error(&self) -> Option<&'static str> {
        self.error
    }

    /// The bytes fed that are not (yet) part of the body.
    pub fn unread(&self) -> usize {
        self.buf.len()
    }
}
