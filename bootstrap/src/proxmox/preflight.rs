//! What the node must offer before apply writes anything: storages that take what the lab puts
//! on them, room on the guests' storage for the guests still to be made, and a container
//! template that is there or can be fetched. Read-only; each problem is one line naming the
//! lab.toml key or the Proxmox object and what to do about it.

use std::fmt::Write as _;

use serde_json::Value;

use super::client::{ApiError, Method, ProxmoxApi};
use super::desired::{Kind, Sources};
use super::images::Download;
use super::plan::{ChangeKind, Plan};
use crate::model::Lab;

const GIB: u64 = 1 << 30;

/// The content types a storage must allow, each with what of the lab's needs it.
const FILE_CONTENT: [(&str, &str); 3] = [
    (
        "snippets",
        "the Talos machine configs as cloud-init user-data",
    ),
    ("import", "the disk images the VMs are made from"),
    ("vztmpl", "the container template"),
];
const GUEST_CONTENT: [(&str, &str); 2] = [
    ("images", "the VMs' disks"),
    ("rootdir", "the containers' root filesystems"),
];

/// What preflight found: the checks that hold and the problems that stop apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preflight {
    /// The checks that hold, one line each.
    pub passed: Vec<String>,
    /// What stops apply, one line each: the lab.toml key or Proxmox object, what is wrong and
    /// what to do.
    pub problems: Vec<String>,
    /// The container template the file storage lacks and the node's appliance index offers
    /// (`pveam available`): apply fetches it before creating the containers.
    pub template_download: Option<String>,
}

impl Preflight {
    /// Whether apply may go ahead.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The preflight section of plan and apply.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let verdict = if self.ok() {
            "OK".to_owned()
        } else {
            format!(
                "{} problem(s), apply would change nothing",
                self.problems.len()
            )
        };
        let _ = writeln!(out, "\nPreflight: {verdict}");
        for line in &self.passed {
            let _ = writeln!(out, "  ok   {line}");
        }
        for line in &self.problems {
            let _ = writeln!(out, "  FAIL {line}");
        }
        out
    }
}

/// A storage the lab puts things on: the lab.toml key naming it, and the content types it
/// needs with what each is for.
struct StorageUse<'a> {
    key: String,
    storage: &'a str,
    needs: Vec<(&'static str, &'static str)>,
}

/// Checks the node for `plan` (the Proxmox changes apply would make) and `downloads` (the
/// `[images]` apply fetches).
pub fn check(
    api: &dyn ProxmoxApi,
    lab: &Lab,
    plan: &Plan,
    downloads: &[Download],
) -> Result<Preflight, ApiError> {
    let mut preflight = Preflight::default();
    let proxmox = &lab.proxmox;
    let mut wanted = vec![StorageUse {
        key: "proxmox.file_storage".to_owned(),
        storage: proxmox.file_storage.as_str(),
        needs: FILE_CONTENT.to_vec(),
    }];
    if proxmox.storage == proxmox.file_storage {
        wanted[0].key = "proxmox.storage and proxmox.file_storage".to_owned();
        wanted[0].needs.extend(GUEST_CONTENT);
    } else {
        wanted.push(StorageUse {
            key: "proxmox.storage".to_owned(),
            storage: proxmox.storage.as_str(),
            needs: GUEST_CONTENT.to_vec(),
        });
    }
    let mut guest_avail = None;
    let mut file_storage_read = false;
    for StorageUse {
        key,
        storage,
        needs,
    } in &wanted
    {
        let path = format!("/nodes/{}/storage/{storage}/status", proxmox.node);
        let status = match api.get(&path) {
            Ok(status) => status,
            Err(ApiError::Refused { message, .. }) => {
                preflight.problems.push(format!(
                    "{key}: storage '{storage}' cannot be read on node {} ({message}); name one that `pvesm status` lists there",
                    proxmox.node
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        if *storage == proxmox.file_storage {
            file_storage_read = true;
            // Guests on every node boot from its images and snippets.
            let shared = status.get("shared").and_then(number) == Some(1);
            if lab.is_cluster() && !shared {
                preflight.problems.push(format!(
                    "proxmox.file_storage: storage '{storage}' is not shared, but on several nodes every node needs its images and cloud-init snippets; name a shared storage (NFS, CephFS) with the snippets, import and vztmpl content types"
                ));
            }
        }
        if *storage == proxmox.storage {
            guest_avail = status.get("avail").and_then(number);
        }
        let has = content_of(&status);
        let lacking: Vec<&(&str, &str)> = needs.iter().filter(|(c, _)| !has.contains(c)).collect();
        if lacking.is_empty() {
            let names: Vec<&str> = needs.iter().map(|(c, _)| *c).collect();
            preflight.passed.push(format!(
                "storage '{storage}' ({key}) allows {}",
                names.join(", ")
            ));
            continue;
        }
        let names: Vec<&str> = lacking.iter().map(|(c, _)| *c).collect();
        let whys: Vec<&str> = lacking.iter().map(|(_, why)| *why).collect();
        // Setting `content` replaces the list: the types the storage has stay in it.
        let all: Vec<&str> = has.iter().copied().chain(names.iter().copied()).collect();
        preflight.problems.push(format!(
            "{key}: storage '{storage}' does not allow the content type(s) {} ({}); run `pvesm set {storage} --content {}` on the node",
            names.join(", "),
            whys.join("; "),
            all.join(",")
        ));
    }
    check_disk(lab, plan, guest_avail, &mut preflight);
    check_workload_storage(api, lab, plan, &mut preflight)?;
    check_vzdump_storage(api, lab, &mut preflight)?;
    if file_storage_read {
        check_template(api, lab, plan, downloads, &mut preflight)?;
    }
    Ok(preflight)
}

/// The API gives sizes as numbers; some storage plugins as numeric strings.
fn number(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// The disks of the guests apply creates (on the router node: other nodes have their
/// `disk_gib` budget) must fit the guests' storage; a guest that exists already has its disk
/// there.
fn check_disk(lab: &Lab, plan: &Plan, avail: Option<u64>, preflight: &mut Preflight) {
    let Some(avail) = avail else {
        return;
    };
    let storage = &lab.proxmox.storage;
    let (new, needed) = guests_to_create(lab, plan);
    let free = avail as f64 / GIB as f64;
    if needed <= avail {
        preflight.passed.push(format!(
            "storage '{storage}' has {free:.1} GiB free for {} GiB of {} guest(s) to create",
            needed / GIB,
            new.len()
        ));
        return;
    }
    preflight.problems.push(format!(
        "proxmox.storage: the guests to create need {} GiB on storage '{storage}' ({}), which has {free:.1} GiB free; free space there, or lower their disk_gib",
        needed / GIB,
        new.join(", ")
    ));
}

/// The guests apply creates (each named with its machine in lab.toml, a pair's second
/// container with its first's), and the bytes their disks take on `proxmox.storage`.
fn guests_to_create(lab: &Lab, plan: &Plan) -> (Vec<String>, u64) {
    let guests = lab.guests();
    let new: Vec<&crate::model::Machine> = plan
        .changes
        .iter()
        .filter(|c| {
            c.action == ChangeKind::Create && matches!(c.resource.kind, Kind::Container | Kind::Vm)
        })
        // On a cluster, the guests of the node this runs on: the others have budgets of their own.
        .filter(|c| c.resource.node == lab.proxmox.node)
        .filter_map(|c| guests.iter().find(|m| m.vmid.to_string() == c.resource.id))
        .collect();
    let needed = new.iter().map(|g| u64::from(g.disk_gib) * GIB).sum();
    let labels = new
        .iter()
        .map(|g| {
            let index = lab
                .machines
                .iter()
                .position(|m| m.vmid == g.vmid)
                .or_else(|| lab.machines.iter().position(|m| m.role == g.role));
            match index {
                Some(i) => format!("machine[{i}] {} {} GiB", g.name, g.disk_gib),
                None => format!("{} {} GiB", g.name, g.disk_gib),
            }
        })
        .collect();
    (labels, needed)
}

/// `[storage]`: the volumes' storage must take disk images and have `budget` free, beyond the
/// disks of the guests still to create when those go there too.
fn check_workload_storage(
    api: &dyn ProxmoxApi,
    lab: &Lab,
    plan: &Plan,
    preflight: &mut Preflight,
) -> Result<(), ApiError> {
    let Some(storage) = &lab.storage else {
        return Ok(());
    };
    let Ok(budget) = storage.budget_bytes() else {
        // lab.toml's own checks have said why already.
        return Ok(());
    };
    let name = &storage.proxmox_storage;
    let node = &lab.proxmox.node;
    let status = match api.get(&format!("/nodes/{node}/storage/{name}/status")) {
        Ok(status) => status,
        Err(ApiError::Refused { message, .. }) => {
            preflight.problems.push(format!(
                "storage.proxmox_storage: storage '{name}' cannot be read on node {node} ({message}); name one that `pvesm status` lists there"
            ));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if !content_of(&status).contains(&"images") {
        preflight.problems.push(format!(
            "storage.proxmox_storage: storage '{name}' does not allow the content type images (the volumes are VM disks); name one that does"
        ));
    }
    let avail = status.get("avail").and_then(number).unwrap_or(0);
    let total = status.get("total").and_then(number).unwrap_or(0);
    let guests = if *name == lab.proxmox.storage {
        guests_to_create(lab, plan).1
    } else {
        0
    };
    let needed = budget.saturating_add(guests);
    let gib = |bytes: u64| bytes as f64 / GIB as f64;
    let also = if guests > 0 {
        format!(" besides {:.1} GiB for the guests to create", gib(guests))
    } else {
        String::new()
    };
    // Once the plugin is set up, its volumes fill the budget: then only the storage's size
    // must still hold it.
    let set_up = super::csi::is_set_up(api, lab)?;
    if total < needed {
        preflight.problems.push(format!(
            "storage.budget: {} does not fit storage '{name}', which holds {:.1} GiB in all{also}; lower the budget or name a larger storage",
            storage.budget,
            gib(total)
        ));
    } else if !set_up && avail < needed {
        preflight.problems.push(format!(
            "storage.budget: {} does not fit storage '{name}', which has {:.1} GiB free{also}; lower the budget or free space there",
            storage.budget,
            gib(avail)
        ));
    } else {
        preflight.passed.push(format!(
            "storage '{name}' ({:.1} GiB free of {:.1} GiB) holds the volumes' budget of {}",
            gib(avail),
            gib(total),
            storage.budget
        ));
    }
    Ok(())
}

/// `[backup] vzdump_storage` must take backups.
fn check_vzdump_storage(
    api: &dyn ProxmoxApi,
    lab: &Lab,
    preflight: &mut Preflight,
) -> Result<(), ApiError> {
    let Some(name) = &lab.backup.vzdump_storage else {
        return Ok(());
    };
    let node = &lab.proxmox.node;
    let status = match api.get(&format!("/nodes/{node}/storage/{name}/status")) {
        Ok(status) => status,
        Err(ApiError::Refused { message, .. }) => {
            preflight.problems.push(format!(
                "backup.vzdump_storage: storage '{name}' cannot be read on node {node} ({message}); name one that `pvesm status` lists there"
            ));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if content_of(&status).contains(&"backup") {
        preflight.passed.push(format!(
            "storage '{name}' (backup.vzdump_storage) allows backup"
        ));
    } else {
        preflight.problems.push(format!(
            "backup.vzdump_storage: storage '{name}' does not allow the content type backup; run `pvesm set {name} --content <its types>,backup` on the node or name another"
        ));
    }
    Ok(())
}

/// A storage's content types, from its status.
fn content_of(status: &Value) -> Vec<&str> {
    status
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// A container to create needs the template on the file storage: there already, fetched from
/// `[images] lxc_template`, or offered by the node's appliance index.
fn check_template(
    api: &dyn ProxmoxApi,
    lab: &Lab,
    plan: &Plan,
    downloads: &[Download],
    preflight: &mut Preflight,
) -> Result<(), ApiError> {
    let creates_container = plan.changes.iter().any(|c| {
        c.resource.kind == Kind::Container
            && matches!(c.action, ChangeKind::Create | ChangeKind::Replace)
    });
    if !creates_container {
        return Ok(());
    }
    let volid = Sources::defaults(lab).ostemplate;
    if downloads.iter().any(|d| d.volid == volid) {
        preflight.passed.push(format!(
            "template {volid} is downloaded from [images] lxc_template"
        ));
        return Ok(());
    }
    let (node, storage) = (&lab.proxmox.node, &lab.proxmox.file_storage);
    let listing = api.call(
        Method::Get,
        &format!("/nodes/{node}/storage/{storage}/content"),
        &[("content".to_owned(), "vztmpl".to_owned())],
    )?;
    let present = listing
        .as_array()
        .into_iter()
        .flatten()
        .any(|item| item.get("volid").and_then(Value::as_str) == Some(volid.as_str()));
    if present {
        preflight.passed.push(format!("template {volid} is there"));
        return Ok(());
    }
    let name = volid.rsplit('/').next().unwrap_or(&volid).to_owned();
    let index = api.get(&format!("/nodes/{node}/aplinfo"))?;
    let offered = index
        .as_array()
        .into_iter()
        .flatten()
        .any(|item| item.get("template").and_then(Value::as_str) == Some(name.as_str()));
    if offered {
        preflight.passed.push(format!(
            "template {volid} is downloaded from the node's appliance index"
        ));
        preflight.template_download = Some(name);
    } else {
        preflight.problems.push(format!(
            "images.lxc_template: the container template {name} is not on storage '{storage}' and the node's appliance index does not offer it; run `pveam update` on the node, or set [images.lxc_template] url and sha512"
        ));
    }
    Ok(())
}
