//! `lab-lb`: the load balancer in front of the lab's Kubernetes API and ingress.
//!
//! [`config`] is the `lb.toml` schema (also what `lab-bootstrap` serialises); [`daemon`] is the
//! service the shared lifecycle in `lab_daemon` runs.

pub mod balance;
pub mod config;
pub mod daemon;
pub mod metrics;
pub mod sni;

pub use config::LbConfig;
pub use daemon::LbDaemon;
