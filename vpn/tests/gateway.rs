//! What the gateway lets through besides the tunnel (nothing), masquerading towards networks
//! that have no route back, and the routes it keeps through its interface across reloads.

mod support;

use support::*;

fn route_via(netns: &lab_tests::netns::Netns, net: &str, via: &str) {
    netns.run(&["ip", "route", "add", net, "via", via]);
}

#[test]
fn net0_never_reaches_net1_around_the_tunnel() {
    let topology = Topology::new();
    // Everything a host on net0 needs to try: a route to net1 via the gateway, and one back.
    route_via(&topology.client, "10.10.1.0/24", GATEWAY_UNDERLAY);
    route_via(&topology.server, "198.51.100.0/24", GATEWAY_NET1);
    let _server = topology.start_server();
    assert_eq!(
        fetch(&topology.client, SERVER).as_deref(),
        Some("behind the gateway"),
        "the namespace router itself forwards (the test would prove nothing)"
    );

    let gateway = topology.start_gateway(&topology.gateway_config(&key_pair(), ""));
    assert_eq!(fetch(&topology.client, SERVER), None, "net0 reached net1");
    assert!(!ping(&topology.client, SERVER, &[]));

    // Its interface's rules go with it, the drop stays (fail closed: see fail_closed.rs).
    drop(gateway);
    let rules = topology
        .gateway
        .command("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        !rules.contains(&topology.interface),
        "the interface's forwarding rules outlived the daemon: {rules}"
    );
    assert!(rules.contains("policy drop;"), "{rules}");
    assert_eq!(fetch(&topology.client, SERVER), None, "net0 reached net1");
}

#[test]
fn masquerade_reaches_a_network_without_a_route_back_and_follows_reloads() {
    let topology = Topology::new();
    topology
        .server
        .run(&["ip", "route", "del", "10.10.100.0/24"]);
    let _server = topology.start_server();
    let (gateway_key, client_key) = (key_pair(), key_pair());
    let peer = format!(
        "[[peer]]\nname = \"admin\"\npublic_key = \"{}\"\nallowed_ips = [\"{CLIENT_TUNNEL}/32\"]\n",
        client_key.public
    );
    let plain = topology.gateway_config(&gateway_key, &peer);
    let mut gateway = topology.start_gateway(&plain);
    let (_client, _) = topology.start_lab_vpn_client(&client_key, &gateway_key);
    assert!(ping(&topology.client, GATEWAY_TUNNEL, &[]));
    assert_eq!(
        fetch(&topology.client, SERVER),
        None,
        "net1 answered a tunnel address it has no route to"
    );

    let masquerading = plain.replace("masquerade = false", "masquerade = true");
    assert_ne!(masquerading, plain);
    let ready = gateway.reload(&masquerading);
    assert!(!ready.contains("refused"), "{ready}");
    assert_eq!(
        fetch(&topology.client, SERVER).as_deref(),
        Some("behind the gateway")
    );

    let ready = gateway.reload(&plain);
    assert!(!ready.contains("refused"), "{ready}");
    assert_eq!(fetch(&topology.client, SERVER), None);
}

fn routes(topology: &Topology) -> String {
    let output = topology
        .gateway
        .command("ip")
        .args(["route", "show", "dev", &topology.interface])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn reload_removes_the_routes_of_allowed_ips_that_are_gone() {
    let topology = Topology::new();
    let gateway_key = key_pair();
    let peer = |allowed: &str| {
        format!(
            "[[peer]]\nname = \"site\"\npublic_key = \"{}\"\nallowed_ips = [{allowed}]\n",
            key_pair().public
        )
    };
    let mut gateway = topology.start_gateway(
        &topology.gateway_config(&gateway_key, &peer(r#""10.10.100.2/32", "10.20.0.0/24""#)),
    );
    assert!(
        routes(&topology).contains("10.20.0.0/24"),
        "{}",
        routes(&topology)
    );
    // A route an admin added by hand is not the daemon's to remove.
    topology.gateway.run(&[
        "ip",
        "route",
        "add",
        "10.30.0.0/24",
        "dev",
        &topology.interface,
    ]);

    let ready =
        gateway.reload(&topology.gateway_config(&gateway_key, &peer(r#""10.10.100.2/32""#)));
    assert!(!ready.contains("refused"), "{ready}");
    let now = routes(&topology);
    assert!(!now.contains("10.20.0.0/24"), "stale route kept: {now}");
    assert!(
        now.contains("10.30.0.0/24"),
        "the admin's route went: {now}"
    );
    assert!(
        now.contains("10.10.100.0/24"),
        "the tunnel's own route went: {now}"
    );
}

/// A 32-byte key in the forms it could leak in: base64 as configured, hex as the UAPI has it.
fn key_forms(base64_key: &str) -> [String; 2] {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_key)
        .unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    [base64_key.to_owned(), hex]
}

#[test]
fn secrets_stay_out_of_logs_and_metrics_and_the_interface_goes_with_the_daemon() {
    use nix::sys::signal::Signal;
    let topology = Topology::new();
    let (gateway_key, client_key) = (key_pair(), key_pair());
    let psk = wg(&["genpsk"], None);
    let psk_file = secret_file(topology.dir.path(), "admin.psk", &psk);
    let peer = format!(
        "[[peer]]\nname = \"admin\"\npublic_key = \"{}\"\npreshared_key_file = \"{}\"\nallowed_ips = [\"{CLIENT_TUNNEL}/32\"]\n",
        client_key.public,
        psk_file.display()
    );
    // Debug logging: the most a misconfigured deployment would print.
    let config = topology
        .gateway_config(&gateway_key, &peer)
        .replace("level = \"info\"", "level = \"debug\"");
    assert!(config.contains("level = \"debug\""));
    let mut gateway = topology.start_gateway(&config);
    let socket =
        std::path::PathBuf::from(format!("/var/run/wireguard/{}.sock", topology.interface));
    assert!(socket.exists());

    // Traffic, a handshake with a PSK, a reload, a scrape: everything that logs.
    let client_key_file = secret_file(topology.dir.path(), "client.key", &client_key.private);
    let client_psk_file = secret_file(topology.dir.path(), "client.psk", &psk);
    let go = WireguardGo::start(&topology.client, CLIENT_TUNNEL);
    go.wg(
        &topology.client,
        &[
            "set",
            &go.interface,
            "private-key",
            client_key_file.to_str().unwrap(),
            "peer",
            &gateway_key.public,
            "preshared-key",
            client_psk_file.to_str().unwrap(),
            "endpoint",
            &format!("{GATEWAY_UNDERLAY}:{PORT}"),
            "allowed-ips",
            "10.10.100.0/24",
        ],
    );
    go.route(&topology.client, "10.10.100.0/24");
    assert!(ping(&topology.client, GATEWAY_TUNNEL, &[]));
    let ready = gateway.reload(&config);
    assert!(!ready.contains("refused"), "{ready}");
    let metrics = topology.gateway_metrics();

    gateway.process.signal(Signal::SIGTERM);
    assert!(gateway
        .process
        .wait_exit(std::time::Duration::from_secs(30))
        .success());
    let logs = gateway.process.stderr().join("\n");
    assert!(
        logs.contains("DEBUG") || logs.contains("debug"),
        "no debug logs: {logs}"
    );
    for secret in [&gateway_key.private, &psk] {
        for form in key_forms(secret) {
            assert!(!logs.contains(&form), "a secret is in the log");
            assert!(!metrics.contains(&form), "a secret is in the metrics");
        }
    }

    // Stopped: no interface, no control socket, no forwarding table left behind.
    let links = topology
        .gateway
        .command("ip")
        .args(["link"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&topology.interface),
        "the TUN device outlived the daemon"
    );
    assert!(!socket.exists(), "the control socket outlived the daemon");
}

/// The kernel's receive buffer of the gateway's UDP socket, as `ss` reports it (`rb`: what a
/// socket is made with, or twice what was asked, the kernel's bookkeeping share included).
fn udp_receive_buffer(topology: &Topology) -> u64 {
    let output = topology
        .gateway
        .command("ss")
        .args(["-uanmH", &format!("sport = :{PORT}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let rb = text
        .split(['(', ',', ')'])
        .find_map(|field| field.strip_prefix("rb")?.parse().ok());
    rb.unwrap_or_else(|| panic!("no receive buffer in `ss`'s line: {text}"))
}

#[test]
fn the_udp_receive_buffer_is_the_configs_and_follows_reloads() {
    let topology = Topology::new();
    let gateway_key = key_pair();
    let default_config = topology.gateway_config(&gateway_key, "");
    let mut buffered: toml_edit::DocumentMut = default_config.parse().unwrap();
    buffered["interface"]["udp_receive_buffer"] = toml_edit::value(3 << 20);
    let system_default: u64 = std::fs::read_to_string("/proc/sys/net/core/rmem_default")
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let mut gateway = topology.start_gateway(&buffered.to_string());
    // The tests run as root, which may go past net.core.rmem_max.
    assert_eq!(udp_receive_buffer(&topology), 2 * (3 << 20));

    let ready = gateway.reload(&default_config);
    assert!(!ready.contains("refused"), "{ready}");
    assert_eq!(udp_receive_buffer(&topology), system_default);

    buffered["interface"]["udp_receive_buffer"] = toml_edit::value(1 << 20);
    let ready = gateway.reload(&buffered.to_string());
    assert!(!ready.contains("refused"), "{ready}");
    assert_eq!(udp_receive_buffer(&topology), 2 << 20);
}

#[test]
fn datagrams_the_kernel_drops_while_the_gateway_falls_behind_are_counted() {
    use nix::sys::signal::Signal;
    const SENT: u64 = 2000;
    const SIZE: usize = 1000;
    let topology = Topology::new();
    let mut config: toml_edit::DocumentMut =
        topology.gateway_config(&key_pair(), "").parse().unwrap();
    config["interface"]["udp_receive_buffer"] = toml_edit::value(64 << 10);
    let gateway = topology.start_gateway(&config.to_string());
    let metric = |name: &str| {
        topology
            .gateway_metric(name)
            .unwrap_or_else(|| panic!("no {name} in {}", topology.gateway_metrics()))
    };
    // As the kernel counts it: twice what was asked.
    assert_eq!(
        metric("lab_vpn_udp_receive_buffer_bytes"),
        f64::from(2 * (64 << 10))
    );
    assert_eq!(metric("lab_vpn_udp_receive_drops_total"), 0.0);

    // A daemon off the CPU: whatever its buffer cannot hold is dropped by the kernel.
    let before = udp_receive_buffer_errors(&topology);
    gateway.process.signal(Signal::SIGSTOP);
    topology.client.enter(|| {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for sent in 0..SENT {
            socket
                .send_to(&[0u8; SIZE], (GATEWAY_UNDERLAY, PORT))
                .unwrap();
            // Paced, so the veth's own queue (1000 packets) never overflows on a busy machine.
            if sent % 100 == 99 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    });
    gateway.process.signal(Signal::SIGCONT);
    // The buffer holds at most its bytes (twice the setting, the kernel's share included) of
    // datagrams, each at least its own size; the gateway's namespace counts the rest as its
    // only UDP socket's drops.
    let held = 2 * (64 << 10) / SIZE as u64;
    let drops = metric("lab_vpn_udp_receive_drops_total") as u64;
    assert_eq!(drops, udp_receive_buffer_errors(&topology) - before);
    assert!(
        (SENT - held..=SENT).contains(&drops),
        "{drops} of {SENT} datagrams counted dropped"
    );
}

/// `Udp: RcvbufErrors` of the gateway's namespace: datagrams dropped for a full receive buffer.
fn udp_receive_buffer_errors(topology: &Topology) -> u64 {
    let output = topology
        .gateway
        .command("cat")
        .arg("/proc/net/snmp")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}
