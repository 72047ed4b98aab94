//! The Proxmox host itself: running commands on it ([`Runner`]). [`plan`] decides, reading
//! only, what apply does there: the rendered files to write and the services to reload or
//! restart after them ([`services`]), the VMs to start ([`guests`]), what the lb and vpn
//! containers need ([`containers`]). [`apply`] carries out that plan, then bootstraps etcd
//! ([`etcd`]); [`destroy`] takes it all away again.

pub mod actions;
pub mod apply;
pub mod containers;
pub mod destroy;
pub mod etcd;
pub mod guests;
pub mod manifest;
pub mod plan;
pub mod services;

use crate::render::files::WriteError;
use crate::render::state::StateError;
use actions::PendingError;
use containers::ContainerError;
use manifest::ManifestError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a command printed and whether it succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// Why the host's side of plan or apply failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Pending(#[from] PendingError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{}: the plan writes it, but lab.toml no longer renders it; run apply again", .0.display())]
    NotRendered(PathBuf),
}

/// Runs commands on the Proxmox host; tests substitute a recording one.
pub trait Runner {
    fn run(&mut self, program: &str, args: &[&str]) -> Result<Output, CommandError>;

    /// Whether `program` can be run at all (talosctl is optional).
    fn has(&mut self, program: &str) -> bool;

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

    fn has(&mut self, program: &str) -> bool {
        if self.via.is_some() {
            // The stand-in decides: it answers `--has PROGRAM` with success or failure.
            return self.run("--has", &[program]).is_ok_and(|o| o.success);
        }
        std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
        })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
