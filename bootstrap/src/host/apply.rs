//! apply's host side, after the Proxmox steps: the host's files, then the services that read
//! them, then the VMs started, then the containers' programs, then etcd. Every step is decided by comparing with
//! what is there, so a second run does nothing, and what must follow a write is recorded
//! before the write, so a run killed at any point converges on the next.

use super::actions::{self, PendingError, ServiceAction};
use super::containers::{self, ContainerError};
use super::etcd;
use super::manifest::{self, ManifestError};
use super::{services, HostError, Runner};
use crate::model::Lab;
use crate::render::files::{backup_path, under_root, Outcome, WriteError};
use crate::render::state::{self, StateError};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Options {
    /// Where `/` of the host is (tests use a temporary directory).
    pub root: PathBuf,
    pub state: PathBuf,
    /// The directory holding lab-lb and lab-vpn.
    pub binaries: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum HostApplyError {
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
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub files_written: usize,
    pub files_pushed: usize,
    pub vms_started: usize,
    pub actions: Vec<ServiceAction>,
    pub etcd: Option<etcd::Outcome>,
}

pub fn apply(
    host: &mut dyn Runner,
    lab: &Lab,
    options: &Options,
    out: &mut dyn Write,
) -> Result<Summary, HostApplyError> {
    let root = &options.root;
    let state_dir = &options.state;
    let mut summary = Summary::default();
    // Before anything is kept there, so the directory carries its marker from the start.
    crate::talos::files::state_dir(state_dir).map_err(|source| StateError::Io {
        path: state_dir.clone(),
        source,
    })?;
    let files = services::files(lab, state_dir)?;
    let mut changed = BTreeSet::new();
    for file in &files {
        if services::would_change(root, file)? {
            changed.insert(file.path.clone());
        }
    }
    let mut pending = actions::load(state_dir)?;
    pending.extend(services::actions_for(lab, &changed));
    actions::save(state_dir, &pending)?;
    let mut written = manifest::load(state_dir)?;
    for (path, outcome) in services::write(root, &files)? {
        if outcome != Outcome::Unchanged {
            let _ = writeln!(out, "  {outcome} {}", path.display());
            summary.files_written += 1;
        }
        if outcome == Outcome::Changed {
            record_backup(root, &path, &mut written)?;
        }
    }
    // Every file now holds what was rendered: that is what destroy may take away again.
    for file in &files {
        written.insert(
            file.path.clone(),
            manifest::sha256_hex(file.contents.as_bytes()),
        );
    }
    manifest::save(state_dir, &written)?;
    for (path, outcome) in state::write_state_files(lab, state_dir)? {
        if outcome != Outcome::Unchanged {
            let _ = writeln!(out, "  {outcome} {}", path.display());
            summary.files_written += 1;
        }
    }
    // The host's services first: the containers' traffic goes through its ruleset.
    run_pending(host, state_dir, &mut pending, &mut summary, out, false)?;
    // After the snippets are written: the Talos nodes read them on first boot.
    summary.vms_started = super::guests::start_vms(host, lab, out)?;
    let containers = containers::containers(lab, root, &options.binaries)?;
    summary.files_pushed = containers::provision(host, &containers, state_dir, &mut pending, out)?;
    run_pending(host, state_dir, &mut pending, &mut summary, out, true)?;
    summary.etcd = Some(etcd::bootstrap(host, lab, state_dir, out)?);
    Ok(summary)
}

/// A backup holding what an earlier apply wrote is lab-bootstrap's too (destroy removes it);
/// one holding anything else is the user's, kept.
fn record_backup(
    root: &std::path::Path,
    path: &std::path::Path,
    written: &mut manifest::Manifest,
) -> Result<(), HostApplyError> {
    let Some(before) = written.get(path).cloned() else {
        return Ok(());
    };
    let backup = backup_path(path);
    let on_disk = std::fs::read(under_root(root, &backup)?);
    if on_disk.is_ok_and(|bytes| manifest::sha256_hex(&bytes) == before) {
        written.insert(backup, before);
    }
    Ok(())
}

fn is_container(action: &ServiceAction) -> bool {
    matches!(
        action,
        ServiceAction::ContainerDaemonReload(_)
            | ServiceAction::ContainerRestart(..)
            | ServiceAction::ContainerReload(..)
    )
}

/// Runs the pending host (or container) actions in order, each struck off once done.
fn run_pending(
    host: &mut dyn Runner,
    state_dir: &std::path::Path,
    pending: &mut BTreeSet<ServiceAction>,
    summary: &mut Summary,
    out: &mut dyn Write,
    in_containers: bool,
) -> Result<(), HostApplyError> {
    let todo: Vec<ServiceAction> = pending
        .iter()
        .filter(|a| is_container(a) == in_containers)
        .cloned()
        .collect();
    let all = pending.clone();
    for action in todo {
        if in_containers {
            containers::run(host, &action, &all)?;
        } else {
            services::run(host, &action)?;
        }
        let _ = writeln!(out, "  {action}");
        pending.remove(&action);
        actions::save(state_dir, pending)?;
        summary.actions.push(action);
    }
    Ok(())
}
