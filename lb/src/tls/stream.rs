//! A TLS connection we accepted ourselves, as pingora's `Stream`: pingora's HTTP session reads
//! the negotiated ALPN from it (h2 or HTTP/1.1) and, because it has an SSL digest, never sniffs
//! for cleartext h2. Bytes our HTTP/1.1 path read before handing the connection over are read
//! again first ([`TlsClient::replay`]).

use crate::l4::client_socket::ClientSocket;
use crate::l4::replay::Replay;
use async_trait::async_trait;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::server::TlsStream;

pub struct TlsClient {
    stream: TlsStream<ClientSocket>,
    digest: Arc<SslDigest>,
    alpn: Option<ALPN>,
    replay: Replay,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl TlsClient {
    pub fn new(stream: TlsStream<ClientSocket>) -> Self {
        let (_, connection) = stream.get_ref();
        let version = tls_version(connection.protocol_version());
        let cipher = connection
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str())
            .unwrap_or("unknown");
        let alpn = match connection.alpn_protocol() {
            Some(b"h2") => Some(ALPN::H2),
            Some(_) => Some(ALPN::H1),
            None => None,
        };
        let digest = Arc::new(SslDigest::new(cipher, version, None, None, Vec::new()));
        Self {
            stream,
            digest,
            alpn,
            replay: Replay::default(),
        }
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
        tls_version(self.stream.get_ref().1.protocol_version())
    }
}

pub fn tls_version(version: Option<rustls::ProtocolVersion>) -> &'static str {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "other",
    }
}

impl AsyncRead for TlsClient {
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

impl AsyncWrite for TlsClient {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for TlsClient {
    async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(&mut self.stream).await;
    }
}

impl UniqueID for TlsClient {
    fn id(&self) -> UniqueIDType {
        self.stream.get_ref().0.id()
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
        self.stream.get_ref().0.get_socket_digest()
    }
}

#[async_trait]
impl Peek for TlsClient {}
