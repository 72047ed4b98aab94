//! The rendered dnsmasq config, served by the real dnsmasq on a bridge named like the lab's,
//! hands every machine NIC its reservation and strangers an address from the dynamic range,
//! with the host as DNS server and the lab's domain; the clients are real `udhcpc`s with the
//! machines' MACs, each in a namespace of its own, and the host's rendered ruleset is loaded
//! while they ask. Then the same dnsmasq answers DNS on the host's address there: every
//! machine's name, `lb` and `vpn`, over UDP and TCP, and nothing on the host's other addresses.

use lab_bootstrap::model::{NetworkId, Role};
use lab_bootstrap::render::{dnsmasq, nftables};
use lab_bootstrap::Lab;
use lab_tests::bridged::Bridged;
use lab_tests::dns::{self, Answer};
use lab_tests::netns::Netns;
use lab_tests::workspace;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

/// What a client was given with its lease.
struct Lease {
    address: Ipv4Addr,
    /// The DNS servers (option 6), as udhcpc reports them.
    dns: String,
    /// The domain name (option 15).
    domain: String,
    /// The domain search list (option 119).
    search: String,
}

/// Runs udhcpc on `eth0` of `client` until it holds a lease (bounded: 10 tries, 1s apart);
/// returns what it was given.
fn lease(client: &Netns, dir: &Path) -> Option<Lease> {
    let out = dir.join(format!("{}.lease", client.name));
    let script = dir.join("udhcpc.script");
    let status = client
        .command("udhcpc")
        .args([
            "-i", "eth0", "-f", "-q", "-n", "-t", "10", "-T", "1", "-A", "1", "-O", "search", "-s",
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
    let text = std::fs::read_to_string(&out).ok()?;
    let mut lines = text.lines().map(|l| l.trim().to_owned());
    Some(Lease {
        address: lines.next()?.parse().ok()?,
        dns: lines.next()?,
        domain: lines.next()?,
        search: lines.next()?,
    })
}

/// `name`'s A records from `server`, asked from inside `client`.
fn resolve(client: &Netns, server: Ipv4Addr, name: &str, tcp: bool) -> Result<Answer, String> {
    let server = SocketAddr::from((server, 53));
    let timeout = Duration::from_secs(2);
    client.enter(|| {
        if tcp {
            dns::resolve_tcp(server, name, timeout)
        } else {
            dns::resolve_udp(server, name, timeout)
        }
    })
}

fn serves_reservations_and_range(network: NetworkId) {
    let lab = lab();
    let net = lab.networks.get(network).clone();
    let dir = tempfile::tempdir().unwrap();
    // udhcpc's hook: record what was offered instead of configuring the interface.
    let script = dir.path().join("udhcpc.script");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && printf '%s\\n' \"$ip\" \"$dns\" \"$domain\" \"$search\" > \"$LEASE_OUT\"\nexit 0\n",
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
    let got: Vec<Option<Lease>> = clients
        .iter()
        .map(|(ns, _)| lease(ns, dir.path()))
        .collect();

    let reserved: Vec<Ipv4Addr> = clients.iter().filter_map(|(_, a)| *a).collect();
    let range = net.dhcp.clone().unwrap();
    for ((ns, expected), lease) in clients.iter().zip(&got) {
        let lease = lease
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no lease", ns.name));
        // Every client resolves through the host, under the lab's domain.
        assert_eq!(lease.dns, net.host.to_string(), "{}: DNS server", ns.name);
        assert_eq!(lease.domain, "lab", "{}: domain", ns.name);
        assert_eq!(lease.search, "lab", "{}: search domains", ns.name);
        let got = lease.address;
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

    answers_the_labs_names(
        &lab,
        network,
        &host,
        &clients[0].0,
        got[0].as_ref().unwrap(),
    );
}

/// With the rendered config running on `host`: `client` (holding `lease`) gets an answer for
/// every machine of the lab it can reach, `lb` and `vpn` among them, from the host's address on
/// its network; the lab's domain is never forwarded; the host's other addresses serve no DNS.
fn answers_the_labs_names(
    lab: &Lab,
    network: NetworkId,
    host: &Bridged,
    client: &Netns,
    lease: &Lease,
) {
    let net = lab.networks.get(network);
    client.run(&[
        "ip",
        "addr",
        "add",
        &format!("{}/{}", lease.address, net.cidr.prefix_len()),
        "dev",
        "eth0",
    ]);
    let on = |role: Role, on: NetworkId| {
        lab.machines
            .iter()
            .find(|m| m.role == role)
            .and_then(|m| m.address_on(on))
    };
    // Every machine on this network, by its name with and without the domain.
    let mut expected: Vec<(String, Option<Ipv4Addr>)> = Vec::new();
    for machine in &lab.machines {
        if let Some(address) = machine.address_on(network) {
            expected.push((format!("{}.lab", machine.name), Some(address)));
            expected.push((machine.name.to_string(), Some(address)));
        }
    }
    // The containers by role: the lb at its net2 address from both networks (net1 reaches
    // net2); the vpn from net1 only, as is every machine on net1 alone.
    expected.push(("lb.lab".to_owned(), on(Role::Lb, NetworkId::Net2)));
    expected.push(("lb".to_owned(), on(Role::Lb, NetworkId::Net2)));
    match network {
        NetworkId::Net1 => {
            expected.push(("vpn.lab".to_owned(), on(Role::Vpn, NetworkId::Net1)));
            expected.push(("vpn".to_owned(), on(Role::Vpn, NetworkId::Net1)));
        }
        _ => {
            expected.push(("vpn.lab".to_owned(), None));
            expected.push(("manager.lab".to_owned(), None));
        }
    }
    // A name under the lab's domain that nothing has: answered here, never forwarded.
    expected.push(("nosuch.lab".to_owned(), None));

    let mut wrong = Vec::new();
    for (name, address) in &expected {
        let answer = resolve(client, net.host, name, false);
        let right = match (&answer, address) {
            (Ok(a), Some(address)) => a.rcode == 0 && a.addresses == [*address],
            // No upstream is reachable from here: an NXDOMAIN is dnsmasq's own answer.
            (Ok(a), None) => a.rcode == dns::NXDOMAIN,
            (Err(_), _) => false,
        };
        if !right {
            wrong.push(format!("{name}: {answer:?}, expected {address:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "DNS on {}:\n{}",
        network.as_str(),
        wrong.join("\n")
    );
    let over_tcp = resolve(client, net.host, "cp1.lab", true).unwrap();
    assert_eq!(
        over_tcp.addresses,
        [lab.machines
            .iter()
            .find(|m| m.name.as_str() == "cp1")
            .unwrap()
            .address_on(network)
            .unwrap()],
        "cp1.lab over TCP"
    );

    // Nothing but the lab bridge: not the host's net0 address (a bridge of its own here, with
    // a neighbour on it), not loopback.
    let net0 = &lab.networks.net0;
    host.bridge(
        &net0.bridge,
        &format!("{}/{}", net0.host, net0.cidr.prefix_len()),
    );
    let neighbour = Netns::new("dnsn0");
    host.attach(&net0.bridge, &neighbour, "eth0", None);
    let neighbour_address = net0.cidr.hosts().last().unwrap();
    neighbour.run(&[
        "ip",
        "addr",
        "add",
        &format!("{neighbour_address}/{}", net0.cidr.prefix_len()),
        "dev",
        "eth0",
    ]);
    // dnsmasq's bind-dynamic would pick the new address up at once were it to serve it.
    std::thread::sleep(Duration::from_millis(500));
    let from_net0 = resolve(&neighbour, net0.host, "cp1.lab", false);
    assert!(from_net0.is_err(), "DNS on net0: {from_net0:?}");
    let from_loopback = resolve(&host.ns, Ipv4Addr::LOCALHOST, "cp1.lab", false);
    assert!(
        from_loopback.is_err(),
        "DNS on the host's loopback: {from_loopback:?}"
    );
}

#[test]
fn net1_machines_get_their_reservations_and_strangers_the_range() {
    serves_reservations_and_range(NetworkId::Net1);
}

#[test]
fn net2_machines_get_their_reservations_and_strangers_the_range() {
    serves_reservations_and_range(NetworkId::Net2);
}
