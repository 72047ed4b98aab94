//! One dnsmasq per lab bridge: DHCP with a reservation for every machine NIC on the network,
//! the host as router and as DNS server; DNS on the host's address on that bridge only, with
//! the lab's names (docs/ARCHITECTURE.md, "DNS") and everything else forwarded to the host's
//! own resolvers.

use super::{CONFIG_DIR, STATE_DIR};
use crate::model::{Lab, NetworkId, Role};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Leases last long enough to survive a host reboot without renumbering the dynamic range.
pub const LEASE_TIME: &str = "12h";

/// Names and forwarded answers cached; dnsmasq's default of 150 is small for a cluster pulling
/// images, and a bound keeps the host's memory its own.
pub const CACHE_SIZE: u32 = 1000;

/// The names the host's DNS on one network answers with one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// Fully qualified first (`cp1.lab`), then the short name (`cp1`); the lb and vpn
    /// containers also as `lb` and `vpn`.
    pub names: Vec<String>,
    /// The machine's address on the network, or (from net1) on net2.
    pub address: Ipv4Addr,
}

/// What the host's DNS on `network` answers: every machine at its address on that network.
/// From net1 (administrators, VPN peers), which reaches net2, a machine on net2 alone (the
/// lb) is answered with its net2 address; from net2, which reaches nothing of net1, machines
/// on net1 alone have no name.
pub fn records(lab: &Lab, network: NetworkId) -> Vec<DnsRecord> {
    let domain = &lab.networks.domain;
    lab.machines
        .iter()
        .filter_map(|machine| {
            let address = machine.address_on(network).or_else(|| {
                (network == NetworkId::Net1)
                    .then(|| machine.address_on(NetworkId::Net2))
                    .flatten()
            })?;
            let mut short = vec![machine.name.to_string()];
            if matches!(machine.role, Role::Lb | Role::Vpn)
                && machine.name.as_str() != machine.role.as_str()
            {
                short.push(machine.role.as_str().to_owned());
            }
            let mut names: Vec<String> = short.iter().map(|n| format!("{n}.{domain}")).collect();
            names.extend(short);
            Some(DnsRecord { names, address })
        })
        .collect()
}

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
        "# Written by lab-bootstrap from lab.toml: DHCP and DNS for {} ({}) on {}.",
        network.as_str(),
        net.cidr,
        net.bridge
    );
    let _ = writeln!(out, "interface={}", net.bridge);
    // Binds only while the bridge exists and never to other interfaces' addresses (loopback
    // and net0 included), so it coexists with anything else on the host that serves DNS or
    // DHCP (another dnsmasq, Proxmox's own, a resolver on 127.0.0.1).
    out.push_str("bind-dynamic\nexcept-interface=lo\n");
    let domain = &lab.networks.domain;
    // The lab's names are answered from here and never forwarded; other names go to the
    // resolvers of the host's /etc/resolv.conf. The host's /etc/hosts stays the host's.
    let _ = writeln!(out, "domain={domain}\nlocal=/{domain}/");
    out.push_str("domain-needed\nbogus-priv\nno-hosts\n");
    let _ = writeln!(out, "cache-size={CACHE_SIZE}");
    for record in records(lab, network) {
        let _ = writeln!(
            out,
            "host-record={},{}",
            record.names.join(","),
            record.address
        );
    }
    // Names come from lab.toml alone: a DHCP client cannot claim one.
    out.push_str("dhcp-ignore-names\n");
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
    let _ = writeln!(out, "dhcp-option=option:dns-server,{}", net.host);
    let _ = writeln!(out, "dhcp-option=option:domain-search,{domain}");
    // A pair's containers are reserved their own addresses; the published ones are keepalived's.
    for machine in &lab.guests() {
        for (index, nic) in machine.nics.iter().enumerate() {
            if nic.network != network {
                continue;
            }
            // A pair's containers lease no name: their names are the published addresses'
            // (host-record above), which a lease would add their own addresses to.
            let paired = machine.role.is_container() && lab.replicas(machine.role).is_pair();
            match machine.mac(index) {
                Some(mac) if paired => {
                    let _ = writeln!(out, "dhcp-host={mac},{}", nic.address);
                }
                Some(mac) => {
                    let _ = writeln!(out, "dhcp-host={mac},{},{}", nic.address, machine.name);
                }
                None => {}
            }
        }
    }
    out
}
