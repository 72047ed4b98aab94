//! Proxmox VE: the API schema calls are checked against, and (with their own modules) the
//! client transports and the plan/apply of bridges, containers and VMs.

pub mod client;
pub mod https;
pub mod schema;
