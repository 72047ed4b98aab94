//! Carrying out a plan: one API call per change (plus stopping a running guest before it is
//! removed, and reloading the node's network once after bridge changes), waiting on every
//! task, with a progress line per step.

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
    let mut done = 0;
    for change in rest {
        if change.resource.kind != Kind::Bridge && network_pending {
            reload_network(api, node, progress)?;
            network_pending = false;
        }
        one(api, node, change, progress)?;
        network_pending |= change.resource.kind == Kind::Bridge;
        done += 1;
    }
    for change in bridge_deletes {
        one(api, node, change, progress)?;
        network_pending = true;
        done += 1;
    }
    if network_pending {
        reload_network(api, node, progress)?;
    }
    Ok(done)
}

fn one(
    api: &dyn ProxmoxApi,
    node: &str,
    change: &Change,
    progress: &mut dyn Write,
) -> Result<(), ApplyError> {
    let r = &change.resource;
    let label = format!("{} {} ({})", r.kind.as_str(), r.id, r.name);
    let collection = format!("/nodes/{node}/{}", r.kind.api());
    let item = format!("{collection}/{}", r.id);
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
            if r.kind == Kind::Bridge {
                // The API wants the type restated on every bridge update.
                params.push(("type".to_owned(), "bridge".to_owned()));
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
        Kind::Bridge => "",
        _ => "/config",
    }
}

fn delete_params(kind: Kind) -> Vec<(String, String)> {
    match kind {
        Kind::Bridge => Vec::new(),
        // Remove the guest's disks and its mentions in jobs and HA too: nothing of ours is left.
        _ => vec![
            ("purge".to_owned(), "1".to_owned()),
            ("destroy-unreferenced-disks".to_owned(), "1".to_owned()),
        ],
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
