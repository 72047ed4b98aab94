//! Test support shared by the Proxmox tests.

pub mod proxmox_schema;
pub mod proxmox_sim;
