//! What render and apply write that depends on state kept between runs: the Talos machine
//! configs as cloud-init snippets, the admin's talosconfig, the vpn gateway's key and the peers'
//! client configs. The state directory (0700, files 0600) holds the Talos secrets bundle and
//! the gateway key; both are made once and never again, since a new bundle locks users out of
//! their cluster and a new key out of the VPN.

use super::containers::{staged_in, VPN_PRIVATE_KEY};
use super::files::{write_atomic, Outcome, WriteError};
use super::manager::{self, ManagerError, ManagerInputs};
use super::observability;
use super::{RenderError, RenderedFile};
use crate::model::{Lab, Role};
use crate::state_dir::StateDir;
use crate::talos::{self, AdminCredentials, MachineConfigError, Secrets, SecretsError};
use ipnet::{IpNet, Ipv4Net};
use lab_schema::vpn::client_config::{ClientConfig, ClientPeer};
use lab_schema::vpn::key::PrivateKey;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Why a file that depends on the state directory could not be previewed, made or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A rendered file or config these build on could not be made from lab.toml.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The Talos secrets bundle or the admin credentials could not be loaded or made.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// A Talos node's machine config could not be made.
    #[error(transparent)]
    MachineConfig(#[from] MachineConfigError),
    /// The admin's talosconfig could not be made; holds why.
    #[error("the talosconfig: {0}")]
    Talosconfig(String),
    /// Creating the state directory or one under it, or reading the gateway key, failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The gateway key in the state directory is not a WireGuard private key.
    #[error("{}: {reason}; move it away to make a new key (every peer then needs the new gateway key)", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with its content.
        reason: String,
    },
    /// Writing a file failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The manager VM's cloud-init cannot be made.
    #[error(transparent)]
    Manager(#[from] ManagerError),
    /// `proxmox.file_storage` has no known directory for the snippets; holds the storage's name.
    #[error("[proxmox] file_storage `{0}` has no known path; set proxmox.file_storage_path")]
    NoStoragePath(String),
}

/// The cloud-init user-data snippet of VM `name` (a Talos node or the manager), where `cicustom` points
/// (`<file_storage>:snippets/lab-<name>.yaml`).
pub fn snippet_path(lab: &Lab, name: &str) -> Result<PathBuf, StateError> {
    let dir = lab
        .proxmox
        .file_storage_dir()
        .ok_or_else(|| StateError::NoStoragePath(lab.proxmox.file_storage.clone()))?;
    Ok(dir.join("snippets").join(format!("lab-{name}.yaml")))
}

/// The manager VM's snippet (user-data), 0600: it carries the admin talosconfig and the Git
/// token of `[gitops]`.
fn manager_snippets(
    lab: &Lab,
    secrets: &Secrets,
    admin: &AdminCredentials,
) -> Result<Vec<RenderedFile>, StateError> {
    let talosconfig = talos::talosconfig(lab, secrets, admin)
        .map_err(|e| StateError::Talosconfig(e.to_string()))?;
    let unreadable = |path: &Path| {
        let path = path.to_owned();
        move |source| StateError::Io { path, source }
    };
    let ssh_keys = match &lab.manager.ssh_keys_file {
        Some(file) => Some(lab.manager.ssh_keys().map_err(unreadable(file))?),
        None => None,
    }
    .flatten();
    let git_token = match &lab.gitops {
        Some(gitops) => Some(gitops.token().map_err(unreadable(&gitops.token_file))?),
        None => None,
    };
    let mut out = Vec::new();
    for machine in lab.machines.iter().filter(|m| m.role == Role::Manager) {
        let name = machine.name.to_string();
        let inputs = ManagerInputs {
            talosconfig: &talosconfig,
            ssh_keys: ssh_keys.as_deref(),
            git_token: git_token.as_deref(),
        };
        out.push(RenderedFile {
            path: snippet_path(lab, &name)?,
            contents: manager::user_data(lab, &name, inputs, observability::manager_part(lab)?)?,
            mode: 0o600,
        });
    }
    Ok(out)
}

/// The state directory, made and marked before anything is kept there.
pub fn create(state: &StateDir) -> Result<(), StateError> {
    state.create().map_err(|source| StateError::Io {
        path: state.path().to_owned(),
        source,
    })
}

fn private_dir(dir: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StateError::Io {
            path: dir.to_owned(),
            source,
        })
}

/// The gateway's key from the state directory, made on first use.
fn gateway_key(state: &StateDir) -> Result<PrivateKey, StateError> {
    let path = state.vpn_gateway_key();
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .parse()
            .map_err(|e: lab_schema::vpn::key::KeyError| StateError::BadKey {
                path: path.clone(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = PrivateKey::generate();
            write_atomic(
                &path,
                format!("{}\n", key.expose_base64()).as_bytes(),
                0o600,
            )?;
            Ok(key)
        }
        Err(source) => Err(StateError::Io { path, source }),
    }
}

/// The gateway's key as it is, for a read that must not make one (`None`: not made yet).
fn existing_gateway_key(state: &StateDir) -> Result<Option<PrivateKey>, StateError> {
    if state.vpn_gateway_key().symlink_metadata().is_err() {
        return Ok(None);
    }
    gateway_key(state).map(Some)
}

/// The Talos secrets and admin credentials as they are, for a read that must not make them
/// (`None`: not made yet).
fn existing_talos(state: &StateDir) -> Result<Option<(Secrets, AdminCredentials)>, StateError> {
    let secrets = state.talos_secrets();
    let admin = state.talos_admin();
    if secrets.symlink_metadata().is_err() || admin.symlink_metadata().is_err() {
        return Ok(None);
    }
    let secrets = Secrets::load(&secrets)?;
    let admin = AdminCredentials::load(&admin)?;
    Ok(Some((secrets, admin)))
}

/// A state-dependent file as a read-only look sees it: its contents when the state it comes
/// from exists, only its path when that state would first have to be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    /// Made from the existing state: the file as it would be written.
    File(RenderedFile),
    /// Needs secrets or keys that do not exist yet: it will be created with them.
    Unmade {
        /// Where it will be written.
        path: PathBuf,
        /// The permission bits it will have.
        mode: u32,
    },
}

impl Preview {
    /// Where the file goes.
    pub fn path(&self) -> &Path {
        match self {
            Preview::File(file) => &file.path,
            Preview::Unmade { path, .. } => path,
        }
    }
}

/// [`host_files`] without writing or generating anything (for `plan`).
pub fn preview_host_files(lab: &Lab, state: &StateDir) -> Result<Vec<Preview>, StateError> {
    let mut out = Vec::new();
    match existing_talos(state)? {
        Some((secrets, admin)) => {
            for (name, config) in talos::machine_configs(lab, &secrets)? {
                out.push(Preview::File(RenderedFile {
                    path: snippet_path(lab, &name)?,
                    contents: config,
                    mode: 0o600,
                }));
            }
            out.extend(
                manager_snippets(lab, &secrets, &admin)?
                    .into_iter()
                    .map(Preview::File),
            );
        }
        None => {
            for machine in lab
                .machines
                .iter()
                .filter(|m| matches!(m.role, Role::ControlPlane | Role::Worker | Role::Manager))
            {
                out.push(Preview::Unmade {
                    path: snippet_path(lab, &machine.name.to_string())?,
                    mode: 0o600,
                });
            }
        }
    }
    let key = existing_gateway_key(state)?;
    for vpn in lab.instances(Role::Vpn) {
        let key_path = staged_in(vpn.name.as_str(), VPN_PRIVATE_KEY);
        out.push(match &key {
            Some(key) => Preview::File(RenderedFile {
                path: key_path,
                contents: format!("{}\n", key.expose_base64()),
                mode: 0o600,
            }),
            None => Preview::Unmade {
                path: key_path,
                mode: 0o600,
            },
        });
    }
    Ok(out)
}

/// [`state_files`] without writing or generating anything (for `plan`).
pub fn preview_state_files(lab: &Lab, state: &StateDir) -> Result<Vec<Preview>, StateError> {
    let talos = existing_talos(state)?;
    let key = existing_gateway_key(state)?;
    let (Some((secrets, admin)), Some(key)) = (talos, key) else {
        let mut out = vec![Preview::Unmade {
            path: state.talosconfig(),
            mode: 0o600,
        }];
        for peer in &lab.vpn.peers {
            out.push(Preview::Unmade {
                path: state.vpn_client(&peer.name.to_string()),
                mode: 0o600,
            });
        }
        return Ok(out);
    };
    Ok(state_files_from(lab, state, &secrets, &admin, &key)?
        .into_iter()
        .map(|(path, contents)| {
            Preview::File(RenderedFile {
                path,
                contents,
                mode: 0o600,
            })
        })
        .collect())
}

/// Files that go on the host (under `--root`): the snippets, and the gateway key staged for
/// the vpn container. All 0600: machine configs of control planes carry the cluster's CA keys,
/// the manager's the admin talosconfig.
pub fn host_files(lab: &Lab, state: &StateDir) -> Result<Vec<RenderedFile>, StateError> {
    create(state)?;
    let secrets = Secrets::load_or_generate(state)?;
    let admin = AdminCredentials::load_or_generate(state, &secrets)?;
    let mut out = Vec::new();
    for (name, config) in talos::machine_configs(lab, &secrets)? {
        out.push(RenderedFile {
            path: snippet_path(lab, &name)?,
            contents: config,
            mode: 0o600,
        });
    }
    out.extend(manager_snippets(lab, &secrets, &admin)?);
    // Both containers of a vpn pair are the one gateway: the same key.
    let key = gateway_key(state)?;
    for vpn in lab.instances(Role::Vpn) {
        out.push(RenderedFile {
            path: staged_in(vpn.name.as_str(), VPN_PRIVATE_KEY),
            contents: format!("{}\n", key.expose_base64()),
            mode: 0o600,
        });
    }
    Ok(out)
}

/// Files of the state directory itself: the talosconfig and one wg-quick config per peer
/// (without its private key, which only the peer has).
pub fn state_files(lab: &Lab, state: &StateDir) -> Result<Vec<(PathBuf, String)>, StateError> {
    create(state)?;
    let secrets = Secrets::load_or_generate(state)?;
    let admin = AdminCredentials::load_or_generate(state, &secrets)?;
    let key = gateway_key(state)?;
    state_files_from(lab, state, &secrets, &admin, &key)
}

fn state_files_from(
    lab: &Lab,
    state: &StateDir,
    secrets: &Secrets,
    admin: &AdminCredentials,
    key: &PrivateKey,
) -> Result<Vec<(PathBuf, String)>, StateError> {
    let talosconfig = talos::talosconfig(lab, secrets, admin)
        .map_err(|e| StateError::Talosconfig(e.to_string()))?;
    let mut out = vec![(state.talosconfig(), talosconfig)];
    let gateway = super::containers::vpn_config(lab)?;
    for peer in &lab.vpn.peers {
        let config = client_config(state, &gateway, key, &peer.name.to_string(), peer.address)?;
        out.push((state.vpn_client(&peer.name.to_string()), config));
    }
    Ok(out)
}

/// Peer `name`'s wg-quick config for `gateway`, with the private key `lab-bootstrap peer add`
/// made for it when the state directory keeps one.
fn client_config(
    state: &StateDir,
    gateway: &lab_schema::vpn::VpnConfig,
    key: &PrivateKey,
    name: &str,
    address: std::net::Ipv4Addr,
) -> Result<String, StateError> {
    let key_path = state.vpn_client_key(name);
    let private_key =
        match std::fs::read_to_string(&key_path) {
            Ok(text) => Some(text.parse().map_err(|e: lab_schema::vpn::key::KeyError| {
                StateError::BadKey {
                    path: key_path.clone(),
                    reason: e.to_string(),
                }
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(StateError::Io {
                    path: key_path,
                    source,
                })
            }
        };
    let client = ClientPeer {
        name: name.to_owned(),
        address: IpNet::V4(Ipv4Net::from(address)),
        private_key,
        preshared_key: None,
    };
    let config = ClientConfig::for_peer(
        gateway,
        key.public_key(),
        client,
        None,
        Some(ClientConfig::DEFAULT_KEEPALIVE),
    )
    .map_err(RenderError::ClientConfig)?;
    Ok(config.to_string())
}

/// Writes peer `name`'s client config (at `address`, of `lab`) in the state directory, and
/// first `private_key`, when one was made for it, 0600 beside it; the gateway's key is made if
/// it is not yet. Returns the config's path.
pub fn write_peer_client(
    lab: &Lab,
    state: &StateDir,
    name: &str,
    address: std::net::Ipv4Addr,
    private_key: Option<&PrivateKey>,
) -> Result<PathBuf, StateError> {
    create(state)?;
    private_dir(&state.vpn_clients())?;
    if let Some(private_key) = private_key {
        write_atomic(
            &state.vpn_client_key(name),
            format!("{}\n", private_key.expose_base64()).as_bytes(),
            0o600,
        )?;
    }
    let gateway = super::containers::vpn_config(lab)?;
    let config = client_config(state, &gateway, &gateway_key(state)?, name, address)?;
    let path = state.vpn_client(name);
    write_state_file(state, &path, &config)?;
    Ok(path)
}

/// Writes [`state_files`] 0600 in 0700 directories; unchanged files are left alone.
pub fn write_state_files(
    lab: &Lab,
    state: &StateDir,
) -> Result<Vec<(PathBuf, Outcome)>, StateError> {
    let mut out = Vec::new();
    for (path, contents) in state_files(lab, state)? {
        let outcome = write_state_file(state, &path, &contents)?;
        out.push((path, outcome));
    }
    Ok(out)
}

/// Writes one of [`state_files`] 0600, its directory 0700.
pub fn write_state_file(
    state: &StateDir,
    path: &Path,
    contents: &str,
) -> Result<Outcome, StateError> {
    if path.starts_with(state.vpn_clients()) {
        private_dir(&state.vpn_clients())?;
    }
    Ok(write_atomic(path, contents.as_bytes(), 0o600)?)
}

/// Everything `render --root` writes: the host files and the snippets under `root`, the state
/// files in `state`.
pub fn render_all(
    lab: &Lab,
    root: &Path,
    state: &StateDir,
) -> Result<Vec<(PathBuf, Outcome)>, StateError> {
    let mut files = super::host_files(lab)?;
    files.extend(host_files(lab, state)?);
    let mut written = super::files::write_tree(root, &files)?;
    written.extend(write_state_files(lab, state)?);
    Ok(written)
}

impl StateError {
    /// Whether lab.toml is at fault (rather than the system).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            StateError::Render(_)
                | StateError::NoStoragePath(_)
                | StateError::MachineConfig(_)
                | StateError::Manager(ManagerError::Tools(_))
        )
    }
}
