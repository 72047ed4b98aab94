//! Entry point for the fuzz targets (`fuzz-targets/`, `fuzz/`): a TLS server connection of an
//! `https` listener (our stream over rustls unbuffered, the listener's server config) given a
//! client's bytes over loopback, then the end of the client's stream. Not an API: nothing else
//! should build on it.

use crate::config::http::CertPair;
use crate::l4::client_socket::ClientSocket;
use crate::tls::certs::{server_config, CertStore};
use crate::tls::stream::TlsClient;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server sent past this, a client reading it would have to be a flood.
const MAX_ANSWER: u64 = 1 << 20;
/// Long past any handshake of a few kilobytes on loopback: a handshake that waits on a client
/// whose stream has ended is a hang, and reported as one.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// A server on a loopback port, answering one client at a time.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
}

/// How one client's handshake went.
#[derive(Debug)]
pub struct Answer {
    /// Every byte the server sent the client.
    pub sent: Vec<u8>,
    /// The handshake's end: done, or the error that ended it (None: it did not end in time).
    pub handshake: Option<Result<(), io::Error>>,
}

impl Server {
    /// Serves the certificate and key of the PEM files `cert` and `key`.
    pub fn new(cert: &Path, key: &Path) -> Result<Self, String> {
        let store = CertStore::load(&[CertPair {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            names: Vec::new(),
        }])
        .map_err(|e| e.to_string())?;
        let config = server_config(store).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            runtime,
            listener,
            config,
        })
    }

    /// The listener's server config, as it serves the certificate.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// A client sends `client_bytes` and ends its stream, reading what the server sends until
    /// the server closes; the server runs its handshake on the connection, then closes it.
    pub fn handshake(&self, client_bytes: &[u8]) -> Result<Answer, io::Error> {
        self.runtime.block_on(async {
            let address = self.listener.local_addr()?;
            let (client, accepted) =
                tokio::join!(TcpStream::connect(address), self.listener.accept());
            let (client, (server, peer)) = (client?, accepted?);
            let mut tls = TlsClient::new(ClientSocket::new(server, peer), self.config.clone())?;
            let server_side = async move {
                let ended = tokio::time::timeout(HANDSHAKE_LIMIT, tls.handshake()).await;
                drop(tls);
                ended.ok()
            };
            let client_side = async move {
                let (reading, mut writing) = client.into_split();
                let send = async move {
                    // The server may close before taking it all: that is its answer.
                    let _ = writing.write_all(client_bytes).await;
                    let _ = writing.shutdown().await;
                };
                let mut sent = Vec::new();
                let mut reading = reading.take(MAX_ANSWER);
                // Reset by the server (closing with bytes of the client's unread) after what
                // it sent: those bytes still stand.
                let (_, _reset) = tokio::join!(send, reading.read_to_end(&mut sent));
                sent
            };
            let (handshake, sent) = tokio::join!(server_side, client_side);
            Ok(Answer { sent, handshake })
        })
    }
}
