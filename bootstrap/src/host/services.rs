//! The host's files and the services that read them: which units to reload or restart follows
//! from which files a write would change, decided before anything is written.

use super::actions::ServiceAction;
use super::{CommandError, Runner};
use crate::model::Lab;
use crate::render::backup::{self, BackupJob};
use crate::render::state::StateError;
use crate::render::{
    daemons, dnsmasq, nftables, observability, sysctl, RenderedFile, DHCP_NETWORKS,
};
use crate::state_dir::StateDir;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Every file apply installs on the host (the state directory's own files aside), making the
/// secrets they need when there are none yet.
pub fn files(
    lab: &Lab,
    state: &StateDir,
    backup: &BackupJob,
) -> Result<Vec<RenderedFile>, StateError> {
    let mut files = crate::render::host_files(lab)?;
    files.extend(crate::render::backup::files(backup));
    files.extend(crate::render::state::host_files(lab, state)?);
    Ok(files)
}

/// Whether `target` holds something else than `file` (contents or mode).
pub fn differs(target: &Path, file: &RenderedFile) -> bool {
    let same = std::fs::read(target).is_ok_and(|old| old == file.contents.as_bytes())
        && std::fs::metadata(target).is_ok_and(|m| m.permissions().mode() & 0o7777 == file.mode);
    !same
}

/// What the host must do once `changed` (host paths) are written.
pub fn actions_for(lab: &Lab, changed: &BTreeSet<PathBuf>) -> BTreeSet<ServiceAction> {
    let is = |path: &str| changed.contains(Path::new(path));
    let mut actions = BTreeSet::new();
    let dnsmasq_unit = is(daemons::DNSMASQ_UNIT_PATH);
    let network_unit = is(daemons::NETWORK_UNIT_PATH);
    if dnsmasq_unit || network_unit {
        actions.insert(ServiceAction::DaemonReload);
    }
    for id in DHCP_NETWORKS {
        let bridge = &lab.networks.get(id).bridge;
        if dnsmasq_unit || changed.contains(&dnsmasq::config_path(bridge)) {
            actions.insert(ServiceAction::Restart(dnsmasq::instance(bridge)));
        }
    }
    if network_unit || is(nftables::PATH) {
        actions.insert(ServiceAction::Restart(daemons::NETWORK_UNIT.to_owned()));
    }
    for (dropin, unit) in [
        (
            observability::NODE_EXPORTER_DROPIN,
            observability::NODE_EXPORTER_UNIT,
        ),
        (
            observability::JOURNAL_UPLOAD_DROPIN,
            observability::JOURNAL_UPLOAD_UNIT,
        ),
    ] {
        if is(dropin) {
            actions.insert(ServiceAction::DaemonReload);
            actions.insert(ServiceAction::Restart(unit.to_owned()));
        }
    }
    if is(backup::SERVICE_PATH) || is(backup::TIMER_PATH) {
        actions.insert(ServiceAction::DaemonReload);
        actions.insert(ServiceAction::Restart(backup::TIMER_UNIT.to_owned()));
    }
    if is(sysctl::PATH) {
        actions.insert(ServiceAction::SysctlLoad(sysctl::PATH.to_owned()));
    }
    actions
}

/// Runs one host action (container actions are [`super::containers::run`]'s).
pub fn run(host: &mut dyn Runner, action: &ServiceAction) -> Result<(), CommandError> {
    match action {
        ServiceAction::DaemonReload => {
            host.check("systemctl", &["daemon-reload"])?;
        }
        ServiceAction::SysctlLoad(file) => {
            host.check("sysctl", &["-p", file])?;
        }
        ServiceAction::Restart(unit) => {
            host.check("systemctl", &["enable", unit])?;
            host.check("systemctl", &["restart", unit])?;
        }
        _ => {}
    }
    Ok(())
}
