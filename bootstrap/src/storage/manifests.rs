//! The plugin's Kubernetes objects as manifests: its namespace (privileged, as docs/install.md
//! has it), its config Secret (docs/config.md: `clusters` with `url`, `insecure`, `token_id`,
//! `token_secret`, `region`) and the lab's StorageClass (docs/options.md). Written 0600 into the
//! state directory's `storage/`, since the Secret carries the token; with `[gitops]`, the
//! namespace and StorageClass also under `storage/gitops/<gitops path>/proxmox-csi/`, ready to
//! commit. The Secret never goes there: a token in plain text does not belong in a repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{CsiIdentity, TokenSecret, NAMESPACE, PROVISIONER, SECRET_NAME};
use crate::model::{Lab, Storage};
use crate::state_dir::StateDir;

/// One manifest: its file name under the state directory's `storage/`, and its YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The file name (`storageclass.yaml`).
    pub file: &'static str,
    /// The object as YAML.
    pub yaml: String,
    /// Whether it may go into the GitOps repository (everything but the Secret).
    pub for_git: bool,
}

impl Manifest {
    /// Where it is written: the state directory's `dir`, and the GitOps layout `git` too when
    /// it may go there.
    fn paths(&self, dir: &Path, git: Option<&Path>) -> Vec<PathBuf> {
        let mut paths = vec![dir.join(self.file)];
        if let Some(git) = git.filter(|_| self.for_git) {
            paths.push(git.join(self.file));
        }
        paths
    }
}

/// Why the manifests could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Serialising an object failed; holds the object and why.
    #[error("the {0} manifest: {1}")]
    Serialise(&'static str, String),
    /// Writing a manifest or the token failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The Proxmox API as the nodes reach it: the host's net1 address (the host takes anything from
/// net1).
pub fn api_url(lab: &Lab) -> String {
    format!("https://{}:8006/api2/json", lab.networks.net1.host)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Object<'a, T: Serialize> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata<'a>,
    #[serde(flatten)]
    body: T,
}

#[derive(Serialize)]
struct Metadata<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'static str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'static str, &'static str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
struct Nothing {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretBody {
    r#type: &'static str,
    string_data: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct PluginConfig<'a> {
    clusters: Vec<PluginCluster<'a>>,
}

#[derive(Serialize)]
struct PluginCluster<'a> {
    url: String,
    insecure: bool,
    token_id: String,
    token_secret: &'a str,
    region: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StorageClassBody<'a> {
    provisioner: &'static str,
    parameters: BTreeMap<&'static str, &'a str>,
    reclaim_policy: &'static str,
    // The disk is made on the node of the first pod that uses it.
    volume_binding_mode: &'static str,
    allow_volume_expansion: bool,
}

fn yaml<T: Serialize>(what: &'static str, object: &T) -> Result<String, ManifestError> {
    serde_norway::to_string(object).map_err(|e| ManifestError::Serialise(what, e.to_string()))
}

/// The three manifests for `lab` with `storage`, the Secret carrying `secret`.
pub fn render(
    lab: &Lab,
    storage: &Storage,
    secret: &TokenSecret,
) -> Result<Vec<Manifest>, ManifestError> {
    let namespace = Object {
        api_version: "v1",
        kind: "Namespace",
        metadata: Metadata {
            name: NAMESPACE,
            namespace: None,
            // The node plugin mounts volumes on the host: only a privileged namespace lets it.
            labels: BTreeMap::from([("pod-security.kubernetes.io/enforce", "privileged")]),
            annotations: BTreeMap::new(),
        },
        body: Nothing {},
    };
    let config = PluginConfig {
        clusters: vec![PluginCluster {
            url: api_url(lab),
            insecure: !storage.verify_tls,
            token_id: CsiIdentity::of(lab).token_id(),
            token_secret: secret.expose(),
            region: lab.cluster.name.as_str(),
        }],
    };
    let config_yaml = yaml("plugin config", &config)?;
    let secret_object = Object {
        api_version: "v1",
        kind: "Secret",
        metadata: Metadata {
            name: SECRET_NAME,
            namespace: Some(NAMESPACE),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        },
        body: SecretBody {
            r#type: "Opaque",
            string_data: BTreeMap::from([("config.yaml", config_yaml)]),
        },
    };
    let mut annotations = BTreeMap::new();
    if storage.default_class {
        annotations.insert("storageclass.kubernetes.io/is-default-class", "true");
    }
    let class = Object {
        api_version: "storage.k8s.io/v1",
        kind: "StorageClass",
        metadata: Metadata {
            name: &storage.storage_class,
            namespace: None,
            labels: BTreeMap::new(),
            annotations,
        },
        body: StorageClassBody {
            provisioner: PROVISIONER,
            parameters: BTreeMap::from([
                ("csi.storage.k8s.io/fstype", "ext4"),
                ("storage", storage.proxmox_storage.as_str()),
            ]),
            reclaim_policy: "Delete",
            volume_binding_mode: "WaitForFirstConsumer",
            allow_volume_expansion: true,
        },
    };
    Ok(vec![
        Manifest {
            file: "namespace.yaml",
            yaml: yaml("Namespace", &namespace)?,
            for_git: true,
        },
        Manifest {
            file: "proxmox-csi-plugin-secret.yaml",
            yaml: yaml("Secret", &secret_object)?,
            for_git: false,
        },
        Manifest {
            file: "storageclass.yaml",
            yaml: yaml("StorageClass", &class)?,
            for_git: true,
        },
    ])
}

/// Where the GitOps copies go in the state directory: the repository's layout, from its root.
pub fn gitops_dir(lab: &Lab, state: &StateDir) -> Option<PathBuf> {
    let path = lab.gitops_path()?;
    Some(
        state
            .storage_manifests()
            .join("gitops")
            .join(path)
            .join("proxmox-csi"),
    )
}

/// Keeps `secret` in the state directory and writes the manifests made with it, every file
/// 0600 and replaced atomically. Returns the files written.
pub fn write(
    lab: &Lab,
    storage: &Storage,
    state: &StateDir,
    secret: &TokenSecret,
) -> Result<Vec<PathBuf>, ManifestError> {
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| ManifestError::Io { path, source }
    };
    state.create().map_err(io(state.path()))?;
    let token = state.proxmox_csi_token();
    lab_daemon::files::write_atomic(&token, secret.expose().as_bytes(), 0o600)
        .map_err(io(&token))?;
    let mut written = vec![token];
    let dir = state.storage_manifests();
    let git = gitops_dir(lab, state);
    for manifest in render(lab, storage, secret)? {
        for path in manifest.paths(&dir, git.as_deref()) {
            if let Some(parent) = path.parent() {
                crate::state_dir::private::private_dir(parent).map_err(io(parent))?;
            }
            lab_daemon::files::write_atomic(&path, manifest.yaml.as_bytes(), 0o600)
                .map_err(io(&path))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Whether the manifests on disk differ from those `lab` and `secret` make (or are missing).
pub fn stale(
    lab: &Lab,
    storage: &Storage,
    state: &StateDir,
    secret: &TokenSecret,
) -> Result<bool, ManifestError> {
    let dir = state.storage_manifests();
    let git = gitops_dir(lab, state);
    for manifest in render(lab, storage, secret)? {
        for path in manifest.paths(&dir, git.as_deref()) {
            match std::fs::read_to_string(&path) {
                Ok(text) if text == manifest.yaml => {}
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
                Err(source) => return Err(ManifestError::Io { path, source }),
            }
        }
    }
    Ok(false)
}

/// The token secret kept by an earlier apply, if there is one.
pub fn kept_secret(state: &StateDir) -> Result<Option<TokenSecret>, ManifestError> {
    let path = state.proxmox_csi_token();
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(TokenSecret::new(text.trim().to_owned()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ManifestError::Io { path, source }),
    }
}

/// Removes the token and the manifests (destroy, or `[storage]` gone from lab.toml).
pub fn remove(state: &StateDir) -> Result<(), ManifestError> {
    let io = |path: PathBuf| move |source| ManifestError::Io { path, source };
    let token = state.proxmox_csi_token();
    match std::fs::remove_file(&token) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(token)(e)),
        _ => {}
    }
    let dir = state.storage_manifests();
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(dir)(e)),
        _ => Ok(()),
    }
}
