//! lab-vpn on both ends of the tunnel: a lab-vpn client reaches net1 through a lab-vpn gateway,
//! and persistent keepalives are seen on the wire at the configured interval.

mod support;

use std::time::Duration;
use support::*;

#[test]
fn a_lab_vpn_client_reaches_net1_through_a_lab_vpn_gateway_with_keepalives_on_the_wire() {
    let topology = Topology::new();
    let (gateway_key, client_key) = (key_pair(), key_pair());
    // The gateway keeps the session warm towards the client every second.
    let peer = format!(
        "[[peer]]\nname = \"admin\"\npublic_key = \"{}\"\nallowed_ips = [\"{CLIENT_TUNNEL}/32\"]\npersistent_keepalive = \"1s\"\n",
        client_key.public
    );
    let _gateway = topology.start_gateway(&topology.gateway_config(&gateway_key, &peer));
    let _server = topology.start_server();
    let (_client, client_interface) = topology.start_lab_vpn_client(&client_key, &gateway_key);

    assert!(
        ping(&topology.client, GATEWAY_TUNNEL, &[]),
        "no ping between two lab-vpn"
    );
    assert_eq!(
        fetch(&topology.client, SERVER).as_deref(),
        Some("behind the gateway")
    );
    let (_, peers) = wg_dump(&topology.client, &client_interface);
    assert_eq!(peers[0][0], gateway_key.public);
    assert!(peers[0][4].parse::<u64>().unwrap() > 0, "no handshake");

    // A keepalive is a 32-byte WireGuard message: 40 bytes of UDP.
    let keepalives = WireCounter::new(
        &topology.client,
        &format!("ip saddr {GATEWAY_UNDERLAY} udp sport {PORT} udp length 40"),
    );
    std::thread::sleep(Duration::from_millis(3500));
    let seen = keepalives.packets();
    assert!(
        (2..=6).contains(&seen),
        "{seen} keepalives in 3.5 s with a 1 s interval"
    );
}
