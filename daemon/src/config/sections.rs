use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// `[log]`: how much the daemon says. `RUST_LOG`, when set, takes precedence.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub level: LogLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
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
    pub listen: SocketAddr,
}

/// `[shutdown]`: how long SIGTERM waits for connections and sessions to finish.
///
/// Keep it below the unit's `TimeoutStopSec` so the daemon exits 0 before systemd kills it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
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
}
