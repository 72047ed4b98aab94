//! Configuration files: loading with precise errors ([`load`]). The types and their checks
//! ([`ConfigFile`], [`Issues`], [`Name`], the sections every daemon's config shares) are
//! lab-schema's, re-exported here for the daemons' code.

mod load;
mod locate;

pub use lab_schema::{
    ConfigFile, DaemonConfig, Invalid, Issues, LogConfig, LogLevel, MetricsConfig, Name, NameError,
    RuntimeConfig, ShutdownConfig,
};
pub use load::{load, load_checked, parse, parse_checked, ConfigError, ConfigErrorKind};
pub use locate::{line_column, locate_key};
