//! The host's daily backup: `lab-backup.timer` starting `lab-backup.service`, which runs
//! `lab-bootstrap backup` with the lab.toml, state directory and lab-bootstrap that apply was
//! run with (the archive directory and retention are lab.toml's `[backup]`).

use super::RenderedFile;
use std::path::{Path, PathBuf};

/// Where the service is installed.
pub const SERVICE_PATH: &str = "/etc/systemd/system/lab-backup.service";
/// Where the timer is installed.
pub const TIMER_PATH: &str = "/etc/systemd/system/lab-backup.timer";
/// The timer's unit name, as systemctl takes it: apply enables and starts it.
pub const TIMER_UNIT: &str = "lab-backup.timer";

/// What the daily backup runs: absolute paths, as the unit runs from `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupJob {
    /// lab-bootstrap itself.
    pub program: PathBuf,
    /// The lab.toml.
    pub lab_file: PathBuf,
    /// The state directory.
    pub state: PathBuf,
}

/// A path as an argument of `ExecStart=`: quoted, with systemd's specifiers and quotes escaped.
fn argument(path: &Path) -> String {
    let text = path
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    format!("\"{text}\"")
}

/// `lab-backup.service` and `lab-backup.timer`.
pub fn files(job: &BackupJob) -> Vec<RenderedFile> {
    let service = format!(
        r#"# Written by lab-bootstrap: an etcd snapshot and lab-bootstrap's state directory in one archive.
[Unit]
Description=lab backup (etcd snapshot and lab-bootstrap's state directory)
Documentation=man:systemd.timer(5)
After=network-online.target {network}
Wants=network-online.target

[Service]
Type=oneshot
ExecStart={program} backup --state {state} {lab_file}
# The archives hold the cluster's secrets: nothing it makes is for anyone else.
UMask=0077
Nice=10
IOSchedulingClass=idle
NoNewPrivileges=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
"#,
        network = super::daemons::NETWORK_UNIT,
        program = argument(&job.program),
        state = argument(&job.state),
        lab_file = argument(&job.lab_file),
    );
    let timer = r#"# Written by lab-bootstrap: runs lab-backup.service once a day.
[Unit]
Description=daily lab backup

[Timer]
OnCalendar=daily
# A day missed while the host was off is caught up at boot.
Persistent=true
# Not every lab on the same minute after midnight.
RandomizedDelaySec=1h

[Install]
WantedBy=timers.target
"#;
    vec![
        RenderedFile {
            path: PathBuf::from(SERVICE_PATH),
            contents: service,
            mode: 0o644,
        },
        RenderedFile {
            path: PathBuf::from(TIMER_PATH),
            contents: timer.to_owned(),
            mode: 0o644,
        },
    ]
}
