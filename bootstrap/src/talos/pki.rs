//! Keys and certificates in the shapes Talos reads: Ed25519 keys as PKCS#8 under
//! `ED25519 PRIVATE KEY`, ECDSA keys as SEC1 under `EC PRIVATE KEY`, certificates as PEM.

use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber, PKCS_ECDSA_P256_SHA256, PKCS_ED25519,
};
use time::{Duration, OffsetDateTime};

const ED25519_LABEL: &str = "ED25519 PRIVATE KEY";
const EC_LABEL: &str = "EC PRIVATE KEY";

/// Talos issues its CAs for ten years.
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// And client certificates (talosconfig) for one.
pub const CLIENT_VALIDITY: Duration = Duration::days(365);

/// Certificates are backdated a little so a node whose clock lags still accepts them.
const CLOCK_SKEW: Duration = Duration::minutes(10);

/// Why a key or certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen could not generate a key pair or sign a certificate.
    #[error("generating a key or certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// An ECDSA key could not be converted between PKCS#8 and SEC1.
    #[error("converting an ECDSA key: {0}")]
    Ecdsa(String),
    /// A key's text is not PEM.
    #[error("not a PEM document: {0}")]
    Pem(#[from] pem::PemError),
    /// The bundle's Talos OS CA could not be decoded.
    #[error("the secrets bundle: {0}")]
    Bundle(String),
    /// A PEM block has another label than the key type calls for.
    #[error("expected a PEM `{expected}` block, found `{found}`")]
    Label {
        /// The label the key type calls for.
        expected: &'static str,
        /// The label the block has.
        found: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Ed25519,
    EcdsaP256,
}

/// A PEM certificate and its PEM private key.
pub struct CertAndKey {
    pub crt: String,
    pub key: String,
}

pub fn generate_key(kind: KeyType) -> Result<(KeyPair, String), PkiError> {
    match kind {
        KeyType::Ed25519 => {
            let key = KeyPair::generate_for(&PKCS_ED25519)?;
            let pem = pem::encode(&pem::Pem::new(ED25519_LABEL, key.serialize_der()));
            Ok((key, pem))
        }
        KeyType::EcdsaP256 => {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let secret = p256::SecretKey::from_pkcs8_der(&key.serialize_der())
                .map_err(|e| PkiError::Ecdsa(e.to_string()))?;
            let pem = secret
                .to_sec1_pem(p256::pkcs8::LineEnding::LF)
                .map_err(|e| PkiError::Ecdsa(e.to_string()))?;
            Ok((key, pem.to_string()))
        }
    }
}

/// Reads a key written by [`generate_key`] (or by talosctl) back into a signing key.
pub fn load_key(pem_text: &str, kind: KeyType) -> Result<KeyPair, PkiError> {
    let block = pem::parse(pem_text)?;
    let expected = match kind {
        KeyType::Ed25519 => ED25519_LABEL,
        KeyType::EcdsaP256 => EC_LABEL,
    };
    if block.tag() != expected {
        return Err(PkiError::Label {
            expected,
            found: block.tag().to_owned(),
        });
    }
    let pkcs8 = match kind {
        KeyType::Ed25519 => block.contents().to_vec(),
        KeyType::EcdsaP256 => p256::SecretKey::from_sec1_der(block.contents())
            .and_then(|k| k.to_pkcs8_der().map_err(|_| p256::elliptic_curve::Error))
            .map_err(|e| PkiError::Ecdsa(e.to_string()))?
            .as_bytes()
            .to_vec(),
    };
    Ok(KeyPair::try_from(pkcs8.as_slice())?)
}

/// A self-signed CA whose subject is organisation `organization`.
pub fn new_ca(organization: &str, kind: KeyType) -> Result<CertAndKey, PkiError> {
    let (key, key_pem) = generate_key(kind)?;
    let mut params = base_params(organization, CA_VALIDITY);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let cert = params.self_signed(&key)?;
    Ok(CertAndKey {
        crt: cert.pem(),
        key: key_pem,
    })
}

/// A client certificate for the Talos API: Ed25519, organisation = the Talos role
/// (`os:admin`), signed by the Talos OS CA.
pub fn new_client(ca: &CertAndKey, ca_kind: KeyType, role: &str) -> Result<CertAndKey, PkiError> {
    let params = base_params(role, CLIENT_VALIDITY);
    new_leaf(
        ca,
        ca_kind,
        KeyType::Ed25519,
        params,
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

/// A Talos API server certificate for a node's addresses: Ed25519, signed by the Talos OS CA,
/// as apid presents it (the local lab's stand-ins).
pub fn new_server(
    ca: &CertAndKey,
    ca_kind: KeyType,
    common_name: &str,
    addresses: &[std::net::IpAddr],
) -> Result<CertAndKey, PkiError> {
    // Not the CA's subject (O=talos): a leaf named like its issuer looks self-signed to
    // OpenSSL-based clients.
    let mut params = base_params("talos-node", CLIENT_VALIDITY);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = addresses
        .iter()
        .map(|ip| rcgen::SanType::IpAddress(*ip))
        .collect();
    new_leaf(
        ca,
        ca_kind,
        KeyType::Ed25519,
        params,
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

/// A Kubernetes client certificate, `CN=common_name`, `O=group`: ECDSA P-256 signed by the
/// Kubernetes CA (ECDSA P-256), as Talos issues the admin kubeconfig's.
pub fn new_kubernetes_client(
    ca: &CertAndKey,
    common_name: &str,
    group: &str,
) -> Result<CertAndKey, PkiError> {
    let mut params = base_params(group, CLIENT_VALIDITY);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    new_leaf(
        ca,
        KeyType::EcdsaP256,
        KeyType::EcdsaP256,
        params,
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

/// A leaf certificate of `params` for a new `kind` key, for `usage`, signed by `ca`.
fn new_leaf(
    ca: &CertAndKey,
    ca_kind: KeyType,
    kind: KeyType,
    mut params: CertificateParams,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertAndKey, PkiError> {
    let ca_key = load_key(&ca.key, ca_kind)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.crt, ca_key)?;
    let (key, key_pem) = generate_key(kind)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertAndKey {
        crt: cert.pem(),
        key: key_pem,
    })
}

fn base_params(organization: &str, validity: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, organization);
    params.distinguished_name = name;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + validity;
    params.serial_number = Some(random_serial());
    params
}

/// 128 random bits, positive as RFC 5280 requires.
fn random_serial() -> SerialNumber {
    let mut bytes = crate::talos::random::bytes::<16>();
    bytes[0] &= 0x7F;
    SerialNumber::from_slice(&bytes)
}
