//! Proxmox VE: the client transports (`pvesh` on the host, HTTPS with a token), and the
//! plan/apply/destroy of the lab's bridges, containers and VMs.

pub mod apply;
pub mod client;
pub mod desired;
pub mod https;
pub mod images;
pub mod plan;
pub mod preflight;
