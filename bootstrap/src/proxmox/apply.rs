//! Carrying out a plan: one API call per change (plus stopping a running guest before it is
//! removed, reloading the node's network once after bridge changes, and putting the SDN
//! changes into effect once, before the guests that sit on the VNets or after the last SDN
//! object went), waiting on every task, with a progress line per step.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use super::client::{wait_task, ApiError, Method, ProxmoxApi};
use super::desired::Kind;
use super::plan::{Change, ChangeKind, Plan};

/// How long one task (creating a guest imports its disk) may take.
const TASK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const TASK_POLL: Duration = Duration::from_millis(500);

/// The step an apply stopped at, and why.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct ApplyError {
    /// The resource and the call made for it (`vm 101 (cp1): POST /nodes/pve/qemu`).
    pub step: String,
    /// Why the call or its task failed.
    pub source: ApiError,
}

/// Applies `plan` in order; stops at the first failure (the next run plans from what is there,
/// so an interrupted apply converges). Progress goes to `progress`.
pub fn apply(
    api: &dyn ProxmoxApi,
    plan: &Plan,
    progress: &mut dyn Write,
) -> Result<usize, ApplyError> {
    let node = &plan.node;
    // Bridges the guests need are applied before any guest is touched; bridges that go away
    // go last, once nothing of ours sits on them.
    let (bridge_deletes, rest): (Vec<&Change>, Vec<&Change>) = plan
        .changes
        .iter()
        .partition(|c| c.resource.kind == Kind::Bridge && c.action == ChangeKind::Delete);
    let mut network_pending = plan.reload_network;
    let mut sdn_pending = plan.reload_sdn;
    let mut done = 0;
    for change in rest {
        let kind = change.resource.kind;
        if kind != Kind::Bridge && network_pending {
            reload_network(api, node, progress)?;
            network_pending = false;
        }
        // SDN objects come first (the guests sit on their VNets) or, when they go, last.
        if !kind.is_sdn() && sdn_pending {
            reload_sdn(api, progress)?;
            sdn_pending = false;
        }
        one(api, change, progress)?;
        network_pending |= kind == Kind::Bridge;
        sdn_pending |= kind.is_sdn();
        done += 1;
    }
    if sdn_pending {
        reload_sdn(api, progress)?;
    }
    for change in bridge_deletes {
        one(api, change, progress)?;
        network_pending = true;
        done += 1;
    }
    if network_pending {
        reload_network(api, node, progress)?;
    }
    Ok(done)
}

fn one(api: &dyn ProxmoxApi, change: &Change, progress: &mut dyn Write) -> Result<(), ApplyError> {
    let r = &change.resource;
    let label = format!("{} {} ({})", r.kind.as_str(), r.id, r.name);
    let collection = r.collection();
    let item = r.item();
    let pairs = |keys: &mut dyn Iterator<Item = &String>| -> Vec<(String, String)> {
        keys.filter_map(|k| r.create.get(k).map(|v| (k.clone(), v.clone())))
            .collect()
    };
    let _ = writeln!(progress, "{label}: {}", verb(change.action));
    match change.action {
        ChangeKind::Create => {
            let params: Vec<(String, String)> = r.create.clone().into_iter().collect();
            call(api, Method::Post, &collection, &params, &label)?;
        }
        ChangeKind::Update => {
            let mut params = pairs(&mut change.diffs.iter().map(|d| &d.key));
            if matches!(r.kind, Kind::Bridge | Kind::HaRule) {
                // The API wants the type restated on every bridge and rule update.
                if let Some(kind) = r.create.get("type") {
                    params.push(("type".to_owned(), kind.clone()));
                }
            }
            let path = format!("{item}{}", config_suffix(r.kind));
            call(api, Method::Put, &path, &params, &label)?;
        }
        ChangeKind::Replace => {
            stop_if_running(api, &item, change, &label, progress)?;
            call(api, Method::Delete, &item, &delete_params(r.kind), &label)?;
            let params: Vec<(String, String)> = r.create.clone().into_iter().collect();
            call(api, Method::Post, &collection, &params, &label)?;
        }
        ChangeKind::Delete => {
            stop_if_running(api, &item, change, &label, progress)?;
            call(api, Method::Delete, &item, &delete_params(r.kind), &label)?;
        }
    }
    let _ = writeln!(progress, "{label}: done");
    Ok(())
}

fn verb(action: ChangeKind) -> &'static str {
    match action {
        ChangeKind::Create => "creating",
        ChangeKind::Update => "updating in place",
        ChangeKind::Replace => "replacing",
        ChangeKind::Delete => "destroying",
    }
}

fn config_suffix(kind: Kind) -> &'static str {
    match kind {
        Kind::Container | Kind::Vm => "/config",
        _ => "",
    }
}

fn delete_params(kind: Kind) -> Vec<(String, String)> {
    match kind {
        // Remove the guest's disks and its mentions in jobs and HA too: nothing of ours is left.
        Kind::Container | Kind::Vm => vec![
            ("purge".to_owned(), "1".to_owned()),
            ("destroy-unreferenced-disks".to_owned(), "1".to_owned()),
        ],
        _ => Vec::new(),
    }
}

fn stop_if_running(
    api: &dyn ProxmoxApi,
    item: &str,
    change: &Change,
    label: &str,
    progress: &mut dyn Write,
) -> Result<(), ApplyError> {
    if change.running {
        let _ = writeln!(progress, "{label}: stopping");
        call(
            api,
            Method::Post,
            &format!("{item}/status/stop"),
            &[],
            label,
        )?;
    }
    Ok(())
}

fn reload_sdn(api: &dyn ProxmoxApi, progress: &mut dyn Write) -> Result<(), ApplyError> {
    let _ = writeln!(progress, "sdn of the cluster: applying pending changes");
    call(api, Method::Put, "/cluster/sdn", &[], "sdn reload")?;
    Ok(())
}

fn reload_network(
    api: &dyn ProxmoxApi,
    node: &str,
    progress: &mut dyn Write,
) -> Result<(), ApplyError> {
    let _ = writeln!(progress, "network of {node}: applying pending changes");
    call(
        api,
        Method::Put,
        &format!("/nodes/{node}/network"),
        &[],
        "network reload",
    )?;
    Ok(())
}

/// One call; an answer that is a task id is waited for.
fn call(
    api: &dyn ProxmoxApi,
    method: Method,
    path: &str,
    params: &[(String, String)],
    label: &str,
) -> Result<Value, ApplyError> {
    let fail = |source| ApplyError {
        step: format!("{label}: {} {path}", method.as_str()),
        source,
    };
    let answer = api.call(method, path, params).map_err(fail)?;
    if let Some(upid) = answer.as_str().filter(|s| s.starts_with("UPID:")) {
        wait_task(api, upid, TASK_TIMEOUT, TASK_POLL).map_err(fail)?;
    }
    Ok(answer)
}
