//! The Proxmox host itself: running commands on it ([`Runner`]). [`plan`] decides, reading
//! only, what apply does there: the rendered files to write and the services to reload or
//! restart after them ([`services`]), the packages its units run ([`packages`]), the VMs to start ([`guests`]), what the lb and vpn
//! containers need ([`containers`]). [`apply`] carries out that plan, then bootstraps etcd
//! ([`etcd`]), waits for the cluster and writes its kubeconfig ([`cluster`]); [`destroy`] takes it
//! all away again. On a cluster, [`node_router`] runs each guest's `pct` and `qm` on its node.

pub mod actions;
pub mod apply;
pub mod cluster;
pub mod containers;
pub mod destroy;
pub mod etcd;
pub mod guests;
pub mod manifest;
pub mod node_router;
pub mod packages;
pub mod plan;
pub mod services;

use crate::render::files::WriteError;
use crate::render::state::StateError;
use actions::PendingError;
use containers::ContainerError;
use manifest::ManifestError;
use std::path::PathBuf;
use std::process::Command;

/// What a command printed and whether it succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its standard output (invalid UTF-8 replaced).
    pub stdout: String,
    /// Its standard error (invalid UTF-8 replaced).
    pub stderr: String,
}

/// Why a command on the host could not be run, or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started at all (not found, not executable).
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line, program and arguments.
        command: String,
        /// What starting it failed with.
        source: std::io::Error,
    },
    /// It ran but did not succeed, where [`Runner::check`] needed it to.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// The command line, program and arguments.
        command: String,
        /// What it printed on standard error, trimmed.
        stderr: String,
    },
    /// A node of the cluster holding some of the lab's guests does not answer SSH as root.
    #[error("node {node} ({address}) cannot be reached with `ssh root@{address}`: {stderr} (its guests' pct and qm commands run there; the cluster's nodes trust each other's root key through /etc/pve/priv/authorized_keys, so run lab-bootstrap as root on the router node, with the node up)")]
    Unreachable {
        /// The node's name (`[[node]] name`).
        node: String,
        /// Its management address (`[[node]] address`).
        address: std::net::Ipv4Addr,
        /// What ssh printed on standard error, trimmed.
        stderr: String,
    },
}

/// Why the host's side of plan or apply failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Rendering the files, or reading or making the secrets and keys they need, failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A host file could not be written, or its path does not fit under `--root`.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The record of the reloads and restarts still due could not be read or saved.
    #[error(transparent)]
    Pending(#[from] PendingError),
    /// A command on the host could not be run, or failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Finding the lb or vpn container, reading a file to push into it, or installing its
    /// packages failed.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// `apt-get update` or `apt-get install` failed on the host.
    #[error("installing {packages} on the host failed: {reason} (the host needs a working apt source and a route to it)")]
    HostInstall {
        /// The packages being installed, space-separated.
        packages: String,
        /// The failed command and what it printed on standard error.
        reason: String,
    },
    /// Bootstrapping etcd, waiting for the cluster or fetching its kubeconfig failed.
    #[error("{0}\nthe host and guests are applied: `lab-bootstrap apply` again goes on from here (it writes nothing else), `--no-wait` skips the wait")]
    Cluster(#[from] crate::talos::cluster::ClusterError),
    /// The manifest of the files apply wrote could not be read or saved.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A file the plan writes is not among those apply renders (lab.toml no longer renders
    /// it). Holds the file's path as the plan names it.
    #[error("{}: the plan writes it, but lab.toml no longer renders it; run apply again", .0.display())]
    NotRendered(PathBuf),
}

/// Runs commands on the Proxmox host; tests substitute a recording one.
pub trait Runner {
    /// Runs `program` with `args` and returns what it printed, whether it succeeded or not;
    /// fails only when it cannot be run.
    fn run(&mut self, program: &str, args: &[&str]) -> Result<Output, CommandError>;

    /// [`Runner::run`], failing unless the command succeeded.
    fn check(&mut self, program: &str, args: &[&str]) -> Result<Output, CommandError> {
        let output = self.run(program, args)?;
        if output.success {
            Ok(output)
        } else {
            Err(CommandError::Failed {
                command: command_line(program, args),
                stderr: output.stderr.trim().to_owned(),
            })
        }
    }
}

/// Whether guest `vmid` runs (`program` is `qm` for VMs, `pct` for containers); one that does
/// not exist yet (Proxmox creates it first) does not.
pub fn guest_running(
    runner: &mut dyn Runner,
    program: &str,
    vmid: u32,
) -> Result<bool, CommandError> {
    let status = runner.run(program, &["status", &vmid.to_string()])?;
    Ok(status.success && status.stdout.contains("status: running"))
}

/// `program` and `args` as one line, the way errors and printed hints show a command.
pub fn command_line(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The real host: commands run as they are, or through `via` (`via program args…`), which
/// lets end-to-end tests stand in for systemctl and pct the way the pvesh shim stands in for
/// pvesh.
#[derive(Debug, Default)]
pub struct System {
    /// The stand-in every command goes through; `None` runs them directly.
    pub via: Option<PathBuf>,
}

impl Runner for System {
    fn run(&mut self, program: &str, args: &[&str]) -> Result<Output, CommandError> {
        let mut command = match &self.via {
            Some(via) => {
                let mut c = Command::new(via);
                c.arg(program);
                c
            }
            None => Command::new(program),
        };
        let output = command
            .args(args)
            .output()
            .map_err(|source| CommandError::Spawn {
                command: command_line(program, args),
                source,
            })?;
        Ok(Output {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
