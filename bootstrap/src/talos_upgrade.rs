//! `lab-bootstrap upgrade talos VERSION`: a rolling Talos upgrade of the running lab. Workers
//! first, then the control planes, one node at a time, each taken down only while the cluster
//! is healthy (and, for a control plane, while etcd has every control plane as a member): its
//! servers drained at the balancer until nothing runs through them, `Upgrade` to the Image
//! Factory installer of the lab's schematic at VERSION, back at VERSION and healthy, its
//! servers enabled. A node already at VERSION is skipped, so a run that was interrupted is
//! simply run again. lab.toml's `[cluster] talos_version` is the lab's record of the release:
//! it is set after the last node.

use crate::balancer::{Balancer, BalancerError, Server};
use crate::model::{FactoryImage, Lab, NetworkId, Role};
use crate::peers::{LabSource, PeerError};
use crate::progress::Stage;
use crate::talos::cluster::Access;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// What `upgrade talos` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Talos release to run, `v1.13.10`.
    pub version: String,
    /// Print the sequence, change nothing.
    pub dry_run: bool,
    /// How long a node's servers may take to finish what runs through them.
    pub drain_timeout: Duration,
    /// How long a node may take to come back at the new release and the cluster to be
    /// healthy again; also how long an unhealthy cluster is waited for before a node is taken
    /// down.
    pub node_timeout: Duration,
}

/// Why the upgrade stopped.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// VERSION is not a Talos release.
    #[error("VERSION `{0}` is not a Talos release (v1.MINOR.PATCH, as v1.13.10)")]
    Version(String),
    /// The balancer cannot be reached.
    #[error(transparent)]
    Balancer(#[from] BalancerError),
    /// A node could not be asked, upgraded or waited for; nodes before it are done.
    #[error("{node}: {step}: {reason}\nthe nodes before {node} are upgraded; `lab-bootstrap upgrade talos {version}` again goes on from {node}{held}")]
    Node {
        /// The node, as `cp1 (10.10.1.11)`.
        node: String,
        /// What was being done.
        step: &'static str,
        /// What went wrong.
        reason: String,
        /// The release being installed.
        version: String,
        /// What is left drained at the balancer, if anything.
        held: String,
    },
    /// Taking the node down now could cost the cluster (etcd) or it is not healthy.
    #[error("not taking {node} down: {why}; nothing was changed on {node}")]
    Unsafe {
        /// The node, as `cp2 (10.10.1.12)`.
        node: String,
        /// What is wrong.
        why: String,
    },
    /// lab.toml would not be valid at VERSION: refused before any node is touched.
    #[error("lab.toml with [cluster] talos_version = \"{version}\" would not be valid, and the upgrade must end with lab.toml saying so; nothing was changed: {source}")]
    WouldBeInvalid {
        /// The release.
        version: String,
        /// Why.
        source: Box<PeerError>,
    },
    /// The nodes are upgraded, but lab.toml could not record the release.
    #[error("every node runs {version}, but lab.toml's [cluster] talos_version could not be set: {source}")]
    Record {
        /// The release.
        version: String,
        /// Why.
        source: Box<PeerError>,
    },
}

/// A Talos node of the lab, as the upgrade goes through them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its lab.toml name.
    pub name: String,
    /// Control plane or worker.
    pub role: Role,
    /// Its net1 address: the Talos API.
    pub admin: String,
    /// Its net2 address: the kubelet's, which the balancer's servers name.
    pub kubelet: IpAddr,
}

impl Node {
    /// `cp1 (10.10.1.11)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, self.admin)
    }
}

/// The order nodes are upgraded in: the workers, then the control planes, each in lab.toml's
/// order (etcd loses a member only once every worker is done).
pub fn order(lab: &Lab) -> Vec<Node> {
    let of = |role: Role| {
        lab.machines
            .iter()
            .filter(move |m| m.role == role)
            .filter_map(move |m| {
                Some(Node {
                    name: m.name.to_string(),
                    role,
                    admin: m.address_on(NetworkId::Net1)?.to_string(),
                    kubelet: IpAddr::V4(m.address_on(NetworkId::Net2)?),
                })
            })
    };
    of(Role::Worker).chain(of(Role::ControlPlane)).collect()
}

/// Refuses a `version` that is no Talos release tag (`v1.MINOR.PATCH`): the installer image
/// is named by it.
pub fn check_version(version: &str) -> Result<(), UpgradeError> {
    let numbers = version.strip_prefix("v1.").unwrap_or_default();
    let parts: Vec<&str> = numbers.split('.').collect();
    let release = parts.len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if release {
        Ok(())
    } else {
        Err(UpgradeError::Version(version.to_owned()))
    }
}

/// What the upgrade did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The nodes upgraded by this run.
    pub upgraded: Vec<String>,
    /// The nodes already at the release.
    pub skipped: Vec<String>,
    /// Whether lab.toml's `talos_version` was changed.
    pub recorded: bool,
}

/// Upgrades `lab` (read from `lab_file`) as [`Options`] say, through `access` and `balancer`,
/// telling `out` what happens.
pub fn run(
    lab: &Lab,
    lab_file: &Path,
    access: &Access,
    balancer: &mut Balancer<'_>,
    options: &Options,
    out: &mut dyn Write,
) -> Result<Outcome, UpgradeError> {
    let version = options.version.as_str();
    check_version(version)?;
    let run = Run {
        lab,
        access,
        options,
        installer: FactoryImage::new(&lab.cluster.talos_extensions, version).installer,
    };
    let installer = &run.installer;
    let nodes = order(lab);
    // The release is recorded at the end: a lab.toml that cannot take it is refused now.
    if lab.cluster.talos_version != version {
        edited(lab_file, version).map_err(|source| UpgradeError::WouldBeInvalid {
            version: version.to_owned(),
            source: Box::new(source),
        })?;
    }
    if options.dry_run {
        run.print_sequence(lab_file, balancer, &nodes, out)?;
        return Ok(Outcome::default());
    }
    let _ = writeln!(
        out,
        "upgrading {} Talos nodes to {version} one by one (installer {installer})",
        nodes.len()
    );
    let mut outcome = Outcome::default();
    for node in &nodes {
        if run.node(balancer, node, out)? {
            outcome.upgraded.push(node.name.clone());
        } else {
            outcome.skipped.push(node.name.clone());
        }
    }
    outcome.recorded = record(lab_file, lab, version)?;
    if outcome.recorded {
        let _ = writeln!(
            out,
            "every node runs {version}: {} now says [cluster] talos_version = \"{version}\" (was {}); `lab-bootstrap plan` shows the machine configs and images that follow it",
            lab_file.display(),
            lab.cluster.talos_version
        );
    } else {
        let _ = writeln!(
            out,
            "every node runs {version}, as {} already says",
            lab_file.display()
        );
    }
    Ok(outcome)
}

/// One run of the upgrade: the lab, how to reach its nodes, what was asked, the installer.
struct Run<'a> {
    lab: &'a Lab,
    access: &'a Access,
    options: &'a Options,
    installer: String,
}

impl Run<'_> {
    /// Upgrades one node; false when it already ran `options.version` (its servers are enabled
    /// if an interrupted run left them drained).
    fn node(
        &self,
        balancer: &mut Balancer<'_>,
        node: &Node,
        out: &mut dyn Write,
    ) -> Result<bool, UpgradeError> {
        let (access, options, installer) = (self.access, self.options, self.installer.as_str());
        let version = options.version.as_str();
        let failed = |step: &'static str, reason: String, held: &[Server]| UpgradeError::Node {
            node: node.label(),
            step,
            reason,
            version: version.to_owned(),
            held: if held.is_empty() {
                String::new()
            } else {
                format!(
                    " (left drained at the balancer until then: {})",
                    held.iter().map(Server::name).collect::<Vec<_>>().join(", ")
                )
            },
        };
        let running = access
            .node_version(&node.admin)
            .map_err(|e| failed("Version", e.to_string(), &[]))?;
        if running.tag == version {
            // A run stopped between this node's upgrade and its servers' enabling left them out.
            let held: Vec<Server> = balancer
                .servers_of(node.kubelet)?
                .into_iter()
                .filter(Server::is_held_back)
                .collect();
            for server in &held {
                balancer
                    .enable(server)
                    .map_err(|e| failed("enable at the balancer", e.to_string(), &held))?;
            }
            let enabled = if held.is_empty() {
                String::new()
            } else {
                format!(
                    "; enabled again at the balancer: {}",
                    held.iter().map(Server::name).collect::<Vec<_>>().join(", ")
                )
            };
            let _ = writeln!(
                out,
                "  - {} already runs {version}: skipped{enabled}",
                node.label()
            );
            return Ok(false);
        }
        let mut stage = Stage::start(
            &node.name,
            &format!("{} → {version}: the cluster to be healthy", running.tag),
        );
        let outcome = (|| -> Result<Vec<Server>, UpgradeError> {
            self.ensure_safe(node, &mut stage)?;
            let servers = balancer.servers_of(node.kubelet)?;
            for server in &servers {
                stage.waiting_for(&format!("draining {}", server.name()));
                balancer
                    .drain(server)
                    .map_err(|e| failed("drain at the balancer", e.to_string(), &servers))?;
            }
            for server in &servers {
                stage.waiting_for(&format!(
                    "{} to finish what runs through it (at most {}s)",
                    server.name(),
                    options.drain_timeout.as_secs()
                ));
                balancer
                    .wait_drained(server, options.drain_timeout)
                    .map_err(|e| failed("wait until drained", e.to_string(), &servers))?;
            }
            stage.waiting_for(&format!("Upgrade to {installer}"));
            access
                .upgrade_node(&node.admin, installer)
                .map_err(|e| failed("Upgrade", e.to_string(), &servers))?;
            let started = Instant::now();
            access
                .wait_version(
                    &node.name,
                    &node.admin,
                    version,
                    options.node_timeout,
                    &mut stage,
                )
                .map_err(|e| failed("back at the new release", e.to_string(), &servers))?;
            let left = options.node_timeout.saturating_sub(started.elapsed());
            access
                .wait_healthy(left.max(Duration::from_secs(1)), &mut stage)
                .map_err(|e| failed("cluster health after the upgrade", e.to_string(), &servers))?;
            for server in &servers {
                balancer
                    .enable(server)
                    .map_err(|e| failed("enable at the balancer", e.to_string(), &servers))?;
            }
            Ok(servers)
        })();
        match outcome {
            Ok(servers) => {
                stage.finish(
                    true,
                    &format!(
                        "{} runs {version}, healthy; enabled again at the balancer: {}",
                        node.label(),
                        Server::names(&servers)
                    ),
                );
                Ok(true)
            }
            Err(e) => {
                stage.finish(false, &format!("{} not upgraded", node.label()));
                Err(e)
            }
        }
    }

    /// Refuses to take `node` down unless the cluster is healthy (waiting for it up to the node
    /// timeout) and, for a control plane, etcd has every control plane of lab.toml as a member:
    /// a control plane taken down while another is out would leave etcd without quorum.
    fn ensure_safe(&self, node: &Node, stage: &mut Stage) -> Result<(), UpgradeError> {
        let (lab, access, options) = (self.lab, self.access, self.options);
        let unsafe_because = |why: String| UpgradeError::Unsafe {
            node: node.label(),
            why,
        };
        access
            .wait_healthy(options.node_timeout, stage)
            .map_err(|e| unsafe_because(format!("the cluster is not healthy: {e}")))?;
        if node.role != Role::ControlPlane {
            return Ok(());
        }
        let members: Vec<String> = access
            .etcd_members()
            .map_err(|e| unsafe_because(format!("etcd's members cannot be read: {e}")))?
            .into_iter()
            .map(|m| m.hostname)
            .collect();
        let missing: Vec<String> = lab
            .machines
            .iter()
            .filter(|m| m.role == Role::ControlPlane)
            .map(|m| m.name.to_string())
            .filter(|name| !members.contains(name))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(unsafe_because(format!(
                "etcd lacks control plane(s) {} (members: {})",
                missing.join(", "),
                members.join(", ")
            )))
        }
    }

    /// `--dry-run`: the sequence, with each node's release as it answers now.
    fn print_sequence(
        &self,
        lab_file: &Path,
        balancer: &mut Balancer<'_>,
        nodes: &[Node],
        out: &mut dyn Write,
    ) -> Result<(), UpgradeError> {
        let (lab, access, options, installer) =
            (self.lab, self.access, self.options, self.installer.as_str());
        let version = options.version.as_str();
        let _ = writeln!(
            out,
            "upgrade talos {version}, dry run (nothing is changed): installer {installer}"
        );
        let mut step = 0;
        for node in nodes {
            let running = match access.node_version(&node.admin) {
                Ok(v) if v.tag == version => {
                    let _ = writeln!(out, "  - {} already runs {version}: skipped", node.label());
                    continue;
                }
                Ok(v) => v.tag,
                Err(e) => format!("release unknown ({e})"),
            };
            step += 1;
            let servers = balancer.servers_of(node.kubelet)?;
            let names = if servers.is_empty() {
                "no servers at the balancer".to_owned()
            } else {
                servers
                    .iter()
                    .map(Server::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let check = match node.role {
                Role::ControlPlane => "cluster healthy and every control plane an etcd member",
                _ => "cluster healthy",
            };
            let _ = writeln!(
            out,
            "  {step}. {} ({running}): {check}; drain {names} and wait until drained (at most {}s); Upgrade; back at {version} and healthy (at most {}s); enable them again",
            node.label(),
            options.drain_timeout.as_secs(),
            options.node_timeout.as_secs()
        );
        }
        if lab.cluster.talos_version != version {
            let _ = writeln!(
                out,
                "then {}: [cluster] talos_version = \"{version}\" (now {})",
                lab_file.display(),
                lab.cluster.talos_version
            );
        }
        Ok(())
    }
}

/// lab.toml as it is now with `[cluster] talos_version` set to `version` (its line's comment
/// and spacing kept), validated as `validate` would.
fn edited(lab_file: &Path, version: &str) -> Result<LabSource, PeerError> {
    let mut source = LabSource::read(lab_file)?;
    let written = source
        .document
        .get_mut("cluster")
        .and_then(toml_edit::Item::as_table_like_mut)
        .and_then(|cluster| cluster.get_mut("talos_version"))
        .and_then(toml_edit::Item::as_value_mut)
        .ok_or_else(|| {
            PeerError::Refused(
                "lab.toml's `cluster.talos_version` is not written as a key of [cluster]; set it by hand".to_owned(),
            )
        })?;
    let decor = written.decor().clone();
    *written = toml_edit::Value::from(version);
    *written.decor_mut() = decor;
    source.validated()?;
    Ok(source)
}

/// Sets `[cluster] talos_version` in lab.toml, read again (it may have been edited during the
/// upgrade); false when it already says `version`.
fn record(lab_file: &Path, lab: &Lab, version: &str) -> Result<bool, UpgradeError> {
    if lab.cluster.talos_version == version {
        return Ok(false);
    }
    edited(lab_file, version)
        .and_then(|source| source.replace())
        .map_err(|source| UpgradeError::Record {
            version: version.to_owned(),
            source: Box::new(source),
        })?;
    Ok(true)
}
