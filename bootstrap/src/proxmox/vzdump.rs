//! The vzdump job of `[backup] vzdump_storage`: one Proxmox backup job (`/cluster/backup`)
//! dumping the manager VM and the lb and vpn containers, keeping `[backup] keep` dumps of each.
//! The Talos nodes are left out: they hold nothing a new node would not get again from its
//! machine config, and etcd is in `lab-bootstrap backup`'s archive. The job's comment marks it
//! as this lab's; without `vzdump_storage` (or on destroy) the lab's job is removed.

use std::collections::BTreeMap;

use super::client::{Method, ProxmoxApi};
use super::datacenter::{wire, DcCall, DcChange};
use super::desired::MANAGED_COMMENT;
use super::plan::{list, ChangeKind, PlanError};
use crate::model::{Lab, Role};

/// The job's id: `lab-<cluster>`.
pub fn job_id(lab: &Lab) -> String {
    format!("lab-{}", lab.cluster.name)
}

/// The job's comment: what marks it as `lab`'s.
pub fn job_comment(lab: &Lab) -> String {
    format!("{MANAGED_COMMENT}: vzdump of lab {}", lab.cluster.name)
}

/// The guests the job dumps, as the API's VMID list.
pub fn vmids(lab: &Lab) -> String {
    let mut ids: Vec<u32> = lab
        .machines
        .iter()
        .filter(|m| matches!(m.role, Role::Manager | Role::Lb | Role::Vpn))
        .map(|m| m.vmid)
        .collect();
    ids.sort_unstable();
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The job's parameters as lab.toml wants them, without its id; `None` without
/// `[backup] vzdump_storage`.
pub fn wanted(lab: &Lab) -> Option<BTreeMap<String, String>> {
    let storage = lab.backup.vzdump_storage.as_ref()?;
    let pairs = [
        ("schedule", lab.backup.vzdump_schedule().to_owned()),
        ("storage", storage.clone()),
        ("vmid", vmids(lab)),
        // A running guest is dumped without stopping it.
        ("mode", "snapshot".to_owned()),
        ("compress", "zstd".to_owned()),
        ("prune-backups", format!("keep-last={}", lab.backup.keep)),
        ("enabled", "1".to_owned()),
        ("comment", job_comment(lab)),
    ];
    Some(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// The job as the node has it, by its id.
fn read(api: &dyn ProxmoxApi, id: &str) -> Result<Option<BTreeMap<String, String>>, PlanError> {
    Ok(list(api, "/cluster/backup")?
        .into_iter()
        .find(|job| job.get("id").and_then(wire).as_deref() == Some(id))
        .map(|job| {
            job.as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), wire(v)?)))
                .collect()
        }))
}

fn ours(lab: &Lab, live: &BTreeMap<String, String>) -> bool {
    live.get("comment")
        .is_some_and(|c| c.contains(job_comment(lab).as_str()))
}

/// What apply changes about the job: made, mended, or (without `vzdump_storage`) removed.
pub fn plan(api: &dyn ProxmoxApi, lab: &Lab) -> Result<Vec<DcChange>, PlanError> {
    let id = job_id(lab);
    let live = read(api, &id)?;
    let Some(wanted) = wanted(lab) else {
        return Ok(removal(lab, &id, live.as_ref()));
    };
    let Some(live) = live else {
        let mut params: Vec<(&str, &str)> = vec![("id", id.as_str())];
        params.extend(wanted.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        return Ok(vec![DcChange {
            action: ChangeKind::Create,
            kind: "backup job",
            id: id.clone(),
            note: format!("vzdump of guests {}", vmids(lab)),
            calls: vec![DcCall::new(Method::Post, "/cluster/backup", &params)],
        }]);
    };
    let differs: Vec<(&str, &str)> = wanted
        .iter()
        .filter(|(k, v)| live.get(*k).map(|l| l.trim()) != Some(v.trim()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if differs.is_empty() {
        return Ok(Vec::new());
    }
    if !ours(lab, &live) {
        return Err(PlanError::Conflict {
            what: format!("backup job {id}"),
            why: format!(
                "it differs in {}",
                differs
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let note = differs
        .iter()
        .map(|(k, v)| {
            let was = live.get(*k).map_or("(unset)", String::as_str);
            format!("{k}: {was:?} -> {v:?}")
        })
        .collect::<Vec<_>>()
        .join("; ");
    Ok(vec![DcChange {
        action: ChangeKind::Update,
        kind: "backup job",
        id: id.clone(),
        note,
        calls: vec![DcCall::new(
            Method::Put,
            format!("/cluster/backup/{id}"),
            &differs,
        )],
    }])
}

/// Removing the lab's job, if it is there.
pub fn destroy_plan(api: &dyn ProxmoxApi, lab: &Lab) -> Result<Vec<DcChange>, PlanError> {
    let id = job_id(lab);
    let live = read(api, &id)?;
    Ok(removal(lab, &id, live.as_ref()))
}

fn removal(lab: &Lab, id: &str, live: Option<&BTreeMap<String, String>>) -> Vec<DcChange> {
    match live {
        Some(live) if ours(lab, live) => vec![DcChange {
            action: ChangeKind::Delete,
            kind: "backup job",
            id: id.to_owned(),
            note: String::new(),
            calls: vec![DcCall::new(
                Method::Delete,
                format!("/cluster/backup/{id}"),
                &[],
            )],
        }],
        _ => Vec::new(),
    }
}
