//! destroy's host side: the services apply started on the host stopped and disabled, the files
//! it wrote removed (only those still holding what it wrote, by the manifest), and the state
//! directory kept unless asked: it holds the Talos secrets and WireGuard keys, without which a
//! recreated cluster or VPN locks out everyone who had access. Asked, it deletes only a
//! directory carrying the marker lab-bootstrap wrote when it made it.

use super::manifest::{self, sha256_hex, ManifestError};
use super::{CommandError, Runner};
use crate::model::Lab;
use crate::render::files::{under_root, WriteError};
use crate::render::{daemons, dnsmasq, CONFIG_DIR, DHCP_NETWORKS, STATE_DIR};
use crate::state_dir::StateDir;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why destroy's host side failed.
#[derive(Debug, thiserror::Error)]
pub enum HostDestroyError {
    /// The manifest could not be read or emptied.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A path of the manifest does not fit under `--root`.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// systemctl could not be run, or its daemon-reload after units were removed failed.
    #[error(transparent)]
    Host(#[from] CommandError),
    /// Reading or removing a file, or deleting the state directory, failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file (under `--root`) or the state directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `--purge-state` names a directory without lab-bootstrap's marker; nothing was changed.
    #[error(
        "refusing to purge {}: it has no {} file, so lab-bootstrap did not make it as its state directory (is --state right?); nothing was changed. If it is the lab's state, delete it by hand",
        path.display(),
        crate::state_dir::STATE_MARKER
    )]
    NotStateDir {
        /// The directory `--state` names.
        path: PathBuf,
    },
}

/// `--purge-state` deletes a whole directory: only one lab-bootstrap marked as its own.
fn check_purge(options: &Options) -> Result<(), HostDestroyError> {
    let state = &options.state;
    if options.purge_state && state.path().symlink_metadata().is_ok() && !state.is_marked() {
        return Err(HostDestroyError::NotStateDir {
            path: state.path().to_owned(),
        });
    }
    Ok(())
}

/// What destroy's host side works on.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where `/` of the host is (tests use a temporary directory).
    pub root: PathBuf,
    /// The state directory, with the manifest of the files apply wrote.
    pub state: StateDir,
    /// Also delete the state directory (secrets, keys).
    pub purge_state: bool,
}

/// What a file in the manifest is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// Still what lab-bootstrap wrote: removed.
    Ours,
    /// Changed since: kept.
    Edited,
    /// No longer there: nothing to do.
    Gone,
}

/// Every file of the manifest and what destroy does with it (host paths).
pub fn files(options: &Options) -> Result<Vec<(PathBuf, FileState)>, HostDestroyError> {
    let mut out = Vec::new();
    for (path, sum) in manifest::load(&options.state)? {
        let target = under_root(&options.root, &path)?;
        let state = match std::fs::read(&target) {
            Ok(bytes) if sha256_hex(&bytes) == sum => FileState::Ours,
            Ok(_) => FileState::Edited,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileState::Gone,
            Err(source) => {
                return Err(HostDestroyError::Io {
                    path: target,
                    source,
                })
            }
        };
        out.push((path, state));
    }
    Ok(out)
}

/// The lines destroy's preview shows for the host; empty when there is nothing to do.
pub fn preview(options: &Options) -> Result<Vec<String>, HostDestroyError> {
    check_purge(options)?;
    let mut out = Vec::new();
    for (path, state) in files(options)? {
        match state {
            FileState::Ours => out.push(format!("  - file \"{}\"", path.display())),
            FileState::Edited => out.push(format!(
                "  # {} changed by hand since apply wrote it: kept",
                path.display()
            )),
            FileState::Gone => {}
        }
    }
    if options.purge_state && options.state.path().exists() {
        out.push(format!(
            "  - state directory \"{}\" (Talos secrets, WireGuard keys)",
            options.state.path().display()
        ));
    }
    Ok(out)
}

/// Units apply enables on the host, in the order they stop: the backup timer (nothing to
/// back up once the rest goes), DHCP, then the network.
fn units(lab: &Lab) -> Vec<String> {
    let mut out = vec![crate::render::backup::TIMER_UNIT.to_owned()];
    out.extend(
        DHCP_NETWORKS
            .iter()
            .map(|id| dnsmasq::instance(&lab.networks.get(*id).bridge)),
    );
    out.push(daemons::NETWORK_UNIT.to_owned());
    out
}

/// Stops what apply started on the host and removes what it wrote; returns how many things
/// it changed (0: nothing of ours was there).
pub fn destroy(
    host: &mut dyn Runner,
    lab: &Lab,
    options: &Options,
    out: &mut dyn Write,
) -> Result<usize, HostDestroyError> {
    check_purge(options)?;
    let files = files(options)?;
    let mut done = 0;
    if !files.is_empty() {
        for unit in units(lab) {
            // A unit already gone or never started is no failure: what matters is it not running.
            let result = host.run("systemctl", &["disable", "--now", &unit])?;
            if result.success {
                let _ = writeln!(out, "  stopped and disabled {unit}");
                done += 1;
            } else {
                let _ = writeln!(out, "  {unit}: {}", result.stderr.trim());
            }
        }
    }
    let mut units_removed = false;
    for (path, state) in &files {
        let target = under_root(&options.root, path)?;
        match state {
            FileState::Ours => {
                std::fs::remove_file(&target).map_err(|source| HostDestroyError::Io {
                    path: target.clone(),
                    source,
                })?;
                let _ = writeln!(out, "  removed {}", path.display());
                done += 1;
                units_removed |= path.starts_with("/etc/systemd");
                prune(&options.root, &target)?;
            }
            FileState::Edited => {
                let _ = writeln!(
                    out,
                    "  kept {}: changed by hand since apply wrote it",
                    path.display()
                );
            }
            FileState::Gone => {}
        }
    }
    if units_removed {
        host.check("systemctl", &["daemon-reload"])?;
    }
    // Every file is dealt with: removed, or no longer ours.
    manifest::save(&options.state, &Default::default())?;
    if options.purge_state {
        match std::fs::remove_dir_all(options.state.path()) {
            Ok(()) => {
                let _ = writeln!(
                    out,
                    "  removed {} (Talos secrets, WireGuard keys): a cluster or VPN made again gets new ones",
                    options.state.path().display()
                );
                done += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(HostDestroyError::Io {
                    path: options.state.path().to_owned(),
                    source,
                })
            }
        }
    } else if options.state.path().exists() {
        let _ = writeln!(
            out,
            "  kept {}: the Talos secrets and WireGuard keys; --purge-state deletes them, and with them access to a cluster made from them again",
            options.state.path().display()
        );
    }
    Ok(done)
}

/// Removes the directories left empty under the lab's own directories, never above them.
fn prune(root: &Path, removed: &Path) -> Result<(), HostDestroyError> {
    let owned = [CONFIG_DIR, STATE_DIR]
        .iter()
        .map(|dir| under_root(root, Path::new(dir)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut dir = removed.parent();
    while let Some(current) = dir {
        let Some(top) = owned.iter().find(|top| current.starts_with(top)) else {
            break;
        };
        let empty = std::fs::read_dir(current).is_ok_and(|mut it| it.next().is_none());
        if !empty || std::fs::remove_dir(current).is_err() {
            break;
        }
        if current == top {
            break;
        }
        dir = current.parent();
    }
    Ok(())
}
