//! The forwarding policy fails closed: net0 reaches net1 through the gateway's namespace only
//! through a running lab-vpn's tunnel, and not at all once lab-vpn is killed, or when the unit
//! starts it on a config it refuses (exit 78).

mod support;

use lab_tests::netns::Netns;
use lab_tests::workspace;
use std::process::Stdio;
use std::time::Duration;
use support::*;

/// A second address of the server on net1, reached from net0 around the tunnel (the client's
/// tunnel routes only [`SERVER`]).
const SERVER_AROUND: &str = "10.10.1.6";

fn ruleset(netns: &Netns) -> String {
    let output = netns
        .command("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One ping, short: whether net0 got through to net1 around the tunnel.
fn around_the_tunnel(topology: &Topology) -> bool {
    topology
        .client
        .command("ping")
        .args(["-c", "1", "-W", "1", "-q", SERVER_AROUND])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The topology with net0 set up to try the way around the tunnel, and a net1 server; the
/// namespace forwards it before any lab-vpn ran there (else the test would prove nothing).
fn topology_with_a_way_around() -> (Topology, Server) {
    let topology = Topology::new();
    topology.server.run(&[
        "ip",
        "address",
        "add",
        &format!("{SERVER_AROUND}/32"),
        "dev",
        "lo",
    ]);
    topology.client.run(&[
        "ip",
        "route",
        "add",
        "10.10.1.0/24",
        "via",
        GATEWAY_UNDERLAY,
    ]);
    topology
        .server
        .run(&["ip", "route", "add", "198.51.100.0/24", "via", GATEWAY_NET1]);
    let server = topology.start_server();
    assert!(
        around_the_tunnel(&topology),
        "the namespace router itself does not forward"
    );
    (topology, server)
}

/// The unit's commands in order, as systemd runs them (each must succeed for the next to run),
/// with the binary and config paths of this test; the exit code of the first that fails, or
/// `None` when all succeeded (ExecStart is left out: the caller starts the daemon).
fn unit_start_pre(topology: &Topology, config: &std::path::Path) -> Option<i32> {
    let unit = std::fs::read_to_string(workspace::root().join("systemd/lab-vpn.service")).unwrap();
    let pre: Vec<String> = lab_tests::systemd_unit::directives(&unit, "Service")
        .into_iter()
        .filter(|(key, _)| key == "ExecStartPre")
        .map(|(_, command)| command)
        .collect();
    assert!(
        pre.first().is_some_and(|c| c.ends_with("lab-vpn guard")),
        "the guard is not the unit's first command: {pre:?}"
    );
    for command in pre {
        let argv: Vec<String> = command
            .split_whitespace()
            .map(|word| match word {
                "/usr/local/bin/lab-vpn" => BIN.to_owned(),
                "/etc/lab-vpn/vpn.toml" => config.display().to_string(),
                other => other.to_owned(),
            })
            .collect();
        let status = topology
            .gateway
            .command(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if !status.success() {
            return Some(status.code().unwrap_or(-1));
        }
    }
    None
}

#[test]
fn net0_stays_out_of_net1_when_lab_vpn_is_killed_or_refuses_its_config() {
    let (topology, _server) = topology_with_a_way_around();
    let (gateway_key, client_key) = (key_pair(), key_pair());
    let peer = format!(
        "[[peer]]\nname = \"admin\"\npublic_key = \"{}\"\nallowed_ips = [\"{CLIENT_TUNNEL}/32\"]\n",
        client_key.public
    );
    let config = topology.gateway_config(&gateway_key, &peer);
    let config_file = topology.dir.path().join("vpn.toml");
    std::fs::write(&config_file, &config).unwrap();

    // Started as the unit starts it: the guard, the check, then the daemon.
    assert_eq!(unit_start_pre(&topology, &config_file), None);
    let gateway = topology.start_gateway(&config);
    let go = WireguardGo::start(&topology.client, CLIENT_TUNNEL);
    let key = secret_file(topology.dir.path(), "client.key", &client_key.private);
    go.wg(
        &topology.client,
        &[
            "set",
            &go.interface,
            "private-key",
            key.to_str().unwrap(),
            "peer",
            &gateway_key.public,
            "endpoint",
            &format!("{GATEWAY_UNDERLAY}:{PORT}"),
            "allowed-ips",
            "10.10.100.0/24,10.10.1.0/24",
        ],
    );
    go.route(&topology.client, "10.10.100.0/24");
    go.route(&topology.client, &format!("{SERVER}/32"));
    // Running: the peer reaches net1 through the tunnel, net0 does not around it.
    assert_eq!(
        fetch(&topology.client, SERVER).as_deref(),
        Some("behind the gateway"),
        "the peer does not reach net1"
    );
    assert!(!around_the_tunnel(&topology), "net0 reached net1");

    // Killed: no cleanup ran, and the drop holds.
    gateway.process.signal(nix::sys::signal::Signal::SIGKILL);
    let mut gateway = gateway;
    assert!(!gateway.process.wait_exit(Duration::from_secs(10)).success());
    let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", topology.interface));
    assert!(
        !around_the_tunnel(&topology),
        "net0 reached net1 after SIGKILL"
    );
    assert_eq!(fetch(&topology.client, SERVER), None);
    let rules = ruleset(&topology.gateway);
    assert!(
        rules.contains("table inet lab_vpn") && rules.contains("policy drop;"),
        "{rules}"
    );

    // A fresh container (no table at all) whose config is refused: the unit stops at the
    // check with 78, after the guard, so forwarding is closed all the same.
    topology
        .gateway
        .run(&["nft", "delete", "table", "inet", "lab_vpn"]);
    assert!(
        around_the_tunnel(&topology),
        "without the table the namespace should forward again"
    );
    let broken = config.replace("listen_port = 51820", "listen_port = \"not a port\"");
    assert_ne!(broken, config);
    std::fs::write(&config_file, &broken).unwrap();
    assert_eq!(unit_start_pre(&topology, &config_file), Some(78));
    // And lab-vpn run on it refuses with 78 too, changing nothing.
    let status = topology
        .gateway
        .command(BIN)
        .args(["run", "--config"])
        .arg(&config_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(78));
    assert!(
        !around_the_tunnel(&topology),
        "net0 reached net1 with the config refused"
    );
    assert!(ruleset(&topology.gateway).contains("policy drop;"));
}

#[test]
fn the_guard_keeps_a_running_tunnel_and_a_stop_leaves_only_the_guard() {
    let (topology, _server) = topology_with_a_way_around();
    let gateway = topology.start_gateway(&topology.gateway_config(&key_pair(), ""));
    let with_tunnel = ruleset(&topology.gateway);
    assert!(
        with_tunnel.contains(&format!("\"{}\" : jump tunnel_", topology.interface)),
        "{with_tunnel}"
    );
    // The unit's guard run again (a restart's ExecStartPre while another instance still
    // runs, or an admin) leaves the running tunnel's rules in place.
    let status = topology.gateway.command(BIN).arg("guard").status().unwrap();
    assert!(status.success());
    assert_eq!(ruleset(&topology.gateway), with_tunnel);

    // SIGTERM: the interface's rules go, the drop stays.
    drop(gateway);
    let after = ruleset(&topology.gateway);
    assert!(after.contains("policy drop;"), "{after}");
    assert!(
        !after.contains("tunnel_"),
        "the interface's chain stayed: {after}"
    );
    assert!(!after.contains("nat_"), "{after}");
    assert!(
        !around_the_tunnel(&topology),
        "net0 reached net1 after a stop"
    );
}

/// At boot, before the network is up and before lab-vpn's own unit runs, the guard unit (which
/// lab-vpn.service pulls in, ordered before network-pre.target) shuts the way around the
/// tunnel: its ExecStart, run as systemd would, leaves the namespace forwarding nothing from
/// net0 into net1; and the unit passes `systemd-analyze verify`.
#[test]
fn the_boot_guard_unit_closes_forwarding_before_lab_vpn_runs() {
    let (topology, _server) = topology_with_a_way_around();
    let unit_path = workspace::root().join("systemd/lab-vpn-guard.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let order = lab_tests::systemd_unit::directives(&unit, "Unit");
    for (key, wanted) in [
        ("DefaultDependencies", "no"),
        ("Before", "network-pre.target"),
    ] {
        assert!(
            order
                .iter()
                .any(|(k, v)| k == key && v.split_whitespace().any(|w| w == wanted)),
            "{key}={wanted} missing from the guard unit: {order:?}"
        );
    }
    let vpn_unit =
        std::fs::read_to_string(workspace::root().join("systemd/lab-vpn.service")).unwrap();
    let pulls = lab_tests::systemd_unit::directives(&vpn_unit, "Unit");
    assert!(
        pulls
            .iter()
            .any(|(k, v)| k == "Wants" && v.contains("lab-vpn-guard.service")),
        "lab-vpn.service does not pull in the guard: {pulls:?}"
    );
    let start: Vec<String> = lab_tests::systemd_unit::directives(&unit, "Service")
        .into_iter()
        .filter(|(key, _)| key == "ExecStart")
        .map(|(_, command)| command)
        .collect();
    assert_eq!(start, ["/usr/local/bin/lab-vpn guard"]);
    let status = topology.gateway.command(BIN).arg("guard").status().unwrap();
    assert!(status.success());
    assert!(
        !around_the_tunnel(&topology),
        "net0 reached net1 with only the boot guard in place:\n{}",
        ruleset(&topology.gateway)
    );
    if let Err(complaint) = lab_tests::systemd_unit::verify(
        &unit_path,
        &[("/usr/local/bin/lab-vpn", std::path::Path::new(BIN))],
    ) {
        panic!("systemd-analyze verify lab-vpn-guard.service: {complaint}");
    }
}
