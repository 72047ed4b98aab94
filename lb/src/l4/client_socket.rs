//! An accepted client connection as pingora's `Stream` (`Box<dyn IO>`): a thin wrapper around
//! the tokio socket, without pingora's buffering and timing layers, which an L4 proxy that only
//! splices bytes does not use. It carries the addresses the accept already knew.
//!
//! An HTTP listener turns on write buffering ([`ClientSocket::buffer_writes`]): pingora's
//! HTTP/1 session writes a response's header and body separately and flushes at the end,
//! counting on a buffered stream (its own is one) to send them in one segment.
//!
//! Bytes already read from the client by the HTTP/1.1 path can be given back
//! ([`ClientSocket::replay`]); reads return them first, so pingora's session can take over a
//! connection mid-stream.

use crate::l4::replay::Replay;
use async_trait::async_trait;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

#[derive(Debug)]
pub struct ClientSocket {
    stream: TcpStream,
    pub peer: SocketAddr,
    digest: OnceLock<Arc<SocketDigest>>,
    /// Bytes written but not yet sent, when buffering.
    pending: Option<Vec<u8>>,
    /// Bytes read from the client that reads return before the socket's.
    replay: Replay,
}

/// Writes this large or larger go out directly.
const WRITE_BUFFER: usize = 16 * 1024;

impl ClientSocket {
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Self {
        Self {
            stream,
            peer,
            digest: OnceLock::new(),
            pending: None,
            replay: Replay::default(),
        }
    }

    /// The address the client connected to: asked of the socket when needed (an L4 proxy's
    /// PROXY header), not for every connection (a system call HTTP connections do without).
    pub fn local(&self) -> SocketAddr {
        self.stream.local_addr().unwrap_or(self.peer)
    }

    /// Gives back bytes already read: the next reads return them first.
    pub fn replay(&mut self, bytes: bytes::BytesMut) {
        self.replay.set(bytes);
    }

    /// Ready once a read would not wait (bytes there, the end, or an error), reading nothing.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.replay.is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.stream.poll_read_ready(cx)
    }

    /// Keeps writes until a flush (or until they fill the buffer).
    pub fn buffer_writes(&mut self) {
        self.pending
            .get_or_insert_with(|| Vec::with_capacity(WRITE_BUFFER));
    }

    /// Sends whatever is buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some(pending) = self.pending.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while !pending.is_empty() {
            let written = ready!(Pin::new(&mut self.stream).poll_write(cx, pending))?;
            if written == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            pending.drain(..written);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ClientSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.replay.read_into(buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let Some(pending) = this.pending.as_ref() else {
            return Pin::new(&mut this.stream).poll_write(cx, buf);
        };
        if pending.len() + buf.len() > WRITE_BUFFER {
            ready!(this.poll_drain(cx))?;
        }
        match this.pending.as_mut() {
            Some(pending) if buf.len() < WRITE_BUFFER => {
                pending.extend_from_slice(buf);
                Poll::Ready(Ok(buf.len()))
            }
            _ => Pin::new(&mut this.stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for ClientSocket {
    async fn shutdown(&mut self) {
        // Through the buffer, so what it holds goes out first.
        let _ = AsyncWriteExt::shutdown(self).await;
    }
}

impl UniqueID for ClientSocket {
    fn id(&self) -> UniqueIDType {
        self.stream.as_raw_fd()
    }
}

impl Ssl for ClientSocket {}

impl GetTimingDigest for ClientSocket {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for ClientSocket {
    fn get_proxy_digest(&self) -> Option<Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for ClientSocket {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(
            self.digest
                .get_or_init(|| Arc::new(SocketDigest::from_raw_fd(self.stream.as_raw_fd())))
                .clone(),
        )
    }
}

#[async_trait]
impl Peek for ClientSocket {}
