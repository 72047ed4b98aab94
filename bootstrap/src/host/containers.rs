//! The lb and vpn containers' programs: the binary, its config and its unit pushed in with
//! `pct push`, only those whose SHA-256 inside the container differs; then the service reloaded
//! when only its config changed, restarted when its binary or unit did. Debian packages a program
//! needs at run time (lab-vpn's `nft`) are installed first, only when missing.

use super::actions::{self, PendingError, ServiceAction};
use super::{HostError, Runner};
use crate::model::{Lab, Role};
use crate::render::containers::{
    staged_path, LB_BINARY, LB_CONFIG, LB_ROUTES_DROPIN, LB_UNIT, VPN_BINARY, VPN_CONFIG,
    VPN_GUARD_UNIT, VPN_PRIVATE_KEY, VPN_ROUTES_DROPIN, VPN_UNIT,
};
use crate::render::files::{under_root, WriteError};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Binary,
    Config,
    Unit,
}

/// A file to have inside a container: where it comes from on the host and where it goes.
#[derive(Debug, Clone)]
pub struct ContainerFile {
    pub source: PathBuf,
    pub target: &'static str,
    pub mode: u32,
    pub kind: FileKind,
}

/// A Debian package a container's program runs, found by one of its commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package {
    pub command: &'static str,
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
    pub vmid: u32,
    pub name: String,
    pub unit: &'static str,
    pub packages: Vec<Package>,
    pub files: Vec<ContainerFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Pending(#[from] PendingError),
    #[error(transparent)]
    Path(#[from] WriteError),
    #[error("{}: {source} (build lab-lb and lab-vpn, or name their directory with --binaries)", path.display())]
    Source {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the lab has no {0} container; run `lab-bootstrap validate`")]
    Missing(&'static str),
    #[error("container {container}: installing {package} failed: {reason} (the container needs a working apt source and a route to it)")]
    Install {
        container: String,
        package: String,
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

use super::manifest::sha256_hex;

/// `sha256sum`'s output as target → digest; missing files are simply absent.
pub(crate) fn parse_sums(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| {
            let (sum, path) = line.split_once("  ")?;
            Some((path.trim().to_owned(), sum.trim().to_owned()))
        })
        .collect()
}

/// Starts the container unless it runs: `pct push` and `pct exec` need it running.
fn ensure_running(host: &mut dyn Runner, vmid: &str) -> Result<bool, HostError> {
    let status = host.check("pct", &["status", vmid])?;
    if status.stdout.contains("status: running") {
        return Ok(false);
    }
    host.check("pct", &["start", vmid])?;
    Ok(true)
}

/// Whether the package's command is on the container's PATH (read-only).
pub(crate) fn has_package(
    host: &mut dyn Runner,
    vmid: &str,
    package: &Package,
) -> Result<bool, HostError> {
    let probe = format!("command -v {}", package.command);
    Ok(host
        .run("pct", &["exec", vmid, "--", "sh", "-c", &probe])?
        .success)
}

/// Installs what the container's program needs and is missing; true when anything was.
fn install_packages(
    host: &mut dyn Runner,
    container: &Container,
    out: &mut dyn Write,
) -> Result<bool, ContainerError> {
    let vmid = container.vmid.to_string();
    let mut missing = Vec::new();
    for package in &container.packages {
        if !has_package(host, &vmid, package)? {
            missing.push(package.name);
        }
    }
    if missing.is_empty() {
        return Ok(false);
    }
    // A fresh template has no package lists; noninteractive so no prompt waits for a terminal.
    let apt = [
        "exec",
        &vmid,
        "--",
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
    ];
    let names = missing.join(" ");
    let fail = |e: HostError| ContainerError::Install {
        container: container.name.clone(),
        package: names.clone(),
        reason: e.to_string(),
    };
    let update: Vec<&str> = apt.iter().copied().chain(["-q", "update"]).collect();
    host.check("pct", &update).map_err(fail)?;
    let install: Vec<&str> = apt
        .iter()
        .copied()
        .chain(["-q", "-y", "--no-install-recommends", "install"])
        .chain(missing.iter().copied())
        .collect();
    host.check("pct", &install).map_err(fail)?;
    let _ = writeln!(out, "  installed {names} into {}", container.name);
    Ok(true)
}

/// Pushes what differs into every container and records the service actions that follows
/// (in `pending`, saved before the first push). Returns how many files were pushed.
pub fn provision(
    host: &mut dyn Runner,
    containers: &[Container],
    state: &Path,
    pending: &mut BTreeSet<ServiceAction>,
    out: &mut dyn Write,
) -> Result<usize, ContainerError> {
    let mut pushed = 0;
    for container in containers {
        let vmid = container.vmid.to_string();
        if ensure_running(host, &vmid)? {
            let _ = writeln!(out, "  started container {} ({vmid})", container.name);
        }
        if install_packages(host, container, out)? {
            // The program may have failed for want of it: start it again.
            pending.insert(ServiceAction::ContainerRestart(
                container.vmid,
                container.unit.to_owned(),
            ));
            actions::save(state, pending)?;
        }
        let mut local = Vec::new();
        for file in &container.files {
            let bytes = std::fs::read(&file.source).map_err(|source| ContainerError::Source {
                path: file.source.clone(),
                source,
            })?;
            local.push(sha256_hex(&bytes));
        }
        let mut args = vec!["exec", vmid.as_str(), "--", "sha256sum"];
        args.extend(container.files.iter().map(|f| f.target));
        // sha256sum fails when a file is missing but still prints the others.
        let remote = parse_sums(&host.run("pct", &args)?.stdout);
        let changed: Vec<&ContainerFile> = container
            .files
            .iter()
            .zip(&local)
            .filter(|(f, sum)| remote.get(f.target) != Some(*sum))
            .map(|(f, _)| f)
            .collect();
        if changed.is_empty() {
            continue;
        }
        let any = |kind| changed.iter().any(|f| f.kind == kind);
        let (unit_changed, binary_changed) = (any(FileKind::Unit), any(FileKind::Binary));
        let unit = container.unit.to_owned();
        if unit_changed {
            pending.insert(ServiceAction::ContainerDaemonReload(container.vmid));
        }
        if unit_changed || binary_changed {
            pending.insert(ServiceAction::ContainerRestart(container.vmid, unit));
        } else {
            pending.insert(ServiceAction::ContainerReload(container.vmid, unit));
        }
        actions::save(state, pending)?;
        let dirs: BTreeSet<&str> = changed
            .iter()
            .filter_map(|f| Path::new(f.target).parent()?.to_str())
            .collect();
        let mut mkdir = vec!["exec", vmid.as_str(), "--", "mkdir", "-p"];
        mkdir.extend(dirs);
        host.check("pct", &mkdir)?;
        for file in changed {
            let source = file.source.to_string_lossy();
            let perms = format!("{:o}", file.mode);
            host.check(
                "pct",
                &["push", &vmid, &source, file.target, "--perms", &perms],
            )?;
            let _ = writeln!(out, "  pushed {} into {}", file.target, container.name);
            pushed += 1;
        }
    }
    Ok(pushed)
}

/// Runs one container action; a reload is skipped when the same unit is restarted anyway.
pub fn run(
    host: &mut dyn Runner,
    action: &ServiceAction,
    all: &BTreeSet<ServiceAction>,
) -> Result<(), HostError> {
    match action {
        ServiceAction::ContainerDaemonReload(vmid) => {
            host.check(
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
            host.check("pct", &["exec", &vmid, "--", "systemctl", "enable", unit])?;
            host.check("pct", &["exec", &vmid, "--", "systemctl", "restart", unit])?;
        }
        ServiceAction::ContainerReload(vmid, unit)
            if !all.contains(&ServiceAction::ContainerRestart(*vmid, unit.clone())) =>
        {
            let vmid = vmid.to_string();
            host.check(
                "pct",
                &["exec", &vmid, "--", "systemctl", "reload-or-restart", unit],
            )?;
        }
        _ => {}
    }
    Ok(())
}
