//! What each Talos node was last given, and what lab.toml renders for it now.
//!
//! The state directory keeps the config last delivered to each node (0600, written
//! atomically): the first-boot snippet once apply has written it, then whatever
//! `ApplyConfiguration` gave the node. A node with no record yet (a lab made before these
//! records) is taken to run the snippet on the host, which is what it booted with.

use crate::model::{Lab, Machine, NetworkId, Role};
use crate::render::files::under_root;
use crate::render::state::snippet_path;
use crate::state_dir::StateDir;
use crate::talos::{machine_configs, Secrets};
use std::path::{Path, PathBuf};

/// Why the configs could not be read, rendered or recorded.
#[derive(Debug, thiserror::Error)]
pub enum AppliedError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The configs could not be rendered (secrets, lab.toml).
    #[error(transparent)]
    Render(#[from] crate::render::state::StateError),
    /// The Talos secrets could not be loaded.
    #[error(transparent)]
    Secrets(#[from] crate::talos::SecretsError),
    /// A machine config could not be rendered.
    #[error(transparent)]
    MachineConfig(#[from] crate::talos::MachineConfigError),
    /// A snippet's path does not fit under `--root`.
    #[error(transparent)]
    Write(#[from] crate::render::files::WriteError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AppliedError + '_ {
    move |source| AppliedError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One Talos node's config: what lab.toml renders, and what the node was last given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The machine's name in lab.toml.
    pub name: String,
    /// Control plane or worker.
    pub role: Role,
    /// Where its Talos API answers: its net1 address (net2 when it has none).
    pub address: String,
    /// Its cloud-init snippet, as a host path.
    pub snippet: PathBuf,
    /// What lab.toml renders for it.
    pub rendered: String,
    /// What it was last given: the record, else the snippet on the host; `None` when it was
    /// never given one (its VM is still to be made).
    pub last: Option<String>,
}

impl NodeConfig {
    /// Whether the node runs something other than what lab.toml renders.
    pub fn is_pending(&self) -> bool {
        self.last
            .as_ref()
            .is_some_and(|last| *last != self.rendered)
    }

    /// `cp1 (10.10.1.11)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, self.address)
    }
}

/// The Talos nodes of `lab`, in lab.toml order, with their configs; empty when the secrets
/// are not made yet (no node can have been given a config).
pub fn node_configs(
    lab: &Lab,
    root: &Path,
    state: &StateDir,
) -> Result<Vec<NodeConfig>, AppliedError> {
    if state.talos_secrets().symlink_metadata().is_err() {
        return Ok(Vec::new());
    }
    let secrets = Secrets::load(&state.talos_secrets())?;
    let mut out = Vec::new();
    for (name, rendered) in machine_configs(lab, &secrets)? {
        let Some(machine) = lab.machines.iter().find(|m| m.name.to_string() == name) else {
            continue;
        };
        let snippet = snippet_path(lab, &name)?;
        let last = match read(&state.talos_applied_config(&name))? {
            Some(recorded) => Some(recorded),
            None => read(&under_root(root, &snippet)?)?,
        };
        out.push(NodeConfig {
            name,
            role: machine.role,
            address: api_address(machine),
            snippet,
            rendered,
            last,
        });
    }
    Ok(out)
}

/// Where a machine's Talos API answers: net1, where the admins and the host reach it.
fn api_address(machine: &Machine) -> String {
    machine
        .address_on(NetworkId::Net1)
        .or_else(|| machine.address_on(NetworkId::Net2))
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// For each node without a record, records its snippet as it is on the host: before apply
/// rewrites the snippets, what the running nodes booted with; after, what new nodes boot with.
pub fn adopt_snippets(lab: &Lab, root: &Path, state: &StateDir) -> Result<(), AppliedError> {
    for machine in lab
        .machines
        .iter()
        .filter(|m| matches!(m.role, Role::ControlPlane | Role::Worker))
    {
        let name = machine.name.to_string();
        let record = state.talos_applied_config(&name);
        if record.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(snippet) = read(&under_root(root, &snippet_path(lab, &name)?)?)? {
            record_applied(state, &name, &snippet)?;
        }
    }
    Ok(())
}

/// Records `config` as what node `name` was last given (0600, atomically).
pub fn record_applied(state: &StateDir, name: &str, config: &str) -> Result<(), AppliedError> {
    let dir = state.talos_applied();
    crate::state_dir::private::private_dir(&dir).map_err(io(&dir))?;
    let path = state.talos_applied_config(name);
    lab_daemon::files::write_atomic(&path, config.as_bytes(), 0o600).map_err(io(&path))
}

fn read(path: &Path) -> Result<Option<String>, AppliedError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}
