//! One dnsmasq per lab bridge: DHCP only (no DNS), a reservation for every machine NIC on the
//! network, the host as router.

use super::{CONFIG_DIR, STATE_DIR};
use crate::model::{Lab, NetworkId};
use std::fmt::Write;
use std::path::PathBuf;

/// Leases last long enough to survive a host reboot without renumbering the dynamic range.
pub const LEASE_TIME: &str = "12h";

/// `/etc/lab/dnsmasq-<bridge>.conf`, read by `lab-dnsmasq@<bridge>.service`.
pub fn config_path(bridge: &str) -> PathBuf {
    PathBuf::from(format!("{CONFIG_DIR}/dnsmasq-{bridge}.conf"))
}

/// `/var/lib/lab/dnsmasq-<bridge>.leases`: where the dnsmasq serving `bridge` keeps its leases.
pub fn lease_path(bridge: &str) -> PathBuf {
    PathBuf::from(format!("{STATE_DIR}/dnsmasq-{bridge}.leases"))
}

/// The systemd instance serving `bridge`.
pub fn instance(bridge: &str) -> String {
    format!("lab-dnsmasq@{bridge}.service")
}

/// The configuration of the dnsmasq serving `network`, its leases kept in `lease_file`.
pub fn config(lab: &Lab, network: NetworkId, lease_file: &std::path::Path) -> String {
    let net = lab.networks.get(network);
    let mut out = String::new();
    // `write!` to a String cannot fail.
    let _ = writeln!(
        out,
        "# Written by lab-bootstrap from lab.toml: DHCP for {} ({}) on {}.",
        network.as_str(),
        net.cidr,
        net.bridge
    );
    let _ = writeln!(out, "interface={}", net.bridge);
    // Binds only while the bridge exists and never to other interfaces' addresses, so it
    // coexists with anything else on the host (another dnsmasq, Proxmox's own).
    out.push_str("bind-dynamic\nexcept-interface=lo\n");
    // DHCP only: DNS comes from the upstream resolver handed out below.
    out.push_str("port=0\n");
    out.push_str("no-resolv\nno-hosts\n");
    out.push_str("dhcp-authoritative\n");
    let _ = writeln!(out, "dhcp-leasefile={}", lease_file.display());
    if let Some(range) = &net.dhcp {
        let _ = writeln!(
            out,
            "dhcp-range={},{},{},{LEASE_TIME}",
            range.start,
            range.end,
            net.cidr.netmask()
        );
    } else {
        // Reservations only.
        let _ = writeln!(
            out,
            "dhcp-range={},static,{}",
            net.cidr.network(),
            net.cidr.netmask()
        );
    }
    let _ = writeln!(out, "dhcp-option=option:router,{}", net.host);
    let dns = lab.networks.net0.gateway.unwrap_or(lab.networks.net0.host);
    let _ = writeln!(out, "dhcp-option=option:dns-server,{dns}");
    for machine in &lab.machines {
        for (index, nic) in machine.nics.iter().enumerate() {
            if nic.network != network {
                continue;
            }
            if let Some(mac) = machine.mac(index) {
                let _ = writeln!(out, "dhcp-host={mac},{},{}", nic.address, machine.name);
            }
        }
    }
    out
}
