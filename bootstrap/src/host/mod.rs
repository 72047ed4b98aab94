//! The Proxmox host itself: running commands on it ([`Runner`]), installing the rendered files
//! and restarting only what they changed ([`services`]), provisioning the lb and vpn containers
//! ([`containers`]), starting the VMs ([`guests`]) and bootstrapping etcd ([`etcd`]). [`apply`] runs them in order.

pub mod actions;
pub mod apply;
pub mod containers;
pub mod destroy;
pub mod etcd;
pub mod guests;
pub mod manifest;
pub mod plan;
pub mod services;

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
pub enum HostError {
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// Runs commands on the Proxmox host; tests substitute a recording one.
pub trait Runner {
    fn run(&mut self, program: &str, args: &[&str]) -> Result<Output, HostError>;

    /// Whether `program` can be run at all (talosctl is optional).
    fn has(&mut self, program: &str) -> bool;

    /// [`Runner::run`], failing unless the command succeeded.
    fn check(&mut self, program: &str, args: &[&str]) -> Result<Output, HostError> {
        let output = self.run(program, args)?;
        if output.success {
            Ok(output)
        } else {
            Err(HostError::Failed {
                command: command_line(program, args),
                stderr: output.stderr.trim().to_owned(),
            })
        }
    }
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
    fn run(&mut self, program: &str, args: &[&str]) -> Result<Output, HostError> {
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
            .map_err(|source| HostError::Spawn {
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
