//! A daemon binary run as a child process, its stderr captured line by line.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running daemon; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct DaemonProcess {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl DaemonProcess {
    /// Starts `bin run --config <config>` with `NOTIFY_SOCKET` pointing at `notify_socket`.
    pub fn start(bin: &str, config: &Path, notify_socket: &Path) -> Self {
        Self::spawn(Self::command(bin, config, notify_socket))
    }

    /// The command [`start`](Self::start) runs, for tests that add to its environment or
    /// redirect its stderr before [`spawn`](Self::spawn)ing it.
    pub fn command(bin: &str, config: &Path, notify_socket: &Path) -> Command {
        Self::command_in(None, bin, config, notify_socket)
    }

    /// [`command`](Self::command), inside `netns` when given (`ip netns exec` execs the
    /// daemon, so signals reach it directly).
    pub fn command_in(
        netns: Option<&crate::netns::Netns>,
        bin: &str,
        config: &Path,
        notify_socket: &Path,
    ) -> Command {
        let mut command = match netns {
            Some(netns) => netns.command(bin),
            None => Command::new(bin),
        };
        command
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("NOTIFY_SOCKET", notify_socket)
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    /// Runs `command`; its stderr is captured when it is piped.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stderr.take() {
            let lines = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Ok(mut lines) = lines.lock() {
                        lines.push(line);
                    }
                }
            });
        }
        Self { child, stderr }
    }

    /// The process id, for signals and `/proc/<pid>`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the daemon; panics if it cannot be sent.
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.child.id() as i32);
        kill(pid, signal).unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
    }

    /// Whether the process has ended.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until a stderr line satisfies `matches`; panics with the log after `timeout`.
    pub fn expect_log(
        &self,
        matches: impl Fn(&str) -> bool,
        what: &str,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stderr().into_iter().find(|l| matches(l)) {
                return line;
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line {what} within {timeout:?}; stderr:\n{}",
                    self.stderr().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit; panics (after killing it) if it outlives `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    panic!(
                        "still running {timeout:?} after being asked to stop; stderr:\n{}",
                        self.stderr().join("\n")
                    );
                }
                Err(e) => panic!("wait: {e}"),
            }
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM first, so the daemon removes what it made (interfaces, control sockets);
            // SIGKILL if it has not gone after a short while.
            let pid = Pid::from_raw(self.child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A daemon started on a config of the test's and known to be ready.
pub struct Started {
    /// The daemon, past `READY=1`.
    pub process: DaemonProcess,
    /// The socket the daemon notifies, holding what it has sent so far.
    pub notify: crate::NotifySocket,
    /// The config file it runs on, in a directory removed with this value.
    pub config_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Started {
    /// Writes `config` to a file, starts `bin` on it and waits for `READY=1`.
    pub fn start(bin: &str, config: &str) -> Self {
        Self::start_in(None, bin, config)
    }

    /// [`start`](Self::start) inside `netns` when given.
    pub fn start_in(netns: Option<&crate::netns::Netns>, bin: &str, config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config_path = dir.path().join("daemon.toml");
        std::fs::write(&config_path, config).unwrap_or_else(|e| panic!("{e}"));
        let mut notify = crate::NotifySocket::new();
        let mut process = DaemonProcess::spawn(DaemonProcess::command_in(
            netns,
            bin,
            &config_path,
            notify.path(),
        ));
        let wait = Duration::from_secs(20);
        if notify
            .wait_for(&["READY=1"], wait, || process.exited())
            .is_none()
        {
            // Most often a daemon that refused to start: its own words say why (given a moment
            // to reach the thread that collects them).
            if process.exited() {
                std::thread::sleep(Duration::from_millis(200));
            }
            panic!(
                "{bin} not ready within {wait:?} (exited: {}); notifications: {:?}; stderr:\n{}",
                process.exited(),
                notify.received,
                process.stderr().join("\n")
            );
        }
        Self {
            process,
            notify,
            config_path,
            _dir: dir,
        }
    }

    /// Replaces the config file atomically, sends SIGHUP and waits for the reload to finish;
    /// returns the `READY=1` notification (its `STATUS=` says whether it was refused).
    pub fn reload(&mut self, config: &str) -> String {
        let temp = self.config_path.with_extension("new");
        std::fs::write(&temp, config).unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(&temp, &self.config_path).unwrap_or_else(|e| panic!("{e}"));
        self.process.signal(Signal::SIGHUP);
        self.notify
            .expect(&["RELOADING=1"], Duration::from_secs(20));
        self.notify.expect(&["READY=1"], Duration::from_secs(20))
    }
}
