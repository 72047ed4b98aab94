//! Talos Linux: the cluster's secrets bundle, each node's machine configuration and the admin's
//! `talosconfig`, for the Talos release in `[cluster] talos_version` (1.13).

pub mod cluster;
pub mod kubeconfig;
pub mod machine_config;
pub(crate) mod pki;
mod random;
pub mod secrets;
pub mod talosconfig;

pub use machine_config::{machine_configs, MachineConfigError};
pub use pki::PkiError;
pub use secrets::{Secrets, SecretsError};
pub use talosconfig::{talosconfig, AdminCredentials};
