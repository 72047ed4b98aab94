//! `lab-bootstrap`: one `lab.toml` to a running lab.
//!
//! [`model`] is the `lab.toml` schema and its validation (`lab_file` adds the checks of the
//! daemon configs it renders); [`render`] the files it makes for the
//! host and containers, [`talos`] the cluster's secrets and machine configs, kept in the
//! [`state_dir`]. [`commands`] runs plan/apply/destroy: the Proxmox node's resources
//! ([`proxmox`]), then the host's files and services ([`host`]). [`local`] builds a lab in
//! network namespaces instead. [`backup`] archives etcd and the state directory and checks an
//! archive before a recovery; [`node_configs`] takes lab.toml's changes to the running Talos
//! nodes (and upgrades Kubernetes). [`mac`] gives machines their deterministic MAC addresses.

// It runs as root on the Proxmox host with the lab's secrets: nothing here needs `unsafe`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backup;
pub mod balancer;
pub mod commands;
pub mod host;
mod lab_file;
pub mod local;
pub mod mac;
pub mod model;
pub mod node_configs;
pub mod node_removal;
pub mod peers;
pub mod progress;
pub mod proxmox;
pub mod render;
pub mod state_dir;
pub mod storage;
pub mod talos;
pub mod talos_upgrade;

pub use model::Lab;
