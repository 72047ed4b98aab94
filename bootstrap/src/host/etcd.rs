//! Bootstrapping etcd on the first control plane, once, through its Talos API (lab-talos-api's
//! client with the talosconfig's credentials: nothing to install on the host). A node still
//! booting is asked again until the wait is over; with `--no-wait`, once.

use super::HostError;
use crate::model::Lab;
use crate::progress::Stage;
use crate::state_dir::StateDir;
use crate::talos::cluster::{Access, ClusterError};
use lab_talos_api::client::Bootstrapped;
use std::io::Write;
use std::time::Duration;

/// How apply deals with the cluster once the host's steps are done.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// How long apply waits, in all, for etcd and a healthy cluster; `None` is `--no-wait`:
    /// one try at the bootstrap, no wait, no kubeconfig.
    pub within: Option<Duration>,
    /// Every Talos API call goes to this address instead of the nodes (tests).
    pub endpoint: Option<String>,
}

/// How bootstrapping etcd went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An earlier apply saw etcd answer; nothing was asked.
    AlreadyDone,
    /// The node took the bootstrap now, or said it was bootstrapped already.
    Bootstrapped,
    /// With `--no-wait`, the node did not answer yet; holds what it said.
    Deferred(String),
}

/// Whether an earlier apply saw etcd answer.
pub fn is_done(state: &StateDir) -> bool {
    state.etcd_bootstrapped().exists()
}

/// Bootstraps etcd unless an earlier apply saw it answer, recording success in the state
/// directory.
pub fn bootstrap(
    lab: &Lab,
    state: &StateDir,
    options: &ClusterOptions,
    out: &mut dyn Write,
) -> Result<Outcome, HostError> {
    if is_done(state) {
        return Ok(Outcome::AlreadyDone);
    }
    let access = Access::new(lab, state, options.endpoint.as_deref())?;
    let node = access.first_node();
    let mut stage = Stage::start("etcd", &format!("{node} to take Bootstrap"));
    match access.bootstrap(options.within.unwrap_or(Duration::ZERO), &mut stage) {
        Ok(how) => {
            std::fs::write(state.etcd_bootstrapped(), "").map_err(|source| {
                ClusterError::Write {
                    path: state.etcd_bootstrapped(),
                    source,
                }
            })?;
            stage.finish(
                true,
                &match how {
                    Bootstrapped::Now => format!("etcd bootstrapped on {node}"),
                    Bootstrapped::Already => format!("etcd bootstrapped on {node} already"),
                },
            );
            Ok(Outcome::Bootstrapped)
        }
        Err(ClusterError::Api(e)) if options.within.is_none() && e.is_not_ready() => {
            stage.finish(false, &format!("etcd not bootstrapped yet: {}", e.problem));
            let _ = writeln!(
                out,
                "  --no-wait: apply again once {node} answers on port 50000; it bootstraps etcd then"
            );
            Ok(Outcome::Deferred(e.to_string()))
        }
        Err(e) => {
            stage.finish(false, "etcd not bootstrapped");
            Err(e.into())
        }
    }
}
