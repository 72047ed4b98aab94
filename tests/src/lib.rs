//! Test support shared by the programs' own test suites: real processes, a `NOTIFY_SOCKET` the
//! test owns, real clients (`curl`, `promtool`, `systemd-analyze`), and the example configs in
//! `configs/` as the starting point of every test config.
//!
//! [`suites`] holds the checks both daemons must pass, written once and called from each crate's
//! `tests/`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod binaries;
pub mod bridged;
pub mod certs;
pub mod daemon_process;
pub mod dns;
pub mod http;
pub mod netns;
pub mod nginx;
pub mod notify_socket;
pub mod ports;
pub mod promtool;
pub mod suites;
pub mod systemd_unit;
pub mod workspace;

pub use daemon_process::DaemonProcess;
pub use notify_socket::NotifySocket;
