//! apply's host side, after the Proxmox steps: carries out a [`HostPlan`] step by step, then
//! bootstraps etcd, waits for the cluster and writes its kubeconfig. What must follow a write is recorded before the write, so a run killed at
//! any point converges on the next, whose plan starts with what is still due.

use super::actions;
use super::cluster;
use super::containers;
use super::etcd;
use super::guests;
use super::manifest;
use super::plan::{rendered, HostPlan, Step};
use super::{services, HostError, Runner};
use crate::model::Lab;
use crate::render::files::{backup_path, under_root, write_atomic, Outcome};
use crate::render::state;
use crate::state_dir::StateDir;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where apply's host side works.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where `/` of the host is (tests use a temporary directory).
    pub root: PathBuf,
    /// The state directory: secrets and keys, the manifest, the actions still due.
    pub state: StateDir,
    /// Whether and how long to wait for the cluster.
    pub cluster: etcd::ClusterOptions,
    /// What the daily backup timer runs.
    pub backup: crate::render::backup::BackupJob,
}

/// What apply's host side did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Host and state-directory files created or changed (not those that already held it).
    pub files_written: usize,
    /// Files pushed into the containers.
    pub files_pushed: usize,
    /// VMs started.
    pub vms_started: usize,
    /// The reloads and restarts run, in the order they ran.
    pub actions: Vec<actions::ServiceAction>,
    /// How bootstrapping etcd went; set once every step is carried out.
    pub etcd: Option<etcd::Outcome>,
    /// How waiting for the cluster and writing its kubeconfig went; set after etcd.
    pub kubeconfig: Option<cluster::Outcome>,
}

/// Carries out `plan`, every step of it and nothing else, then bootstraps etcd, waits for the
/// cluster and writes its kubeconfig (`options.cluster` says how long, or not at all).
pub fn apply(
    runner: &mut dyn Runner,
    lab: &Lab,
    plan: &HostPlan,
    options: &Options,
    out: &mut dyn Write,
) -> Result<Summary, HostError> {
    let (root, state_dir) = (&options.root, &options.state);
    let mut summary = Summary::default();
    // Before anything is kept there, so the directory carries its marker from the start.
    state::create(state_dir)?;
    // Rendered now, when the secrets the plan said would be made are made.
    let host_files = services::files(lab, state_dir, &options.backup)?;
    let state_files = state::state_files(lab, state_dir)?;
    let mut due = plan.service_actions();
    actions::save(state_dir, &due)?;
    let mut written = manifest::load(state_dir)?;
    let planned = |path: &Path| {
        plan.steps
            .iter()
            .any(|s| matches!(s, Step::WriteHostFile(w) if w.path == path))
    };
    // The files the plan leaves alone already hold what apply would write: theirs too.
    let before = written.clone();
    for file in host_files.iter().filter(|f| !planned(&f.path)) {
        written.insert(
            file.path.clone(),
            manifest::sha256_hex(file.contents.as_bytes()),
        );
    }
    if written != before {
        manifest::save(state_dir, &written)?;
    }
    for step in &plan.steps {
        match step {
            Step::WriteHostFile(write) => {
                let file = rendered(&host_files, write)?;
                let outcome = write_host_file(root, state_dir, file, &mut written)?;
                if outcome != Outcome::Unchanged {
                    let _ = writeln!(out, "  {outcome} {}", file.path.display());
                    summary.files_written += 1;
                }
            }
            Step::WriteStateFile(write) => {
                let (path, contents) = state_files
                    .iter()
                    .find(|(path, _)| *path == write.path)
                    .ok_or_else(|| HostError::NotRendered(write.path.clone()))?;
                let outcome = state::write_state_file(state_dir, path, contents)?;
                if outcome != Outcome::Unchanged {
                    let _ = writeln!(out, "  {outcome} {}", path.display());
                    summary.files_written += 1;
                }
            }
            Step::Service(action) => {
                if action.in_container() {
                    containers::run_confirmed(runner, action)?;
                } else {
                    services::run(runner, action)?;
                }
                let _ = writeln!(out, "  {action}");
                due.remove(action);
                actions::save(state_dir, &due)?;
                summary.actions.push(action.clone());
            }
            Step::StartVm { name, vmid } => {
                guests::start(runner, *vmid)?;
                let _ = writeln!(out, "  started vm {name} ({vmid})");
                summary.vms_started += 1;
            }
            Step::StartContainer { name, vmid } => {
                containers::start(runner, *vmid)?;
                let _ = writeln!(out, "  started container {name} ({vmid})");
            }
            Step::InstallHost { packages } => {
                super::packages::install(runner, packages)?;
                let names: Vec<&str> = packages.iter().map(|p| p.name).collect();
                let _ = writeln!(out, "  installed {} on the host", names.join(" "));
            }
            Step::Install {
                container,
                vmid,
                packages,
            } => {
                containers::install(runner, container, *vmid, packages)?;
                let names: Vec<&str> = packages.iter().map(|p| p.name).collect();
                let _ = writeln!(out, "  installed {} into {container}", names.join(" "));
            }
            Step::Push {
                container,
                vmid,
                files,
            } => {
                containers::push(runner, container, *vmid, files)?;
                for file in files {
                    let _ = writeln!(out, "  pushed {} into {container}", file.target);
                }
                summary.files_pushed += files.len();
            }
        }
    }
    // One budget for etcd and the cluster: the user waits for both.
    let started = std::time::Instant::now();
    let etcd = etcd::bootstrap(lab, state_dir, &options.cluster, out)?;
    let within = match etcd {
        etcd::Outcome::Deferred(_) => None,
        _ => options
            .cluster
            .within
            .map(|w| w.saturating_sub(started.elapsed())),
    };
    summary.etcd = Some(etcd);
    summary.kubeconfig = Some(cluster::kubeconfig(
        lab,
        state_dir,
        &options.cluster,
        within,
        out,
    )?);
    Ok(summary)
}

/// Writes host file `file` under `root` and records it in `written` (the manifest of what
/// destroy may take away again, saved at once), with the backup of what it replaced when that
/// was lab-bootstrap's own.
pub fn write_host_file(
    root: &Path,
    state_dir: &StateDir,
    file: &crate::render::RenderedFile,
    written: &mut manifest::Manifest,
) -> Result<Outcome, HostError> {
    let target = under_root(root, &file.path)?;
    let outcome = write_atomic(&target, file.contents.as_bytes(), file.mode)?;
    if outcome == Outcome::Changed {
        record_backup(root, &file.path, written)?;
    }
    written.insert(
        file.path.clone(),
        manifest::sha256_hex(file.contents.as_bytes()),
    );
    manifest::save(state_dir, written)?;
    Ok(outcome)
}

/// A backup holding what an earlier apply wrote is lab-bootstrap's too (destroy removes it);
/// one holding anything else is the user's, kept.
fn record_backup(
    root: &Path,
    path: &Path,
    written: &mut manifest::Manifest,
) -> Result<(), HostError> {
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
