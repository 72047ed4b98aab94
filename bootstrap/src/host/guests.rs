//! Starting the lab's VMs once their cloud-init snippets are in place: a Talos node booted
//! without its snippet would come up in maintenance mode, waiting for a config by hand.

use super::{guest_running, CommandError, Runner};
use crate::model::{Lab, Machine, Role};

/// Every VM of the lab that is not running, in the order they start: the manager, then control
/// planes, then workers.
pub fn stopped_vms<'a>(
    runner: &mut dyn Runner,
    lab: &'a Lab,
) -> Result<Vec<&'a Machine>, CommandError> {
    let mut out = Vec::new();
    for role in [Role::Manager, Role::ControlPlane, Role::Worker] {
        for machine in lab.machines.iter().filter(|m| m.role == role) {
            if !guest_running(runner, "qm", machine.vmid)? {
                out.push(machine);
            }
        }
    }
    Ok(out)
}

/// Starts VM `vmid` (`qm start`).
pub fn start(runner: &mut dyn Runner, vmid: u32) -> Result<(), CommandError> {
    runner.check("qm", &["start", &vmid.to_string()])?;
    Ok(())
}
