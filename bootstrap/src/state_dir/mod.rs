//! lab-bootstrap's state directory: the Talos secrets and admin credentials, the vpn gateway's
//! key, the talosconfig and peers' client configs made from them, and apply's own records
//! (files it wrote, actions still due, etcd bootstrapped). The file names are known here and
//! nowhere else.

pub(crate) mod private;

use private::{private_dir, write_new_private};
use std::io;
use std::path::{Path, PathBuf};

/// Where the state directory is on the host unless `--state` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lab-bootstrap";

/// The file in a state directory that says lab-bootstrap made it. `destroy --purge-state`
/// deletes a directory with everything in it, so it must be sure the directory is its own and
/// not, through a mistyped `--state`, somebody's home or `/etc`.
pub const STATE_MARKER: &str = ".lab-bootstrap-state";

const STATE_MARKER_TEXT: &[u8] =
    b"lab-bootstrap's state directory (Talos secrets, WireGuard keys); `lab-bootstrap destroy --purge-state` deletes it\n";

/// Where lab-bootstrap keeps its state, and where in it each thing is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// The state directory at `path`; nothing is made until [`Self::create`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// [`DEFAULT_STATE_DIR`] of the host whose `/` is `root`.
    pub fn default_under(root: &Path) -> Self {
        Self::new(root.join(DEFAULT_STATE_DIR.trim_start_matches('/')))
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory (0700) and marks it as lab-bootstrap's, but only when it is made
    /// here or is still empty: a directory that already holds anything else is never claimed,
    /// so `--purge-state` will refuse it.
    pub fn create(&self) -> io::Result<()> {
        let empty = match std::fs::read_dir(&self.path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(e),
        };
        private_dir(&self.path)?;
        if !empty {
            return Ok(());
        }
        match write_new_private(&self.marker(), STATE_MARKER_TEXT) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether the directory carries the marker [`Self::create`] writes.
    pub fn is_marked(&self) -> bool {
        self.marker().symlink_metadata().is_ok_and(|m| m.is_file())
    }

    /// The [`STATE_MARKER`] file in it.
    pub fn marker(&self) -> PathBuf {
        self.path.join(STATE_MARKER)
    }

    /// The Talos secrets bundle (`talosctl gen secrets` format).
    pub fn talos_secrets(&self) -> PathBuf {
        self.path.join("talos-secrets.yaml")
    }

    /// The admin's client certificate, issued once from the bundle's OS CA.
    pub fn talos_admin(&self) -> PathBuf {
        self.path.join("talos-admin.yaml")
    }

    /// talosctl's client config for the cluster, made from the secrets and the admin's
    /// certificate.
    pub fn talosconfig(&self) -> PathBuf {
        self.path.join("talosconfig")
    }

    /// The admin kubeconfig, fetched from the cluster once it is healthy.
    pub fn kubeconfig(&self) -> PathBuf {
        self.path.join("kubeconfig")
    }

    /// The vpn gateway's WireGuard private key, made on first apply (or `peer add`).
    pub fn vpn_gateway_key(&self) -> PathBuf {
        self.path.join("vpn-gateway.key")
    }

    /// The directory of the peers' wg-quick configs.
    pub fn vpn_clients(&self) -> PathBuf {
        self.path.join("vpn-clients")
    }

    /// Peer `peer`'s wg-quick config.
    pub fn vpn_client(&self, peer: &str) -> PathBuf {
        self.vpn_clients().join(format!("{peer}.conf"))
    }

    /// The private key `lab-bootstrap peer add` made for peer `peer`, kept for its config.
    pub fn vpn_client_key(&self, peer: &str) -> PathBuf {
        self.vpn_clients().join(format!("{peer}.key"))
    }

    /// The host files apply wrote, with what it wrote (destroy removes only those).
    pub fn written_files(&self) -> PathBuf {
        self.path.join("written-files")
    }

    /// Reloads and restarts an interrupted apply left to do.
    pub fn pending_actions(&self) -> PathBuf {
        self.path.join("pending-actions")
    }

    /// The directory of the machine configs last delivered to each Talos node.
    pub fn talos_applied(&self) -> PathBuf {
        self.path.join("talos-applied")
    }

    /// The machine config last delivered to Talos node `node` (its first-boot snippet, or
    /// what `ApplyConfiguration` gave it since): what a changed lab.toml is compared with.
    pub fn talos_applied_config(&self, node: &str) -> PathBuf {
        self.talos_applied().join(format!("{node}.yaml"))
    }

    /// The Proxmox CSI plugin's API token secret (`[storage]`), as the API gave it once.
    pub fn proxmox_csi_token(&self) -> PathBuf {
        self.path.join("proxmox-csi-token")
    }

    /// The Proxmox CSI plugin's manifests (`[storage]`): its namespace, config Secret and the
    /// StorageClass, and their GitOps layout under `gitops/`.
    pub fn storage_manifests(&self) -> PathBuf {
        self.path.join("storage")
    }

    /// There once etcd answered, so later applies do not ask again.
    pub fn etcd_bootstrapped(&self) -> PathBuf {
        self.path.join("etcd-bootstrapped")
    }
}
