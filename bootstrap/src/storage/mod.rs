//! Storage for the cluster's workloads: what the Proxmox CSI plugin needs from the lab, as its
//! documentation for v0.19.1 says (sergelogvinov/proxmox-csi-plugin, docs/install.md,
//! docs/config.md, docs/options.md): a Proxmox role with its privileges, a user and an API
//! token with them, the nodes' topology labels, its config Secret and a StorageClass.
//! `proxmox/csi.rs` makes the Proxmox side; [`manifests`] the Kubernetes side.

pub mod manifests;

use crate::model::Lab;

/// The plugin version whose documentation this module follows.
pub const PLUGIN_VERSION: &str = "v0.19.1";

/// The privileges of the plugin's `CSI` role (docs/install.md: `pveum role add CSI -privs
/// "VM.Audit VM.Config.Disk Datastore.Allocate Datastore.AllocateSpace Datastore.Audit"`; the
/// longer list there is only for ZFS replication, which one node has no use for).
pub const PRIVILEGES: [&str; 5] = [
    "VM.Audit",
    "VM.Config.Disk",
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.Audit",
];

/// The plugin's token name (docs/install.md: `pveum user token add kubernetes-csi@pve csi`).
pub const TOKEN_NAME: &str = "csi";

/// The node label the plugin reads the region from: the `region` of its config's cluster.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// The node label the plugin reads the zone from: the Proxmox node the VM runs on.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The plugin's CSI driver name, a StorageClass's `provisioner`.
pub const PROVISIONER: &str = "csi.proxmox.sinextra.dev";
/// Where the plugin runs and reads its config Secret from.
pub const NAMESPACE: &str = "csi-proxmox";
/// The config Secret's name (docs/install.md: `kubectl -n csi-proxmox create secret generic
/// proxmox-csi-plugin --from-file=config.yaml`).
pub const SECRET_NAME: &str = "proxmox-csi-plugin";

/// The role, user and token of one lab: named after the lab, so two labs on one node keep
/// their own and `destroy` removes only its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsiIdentity {
    /// The role id (`lab-csi-<cluster>`).
    pub role: String,
    /// The user id (`lab-csi-<cluster>@pve`), in Proxmox's own `pve` realm: no password, only
    /// the token logs in.
    pub user: String,
    /// The token's name under the user ([`TOKEN_NAME`]).
    pub token: String,
}

impl CsiIdentity {
    /// The names for `lab`.
    pub fn of(lab: &Lab) -> Self {
        let cluster = lab.cluster.name.as_str();
        Self {
            role: format!("lab-csi-{cluster}"),
            user: format!("lab-csi-{cluster}@pve"),
            token: TOKEN_NAME.to_owned(),
        }
    }

    /// `user!token`, as the plugin's config and the API's token header name it.
    pub fn token_id(&self) -> String {
        format!("{}!{}", self.user, self.token)
    }
}

/// A token secret as the API gave it once: never printed (its `Debug` says only that it is
/// one), kept in the state directory 0600.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// Wraps the API's `value`.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself, for the file and the config Secret only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(..)")
    }
}
