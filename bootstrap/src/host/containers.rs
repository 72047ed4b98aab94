//! The lb and vpn containers' programs: the binary, its config and its unit pushed in with
//! `pct push`, only those whose SHA-256 inside the container differs; then the service reloaded
//! when only its config changed, restarted when its binary or unit did. Debian packages a program
//! needs at run time (lab-vpn's `nft`) are installed first, only when missing.

use super::actions::ServiceAction;
use super::{CommandError, Runner};
use crate::model::{Lab, Role};
use crate::render::containers::{
    staged_path, LB_BINARY, LB_CONFIG, LB_ROUTES_DROPIN, LB_UNIT, VPN_BINARY, VPN_CONFIG,
    VPN_GUARD_UNIT, VPN_PRIVATE_KEY, VPN_ROUTES_DROPIN, VPN_UNIT,
};
use crate::render::files::{under_root, WriteError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a container file is to its program, which decides what follows pushing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// The program itself: pushing it restarts the program.
    Binary,
    /// Its config or key: pushing only these reloads the program.
    Config,
    /// A systemd unit or drop-in: pushing it reloads systemd and restarts the program.
    Unit,
}

/// A file to have inside a container: where it comes from on the host and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFile {
    /// Where it is on the host: the binary in `--binaries`, the others staged under `--root`.
    pub source: PathBuf,
    /// Its path inside the container.
    pub target: &'static str,
    /// Its permissions inside the container.
    pub mode: u32,
    /// What it is to the program.
    pub kind: FileKind,
}

/// A Debian package a container's program runs, found by one of its commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package {
    /// The command that is on the container's PATH once the package is installed.
    pub command: &'static str,
    /// The package's name, as apt-get installs it.
    pub name: &'static str,
}

/// lab-vpn programs its forwarding policy with `nft`, and refuses to start without it.
const NFTABLES: Package = Package {
    command: "nft",
    name: "nftables",
};

/// One container and what belongs in it.
#[derive(Debug, Clone)]
pub struct Container {
    /// Its Proxmox VMID.
    pub vmid: u32,
    /// Its name in lab.toml.
    pub name: String,
    /// The systemd unit that runs its program (`lab-lb.service`, `lab-vpn.service`).
    pub unit: &'static str,
    /// The Debian packages its program needs at run time.
    pub packages: Vec<Package>,
    /// The files it must hold: the binary, its configs and keys, its units.
    pub files: Vec<ContainerFile>,
}

/// Why the lb or vpn container could not be found or filled.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A `pct` command failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A staged file's path does not fit under `--root`.
    #[error(transparent)]
    Path(#[from] WriteError),
    /// A file to push could not be read on the host (most often: lab-lb or lab-vpn not built).
    #[error("{}: {source} (build lab-lb and lab-vpn, or name their directory with --binaries)", path.display())]
    Source {
        /// The file on the host.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// lab.toml has no machine of this role (`lb` or `vpn`).
    #[error("the lab has no {0} container; run `lab-bootstrap validate`")]
    Missing(&'static str),
    /// `apt-get update` or `apt-get install` failed inside the container.
    #[error("container {container}: installing {package} failed: {reason} (the container needs a working apt source and a route to it)")]
    Install {
        /// The container's name in lab.toml.
        container: String,
        /// The packages being installed, space-separated.
        package: String,
        /// The failed command and what it printed on standard error.
        reason: String,
    },
}

/// The lb and vpn containers: binaries from `binaries`, configs and units as staged under `root`.
pub fn containers(
    lab: &Lab,
    root: &Path,
    binaries: &Path,
) -> Result<Vec<Container>, ContainerError> {
    let staged = |role, path| under_root(root, &staged_path(lab, role, path));
    let mut out = Vec::new();
    for (role, unit, binary, program, configs, packages) in [
        (
            Role::Lb,
            "lab-lb.service",
            LB_BINARY,
            "lab-lb",
            vec![(LB_CONFIG, 0o644)],
            vec![],
        ),
        (
            Role::Vpn,
            "lab-vpn.service",
            VPN_BINARY,
            "lab-vpn",
            vec![(VPN_CONFIG, 0o644), (VPN_PRIVATE_KEY, 0o600)],
            vec![NFTABLES],
        ),
    ] {
        let machine = lab
            .machines
            .iter()
            .find(|m| m.role == role)
            .ok_or(ContainerError::Missing(role.as_str()))?;
        let units: &[&'static str] = if role == Role::Lb {
            &[LB_UNIT, LB_ROUTES_DROPIN]
        } else {
            &[VPN_UNIT, VPN_ROUTES_DROPIN, VPN_GUARD_UNIT]
        };
        let mut files = vec![ContainerFile {
            source: binaries.join(program),
            target: binary,
            mode: 0o755,
            kind: FileKind::Binary,
        }];
        for (path, mode) in configs {
            files.push(ContainerFile {
                source: staged(role, path)?,
                target: path,
                mode,
                kind: FileKind::Config,
            });
        }
        for &path in units {
            files.push(ContainerFile {
                source: staged(role, path)?,
                target: path,
                mode: 0o644,
                kind: FileKind::Unit,
            });
        }
        out.push(Container {
            vmid: machine.vmid,
            name: machine.name.to_string(),
            unit,
            packages,
            files,
        });
    }
    Ok(out)
}

/// `sha256sum`'s output as target → digest; missing files are simply absent.
fn parse_sums(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| {
            let (sum, path) = line.split_once("  ")?;
            Some((path.trim().to_owned(), sum.trim().to_owned()))
        })
        .collect()
}

/// The SHA-256 of each of the container's files as it is inside (read-only; the container must
/// run): target → digest, missing files absent.
pub fn remote_sums(
    runner: &mut dyn Runner,
    container: &Container,
) -> Result<BTreeMap<String, String>, CommandError> {
    let vmid = container.vmid.to_string();
    let mut args = vec!["exec", vmid.as_str(), "--", "sha256sum"];
    args.extend(container.files.iter().map(|f| f.target));
    // sha256sum fails when a file is missing but still prints the others.
    Ok(parse_sums(&runner.run("pct", &args)?.stdout))
}

/// Whether the package's command is on the container's PATH (read-only).
pub fn has_package(
    runner: &mut dyn Runner,
    vmid: u32,
    package: &Package,
) -> Result<bool, CommandError> {
    let probe = format!("command -v {}", package.command);
    Ok(runner
        .run(
            "pct",
            &["exec", &vmid.to_string(), "--", "sh", "-c", &probe],
        )?
        .success)
}

/// What must follow pushing `pushed` into `container`: systemd re-reads its units when one
/// changed; the program restarts when its binary or unit changed, and only reloads when its
/// config alone did.
pub fn actions_for(container: &Container, pushed: &[ContainerFile]) -> BTreeSet<ServiceAction> {
    let any = |kind| pushed.iter().any(|f| f.kind == kind);
    let (unit_changed, binary_changed) = (any(FileKind::Unit), any(FileKind::Binary));
    let unit = container.unit.to_owned();
    let mut out = BTreeSet::new();
    if pushed.is_empty() {
        return out;
    }
    if unit_changed {
        out.insert(ServiceAction::ContainerDaemonReload(container.vmid));
    }
    if unit_changed || binary_changed {
        out.insert(ServiceAction::ContainerRestart(container.vmid, unit));
    } else {
        out.insert(ServiceAction::ContainerReload(container.vmid, unit));
    }
    out
}

/// After packages were installed: the program may have failed for want of them, so it starts
/// again.
pub fn action_after_install(container: &Container) -> ServiceAction {
    ServiceAction::ContainerRestart(container.vmid, container.unit.to_owned())
}

/// Starts the container: `pct push` and `pct exec` need it running.
pub fn start(runner: &mut dyn Runner, vmid: u32) -> Result<(), CommandError> {
    runner.check("pct", &["start", &vmid.to_string()])?;
    Ok(())
}

/// Installs `packages` into container `name`.
pub fn install(
    runner: &mut dyn Runner,
    name: &str,
    vmid: u32,
    packages: &[Package],
) -> Result<(), ContainerError> {
    let vmid = vmid.to_string();
    // A fresh template has no package lists; noninteractive so no prompt waits for a terminal.
    let apt = [
        "exec",
        &vmid,
        "--",
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
    ];
    let names: Vec<&str> = packages.iter().map(|p| p.name).collect();
    let fail = |e: CommandError| ContainerError::Install {
        container: name.to_owned(),
        package: names.join(" "),
        reason: e.to_string(),
    };
    let update: Vec<&str> = apt.iter().copied().chain(["-q", "update"]).collect();
    runner.check("pct", &update).map_err(fail)?;
    let install: Vec<&str> = apt
        .iter()
        .copied()
        .chain(["-q", "-y", "--no-install-recommends", "install"])
        .chain(names.iter().copied())
        .collect();
    runner.check("pct", &install).map_err(fail)?;
    Ok(())
}

/// Pushes `files` into container `vmid`, making their directories first.
pub fn push(
    runner: &mut dyn Runner,
    vmid: u32,
    files: &[ContainerFile],
) -> Result<(), CommandError> {
    let vmid = vmid.to_string();
    let dirs: BTreeSet<&str> = files
        .iter()
        .filter_map(|f| Path::new(f.target).parent()?.to_str())
        .collect();
    let mut mkdir = vec!["exec", vmid.as_str(), "--", "mkdir", "-p"];
    mkdir.extend(dirs);
    runner.check("pct", &mkdir)?;
    for file in files {
        let source = file.source.to_string_lossy();
        let perms = format!("{:o}", file.mode);
        runner.check(
            "pct",
            &["push", &vmid, &source, file.target, "--perms", &perms],
        )?;
    }
    Ok(())
}

/// Runs one container action (host actions are [`super::services::run`]'s).
pub fn run(runner: &mut dyn Runner, action: &ServiceAction) -> Result<(), CommandError> {
    match action {
        ServiceAction::ContainerDaemonReload(vmid) => {
            runner.check(
                "pct",
                &[
                    "exec",
                    &vmid.to_string(),
                    "--",
                    "systemctl",
                    "daemon-reload",
                ],
            )?;
        }
        ServiceAction::ContainerRestart(vmid, unit) => {
            let vmid = vmid.to_string();
            runner.check("pct", &["exec", &vmid, "--", "systemctl", "enable", unit])?;
            runner.check("pct", &["exec", &vmid, "--", "systemctl", "restart", unit])?;
        }
        ServiceAction::ContainerReload(vmid, unit) => {
            let vmid = vmid.to_string();
            runner.check(
                "pct",
                &["exec", &vmid, "--", "systemctl", "reload-or-restart", unit],
            )?;
        }
        _ => {}
    }
    Ok(())
}
