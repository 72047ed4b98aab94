//! The live state of the node, read through the API, compared with what the lab wants: an
//! ordered list of changes (create, update in place, replace, delete) printed like
//! `terraform plan`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::client::{ApiError, ProxmoxApi};
use super::desired::{lab_of_comments, lab_of_description, Kind, Resource, MANAGED_TAG};
use super::ha::RULES_SINCE;
use crate::mac::MacAddr;
use crate::model::Lab;

/// Why the node's state could not be read, or the lab cannot be planned onto it.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An API call reading the node's state failed.
    #[error("reading the node's state: {0}")]
    Api(#[from] ApiError),
    /// A guest of the lab is on a node lab.toml does not list (HA or an admin moved it there):
    /// its `pct`/`qm` commands could not reach it, nor its NICs the lab's VNets.
    #[error("{what} is on node {node}, which lab.toml does not list: add it as a [[node]] (name = \"{node}\", its management address, its budget) so lab-bootstrap can reach the guest there, or move the guest back (`{migrate} {id} <node>`); nothing was changed")]
    UnlistedNode {
        /// The guest, as `kind id (name)`.
        what: String,
        /// The node it is on.
        node: String,
        /// `pct migrate` or `qm migrate`.
        migrate: &'static str,
        /// Its VMID.
        id: u32,
    },
    /// Something the lab wants is there already and is not this lab's to change: of another
    /// kind, another lab's, or differing without our marks.
    #[error(
        "{what} already exists and is not managed by lab-bootstrap ({why}); change lab.toml or remove it by hand"
    )]
    Conflict {
        /// The resource, as `kind id (name)`.
        what: String,
        /// What it is instead, whose it is, or which keys differ.
        why: String,
    },
    /// `/version` names no Proxmox VE release like `9.0.3`.
    #[error("GET /version: no Proxmox VE release in {0}")]
    Version(String),
    /// A list the API returned is no list, or a guest in it has no VMID.
    #[error("GET {path}: unexpected answer: {answer}")]
    Shape {
        /// The API path read.
        path: String,
        /// What it answered, as JSON.
        answer: String,
    },
}

/// A guest or bridge as the node has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveResource {
    /// Bridge, container or VM.
    pub kind: Kind,
    /// Its configuration as the API reads it, every value as text (booleans as 0 and 1).
    pub config: BTreeMap<String, String>,
    /// Whether the guest runs (never for a bridge).
    pub running: bool,
    /// The node it is on (guests, bridges); empty for what is the cluster's.
    pub node: String,
}

impl LiveResource {
    /// The lab that made this, as its own marks say: a bridge's comments, a guest's
    /// description (with the tag, which alone anyone can put on anything).
    pub fn lab(&self) -> Option<&str> {
        match self.kind {
            Kind::Bridge => lab_of_comments(self.config.get("comments")?),
            // A subnet and a zone have no mark of their own: [`read_live`] gives them their
            // VNets' (a zone only when all its VNets are one lab's).
            Kind::Zone | Kind::Vnet | Kind::Subnet => lab_of_comments(self.config.get("alias")?),
            Kind::HaResource | Kind::HaRule | Kind::HaGroup => {
                lab_of_comments(self.config.get("comment")?)
            }
            Kind::Container | Kind::Vm => {
                let tagged = self
                    .config
                    .get("tags")
                    .is_some_and(|t| t.split([';', ',', ' ']).any(|t| t == MANAGED_TAG));
                if !tagged {
                    return None;
                }
                lab_of_description(self.config.get("description")?)
            }
        }
    }

    /// Whether lab-bootstrap made this for `lab`. Other labs on the node, and what carries
    /// our tag or comment without having been made by us, are never changed or removed.
    pub fn managed(&self, lab: &str) -> bool {
        self.lab() == Some(lab)
    }
}

/// Bridges by name and guests by VMID; on several nodes the SDN and HA objects too.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// The router node's bridges, by interface name.
    pub bridges: BTreeMap<String, LiveResource>,
    /// The nodes' containers and VMs, by VMID.
    pub guests: BTreeMap<u32, LiveResource>,
    /// SDN zones, VNets, subnets and HA objects, by kind and id.
    pub cluster: BTreeMap<(Kind, String), LiveResource>,
    /// SDN objects of ours have changes not put into effect yet (`PUT /cluster/sdn` is due).
    pub sdn_pending: bool,
    /// The Proxmox VE major release (read on several nodes only).
    pub pve_major: Option<u32>,
}

impl Live {
    /// The node each guest is on, by VMID: where the host side runs its `pct` and `qm`.
    pub fn guest_nodes(&self) -> BTreeMap<u32, String> {
        self.guests
            .iter()
            .map(|(id, guest)| (*id, guest.node.clone()))
            .collect()
    }
}

/// Reads bridges (of the router node), containers and VMs (with their configs; on one node
/// from it, on several from wherever in the cluster each is now) and, on several nodes, the
/// Proxmox release, the SDN objects and the HA objects.
pub fn read_live(api: &dyn ProxmoxApi, lab: &Lab) -> Result<Live, PlanError> {
    let mut live = Live::default();
    let node = &lab.proxmox.node;
    let path = format!("/nodes/{node}/network");
    for iface in list(api, &path)? {
        let config = flatten(&iface);
        if config.get("type").map(String::as_str) != Some("bridge") {
            continue;
        }
        if let Some(name) = config.get("iface").cloned() {
            live.bridges.insert(
                name,
                LiveResource {
                    kind: Kind::Bridge,
                    config,
                    running: false,
                    node: node.clone(),
                },
            );
        }
    }
    if lab.is_cluster() {
        read_cluster_guests(api, &mut live)?;
        let major = read_major(api)?;
        live.pve_major = Some(major);
        read_sdn(api, lab.cluster.name.as_str(), &mut live)?;
        read_ha(api, major, &mut live)?;
    } else {
        read_guests(api, node, &mut live)?;
    }
    Ok(live)
}

fn read_guests(api: &dyn ProxmoxApi, node: &str, live: &mut Live) -> Result<(), PlanError> {
    for kind in [Kind::Container, Kind::Vm] {
        let path = format!("/nodes/{node}/{}", kind.api());
        for guest in list(api, &path)? {
            let vmid = guest
                .get("vmid")
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| PlanError::Shape {
                    path: path.clone(),
                    answer: guest.to_string(),
                })?;
            let running = guest.get("status").and_then(Value::as_str) == Some("running");
            let config = api.get(&format!("{path}/{vmid}/config"))?;
            live.guests.insert(
                vmid,
                LiveResource {
                    kind,
                    config: flatten(&config),
                    running,
                    node: node.to_owned(),
                },
            );
        }
    }
    Ok(())
}

/// A guest as `/cluster/resources` lists it.
struct ClusterGuest {
    kind: Kind,
    vmid: u32,
    node: String,
    running: bool,
}

/// Every guest of the cluster on the node it is on now, as `/cluster/resources` reports it:
/// HA or an admin may have moved one of the lab's to another node, even to one lab.toml does
/// not list.
fn cluster_guests(api: &dyn ProxmoxApi) -> Result<Vec<ClusterGuest>, PlanError> {
    let path = "/cluster/resources";
    let kind_filter = [("type".to_owned(), "vm".to_owned())];
    let answer = match api.call(super::client::Method::Get, path, &kind_filter)? {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => {
            return Err(PlanError::Shape {
                path: path.to_owned(),
                answer: other.to_string(),
            })
        }
    };
    let mut out = Vec::new();
    for guest in answer {
        let kind = match guest.get("type").and_then(Value::as_str) {
            Some("lxc") => Kind::Container,
            Some("qemu") => Kind::Vm,
            _ => continue,
        };
        let shape = || PlanError::Shape {
            path: path.to_owned(),
            answer: guest.to_string(),
        };
        let vmid = guest
            .get("vmid")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(shape)?;
        let node = guest
            .get("node")
            .and_then(Value::as_str)
            .ok_or_else(shape)?
            .to_owned();
        let running = guest.get("status").and_then(Value::as_str) == Some("running");
        out.push(ClusterGuest {
            kind,
            vmid,
            node,
            running,
        });
    }
    Ok(out)
}

fn read_cluster_guests(api: &dyn ProxmoxApi, live: &mut Live) -> Result<(), PlanError> {
    for guest in cluster_guests(api)? {
        let (kind, vmid) = (guest.kind, guest.vmid);
        let config = api.get(&format!(
            "/nodes/{}/{}/{vmid}/config",
            guest.node,
            kind.api()
        ))?;
        live.guests.insert(
            vmid,
            LiveResource {
                kind,
                config: flatten(&config),
                running: guest.running,
                node: guest.node,
            },
        );
    }
    Ok(())
}

/// The node each guest is on, by VMID, for the commands that act on guests without a plan
/// (`upgrade talos`); empty on one node, where every guest is on it.
pub fn guest_nodes(api: &dyn ProxmoxApi, lab: &Lab) -> Result<BTreeMap<u32, String>, PlanError> {
    if !lab.is_cluster() {
        return Ok(BTreeMap::new());
    }
    Ok(cluster_guests(api)?
        .into_iter()
        .map(|g| (g.vmid, g.node))
        .collect())
}

/// The major release from `/version` (`9.0.3` → 9).
fn read_major(api: &dyn ProxmoxApi) -> Result<u32, PlanError> {
    let version = api.get("/version")?;
    let text = version
        .get("release")
        .or(version.get("version"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    text.split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .ok_or_else(|| PlanError::Version(version.to_string()))
}

/// An SDN object as `?pending=1` lists it: the running values, with the changes not yet in
/// effect on top (`pending`), and whether there are any (`state`); `None` for one deleted
/// but still running.
fn sdn_config(item: &Value) -> (Option<BTreeMap<String, String>>, bool) {
    let mut config = flatten(item);
    let state = config.remove("state");
    if let Some(pending) = item.get("pending") {
        for (key, value) in flatten(pending) {
            if value == "deleted" {
                config.remove(&key);
            } else {
                config.insert(key, value);
            }
        }
    }
    let deleted = state.as_deref() == Some("deleted");
    ((!deleted).then_some(config), state.is_some())
}

fn read_sdn(api: &dyn ProxmoxApi, lab: &str, live: &mut Live) -> Result<(), PlanError> {
    let pending = [("pending".to_owned(), "1".to_owned())];
    let read = |path: &str| -> Result<Vec<Value>, PlanError> {
        match api.call(super::client::Method::Get, path, &pending)? {
            Value::Array(items) => Ok(items),
            Value::Null => Ok(Vec::new()),
            other => Err(PlanError::Shape {
                path: path.to_owned(),
                answer: other.to_string(),
            }),
        }
    };
    let mut vnet_zone: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    for item in read("/cluster/sdn/vnets")? {
        let (config, pending) = sdn_config(&item);
        let raw = flatten(&item);
        let alias = config.as_ref().unwrap_or(&raw).get("alias").cloned();
        let ours = alias.as_deref().and_then(lab_of_comments) == Some(lab);
        live.sdn_pending |= pending && ours;
        let Some(config) = config else { continue };
        let Some(vnet) = config.get("vnet").cloned() else {
            continue;
        };
        let zone = config.get("zone").cloned().unwrap_or_default();
        vnet_zone.insert(vnet.clone(), (zone, alias.clone()));
        for subnet in read(&format!("/cluster/sdn/vnets/{vnet}/subnets"))? {
            let (sub, sub_pending) = sdn_config(&subnet);
            live.sdn_pending |= sub_pending && ours;
            let Some(mut sub) = sub else { continue };
            let Some(id) = sub.get("subnet").cloned() else {
                continue;
            };
            if let Some(alias) = &alias {
                sub.insert("alias".to_owned(), alias.clone());
            }
            live.cluster.insert(
                (Kind::Subnet, format!("{vnet}/{id}")),
                cluster_resource(Kind::Subnet, sub),
            );
        }
        live.cluster
            .insert((Kind::Vnet, vnet), cluster_resource(Kind::Vnet, config));
    }
    for item in read("/cluster/sdn/zones")? {
        let (config, pending) = sdn_config(&item);
        let Some(mut config) = config else { continue };
        let Some(zone) = config.get("zone").cloned() else {
            continue;
        };
        let aliases: Vec<Option<&String>> = vnet_zone
            .values()
            .filter(|(z, _)| *z == zone)
            .map(|(_, alias)| alias.as_ref())
            .collect();
        let first = aliases.first().copied().flatten();
        let one_lab = first.and_then(|a| lab_of_comments(a)).filter(|l| {
            aliases
                .iter()
                .all(|a| a.and_then(|a| lab_of_comments(a)) == Some(l))
        });
        if let (Some(_), Some(alias)) = (one_lab, first) {
            config.insert("alias".to_owned(), alias.clone());
        }
        live.sdn_pending |= pending && one_lab == Some(lab);
        live.cluster
            .insert((Kind::Zone, zone), cluster_resource(Kind::Zone, config));
    }
    Ok(())
}

fn read_ha(api: &dyn ProxmoxApi, major: u32, live: &mut Live) -> Result<(), PlanError> {
    let affinity = if major >= RULES_SINCE {
        (Kind::HaRule, "rule")
    } else {
        (Kind::HaGroup, "group")
    };
    for (kind, id_key) in [(Kind::HaResource, "sid"), affinity] {
        for item in list(api, &format!("/cluster/{}", kind.api()))? {
            let config = flatten(&item);
            if let Some(id) = config.get(id_key).cloned() {
                live.cluster
                    .insert((kind, id), cluster_resource(kind, config));
            }
        }
    }
    Ok(())
}

fn cluster_resource(kind: Kind, config: BTreeMap<String, String>) -> LiveResource {
    LiveResource {
        kind,
        config,
        running: false,
        node: String::new(),
    }
}

/// A list the API returned (`null` is an empty one).
pub(super) fn list(api: &dyn ProxmoxApi, path: &str) -> Result<Vec<Value>, PlanError> {
    match api.get(path)? {
        Value::Array(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        other => Err(PlanError::Shape {
            path: path.to_owned(),
            answer: other.to_string(),
        }),
    }
}

/// The API answers with numbers and strings; compared in wire form.
fn flatten(object: &Value) -> BTreeMap<String, String> {
    object
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.trim_end().to_owned(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => u8::from(*b).to_string(),
                _ => return None,
            };
            Some((k.clone(), text))
        })
        .collect()
}

/// What a change does to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Creates it: the node does not have it.
    Create,
    /// Sets the keys that differ on the existing one.
    Update,
    /// Deletes it (stopped first if it runs) and creates it again: a key that differs cannot
    /// be changed on an existing guest.
    Replace,
    /// Deletes it (stopped first if it runs): it is this lab's and no longer wanted.
    Delete,
}

/// One key that differs: its live value (none when unset) and the wanted one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// The API parameter.
    pub key: String,
    /// Its value on the node.
    pub live: Option<String>,
    /// Its value as the lab wants it.
    pub wanted: String,
}

/// One change to one resource.
#[derive(Debug, Clone)]
pub struct Change {
    /// What it does.
    pub action: ChangeKind,
    /// The resource as the lab wants it; for a deletion, its kind, id and name on the node.
    pub resource: Resource,
    /// The keys that differ (for an update or a replacement).
    pub diffs: Vec<Diff>,
    /// A guest that must be stopped before it is deleted or replaced.
    pub running: bool,
}

/// What apply (or destroy) changes on the node, read-only.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The Proxmox node's name.
    pub node: String,
    /// In the order they are carried out.
    pub changes: Vec<Change>,
    /// Bridges of ours exist but are not up yet (an apply was interrupted between writing
    /// them and reloading the node's network): the reload is still due.
    pub reload_network: bool,
    /// SDN objects of ours have changes not in effect yet: `PUT /cluster/sdn` is due.
    pub reload_sdn: bool,
    /// On several nodes, all of them (`node` is the router node); empty on one.
    pub nodes: Vec<String>,
    /// The lab's guests that are on another node than placement puts them on: changed where
    /// they are, never moved back (that would fight HA).
    pub moved: Vec<Moved>,
}

/// A guest of the lab on another node than the one placement gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// Container or VM.
    pub kind: Kind,
    /// Its VMID.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The node it is on.
    pub node: String,
    /// The node placement puts it on (where lab-bootstrap created it).
    pub placed: String,
}

impl Plan {
    /// Whether there is nothing to change on the node.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && !self.reload_network && !self.reload_sdn
    }

    fn count(&self, action: ChangeKind) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    /// `terraform plan`-style text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let cluster = !self.nodes.is_empty();
        if cluster {
            let _ = writeln!(
                out,
                "Lab router (gateway, DHCP, firewall on the VNets' bridges): node {}\n",
                self.node
            );
        }
        for m in &self.moved {
            let _ = writeln!(
                out,
                "  {} {} ({}): on node {}, placed on {}: left there (HA moved it, or an admin)",
                m.kind.as_str(),
                m.id,
                m.name,
                m.node,
                m.placed
            );
        }
        if !self.moved.is_empty() {
            let _ = writeln!(out);
        }
        if self.is_empty() {
            if cluster {
                let _ = writeln!(
                    out,
                    "No changes. The nodes {} match lab.toml.",
                    self.nodes.join(", ")
                );
            } else {
                let _ = writeln!(out, "No changes. The node {} matches lab.toml.", self.node);
            }
            return out;
        }
        if cluster {
            let _ = writeln!(
                out,
                "lab-bootstrap will perform the following actions on nodes {}:\n",
                self.nodes.join(", ")
            );
        } else {
            let _ = writeln!(
                out,
                "lab-bootstrap will perform the following actions on node {}:\n",
                self.node
            );
        }
        if self.reload_sdn {
            let _ = writeln!(
                out,
                "  # the SDN changes not in effect yet will be applied\n  ~ sdn of the cluster\n"
            );
        }
        if self.reload_network {
            let _ = writeln!(
                out,
                "  # the node's pending network changes will be applied\n  ~ network of {}\n",
                self.node
            );
        }
        for c in &self.changes {
            let r = &c.resource;
            let (sign, verb) = match c.action {
                ChangeKind::Create => ("+", "will be created"),
                ChangeKind::Update => ("~", "will be updated in place"),
                ChangeKind::Replace => ("-/+", "must be replaced"),
                ChangeKind::Delete => ("-", "will be destroyed"),
            };
            let place = if cluster && !r.kind.is_cluster_wide() {
                format!(" on {}", r.node)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  # {} {} ({}){place} {verb}",
                r.kind.as_str(),
                r.id,
                r.name
            );
            let _ = writeln!(out, "  {sign} {} \"{}\"", r.kind.as_str(), r.id);
            match c.action {
                ChangeKind::Create => {
                    for (k, v) in &r.create {
                        let _ = writeln!(out, "      + {k:<12} = {v:?}");
                    }
                }
                ChangeKind::Update | ChangeKind::Replace => {
                    for d in &c.diffs {
                        let live = d.live.as_deref().unwrap_or("(unset)");
                        let note = if r.forces_replace(&d.key) {
                            " # forces replacement"
                        } else {
                            ""
                        };
                        let _ = writeln!(
                            out,
                            "      ~ {:<12} = {live:?} -> {:?}{note}",
                            d.key, d.wanted
                        );
                    }
                }
                ChangeKind::Delete => {}
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(
            out,
            "Plan: {} to add, {} to change, {} to replace, {} to destroy.",
            self.count(ChangeKind::Create),
            self.count(ChangeKind::Update),
            self.count(ChangeKind::Replace),
            self.count(ChangeKind::Delete)
        );
        out
    }
}

/// Compares the wanted resources with the live ones. Creates and updates come in the order of
/// `wanted` (bridges before the guests on them), then deletions of what is ours but no longer
/// wanted: guests before bridges.
/// Only what is `lab`'s ([`LiveResource::managed`]) is ever changed or deleted.
pub fn plan(node: &str, lab: &str, wanted: &[Resource], live: &Live) -> Result<Plan, PlanError> {
    let mut changes = Vec::new();
    let mut moved = Vec::new();
    let mut reload_network = false;
    for r in wanted {
        let existing = match r.kind {
            Kind::Bridge => live.bridges.get(&r.id),
            Kind::Container | Kind::Vm => {
                r.id.parse().ok().and_then(|id: u32| live.guests.get(&id))
            }
            _ => live.cluster.get(&(r.kind, r.id.clone())),
        };
        let Some(existing) = existing else {
            changes.push(Change {
                action: ChangeKind::Create,
                resource: r.clone(),
                diffs: Vec::new(),
                running: false,
            });
            continue;
        };
        let what = format!("{} {} ({})", r.kind.as_str(), r.id, r.name);
        if existing.kind != r.kind {
            return Err(PlanError::Conflict {
                what,
                why: format!("it is a {}", existing.kind.as_str()),
            });
        }
        let guest = matches!(r.kind, Kind::Container | Kind::Vm);
        if guest && existing.node != r.node && existing.managed(lab) {
            moved.push(Moved {
                kind: r.kind,
                id: r.id.clone(),
                name: r.name.clone(),
                node: existing.node.clone(),
                placed: r.node.clone(),
            });
        }
        let diffs = diff(r, &existing.config);
        if r.kind == Kind::Bridge && existing.config.get("active").map(String::as_str) != Some("1")
        {
            reload_network = true;
        }
        if diffs.is_empty() {
            continue;
        }
        if !existing.managed(lab) {
            let why = match existing.lab() {
                Some(other) => format!("it is lab {other}'s"),
                None => format!("it differs in {}", keys(&diffs)),
            };
            return Err(PlanError::Conflict { what, why });
        }
        let action = if diffs.iter().any(|d| r.forces_replace(&d.key)) {
            ChangeKind::Replace
        } else {
            ChangeKind::Update
        };
        let mut resource = r.clone();
        if !r.kind.is_cluster_wide() {
            // A guest is changed where it is: lab-bootstrap places new guests, never moves one.
            resource.node = existing.node.clone();
        }
        changes.push(Change {
            action,
            resource,
            diffs,
            running: existing.running,
        });
    }
    changes.extend(deletions(live, lab, |kind, id| {
        wanted.iter().any(|r| r.kind == kind && r.id == id)
    }));
    Ok(Plan {
        node: node.to_owned(),
        changes,
        reload_network,
        reload_sdn: live.sdn_pending,
        nodes: Vec::new(),
        moved,
    })
}

/// Removing everything of `lab`'s: guests first, then bridges.
pub fn destroy_plan(node: &str, lab: &str, live: &Live) -> Plan {
    Plan {
        node: node.to_owned(),
        changes: deletions(live, lab, |_, _| false),
        reload_network: false,
        reload_sdn: live.sdn_pending,
        nodes: Vec::new(),
        moved: Vec::new(),
    }
}

/// Fails on the first guest of `lab`'s that is on a node lab.toml does not list: apply could
/// neither run its commands there nor give it the lab's networks.
pub fn check_nodes_listed(lab: &Lab, live: &Live) -> Result<(), PlanError> {
    let listed = lab.node_names();
    let name = lab.cluster.name.as_str();
    for (id, guest) in &live.guests {
        if !guest.managed(name) || listed.contains(&guest.node) {
            continue;
        }
        let label = guest
            .config
            .get("hostname")
            .or(guest.config.get("name"))
            .cloned()
            .unwrap_or_else(|| id.to_string());
        return Err(PlanError::UnlistedNode {
            what: format!("{} {id} ({label})", guest.kind.as_str()),
            node: guest.node.clone(),
            migrate: if guest.kind == Kind::Container {
                "pct migrate"
            } else {
                "qm migrate"
            },
            id: *id,
        });
    }
    Ok(())
}

/// The order things of ours go: what names a guest before the guest, what carries the
/// guests after them, each SDN object before what holds it.
fn deletion_rank(kind: Kind) -> u8 {
    match kind {
        Kind::HaRule => 0,
        Kind::HaResource => 1,
        Kind::HaGroup => 2,
        Kind::Container | Kind::Vm => 3,
        Kind::Subnet => 4,
        Kind::Vnet => 5,
        Kind::Zone => 6,
        Kind::Bridge => 7,
    }
}

fn deletions(live: &Live, lab: &str, keep: impl Fn(Kind, &str) -> bool) -> Vec<Change> {
    let guests = live
        .guests
        .iter()
        .map(|(id, l)| (id.to_string(), l))
        .collect::<Vec<_>>();
    let bridges = live.bridges.iter().map(|(n, l)| (n.clone(), l));
    let cluster = live.cluster.iter().map(|((_, id), l)| (id.clone(), l));
    let mut out: Vec<Change> = guests
        .into_iter()
        .chain(bridges)
        .chain(cluster)
        .filter(|(id, l)| l.managed(lab) && !keep(l.kind, id))
        .map(|(id, l)| Change {
            action: ChangeKind::Delete,
            resource: Resource {
                kind: l.kind,
                name: l
                    .config
                    .get("hostname")
                    .or(l.config.get("name"))
                    .cloned()
                    .unwrap_or_else(|| id.clone()),
                id,
                node: l.node.clone(),
                create: BTreeMap::new(),
            },
            diffs: Vec::new(),
            running: l.running,
        })
        .collect();
    out.sort_by_key(|c| deletion_rank(c.resource.kind));
    out
}

fn keys(diffs: &[Diff]) -> String {
    diffs
        .iter()
        .map(|d| d.key.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The keys of `r` whose live value differs from the wanted one.
fn diff(r: &Resource, live: &BTreeMap<String, String>) -> Vec<Diff> {
    r.create
        .iter()
        .filter(|(k, _)| !r.create_only(k))
        .filter(|(k, v)| live.get(*k).is_none_or(|l| !same(k, v, l)))
        .map(|(k, v)| Diff {
            key: k.clone(),
            live: live.get(k).cloned(),
            wanted: v.clone(),
        })
        .collect()
}

/// Whether a live value already says what the wanted one says. Property strings are compared
/// key by key (the node adds keys of its own, like `type=veth` or a disk's `size`); MACs
/// ignoring case; tag lists as sets.
fn same(key: &str, wanted: &str, live: &str) -> bool {
    // Lists the node may give back in its own order (tags; SDN peers; HA nodes, resources).
    if matches!(key, "tags" | "peers" | "nodes" | "resources") {
        let set = |s: &str| {
            let mut v: Vec<String> = s
                .split([';', ',', ' '])
                .filter(|t| !t.is_empty())
                .map(str::to_ascii_lowercase)
                .collect();
            v.sort();
            v
        };
        return set(wanted) == set(live);
    }
    if !wanted.contains('=') {
        // A lone value is the format's default key, which the node may print with its name
        // (`/dev/net/tun` comes back as `path=/dev/net/tun` or as it was given).
        let first = live.split(',').next().unwrap_or(live);
        let value = first.split_once('=').map_or(first, |(_, v)| v);
        return norm(wanted) == norm(first) || norm(wanted) == norm(value);
    }
    let live_parts = parts(live);
    parts(wanted)
        .iter()
        .all(|(k, v)| live_parts.get(k).is_some_and(|l| norm(l) == norm(v)))
}

fn parts(s: &str) -> BTreeMap<String, String> {
    s.split(',')
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (String::new(), p.to_owned()),
        })
        .collect()
}

fn norm(v: &str) -> String {
    match v.parse::<MacAddr>() {
        Ok(mac) => mac.to_string(),
        Err(_) => v.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(tags: &str, description: &str) -> LiveResource {
        LiveResource {
            kind: Kind::Vm,
            config: [("tags", tags), ("description", description)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            running: false,
            node: "pve".to_owned(),
        }
    }

    fn bridge(comments: &str) -> LiveResource {
        LiveResource {
            kind: Kind::Bridge,
            config: [("comments".to_owned(), comments.to_owned())].into(),
            running: false,
            node: "pve".to_owned(),
        }
    }

    #[test]
    fn managed_means_made_for_this_lab() {
        let ours = "cp1: control-plane of lab homelab; managed by lab-bootstrap";
        assert!(guest("lab-bootstrap;control-plane", ours).managed("homelab"));
        // Notes added in the UI around our line change nothing.
        let noted = format!("do not touch\n{ours}\nreally");
        assert!(guest("control-plane;lab-bootstrap", &noted).managed("homelab"));
        assert!(!guest("lab-bootstrap", ours).managed("lab"));
        assert!(!guest("lab-bootstrap", ours).managed("home"));
        assert!(!guest("lab-bootstrap", ours).managed("myhomelab"));
        let theirs = "cp1: control-plane of lab myhomelab; managed by lab-bootstrap";
        assert!(!guest("lab-bootstrap", theirs).managed("homelab"));
        // The tag alone, or the description without the tag, is not ours.
        assert!(!guest("lab-bootstrap", "").managed("homelab"));
        assert!(!guest("lab-bootstrap", "managed by lab-bootstrap").managed("homelab"));
        assert!(!guest("other", ours).managed("homelab"));

        assert!(bridge("managed by lab-bootstrap: net1 of lab homelab").managed("homelab"));
        assert!(!bridge("managed by lab-bootstrap: net1 of lab homelab").managed("lab"));
        assert!(!bridge("managed by lab-bootstrap: net1 of lab homelab2").managed("homelab"));
        assert!(!bridge("managed by lab-bootstrap").managed("homelab"));
        assert!(!bridge("net1 of lab homelab").managed("homelab"));
    }
}
