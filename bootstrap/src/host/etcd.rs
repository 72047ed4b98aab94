//! Bootstrapping etcd on the first control plane, once: with talosctl when it is installed,
//! otherwise by saying exactly what to run.

use super::{command_line, CommandError, Runner};
use crate::model::{Lab, NetworkId, Role};
use crate::state_dir::StateDir;
use std::io::Write;

/// Seconds talosctl may take (coreutils `timeout`).
const TALOSCTL_TIMEOUT: &str = "120";

/// How bootstrapping etcd went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An earlier apply saw etcd answer; nothing was run.
    AlreadyDone,
    /// talosctl bootstrapped it now, or found it bootstrapped already.
    Bootstrapped,
    /// talosctl is missing or the node does not answer yet; the command to run is printed.
    Deferred(String),
}

/// The talosctl command that bootstraps etcd on the first control plane.
pub fn command(lab: &Lab, state: &StateDir) -> Option<Vec<String>> {
    let first = lab.machines.iter().find(|m| m.role == Role::ControlPlane)?;
    let address = first.address_on(NetworkId::Net1)?.to_string();
    Some(vec![
        "--talosconfig".to_owned(),
        state.talosconfig().display().to_string(),
        "bootstrap".to_owned(),
        "--nodes".to_owned(),
        address.clone(),
        "--endpoints".to_owned(),
        address,
    ])
}

/// Whether an earlier apply saw etcd answer.
pub fn is_done(state: &StateDir) -> bool {
    state.etcd_bootstrapped().exists()
}

/// Bootstraps etcd unless an earlier apply saw it answer, recording success in the state
/// directory; without talosctl, or while the node does not answer, prints the command instead.
pub fn bootstrap(
    host: &mut dyn Runner,
    lab: &Lab,
    state: &StateDir,
    out: &mut dyn Write,
) -> Result<Outcome, CommandError> {
    let done = state.etcd_bootstrapped();
    if is_done(state) {
        return Ok(Outcome::AlreadyDone);
    }
    let Some(args) = command(lab, state) else {
        return Ok(Outcome::Deferred(String::new()));
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let line = command_line("talosctl", &args);
    if !host.has("talosctl") {
        let _ = writeln!(
            out,
            "  talosctl is not installed: once the first control plane answers on port 50000, run\n    {line}"
        );
        return Ok(Outcome::Deferred(line));
    }
    // A node that is still booting can leave talosctl waiting far longer than an apply should.
    let mut bounded = vec![TALOSCTL_TIMEOUT, "talosctl"];
    bounded.extend(&args);
    let result = host.run("timeout", &bounded)?;
    let text = format!("{}{}", result.stdout, result.stderr);
    // A second bootstrap is refused with AlreadyExists: etcd is there, which is the point.
    if result.success || text.contains("AlreadyExists") || text.contains("already bootstrapped") {
        let _ = std::fs::write(&done, "");
        let _ = writeln!(out, "  etcd bootstrapped");
        return Ok(Outcome::Bootstrapped);
    }
    let _ = writeln!(
        out,
        "  etcd not bootstrapped yet ({}); apply again once the node answers, or run\n    {line}",
        text.lines().last().unwrap_or("no answer").trim()
    );
    Ok(Outcome::Deferred(line))
}
