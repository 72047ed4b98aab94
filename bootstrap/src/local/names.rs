//! What a local lab is called: its namespaces, interfaces and state directory all derive from
//! one prefix, so two labs (or a lab and the tests) never collide, and `down` finds everything
//! an interrupted `up` left from the prefix alone.

use super::state_dir::LocalStateDir;
use super::LocalError;
use std::path::PathBuf;

/// Where local labs keep their state: runtime data, gone after a reboot like the namespaces.
pub const STATE_ROOT: &str = "/run/lab-bootstrap";

/// One local lab's names, all derived from its prefix.
#[derive(Debug, Clone)]
pub struct LocalLab {
    /// The lab's name: 1 to 12 lowercase letters, digits or `-`, starting with a letter.
    pub prefix: String,
}

/// Longest prefix: keeps `<prefix>wg` within Linux's 15-character interface names.
const MAX_PREFIX: usize = 12;

impl LocalLab {
    /// The lab named `prefix`; a prefix too long or with other characters is a usage error.
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

    /// The namespace that plays `machine`.
    pub fn machine_ns(&self, machine: &str) -> String {
        format!("{}-{machine}", self.prefix)
    }

    /// The lab's state directory (pids, logs, the namespaces it made), under [`STATE_ROOT`].
    pub fn state_dir(&self) -> LocalStateDir {
        LocalStateDir::new(PathBuf::from(STATE_ROOT).join(&self.prefix))
    }

    /// lab-vpn's interface: unique, because `/var/run/wireguard` is shared by all namespaces.
    pub fn vpn_interface(&self) -> String {
        format!("{}wg", self.prefix)
    }

    /// lab-vpn's interface in container `index` of a vpn pair: the first's is
    /// [`LocalLab::vpn_interface`]; the second's differs, as its control socket must.
    pub fn vpn_interface_of(&self, index: usize) -> String {
        match index {
            0 => self.vpn_interface(),
            _ => format!("{}wg{index}", self.prefix),
        }
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
        let recorded = std::fs::read_to_string(self.state_dir().namespaces()).unwrap_or_default();
        let recorded: Vec<&str> = recorded.lines().collect();
        listing
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| self.owns(name, &recorded))
            .map(str::to_owned)
            .collect()
    }

    /// Whether namespace `name` is this lab's: one `up` recorded making (`recorded`), or
    /// `<prefix>-<suffix>` with no `-` in the suffix. Lab names may hold `-`, so a plain
    /// `<prefix>-` match would take lab `lab-b`'s `lab-b-host` for lab `lab`'s; but another
    /// lab's namespace can only start with `<prefix>-` when that lab's name does, and then
    /// the rest holds a `-` of its own. Machines named with a `-` are found by the record.
    pub fn owns(&self, name: &str, recorded: &[&str]) -> bool {
        if recorded.contains(&name) {
            return true;
        }
        name.strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|suffix| !suffix.is_empty() && !suffix.contains('-'))
    }

    /// Notes that `up` made namespace `name`, so `down` finds it whatever it is called.
    pub fn record_namespace(&self, name: &str) -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state_dir().namespaces())?;
        writeln!(file, "{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_within_linux_limits() {
        let lab = LocalLab::new("labtest12345").unwrap();
        assert!(lab.vpn_interface().len() <= 15);
        assert!(lab.vpn_interface_of(1).len() <= 15);
        assert_ne!(lab.vpn_interface_of(1), lab.vpn_interface());
        assert_eq!(lab.machine_ns("cp1"), "labtest12345-cp1");
        assert!(LocalLab::new("Lab").is_err());
        assert!(LocalLab::new("a-very-long-lab-name").is_err());
        assert!(LocalLab::new("").is_err());
    }

    #[test]
    fn a_lab_never_takes_the_namespaces_of_a_lab_named_after_it() {
        let lab = LocalLab::new("lab").unwrap();
        for ours in ["lab-host", "lab-outside", "lab-cp1", "lab-w2"] {
            assert!(lab.owns(ours, &[]), "{ours}");
        }
        for theirs in [
            "lab-b-host",
            "lab-b-outside",
            "lab-b-cp1",
            "lab-test-host",
            "labx-host",
            "lab",
            "lab-",
            "xlab-host",
            "host",
        ] {
            assert!(!lab.owns(theirs, &[]), "{theirs}");
        }
        // A machine named with a `-` is found by what `up` recorded, and only that.
        assert!(lab.owns("lab-control-1", &["lab-host", "lab-control-1"]));
        assert!(!lab.owns("lab-control-2", &["lab-host", "lab-control-1"]));

        // And the other way round: `lab-b` takes its own, not `lab`'s.
        let b = LocalLab::new("lab-b").unwrap();
        assert!(b.owns("lab-b-host", &[]));
        assert!(b.owns("lab-b-cp1", &[]));
        assert!(!b.owns("lab-host", &[]));
        assert!(!b.owns("lab-bc-host", &[]));
        assert!(!b.owns("lab-b-c-host", &[]));
    }
}
