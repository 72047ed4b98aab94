//! The HTTPS transport: the Proxmox API with an API token, for use away from the host.
//!
//! The server is verified either by a CA file (the cluster CA, `/etc/pve/pve-root-ca.pem`) or by
//! the SHA-256 fingerprint of its certificate (what the Proxmox UI shows under Certificates);
//! there is no way to skip verification. The token secret goes only into the `Authorization`
//! header: never into errors, logs or `Debug` output.
//!
//! What a token cannot do: only `root@pam` may pass a device into a container (`dev0` for the
//! VPN's /dev/net/tun) or set most container features, so those calls fail over HTTPS; run on the
//! host with the `pvesh` transport for them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

use super::client::{ApiError, Method, Params, ProxmoxApi};

/// How the server's certificate is trusted.
#[derive(Debug, Clone)]
pub enum Trust {
    /// PEM file with the CA(s) that signed the server certificate.
    CaFile(PathBuf),
    /// SHA-256 of the server certificate (DER), as `AA:BB:…` or plain hex.
    Fingerprint(String),
}

/// Why the HTTPS transport could not be set up (calls themselves fail with [`ApiError`]).
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// The URL is not `https://host[:port]`.
    #[error("{url}: not an https://host[:port] URL")]
    Url {
        /// The URL given.
        url: String,
    },
    /// The token id is not `USER@REALM!TOKENID`.
    #[error("API token id `{id}`: expected USER@REALM!TOKENID")]
    TokenId {
        /// The token id given.
        id: String,
    },
    /// The token secret is empty or only whitespace.
    #[error("the API token secret is empty")]
    EmptySecret,
    /// The CA file cannot be read, holds no certificate, or holds one rustls refuses.
    #[error("{}: cannot read CA certificates: {reason}", path.display())]
    CaFile {
        /// The CA file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The fingerprint given is not 32 bytes of hex.
    #[error("fingerprint `{0}`: expected 32 bytes of hex (AA:BB:… as Proxmox shows it)")]
    Fingerprint(String),
    /// rustls would not build a client configuration.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The tokio runtime the calls run on could not be started.
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
}

/// The API over HTTPS with `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`.
pub struct Https {
    host: String,
    port: u16,
    token_id: String,
    secret: String,
    tls: tokio_rustls::TlsConnector,
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
}

impl fmt::Debug for Https {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Https")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("token_id", &self.token_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Https {
    /// `url` is `https://host[:port]` (8006 by default); `token_id` is `USER@REALM!TOKENID`.
    pub fn new(url: &str, token_id: &str, secret: &str, trust: &Trust) -> Result<Self, HttpsError> {
        let (host, port) = parse_url(url)?;
        let valid_id = token_id
            .split_once('!')
            .is_some_and(|(user, id)| user.contains('@') && !id.is_empty());
        if !valid_id {
            return Err(HttpsError::TokenId {
                id: token_id.to_owned(),
            });
        }
        if secret.trim().is_empty() {
            return Err(HttpsError::EmptySecret);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpsError::Tls(e.to_string()))?;
        let config = match trust {
            Trust::CaFile(path) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| HttpsError::CaFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if certs.is_empty() {
                    return Err(HttpsError::CaFile {
                        path: path.clone(),
                        reason: "no certificate in the file".into(),
                    });
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| HttpsError::CaFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::Fingerprint(text) => {
                let verifier = PinnedCertificate {
                    sha256: parse_fingerprint(text)?,
                    algorithms: provider.signature_verification_algorithms,
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth()
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(HttpsError::Runtime)?;
        Ok(Self {
            host,
            port,
            token_id: token_id.to_owned(),
            secret: secret.trim().to_owned(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            runtime,
            timeout: Duration::from_secs(60),
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        params: &Params,
    ) -> Result<(u16, Bytes), String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", self.host, self.port))?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", self.host))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let form = encode_form(params);
        let mut uri = format!("/api2/json{}", encode_path(path));
        let body = match method {
            Method::Get | Method::Delete if !form.is_empty() => {
                uri = format!("{uri}?{form}");
                String::new()
            }
            _ => form,
        };
        let request = hyper::Request::builder()
            .method(method.as_str())
            .uri(uri)
            .header(hyper::header::HOST, &self.host)
            .header(
                hyper::header::AUTHORIZATION,
                format!("PVEAPIToken={}={}", self.token_id, self.secret),
            )
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
}

impl ProxmoxApi for Https {
    fn call(&self, method: Method, path: &str, params: &Params) -> Result<Value, ApiError> {
        let refused = |message: String| ApiError::Refused {
            method: method.as_str(),
            path: path.to_owned(),
            message,
        };
        let outcome = self.runtime.block_on(async {
            tokio::time::timeout(self.timeout, self.exchange(method, path, params)).await
        });
        let (status, body) = match outcome {
            Ok(result) => result.map_err(refused)?,
            Err(_) => return Err(refused(format!("no answer within {:?}", self.timeout))),
        };
        let json: Value = serde_json::from_slice(&body).map_err(|source| ApiError::Decode {
            method: method.as_str(),
            path: path.to_owned(),
            source,
        })?;
        if status != 200 {
            // Proxmox puts the reason in `message` and per-parameter reasons in `errors`.
            let mut message = format!("HTTP {status}");
            if let Some(m) = json.get("message").and_then(Value::as_str) {
                message = format!("{message}: {}", m.trim());
            }
            if let Some(errors) = json.get("errors").filter(|e| !e.is_null()) {
                message = format!("{message} {errors}");
            }
            return Err(refused(message));
        }
        Ok(json.get("data").cloned().unwrap_or(Value::Null))
    }
}

/// Accepts exactly one certificate, named by its SHA-256, whatever its names or issuer: the
/// node's self-signed certificate, pinned by the fingerprint the user copied from the UI.
/// Handshake signatures are still verified, so the peer must hold that certificate's key.
#[derive(Debug)]
struct PinnedCertificate {
    sha256: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if digest.as_ref() == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate fingerprint {} is not the pinned {}",
                hex_colons(digest.as_ref()),
                hex_colons(&self.sha256)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The SHA-256 fingerprint of a DER certificate, as Proxmox displays it (`AA:BB:…`).
pub fn fingerprint(der: &[u8]) -> String {
    hex_colons(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

fn hex_colons(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_fingerprint(text: &str) -> Result<[u8; 32], HttpsError> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let bad = || HttpsError::Fingerprint(text.to_owned());
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn parse_url(url: &str) -> Result<(String, u16), HttpsError> {
    let bad = || HttpsError::Url {
        url: url.to_owned(),
    };
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(bad());
    }
    // `[v6]:port`, `host:port`, or `host`.
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad())?,
        None => 8006,
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

fn encode_form(params: &Params) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Path segments are escaped one by one: a UPID contains `:` and `@`, a volume id `:` and `/`.
fn encode_path(path: &str) -> String {
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}

/// Reads a token secret from a file (first line), so it never sits on a command line.
pub fn read_secret(path: &Path) -> Result<String, std::io::Error> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_fingerprints_parse() {
        assert_eq!(
            parse_url("https://pve.lan:8006").unwrap(),
            ("pve.lan".into(), 8006)
        );
        assert_eq!(
            parse_url("https://10.0.0.2/").unwrap(),
            ("10.0.0.2".into(), 8006)
        );
        assert_eq!(parse_url("https://[::1]:9").unwrap(), ("::1".into(), 9));
        assert!(parse_url("http://pve:8006").is_err());
        let fp = fingerprint(b"x");
        assert_eq!(parse_fingerprint(&fp).unwrap().len(), 32);
        assert!(parse_fingerprint("AA:BB").is_err());
    }
}
