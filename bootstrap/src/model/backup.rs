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
}

impl Backup {
    /// A week of daily backups.
    pub const DEFAULT_KEEP: u32 = 7;

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
    }
}
