//! The admin's `talosconfig`: one context named after the cluster, the control planes' net1
//! addresses as endpoints, and an `os:admin` client certificate from the Talos OS CA.
//!
//! The client certificate is kept in the state directory like the secrets bundle, so rendering
//! the talosconfig again gives the same file (a re-run writes nothing).

use super::pki::{self, KeyType, PkiError};
use super::secrets::{self, Secrets, SecretsError};
use crate::model::{Lab, NetworkId, Role};
use crate::state_dir::StateDir;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The Talos role with every permission.
pub const ADMIN_ROLE: &str = "os:admin";

/// The admin's client certificate and key, base64 of their PEM text as talosconfig carries them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminCredentials {
    /// The `os:admin` client certificate, valid for a year.
    pub crt: String,
    /// Its private key.
    pub key: String,
}

// The key is os:admin on every node: never in debug output.
impl std::fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredentials")
            .field("crt", &self.crt)
            .field("key", &secrets::REDACTED)
            .finish()
    }
}

impl AdminCredentials {
    /// The credentials in `state`, issued by the bundle's Talos OS CA when there are none.
    pub fn load_or_generate(state: &StateDir, secrets: &Secrets) -> Result<Self, SecretsError> {
        secrets::load_or_create(
            state,
            state.talos_admin(),
            || Self::generate(secrets),
            Self::check,
        )
    }

    /// Reads and checks credentials written by [`Self::load_or_generate`].
    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        secrets::load_private(path, Self::check)
    }

    /// A new `os:admin` certificate (valid one year) from the bundle's Talos OS CA.
    pub fn generate(secrets: &Secrets) -> Result<Self, PkiError> {
        let ca = secrets.os_ca().map_err(PkiError::Bundle)?;
        let admin = pki::new_client(&ca, KeyType::Ed25519, ADMIN_ROLE)?;
        Ok(Self {
            crt: STANDARD.encode(admin.crt),
            key: STANDARD.encode(admin.key),
        })
    }

    fn check(&self) -> Result<(), String> {
        let crt = secrets::decode_pem("crt", &self.crt)?;
        match pem::parse(&crt) {
            Ok(block) if block.tag() == "CERTIFICATE" => {}
            _ => return Err("crt: expected a PEM certificate".to_owned()),
        }
        secrets::check_key("key", &self.key, KeyType::Ed25519)
    }
}

#[derive(Serialize)]
struct TalosConfig {
    context: String,
    contexts: BTreeMap<String, Context>,
}

#[derive(Serialize)]
struct Context {
    endpoints: Vec<String>,
    ca: String,
    crt: String,
    key: String,
}

/// The admin's talosconfig; the same inputs always give the same text.
pub fn talosconfig(
    lab: &Lab,
    secrets: &Secrets,
    admin: &AdminCredentials,
) -> Result<String, serde_norway::Error> {
    let endpoints = lab
        .addresses_of(Role::ControlPlane, NetworkId::Net1)
        .iter()
        .map(ToString::to_string)
        .collect();
    let name = lab.cluster.name.to_string();
    let config = TalosConfig {
        context: name.clone(),
        contexts: BTreeMap::from([(
            name,
            Context {
                endpoints,
                ca: secrets.certs.os.crt.clone(),
                crt: admin.crt.clone(),
                key: admin.key.clone(),
            },
        )]),
    };
    serde_norway::to_string(&config)
}
