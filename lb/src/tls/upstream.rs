//! How an HTTP listener reaches a backend's servers: plain or TLS (verified against a CA of the
//! config's, the system's roots, or explicitly not at all), HTTP/1.1 or h2. Turned into
//! pingora's peer options per request.

use crate::config::http::UpstreamProtocol;
use pingora_core::protocols::tls::CaType;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::WrappedX509;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read CA certificates from {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} holds no CERTIFICATE block")]
    Empty { path: PathBuf },
}

/// Reads a PEM bundle into the form pingora's rustls connector takes. Each certificate is
/// parsed here, fallibly: pingora's own parser panics on one it cannot read.
pub fn load_ca(path: &Path) -> Result<Arc<CaType>, CaError> {
    let read = |reason: String| CaError::Read {
        path: path.to_owned(),
        reason,
    };
    let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| read(e.to_string()))?;
    if ders.is_empty() {
        return Err(CaError::Empty {
            path: path.to_owned(),
        });
    }
    let mut wrapped = Vec::with_capacity(ders.len());
    for der in ders {
        let cert = WrappedX509::try_new(der.to_vec(), |raw| {
            x509_parser_pingora::parse_x509_certificate(raw).map(|(_, cert)| cert)
        })
        .map_err(|e| read(e.to_string()))?;
        wrapped.push(cert);
    }
    Ok(Arc::from(wrapped))
}

/// One backend's settings, loaded.
#[derive(Clone)]
pub struct Upstream {
    tls: bool,
    verify: bool,
    server_name: String,
    ca: Option<Arc<CaType>>,
    h2: bool,
}

impl Upstream {
    pub fn load(protocol: &UpstreamProtocol) -> Result<Self, CaError> {
        Ok(Self {
            tls: protocol.tls,
            verify: protocol.verify,
            server_name: protocol.server_name.clone().unwrap_or_default(),
            ca: protocol.ca.as_deref().map(load_ca).transpose()?,
            h2: protocol.h2,
        })
    }

    /// The peer for `address` with these settings.
    pub fn peer(upstream: Option<&Self>, address: SocketAddr) -> HttpPeer {
        let Some(upstream) = upstream else {
            return HttpPeer::new(address, false, String::new());
        };
        // pingora's rustls connector needs a name to hand rustls even when not verifying; the
        // address serves (rustls sends no SNI for an IP).
        let name = if upstream.server_name.is_empty() {
            address.ip().to_string()
        } else {
            upstream.server_name.clone()
        };
        let mut peer = HttpPeer::new(address, upstream.tls, name);
        peer.options.verify_cert = upstream.verify;
        peer.options.verify_hostname = upstream.verify;
        peer.options.ca = upstream.ca.clone();
        if upstream.h2 {
            // Over TLS, ALPN h2 only; in the clear, h2 with prior knowledge.
            peer.options.set_http_version(2, 2);
        }
        peer
    }
}
