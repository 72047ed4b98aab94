//! Starting the lab's VMs once their cloud-init snippets are in place: a Talos node booted
//! without its snippet would come up in maintenance mode, waiting for a config by hand.

use super::{HostError, Runner};
use crate::model::{Lab, Role};
use std::io::Write;

/// Starts every VM of the lab that is not running: the manager, then control planes, then
/// workers. Returns how many were started.
pub fn start_vms(
    host: &mut dyn Runner,
    lab: &Lab,
    out: &mut dyn Write,
) -> Result<usize, HostError> {
    let mut started = 0;
    for role in [Role::Manager, Role::ControlPlane, Role::Worker] {
        for machine in lab.machines.iter().filter(|m| m.role == role) {
            let vmid = machine.vmid.to_string();
            let status = host.check("qm", &["status", &vmid])?;
            if status.stdout.contains("status: running") {
                continue;
            }
            host.check("qm", &["start", &vmid])?;
            let _ = writeln!(out, "  started vm {} ({vmid})", machine.name);
            started += 1;
        }
    }
    Ok(started)
}
