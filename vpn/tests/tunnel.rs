//! lab-vpn against the real wireguard-go and `wg`, in namespaces shaped like the kernel's
//! WireGuard netns selftest: handshake, ping and HTTP to net1 through the gateway, allowed-IPs
//! enforcement, preshared keys.

mod support;

use support::wireguard_go_client as client;
use support::*;

fn admin_peer(client: &KeyPair, extra: &str) -> String {
    format!(
        "[[peer]]\nname = \"admin\"\npublic_key = \"{}\"\nallowed_ips = [\"{CLIENT_TUNNEL}/32\"]\n{extra}\n",
        client.public
    )
}

/// A gateway with one admin peer, and that peer connected with wireguard-go. Bind every field
/// you destructure that must live (`_gateway`, `go`): `..` drops the rest at once.
struct Connected {
    topology: Topology,
    gateway_key: KeyPair,
    client_key: KeyPair,
    _gateway: lab_tests::daemon_process::Started,
    go: WireguardGo,
}

fn connected(offload: bool) -> Connected {
    let topology = Topology::with_offload(offload);
    let (gateway_key, client_key) = (key_pair(), key_pair());
    let gateway = topology
        .start_gateway(&topology.gateway_config(&gateway_key, &admin_peer(&client_key, "")));
    let go = client(&topology, &client_key, &gateway_key, None);
    Connected {
        topology,
        gateway_key,
        client_key,
        _gateway: gateway,
        go,
    }
}

fn wireguard_go_reaches_net1_through_the_gateway(offload: bool) {
    let Connected {
        topology,
        client_key,
        _gateway,
        go: _go,
        ..
    } = connected(offload);
    let _server = topology.start_server();

    assert!(
        ping(&topology.client, GATEWAY_TUNNEL, &[]),
        "no ping through the tunnel"
    );
    assert_eq!(
        fetch(&topology.client, SERVER).as_deref(),
        Some("behind the gateway")
    );

    let labels = format!(
        "{{interface=\"{}\",public_key=\"{}\",allowed_ips=\"{CLIENT_TUNNEL}/32\",friendly_name=\"admin\"}}",
        topology.interface, client_key.public
    );
    let handshake = topology
        .gateway_metric(&format!("wireguard_latest_handshake_seconds{labels}"))
        .unwrap_or(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - handshake).abs() < 30.0,
        "latest handshake {handshake}, now {now}"
    );
    assert!(
        topology
            .gateway_metric(&format!("wireguard_received_bytes_total{labels}"))
            .unwrap_or(0.0)
            > 0.0
    );
    assert!(
        topology
            .gateway_metric(&format!("wireguard_sent_bytes_total{labels}"))
            .unwrap_or(0.0)
            > 0.0
    );
    assert_eq!(topology.gateway_metric("lab_vpn_peers_active"), Some(1.0));
    // The kernels this runs on (≥ 4.x) grant TSO on a TUN device; USO depends on the version.
    let on = if offload { 1.0 } else { 0.0 };
    for kind in ["tso", "gro"] {
        assert_eq!(
            topology.gateway_metric(&format!("lab_vpn_offload{{kind=\"{kind}\"}}")),
            Some(on),
            "{kind}"
        );
    }
    let uso = topology.gateway_metric("lab_vpn_offload{kind=\"uso\"}");
    assert!(
        uso == Some(0.0) || (offload && uso == Some(1.0)),
        "uso {uso:?}"
    );
    for direction in ["inbound", "outbound"] {
        let batches = topology
            .gateway_metric(&format!(
                "lab_vpn_batch_packets_count{{direction=\"{direction}\"}}"
            ))
            .unwrap_or(0.0);
        let packets = topology
            .gateway_metric(&format!(
                "lab_vpn_batch_packets_sum{{direction=\"{direction}\"}}"
            ))
            .unwrap_or(0.0);
        assert!(
            batches > 0.0 && packets >= batches,
            "{direction}: {packets} packets in {batches} batches"
        );
    }
    if let Err(complaint) = lab_tests::promtool::check_metrics(&topology.gateway_metrics()) {
        panic!("promtool: {complaint}");
    }
}

fn a_source_outside_the_peers_allowed_ips_never_reaches_net1(offload: bool) {
    let Connected {
        topology,
        go,
        _gateway,
        ..
    } = connected(offload);
    let _server = topology.start_server();
    assert!(ping(&topology.client, GATEWAY_TUNNEL, &[]));
    // Another inner source on the client's tunnel: the gateway must drop it.
    topology.client.run(&[
        "ip",
        "address",
        "add",
        "10.10.100.9/32",
        "dev",
        &go.interface,
    ]);
    let before = topology
        .gateway_metric("lab_vpn_packets_dropped_total{reason=\"source_not_allowed\"}")
        .unwrap_or(0.0);
    assert!(
        !ping(&topology.client, SERVER, &["-I", "10.10.100.9"]),
        "a spoofed source got through"
    );
    let after = topology
        .gateway_metric("lab_vpn_packets_dropped_total{reason=\"source_not_allowed\"}")
        .unwrap_or(0.0);
    assert!(after >= before + 3.0, "drops {before} -> {after}");
}

fn preshared_keys_must_match(offload: bool) {
    let topology = Topology::with_offload(offload);
    let (gateway_key, client_key) = (key_pair(), key_pair());
    let psk = wg(&["genpsk"], None);
    let psk_file = secret_file(topology.dir.path(), "gateway.psk", &psk);
    let peer = admin_peer(
        &client_key,
        &format!("preshared_key_file = \"{}\"", psk_file.display()),
    );
    let _gateway = topology.start_gateway(&topology.gateway_config(&gateway_key, &peer));
    {
        let _go = client(&topology, &client_key, &gateway_key, Some(&psk));
        assert!(
            ping(&topology.client, GATEWAY_TUNNEL, &[]),
            "matching PSKs did not connect"
        );
    }
    // A client with another PSK never completes a handshake.
    let topology2 = Topology::with_offload(offload);
    let psk_file2 = secret_file(topology2.dir.path(), "gateway.psk", &psk);
    let peer2 = admin_peer(
        &client_key,
        &format!("preshared_key_file = \"{}\"", psk_file2.display()),
    );
    let _gateway2 = topology2.start_gateway(&topology2.gateway_config(&gateway_key, &peer2));
    let _go = client(
        &topology2,
        &client_key,
        &gateway_key,
        Some(&wg(&["genpsk"], None)),
    );
    assert!(!ping(&topology2.client, GATEWAY_TUNNEL, &[]));
    let labels = format!(
        "{{interface=\"{}\",public_key=\"{}\",allowed_ips=\"{CLIENT_TUNNEL}/32\",friendly_name=\"admin\"}}",
        topology2.interface, client_key.public
    );
    assert_eq!(
        topology2.gateway_metric(&format!("wireguard_latest_handshake_seconds{labels}")),
        Some(0.0)
    );
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn wg_show_and_wg_set_work_against_lab_vpn(offload: bool) {
    let Connected {
        topology,
        gateway_key,
        client_key,
        _gateway,
        go,
    } = connected(offload);
    assert!(ping(&topology.client, GATEWAY_TUNNEL, &[]));

    // wg show: keys, port, endpoint, allowed IPs, a handshake just now, bytes both ways.
    let (interface, peers) = wg_dump(&topology.gateway, &topology.interface);
    assert_eq!(interface[1], gateway_key.public);
    assert_eq!(interface[2], PORT.to_string());
    assert_eq!(peers.len(), 1);
    let peer = &peers[0];
    assert_eq!(peer[0], client_key.public);
    assert!(
        peer[2].starts_with(&format!("{CLIENT_UNDERLAY}:")),
        "endpoint {}",
        peer[2]
    );
    assert_eq!(peer[3], format!("{CLIENT_TUNNEL}/32"));
    let handshake: u64 = peer[4].parse().unwrap();
    assert!(
        now().abs_diff(handshake) < 30,
        "latest handshake {handshake}"
    );
    let (rx, tx): (u64, u64) = (peer[5].parse().unwrap(), peer[6].parse().unwrap());
    assert!(rx > 0 && tx > 0, "transfer {rx} {tx}");

    // wg set: a live peer's allowed IPs grow without a new handshake.
    topology.client.run(&[
        "ip",
        "address",
        "add",
        "10.10.100.9/32",
        "dev",
        &go.interface,
    ]);
    assert!(!ping(
        &topology.client,
        GATEWAY_TUNNEL,
        &["-I", "10.10.100.9"]
    ));
    topology.gateway.run(&[
        "wg",
        "set",
        &topology.interface,
        "peer",
        &client_key.public,
        "allowed-ips",
        &format!("{CLIENT_TUNNEL}/32,10.10.100.9/32"),
    ]);
    assert!(ping(
        &topology.client,
        GATEWAY_TUNNEL,
        &["-I", "10.10.100.9"]
    ));
    let (_, peers) = wg_dump(&topology.gateway, &topology.interface);
    assert_eq!(
        peers[0][4],
        handshake.to_string(),
        "the session was restarted"
    );

    // wg set: remove the peer; nothing gets through any more.
    topology.gateway.run(&[
        "wg",
        "set",
        &topology.interface,
        "peer",
        &client_key.public,
        "remove",
    ]);
    assert!(wg_dump(&topology.gateway, &topology.interface).1.is_empty());
    assert!(!ping(&topology.client, GATEWAY_TUNNEL, &[]));

    // wg set: a new peer added at run time can connect.
    drop(go);
    let newcomer = key_pair();
    let go = WireguardGo::start(&topology.client, "10.10.100.3");
    let key = secret_file(topology.dir.path(), "newcomer.key", &newcomer.private);
    go.wg(
        &topology.client,
        &[
            "set",
            &go.interface,
            "private-key",
            &key.display().to_string(),
            "peer",
            &gateway_key.public,
            "endpoint",
            &format!("{GATEWAY_UNDERLAY}:{PORT}"),
            "allowed-ips",
            "10.10.100.0/24",
        ],
    );
    go.route(&topology.client, "10.10.100.0/24");
    topology.gateway.run(&[
        "wg",
        "set",
        &topology.interface,
        "peer",
        &newcomer.public,
        "allowed-ips",
        "10.10.100.3/32",
    ]);
    assert!(
        ping(&topology.client, GATEWAY_TUNNEL, &[]),
        "the peer added with wg set did not connect"
    );
    let (_, peers) = wg_dump(&topology.gateway, &topology.interface);
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0][0], newcomer.public);
}

fn the_session_follows_a_client_whose_underlay_address_changes(offload: bool) {
    let Connected {
        topology,
        _gateway,
        go: _go,
        ..
    } = connected(offload);
    assert!(ping(&topology.client, GATEWAY_TUNNEL, &[]));
    let handshake_before = wg_dump(&topology.gateway, &topology.interface).1[0][4].clone();
    let roamed = "198.51.100.3";
    let link = &topology.client_link;
    // As a laptop moving networks: the old address goes, a new one comes.
    topology.client.run(&[
        "ip",
        "address",
        "del",
        &format!("{CLIENT_UNDERLAY}/24"),
        "dev",
        link,
    ]);
    topology
        .client
        .run(&["ip", "address", "add", &format!("{roamed}/24"), "dev", link]);
    // wireguard-go keeps sending from the address it last used until its socket is rebound,
    // as a phone's app rebinds when it changes networks; a new port is NAT rebinding as well.
    let port = 40000 + std::process::id() % 20000;
    topology.client.run(&[
        "wg",
        "set",
        &_go.interface,
        "listen-port",
        &port.to_string(),
    ]);
    assert!(
        ping(&topology.client, GATEWAY_TUNNEL, &[]),
        "the session did not survive the move"
    );
    let (_, peers) = wg_dump(&topology.gateway, &topology.interface);
    assert_eq!(peers[0][4], handshake_before, "a new handshake was needed");
    assert!(
        peers[0][2] == format!("{roamed}:{port}"),
        "the gateway still answers {}",
        peers[0][2]
    );
}

fn transfer_counters_match_what_the_other_side_counted(offload: bool) {
    let Connected {
        topology,
        _gateway,
        go,
        ..
    } = connected(offload);
    assert!(ping(&topology.client, GATEWAY_TUNNEL, &["-s", "1000"]));
    let (_, gateway_view) = wg_dump(&topology.gateway, &topology.interface);
    let (_, client_view) = wg_dump(&topology.client, &go.interface);
    let count = |row: &Vec<String>, i: usize| row[i].parse::<u64>().unwrap();
    // received by one side = sent by the other, byte for byte
    assert_eq!(count(&gateway_view[0], 5), count(&client_view[0], 6));
    assert_eq!(count(&gateway_view[0], 6), count(&client_view[0], 5));
    assert!(count(&gateway_view[0], 5) > 3 * 1000);
}

in_both_offload_modes!(
    wireguard_go_reaches_net1_through_the_gateway,
    a_source_outside_the_peers_allowed_ips_never_reaches_net1,
    preshared_keys_must_match,
    wg_show_and_wg_set_work_against_lab_vpn,
    the_session_follows_a_client_whose_underlay_address_changes,
    transfer_counters_match_what_the_other_side_counted,
);
