//! plan's host side: what apply would write, push, restart and start on the host, found by
//! reading only. Nothing is written and no secret is made: files that need a secret not made
//! yet are shown as to be created with it.

use super::actions::{self, PendingError, ServiceAction};
use super::containers::{self, parse_sums, ContainerError};
use super::manifest::sha256_hex;
use super::{services, HostError, Runner};
use crate::model::{Lab, Role};
use crate::render::files::{under_root, WriteError};
use crate::render::state::{self, Preview, StateError};
use crate::render::RenderedFile;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum HostPlanError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Pending(#[from] PendingError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Container(#[from] ContainerError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A host file (path as on the host, or in the state directory); `secret` when it comes
    /// from secrets or keys that will be made first.
    CreateFile {
        path: PathBuf,
        secret: bool,
    },
    UpdateFile {
        path: PathBuf,
    },
    StartContainer {
        name: String,
        vmid: u32,
    },
    Install {
        container: String,
        package: String,
    },
    Push {
        container: String,
        target: String,
    },
    Service(ServiceAction),
    StartVm {
        name: String,
        vmid: u32,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPlan {
    pub changes: Vec<Change>,
}

impl HostPlan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// terraform-like lines, after the Proxmox changes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.is_empty() {
            let _ = writeln!(
                out,
                "No changes. The host's files and services match lab.toml."
            );
            return out;
        }
        let _ = writeln!(out, "\nOn the host:\n");
        for change in &self.changes {
            let (comment, line) = match change {
                Change::CreateFile { path, secret } => (
                    format!(
                        "{} will be created{}",
                        path.display(),
                        if *secret {
                            " (with the Talos secrets and keys made on first apply)"
                        } else {
                            ""
                        }
                    ),
                    format!("+ file \"{}\"", path.display()),
                ),
                Change::UpdateFile { path } => (
                    format!("{} will be updated in place", path.display()),
                    format!("~ file \"{}\"", path.display()),
                ),
                Change::StartContainer { name, vmid } => (
                    format!("container {vmid} ({name}) will be started"),
                    format!("~ container \"{vmid}\""),
                ),
                Change::Install { container, package } => (
                    format!("{package} will be installed in {container}"),
                    format!("+ package \"{container}:{package}\""),
                ),
                Change::Push { container, target } => (
                    format!("{target} will be pushed into {container}"),
                    format!("~ push \"{container}:{target}\""),
                ),
                Change::Service(action) => (describe(action), format!("~ {}", label(action))),
                Change::StartVm { name, vmid } => (
                    format!("vm {vmid} ({name}) will be started"),
                    format!("~ vm \"{vmid}\""),
                ),
            };
            let _ = writeln!(out, "  # {comment}\n  {line}\n");
        }
        let _ = writeln!(out, "Host: {} to change.", self.changes.len());
        out
    }
}

/// The action as a plan line names it: verb and "where: unit".
fn label(action: &ServiceAction) -> String {
    match action {
        ServiceAction::DaemonReload => "daemon-reload \"host\"".to_owned(),
        ServiceAction::SysctlLoad(file) => format!("sysctl \"{file}\""),
        ServiceAction::Restart(unit) => format!("restart \"{unit}\""),
        ServiceAction::ContainerDaemonReload(vmid) => format!("daemon-reload \"ct {vmid}\""),
        ServiceAction::ContainerRestart(vmid, unit) => format!("restart \"ct {vmid}: {unit}\""),
        ServiceAction::ContainerReload(vmid, unit) => format!("reload \"ct {vmid}: {unit}\""),
    }
}

fn describe(action: &ServiceAction) -> String {
    match action {
        ServiceAction::DaemonReload => "systemd will reload its units".to_owned(),
        ServiceAction::SysctlLoad(file) => format!("{file} will be loaded"),
        ServiceAction::Restart(unit) => format!("{unit} will be enabled and restarted"),
        ServiceAction::ContainerDaemonReload(vmid) => {
            format!("systemd in container {vmid} will reload its units")
        }
        ServiceAction::ContainerRestart(vmid, unit) => {
            format!("{unit} in container {vmid} will be enabled and restarted")
        }
        ServiceAction::ContainerReload(vmid, unit) => {
            format!("{unit} in container {vmid} will reload")
        }
    }
}

/// What apply's host side would do, read-only: `root` and `state` as apply's, `binaries` where
/// lab-lb and lab-vpn are.
pub fn plan(
    host: &mut dyn Runner,
    lab: &Lab,
    root: &Path,
    state_dir: &Path,
    binaries: &Path,
) -> Result<HostPlan, HostPlanError> {
    let mut changes = Vec::new();
    let mut previews: Vec<Preview> = crate::render::host_files(lab)
        .map_err(StateError::from)?
        .into_iter()
        .map(Preview::File)
        .collect();
    previews.extend(state::preview_host_files(lab, state_dir)?);
    // What each staged file will hold (None: made with a new secret), for the containers.
    let mut staged: BTreeMap<PathBuf, Option<String>> = BTreeMap::new();
    let mut changed = BTreeSet::new();
    for preview in &previews {
        let target = under_root(root, preview.path())?;
        match preview {
            Preview::File(file) => {
                staged.insert(target.clone(), Some(file.contents.clone()));
                if services::would_change(root, file)? {
                    changed.insert(file.path.clone());
                    changes.push(file_change(&target, &file.path, false));
                }
            }
            Preview::Unmade { path, .. } => {
                staged.insert(target.clone(), None);
                changed.insert(path.clone());
                changes.push(file_change(&target, path, true));
            }
        }
    }
    for preview in state::preview_state_files(lab, state_dir)? {
        match &preview {
            Preview::File(file) => {
                if would_change_at(&file.path, file) {
                    changes.push(file_change(&file.path, &file.path, false));
                }
            }
            Preview::Unmade { path, .. } => changes.push(file_change(path, path, true)),
        }
    }
    let mut pending = actions::load(state_dir)?;
    pending.extend(services::actions_for(lab, &changed));
    for role in [Role::Manager, Role::ControlPlane, Role::Worker] {
        for machine in lab.machines.iter().filter(|m| m.role == role) {
            if !running(host, "qm", machine.vmid)? {
                changes.push(Change::StartVm {
                    name: machine.name.to_string(),
                    vmid: machine.vmid,
                });
            }
        }
    }
    for container in containers::containers(lab, root, binaries)? {
        let vmid = container.vmid.to_string();
        let is_running = running(host, "pct", container.vmid)?;
        if !is_running {
            changes.push(Change::StartContainer {
                name: container.name.clone(),
                vmid: container.vmid,
            });
        }
        let mut installs = false;
        for package in &container.packages {
            // One that is not running yet cannot be asked; a new container lacks them.
            if !is_running || !containers::has_package(host, &vmid, package)? {
                installs = true;
                changes.push(Change::Install {
                    container: container.name.clone(),
                    package: package.name.to_owned(),
                });
            }
        }
        if installs {
            pending.insert(ServiceAction::ContainerRestart(
                container.vmid,
                container.unit.to_owned(),
            ));
        }
        let remote = if is_running {
            let mut args = vec!["exec", vmid.as_str(), "--", "sha256sum"];
            args.extend(container.files.iter().map(|f| f.target));
            parse_sums(&host.run("pct", &args)?.stdout)
        } else {
            BTreeMap::new()
        };
        let mut pushed = Vec::new();
        for file in &container.files {
            let local = match staged.get(&file.source) {
                Some(Some(contents)) => Some(sha256_hex(contents.as_bytes())),
                Some(None) => None,
                None => Some(sha256_hex(&std::fs::read(&file.source).map_err(
                    |source| ContainerError::Source {
                        path: file.source.clone(),
                        source,
                    },
                )?)),
            };
            if local.is_none() || remote.get(file.target) != local.as_ref() {
                pushed.push(file);
            }
        }
        if pushed.is_empty() {
            continue;
        }
        let any = |kind| pushed.iter().any(|f| f.kind == kind);
        let (unit, binary) = (
            any(containers::FileKind::Unit),
            any(containers::FileKind::Binary),
        );
        if unit {
            pending.insert(ServiceAction::ContainerDaemonReload(container.vmid));
        }
        if unit || binary {
            pending.insert(ServiceAction::ContainerRestart(
                container.vmid,
                container.unit.to_owned(),
            ));
        } else {
            pending.insert(ServiceAction::ContainerReload(
                container.vmid,
                container.unit.to_owned(),
            ));
        }
        for file in pushed {
            changes.push(Change::Push {
                container: container.name.clone(),
                target: file.target.to_owned(),
            });
        }
    }
    // As apply runs them: a reload of a unit that restarts anyway does not happen.
    for action in &pending {
        if let ServiceAction::ContainerReload(vmid, unit) = action {
            if pending.contains(&ServiceAction::ContainerRestart(*vmid, unit.clone())) {
                continue;
            }
        }
        changes.push(Change::Service(action.clone()));
    }
    Ok(HostPlan { changes })
}

fn file_change(target: &Path, shown: &Path, secret: bool) -> Change {
    if target.symlink_metadata().is_ok() {
        Change::UpdateFile {
            path: shown.to_owned(),
        }
    } else {
        Change::CreateFile {
            path: shown.to_owned(),
            secret,
        }
    }
}

fn would_change_at(path: &Path, file: &RenderedFile) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let same = std::fs::read(path).is_ok_and(|old| old == file.contents.as_bytes())
        && std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o7777 == file.mode);
    !same
}

/// Whether guest `vmid` runs; one that does not exist yet (Proxmox creates it first) does not.
fn running(host: &mut dyn Runner, program: &str, vmid: u32) -> Result<bool, HostError> {
    let status = host.run(program, &["status", &vmid.to_string()])?;
    Ok(status.success && status.stdout.contains("status: running"))
}
