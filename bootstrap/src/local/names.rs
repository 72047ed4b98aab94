//! What a local lab is called: its namespaces, interfaces and state directory all derive from
//! one prefix, so two labs (or a lab and the tests) never collide, and `down` finds everything
//! an interrupted `up` left from the prefix alone.

use super::LocalError;
use std::path::PathBuf;

/// Where local labs keep their state: runtime data, gone after a reboot like the namespaces.
pub const STATE_ROOT: &str = "/run/lab-bootstrap";

#[derive(Debug, Clone)]
pub struct LocalLab {
    pub prefix: String,
}

/// Longest prefix: keeps `<prefix>wg` within Linux's 15-character interface names.
const MAX_PREFIX: usize = 12;

impl LocalLab {
    pub fn new(prefix: &str) -> Result<Self, LocalError> {
        let valid = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(LocalError::Usage(format!(
                "lab name `{prefix}`: 1 to {MAX_PREFIX} lowercase letters, digits or `-`, starting with a letter"
            )));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The Proxmox host: router, firewall, DHCP servers, the three bridges.
    pub fn host_ns(&self) -> String {
        format!("{}-host", self.prefix)
    }

    /// net0's far side: the home router and the internet beyond it.
    pub fn outside_ns(&self) -> String {
        format!("{}-outside", self.prefix)
    }

    pub fn machine_ns(&self, machine: &str) -> String {
        format!("{}-{machine}", self.prefix)
    }

    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(STATE_ROOT).join(&self.prefix)
    }

    /// lab-vpn's interface: unique, because `/var/run/wireguard` is shared by all namespaces.
    pub fn vpn_interface(&self) -> String {
        format!("{}wg", self.prefix)
    }

    /// The admin client's interface in the outside namespace (`--connect`).
    pub fn client_interface(&self) -> String {
        format!("{}wc", self.prefix)
    }

    /// Namespaces of this lab that exist now, whatever state the directory is in.
    pub fn existing_namespaces(&self) -> Vec<String> {
        let listing = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let start = format!("{}-", self.prefix);
        listing
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| name.starts_with(&start))
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_within_linux_limits() {
        let lab = LocalLab::new("labtest12345").unwrap();
        assert!(lab.vpn_interface().len() <= 15);
        assert_eq!(lab.machine_ns("cp1"), "labtest12345-cp1");
        assert!(LocalLab::new("Lab").is_err());
        assert!(LocalLab::new("a-very-long-lab-name").is_err());
        assert!(LocalLab::new("").is_err());
    }
}
