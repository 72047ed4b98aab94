//! What has to happen after files changed (reloads, restarts), kept in the state directory
//! until it has happened: files are written before the services follow them, so an apply
//! killed in between would otherwise leave new files that nothing ever picks up.

use crate::state_dir::StateDir;
use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// In the order they run: the host's daemon-reload before its restarts, a container's
/// daemon-reload before its restart, a restart making a reload of the same unit moot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceAction {
    /// `systemctl daemon-reload` on the host, after one of its units changed.
    DaemonReload,
    /// `sysctl -p` of the file at this path on the host.
    SysctlLoad(String),
    /// `systemctl enable` and `restart` of this unit on the host.
    Restart(String),
    /// `systemctl daemon-reload` inside container VMID, after one of its units changed.
    ContainerDaemonReload(u32),
    /// `systemctl enable` and `restart` of the unit inside container VMID.
    ContainerRestart(u32, String),
    /// `systemctl reload-or-restart` of the unit inside container VMID.
    ContainerReload(u32, String),
}

impl ServiceAction {
    /// Whether it runs inside a container (after the containers' files are pushed) rather than
    /// on the host (after the host's files are written).
    pub fn in_container(&self) -> bool {
        matches!(
            self,
            ServiceAction::ContainerDaemonReload(_)
                | ServiceAction::ContainerRestart(..)
                | ServiceAction::ContainerReload(..)
        )
    }

    /// Whether another action of `all` does what this one would: a restart of the same unit
    /// makes its reload moot.
    pub fn is_moot(&self, all: &BTreeSet<ServiceAction>) -> bool {
        match self {
            ServiceAction::ContainerReload(vmid, unit) => {
                all.contains(&ServiceAction::ContainerRestart(*vmid, unit.clone()))
            }
            _ => false,
        }
    }
}

impl fmt::Display for ServiceAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceAction::DaemonReload => write!(f, "daemon-reload"),
            ServiceAction::SysctlLoad(file) => write!(f, "sysctl {file}"),
            ServiceAction::Restart(unit) => write!(f, "restart {unit}"),
            ServiceAction::ContainerDaemonReload(vmid) => write!(f, "ct-daemon-reload {vmid}"),
            ServiceAction::ContainerRestart(vmid, unit) => write!(f, "ct-restart {vmid} {unit}"),
            ServiceAction::ContainerReload(vmid, unit) => write!(f, "ct-reload {vmid} {unit}"),
        }
    }
}

impl FromStr for ServiceAction {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let vmid = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("bad VMID in `{line}`"))
        };
        Ok(match words.as_slice() {
            ["daemon-reload"] => ServiceAction::DaemonReload,
            ["sysctl", file] => ServiceAction::SysctlLoad((*file).to_owned()),
            ["restart", unit] => ServiceAction::Restart((*unit).to_owned()),
            ["ct-daemon-reload", id] => ServiceAction::ContainerDaemonReload(vmid(id)?),
            ["ct-restart", id, unit] => {
                ServiceAction::ContainerRestart(vmid(id)?, (*unit).to_owned())
            }
            ["ct-reload", id, unit] => {
                ServiceAction::ContainerReload(vmid(id)?, (*unit).to_owned())
            }
            _ => return Err(format!("unknown action `{line}`")),
        })
    }
}

/// Why the actions still due could not be read or recorded.
#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    /// Reading, writing or removing the record failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The record, in the state directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line of the record names no action this version knows.
    #[error("{}: {reason}", path.display())]
    Parse {
        /// The record, in the state directory.
        path: PathBuf,
        /// The line, and what is wrong with it (unknown action, bad VMID).
        reason: String,
    },
}

/// The actions an earlier, interrupted apply left to do.
pub fn load(state: &StateDir) -> Result<BTreeSet<ServiceAction>, PendingError> {
    let path = state.pending_actions();
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                l.parse().map_err(|reason| PendingError::Parse {
                    path: path.clone(),
                    reason,
                })
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(source) => Err(PendingError::Io { path, source }),
    }
}

/// Records `actions` as still to do (an empty set removes the record).
pub fn save(state: &StateDir, actions: &BTreeSet<ServiceAction>) -> Result<(), PendingError> {
    let path = state.pending_actions();
    let io = |source| PendingError::Io {
        path: path.clone(),
        source,
    };
    if actions.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        };
    }
    let text: String = actions.iter().map(|a| format!("{a}\n")).collect();
    lab_daemon::files::write_atomic(&path, text.as_bytes(), 0o600).map_err(io)
}
