//! The Talos secrets bundle, generated once and kept: the same shape as `talosctl gen secrets`
//! writes (so either tool can read the other's), stored 0600 in the 0700 state directory.
//!
//! Regenerating it would lock the user out of a running cluster, so an existing file is always
//! loaded, never replaced.

use super::pki::{self, CertAndKey, KeyType, PkiError};
use super::random;
use crate::state_dir::private as files;
use crate::state_dir::StateDir;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// `talosctl gen secrets`'s `secrets.yaml`. Certificates and keys are base64 of their PEM text,
/// as Talos machine configs carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// The cluster's discovery id and secret.
    pub cluster: ClusterIdentity,
    /// The bootstrap token and the encryption key of Secrets at rest.
    pub secrets: ClusterTokens,
    /// The nodes' shared trustd token.
    pub trustdinfo: TrustdInfo,
    /// The cluster's CAs and the service-account signing key.
    pub certs: Certs,
}

/// Cluster discovery's identity.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterIdentity {
    /// URL-safe base64 of 32 random bytes; not secret, shown in debug output.
    pub id: String,
    /// Base64 of 32 random bytes: what encrypts the cluster's discovery data.
    pub secret: String,
}

/// The cluster-wide tokens and keys that are not certificates.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTokens {
    /// `[a-z0-9]{6}.[a-z0-9]{16}`: kubelet TLS bootstrap.
    pub bootstraptoken: String,
    /// Key of the kube-apiserver's secretbox encryption of Secrets at rest.
    pub secretboxencryptionsecret: String,
}

/// What nodes share to be trusted by trustd.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustdInfo {
    /// What a node presents to trustd to get its Talos API certificate.
    pub token: String,
}

/// The cluster's CAs (ECDSA P-256, the Talos API's Ed25519) and the service-account key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certs {
    /// etcd's CA.
    pub etcd: EncodedCertAndKey,
    /// The Kubernetes cluster CA.
    pub k8s: EncodedCertAndKey,
    /// The CA of the kube-apiserver's aggregation layer (front proxy).
    pub k8saggregator: EncodedCertAndKey,
    /// What signs service-account tokens.
    pub k8sserviceaccount: EncodedKey,
    /// The Talos API's CA.
    pub os: EncodedCertAndKey,
}

/// A certificate and its private key, each base64 of its PEM text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodedCertAndKey {
    /// The certificate; not secret, shown in debug output.
    pub crt: String,
    /// The private key.
    pub key: String,
}

/// A private key alone, base64 of its PEM text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodedKey {
    /// The private key.
    pub key: String,
}

/// What `{:?}` shows in place of a secret: debug output ends up in logs, panics and test
/// failures, none of which may carry the cluster's keys.
pub const REDACTED: &str = "<redacted>";

// Only the parts that are public anyway (certificates, the cluster's discovery id) are shown.
impl fmt::Debug for ClusterIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterIdentity")
            .field("id", &self.id)
            .field("secret", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for ClusterTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTokens")
            .field("bootstraptoken", &REDACTED)
            .field("secretboxencryptionsecret", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for TrustdInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustdInfo")
            .field("token", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for EncodedCertAndKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedCertAndKey")
            .field("crt", &self.crt)
            .field("key", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for EncodedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedKey")
            .field("key", &REDACTED)
            .finish()
    }
}

/// Why a state file with secrets (the bundle, the admin credentials) could not be loaded or
/// created.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Reading or writing the file, or creating the state directory, failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not YAML of the expected shape, or a field fails its check.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field where there is one.
        message: String,
    },
    /// The file can be read by others than its owner.
    #[error(
        "{} has mode {mode:04o}: it holds the cluster's keys and must be readable by its owner only (chmod 600)",
        path.display()
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Generating a key or certificate for a new file failed.
    #[error("generating the Talos secrets: {0}")]
    Generate(#[from] PkiError),
}

impl Secrets {
    /// The bundle in `state`, generated and written (0600, in a 0700 directory) only when
    /// there is none yet.
    pub fn load_or_generate(state: &StateDir) -> Result<Self, SecretsError> {
        load_or_create(state, state.talos_secrets(), Self::generate, Self::check)
    }

    /// Reads and checks a bundle written by this program or by `talosctl gen secrets`.
    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        load_private(path, Self::check)
    }

    /// A fresh bundle, as `talosctl gen secrets` makes one for Talos 1.13.
    pub fn generate() -> Result<Self, PkiError> {
        let encode = |ca: CertAndKey| EncodedCertAndKey {
            crt: STANDARD.encode(ca.crt),
            key: STANDARD.encode(ca.key),
        };
        let (_, service_account) = pki::generate_key(KeyType::EcdsaP256)?;
        Ok(Self {
            cluster: ClusterIdentity {
                id: URL_SAFE.encode(random::bytes::<32>()),
                secret: STANDARD.encode(random::bytes::<32>()),
            },
            secrets: ClusterTokens {
                bootstraptoken: random::token(6, 16),
                secretboxencryptionsecret: STANDARD.encode(random::bytes::<32>()),
            },
            trustdinfo: TrustdInfo {
                token: random::token(6, 16),
            },
            certs: Certs {
                etcd: encode(pki::new_ca("etcd", KeyType::EcdsaP256)?),
                k8s: encode(pki::new_ca("kubernetes", KeyType::EcdsaP256)?),
                k8saggregator: encode(pki::new_ca("kubernetes-aggregator", KeyType::EcdsaP256)?),
                k8sserviceaccount: EncodedKey {
                    key: STANDARD.encode(service_account),
                },
                os: encode(pki::new_ca("talos", KeyType::Ed25519)?),
            },
        })
    }

    /// The Talos OS CA, decoded: what signs Talos API client certificates.
    pub(crate) fn os_ca(&self) -> Result<CertAndKey, String> {
        Ok(CertAndKey {
            crt: decode_pem("certs.os.crt", &self.certs.os.crt)?,
            key: decode_pem("certs.os.key", &self.certs.os.key)?,
        })
    }

    /// The Kubernetes CA, decoded: what signs the admin kubeconfig's client certificate.
    pub(crate) fn kubernetes_ca(&self) -> Result<CertAndKey, String> {
        Ok(CertAndKey {
            crt: decode_pem("certs.k8s.crt", &self.certs.k8s.crt)?,
            key: decode_pem("certs.k8s.key", &self.certs.k8s.key)?,
        })
    }

    /// Every field present and in the shape Talos expects; every key readable.
    fn check(&self) -> Result<(), String> {
        for (key, token) in [
            ("secrets.bootstraptoken", &self.secrets.bootstraptoken),
            ("trustdinfo.token", &self.trustdinfo.token),
        ] {
            if !random::is_token(token, 6, 16) {
                return Err(format!(
                    "{key}: expected a token like abcdef.0123456789abcdef"
                ));
            }
        }
        for (key, value) in [
            ("cluster.id", &self.cluster.id),
            ("cluster.secret", &self.cluster.secret),
            (
                "secrets.secretboxencryptionsecret",
                &self.secrets.secretboxencryptionsecret,
            ),
        ] {
            if value.is_empty() {
                return Err(format!("{key}: must not be empty"));
            }
        }
        let cas = [
            ("certs.etcd", &self.certs.etcd, KeyType::EcdsaP256),
            ("certs.k8s", &self.certs.k8s, KeyType::EcdsaP256),
            (
                "certs.k8saggregator",
                &self.certs.k8saggregator,
                KeyType::EcdsaP256,
            ),
            ("certs.os", &self.certs.os, KeyType::Ed25519),
        ];
        for (key, ca, kind) in cas {
            let crt = decode_pem(&format!("{key}.crt"), &ca.crt)?;
            match pem::parse(&crt) {
                Ok(block) if block.tag() == "CERTIFICATE" => {}
                _ => return Err(format!("{key}.crt: expected a PEM certificate")),
            }
            check_key(&format!("{key}.key"), &ca.key, kind)?;
        }
        check_key(
            "certs.k8sserviceaccount.key",
            &self.certs.k8sserviceaccount.key,
            KeyType::EcdsaP256,
        )
    }
}

pub(crate) fn check_key(key: &str, encoded: &str, kind: KeyType) -> Result<(), String> {
    let text = decode_pem(key, encoded)?;
    pki::load_key(&text, kind)
        .map(|_| ())
        .map_err(|e| format!("{key}: {e}"))
}

pub(crate) fn decode_pem(key: &str, encoded: &str) -> Result<String, String> {
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|e| format!("{key}: not base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("{key}: not base64 of PEM text"))
}

/// The file `path` of `state`, created by `create` only when there is none yet: it is written
/// 0600 in a 0700 directory, atomically, and never replaced.
pub(crate) fn load_or_create<T: Serialize + DeserializeOwned>(
    state: &StateDir,
    path: PathBuf,
    create: impl FnOnce() -> Result<T, PkiError>,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<T, SecretsError> {
    if path.symlink_metadata().is_ok() {
        return load_private(&path, check);
    }
    state.create().map_err(|source| SecretsError::Io {
        path: state.path().to_owned(),
        source,
    })?;
    let value = create()?;
    let yaml = serde_norway::to_string(&value).map_err(|e| SecretsError::Invalid {
        path: path.clone(),
        message: e.to_string(),
    })?;
    match files::write_new_private(&path, yaml.as_bytes()) {
        Ok(()) => Ok(value),
        // Another run wrote it first: theirs is the one in use.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load_private(&path, check),
        Err(source) => Err(SecretsError::Io { path, source }),
    }
}

/// Reads a state file, refusing one that others can read and one that fails `check`.
pub(crate) fn load_private<T: DeserializeOwned>(
    path: &Path,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<T, SecretsError> {
    let io_error = |source| SecretsError::Io {
        path: path.to_owned(),
        source,
    };
    let mode = files::mode(path).map_err(io_error)?;
    if !files::is_private(mode) {
        return Err(SecretsError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let invalid = |message: String| SecretsError::Invalid {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(io_error)?;
    let value: T = serde_norway::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    check(&value).map_err(invalid)?;
    Ok(value)
}
