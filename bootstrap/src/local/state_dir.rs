//! A local lab's state directory: the lab.toml it was made from, the configs its programs run
//! on, their logs and pids, the namespaces `up` made. The file names are known here and nowhere
//! else.

use std::path::{Path, PathBuf};

/// Where a local lab keeps its state, and where in it each thing is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStateDir {
    path: PathBuf,
}

impl LocalStateDir {
    /// The state directory at `path`; nothing is made here.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The Talos state, laid out as apply's on the host: the secrets bundle the stand-ins
    /// take their certificates from, the talosconfig, the kubeconfig `up` fetched.
    pub fn talos(&self) -> crate::state_dir::StateDir {
        crate::state_dir::StateDir::new(self.path.join("talos"))
    }

    /// The lab.toml `up` was given, for `status` to read again.
    pub fn lab_toml(&self) -> PathBuf {
        self.path.join("lab.toml")
    }

    /// The directory of the lab.toml `up` was given: the files it names (keys, certificates)
    /// are relative to it, not to the copy [`Self::lab_toml`].
    pub fn lab_dir(&self) -> PathBuf {
        self.path.join("lab-dir")
    }

    /// There once `up` finished.
    pub fn up_complete(&self) -> PathBuf {
        self.path.join("up.complete")
    }

    /// The namespaces `up` made, one a line.
    pub fn namespaces(&self) -> PathBuf {
        self.path.join("namespaces")
    }

    /// The host's rendered nftables ruleset.
    pub fn nftables(&self) -> PathBuf {
        self.path.join("lab.nft")
    }

    /// The config of the dnsmasq serving DHCP on `bridge`.
    pub fn dnsmasq_config(&self, bridge: &str) -> PathBuf {
        self.path.join(format!("dnsmasq-{bridge}.conf"))
    }

    /// The lease file of the dnsmasq serving DHCP on `bridge`.
    pub fn dnsmasq_leases(&self, bridge: &str) -> PathBuf {
        self.path.join(format!("dnsmasq-{bridge}.leases"))
    }

    /// The script udhcpc runs to put the address it got on the machine's interface.
    pub fn udhcpc_script(&self) -> PathBuf {
        self.path.join("udhcpc.script")
    }

    /// The config daemon `program` (lab-lb, lab-vpn) runs on.
    pub fn daemon_config(&self, program: &str) -> PathBuf {
        self.path.join(format!("{program}.toml"))
    }

    /// lab-vpn's private key.
    pub fn vpn_key(&self) -> PathBuf {
        self.path.join("vpn.key")
    }

    /// The admin peer's wg-quick config, kept for the user.
    pub fn admin_client(&self) -> PathBuf {
        self.path.join("admin.conf")
    }

    /// The admin peer's config named as wg-quick wants it: after the interface.
    pub fn client_interface_config(&self, interface: &str) -> PathBuf {
        self.path.join(format!("{interface}.conf"))
    }

    /// The admin peer's config as `wg setconf` reads it (`wg-quick strip`).
    pub fn admin_client_stripped(&self) -> PathBuf {
        self.path.join("admin.stripped.conf")
    }

    /// The directory of the services' logs.
    pub fn logs(&self) -> PathBuf {
        self.path.join("logs")
    }

    /// Service `service`'s standard output and error.
    pub fn log(&self, service: &str) -> PathBuf {
        self.logs().join(format!("{service}.log"))
    }

    /// The directory of the services' pid files.
    pub fn pids(&self) -> PathBuf {
        self.path.join("pids")
    }

    /// The pid of service `service`, as it was started.
    pub fn pid(&self, service: &str) -> PathBuf {
        self.pids().join(format!("{service}.pid"))
    }
}
