//! A `NOTIFY_SOCKET` owned by the test: what systemd would receive from a `Type=notify` service.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A bound datagram socket in a temporary directory, removed when dropped.
pub struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
    /// Every datagram received so far, in order.
    pub received: Vec<String>,
}

impl NotifySocket {
    /// Binds a new socket; panics if it cannot.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("notify.sock");
        let socket =
            UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        Self {
            _dir: dir,
            path,
            socket,
            received: Vec::new(),
        }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for a datagram holding every one of `assignments` (e.g. `["READY=1"]`) and returns
    /// it; panics with everything received so far after `timeout`.
    pub fn expect(&mut self, assignments: &[&str], timeout: Duration) -> String {
        self.wait_for(assignments, timeout, || false)
            .unwrap_or_else(|| {
                panic!(
                    "no notification with {assignments:?} within {timeout:?}; received: {:?}",
                    self.received
                )
            })
    }

    /// [`expect`](Self::expect) without the panic: `None` after `timeout`, or as soon as
    /// `gone()` says no sender is left to wait for.
    pub fn wait_for(
        &mut self,
        assignments: &[&str],
        timeout: Duration,
        mut gone: impl FnMut() -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // A sender gone may still have left its last words in the socket: read those first.
            let gone = gone();
            let wait = if gone {
                Duration::from_millis(1)
            } else {
                left.min(Duration::from_millis(200))
            };
            let message = match self.recv(wait) {
                Some(m) => m,
                None if gone => return None,
                None => continue,
            };
            let lines: Vec<&str> = message.lines().collect();
            if assignments.iter().all(|a| lines.contains(a)) {
                return Some(message);
            }
        }
    }

    /// Takes in whatever has arrived, without waiting.
    pub fn drain(&mut self) {
        while self.recv(Duration::from_millis(1)).is_some() {}
    }

    fn recv(&mut self, timeout: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .ok()?;
        let mut buffer = vec![0u8; 4096];
        match self.socket.recv(&mut buffer) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
                self.received.push(message.clone());
                Some(message)
            }
            Err(_) => None,
        }
    }
}

impl Default for NotifySocket {
    fn default() -> Self {
        Self::new()
    }
}

/// The value of `KEY=` in a notification, if present.
pub fn field<'m>(message: &'m str, key: &str) -> Option<&'m str> {
    message
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}
