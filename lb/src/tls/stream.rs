//! A TLS connection we accepted ourselves, as pingora's `Stream`: pingora's HTTP session reads
//! the negotiated ALPN from it (h2 or HTTP/1.1) and, because it has an SSL digest, never sniffs
//! for cleartext h2. Bytes our HTTP/1.1 path read before handing the connection over are read
//! again first ([`TlsClient::replay`]).
//!
//! rustls runs unbuffered here ([`UnbufferedServerConnection`]): the buffers of TLS bytes in
//! and out and of decrypted bytes not yet read are ours, made when bytes come and given back
//! once they are handled, so an idle connection holds none. A buffered `ServerConnection`
//! keeps a 4 KiB read buffer (zero-filled, so resident) for as long as the connection lives,
//! which was a third of an idle https connection's memory.

use crate::l4::client_socket::ClientSocket;
use crate::l4::replay::Replay;
use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Room made for each read from the socket: a whole TLS record (16 KiB and its header and tag).
const READ_SIZE: usize = 16 * 1024 + 512;

/// Most plaintext encrypted in one write: bounds what a big write holds encrypted at once.
const WRITE_MAX: usize = 64 * 1024;

pub struct TlsClient {
    socket: ClientSocket,
    connection: UnbufferedServerConnection,
    /// TLS bytes read and not yet taken by rustls (a record's beginning, at most, between
    /// reads); no capacity while there are none.
    incoming: BytesMut,
    /// Decrypted bytes the reader has not taken yet.
    plaintext: BytesMut,
    /// TLS bytes to send, in order.
    outgoing: BytesMut,
    /// The client's close_notify came (or its end of the stream).
    read_closed: bool,
    /// Our close_notify is on its way.
    write_closed: bool,
    /// rustls failed on the client's bytes (and said so with its alert): it is not asked again,
    /// whoever still reads or writes.
    failed: bool,
    digest: Arc<SslDigest>,
    alpn: Option<ALPN>,
    replay: Replay,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

/// Where rustls stopped, given what `incoming` holds.
#[derive(Debug, PartialEq)]
enum Stop {
    /// The handshake needs more of the client's bytes.
    Handshaking,
    /// Application data may flow: the client's next bytes are needed for more to read.
    Traffic,
    /// Both sides sent close_notify.
    Closed,
}

impl TlsClient {
    /// A server connection for the client on `socket`, its handshake not begun
    /// ([`Self::handshake`]).
    pub fn new(socket: ClientSocket, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        Ok(Self {
            socket,
            connection: UnbufferedServerConnection::new(config).map_err(invalid_data)?,
            incoming: BytesMut::new(),
            plaintext: BytesMut::new(),
            outgoing: BytesMut::new(),
            read_closed: false,
            write_closed: false,
            failed: false,
            digest: Arc::new(SslDigest::new("unknown", "other", None, None, Vec::new())),
            alpn: None,
            replay: Replay::default(),
        })
    }

    /// The TLS handshake, until it is done and the session tickets TLS 1.3 sends after it are
    /// sent. A future of its own that borrows the connection: the connection's task holds the
    /// connection once, not once more for the handshake.
    pub async fn handshake(&mut self) -> io::Result<()> {
        loop {
            let (stop, _) = self.process(None, None)?;
            std::future::poll_fn(|cx| self.poll_send(cx)).await?;
            match stop {
                Stop::Traffic if !self.connection.is_handshaking() => break,
                Stop::Closed => return Err(io::ErrorKind::UnexpectedEof.into()),
                // A TLS 1.3 server may send before the client's Finished came: wait for it.
                Stop::Handshaking | Stop::Traffic => {
                    if std::future::poll_fn(|cx| self.poll_receive(cx)).await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "tls handshake eof",
                        ));
                    }
                }
            }
        }
        self.describe();
        Ok(())
    }

    /// The negotiated version, suite and protocol, as pingora asks for them.
    fn describe(&mut self) {
        let version = tls_version(self.connection.protocol_version());
        let cipher = self
            .connection
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str())
            .unwrap_or("unknown");
        self.alpn = match self.connection.alpn_protocol() {
            Some(b"h2") => Some(ALPN::H2),
            Some(_) => Some(ALPN::H1),
            None => None,
        };
        self.digest = Arc::new(SslDigest::new(cipher, version, None, None, Vec::new()));
    }

    /// The client's address.
    pub fn peer(&self) -> std::net::SocketAddr {
        self.socket.peer
    }

    /// The client chose h2 (else HTTP/1.1, by ALPN or by default).
    pub fn is_h2(&self) -> bool {
        self.alpn == Some(ALPN::H2)
    }

    /// Gives back decrypted bytes already read: the next reads return them first.
    pub fn replay(&mut self, bytes: bytes::BytesMut) {
        self.replay.set(bytes);
    }

    pub fn version(&self) -> &'static str {
        tls_version(self.connection.protocol_version())
    }

    /// Runs rustls over what `incoming` holds until it needs more of the client's bytes or may
    /// send: records decrypted go to `read` as far as it has room and to `plaintext` beyond,
    /// what rustls sends of itself (handshake, alerts, key updates) to `outgoing`; then, where
    /// application data may be sent, `write` (up to [`WRITE_MAX`] bytes of it: how many are in
    /// the second value) and a close_notify when `write` is empty.
    fn process(
        &mut self,
        read: Option<&mut ReadBuf<'_>>,
        write: Option<&[u8]>,
    ) -> io::Result<(Stop, usize)> {
        if self.failed {
            return Err(invalid_data("the TLS session failed before"));
        }
        let processed = self.process_records(read, write);
        if processed.is_err() {
            self.failed = true;
            self.send_alert();
        }
        processed
    }

    /// [`Self::process`] but for the alert.
    fn process_records(
        &mut self,
        mut read: Option<&mut ReadBuf<'_>>,
        write: Option<&[u8]>,
    ) -> io::Result<(Stop, usize)> {
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.connection.process_tls_records(&mut self.incoming[..]);
            let step = match state {
                Err(e) => Err(invalid_data(e)),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    let mut failed = None;
                    while let Some(record) = traffic.next_record() {
                        let record = match record {
                            Ok(record) => record,
                            Err(e) => {
                                failed = Some(invalid_data(e));
                                break;
                            }
                        };
                        discard += record.discard;
                        let mut payload = record.payload;
                        if let Some(read) = read.as_deref_mut() {
                            if self.plaintext.is_empty() {
                                let n = payload.len().min(read.remaining());
                                read.put_slice(&payload[..n]);
                                payload = &payload[n..];
                            }
                        }
                        self.plaintext.extend_from_slice(payload);
                    }
                    failed.map_or(Ok(None), Err)
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut self.outgoing, &mut encode).map(|()| None)
                }
                // Sent from `outgoing`, in order, by whoever sends next.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    Ok(None)
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.read_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => Ok(Some((Stop::Closed, 0))),
                Ok(ConnectionState::BlockedHandshake) => Ok(Some((Stop::Handshaking, 0))),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => match write {
                    Some([]) => append(&mut self.outgoing, 64, |out| {
                        traffic.queue_close_notify(out).map_err(encrypt_error)
                    })
                    .map(|()| {
                        self.write_closed = true;
                        Some((Stop::Traffic, 0))
                    }),
                    Some(data) => {
                        let data = &data[..data.len().min(WRITE_MAX)];
                        // Each record adds a header, a content type and a tag.
                        let room = data.len() + (data.len() / (16 * 1024) + 1) * 64;
                        append(&mut self.outgoing, room, |out| {
                            traffic.encrypt(data, out).map_err(encrypt_error)
                        })
                        .map(|()| Some((Stop::Traffic, data.len())))
                    }
                    None => Ok(Some((Stop::Traffic, 0))),
                },
                // Early data is never accepted (the config allows none).
                Ok(_) => Err(invalid_data("unexpected TLS state")),
            };
            // What rustls is done with goes, failed or not: it keeps track of the bytes after
            // (a handshake message joined across records, in place), which must stay where it
            // left them for the call that fetches its alert.
            self.incoming.advance(discard);
            if let Some(stop) = step? {
                if self.incoming.is_empty() {
                    self.incoming = BytesMut::new();
                }
                return Ok(stop);
            }
        }
    }

    /// After an error rustls has queued an alert saying what went wrong (a handshake failure,
    /// say): it goes out if the socket takes it now; the connection closes either way.
    fn send_alert(&mut self) {
        // Only while rustls holds messages to send (the alert last, perhaps handshake messages
        // before it): it hands those out before it reads anything, and reading on would fail
        // on the bytes that failed once more and queue a second fatal alert (a panic in a debug
        // build).
        while self.connection.wants_write() {
            let fetched = self.connection.process_tls_records(&mut self.incoming[..]);
            let Ok(ConnectionState::EncodeTlsData(mut encode)) = fetched.state else {
                break;
            };
            if encode_into(&mut self.outgoing, &mut encode).is_err() {
                return;
            }
        }
        let _ = std::future::poll_fn(|cx| self.poll_send(cx)).now_or_never();
    }

    /// Reads what the socket has into `incoming`: the count, 0 at its end. Nothing is
    /// allocated until bytes are there, and what was is given back when none came.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.capacity() == 0 {
            ready!(self.socket.poll_read_ready(cx))?;
        }
        self.incoming.reserve(READ_SIZE);
        let read =
            tokio_util::io::poll_read_buf(Pin::new(&mut self.socket), cx, &mut self.incoming);
        if self.incoming.is_empty() && !matches!(read, Poll::Ready(Ok(n)) if n > 0) {
            self.incoming = BytesMut::new();
        }
        read
    }

    /// Sends all of `outgoing`; its buffer goes once it is empty.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = ready!(Pin::new(&mut self.socket).poll_write(cx, &self.outgoing))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.advance(n);
        }
        self.outgoing = BytesMut::new();
        Poll::Ready(Ok(()))
    }

    /// Encrypts what it can of `data` (a close_notify for none) and starts sending it: how
    /// many bytes were taken.
    fn poll_encrypt(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        // What an earlier write encrypted goes first: the socket sets the pace.
        ready!(self.poll_send(cx))?;
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let (stop, taken) = self.process(None, Some(data))?;
        if stop == Stop::Closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // Taken: what the socket does not take now goes with the next write or flush.
        if let Poll::Ready(Err(e)) = self.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }
}

/// Appends the handshake message or alert rustls has for the client to `outgoing`.
fn encode_into(
    outgoing: &mut BytesMut,
    encode: &mut rustls::unbuffered::EncodeTlsData<'_, rustls::server::ServerConnectionData>,
) -> io::Result<()> {
    append(outgoing, 0, |out| match encode.encode(out) {
        Ok(n) => Ok(n),
        Err(EncodeError::InsufficientSize(e)) => Err(Some(e.required_size)),
        Err(EncodeError::AlreadyEncoded) => Err(None),
    })
}

/// Appends to `buffer` what `fill` writes into room made at its end (`room` bytes at first, as
/// many as `fill` asks for when too few); `fill` gives the count written, or the size it
/// needs (None: it cannot write, an error).
fn append(
    buffer: &mut BytesMut,
    room: usize,
    mut fill: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> io::Result<()> {
    let start = buffer.len();
    buffer.resize(start + room, 0);
    let written = match fill(&mut buffer[start..]) {
        Ok(n) => n,
        Err(Some(required)) => {
            buffer.resize(start + required, 0);
            fill(&mut buffer[start..]).map_err(|_| invalid_data("TLS record larger than asked"))?
        }
        Err(None) => {
            buffer.truncate(start);
            return Err(invalid_data("no TLS record can be made"));
        }
    };
    buffer.truncate(start + written);
    Ok(())
}

fn encrypt_error(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(e) => Some(e.required_size),
        // The keys are worn out (rustls has queued a close_notify).
        _ => None,
    }
}

fn invalid_data(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

pub fn tls_version(version: Option<rustls::ProtocolVersion>) -> &'static str {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "other",
    }
}

impl AsyncRead for TlsClient {
    /// Into no room, returns once a read would not wait (bytes decrypted, or the end), as a
    /// socket does, without making a buffer before the client's bytes are there.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replay.read_into(buf) {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.plaintext.is_empty() {
                let n = this.plaintext.len().min(buf.remaining());
                buf.put_slice(&this.plaintext.split_to(n));
                if this.plaintext.is_empty() {
                    this.plaintext = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let (stop, _) = this.process(Some(&mut *buf), None)?;
            // A key update's answer, say: on its way without waiting for the next write.
            if !this.outgoing.is_empty() {
                if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            if buf.filled().len() > before || !this.plaintext.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if stop == Stop::Closed || this.read_closed {
                this.read_closed = true;
                return Poll::Ready(Ok(()));
            }
            if ready!(this.poll_receive(cx))? == 0 {
                // rustls's buffered stream says the same of an end without close_notify: a
                // truncation an attacker could make look like the end of a response.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                )));
            }
        }
    }
}

impl AsyncWrite for TlsClient {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.get_mut().poll_encrypt(cx, buf)
    }

    /// Slices gathered into records as one write would take them: a record per slice would
    /// add a header and a tag to each small one (an h2 frame's head).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        match bufs.iter().find(|b| !b.is_empty()) {
            None => Poll::Ready(Ok(0)),
            Some(first) if first.len() == total || first.len() >= WRITE_MAX => {
                this.poll_encrypt(cx, first)
            }
            Some(_) => {
                let mut gathered = Vec::with_capacity(total.min(WRITE_MAX));
                for b in bufs {
                    let n = b.len().min(WRITE_MAX - gathered.len());
                    gathered.extend_from_slice(&b[..n]);
                }
                this.poll_encrypt(cx, &gathered)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.socket).poll_flush(cx)
    }

    /// A close_notify, then the TCP stream's end.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed {
            ready!(this.poll_send(cx))?;
            this.process(None, Some(&[]))?;
            this.write_closed = true;
        }
        ready!(this.poll_send(cx))?;
        match ready!(Pin::new(&mut this.socket).poll_shutdown(cx)) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[async_trait]
impl Shutdown for TlsClient {
    async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(self).await;
    }
}

impl UniqueID for TlsClient {
    fn id(&self) -> UniqueIDType {
        self.socket.id()
    }
}

impl Ssl for TlsClient {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(self.digest.clone())
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.alpn.clone()
    }
}

impl GetTimingDigest for TlsClient {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for TlsClient {
    fn get_proxy_digest(&self) -> Option<Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for TlsClient {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.socket.get_socket_digest()
    }
}

#[async_trait]
impl Peek for TlsClient {}
