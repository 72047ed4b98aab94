//! The rendered dnsmasq config, served by the real dnsmasq on a bridge named like the lab's,
//! hands every machine NIC its reservation and strangers an address from the dynamic range;
//! the clients are real `udhcpc`s with the machines' MACs, each in a namespace of its own, and
//! the host's rendered ruleset is loaded while they ask.

use lab_bootstrap::model::NetworkId;
use lab_bootstrap::render::{dnsmasq, nftables};
use lab_bootstrap::Lab;
use lab_tests::bridged::Bridged;
use lab_tests::netns::Netns;
use lab_tests::workspace;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn lab() -> Lab {
    lab_daemon::config::load(&workspace::config_path("lab.toml")).unwrap()
}

/// dnsmasq killed when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs udhcpc on `eth0` of `client` until it holds a lease (bounded: 10 tries, 1s apart);
/// returns the address it was given.
fn lease(client: &Netns, dir: &Path) -> Option<Ipv4Addr> {
    let out = dir.join(format!("{}.lease", client.name));
    let script = dir.join("udhcpc.script");
    let status = client
        .command("udhcpc")
        .args([
            "-i", "eth0", "-f", "-q", "-n", "-t", "10", "-T", "1", "-A", "1", "-s",
        ])
        .arg(&script)
        .env("LEASE_OUT", &out)
        .output()
        .unwrap();
    if !status.status.success() {
        eprintln!(
            "udhcpc in {}: {}",
            client.name,
            String::from_utf8_lossy(&status.stderr)
        );
        return None;
    }
    std::fs::read_to_string(&out).ok()?.trim().parse().ok()
}

fn serves_reservations_and_range(network: NetworkId) {
    let lab = lab();
    let net = lab.networks.get(network).clone();
    let dir = tempfile::tempdir().unwrap();
    // udhcpc's hook: record the address offered instead of configuring the interface.
    let script = dir.path().join("udhcpc.script");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip\" > \"$LEASE_OUT\"\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let leases = dir.path().join("leases");
    let conf = dir.path().join("dnsmasq.conf");
    std::fs::write(&conf, dnsmasq::config(&lab, network, &leases)).unwrap();
    let test = Command::new("dnsmasq")
        .arg("--test")
        .arg(format!("--conf-file={}", conf.display()))
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}",
        String::from_utf8_lossy(&test.stderr)
    );

    let host = Bridged::new("dhcp");
    host.bridge(
        &net.bridge,
        &format!("{}/{}", net.host, net.cidr.prefix_len()),
    );
    // The host's firewall is loaded: DHCP must get through its input chain (net2 gets little
    // else).
    let ruleset = dir.path().join("lab.nft");
    std::fs::write(&ruleset, nftables::ruleset(&lab).unwrap()).unwrap();
    host.ns.run(&["nft", "-f", ruleset.to_str().unwrap()]);

    // Every machine NIC on this network, plus one MAC lab.toml does not know.
    let mut clients: Vec<(Netns, Option<Ipv4Addr>)> = Vec::new();
    for machine in &lab.machines {
        for (index, nic) in machine.nics.iter().enumerate() {
            if nic.network == network {
                let ns = Netns::new("dhcpc");
                let mac = machine.mac(index).unwrap().to_string();
                host.attach(&net.bridge, &ns, "eth0", Some(&mac));
                clients.push((ns, Some(nic.address)));
            }
        }
    }
    assert!(
        clients.len() >= 2,
        "the example has machines on {}",
        network.as_str()
    );
    let stranger = Netns::new("dhcpc");
    host.attach(&net.bridge, &stranger, "eth0", Some("02:00:5e:10:00:01"));
    clients.push((stranger, None));

    let _server = Server(
        host.ns
            .command("dnsmasq")
            .arg("--keep-in-foreground")
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--conf-file={}", conf.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // One client at a time: with several busybox clients at once on one segment, one now and
    // then gave up after a DHCPACK that dnsmasq logged as sent (not investigated further).
    let got: Vec<Option<Ipv4Addr>> = clients
        .iter()
        .map(|(ns, _)| lease(ns, dir.path()))
        .collect();

    let reserved: Vec<Ipv4Addr> = clients.iter().filter_map(|(_, a)| *a).collect();
    let range = net.dhcp.clone().unwrap();
    for ((ns, expected), got) in clients.iter().zip(&got) {
        let got = got.unwrap_or_else(|| panic!("{}: no lease", ns.name));
        match expected {
            Some(expected) => assert_eq!(got, *expected, "{}", ns.name),
            None => {
                assert!(range.contains(got), "stranger got {got}, outside the range");
                assert!(
                    !reserved.contains(&got),
                    "stranger got a reservation: {got}"
                );
            }
        }
    }
    // dnsmasq recorded the leases where the rendered config says.
    let recorded = std::fs::read_to_string(&leases).unwrap();
    for address in &reserved {
        assert!(
            recorded.contains(&address.to_string()),
            "{address} not in {recorded}"
        );
    }
}

#[test]
fn net1_machines_get_their_reservations_and_strangers_the_range() {
    serves_reservations_and_range(NetworkId::Net1);
}

#[test]
fn net2_machines_get_their_reservations_and_strangers_the_range() {
    serves_reservations_and_range(NetworkId::Net2);
}
