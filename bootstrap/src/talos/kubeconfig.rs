//! The admin kubeconfig Talos hands out (`talosctl kubeconfig`): the cluster endpoint, the
//! Kubernetes CA, and a client certificate in `system:masters` signed by that CA. Made here
//! for the local lab's stand-ins, which serve it the way a control plane does.

use super::pki::{self, PkiError};
use super::secrets::Secrets;
use crate::model::Lab;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;

/// The group Kubernetes grants everything to.
const ADMIN_GROUP: &str = "system:masters";

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<Named<Cluster>>,
    users: Vec<Named<User>>,
    contexts: Vec<Named<Context>>,
    current_context: String,
}

#[derive(Serialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize)]
struct Cluster {
    cluster: ClusterEntry,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterEntry {
    server: String,
    certificate_authority_data: String,
}

#[derive(Serialize)]
struct User {
    user: UserEntry,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct UserEntry {
    client_certificate_data: String,
    client_key_data: String,
}

#[derive(Serialize)]
struct Context {
    context: ContextEntry,
}

#[derive(Serialize)]
struct ContextEntry {
    cluster: String,
    user: String,
}

/// A new admin kubeconfig for the lab's cluster (a fresh client certificate each time, as
/// Talos issues one per request).
pub fn admin_kubeconfig(lab: &Lab, secrets: &Secrets) -> Result<String, PkiError> {
    let ca = secrets.kubernetes_ca().map_err(PkiError::Bundle)?;
    let admin = pki::new_kubernetes_client(&ca, "admin", ADMIN_GROUP)?;
    let cluster = lab.cluster.name.to_string();
    let user = format!("admin@{cluster}");
    let config = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: vec![Named {
            name: cluster.clone(),
            value: Cluster {
                cluster: ClusterEntry {
                    server: lab.cluster.endpoint.to_string(),
                    certificate_authority_data: STANDARD.encode(&ca.crt),
                },
            },
        }],
        users: vec![Named {
            name: user.clone(),
            value: User {
                user: UserEntry {
                    client_certificate_data: STANDARD.encode(&admin.crt),
                    client_key_data: STANDARD.encode(&admin.key),
                },
            },
        }],
        contexts: vec![Named {
            name: user.clone(),
            value: Context {
                context: ContextEntry {
                    cluster,
                    user: user.clone(),
                },
            },
        }],
        current_context: user,
    };
    serde_norway::to_string(&config).map_err(|e| PkiError::Bundle(e.to_string()))
}
