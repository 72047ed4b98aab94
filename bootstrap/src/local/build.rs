//! The lab's wiring out of namespaces: the host namespace holds the bridges with the host's
//! addresses (as the Proxmox host does), every machine is a namespace with one veth per NIC
//! carrying the MAC the plan gives it, and the outside namespace sits on net0 as the home router
//! and the internet beyond it. Addresses on the lab networks come from the real dnsmasq.

use super::names::LocalLab;
use super::shell::{in_ns, run};
use super::LocalError;
use crate::model::{Lab, Machine, NetworkId};
use crate::render::guest_routes::guest_routes;
use std::net::Ipv4Addr;
use std::path::Path;

/// Creates namespace `name` with its loopback up.
pub fn add_namespace(name: &str) -> Result<(), LocalError> {
    run("ip", &["netns", "add", name])?;
    run("ip", &["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// The three lab bridges in the host namespace, each with the host's address on it, up.
pub fn bridges(lab: &Lab, names: &LocalLab) -> Result<(), LocalError> {
    let host = names.host_ns();
    for id in NetworkId::ALL {
        let net = lab.networks.get(id);
        run(
            "ip",
            &["-n", &host, "link", "add", &net.bridge, "type", "bridge"],
        )?;
        let address = format!("{}/{}", net.host, net.cidr.prefix_len());
        run(
            "ip",
            &["-n", &host, "address", "add", &address, "dev", &net.bridge],
        )?;
        run("ip", &["-n", &host, "link", "set", &net.bridge, "up"])?;
    }
    Ok(())
}

/// A veth from `ns` (named `inside`, with `mac` if given) to `bridge` in the host namespace
/// (named `outside` there). Created in the host namespace: the machine's own never sees it.
fn plug(
    names: &LocalLab,
    ns: &str,
    inside: &str,
    outside: &str,
    bridge: &str,
    mac: Option<&str>,
) -> Result<(), LocalError> {
    let host = names.host_ns();
    run(
        "ip",
        &[
            "-n", &host, "link", "add", outside, "type", "veth", "peer", "name", inside, "netns",
            ns,
        ],
    )?;
    if let Some(mac) = mac {
        run("ip", &["-n", ns, "link", "set", inside, "address", mac])?;
    }
    run(
        "ip",
        &["-n", &host, "link", "set", outside, "master", bridge, "up"],
    )?;
    run("ip", &["-n", ns, "link", "set", inside, "up"])?;
    Ok(())
}

/// The address that plays the home router on net0 (its gateway, or the first host address).
pub fn home_router(lab: &Lab) -> Ipv4Addr {
    let net0 = &lab.networks.net0;
    net0.gateway
        .or_else(|| net0.cidr.hosts().next())
        .unwrap_or(net0.host)
}

/// The outside: the home router's address on net0, and routes into the lab networks via the
/// host, as a hostile neighbour on net0 could add (the firewall must stop them).
pub fn outside(lab: &Lab, names: &LocalLab) -> Result<(), LocalError> {
    let ns = names.outside_ns();
    let net0 = &lab.networks.net0;
    plug(names, &ns, "eth0", "uplink", &net0.bridge, None)?;
    let address = format!("{}/{}", home_router(lab), net0.cidr.prefix_len());
    run(
        "ip",
        &["-n", &ns, "address", "add", &address, "dev", "eth0"],
    )?;
    let host = net0.host.to_string();
    for net in [
        lab.networks.net1.cidr,
        lab.networks.net2.cidr,
        lab.vpn.tunnel,
    ] {
        // Metric 100: a VPN client's routes (metric 0) win over these.
        route(&ns, &net.to_string(), &host, &["metric", "100"])?;
    }
    // The host reaches the internet through the home router.
    route(
        &names.host_ns(),
        "default",
        &home_router(lab).to_string(),
        &[],
    )?;
    Ok(())
}

/// Host-side veth name of `machine`'s NIC `index`: unique within the host namespace.
fn port_name(machine: &Machine, index: usize) -> String {
    format!("m{}n{index}", machine.vmid)
}

/// One veth per NIC of `machine`, `eth<index>` in its namespace with the planned MAC, plugged
/// into the NIC's bridge.
pub fn machine_links(lab: &Lab, names: &LocalLab, machine: &Machine) -> Result<(), LocalError> {
    let ns = names.machine_ns(&machine.name.to_string());
    for (index, nic) in machine.nics.iter().enumerate() {
        let mac = machine.mac(index).map(|m| m.to_string());
        plug(
            names,
            &ns,
            &format!("eth{index}"),
            &port_name(machine, index),
            &lab.networks.get(nic.network).bridge,
            mac.as_deref(),
        )?;
    }
    Ok(())
}

/// The udhcpc script: the lease's address on the interface, nothing else (routes come from
/// the plan; resolv.conf is the machine's, shared by every namespace, and is left alone).
pub const DHCP_SCRIPT: &str = "#!/bin/sh\n\
case \"$1\" in\n\
  bound|renew) ip address replace \"$ip/$subnet\" dev \"$interface\" ;;\n\
esac\n";

/// Addresses: static on net0 (the home router's network), by DHCP from the lab's dnsmasq on
/// the lab networks, checked against the reservation.
pub fn machine_addresses(
    lab: &Lab,
    names: &LocalLab,
    machine: &Machine,
    dhcp_script: &Path,
) -> Result<(), LocalError> {
    let ns = names.machine_ns(&machine.name.to_string());
    for (index, nic) in machine.nics.iter().enumerate() {
        let interface = format!("eth{index}");
        let prefix = lab.networks.get(nic.network).cidr.prefix_len();
        if nic.network == NetworkId::Net0 {
            let address = format!("{}/{prefix}", nic.address);
            run(
                "ip",
                &["-n", &ns, "address", "add", &address, "dev", &interface],
            )?;
            continue;
        }
        in_ns(
            &ns,
            "udhcpc",
            &[
                "-i",
                &interface,
                "-f",
                "-q",
                "-n",
                "-t",
                "10",
                "-T",
                "1",
                "-s",
                &dhcp_script.display().to_string(),
            ],
        )?;
        let shown = run(
            "ip",
            &["-n", &ns, "-4", "-o", "address", "show", "dev", &interface],
        )?;
        let expected = format!("{}/{prefix}", nic.address);
        if !shown.split_whitespace().any(|word| word == expected) {
            return Err(LocalError::Dhcp {
                machine: machine.name.to_string(),
                interface,
                expected,
                got: shown.trim().to_owned(),
            });
        }
    }
    for route in guest_routes(lab, machine) {
        let destination = route
            .destination
            .map_or("default".to_owned(), |d| d.to_string());
        self::route(&ns, &destination, &route.gateway.to_string(), &[])?;
    }
    Ok(())
}

/// `ip route add <destination> via <gateway> <extra…>` in `ns`.
fn route(ns: &str, destination: &str, gateway: &str, extra: &[&str]) -> Result<(), LocalError> {
    let mut args = vec!["-n", ns, "route", "add", destination, "via", gateway];
    args.extend_from_slice(extra);
    run("ip", &args).map(|_| ())
}

/// Turns on IPv4 forwarding in `ns` (the namespace's own, not the machine's).
pub fn forwarding(ns: &str) -> Result<(), LocalError> {
    in_ns(ns, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]).map(|_| ())
}
