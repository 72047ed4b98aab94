//! After etcd: waiting until the cluster is healthy (etcd's members are the control planes,
//! every node ready), then writing the admin kubeconfig next to the talosconfig.

use super::etcd::ClusterOptions;
use super::HostError;
use crate::model::Lab;
use crate::progress::Stage;
use crate::state_dir::StateDir;
use crate::talos::cluster::{write_kubeconfig, Access};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// How the kubeconfig stage went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The cluster became healthy and its kubeconfig was written here.
    Written(PathBuf),
    /// An earlier apply wrote it already; the cluster was not asked again.
    AlreadyThere(PathBuf),
    /// `--no-wait`, or etcd not bootstrapped yet: not waited for.
    Skipped,
}

/// Waits up to `within` for the cluster to be healthy, then fetches and writes its admin
/// kubeconfig (0600, atomically); with `--no-wait` says how to get it later.
pub fn kubeconfig(
    lab: &Lab,
    state: &StateDir,
    options: &ClusterOptions,
    within: Option<Duration>,
    out: &mut dyn Write,
) -> Result<Outcome, HostError> {
    let path = state.kubeconfig();
    if path.exists() {
        let _ = writeln!(out, "  kubeconfig: {}", path.display());
        return Ok(Outcome::AlreadyThere(path));
    }
    let Some(within) = within else {
        let _ = writeln!(
            out,
            "  --no-wait: not waiting for the cluster; `lab-bootstrap apply` again without --no-wait waits for it and writes {}",
            path.display()
        );
        return Ok(Outcome::Skipped);
    };
    let access = Access::new(lab, state, options.endpoint.as_deref())?;
    let mut stage = Stage::start(
        "cluster",
        "etcd members to be the control planes and every node ready",
    );
    if let Err(e) = access.wait_healthy(within, &mut stage) {
        stage.finish(false, "not healthy");
        return Err(e.into());
    }
    stage.finish(
        true,
        "healthy: etcd members are the control planes, every node ready",
    );
    let kubeconfig = access.kubeconfig()?;
    let path = write_kubeconfig(state, &kubeconfig)?;
    let _ = writeln!(out, "  kubeconfig written: {} (0600)", path.display());
    Ok(Outcome::Written(path))
}
