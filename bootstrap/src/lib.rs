//! `lab-bootstrap`: one `lab.toml` to a running lab.
//!
//! [`model`] is the `lab.toml` schema and its validation; [`mac`] the deterministic MAC addresses
//! machines get. Planning, the Proxmox and local drivers come with their own issues.

// It runs as root on the Proxmox host with the lab's secrets: nothing here needs `unsafe`.
#![forbid(unsafe_code)]

pub mod commands;
pub mod host;
pub mod local;
pub mod mac;
pub mod model;
pub mod proxmox;
pub mod render;
pub mod state_dir;
pub mod talos;

pub use model::Lab;
