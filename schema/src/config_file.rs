//! What a config file type provides to the code that loads it: its checks, and for a daemon's
//! file the sections the shared runtime reads.

use crate::{Issues, LogConfig, MetricsConfig, RuntimeConfig, ShutdownConfig};
use serde::de::DeserializeOwned;
use std::path::Path;

/// A config file that can be loaded: its serde type plus the checks serde cannot express.
pub trait ConfigFile: DeserializeOwned {
    /// What a file of this type is, for messages: "a lab-lb configuration".
    const WHAT: &'static str;

    /// Every problem serde cannot see (values that do not fit together), each under its key.
    /// Reads nothing but `self`.
    fn validate(&self, issues: &mut Issues);

    /// One line describing what the file configures, for `check` and the start-up log.
    fn summary(&self) -> String;

    /// Makes relative paths in the file relative to `dir`, the file's own directory (as a user
    /// reading the file would take them), not to the daemon's working directory.
    fn resolve_paths(&mut self, _dir: &Path) {}
}

/// A daemon's configuration file: what it is called and the sections the runtime reads.
pub trait DaemonConfig: ConfigFile + Send + Sync + 'static {
    /// The program name, used in messages: `lab-lb`.
    const PROGRAM: &'static str;
    /// Where the unit file points the daemon by default.
    const DEFAULT_PATH: &'static str;
    /// Prefix of the daemon's own metric names, without the trailing underscore: `lab_lb`.
    const METRICS_PREFIX: &'static str;

    /// `[log]`.
    fn log(&self) -> &LogConfig;
    /// `[metrics]`.
    fn metrics(&self) -> &MetricsConfig;
    /// `[shutdown]`.
    fn shutdown(&self) -> &ShutdownConfig;
    /// `[runtime]`.
    fn runtime(&self) -> &RuntimeConfig;
}
