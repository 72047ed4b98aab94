//! `[storage]`: persistent volumes for the cluster's workloads through the Proxmox CSI plugin
//! (sergelogvinov/proxmox-csi-plugin v0.19.1): the Proxmox storage the volumes are made on, how
//! much of it the lab may take, and the StorageClass that names it.

use super::Lab;
use lab_daemon::Issues;
use serde::{Deserialize, Serialize};

/// `[storage]`: absent, the lab makes no CSI user, token, labels or manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// The Proxmox storage the volumes are created on (`local-lvm`); it must allow `images`.
    pub proxmox_storage: String,
    /// How much of `proxmox_storage` the volumes may take, `200G` (K, M, G, T: powers of
    /// 1024); preflight refuses a storage with less free space.
    pub budget: String,
    /// The StorageClass's name, a lowercase RFC 1123 label; [`Storage::DEFAULT_CLASS`] when
    /// unset.
    #[serde(default = "Storage::default_class")]
    pub storage_class: String,
    /// Whether the StorageClass is the cluster's default (claims naming none get it); true when
    /// unset.
    #[serde(default = "Storage::default_is_default")]
    pub default_class: bool,
    /// Whether the plugin checks the Proxmox API's certificate. Off when unset: Proxmox's own
    /// certificate comes from the node's pve-root-ca, which the plugin's config cannot name;
    /// turn it on once the node serves a certificate from a public CA (ACME).
    #[serde(default)]
    pub verify_tls: bool,
}

impl Storage {
    /// The StorageClass's name when lab.toml names none.
    pub const DEFAULT_CLASS: &'static str = "proxmox";

    fn default_class() -> String {
        Self::DEFAULT_CLASS.to_owned()
    }

    fn default_is_default() -> bool {
        true
    }

    /// `budget` in bytes, or why it is no size.
    pub fn budget_bytes(&self) -> Result<u64, String> {
        parse_size(&self.budget)
    }
}

/// `200G`, `1T`, `512M`: a whole number and one of K, M, G, T (an `i` or `iB` after it is
/// accepted: Proxmox's sizes are binary either way).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let problem = || format!("`{text}` is not a size like \"200G\" (a number and K, M, G or T)");
    let trimmed = text.trim();
    let unit_at = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(problem)?;
    let (digits, unit) = trimmed.split_at(unit_at);
    let number: u64 = digits.parse().map_err(|_| problem())?;
    let shift = match unit.trim_end_matches("iB").trim_end_matches('i') {
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(problem()),
    };
    if number == 0 {
        return Err(format!("`{text}` is no room at all"));
    }
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

impl Lab {
    pub(super) fn validate_workload_storage(&self, issues: &mut Issues) {
        let Some(storage) = &self.storage else {
            return;
        };
        if !super::names::is_pve_storage_id(&storage.proxmox_storage) {
            issues.add(
                "storage.proxmox_storage",
                format!("`{}` is not a Proxmox storage ID", storage.proxmox_storage),
            );
        }
        let class = &storage.storage_class;
        if !super::names::is_dns_label(class) || class.chars().any(|c| c.is_ascii_uppercase()) {
            issues.add(
                "storage.storage_class",
                format!(
                    "`{class}` is not a Kubernetes object name (lowercase letters, digits and `-`)"
                ),
            );
        }
        if let Err(problem) = storage.budget_bytes() {
            issues.add("storage.budget", problem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary_and_bad_ones_say_what_is_wrong() {
        assert_eq!(parse_size("200G"), Ok(200 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        for bad in ["", "G", "200", "200X", "-1G", "1.5G", "0G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
    }
}
