//! Configuration files: loading with precise errors ([`load`]), semantic checks ([`Issues`]),
//! and the sections every daemon's config shares ([`LogConfig`], [`MetricsConfig`],
//! [`ShutdownConfig`]).

mod issues;
mod load;
mod locate;
mod name;
mod sections;

pub use issues::{Invalid, Issues};
pub use load::{load, parse, ConfigError, ConfigErrorKind, ConfigFile};
pub use locate::{line_column, locate_key};
pub use name::{Name, NameError};
pub use sections::{LogConfig, LogLevel, MetricsConfig, RuntimeConfig, ShutdownConfig};

/// A daemon's configuration file: what it is called and the sections the runtime reads.
pub trait DaemonConfig: ConfigFile + Send + Sync + 'static {
    /// The program name, used in messages: `lab-lb`.
    const PROGRAM: &'static str;
    /// Where the unit file points the daemon by default.
    const DEFAULT_PATH: &'static str;
    /// Prefix of the daemon's own metric names, without the trailing underscore: `lab_lb`.
    const METRICS_PREFIX: &'static str;

    fn log(&self) -> &LogConfig;
    fn metrics(&self) -> &MetricsConfig;
    fn shutdown(&self) -> &ShutdownConfig;
    fn runtime(&self) -> &RuntimeConfig;
}
