//! `[manager]` (the manager VM's login) and `[host]` (what stays open on the host itself).

use super::Lab;
use lab_daemon::Issues;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[manager]`: how the user logs in to the manager VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manager {
    /// The cloud-init user.
    #[serde(default = "Manager::default_user")]
    pub user: String,
    /// OpenSSH public keys, one a line (relative to lab.toml); without it, no SSH login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_keys_file: Option<PathBuf>,
    /// `[manager.tools]`: the tools installed on first boot; the cluster's releases when absent.
    #[serde(default)]
    pub tools: super::ManagerTools,
}

impl Manager {
    fn default_user() -> String {
        "lab".to_owned()
    }

    /// The authorized keys, read from `ssh_keys_file`.
    pub fn ssh_keys(&self) -> std::io::Result<Option<String>> {
        self.ssh_keys_file
            .as_ref()
            .map(std::fs::read_to_string)
            .transpose()
            .map(|keys| keys.map(|k| k.trim_end().to_owned()))
    }
}

impl Default for Manager {
    fn default() -> Self {
        Self {
            user: Self::default_user(),
            ssh_keys_file: None,
            tools: super::ManagerTools::default(),
        }
    }
}

/// `[host]`: the Proxmox host's own firewall openings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostAccess {
    /// TCP ports of the host kept open from net0 (SSH and the Proxmox UI unless told);
    /// an empty list closes them, which locks out anyone not on the console.
    #[serde(default = "HostAccess::default_management_access")]
    pub management_access: Vec<u16>,
}

impl HostAccess {
    /// SSH and the Proxmox UI.
    pub const DEFAULT_MANAGEMENT_ACCESS: [u16; 2] = [22, 8006];

    fn default_management_access() -> Vec<u16> {
        Self::DEFAULT_MANAGEMENT_ACCESS.to_vec()
    }
}

impl Default for HostAccess {
    fn default() -> Self {
        Self {
            management_access: Self::default_management_access(),
        }
    }
}

/// Key types OpenSSH accepts in authorized_keys.
const SSH_KEY_TYPES: [&str; 4] = ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-", "sk-"];

impl Lab {
    pub(super) fn validate_access(&self, issues: &mut Issues) {
        let user = &self.manager.user;
        let valid_user = user
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && user.len() <= 32
            && user
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c));
        if !valid_user || user == "root" {
            issues.add(
                "manager.user",
                format!("`{user}` is not a login name cloud-init can create (lowercase, not root)"),
            );
        }
        if let Some(file) = &self.manager.ssh_keys_file {
            match std::fs::read_to_string(file) {
                Err(e) => issues.add(
                    "manager.ssh_keys_file",
                    format!("cannot read {}: {e}", file.display()),
                ),
                Ok(text) => {
                    let keys: Vec<&str> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .collect();
                    if keys.is_empty() {
                        issues.add(
                            "manager.ssh_keys_file",
                            format!("{} holds no SSH public key", file.display()),
                        );
                    }
                    for line in keys {
                        // A line may start with options (`from="…" ssh-ed25519 …`).
                        let typed = line
                            .split_whitespace()
                            .any(|w| SSH_KEY_TYPES.iter().any(|t| w.starts_with(t)));
                        if !typed {
                            issues.add(
                                "manager.ssh_keys_file",
                                format!(
                                    "{}: `{}` is not an OpenSSH public key line",
                                    file.display(),
                                    line.chars().take(20).collect::<String>()
                                ),
                            );
                            break;
                        }
                    }
                }
            }
        }
        let ports = &self.host.management_access;
        for (i, port) in ports.iter().enumerate() {
            if *port == 0 {
                issues.add(
                    format!("host.management_access[{i}]"),
                    "port 0 is not a port",
                );
            }
            if ports[..i].contains(port) {
                issues.add(
                    format!("host.management_access[{i}]"),
                    format!("port {port} is listed twice"),
                );
            }
        }
    }
}
