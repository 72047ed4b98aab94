//! `lab-vpn`: the WireGuard gateway that admin peers use to reach the administration network.
//!
//! [`config`] is the `vpn.toml` schema and [`key`] the WireGuard key types, lab-schema's (also
//! what `lab-bootstrap` serialises), with the reading of key files; [`daemon`] the service the
//! shared lifecycle in `lab_daemon` runs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod allowed_ips;
pub mod client_config;
pub mod config;
pub mod conn;
pub mod daemon;
pub mod device;
pub mod forwarding;
pub mod key;
pub mod metrics;
pub mod netlink;
pub mod peer_admin;
pub mod qr;
mod sock_diag;
pub mod tun;
pub mod uapi;
pub mod uapi_client;

pub use config::VpnConfig;
pub use daemon::VpnDaemon;
