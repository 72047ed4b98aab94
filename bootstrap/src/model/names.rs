//! Names that leave lab.toml for somewhere with rules of its own: bridges become Linux
//! interfaces, Proxmox `iface`/`bridge=` values, nftables `iifname` strings and the instance of
//! `lab-dnsmasq@<bridge>`; machines become Proxmox VM names and container host names, Talos
//! host names (Kubernetes node names) and dnsmasq `dhcp-host` names; the node and storages go
//! into Proxmox API paths and parameters. Each is checked against the rule of where it goes, so
//! `validate` refuses what the kernel, Proxmox, dnsmasq or Kubernetes would refuse later.

use super::{Lab, NetworkId, Role};
use lab_daemon::Issues;

/// Linux's `IFNAMSIZ` is 16 with the terminating NUL.
pub const MAX_INTERFACE_NAME: usize = 15;

/// An RFC 1123 label: DNS names, host names and Proxmox node names are made of these.
const MAX_LABEL: usize = 63;

/// Why `name` cannot be a Linux interface name, if it cannot. The kernel refuses empty names,
/// `.` and `..`, `/`, `:` and whitespace, and anything over 15 bytes; the rest of punctuation it
/// takes but nftables strings, systemd instance names and shells do not all take it well, so
/// only letters, digits, `_`, `.` and `-` pass.
pub fn interface_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("an interface name must not be empty".to_owned());
    }
    if name.len() > MAX_INTERFACE_NAME {
        return Some(format!(
            "`{name}` is {} bytes; Linux interface names are at most {MAX_INTERFACE_NAME}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some(format!("`{name}` is not a Linux interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Some(format!(
            "`{name}` has {c:?}; interface names take letters, digits, `_`, `.` and `-`"
        ));
    }
    None
}

/// Proxmox's `pve-iface` format, which `POST /nodes/{node}/network` checks the new bridge's
/// `iface` against: `^[a-z][a-z0-9_]{1,20}([:\.]\d+)?$` (case-insensitive).
pub fn is_pve_iface(name: &str) -> bool {
    let mut chars = name.char_indices();
    if !chars.next().is_some_and(|(_, c)| c.is_ascii_alphabetic()) {
        return false;
    }
    let body_end = name
        .char_indices()
        .skip(1)
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(name.len(), |(i, _)| i);
    if !(2..=21).contains(&body_end) {
        return false;
    }
    match &name[body_end..] {
        "" => true,
        rest => rest
            .strip_prefix([':', '.'])
            .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit())),
    }
}

/// An RFC 1123 label: 1 to 63 letters, digits and `-`, not starting or ending with `-`.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LABEL
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Why `name` cannot be a machine's host name, if it cannot: one RFC 1123 label, in lowercase.
/// Proxmox takes a `dns-name` for VM names and container host names; Kubernetes takes the Talos
/// host name as the node name only in lowercase; dnsmasq ignores a `dhcp-host` name with a
/// domain that is not its own, so no dots.
pub fn host_name_problem(name: &str) -> Option<String> {
    if !is_dns_label(name) {
        return Some(format!(
            "`{name}` is not an RFC 1123 host name: 1 to {MAX_LABEL} letters, digits and `-`, not starting or ending with `-` (no `_`, no `.`)"
        ));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Some(format!(
            "`{name}` has capitals; it becomes the Kubernetes node name, which is lowercase: `{}`",
            name.to_ascii_lowercase()
        ));
    }
    None
}

/// DNS names are at most 253 characters written out (RFC 1035's 255 octets on the wire).
const MAX_DOMAIN: usize = 253;

/// Why `domain` cannot be the lab's DNS domain, if it cannot: dot-separated RFC 1123 labels,
/// not ending in a number (it would read as an address), not `local` (mDNS's, RFC 6762).
pub fn domain_problem(domain: &str) -> Option<String> {
    let rule = format!(
        "a DNS domain is labels of 1 to {MAX_LABEL} letters, digits and `-` (not starting or ending with `-`) joined by `.`, like `lab` or `home.example.org`"
    );
    if domain.len() > MAX_DOMAIN {
        return Some(format!(
            "`{domain}` is {} characters; DNS names are at most {MAX_DOMAIN}",
            domain.len()
        ));
    }
    if let Some(label) = domain.split('.').find(|label| !is_dns_label(label)) {
        return Some(if label.is_empty() {
            format!("`{domain}` has an empty label (a leading, trailing or doubled `.`); {rule}")
        } else {
            format!("`{domain}` has the label `{label}`; {rule}")
        });
    }
    if domain
        .rsplit('.')
        .next()
        .is_some_and(|last| last.chars().all(|c| c.is_ascii_digit()))
    {
        return Some(format!(
            "`{domain}` ends in a number, which reads as an address; {rule}"
        ));
    }
    if domain.eq_ignore_ascii_case("local") || domain.to_ascii_lowercase().ends_with(".local") {
        return Some(format!(
            "`{domain}` is under `local`, which multicast DNS (RFC 6762) owns; use another, like `lab`"
        ));
    }
    None
}

/// Proxmox's `pve-storage-id`: `^[a-z][a-z0-9\-\_\.]*[a-z0-9]$` (case-insensitive).
pub fn is_pve_storage_id(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Lab {
    pub(super) fn validate_names(&self, issues: &mut Issues) {
        for id in NetworkId::ALL {
            let bridge = &self.networks.get(id).bridge;
            let key = format!("networks.{}.bridge", id.as_str());
            if let Some(problem) = interface_name_problem(bridge) {
                issues.add(key, problem);
            } else if id != NetworkId::Net0 && !is_pve_iface(bridge) {
                // net0 exists already; net1 and net2 are created through the API.
                issues.add(
                    key,
                    format!(
                        "`{bridge}` is not a name Proxmox creates a bridge with (pve-iface: a letter, then 1 to 20 letters, digits or `_`, like `vmbr1`)"
                    ),
                );
            }
        }
        for (i, machine) in self.machines.iter().enumerate() {
            if let Some(problem) = host_name_problem(machine.name.as_str()) {
                issues.add(format!("machine[{i}].name"), problem);
            }
        }
        for (i, machine) in self.machines.iter().enumerate() {
            // The lab's DNS gives these names to the lb and vpn containers, whatever their
            // machine names (render::dnsmasq).
            for role in [Role::Lb, Role::Vpn] {
                if machine.name.as_str() == role.as_str() && machine.role != role {
                    issues.add(
                        format!("machine[{i}].name"),
                        format!(
                            "`{}` is the lab's DNS name of the {} container; name this {} otherwise",
                            role.as_str(),
                            role.as_str(),
                            machine.role.as_str()
                        ),
                    );
                }
            }
        }
        if let Some(problem) = domain_problem(&self.networks.domain) {
            issues.add("networks.domain", problem);
        }
        let lab = self.cluster.name.as_str();
        if !is_dns_label(lab) {
            issues.add(
                "cluster.name",
                format!(
                    "`{lab}` is not an RFC 1123 label: 1 to {MAX_LABEL} letters, digits and `-`, not starting or ending with `-`; it names the lab on the Proxmox node and the Talos cluster"
                ),
            );
        }
        let node = &self.proxmox.node;
        if !is_dns_label(node) {
            issues.add(
                "proxmox.node",
                format!("`{node}` is not a Proxmox node name (pve-node: one DNS label)"),
            );
        }
        for (key, storage) in [
            ("proxmox.storage", &self.proxmox.storage),
            ("proxmox.file_storage", &self.proxmox.file_storage),
        ] {
            if !is_pve_storage_id(storage) {
                issues.add(
                    key,
                    format!(
                        "`{storage}` is not a Proxmox storage ID (pve-storage-id: a letter, then letters, digits, `-`, `_` or `.`, ending in a letter or digit)"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel() {
        for ok in ["vmbr0", "a", "br-lab_1.2", "abcdefghijklmno"] {
            assert_eq!(interface_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "abcdefghijklmnop",
            "vmbr/1",
            "vmbr 1",
            "vmbr\t1",
            "vmbr:1",
            "vmbr\"1",
            "vmbr;1",
            "vmbré",
        ] {
            assert!(interface_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn pve_iface_is_proxmoxs_pattern() {
        for ok in [
            "vmbr1",
            "vmbr10",
            "br_lab",
            "Vmbr1",
            "vmbr1.100",
            "eth0:1",
            "ab",
        ] {
            assert!(is_pve_iface(ok), "{ok}");
        }
        for bad in [
            "",
            "v",
            "1vmbr",
            "_br",
            "br-lab",
            "vmbr1.",
            "vmbr1.x",
            "vmbr1:1:2",
            // A letter and 21 more.
            "vabcdefghijklmnopqrstu",
        ] {
            assert!(!is_pve_iface(bad), "{bad}");
        }
        assert!(is_pve_iface("vabcdefghijklmnopqrst"));
    }

    #[test]
    fn host_names_are_lowercase_rfc_1123_labels() {
        for ok in ["cp1", "w-2", "a", "0worker", &"a".repeat(63)] {
            assert_eq!(host_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "cp_1",
            "-cp1",
            "cp1-",
            "cp1.lab",
            "CP1",
            &"a".repeat(64),
        ] {
            assert!(host_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn domains_are_dns_names() {
        for ok in [
            "lab",
            "home.example.org",
            "lab-1",
            "x1.lab",
            &"a".repeat(63),
        ] {
            assert_eq!(domain_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            ".lab",
            "lab.",
            "home..lab",
            "lab_1",
            "-lab",
            "lab-",
            "my lab",
            "10.10.1",
            "local",
            "home.local",
            &"a".repeat(64),
            &["a"; 128].join("."),
        ] {
            assert!(domain_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn storage_ids_are_proxmoxs_pattern() {
        for ok in ["local", "local-lvm", "nfs.backup", "zfs_1"] {
            assert!(is_pve_storage_id(ok), "{ok}");
        }
        for bad in ["", "l", "1local", "local-", "local/lvm", "local lvm"] {
            assert!(!is_pve_storage_id(bad), "{bad}");
        }
    }
}
