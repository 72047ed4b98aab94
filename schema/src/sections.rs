//! The sections every daemon's config file has: `[log]`, `[metrics]`, `[shutdown]`, `[runtime]`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[log]`: how much the daemon says. `RUST_LOG`, when set, takes precedence.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// The least severe level logged.
    #[serde(default)]
    pub level: LogLevel,
}

/// `[log] level`: the least severe messages logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// And what may become one.
    Warn,
    /// And what the daemon does (the default).
    #[default]
    Info,
    /// And why.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// As written in the file (and as `tracing` filters name it).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// `[metrics]`: where Prometheus scrapes `GET /metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint.
    pub listen: SocketAddr,
}

/// `[shutdown]`: how long SIGTERM waits for connections and sessions to finish.
///
/// Keep it below the unit's `TimeoutStopSec` so the daemon exits 0 before systemd kills it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long connections and sessions get to finish after SIGTERM.
    #[serde(
        with = "humantime_serde",
        default = "ShutdownConfig::default_drain_timeout"
    )]
    pub drain_timeout: Duration,
}

impl ShutdownConfig {
    /// Five seconds under the shipped units' `TimeoutStopSec=30s`.
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

    fn default_drain_timeout() -> Duration {
        Self::DEFAULT_DRAIN_TIMEOUT
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Self::DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// `[runtime]`: how the daemon uses the machine.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Threads serving connections; one per CPU when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
    /// lab-lb only: the runtime API's Unix socket (`lab-lb ctl`); no runtime API when unset.
    /// The shipped unit's runtime directory makes [`RuntimeConfig::LB_SOCKET`] the usual path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// lab-lb only: a group (name or number) whose members may use the runtime API as well as
    /// root and the daemon's user; the socket is then 0660 and that group's. Root only when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
}

impl RuntimeConfig {
    /// Where `lab-lb ctl` looks unless told otherwise: under the unit's `RuntimeDirectory`.
    pub const LB_SOCKET: &'static str = "/run/lab-lb/lab-lb.sock";
}
