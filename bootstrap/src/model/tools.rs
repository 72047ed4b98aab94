//! `[manager.tools]`: the command-line tools the manager VM installs on first boot (talosctl,
//! kubectl, flux, helm), each from its project's official release URL, at a version that
//! matches the cluster, checked against a SHA-256 pinned in lab.toml or, when none is pinned,
//! against the checksum file the project publishes with the release.

use super::Lab;
use lab_daemon::Issues;
use serde::{Deserialize, Serialize};

/// `[manager.tools.<tool>]`: one tool's release, all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPin {
    /// The release: `v1.13.9`; the tool's default when unset (see [`ManagerTools`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// SHA-256 (64 hex digits) of the file downloaded (the binary, or the archive holding it);
    /// when unset, the manager checks the checksum file the project publishes for the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// An `https://` URL to download from instead of the official one (a mirror); the file
    /// must be what the official URL serves. Without `sha256`, the checksum file is looked up
    /// next to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// `[manager.tools]`: talosctl at `cluster.talos_version`, kubectl at the cluster's Kubernetes
/// version, flux and helm at [`FLUX_VERSION`] and [`HELM_VERSION`] unless told otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerTools {
    /// `[manager.tools.talosctl]`.
    #[serde(default)]
    pub talosctl: ToolPin,
    /// `[manager.tools.kubectl]`.
    #[serde(default)]
    pub kubectl: ToolPin,
    /// `[manager.tools.flux]`.
    #[serde(default)]
    pub flux: ToolPin,
    /// `[manager.tools.helm]`.
    #[serde(default)]
    pub helm: ToolPin,
}

/// The flux release installed when `[manager.tools.flux] version` is unset.
pub const FLUX_VERSION: &str = "v2.9.4";
/// The helm release installed when `[manager.tools.helm] version` is unset.
pub const HELM_VERSION: &str = "v4.2.4";

/// Kubernetes release each Talos release runs when the machine config names none: Talos's
/// `constants.DefaultKubernetesVersion` at each tag. kubectl supports one minor of skew from
/// the API server, so the manager's kubectl follows this table rather than one fixed release.
const TALOS_DEFAULT_KUBERNETES: &[(&str, &str)] = &[
    ("v1.10.0", "v1.33.0"),
    ("v1.10.1", "v1.33.0"),
    ("v1.10.2", "v1.33.0"),
    ("v1.10.3", "v1.33.1"),
    ("v1.10.4", "v1.33.1"),
    ("v1.10.5", "v1.33.2"),
    ("v1.10.6", "v1.33.3"),
    ("v1.10.7", "v1.33.4"),
    ("v1.10.8", "v1.33.6"),
    ("v1.10.9", "v1.33.6"),
    ("v1.11.0", "v1.34.0"),
    ("v1.11.1", "v1.34.0"),
    ("v1.11.2", "v1.34.1"),
    ("v1.11.3", "v1.34.1"),
    ("v1.11.4", "v1.34.1"),
    ("v1.11.5", "v1.34.1"),
    ("v1.11.6", "v1.34.1"),
    ("v1.12.0", "v1.35.0"),
    ("v1.12.1", "v1.35.0"),
    ("v1.12.2", "v1.35.0"),
    ("v1.12.3", "v1.35.0"),
    ("v1.12.4", "v1.35.0"),
    ("v1.12.5", "v1.35.2"),
    ("v1.12.6", "v1.35.2"),
    ("v1.12.7", "v1.35.4"),
    ("v1.12.8", "v1.35.4"),
    ("v1.12.9", "v1.35.4"),
    ("v1.12.10", "v1.35.4"),
    ("v1.12.11", "v1.35.4"),
    ("v1.13.0", "v1.36.0"),
    ("v1.13.1", "v1.36.0"),
    ("v1.13.2", "v1.36.0"),
    ("v1.13.3", "v1.36.1"),
    ("v1.13.4", "v1.36.1"),
    ("v1.13.5", "v1.36.2"),
    ("v1.13.6", "v1.36.2"),
    ("v1.13.7", "v1.36.2"),
    ("v1.13.8", "v1.36.2"),
    ("v1.13.9", "v1.36.3"),
];

/// The Kubernetes release Talos `talos_version` deploys by default, if the table knows it.
pub fn talos_default_kubernetes(talos_version: &str) -> Option<&'static str> {
    TALOS_DEFAULT_KUBERNETES
        .iter()
        .find(|(talos, _)| *talos == talos_version)
        .map(|(_, kubernetes)| *kubernetes)
}

/// The newest Kubernetes release the table has for `talos_version`'s release line (`v1.13.x`):
/// the default of its latest patch, since a Talos release line supports Kubernetes up to the
/// minor version it ships. `None` when the table knows no release of that line.
pub fn talos_line_kubernetes(talos_version: &str) -> Option<&'static str> {
    let line = talos_version.rsplit_once('.').map(|(line, _)| line)?;
    // The table is in release order: the last of the line is its newest.
    TALOS_DEFAULT_KUBERNETES
        .iter()
        .rev()
        .find(|(talos, _)| talos.rsplit_once('.').map(|(l, _)| l) == Some(line))
        .map(|(_, kubernetes)| *kubernetes)
}

/// How the manager checks a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// The SHA-256 pinned in lab.toml.
    Pinned(String),
    /// The checksum file the project publishes for the release, fetched from this URL; its
    /// line for the downloaded file's name (or its only hash) is what is checked.
    Published(String),
}

/// A tool as the manager installs it: what is downloaded, how it is checked, where the binary is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerTool {
    /// The command's name, also its name in `/usr/local/bin`.
    pub name: &'static str,
    /// The release, `v`-prefixed.
    pub version: String,
    /// Where the file is downloaded from.
    pub url: String,
    /// The binary's path inside the downloaded `.tar.gz`; `None` when the download is the binary.
    pub member: Option<String>,
    /// How the download is checked.
    pub checksum: Checksum,
}

/// A version string as lab.toml may give it (`1.36.3` or `v1.36.3`), `v`-prefixed.
fn tagged(version: &str) -> String {
    if version.starts_with('v') {
        version.to_owned()
    } else {
        format!("v{version}")
    }
}

/// Whether `version` is a release like `v1.36.3` or `v2.9.4-rc.1` (the `v` optional).
fn is_release(version: &str) -> bool {
    let version = version.strip_prefix('v').unwrap_or(version);
    let (core, pre) = match version.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (version, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit()))
        && pre.is_none_or(|pre| {
            !pre.is_empty()
                && pre
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
}

fn is_sha256(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `url` is an `https://` URL the first-boot script can carry as one word.
fn is_https_url(url: &str) -> bool {
    url.strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        && url
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"'\"`\\$".contains(&b))
}

/// The URL `url`'s directory plus `file`: where a mirror keeps the checksum file next to it.
fn sibling(url: &str, file: &str) -> String {
    match url.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{file}"),
        None => file.to_owned(),
    }
}

/// Why a tool's release cannot be decided from lab.toml: the key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ToolError {
    /// The lab.toml key at fault.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

impl Lab {
    /// The Kubernetes release of the cluster: `cluster.kubernetes_version`, or the default of
    /// `cluster.talos_version`.
    fn cluster_kubernetes_version(&self) -> Result<String, ToolError> {
        match &self.cluster.kubernetes_version {
            Some(version) => Ok(tagged(version)),
            None => talos_default_kubernetes(&self.cluster.talos_version)
                .map(str::to_owned)
                .ok_or_else(|| ToolError {
                    key: "manager.tools.kubectl.version".to_owned(),
                    problem: format!(
                        "lab-bootstrap does not know which Kubernetes release Talos `{}` runs by default; set cluster.kubernetes_version (or this key)",
                        self.cluster.talos_version
                    ),
                }),
        }
    }

    /// The four tools the manager installs, in install order, with their defaults filled in.
    pub fn manager_tools(&self) -> Result<Vec<ManagerTool>, ToolError> {
        let pins = &self.manager.tools;
        let version = |pin: &ToolPin, default: Result<String, ToolError>| match &pin.version {
            Some(version) => Ok(tagged(version)),
            None => default,
        };
        let talosctl = version(&pins.talosctl, Ok(tagged(&self.cluster.talos_version)))?;
        let kubectl = version(&pins.kubectl, self.cluster_kubernetes_version())?;
        let flux = version(&pins.flux, Ok(FLUX_VERSION.to_owned()))?;
        let helm = version(&pins.helm, Ok(HELM_VERSION.to_owned()))?;
        let flux_bare = flux.trim_start_matches('v');
        let official = [
            (
                "talosctl",
                &pins.talosctl,
                talosctl.clone(),
                format!("https://github.com/siderolabs/talos/releases/download/{talosctl}/talosctl-linux-amd64"),
                "sha256sum.txt".to_owned(),
                None,
            ),
            (
                "kubectl",
                &pins.kubectl,
                kubectl.clone(),
                format!("https://dl.k8s.io/release/{kubectl}/bin/linux/amd64/kubectl"),
                "kubectl.sha256".to_owned(),
                None,
            ),
            (
                "flux",
                &pins.flux,
                flux.clone(),
                format!("https://github.com/fluxcd/flux2/releases/download/{flux}/flux_{flux_bare}_linux_amd64.tar.gz"),
                format!("flux_{flux_bare}_checksums.txt"),
                Some("flux".to_owned()),
            ),
            (
                "helm",
                &pins.helm,
                helm.clone(),
                format!("https://get.helm.sh/helm-{helm}-linux-amd64.tar.gz"),
                format!("helm-{helm}-linux-amd64.tar.gz.sha256sum"),
                Some("linux-amd64/helm".to_owned()),
            ),
        ];
        Ok(official
            .into_iter()
            .map(|(name, pin, version, official_url, sums, member)| {
                let url = pin.url.clone().unwrap_or(official_url);
                let checksum = match &pin.sha256 {
                    Some(sha) => Checksum::Pinned(sha.to_ascii_lowercase()),
                    None => Checksum::Published(sibling(&url, &sums)),
                };
                ManagerTool {
                    name,
                    version,
                    url,
                    member,
                    checksum,
                }
            })
            .collect())
    }

    pub(super) fn validate_manager_tools(&self, issues: &mut Issues) {
        let pins = &self.manager.tools;
        for (name, pin) in [
            ("talosctl", &pins.talosctl),
            ("kubectl", &pins.kubectl),
            ("flux", &pins.flux),
            ("helm", &pins.helm),
        ] {
            let key = format!("manager.tools.{name}");
            if let Some(version) = &pin.version {
                if !is_release(version) {
                    issues.add(
                        format!("{key}.version"),
                        format!("`{version}` is not a release like `v1.2.3`"),
                    );
                }
            }
            if let Some(sha) = &pin.sha256 {
                if !is_sha256(sha) {
                    issues.add(
                        format!("{key}.sha256"),
                        format!(
                            "`{sha}` is not a SHA-256 (64 hex digits, from the release's checksum file)"
                        ),
                    );
                }
            }
            if let Some(url) = &pin.url {
                if !is_https_url(url) {
                    issues.add(
                        format!("{key}.url"),
                        format!("`{url}` is not an https:// URL (downloads are never made in the clear)"),
                    );
                }
            }
        }
        if pins.kubectl.version.is_none() {
            if let Some(version) = &self.cluster.kubernetes_version {
                if !is_release(version) {
                    issues.add(
                        "cluster.kubernetes_version",
                        format!("`{version}` is not a Kubernetes release like `v1.36.3`"),
                    );
                }
            }
        }
        if pins.talosctl.version.is_none() && !is_release(&self.cluster.talos_version) {
            issues.add(
                "manager.tools.talosctl.version",
                format!(
                    "talosctl follows cluster.talos_version, and `{}` is not a release like `v1.13.9`",
                    self.cluster.talos_version
                ),
            );
        }
        if let Err(e) = self.manager_tools() {
            issues.add(e.key, e.problem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_and_checksums() {
        assert!(is_release("v1.36.3"));
        assert!(is_release("1.36.3"));
        assert!(is_release("v2.9.4-rc.1"));
        assert!(!is_release("v1.36"));
        assert!(!is_release("latest"));
        assert!(!is_release("v1.36.3; rm -rf /"));
        assert!(is_sha256(&"a".repeat(64)));
        assert!(!is_sha256(&"g".repeat(64)));
        assert!(!is_sha256(&"a".repeat(63)));
        assert!(is_https_url("https://mirror.example/kubectl"));
        assert!(!is_https_url("http://mirror.example/kubectl"));
        assert!(!is_https_url("https://mirror.example/$(id)"));
    }
}
