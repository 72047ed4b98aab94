//! `[backup]`: where `lab-bootstrap backup` keeps its archives, and how many it keeps.

use super::Lab;
use lab_daemon::Issues;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where the archives go unless `[backup] dir` says otherwise.
pub const DEFAULT_BACKUP_DIR: &str = "/var/lib/lab-bootstrap-backups";

/// `[backup]`: the directory of the archives (0700) and how many of this lab's newest are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// The directory the archives are written to; [`DEFAULT_BACKUP_DIR`] when unset.
    #[serde(default = "Backup::default_dir")]
    pub dir: PathBuf,
    /// How many of this lab's archives are kept: older ones are removed after a successful
    /// backup, never before; 7 when unset.
    #[serde(default = "Backup::default_keep")]
    pub keep: u32,
    /// A Proxmox storage allowing `backup`: with it, apply keeps a vzdump job (`/cluster/backup`)
    /// for the manager VM and the lb and vpn containers, keeping `keep` dumps of each. No job
    /// when unset: a dump of the manager is as large as its disk, and only the user knows which
    /// storage can take that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vzdump_storage: Option<String>,
    /// When the vzdump job runs, a Proxmox calendar event; [`Backup::DEFAULT_VZDUMP_SCHEDULE`]
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vzdump_schedule: Option<String>,
}

impl Backup {
    /// A week of daily backups.
    pub const DEFAULT_KEEP: u32 = 7;
    /// After `lab-backup.timer`'s daily run (midnight, up to an hour late), so the two never
    /// compete for the disk.
    pub const DEFAULT_VZDUMP_SCHEDULE: &'static str = "02:00";

    /// `vzdump_schedule`, or its default.
    pub fn vzdump_schedule(&self) -> &str {
        self.vzdump_schedule
            .as_deref()
            .unwrap_or(Self::DEFAULT_VZDUMP_SCHEDULE)
    }

    fn default_dir() -> PathBuf {
        PathBuf::from(DEFAULT_BACKUP_DIR)
    }

    fn default_keep() -> u32 {
        Self::DEFAULT_KEEP
    }
}

impl Default for Backup {
    fn default() -> Self {
        Self {
            dir: Self::default_dir(),
            keep: Self::DEFAULT_KEEP,
            vzdump_storage: None,
            vzdump_schedule: None,
        }
    }
}

impl Lab {
    pub(super) fn validate_backup(&self, issues: &mut Issues) {
        if self.backup.keep == 0 {
            issues.add(
                "backup.keep",
                "must be at least 1: with 0 every backup would be removed as soon as it is made",
            );
        }
        if !self.backup.dir.is_absolute() {
            issues.add(
                "backup.dir",
                format!(
                    "`{}` is not an absolute path: the daily timer runs from `/`",
                    self.backup.dir.display()
                ),
            );
        }
        if let Some(storage) = &self.backup.vzdump_storage {
            if !super::names::is_pve_storage_id(storage) {
                issues.add(
                    "backup.vzdump_storage",
                    format!("`{storage}` is not a Proxmox storage ID"),
                );
            }
        }
        // What Proxmox's calendar events are made of; the node parses the rest.
        let schedule = self.backup.vzdump_schedule();
        let plain = schedule
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " :,.-*/~".contains(c));
        if schedule.trim().is_empty() || !plain {
            issues.add(
                "backup.vzdump_schedule",
                format!(
                    "`{schedule}` is not a Proxmox calendar event like \"daily\" or \"sat 02:00\""
                ),
            );
        }
    }
}
