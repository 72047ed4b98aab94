//! Proxmox VE: the client transports (`pvesh` on the host, HTTPS with a token), and the
//! plan/apply/destroy of the lab's bridges (on several nodes SDN VNets), containers, VMs and
//! HA resources.

pub mod apply;
pub mod client;
pub mod desired;
pub mod ha;
pub mod https;
pub mod images;
pub mod plan;
pub mod preflight;
pub mod sdn;
