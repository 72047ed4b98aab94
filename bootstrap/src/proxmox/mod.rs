//! Proxmox VE: the client transports (`pvesh` on the host, HTTPS with a token), and the
//! plan/apply/destroy of the lab's bridges (on several nodes SDN VNets), containers, VMs and
//! HA resources, and of its datacenter objects (the CSI plugin's role, user, ACL and token; the
//! vzdump job).

pub mod apply;
pub mod client;
pub mod csi;
pub mod datacenter;
pub mod desired;
pub mod ha;
pub mod https;
pub mod images;
pub mod plan;
pub mod preflight;
pub mod sdn;
pub mod vzdump;
