use super::Probe;
use async_trait::async_trait;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Alive when it completes a TLS handshake. The certificate's signatures are checked but not
/// its chain or names: a health check asks whether the server answers, not whom to trust.
pub struct TlsProbe {
    host: Option<String>,
}

impl TlsProbe {
    pub fn new(host: Option<String>) -> Self {
        Self { host }
    }
}

#[derive(Debug)]
struct LivenessOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for LivenessOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn connector() -> TlsConnector {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let provider = Arc::new(ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map(|builder| {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(LivenessOnly(provider)))
                    .with_no_client_auth()
            });
        // The ring provider supports the default versions; this cannot fail in practice, and
        // an empty config would only make every TLS check fail, loudly.
        Arc::new(config.unwrap_or_else(|_| {
            ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }))
    });
    TlsConnector::from(config.clone())
}

/// Connects and completes a TLS handshake, naming `host` (or the server's IP) in the SNI.
pub async fn handshake(
    server: SocketAddr,
    host: Option<&str>,
) -> Result<TlsStream<TcpStream>, String> {
    let name = match host {
        Some(host) => {
            ServerName::try_from(host.to_owned()).map_err(|e| format!("server name: {e}"))?
        }
        None => ServerName::IpAddress(server.ip().into()),
    };
    let tcp = TcpStream::connect(server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    connector()
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))
}

#[async_trait]
impl Probe for TlsProbe {
    async fn probe(&self, server: SocketAddr) -> Result<(), String> {
        handshake(server, self.host.as_deref()).await.map(drop)
    }
}
