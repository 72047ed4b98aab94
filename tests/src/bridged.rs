//! A namespace holding Linux bridges (a stand-in for the Proxmox host) and client namespaces
//! plugged into them by veth pairs, each client's end named `eth0`.

use crate::netns::Netns;
use std::sync::atomic::{AtomicU32, Ordering};

/// The namespace holding the bridges.
pub struct Bridged {
    /// Where the bridges and the clients' veth ends live.
    pub ns: Netns,
}

impl Bridged {
    /// A new namespace for bridges, named for `role`, with no bridge yet.
    pub fn new(role: &str) -> Self {
        Self {
            ns: Netns::new(role),
        }
    }

    /// A bridge `name` with the host address `address` (CIDR notation), up.
    pub fn bridge(&self, name: &str, address: &str) {
        self.ns.run(&["ip", "link", "add", name, "type", "bridge"]);
        self.ns.run(&["ip", "addr", "add", address, "dev", name]);
        self.ns.run(&["ip", "link", "set", name, "up"]);
    }

    /// Plugs `client` into `bridge`: its `ifname` (with `mac` if given) is up, unaddressed.
    pub fn attach(&self, bridge: &str, client: &Netns, ifname: &str, mac: Option<&str>) {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let port = format!("vp{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        self.ns.run(&[
            "ip",
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            &client.name,
        ]);
        self.ns.run(&["ip", "link", "set", &port, "master", bridge]);
        self.ns.run(&["ip", "link", "set", &port, "up"]);
        if let Some(mac) = mac {
            client.run(&["ip", "link", "set", ifname, "address", mac]);
        }
        client.run(&["ip", "link", "set", ifname, "up"]);
    }
}
