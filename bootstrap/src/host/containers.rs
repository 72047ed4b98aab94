//! The lb and vpn containers' programs: the binary, its config and its unit pushed in with
//! `pct push`, only those whose SHA-256 inside the container differs; then the service reloaded
//! when only its config changed, restarted when its binary or unit did. Debian packages a program
//! needs at run time (lab-vpn's `nft`) are installed first, only when missing.
//!
//! A daemon's config goes in beside the old one and replaces it only once the daemon's own
//! `check`, run inside the container by the binary being installed, accepts it; after a reload or
//! restart the unit's state and status (the daemon's `STATUS=`) say whether it took the config.
//! Either refusal stops apply with the daemon's words, so apply never reports success over a
//! config the daemon is not running.

use super::actions::ServiceAction;
use super::{CommandError, Runner};
use crate::model::{Lab, Role};
use crate::render::containers::{
    lb_cert_files, staged_in, LB_BINARY, LB_CONFIG, LB_ROUTES_DROPIN, LB_UNIT, VPN_BINARY,
    VPN_CONFIG, VPN_GUARD_UNIT, VPN_PRIVATE_KEY, VPN_ROUTES_DROPIN, VPN_UNIT,
};
use crate::render::files::{under_root, WriteError};
use crate::render::keepalived;
use crate::render::observability::{self, JOURNAL_UPLOAD_DROPIN, JOURNAL_UPLOAD_UNIT};
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
    /// systemd-journal-upload's drop-in: pushing it reloads systemd and restarts the uploader,
    /// not the program.
    JournalUpload,
    /// A pair's keepalived config or drop-in: pushing it reloads systemd and restarts
    /// keepalived, not the program.
    Keepalived,
}

/// A file to have inside a container: where it comes from on the host and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFile {
    /// Where it is on the host: the binary in `--binaries`, the others staged under `--root`.
    pub source: PathBuf,
    /// Its path inside the container.
    pub target: String,
    /// Its permissions inside the container.
    pub mode: u32,
    /// What it is to the program.
    pub kind: FileKind,
    /// The program (its path inside the container) whose `check` must accept this file before
    /// it replaces the one there: set for the daemon's config, whose refusal the daemon would
    /// otherwise only log while it keeps running the old one.
    pub checked_by: Option<&'static str>,
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

/// systemd-journal-upload, which sends the containers' and the host's journals to the
/// manager (`render::observability`); not on the PATH, so probed by its path (`command -v`
/// takes one).
pub const JOURNAL_UPLOAD: Package = Package {
    command: "/lib/systemd/systemd-journal-upload",
    name: "systemd-journal-remote",
};

/// keepalived, holding a pair's addresses (`render::keepalived`).
const KEEPALIVED: Package = Package {
    command: "keepalived",
    name: keepalived::PACKAGE,
};

/// keepalived's check of the daemon asks its metrics listener with curl.
const CURL: Package = Package {
    command: "curl",
    name: "curl",
};

/// Debian's keepalived unit, which [`keepalived::DROPIN`] amends.
pub const KEEPALIVED_UNIT: &str = "keepalived.service";

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
    /// The files it must hold, in the order they are pushed: the binary, what its config names
    /// (keys), its units, and its config last.
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
    /// A file the containers' list depends on (an https route's certificate) cannot be read.
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    /// lab.toml has no machine of this role (`lb` or `vpn`).
    #[error("the lab has no {0} container; run `lab-bootstrap validate`")]
    Missing(&'static str),
    /// The daemon's `check` refused a config pushed beside the one in place: that one stays,
    /// nothing is reloaded.
    #[error("container {container}: `{program} check` refused the new {target} (pushed as {staged}), which was removed; the old one stays in place and nothing was reloaded:\n{message}")]
    Refused {
        /// The container's name in lab.toml.
        container: String,
        /// The checking program, as run inside the container.
        program: String,
        /// The config's path inside the container.
        target: String,
        /// Where the new config was pushed beside it, and what the daemon's messages name.
        staged: String,
        /// What `check` printed on standard error (on standard output when that was empty),
        /// each line indented.
        message: String,
    },
    /// After a reload or restart, the unit is not running, or says it refused its config.
    #[error("container {vmid}: {unit} did not take its new configuration: state {state}, status: {status}")]
    NotTaken {
        /// The container's VMID.
        vmid: u32,
        /// The unit.
        unit: String,
        /// Its `ActiveState` (`active`, `failed`, …).
        state: String,
        /// Its `StatusText`: what the daemon last said with `STATUS=`.
        status: String,
    },
    /// After a reload, the daemon's status stayed what it was before: it has not reported on
    /// the reload (or runs a build that does not count reloads in its status).
    #[error("container {vmid}: {unit} did not report on its reload within 10s; its status is still: {status}")]
    NoAnswer {
        /// The container's VMID.
        vmid: u32,
        /// The unit.
        unit: String,
        /// Its `StatusText`, unchanged since before the reload.
        status: String,
    },
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
    let staged = |container: &str, path: &str| under_root(root, &staged_in(container, path));
    // The https routes' certificates and keys, named by the lb's config.
    let lb_certs: Vec<(String, u32)> = lb_cert_files(lab)?
        .into_iter()
        .map(|(target, _, mode)| (target, mode))
        .collect();
    let mut out = Vec::new();
    for (role, unit, binary, program, config, named, packages) in [
        (
            Role::Lb,
            "lab-lb.service",
            LB_BINARY,
            "lab-lb",
            LB_CONFIG,
            lb_certs.clone(),
            vec![],
        ),
        (
            Role::Vpn,
            "lab-vpn.service",
            VPN_BINARY,
            "lab-vpn",
            VPN_CONFIG,
            vec![(VPN_PRIVATE_KEY.to_owned(), 0o600)],
            vec![NFTABLES],
        ),
    ] {
        let instances = lab.instances(role);
        if instances.is_empty() {
            return Err(ContainerError::Missing(role.as_str()));
        }
        for machine in &instances {
            let container = machine.name.as_str();
            let named = named.clone();
            let units: &[&'static str] = if role == Role::Lb {
                &[LB_UNIT, LB_ROUTES_DROPIN]
            } else {
                &[VPN_UNIT, VPN_ROUTES_DROPIN, VPN_GUARD_UNIT]
            };
            let mut files = vec![ContainerFile {
                source: binaries.join(program),
                target: binary.to_owned(),
                mode: 0o755,
                kind: FileKind::Binary,
                checked_by: None,
            }];
            // What the config names (the vpn's key, the lb's certificates and keys).
            for (path, mode) in named {
                files.push(ContainerFile {
                    source: staged(container, &path)?,
                    target: path,
                    mode,
                    kind: FileKind::Config,
                    checked_by: None,
                });
            }
            for &path in units {
                files.push(ContainerFile {
                    source: staged(container, path)?,
                    target: path.to_owned(),
                    mode: 0o644,
                    kind: FileKind::Unit,
                    checked_by: None,
                });
            }
            let mut packages = packages.clone();
            if lab.replicas(role).is_pair() {
                packages.extend([KEEPALIVED, CURL]);
                for path in [keepalived::DROPIN, keepalived::CONFIG] {
                    files.push(ContainerFile {
                        source: staged(container, path)?,
                        target: path.to_owned(),
                        mode: 0o644,
                        kind: FileKind::Keepalived,
                        checked_by: None,
                    });
                }
            }
            if observability::journal_sink(lab).is_some() {
                packages.push(JOURNAL_UPLOAD);
                files.push(ContainerFile {
                    source: staged(container, JOURNAL_UPLOAD_DROPIN)?,
                    target: JOURNAL_UPLOAD_DROPIN.to_owned(),
                    mode: 0o644,
                    kind: FileKind::JournalUpload,
                    checked_by: None,
                });
            }
            // Last, so that its check runs the binary being installed and finds what it names.
            files.push(ContainerFile {
                source: staged(container, config)?,
                target: config.to_owned(),
                mode: 0o644,
                kind: FileKind::Config,
                checked_by: Some(binary),
            });
            out.push(Container {
                vmid: machine.vmid,
                name: machine.name.to_string(),
                unit,
                packages,
                files,
            });
        }
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
    args.extend(container.files.iter().map(|f| f.target.as_str()));
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
    if any(FileKind::JournalUpload) {
        out.insert(ServiceAction::ContainerDaemonReload(container.vmid));
        out.insert(ServiceAction::ContainerRestart(
            container.vmid,
            JOURNAL_UPLOAD_UNIT.to_owned(),
        ));
    }
    if any(FileKind::Keepalived) {
        out.insert(ServiceAction::ContainerDaemonReload(container.vmid));
        out.insert(ServiceAction::ContainerRestart(
            container.vmid,
            KEEPALIVED_UNIT.to_owned(),
        ));
    }
    if pushed
        .iter()
        .all(|f| matches!(f.kind, FileKind::JournalUpload | FileKind::Keepalived))
    {
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

/// Where a checked config is pushed before its check: beside the one in place, so paths it
/// names relative to its directory resolve as they will once it replaces it.
pub fn staging_target(target: &str) -> String {
    format!("{target}.new")
}

/// Pushes `files` into container `name` (VMID `vmid`) in their order, making their directories
/// first. A checked config is pushed to [`staging_target`] and moved into place only if its
/// program's `check` accepts it, so [`containers`] lists it after the binary and what it names.
pub fn push(
    runner: &mut dyn Runner,
    name: &str,
    vmid: u32,
    files: &[ContainerFile],
) -> Result<(), ContainerError> {
    let vmid = vmid.to_string();
    let dirs: BTreeSet<&str> = files
        .iter()
        .filter_map(|f| Path::new(&f.target).parent()?.to_str())
        .collect();
    let mut mkdir = vec!["exec", vmid.as_str(), "--", "mkdir", "-p"];
    mkdir.extend(dirs);
    runner.check("pct", &mkdir)?;
    for file in files {
        let Some(program) = file.checked_by else {
            push_file(runner, &vmid, file, &file.target)?;
            continue;
        };
        let staged = staging_target(&file.target);
        push_file(runner, &vmid, file, &staged)?;
        let check = runner.run("pct", &["exec", &vmid, "--", program, "check", &staged])?;
        if !check.success {
            // The refused file must not linger where a later reload or a person could take it
            // for the config.
            runner.check("pct", &["exec", &vmid, "--", "rm", "-f", &staged])?;
            let said = if check.stderr.trim().is_empty() {
                &check.stdout
            } else {
                &check.stderr
            };
            return Err(ContainerError::Refused {
                container: name.to_owned(),
                program: program.to_owned(),
                target: file.target.clone(),
                staged,
                message: said
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| format!("  {l}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            });
        }
        runner.check(
            "pct",
            &["exec", &vmid, "--", "mv", "-f", &staged, &file.target],
        )?;
    }
    Ok(())
}

fn push_file(
    runner: &mut dyn Runner,
    vmid: &str,
    file: &ContainerFile,
    target: &str,
) -> Result<(), CommandError> {
    let source = file.source.to_string_lossy();
    let perms = format!("{:o}", file.mode);
    runner.check("pct", &["push", vmid, &source, target, "--perms", &perms])?;
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

/// How often, half a second apart, a unit still reloading or starting, or whose daemon has not
/// yet reported on a reload, is asked again before apply gives up on it.
const SETTLE_POLLS: u32 = 20;

/// Runs one container action ([`run`]); after a reload or restart of the daemon, its unit must
/// be active and its status (the daemon's last `STATUS=`) must not say the reload was refused.
/// `ExecReload` only sends SIGHUP, so systemd's reload ends before the daemon has reloaded: the
/// status must first change from the one before (lab-daemon counts reloads in it).
pub fn run_confirmed(
    runner: &mut dyn Runner,
    action: &ServiceAction,
) -> Result<(), ContainerError> {
    let (vmid, unit, before) = match action {
        ServiceAction::ContainerReload(vmid, unit) => {
            // A unit not running is started instead, which systemctl waits for: only a running
            // daemon's status must change.
            let (state, status) = unit_status(runner, *vmid, unit)?;
            (*vmid, unit, (state == "active").then_some(status))
        }
        // The uploader reports nothing with STATUS=, and retries while the manager is not up;
        // keepalived says nothing with STATUS= either.
        ServiceAction::ContainerRestart(_, unit)
            if unit == JOURNAL_UPLOAD_UNIT || unit == KEEPALIVED_UNIT =>
        {
            return Ok(run(runner, action)?)
        }
        ServiceAction::ContainerRestart(vmid, unit) => (*vmid, unit, None),
        _ => return Ok(run(runner, action)?),
    };
    run(runner, action)?;
    let mut polls = 0;
    loop {
        let (state, status) = unit_status(runner, vmid, unit)?;
        let settling = matches!(state.as_str(), "reloading" | "activating");
        let unanswered = state == "active" && before.as_ref() == Some(&status);
        if (settling || unanswered) && polls < SETTLE_POLLS {
            polls += 1;
            std::thread::sleep(std::time::Duration::from_millis(500));
            continue;
        }
        if unanswered {
            return Err(ContainerError::NoAnswer {
                vmid,
                unit: unit.clone(),
                status,
            });
        }
        if state == "active" && !status.starts_with(lab_daemon::notify::RELOAD_REFUSED) {
            return Ok(());
        }
        return Err(ContainerError::NotTaken {
            vmid,
            unit: unit.clone(),
            state,
            status,
        });
    }
}

/// The unit's `ActiveState` and `StatusText` inside container `vmid` (read-only).
fn unit_status(
    runner: &mut dyn Runner,
    vmid: u32,
    unit: &str,
) -> Result<(String, String), CommandError> {
    let id = vmid.to_string();
    let shown = runner.check(
        "pct",
        &[
            "exec",
            &id,
            "--",
            "systemctl",
            "show",
            "-p",
            "ActiveState,StatusText",
            unit,
        ],
    )?;
    Ok(parse_show(&shown.stdout))
}

/// `ActiveState` and `StatusText` from `systemctl show`'s `KEY=value` lines (in the unit's
/// order, not the asked one); missing ones empty.
fn parse_show(stdout: &str) -> (String, String) {
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    (value("ActiveState"), value("StatusText"))
}
