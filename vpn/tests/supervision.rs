//! The data path is watched: when one of its loops ends for real, lab-vpn exits non-zero (for
//! systemd to restart it) instead of feeding the watchdog with a dead tunnel.

mod support;

use std::time::Duration;
use support::*;

#[test]
fn the_daemon_exits_non_zero_when_its_tun_device_is_deleted() {
    let topology = Topology::new();
    let mut gateway = topology.start_gateway(&topology.gateway_config(&key_pair(), ""));
    // Running and serving: the interface is there and the control socket answers.
    wg_dump(&topology.gateway, &topology.interface);

    // What an admin's `ip link del` (or a container network restart) does to it.
    topology
        .gateway
        .run(&["ip", "link", "del", &topology.interface]);
    let status = gateway.process.wait_exit(Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(70),
        "lab-vpn kept running without its TUN device, or exited with the wrong status: {}",
        gateway.process.stderr().join("\n")
    );
    let logs = gateway.process.stderr().join("\n");
    assert!(
        logs.contains("the outbound loop of the data path ended"),
        "{logs}"
    );
    // systemd is told why, and that it stops.
    let failed = gateway
        .notify
        .expect(&["STOPPING=1"], Duration::from_secs(5));
    assert!(failed.contains("STATUS=failed: "), "{failed}");
    // What it held is released on the way out: no control socket left behind.
    let socket = format!("/var/run/wireguard/{}.sock", topology.interface);
    assert!(!std::path::Path::new(&socket).exists(), "{socket} left");
}
