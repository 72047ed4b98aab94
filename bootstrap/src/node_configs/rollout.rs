//! Config changes reaching running nodes: `plan` shows each node's diff and the mode Talos's
//! dry run reports; apply (and `upgrade kubernetes`) applies them node by node, control
//! planes one at a time with the cluster healthy before each and after the last. Each node's
//! record is written as soon as it took its config, so an interrupted run, run again, goes on
//! with the nodes still to do and a finished one does nothing.

use super::applied::{record_applied, AppliedError, NodeConfig};
use super::diff;
use crate::model::Role;
use crate::progress::Stage;
use crate::state_dir::StateDir;
use crate::talos::cluster::{Access, ClusterError};
use lab_talos_api::client::ApplyMode;
use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

/// Why a rollout stopped.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// A node refused or did not answer, or the cluster did not become healthy.
    #[error("{node}: {source}\nthe nodes before it have their new config; run it again to go on from {node}")]
    Node {
        /// The node (or `cluster health` before it) as `cp2 (10.10.1.12)`.
        node: String,
        /// What went wrong.
        source: ClusterError,
    },
    /// A node's record could not be written.
    #[error(transparent)]
    Record(#[from] AppliedError),
}

/// Which nodes go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Workers (any order: none holds etcd), then the control planes: config changes.
    WorkersFirst,
    /// The control planes, then the workers, as `talosctl upgrade-k8s` does: the API server
    /// may be newer than the kubelets, never older.
    ControlPlanesFirst,
}

/// One step of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// `ApplyConfiguration` of the node's rendered config.
    Apply(&'a NodeConfig),
    /// Wait until etcd's members are the control planes and every node is ready.
    Healthy,
}

/// The steps that bring the pending nodes of `nodes` to their rendered configs, in `order`,
/// a health wait before each control plane and after the last.
pub fn sequence(nodes: &[NodeConfig], order: Order) -> Vec<Step<'_>> {
    let pending = |role: Role| {
        nodes
            .iter()
            .filter(move |n| n.role == role && n.is_pending())
    };
    let workers = pending(Role::Worker).map(Step::Apply);
    let mut control_planes = Vec::new();
    for node in pending(Role::ControlPlane) {
        control_planes.extend([Step::Healthy, Step::Apply(node)]);
    }
    if !control_planes.is_empty() {
        control_planes.push(Step::Healthy);
    }
    match order {
        Order::WorkersFirst => workers.chain(control_planes).collect(),
        Order::ControlPlanesFirst => control_planes.into_iter().chain(workers).collect(),
    }
}

/// The sequence as `--dry-run` prints it, one numbered line a step.
pub fn render_sequence(steps: &[Step<'_>]) -> String {
    let mut out = String::new();
    for (index, step) in steps.iter().enumerate() {
        let _ = match step {
            Step::Apply(node) => writeln!(
                out,
                "  {}. ApplyConfiguration {} ({})",
                index + 1,
                node.label(),
                role_name(node.role)
            ),
            Step::Healthy => writeln!(
                out,
                "  {}. wait for the cluster to be healthy (etcd members the control planes, every node ready)",
                index + 1
            ),
        };
    }
    out
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::ControlPlane => "control plane",
        _ => "worker",
    }
}

/// How a mode reads in plan.
pub fn mode_name(mode: Option<ApplyMode>) -> &'static str {
    match mode {
        Some(ApplyMode::NoReboot) => "no reboot",
        Some(ApplyMode::Staged) => "staged (applied at the next reboot)",
        Some(ApplyMode::Reboot) => "reboot",
        Some(ApplyMode::Auto | ApplyMode::Try) | None => "mode not reported",
    }
}

/// plan's part: each pending node's diff (secrets masked) and what Talos's dry run says it
/// would do; a node that does not answer is said to, and its diff still shown. `access` is
/// the cluster's, or why there is none.
pub fn preview(nodes: &[NodeConfig], access: &Result<Access, String>) -> String {
    let pending: Vec<&NodeConfig> = nodes.iter().filter(|n| n.is_pending()).collect();
    if pending.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nTalos machine configs that differ from what the nodes were last given (apply applies them node by node: workers, then control planes one at a time with the cluster healthy in between; the snippets too):\n\n",
    );
    for node in pending {
        let mode = match access {
            Ok(access) => match access.dry_run_config(&node.address, node.rendered.as_bytes()) {
                Ok(applied) => {
                    // Talos follows its verdict with the whole config diff, secrets and all:
                    // only the verdict is shown, the diff is ours, masked.
                    let said = applied
                        .details
                        .lines()
                        .map(str::trim)
                        .find(|line| !line.is_empty() && *line != "Dry run summary:")
                        .unwrap_or_default();
                    format!("{} (Talos dry run: {said})", mode_name(applied.mode))
                }
                Err(e) => format!("unreachable, mode unknown ({e})"),
            },
            Err(why) => format!("not asked, mode unknown ({why})"),
        };
        let _ = writeln!(out, "  ~ {}: {mode}", node.label());
        let last = node.last.as_deref().unwrap_or_default();
        match diff::diff(last, &node.rendered) {
            Ok(changes) => out.push_str(&diff::render(&changes, "      ")),
            Err(e) => {
                let _ = writeln!(out, "      the config it was last given: {e}");
            }
        }
        out.push('\n');
    }
    out
}

/// Applies the pending configs of `nodes` in `order`, recording each node's as it takes it;
/// each health wait may take up to `within`. Returns how many nodes were given a config.
pub fn roll(
    nodes: &[NodeConfig],
    order: Order,
    access: &Access,
    state: &StateDir,
    within: Duration,
    out: &mut dyn Write,
) -> Result<usize, RolloutError> {
    let mut applied = 0;
    for step in sequence(nodes, order) {
        match step {
            Step::Healthy => {
                let mut stage = Stage::start("cluster", "etcd and every node healthy");
                if let Err(source) = access.wait_healthy(within, &mut stage) {
                    stage.finish(false, "not healthy: no control plane is changed now");
                    return Err(RolloutError::Node {
                        node: "cluster health".to_owned(),
                        source,
                    });
                }
                stage.finish(
                    true,
                    "healthy: etcd members are the control planes, every node ready",
                );
            }
            Step::Apply(node) => {
                let said = access
                    .apply_config(&node.address, node.rendered.as_bytes())
                    .map_err(|source| RolloutError::Node {
                        node: node.label(),
                        source,
                    })?;
                record_applied(state, &node.name, &node.rendered)?;
                let _ = writeln!(out, "  config applied to {}: {said}", node.label());
                applied += 1;
            }
        }
    }
    Ok(applied)
}
