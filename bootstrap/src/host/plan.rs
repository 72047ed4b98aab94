//! What apply does on the host, decided once by reading only: the steps in the order apply
//! carries them out. Nothing is written and no secret is made: files that need a secret not
//! made yet are planned as to be created with it.

use super::actions::{self, ServiceAction};
use super::containers::{self, Container, ContainerError, ContainerFile, Package};
use super::manifest::sha256_hex;
use super::{guest_running, guests, packages, services, HostError, Runner};
use crate::model::{Lab, Role};
use crate::render::backup::BackupJob;
use crate::render::containers::VPN_PEERS_FILE;
use crate::render::files::under_root;
use crate::render::state::{self, Preview};
use crate::render::RenderedFile;
use crate::state_dir::StateDir;
use lab_schema::vpn::PeersFile;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A file to write: where (a host path, or a path in the state directory), whether it is there
/// yet, and whether it comes from secrets or keys that will be made first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// The file's path as rendered: a host path (written under `--root`), or its path in the
    /// state directory.
    pub path: PathBuf,
    /// Whether something is there already, so the write replaces it rather than creates it.
    pub exists: bool,
    /// Whether it is rendered from secrets or keys apply makes first, so what it will hold is
    /// not known yet.
    pub secret: bool,
}

/// One thing apply does on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Installs on the host, with apt-get, the Debian packages its units run and it lacks.
    InstallHost {
        /// The packages it lacks.
        packages: Vec<Package>,
    },
    /// A host file, written under `--root`.
    WriteHostFile(FileWrite),
    /// A file of the state directory (talosconfig, client configs).
    WriteStateFile(FileWrite),
    /// A reload or restart, on the host or in a container.
    Service(ServiceAction),
    /// Starts a VM that is not running (`qm start`), once its snippet is written.
    StartVm {
        /// The machine's name in lab.toml.
        name: String,
        /// Its Proxmox VMID.
        vmid: u32,
    },
    /// Starts a container that is not running (`pct start`): installing and pushing need it.
    StartContainer {
        /// The container's name in lab.toml.
        name: String,
        /// Its Proxmox VMID.
        vmid: u32,
    },
    /// Installs into a container, with apt-get, the Debian packages its program needs and it
    /// lacks.
    Install {
        /// The container's name in lab.toml.
        container: String,
        /// Its Proxmox VMID.
        vmid: u32,
        /// The packages it lacks (all of them when it was not running yet).
        packages: Vec<Package>,
    },
    /// Pushes into a container (`pct push`) the files that differ from what it holds.
    Push {
        /// The container's name in lab.toml.
        container: String,
        /// Its Proxmox VMID.
        vmid: u32,
        /// The files that differ or are missing (all of them when it was not running yet).
        files: Vec<ContainerFile>,
    },
}

/// What apply will do on the host, as [`plan`] decided it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPlan {
    /// In the order apply carries them out.
    pub steps: Vec<Step>,
    /// The peers `lab-vpn peer add` added in the vpn container (its peers file, which apply
    /// never writes): name and allowed IPs. Not changes: shown so lab.toml's are not all.
    pub added_peers: Vec<(String, String)>,
    /// What lab-vpn's `check` will say of the added peers against the vpn.toml apply pushes (a
    /// name, key or address lab.toml's peers took since): apply will stop there.
    pub peer_clashes: Vec<String>,
}

impl HostPlan {
    /// Whether apply has nothing to do on the host.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Every reload and restart the plan runs: what apply records as due before it writes.
    pub fn service_actions(&self) -> BTreeSet<ServiceAction> {
        self.steps
            .iter()
            .filter_map(|step| match step {
                Step::Service(action) => Some(action.clone()),
                _ => None,
            })
            .collect()
    }

    /// terraform-like lines, after the Proxmox changes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.added_peers.is_empty() {
            let _ = writeln!(
                out,
                "\nVPN peers added in the vpn container with `lab-vpn peer add` ({VPN_PEERS_FILE}, kept by apply):\n"
            );
            for (name, allowed_ips) in &self.added_peers {
                let _ = writeln!(out, "  {name} {allowed_ips}");
            }
        }
        for clash in &self.peer_clashes {
            let _ = writeln!(
                out,
                "\n  ! lab-vpn check will refuse the new vpn.toml, and apply stop: {clash}"
            );
        }
        if self.is_empty() {
            let _ = writeln!(
                out,
                "No changes. The host's files and services match lab.toml."
            );
            return out;
        }
        let _ = writeln!(out, "\nOn the host:\n");
        let mut count = 0;
        for step in &self.steps {
            for (comment, line) in lines(step) {
                let _ = writeln!(out, "  # {comment}\n  {line}\n");
                count += 1;
            }
        }
        let _ = writeln!(out, "Host: {count} to change.");
        out
    }
}

/// A step as plan shows it: (what happens, the change's line), one per file, package or action.
fn lines(step: &Step) -> Vec<(String, String)> {
    match step {
        Step::WriteHostFile(file) | Step::WriteStateFile(file) => {
            let path = file.path.display();
            vec![if file.exists {
                (
                    format!("{path} will be updated in place"),
                    format!("~ file \"{path}\""),
                )
            } else {
                let with = if file.secret {
                    " (with the Talos secrets and keys made on first apply)"
                } else {
                    ""
                };
                (
                    format!("{path} will be created{with}"),
                    format!("+ file \"{path}\""),
                )
            }]
        }
        Step::Service(action) => vec![(describe(action), format!("~ {}", label(action)))],
        Step::StartVm { name, vmid } => vec![(
            format!("vm {vmid} ({name}) will be started"),
            format!("~ vm \"{vmid}\""),
        )],
        Step::StartContainer { name, vmid } => vec![(
            format!("container {vmid} ({name}) will be started"),
            format!("~ container \"{vmid}\""),
        )],
        Step::InstallHost { packages } => packages
            .iter()
            .map(|package| {
                (
                    format!("{} will be installed on the host", package.name),
                    format!("+ package \"host:{}\"", package.name),
                )
            })
            .collect(),
        Step::Install {
            container,
            packages,
            ..
        } => packages
            .iter()
            .map(|package| {
                (
                    format!("{} will be installed in {container}", package.name),
                    format!("+ package \"{container}:{}\"", package.name),
                )
            })
            .collect(),
        Step::Push {
            container, files, ..
        } => files
            .iter()
            .map(|file| {
                let checked = match file.checked_by {
                    Some(program) => format!(
                        " as {}, checked there by `{program} check`, and moved into place only \
                         if it passes (apply stops otherwise)",
                        containers::staging_target(&file.target)
                    ),
                    None => String::new(),
                };
                (
                    format!("{} will be pushed into {container}{checked}", file.target),
                    format!("~ push \"{container}:{}\"", file.target),
                )
            })
            .collect(),
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

/// What apply's host side will do, read-only: `root` and `state` as apply's, `binaries` where
/// lab-lb and lab-vpn are, `backup` what the daily backup timer runs. The order is apply's: the packages the host's units run, the host's files, the state directory's, the
/// host's services (the containers' traffic goes through its ruleset), the VMs (once their
/// snippets are written: Talos nodes read them on first boot), then each container's start,
/// packages and files, then the containers' services.
pub fn plan(
    runner: &mut dyn Runner,
    lab: &Lab,
    root: &Path,
    state: &StateDir,
    binaries: &Path,
    backup: &BackupJob,
) -> Result<HostPlan, HostError> {
    let mut steps = Vec::new();
    let lacking = packages::missing(runner)?;
    if !lacking.is_empty() {
        steps.push(Step::InstallHost { packages: lacking });
    }
    let mut previews: Vec<Preview> = crate::render::host_files(lab)
        .map_err(state::StateError::from)?
        .into_iter()
        .chain(crate::render::backup::files(backup))
        .map(Preview::File)
        .collect();
    previews.extend(state::preview_host_files(lab, state)?);
    // What each staged file will hold (None: made with a new secret), for the containers.
    let mut staged: BTreeMap<PathBuf, Option<String>> = BTreeMap::new();
    let mut changed = BTreeSet::new();
    for preview in &previews {
        let target = under_root(root, preview.path())?;
        let (contents, write) = match preview {
            Preview::File(file) => (
                Some(file.contents.clone()),
                services::differs(&target, file),
            ),
            Preview::Unmade { .. } => (None, true),
        };
        staged.insert(target.clone(), contents);
        if write {
            changed.insert(preview.path().to_owned());
            steps.push(Step::WriteHostFile(file_write(&target, preview)));
        }
    }
    for preview in state::preview_state_files(lab, state)? {
        let write = match &preview {
            Preview::File(file) => services::differs(&file.path, file),
            Preview::Unmade { .. } => true,
        };
        if write {
            steps.push(Step::WriteStateFile(file_write(preview.path(), &preview)));
        }
    }
    // What an earlier, interrupted apply left to do comes first of all.
    let mut due = actions::load(state)?;
    due.extend(services::actions_for(lab, &changed));
    let mut guest_steps = Vec::new();
    for machine in guests::stopped_vms(runner, lab)? {
        guest_steps.push(Step::StartVm {
            name: machine.name.to_string(),
            vmid: machine.vmid,
        });
    }
    let mut added_peers = (Vec::new(), Vec::new());
    for container in containers::containers(lab, root, binaries)? {
        guest_steps.extend(container_plan(runner, &container, &staged, &mut due)?);
        let is_vpn = lab
            .instances(Role::Vpn)
            .iter()
            .any(|m| m.vmid == container.vmid);
        if is_vpn && guest_running(runner, "pct", container.vmid)? {
            added_peers = read_added_peers(runner, lab, container.vmid)?;
        }
    }
    let due: Vec<&ServiceAction> = due.iter().filter(|a| !a.is_moot(&due)).collect();
    let service = |in_container: bool| {
        due.iter()
            .filter(move |a| a.in_container() == in_container)
            .map(|a| Step::Service((*a).clone()))
    };
    steps.extend(service(false));
    steps.extend(guest_steps);
    steps.extend(service(true));
    let (added_peers, peer_clashes) = added_peers;
    Ok(HostPlan {
        steps,
        added_peers,
        peer_clashes,
    })
}

/// A peer's name and allowed IPs, as plan shows it.
type NamedPeer = (String, String);

/// The vpn container's added peers (read-only), and their clashes with lab.toml's, as lab-vpn
/// will judge them against the vpn.toml rendered from `lab`.
fn read_added_peers(
    runner: &mut dyn Runner,
    lab: &Lab,
    vmid: u32,
) -> Result<(Vec<NamedPeer>, Vec<String>), HostError> {
    let read = runner.run(
        "pct",
        &["exec", &vmid.to_string(), "--", "cat", VPN_PEERS_FILE],
    )?;
    // No file: no peer was added there.
    if !read.success || read.stdout.trim().is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let peers: PeersFile = match toml::from_str(&read.stdout) {
        Ok(peers) => peers,
        Err(e) => {
            return Ok((
                Vec::new(),
                vec![format!("{VPN_PEERS_FILE}: {}", e.message())],
            ))
        }
    };
    let listed = peers
        .peers
        .iter()
        .map(|p| {
            let ips: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
            (p.name.to_string(), ips.join(", "))
        })
        .collect();
    let gateway = crate::render::containers::vpn_config(lab).map_err(state::StateError::from)?;
    let mut issues = lab_daemon::Issues::new();
    peers.check_with(&gateway, &mut issues);
    let clashes = issues
        .into_vec()
        .into_iter()
        .map(|i| format!("{VPN_PEERS_FILE}: {i}"))
        .collect();
    Ok((listed, clashes))
}

/// One container's steps: started unless it runs, packages it lacks installed, files that
/// differ inside pushed; the service actions they call for go into `due`.
fn container_plan(
    runner: &mut dyn Runner,
    container: &Container,
    staged: &BTreeMap<PathBuf, Option<String>>,
    due: &mut BTreeSet<ServiceAction>,
) -> Result<Vec<Step>, HostError> {
    let mut steps = Vec::new();
    let running = guest_running(runner, "pct", container.vmid)?;
    if !running {
        steps.push(Step::StartContainer {
            name: container.name.clone(),
            vmid: container.vmid,
        });
    }
    let mut missing = Vec::new();
    for package in &container.packages {
        // One that is not running yet cannot be asked; a new container lacks them.
        if !running || !containers::has_package(runner, container.vmid, package)? {
            missing.push(*package);
        }
    }
    if !missing.is_empty() {
        due.insert(containers::action_after_install(container));
        steps.push(Step::Install {
            container: container.name.clone(),
            vmid: container.vmid,
            packages: missing,
        });
    }
    let remote = if running {
        containers::remote_sums(runner, container)?
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
        if local.is_none() || remote.get(&file.target) != local.as_ref() {
            pushed.push(file.clone());
        }
    }
    if !pushed.is_empty() {
        due.extend(containers::actions_for(container, &pushed));
        steps.push(Step::Push {
            container: container.name.clone(),
            vmid: container.vmid,
            files: pushed,
        });
    }
    Ok(steps)
}

/// `target` is where the file is on this machine (under `--root`); the plan names it as the
/// preview does.
fn file_write(target: &Path, preview: &Preview) -> FileWrite {
    FileWrite {
        path: preview.path().to_owned(),
        exists: target.symlink_metadata().is_ok(),
        secret: matches!(preview, Preview::Unmade { .. }),
    }
}

/// The rendered file a planned write puts there (rendered by apply once the secrets exist).
pub(crate) fn rendered<'a>(
    files: &'a [RenderedFile],
    write: &FileWrite,
) -> Result<&'a RenderedFile, HostError> {
    files
        .iter()
        .find(|f| f.path == write.path)
        .ok_or_else(|| HostError::NotRendered(write.path.clone()))
}
