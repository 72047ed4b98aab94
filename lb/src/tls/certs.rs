//! Certificates for `https` listeners: PEM pairs loaded and checked, served by SNI through a
//! rustls resolver whose set is swapped whole when the files change (an ACME renewal) or on
//! reload. pingora's own rustls listener takes one certificate and no callbacks, hence ours.

use crate::config::http::CertPair;
use crate::tls::random::PooledRandom;
use arc_swap::ArcSwap;
use lab_schema::SniPattern;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read certificates from {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read a private key from {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{path} expired at {not_after}")]
    Expired { path: PathBuf, not_after: String },
    #[error("{cert} and {key} do not belong together: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Reads and checks one pair. The key's contents never appear in an error.
pub fn load_pair(pair: &CertPair) -> Result<Arc<CertifiedKey>, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pair.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| CertError::Cert {
            path: pair.cert.clone(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::Cert {
            path: pair.cert.clone(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    check_validity(&pair.cert, &chain[0])?;
    let key = PrivateKeyDer::from_pem_file(&pair.key).map_err(|e| CertError::Key {
        path: pair.key.clone(),
        reason: e.to_string(),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| CertError::Mismatch {
            cert: pair.cert.clone(),
            key: pair.key.clone(),
            reason: e.to_string(),
        })
}

/// An expired certificate is refused like a broken one: every client would reject it, so a
/// renewal that installed one must not replace a working certificate.
fn check_validity(path: &std::path::Path, leaf: &CertificateDer<'_>) -> Result<(), CertError> {
    let (_, cert) = x509_parser_pingora::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        CertError::Cert {
            path: path.to_owned(),
            reason: e.to_string(),
        }
    })?;
    let not_after = cert.validity().not_after;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if not_after.timestamp() < now {
        return Err(CertError::Expired {
            path: path.to_owned(),
            not_after: not_after.to_string(),
        });
    }
    Ok(())
}

/// The pairs of one listener, as loaded.
struct CertSet {
    by_name: Vec<(SniPattern, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

fn load_set(pairs: &[CertPair]) -> Result<CertSet, CertError> {
    let mut by_name = Vec::new();
    let mut default = None;
    for pair in pairs {
        let key = load_pair(pair)?;
        for name in &pair.names {
            // Validated at config load; a pattern that fails here is skipped, not fatal.
            if let Ok(pattern) = SniPattern::parse(name) {
                by_name.push((pattern, key.clone()));
            }
        }
        default.get_or_insert(key);
    }
    let default = default.ok_or_else(|| CertError::Cert {
        path: PathBuf::new(),
        reason: "no certificate configured".into(),
    })?;
    Ok(CertSet { by_name, default })
}

/// The resolver rustls asks for each handshake.
pub struct CertStore {
    pairs: Vec<CertPair>,
    current: ArcSwap<CertSet>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("pairs", &self.pairs)
            .finish()
    }
}

impl CertStore {
    pub fn load(pairs: &[CertPair]) -> Result<Arc<Self>, CertError> {
        let set = load_set(pairs)?;
        Ok(Arc::new(Self {
            pairs: pairs.to_vec(),
            current: ArcSwap::from_pointee(set),
        }))
    }

    /// Re-reads the files; a broken set keeps the one in use.
    pub fn reload(&self) {
        match load_set(&self.pairs) {
            Ok(set) => {
                self.current.store(Arc::new(set));
                tracing::info!("certificates re-read");
            }
            Err(e) => tracing::warn!(error = %e, "new certificates refused; keeping the old ones"),
        }
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        self.pairs
            .iter()
            .flat_map(|p| [&p.cert, &p.key])
            .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Polls the files' modification times; ACME clients replace them in place or by rename,
    /// both of which change the time. Runs until aborted.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut seen = self.modified();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = self.modified();
            if now != seen {
                seen = now;
                self.reload();
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.load();
        let chosen = hello
            .server_name()
            .and_then(|name| {
                set.by_name
                    .iter()
                    .find(|(pattern, _)| pattern.matches(name))
                    .map(|(_, key)| key.clone())
            })
            .unwrap_or_else(|| set.default.clone());
        Some(chosen)
    }
}

/// The cipher suites, in the server's order of preference: AES-128-GCM first (TLS 1.3's
/// mandatory suite, first in Go's and BoringSSL's server order too). OpenSSL clients list
/// AES-256-GCM-SHA384 first, whose key schedule runs on SHA-512, which ring computes without
/// vector instructions on AMD processors: 10 % of lab-lb's CPU per new TLS connection in the
/// `tlsnew` profile, against SHA-256 on the SHA extensions for AES-128-GCM-SHA256.
fn cipher_suites() -> Vec<rustls::SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite::*;
    vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}

/// A TLS 1.2/1.3 server config offering h2 and http/1.1, certificates from `store`, the cipher
/// suite chosen by the server's order ([`cipher_suites`]), not the client's, random values from
/// a pool ([`PooledRandom`]).
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: cipher_suites(),
        secure_random: &PooledRandom,
        ..rustls::crypto::ring::default_provider()
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}
