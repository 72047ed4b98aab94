//! What lab-lb's data-path tests share: a daemon on loopback ports in front of real backends,
//! real clients, and reading its metrics.

#![allow(dead_code)] // each test file uses its own part

#[allow(unused_imports)] // each test file uses its own part
pub use lab_tests::certs;
pub mod web;

use lab_tests::daemon_process::Started;
use lab_tests::nginx::Nginx;
use lab_tests::{http, ports, workspace};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_lab-lb");

/// The balancer's listening and metrics addresses for one test.
pub struct Setup {
    pub lb: SocketAddr,
    pub metrics: SocketAddr,
}

impl Setup {
    pub fn new() -> Self {
        Self {
            lb: ports::free_tcp(),
            metrics: ports::free_tcp(),
        }
    }

    /// The example's shared sections with this test's metrics address, and `body` (listeners and
    /// backends) in place of the example's.
    pub fn config(&self, body: &str) -> String {
        let mut doc = workspace::config_document("lb.toml");
        doc.remove("listener");
        doc.remove("backend");
        doc["metrics"]["listen"] = toml_edit::value(self.metrics.to_string());
        format!("{doc}\n{body}")
    }

    /// One listener `web` on `self.lb` in `mode`, in front of one backend `web` of `servers`;
    /// `listener` and `backend` are extra lines for each.
    pub fn single(
        &self,
        mode: &str,
        listener: &str,
        backend: &str,
        servers: &[SocketAddr],
    ) -> String {
        let servers: Vec<String> = servers
            .iter()
            .map(|s| format!("{{ address = \"{s}\" }}"))
            .collect();
        self.config(&format!(
            "[[listener]]\nname = \"web\"\nlisten = \"{}\"\nmode = \"{mode}\"\nbackend = \"web\"\n{listener}\n\n\
             [[backend]]\nname = \"web\"\nserver = [{}]\n{backend}\n",
            self.lb,
            servers.join(", ")
        ))
    }

    pub fn start(&self, config: &str) -> Started {
        Started::start(BIN, config)
    }

    pub fn metric(&self, series: &str) -> f64 {
        let body = http::get(self.metrics, "/metrics", &[]).body;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
    }

    /// Waits until `series` reads `value`; returns how long that took.
    pub fn until_metric(&self, series: &str, value: f64, timeout: Duration) -> Duration {
        let started = Instant::now();
        while self.metric(series) != value {
            assert!(
                started.elapsed() < timeout,
                "{series} did not become {value} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        started.elapsed()
    }
}

pub fn addresses(backends: &[&Nginx]) -> Vec<SocketAddr> {
    backends.iter().map(|b| b.address).collect()
}

/// `curl http://<address>/` from `source` (a loopback address); the body, or `None` on failure.
pub fn fetch(address: SocketAddr, source: Option<&str>) -> Option<String> {
    let mut command = Command::new("curl");
    command.args(["--silent", "--max-time", "5"]);
    if let Some(source) = source {
        command.args(["--interface", source]);
    }
    let output = command.arg(format!("http://{address}/")).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// `curl` over TLS to `name` through `address`: the body and the subject of the certificate
/// the client saw.
pub fn fetch_tls(address: SocketAddr, name: &str) -> (String, String) {
    let output = Command::new("curl")
        .args([
            "--silent",
            "--verbose",
            "--insecure",
            "--max-time",
            "5",
            "--resolve",
        ])
        .arg(format!("{name}:{}:127.0.0.1", address.port()))
        .arg(format!("https://{name}:{}/", address.port()))
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    let verbose = String::from_utf8_lossy(&output.stderr);
    let subject = verbose
        .lines()
        .find_map(|l| l.trim_start_matches('*').trim().strip_prefix("subject: "))
        .unwrap_or("")
        .to_owned();
    (
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        subject,
    )
}

/// Starts `curl` downloading `/big` through `address` in the background; the child and the
/// file it writes.
pub fn slow_download(address: SocketAddr, dir: &Path, name: &str) -> (Child, PathBuf) {
    let out = dir.join(name);
    let child = Command::new("curl")
        .args(["--silent", "--max-time", "30", "--output"])
        .arg(&out)
        .arg(format!("http://{address}/big"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    (child, out)
}

pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix(" kB")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no VmRSS in:\n{status}"))
}
