//! The runtime behaviour that `lab-lb` and `lab-vpn` share, written once.
//!
//! A daemon implements [`Daemon`] (start, reload, drain) for a config type that implements
//! [`DaemonConfig`]; [`cli::run`] and [`cli::check`] then give it the conventions of docs/ARCHITECTURE.md:
//! TOML config refused with file, line, column and key ([`config`]), a Prometheus endpoint with
//! process metrics ([`metrics`]), the systemd notify protocol ([`notify`]), `tracing` logs
//! ([`logging`]) and the SIGHUP/SIGTERM lifecycle ([`lifecycle`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod cli;
pub mod config;
pub mod control;
pub mod exit;
pub mod files;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod notify;

pub use config::{
    ConfigFile, DaemonConfig, Invalid, Issues, LogConfig, MetricsConfig, Name, RuntimeConfig,
    ShutdownConfig,
};
pub use lifecycle::Daemon;
