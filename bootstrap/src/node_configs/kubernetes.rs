//! `lab-bootstrap upgrade kubernetes VERSION`: the skew rules checked first (no downgrade,
//! one minor version at a time, no newer minor than the lab's Talos release line ships), then
//! lab.toml's `[cluster] kubernetes_version` set (toml_edit: comments and layout kept; lab.toml
//! stays the source of truth, so `plan` agrees afterwards), the snippets rewritten, and each
//! node given its config with the new component images, control planes first, one at a time.

use super::applied::{node_configs, AppliedError, NodeConfig};
use super::rollout::{self, Order, RolloutError};
use crate::host::apply::write_host_file;
use crate::host::{manifest, HostError};
use crate::model::Lab;
use crate::model::{talos_default_kubernetes, talos_line_kubernetes};
use crate::render::RenderedFile;
use crate::state_dir::StateDir;
use crate::talos::cluster::Access;
use lab_daemon::config::{parse, ConfigError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml_edit::{value, DocumentMut, Item, Table};

/// A Kubernetes release, `v1.36.3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release {
    /// Always 1 so far.
    pub major: u32,
    /// The minor version, what the skew rules count.
    pub minor: u32,
    /// The patch release.
    pub patch: u32,
}

impl Release {
    /// `v1.36.3` or `1.36.3`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.strip_prefix('v').unwrap_or(text).split('.');
        let mut number = || parts.next()?.parse::<u32>().ok();
        let release = Self {
            major: number()?,
            minor: number()?,
            patch: number()?,
        };
        parts.next().is_none().then_some(release)
    }
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why `upgrade kubernetes` refused or stopped.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The version asked for cannot be upgraded to from what runs.
    #[error("{0}")]
    Refused(String),
    /// lab.toml, as it is or as edited, is not a valid lab.
    #[error("{0}")]
    Config(ConfigError),
    /// lab.toml could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The nodes' configs could not be rendered or their records read.
    #[error(transparent)]
    Applied(#[from] AppliedError),
    /// A snippet could not be rewritten.
    #[error("rewriting the snippets: {0}")]
    Snippet(#[from] HostError),
    /// The talosconfig's credentials could not be read.
    #[error(transparent)]
    Access(#[from] crate::talos::cluster::ClusterError),
    /// A node refused its config, or the cluster did not become healthy.
    #[error(transparent)]
    Rollout(#[from] RolloutError),
}

impl UpgradeError {
    /// Whether lab.toml is at fault (rather than the nodes or the system).
    pub fn is_config(&self) -> bool {
        matches!(self, UpgradeError::Config(_))
    }
}

/// What `upgrade kubernetes` works on.
#[derive(Debug, Clone)]
pub struct Upgrade<'a> {
    /// The lab.toml to upgrade (and edit).
    pub lab_file: &'a Path,
    /// The release asked for.
    pub version: &'a str,
    /// Where `/` of the host is, for the snippets.
    pub root: &'a Path,
    /// The state directory: credentials, and what each node was last given.
    pub state: &'a StateDir,
    /// Every Talos API call goes here instead of the nodes (tests).
    pub endpoint: Option<&'a str>,
    /// How long each health wait may take.
    pub within: Duration,
    /// Print the sequence, change nothing.
    pub dry_run: bool,
}

/// Checks the skew rules, then (unless a dry run) sets the release in lab.toml, rewrites the
/// snippets and gives each node its config, control planes first; returns how many nodes were
/// given one.
pub fn upgrade(upgrade: &Upgrade<'_>, out: &mut dyn Write) -> Result<usize, UpgradeError> {
    let lab = lab_daemon::config::load::<Lab>(upgrade.lab_file).map_err(UpgradeError::Config)?;
    let now = node_configs(&lab, upgrade.root, upgrade.state)?;
    if !now.iter().any(|n| n.last.is_some()) {
        return Err(UpgradeError::Refused(format!(
            "no Talos node has been given a config yet (none recorded in {}): `lab-bootstrap apply` makes the lab first",
            upgrade.state.path().display()
        )));
    }
    let running = running(&lab, &now)?;
    let wanted = check(upgrade.version, running, &lab.cluster.talos_version)?;
    let _ = writeln!(
        out,
        "Kubernetes {running} → {wanted} (Talos {}): the kubelet on every node and the API server, controller manager, scheduler and kube-proxy images on the control planes",
        lab.cluster.talos_version
    );
    let mut upgraded = lab.clone();
    upgraded.cluster.kubernetes_version = Some(wanted.to_string());
    let nodes = node_configs(&upgraded, upgrade.root, upgrade.state)?;
    let steps = rollout::sequence(&nodes, Order::ControlPlanesFirst);
    if upgrade.dry_run {
        let _ = writeln!(
            out,
            "--dry-run: nothing is changed. The upgrade would set cluster.kubernetes_version = \"{wanted}\" in {}, rewrite the nodes' snippets, then:",
            upgrade.lab_file.display()
        );
        let _ = write!(out, "{}", rollout::render_sequence(&steps));
        let access =
            Access::new(&upgraded, upgrade.state, upgrade.endpoint).map_err(|e| e.to_string());
        let _ = write!(out, "{}", rollout::preview(&nodes, &access));
        return Ok(0);
    }
    let lab = set_version(upgrade.lab_file, wanted)?;
    let _ = writeln!(
        out,
        "  {}: cluster.kubernetes_version = \"{wanted}\" (comments kept)",
        upgrade.lab_file.display()
    );
    let nodes = node_configs(&lab, upgrade.root, upgrade.state)?;
    // A VM rebuilt from its snippet must come up with what the others run.
    let mut written = manifest::load(upgrade.state).map_err(HostError::from)?;
    for node in &nodes {
        let snippet = RenderedFile {
            path: node.snippet.clone(),
            contents: node.rendered.clone(),
            mode: 0o600,
        };
        write_host_file(upgrade.root, upgrade.state, &snippet, &mut written)?;
    }
    let access = Access::new(&lab, upgrade.state, upgrade.endpoint)?;
    let done = rollout::roll(
        &nodes,
        Order::ControlPlanesFirst,
        &access,
        upgrade.state,
        upgrade.within,
        out,
    )?;
    Ok(done)
}

/// The Kubernetes release the nodes run: the oldest kubelet among the configs they were last
/// given (a config naming none runs the Talos release's default), else what lab.toml says.
pub fn running(lab: &Lab, nodes: &[NodeConfig]) -> Result<Release, UpgradeError> {
    let talos_default = || talos_default_kubernetes(&lab.cluster.talos_version);
    let of_lab = lab
        .cluster
        .kubernetes_version
        .as_deref()
        .or_else(talos_default);
    let mut oldest: Option<Release> = None;
    for node in nodes {
        let Some(last) = &node.last else { continue };
        let version = kubelet_tag(last).or_else(|| talos_default().map(str::to_owned));
        if let Some(release) = version.as_deref().and_then(Release::parse) {
            oldest = Some(oldest.map_or(release, |o| o.min(release)));
        }
    }
    match oldest.or_else(|| of_lab.and_then(Release::parse)) {
        Some(release) => Ok(release),
        None => Err(UpgradeError::Refused(format!(
            "cannot tell which Kubernetes release runs: the nodes' configs name none and lab-bootstrap does not know the default of Talos {}; set cluster.kubernetes_version in lab.toml",
            lab.cluster.talos_version
        ))),
    }
}

/// The kubelet image's tag in a machine config, `v1.36.3`.
fn kubelet_tag(config: &str) -> Option<String> {
    serde_norway::Deserializer::from_str(config).find_map(|document| {
        let value: serde_norway::Value = serde::Deserialize::deserialize(document).ok()?;
        let image = value
            .get("machine")?
            .get("kubelet")?
            .get("image")?
            .as_str()?;
        image.rsplit_once(':').map(|(_, tag)| tag.to_owned())
    })
}

/// The skew rules, each refusal naming both releases and where the bound comes from.
pub fn check(target: &str, running: Release, talos_version: &str) -> Result<Release, UpgradeError> {
    let refused = |message: String| Err(UpgradeError::Refused(message));
    let Some(wanted) = Release::parse(target) else {
        return refused(format!(
            "`{target}` is not a Kubernetes release like `v1.36.3`"
        ));
    };
    if wanted < running {
        return refused(format!(
            "{wanted} is older than the running Kubernetes {running}: a downgrade is not supported"
        ));
    }
    if wanted.major != running.major || wanted.minor > running.minor + 1 {
        return refused(format!(
            "{wanted} is more than one minor version past the running Kubernetes {running}: Kubernetes upgrades one minor version at a time (its version skew policy); upgrade to v{}.{}.x first",
            running.major,
            running.minor + 1
        ));
    }
    match talos_line_kubernetes(talos_version).and_then(Release::parse) {
        Some(newest) if (wanted.major, wanted.minor) > (newest.major, newest.minor) => {
            refused(format!(
                "{wanted} is newer than Talos {talos_version} supports: its release line ships Kubernetes v{}.{} (the newest a Talos release supports is the one it ships; lab-bootstrap's table of Talos's default Kubernetes per release, model/tools.rs); upgrade Talos first",
                newest.major, newest.minor
            ))
        }
        Some(_) => Ok(wanted),
        None => refused(format!(
            "lab-bootstrap does not know which Kubernetes releases Talos {talos_version} supports (its table of Talos releases, model/tools.rs, has none of that line)"
        )),
    }
}

/// Sets `[cluster] kubernetes_version` in the lab.toml at `path` to `release`, comments and
/// layout kept, after checking that the edited file is still a valid lab; returns that lab.
/// Nothing is written when it already says so.
pub fn set_version(path: &Path, release: Release) -> Result<Lab, UpgradeError> {
    let io = |source| UpgradeError::Io {
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let lab = parse::<Lab>(path, &text).map_err(UpgradeError::Config)?;
    if lab
        .cluster
        .kubernetes_version
        .as_deref()
        .and_then(Release::parse)
        == Some(release)
    {
        return Ok(lab);
    }
    let mut document: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        UpgradeError::Refused(format!("{}: {e}", path.display()))
    })?;
    let cluster = document
        .entry("cluster")
        .or_insert_with(|| Item::Table(Table::new()));
    let Some(cluster) = cluster.as_table_like_mut() else {
        return Err(UpgradeError::Refused(format!(
            "{}: `cluster` is not a table",
            path.display()
        )));
    };
    cluster.insert("kubernetes_version", value(release.to_string()));
    let edited = document.to_string();
    let lab = parse::<Lab>(path, &edited).map_err(UpgradeError::Config)?;
    let mode = std::fs::metadata(path)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o644);
    lab_daemon::files::write_atomic(path, edited.as_bytes(), mode).map_err(io)?;
    Ok(lab)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(text: &str) -> Release {
        Release::parse(text).unwrap()
    }

    #[test]
    fn the_skew_rules() {
        let running = release("v1.35.2");
        assert_eq!(
            check("v1.36.3", running, "v1.13.9").unwrap(),
            release("v1.36.3")
        );
        assert_eq!(
            check("1.35.4", running, "v1.13.9").unwrap(),
            release("v1.35.4")
        );
        let message =
            |target: &str, talos: &str| check(target, running, talos).unwrap_err().to_string();
        let jump = message("v1.37.0", "v1.13.9");
        assert!(
            jump.contains("v1.37.0")
                && jump.contains("v1.35.2")
                && jump.contains("one minor version at a time"),
            "{jump}"
        );
        let down = message("v1.34.9", "v1.13.9");
        assert!(
            down.contains("v1.34.9 is older than the running Kubernetes v1.35.2"),
            "{down}"
        );
        let talos = message("v1.36.0", "v1.12.3");
        assert!(
            talos.contains("newer than Talos v1.12.3 supports") && talos.contains("v1.35"),
            "{talos}"
        );
        assert!(message("latest", "v1.13.9").contains("`latest` is not a Kubernetes release"));
        assert!(message("v1.36.0", "v1.99.0").contains("does not know"));
    }
}
