//! The admin's `talosconfig`: one context named after the cluster, the control planes' net1
//! addresses as endpoints, and a fresh `os:admin` client certificate from the Talos OS CA.

use super::pki::{self, KeyType};
use super::secrets::Secrets;
use super::PkiError;
use crate::model::{Lab, NetworkId, Role};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;
use std::collections::BTreeMap;

/// The Talos role with every permission.
pub const ADMIN_ROLE: &str = "os:admin";

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

#[derive(Debug, thiserror::Error)]
pub enum TalosconfigError {
    #[error("the secrets bundle: {0}")]
    Secrets(String),
    #[error("issuing the admin certificate: {0}")]
    Certificate(#[from] PkiError),
    #[error("serialising the talosconfig: {0}")]
    Serialise(String),
}

/// A talosconfig for the admin. Each call issues a new client certificate (valid one year), so
/// callers write it once rather than on every run.
pub fn talosconfig(lab: &Lab, secrets: &Secrets) -> Result<String, TalosconfigError> {
    let ca = secrets.os_ca().map_err(TalosconfigError::Secrets)?;
    let admin = pki::new_client(&ca, KeyType::Ed25519, ADMIN_ROLE)?;
    let endpoints = lab
        .machines
        .iter()
        .filter(|m| m.role == Role::ControlPlane)
        .filter_map(|m| m.address_on(NetworkId::Net1))
        .map(|a| a.to_string())
        .collect();
    let name = lab.cluster.name.to_string();
    let config = TalosConfig {
        context: name.clone(),
        contexts: BTreeMap::from([(
            name,
            Context {
                endpoints,
                ca: secrets.certs.os.crt.clone(),
                crt: STANDARD.encode(admin.crt),
                key: STANDARD.encode(admin.key),
            },
        )]),
    };
    serde_norway::to_string(&config).map_err(|e| TalosconfigError::Serialise(e.to_string()))
}
