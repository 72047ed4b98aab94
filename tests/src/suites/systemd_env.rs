//! What a daemon does with the environment systemd gives it: `WATCHDOG_USEC` and
//! `JOURNAL_STREAM`.

use crate::netns::Netns;
use crate::{DaemonProcess, NotifySocket};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use toml_edit::DocumentMut;

/// How a daemon is set up for these checks: its config for a directory, and whether it needs a
/// namespace of its own.
pub struct Setup<'a> {
    /// The daemon's binary.
    pub bin: &'a str,
    /// The daemon's config to run on loopback, given the directory it will be written to.
    pub config: &'a dyn Fn(&Path) -> DocumentMut,
    /// Run the daemon (and every client) in a namespace of its own.
    pub in_netns: bool,
}

/// A config written to a fresh directory, and the namespace to run in.
pub(crate) struct Prepared {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) path: std::path::PathBuf,
    pub(crate) netns: Option<Netns>,
}

pub(crate) fn prepare(setup: &Setup<'_>) -> Prepared {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("daemon.toml");
    let config = (setup.config)(dir.path());
    std::fs::write(&path, config.to_string()).unwrap_or_else(|e| panic!("{e}"));
    Prepared {
        dir,
        path,
        netns: setup.in_netns.then(|| Netns::new("daemon")),
    }
}

/// Starts the daemon with `env` added and waits for `READY=1`.
pub(crate) fn start_ready(
    setup: &Setup<'_>,
    prepared: &Prepared,
    env: &[(&str, &str)],
) -> (DaemonProcess, NotifySocket) {
    let mut notify = NotifySocket::new();
    let mut command = DaemonProcess::command_in(
        prepared.netns.as_ref(),
        setup.bin,
        &prepared.path,
        notify.path(),
    );
    command.envs(env.iter().copied());
    let daemon = DaemonProcess::spawn(command);
    notify.expect(&["READY=1"], Duration::from_secs(20));
    (daemon, notify)
}

/// With `WATCHDOG_USEC` set (as `WatchdogSec=` does), `WATCHDOG=1` keeps arriving.
pub fn watchdog_is_fed(setup: &Setup<'_>) {
    let prepared = prepare(setup);
    let (daemon, mut notify) = start_ready(setup, &prepared, &[("WATCHDOG_USEC", "400000")]);
    for _ in 0..3 {
        notify.expect(&["WATCHDOG=1"], Duration::from_secs(2));
    }
    drop(daemon);
}

/// A watchdog meant for another process (`WATCHDOG_PID` not ours) is left alone.
pub fn watchdog_of_another_process_is_ignored(setup: &Setup<'_>) {
    let prepared = prepare(setup);
    let (daemon, mut notify) = start_ready(
        setup,
        &prepared,
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
    );
    std::thread::sleep(Duration::from_millis(600));
    notify.drain();
    assert!(
        !notify
            .received
            .iter()
            .any(|m| m.lines().any(|l| l == "WATCHDOG=1")),
        "pinged a watchdog set for PID 1: {:?}",
        notify.received
    );
    drop(daemon);
}

/// Under journald (stderr is the stream `JOURNAL_STREAM` names) lines carry no timestamp;
/// elsewhere they do.
pub fn no_timestamps_under_journald(setup: &Setup<'_>) {
    let prepared = prepare(setup);
    for journald in [true, false] {
        let log_path = prepared.dir.path().join(format!("stderr-{journald}.log"));
        let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("{e}"));
        let meta = log.metadata().unwrap_or_else(|e| panic!("{e}"));
        let mut notify = NotifySocket::new();
        let mut command = DaemonProcess::command_in(
            prepared.netns.as_ref(),
            setup.bin,
            &prepared.path,
            notify.path(),
        );
        if journald {
            command.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        command.stderr(Stdio::from(log));
        let daemon = DaemonProcess::spawn(command);
        notify.expect(&["READY=1"], Duration::from_secs(20));
        drop(daemon);
        let text = std::fs::read_to_string(&log_path).unwrap_or_else(|e| panic!("{e}"));
        let started = text
            .lines()
            .find(|l| l.contains("started"))
            .unwrap_or_else(|| panic!("no start-up line in:\n{text}"));
        let starts_with_time = started.starts_with(|c: char| c.is_ascii_digit());
        assert_eq!(
            starts_with_time, !journald,
            "journald={journald}, but the line reads: {started}"
        );
        assert!(started.contains("INFO"), "{started}");
        assert!(
            !started.contains('\u{1b}'),
            "colour codes in a log file: {started:?}"
        );
    }
}
