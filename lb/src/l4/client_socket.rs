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
//!
//! Writes of several buffers (a TLS server's records: its first flight is three) leave in one
//! system call.

use crate::l4::replay::Replay;
use async_trait::async_trait;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
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
    nodelay: Nodelay,
    /// The connection is shut down after its next write: see [`ClientSocket::ends_after_next_write`].
    ending: bool,
}

/// When the socket gets `TCP_NODELAY`. Nagle's algorithm (Linux's, Minshall's variant) holds a
/// short segment back only while an earlier short one is unacknowledged, so a connection's
/// first write leaves at once without it; from the second on it could wait for the client's
/// delayed ACK. An HTTP connection that closes after one write (a connection per request) is
/// spared the system call, as nginx spares it (`tcp_nodelay` applies from keep-alive on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nodelay {
    /// Set, or the caller's to set.
    Done,
    /// To be set once a first write has left.
    AfterFirstWrite,
    /// To be set before the next write.
    BeforeNextWrite,
}

/// Writes this large or larger go out directly.
const WRITE_BUFFER: usize = 16 * 1024;

/// Room for a connection's first read after a quiet while (nginx's
/// `client_header_buffer_size`): most request heads, and a TLS ClientHello, fit.
pub const FIRST_READ_SIZE: usize = 1024;

impl ClientSocket {
    /// `stream` as it is: `TCP_NODELAY` is the caller's.
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Self {
        Self {
            stream,
            peer,
            digest: OnceLock::new(),
            pending: None,
            replay: Replay::default(),
            nodelay: Nodelay::Done,
            ending: false,
        }
    }

    /// `stream`, which gets `TCP_NODELAY` once its first write has left (see [`Nodelay`]): for
    /// connections whose every write goes through this socket (HTTP; not spliced ones).
    pub fn with_nodelay_after_first_write(stream: TcpStream, peer: SocketAddr) -> Self {
        Self {
            nodelay: Nodelay::AfterFirstWrite,
            ..Self::new(stream, peer)
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

    /// Ready once the client's bytes are there (or its end, or an error), holding no buffer
    /// while it waits; what it read the next reads return.
    ///
    /// Readiness alone would not do: tokio takes an accepted socket for readable until a read
    /// finds it empty (so that a request sent with the connection is read without waiting for
    /// the reactor), and a wait on readiness would return at once for every new connection,
    /// which then took a buffer to wait with. A read into room on the stack settles it; only
    /// bytes that came take memory.
    pub fn poll_client_bytes(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.replay.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let mut room = [0u8; FIRST_READ_SIZE];
        let mut read = ReadBuf::new(&mut room);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut read))?;
        if !read.filled().is_empty() {
            self.replay.set(bytes::BytesMut::from(read.filled()));
        }
        Poll::Ready(Ok(()))
    }

    /// The next writes are the connection's last before its shutdown: they are sent with
    /// `MSG_MORE`, so the kernel holds their last short segment until the shutdown's FIN joins
    /// it. A response and the FIN then leave as one segment instead of two: one packet less
    /// through both hosts' TCP stacks, for each client that opens a connection per request.
    pub fn ends_after_next_write(&mut self) {
        self.ending = true;
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
            let written = ready!(write_to(
                &mut self.stream,
                &mut self.nodelay,
                self.ending,
                cx,
                &[IoSlice::new(pending)]
            ))?;
            if written == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            pending.drain(..written);
        }
        Poll::Ready(Ok(()))
    }
}

/// Writes `bufs` to `stream`, setting `TCP_NODELAY` when `nodelay` says it is due; with
/// `MSG_MORE` when the connection is `ending`.
fn write_to(
    stream: &mut TcpStream,
    nodelay: &mut Nodelay,
    ending: bool,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<std::io::Result<usize>> {
    if *nodelay == Nodelay::BeforeNextWrite {
        let _ = stream.set_nodelay(true);
        *nodelay = Nodelay::Done;
    }
    let written = match bufs {
        [buf] if ending => poll_send_more(stream, cx, buf),
        [buf] => Pin::new(&mut *stream).poll_write(cx, buf),
        _ => Pin::new(&mut *stream).poll_write_vectored(cx, bufs),
    };
    if *nodelay == Nodelay::AfterFirstWrite && matches!(written, Poll::Ready(Ok(n)) if n > 0) {
        *nodelay = Nodelay::BeforeNextWrite;
    }
    written
}

/// `send(MSG_MORE)` of `buf` once `stream` is writable.
fn poll_send_more(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<std::io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            socket2::SockRef::from(stream).send_with_flags(buf, nix::libc::MSG_MORE)
        });
        match sent {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            sent => return Poll::Ready(sent),
        }
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
        if buf.remaining() == 0 {
            // A read into no room only waits until a read would not wait (the HTTP/1.1 path
            // holds no buffer until the client's bytes come): the reactor's readiness says
            // so without the system call a read of nothing would make.
            return self.stream.poll_read_ready(cx);
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
            return write_to(
                &mut this.stream,
                &mut this.nodelay,
                this.ending,
                cx,
                &[IoSlice::new(buf)],
            );
        };
        if pending.len() + buf.len() > WRITE_BUFFER {
            ready!(this.poll_drain(cx))?;
        }
        match this.pending.as_mut() {
            Some(pending) if buf.len() < WRITE_BUFFER => {
                pending.extend_from_slice(buf);
                Poll::Ready(Ok(buf.len()))
            }
            _ => write_to(
                &mut this.stream,
                &mut this.nodelay,
                this.ending,
                cx,
                &[IoSlice::new(buf)],
            ),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_some() {
            // Buffering: a slice at a time into the buffer, as `AsyncWrite`'s default does.
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return Pin::new(this).poll_write(cx, first);
        }
        write_to(&mut this.stream, &mut this.nodelay, this.ending, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.pending.is_none()
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// An accepted socket and the client's end.
    async fn pair() -> (TcpStream, SocketAddr, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        (accepted, peer, client)
    }

    #[tokio::test]
    async fn a_vectored_write_sends_every_buffer_at_once() {
        let (accepted, peer, mut client) = pair().await;
        let mut socket = ClientSocket::new(accepted, peer);
        let records: [&[u8]; 3] = [b"hello", b"encrypted", b"flight"];
        let slices = records.map(IoSlice::new);
        let written = socket.write_vectored(&slices).await.unwrap();
        assert_eq!(
            written,
            records.concat().len(),
            "one write, not one per buffer"
        );
        drop(socket);
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, records.concat());
    }

    #[tokio::test]
    async fn an_http_connection_gets_nodelay_from_its_second_write_on() {
        let (accepted, peer, mut client) = pair().await;
        let mut socket = ClientSocket::with_nodelay_after_first_write(accepted, peer);
        assert!(!socket.stream.nodelay().unwrap());
        socket.write_all(b"response").await.unwrap();
        assert!(
            !socket.stream.nodelay().unwrap(),
            "a single write needs none"
        );
        socket.write_all(b"more").await.unwrap();
        assert!(socket.stream.nodelay().unwrap(), "set before the second");
        let mut received = [0u8; 12];
        client.read_exact(&mut received).await.unwrap();
        assert_eq!(&received, b"responsemore");
    }

    #[tokio::test]
    async fn a_closing_connections_last_write_leaves_with_its_shutdown() {
        let (accepted, peer, mut client) = pair().await;
        let mut socket = ClientSocket::with_nodelay_after_first_write(accepted, peer);
        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n";
        socket.ends_after_next_write();
        socket.write_all(response).await.unwrap();
        // On loopback a segment sent is in the peer's queue by the time the send returns; the
        // kernel is asked (a peek), not tokio's readiness, which has not seen the bytes yet.
        let mut early = [std::mem::MaybeUninit::<u8>::uninit(); 128];
        let read = socket2::SockRef::from(&client).peek(&mut early);
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the response left before the FIN: {read:?}"
        );
        AsyncWriteExt::shutdown(&mut socket).await.unwrap();
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, response, "all of it, then the end");
    }

    #[tokio::test]
    async fn a_read_into_no_room_leaves_the_bytes_for_the_next_read() {
        let (accepted, peer, mut client) = pair().await;
        let mut socket = ClientSocket::new(accepted, peer);
        let mut nothing = [0u8; 0];
        client.write_all(b"GET").await.unwrap();
        assert_eq!(socket.read(&mut nothing).await.unwrap(), 0);
        let mut head = [0u8; 3];
        socket.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"GET");
    }
}
