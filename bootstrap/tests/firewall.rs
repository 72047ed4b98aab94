//! The rendered `table inet lab`, loaded with the real `nft` into a namespace router shaped
//! like the host (the three bridges and host addresses of configs/lab.toml, the rendered sysctl
//! and route), enforces docs/ARCHITECTURE.md's policy matrix on real TCP connections, and replacing it
//! leaves every other table alone. The matrix runs with br_netfilter on (as Proxmox's firewall
//! turns it on: switched traffic crosses the same chains) and off. The router also has two
//! bridges that are not the lab's, with guests of the user's own: they keep forwarding, among
//! themselves and to the outside, whatever the lab's policy.

use lab_bootstrap::model::{NetworkId, Role};
use lab_bootstrap::render::{self, nftables, observability, sysctl};
use lab_bootstrap::Lab;
use lab_tests::bridged::Bridged;
use lab_tests::dns;
use lab_tests::netns::Netns;
use lab_tests::workspace;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn lab() -> Lab {
    lab_daemon::config::load(&workspace::config_path("lab.toml")).unwrap()
}

fn ruleset_file(lab: &Lab, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("lab.nft");
    std::fs::write(&path, nftables::ruleset(lab).unwrap()).unwrap();
    path
}

fn nft(ns: &Netns, args: &[&str]) -> Output {
    ns.command("nft").args(args).output().unwrap()
}

fn nft_ok(ns: &Netns, args: &[&str]) -> String {
    let out = nft(ns, args);
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn nft_accepts_the_rendered_ruleset() {
    let dir = tempfile::tempdir().unwrap();
    let file = ruleset_file(&lab(), dir.path());
    let ns = Netns::new("nftc");
    nft_ok(&ns, &["-c", "-f", file.to_str().unwrap()]);
}

#[test]
fn loading_twice_replaces_only_table_inet_lab() {
    let dir = tempfile::tempdir().unwrap();
    let file = ruleset_file(&lab(), dir.path());
    let file = file.to_str().unwrap();
    let ns = Netns::new("nftr");
    nft_ok(
        &ns,
        &[
            "add table inet other; add chain inet other keep { type filter hook forward priority 10; policy accept; }; add rule inet other keep counter accept",
        ],
    );
    let other_before = nft_ok(&ns, &["list", "table", "inet", "other"]);
    nft_ok(&ns, &["-f", file]);
    let lab_once = nft_ok(&ns, &["list", "table", "inet", "lab"]);
    nft_ok(&ns, &["-f", file]);
    let lab_twice = nft_ok(&ns, &["list", "table", "inet", "lab"]);
    assert_eq!(lab_once, lab_twice, "a second load changed the table");
    assert_eq!(lab_twice.matches("chain forward").count(), 1);
    assert_eq!(
        nft_ok(&ns, &["list", "table", "inet", "other"]),
        other_before
    );
    let tables = nft_ok(&ns, &["list", "tables"]);
    assert!(
        tables.contains("table inet other") && tables.contains("table inet lab"),
        "{tables}"
    );
}

/// A `busybox nc` server that accepts and closes every connection, killed with the test.
struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn listen(ns: &Netns, port: u16) -> Listener {
    Listener(
        ns.command("busybox")
            .args(["nc", "-ll", "-p", &port.to_string(), "-e", "/bin/true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// A DNS server on UDP port 53 of the given addresses of a namespace that answers each query
/// with an empty answer: what reaches it is answered. One socket per address, so each reply
/// leaves from the address asked. Stopped with the test.
struct DnsResponder {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl DnsResponder {
    fn start(ns: &Netns, addresses: &[String]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = addresses
            .iter()
            .map(|address| {
                let socket = ns.enter(|| UdpSocket::bind((address.as_str(), 53)).unwrap());
                socket
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let stopped = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 512];
                    while !stopped.load(Ordering::Relaxed) {
                        if let Ok((n, from)) = socket.recv_from(&mut buf) {
                            if n > 12 {
                                // The query itself, marked as a reply (QR): no records, no error.
                                buf[2] |= 0x80;
                                let _ = socket.send_to(&buf[..n], from);
                            }
                        }
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A DNS query over UDP from `ns` to `address:53` is answered within 2 seconds.
fn dns_answers(ns: &Netns, address: &str) -> bool {
    let server = SocketAddr::new(address.parse().unwrap(), 53);
    ns.enter(|| dns::resolve_udp(server, "cp1.lab", Duration::from_secs(2)))
        .is_ok()
}

/// A TCP connection from `ns` to `address:port` completes within 2 seconds.
fn connects(ns: &Netns, address: &str, port: u16) -> bool {
    ns.command("busybox")
        .args(["nc", "-w", "2", address, &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Waits (bounded) until a listener answers inside its own namespace.
fn wait_listening(ns: &Netns, address: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !connects(ns, address, port) {
        assert!(
            Instant::now() < deadline,
            "{address}:{port} never listened in {}",
            ns.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A namespace plugged into `bridge` with `address/24` and a default route via `gateway`.
fn client(router: &Bridged, role: &str, bridge: &str, address: &str, gateway: &str) -> Netns {
    let ns = Netns::new(role);
    router.attach(bridge, &ns, "eth0", None);
    ns.run(&["ip", "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
    ns.run(&["ip", "route", "add", "default", "via", gateway]);
    ns
}

fn sysctl_set(ns: &Netns, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.run(&["sh", "-c", &format!("echo {value} > {path}")]);
}

#[test]
fn policy_matrix_holds_across_the_router() {
    policy_matrix(true);
}

#[test]
fn policy_matrix_holds_across_the_router_without_br_netfilter() {
    policy_matrix(false);
}

fn policy_matrix(br_netfilter: bool) {
    let lab = lab();
    let nets = &lab.networks;
    let (n0, n1, n2) = (&nets.net0, &nets.net1, &nets.net2);
    let gateway = n0.gateway.unwrap().to_string();
    let h = |net: &lab_bootstrap::model::Network| net.host.to_string();
    let address_of = |role, net| render::role_address(&lab, role, net).unwrap().to_string();
    let lb0 = address_of(Role::Lb, NetworkId::Net0);
    let vpn1 = address_of(Role::Vpn, NetworkId::Net1);
    let machine = |name: &str, net| {
        lab.machines
            .iter()
            .find(|m| m.name.to_string() == name)
            .and_then(|m| m.address_on(net))
            .unwrap()
            .to_string()
    };
    let cp1 = machine("cp1", NetworkId::Net1);
    let w1 = machine("w1", NetworkId::Net2);
    let manager1 = machine("manager", NetworkId::Net1);
    let lb2 = address_of(Role::Lb, NetworkId::Net2);
    let vpn_metrics = lab_bootstrap::render::containers::VPN_METRICS_PORT;
    let lb_metrics = lab_bootstrap::model::LB_METRICS_PORT;
    let node_exporter = observability::NODE_EXPORTER_PORT;
    let journal = observability::JOURNAL_REMOTE_PORT;

    // The host: three bridges, the rendered sysctl and route, an uplink via the home router.
    let router = Bridged::new("fw");
    for net in [n0, n1, n2] {
        router.bridge(
            &net.bridge,
            &format!("{}/{}", net.host, net.cidr.prefix_len()),
        );
    }
    router
        .ns
        .run(&["ip", "route", "add", "default", "via", &gateway]);
    for (key, value) in sysctl::SETTINGS {
        sysctl_set(&router.ns, key, value);
    }
    let nf_call = if br_netfilter { "1" } else { "0" };
    if Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        sysctl_set(&router.ns, "net.bridge.bridge-nf-call-iptables", nf_call);
    } else {
        assert!(
            !br_netfilter,
            "br_netfilter is not loaded (modprobe br_netfilter)"
        );
    }
    // Two bridges of the user's own on the same node, routed by it, not the lab's.
    router.bridge("vmbr7", "172.16.7.1/24");
    router.bridge("vmbr8", "172.16.8.1/24");
    let foreign = "172.16.0.0/16";

    // The internet: the home router, with a public address and no route into net1 or net2,
    // so a lab host getting through proves the masquerade.
    let internet = client(&router, "inet", &n0.bridge, &gateway, &h(n0));
    internet.run(&["ip", "route", "del", "default"]);
    internet.run(&["ip", "addr", "add", "198.51.100.1/32", "dev", "lo"]);
    // Except a route back to the VPN peers: what keeps them off the internet must be the
    // ruleset, not a missing route.
    internet.run(&[
        "ip",
        "route",
        "add",
        &lab.vpn.tunnel.to_string(),
        "via",
        &h(n0),
    ]);
    let public = "198.51.100.1";
    // The home router knows the user's own networks behind the node (they are not NATed).
    internet.run(&["ip", "route", "add", foreign, "via", &h(n0)]);
    // Someone on net0 who routes the lab's networks via the host anyway.
    let outside = client(&router, "out", &n0.bridge, "192.168.1.100", &gateway);
    outside.run(&["ip", "route", "add", "10.10.0.0/16", "via", &h(n0)]);
    outside.run(&["ip", "route", "add", foreign, "via", &h(n0)]);
    // The user's guests: two on vmbr7 (switched between them), one on vmbr8 (routed).
    let fa = client(&router, "fa", "vmbr7", "172.16.7.10", "172.16.7.1");
    let fb = client(&router, "fb", "vmbr7", "172.16.7.11", "172.16.7.1");
    let fc = client(&router, "fc", "vmbr8", "172.16.8.10", "172.16.8.1");
    // The lb container's net0 side, publishing 443.
    let lb = client(&router, "lb", &n0.bridge, &lb0, &gateway);
    lb.run(&[
        "ip",
        "route",
        "add",
        &lab.vpn.tunnel.to_string(),
        "via",
        &h(n0),
    ]);
    let node1 = client(&router, "cp1", &n1.bridge, &cp1, &h(n1));
    let node2 = client(&router, "w1", &n2.bridge, &w1, &h(n2));
    // The manager on net1, with Prometheus and journal-remote; the lb container's net2 side
    // with its metrics, routing net1 via the host as its drop-in makes it.
    let manager = client(&router, "mgr", &n1.bridge, &manager1, &h(n1));
    let lb_net2 = Netns::new("lb2");
    router.attach(&n2.bridge, &lb_net2, "eth0", None);
    lb_net2.run(&["ip", "addr", "add", &format!("{lb2}/24"), "dev", "eth0"]);
    lb_net2.run(&["ip", "route", "add", &n1.cidr.to_string(), "via", &h(n2)]);
    // The vpn container on net1, forwarding for a peer behind its tunnel (a veth here).
    let vpn = client(&router, "vpn", &n1.bridge, &vpn1, &h(n1));
    sysctl_set(&vpn, "net.ipv4.ip_forward", "1");
    let peer = Netns::new("peer");
    vpn.run(&[
        "ip", "link", "add", "wg0", "type", "veth", "peer", "name", "eth0", "netns", &peer.name,
    ]);
    vpn.run(&["ip", "addr", "add", "10.10.100.1/24", "dev", "wg0"]);
    vpn.run(&["ip", "link", "set", "wg0", "up"]);
    peer.run(&["ip", "addr", "add", "10.10.100.2/24", "dev", "eth0"]);
    peer.run(&["ip", "link", "set", "eth0", "up"]);
    peer.run(&["ip", "route", "add", "default", "via", "10.10.100.1"]);
    for route in render::routes(&lab).unwrap() {
        router.ns.run(&[
            "ip",
            "route",
            "replace",
            &route.destination.to_string(),
            "via",
            &route.gateway.to_string(),
            "dev",
            &route.bridge,
        ]);
    }

    let _listeners = [
        listen(&router.ns, 53),
        listen(&internet, 80),
        listen(&lb, 443),
        listen(&node1, 50000),
        listen(&node2, 80),
        listen(&router.ns, 22),
        listen(&router.ns, 8006),
        listen(&fb, 80),
        listen(&fc, 80),
        listen(&manager, journal),
        listen(&manager, 22),
        listen(&lb_net2, lb_metrics),
        listen(&lb_net2, 6443),
        listen(&router.ns, node_exporter),
        listen(&vpn, vpn_metrics),
    ];
    wait_listening(&manager, &manager1, journal);
    wait_listening(&lb_net2, &lb2, lb_metrics);
    wait_listening(&vpn, &vpn1, vpn_metrics);
    wait_listening(&fb, "172.16.7.11", 80);
    wait_listening(&fc, "172.16.8.10", 80);
    wait_listening(&internet, public, 80);
    wait_listening(&lb, &lb0, 443);
    wait_listening(&node1, &cp1, 50000);
    wait_listening(&node2, &w1, 80);
    wait_listening(&router.ns, &h(n0), 22);
    wait_listening(&router.ns, &h(n0), 8006);
    wait_listening(&router.ns, &h(n1), 53);
    let _dns = DnsResponder::start(&router.ns, &[h(n1), h(n2)]);

    type Cell<'a> = (&'a str, &'a Netns, String, u16);
    let allowed: Vec<Cell> = vec![
        ("outside -> LB 443 on net0", &outside, lb0.clone(), 443),
        ("outside -> host SSH", &outside, h(n0), 22),
        ("outside -> host Proxmox UI", &outside, h(n0), 8006),
        ("VPN peer -> net2", &peer, w1.clone(), 80),
        ("VPN peer -> net1", &peer, cp1.clone(), 50000),
        ("VPN peer -> LB 443 on net0", &peer, lb0.clone(), 443),
        ("net1 -> net2", &node1, w1.clone(), 80),
        ("net1 -> internet (NAT)", &node1, public.to_owned(), 80),
        ("net1 -> host SSH", &node1, h(n1), 22),
        // The lab's DNS: net1 and VPN peers on the host's net1 address, net2 on its net2 one.
        ("net1 -> host DNS on net1", &node1, h(n1), 53),
        ("VPN peer -> host DNS on net1", &peer, h(n1), 53),
        ("net2 -> host DNS on net2", &node2, h(n2), 53),
        ("net2 -> internet (NAT)", &node2, public.to_owned(), 80),
        ("net1 -> user's guest", &node1, "172.16.8.10".to_owned(), 80),
        // Dashboards and logging: the manager scrapes, the machines send their journals.
        (
            "manager -> lb metrics on net2",
            &manager,
            lb2.clone(),
            lb_metrics,
        ),
        (
            "manager -> vpn metrics on net1",
            &manager,
            vpn1.clone(),
            vpn_metrics,
        ),
        (
            "manager -> host node exporter on net1",
            &manager,
            h(n1),
            node_exporter,
        ),
        (
            "lb on net2 -> manager journal-remote",
            &lb_net2,
            manager1.clone(),
            journal,
        ),
        (
            "vpn -> manager journal-remote",
            &vpn,
            manager1.clone(),
            journal,
        ),
        // Not the lab's: as without the table.
        (
            "user's guest -> guest, same bridge",
            &fa,
            "172.16.7.11".to_owned(),
            80,
        ),
        (
            "user's guest -> guest, other bridge",
            &fa,
            "172.16.8.10".to_owned(),
            80,
        ),
        ("user's guest -> internet", &fa, public.to_owned(), 80),
        (
            "internet -> user's guest",
            &internet,
            "172.16.7.11".to_owned(),
            80,
        ),
        (
            "outside -> user's guest",
            &outside,
            "172.16.8.10".to_owned(),
            80,
        ),
    ];
    let denied: Vec<Cell> = vec![
        ("outside -> net1", &outside, cp1.clone(), 50000),
        ("outside -> net2", &outside, w1.clone(), 80),
        ("VPN peer -> internet", &peer, public.to_owned(), 80),
        ("net2 -> net1", &node2, cp1.clone(), 50000),
        // The lb's journal opens one port from one address, nothing more from net2.
        (
            "net2 -> manager journal-remote",
            &node2,
            manager1.clone(),
            journal,
        ),
        ("lb on net2 -> manager SSH", &lb_net2, manager1.clone(), 22),
        ("lb on net2 -> net1", &lb_net2, cp1.clone(), 50000),
        (
            "outside -> manager journal-remote",
            &outside,
            manager1.clone(),
            journal,
        ),
        (
            "outside -> host node exporter",
            &outside,
            h(n1),
            node_exporter,
        ),
        ("net2 -> host node exporter", &node2, h(n1), node_exporter),
        ("net2 -> host SSH", &node2, h(n2), 22),
        // Nothing from net0 (nor another bridge) reaches the lab's DNS; net2 only its own.
        ("outside -> host DNS on net1", &outside, h(n1), 53),
        ("outside -> host DNS on net2", &outside, h(n2), 53),
        ("user's guest -> host DNS on net1", &fa, h(n1), 53),
        ("net2 -> host DNS on net1", &node2, h(n1), 53),
        ("net1 -> host DNS on net2", &node1, h(n2), 53),
        ("VPN peer -> host DNS on net2", &peer, h(n2), 53),
        // The user's other bridges are outside the lab like net0.
        ("user's guest -> net1", &fa, cp1.clone(), 50000),
        ("user's guest -> net2", &fc, w1.clone(), 80),
        ("net2 -> user's guest", &node2, "172.16.8.10".to_owned(), 80),
        (
            "VPN peer -> user's guest",
            &peer,
            "172.16.8.10".to_owned(),
            80,
        ),
    ];
    // Port 53 is asked over UDP too, with a DNS query: the rule covers both.
    let check = |cells: &[Cell]| -> Vec<(String, bool)> {
        std::thread::scope(|scope| {
            let mut handles: Vec<_> = cells
                .iter()
                .map(|(name, ns, address, port)| {
                    scope.spawn(move || (name.to_string(), connects(ns, address, *port)))
                })
                .collect();
            handles.extend(cells.iter().filter(|(.., port)| *port == 53).map(
                |(name, ns, address, _)| {
                    scope.spawn(move || (format!("{name} (UDP)"), dns_answers(ns, address)))
                },
            ));
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };

    // Without the table every denied cell connects: what stops them below is the ruleset.
    for (name, connected) in check(&denied) {
        assert!(connected, "{name}: not reachable even without the ruleset");
    }

    // The user's guests reach what they reach without the table: below, it must not stop them.
    let users: Vec<Cell> = allowed
        .iter()
        .filter(|(name, ..)| name.contains("user's guest"))
        .cloned()
        .collect();
    for (name, connected) in check(&users) {
        assert!(connected, "{name}: not reachable even without the ruleset");
    }

    let dir = tempfile::tempdir().unwrap();
    let file = ruleset_file(&lab, dir.path());
    nft_ok(&router.ns, &["-f", file.to_str().unwrap()]);

    let mut wrong = Vec::new();
    for (name, connected) in check(&allowed) {
        if !connected {
            wrong.push(format!("{name}: refused, should pass"));
        }
    }
    for (name, connected) in check(&denied) {
        if connected {
            wrong.push(format!("{name}: connected, should be refused"));
        }
    }
    assert!(wrong.is_empty(), "policy matrix:\n{}", wrong.join("\n"));
}
